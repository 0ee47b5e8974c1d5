"""Walking a user's folder of videos or frame folders, through symbolic links.

Datasets are often assembled from links (a class's group folder, a part on another disk), and
`os.walk` does not enter a linked folder by default: its videos would be left out without a
word. `walk` enters every linked folder once per path and stops where a link leads back into
a folder above it (a loop), which would otherwise never end.
"""

import os
from typing import Dict, FrozenSet, Iterator, List, Tuple


def walk(root: str, hidden: bool = False) -> Iterator[Tuple[str, List[str], List[str]]]:
  """`os.walk(root)` (top-down, sorted; hidden folders only with `hidden`, and then not through
  a hidden link into or above `root`: `.current -> .` holds the tree's own videos), following
  links to folders, except those that lead back to a folder on the way down to them. The caller
  may prune the yielded folder names in place, as with os.walk."""
  top = os.path.realpath(root)
  chains: Dict[str, FrozenSet[str]] = {root: frozenset([top])}
  for parent, dirnames, filenames in os.walk(root, followlinks=True):
    above = chains.pop(parent, frozenset())
    kept = []
    for name in sorted(dirnames):
      path = os.path.join(parent, name)
      if name.startswith('.') and not hidden:
        continue
      real = os.path.realpath(path)
      if name.startswith('.') and os.path.islink(path) and _nested(real, top):
        continue
      if real not in above:
        chains[path] = above | {real}
        kept.append(name)
    dirnames[:] = kept
    yield parent, dirnames, filenames


def _nested(a: str, b: str) -> bool:
  """Whether one of two real paths is the other or lies below it."""
  a, b = a.rstrip(os.sep) + os.sep, b.rstrip(os.sep) + os.sep
  return a.startswith(b) or b.startswith(a)


def is_hidden(relative: str) -> bool:
  """Whether a path relative to a walked root names a hidden file or lies in a hidden folder."""
  return any(part.startswith('.') and part not in ('.', '..')
             for part in relative.split(os.sep))
