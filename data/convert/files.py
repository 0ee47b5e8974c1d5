"""Finding the source video (or frame folder) of each annotated item on disk.

Annotations name videos by relative path, clip name, id or stem; `FileIndex` resolves those under
an input root (exact path, case-insensitive path, then stem), and the `attach_*` helpers fill each
item's `source`, or its `missing` reason, which becomes the video's failure record.
"""

import collections
import os
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence

from data import tree

if TYPE_CHECKING:
  from data.convert.plans import Item  # pylint: disable=g-bad-import-order


class AmbiguousFile(ValueError):
  """Several files under the input root match a listed video's stem."""


class FileIndex:
  """Finds files under a root by relative path, case-insensitive path, stem or basename."""

  def __init__(self, root: str, extensions: Optional[Sequence[str]] = None, dirs: bool = False):
    self.root = os.path.abspath(root)
    self._extensions = None if extensions is None else {e.lower() for e in extensions}
    self._dirs = dirs
    self._built = False
    self._by_lower: Dict[str, List[str]] = collections.defaultdict(list)
    self._by_stem: Dict[str, List[str]] = collections.defaultdict(list)

  def _build(self):
    if self._built:
      return
    for parent, dirnames, filenames in tree.walk(self.root):
      names = dirnames if self._dirs else filenames
      for name in names:
        if name.startswith('.'):
          continue
        stem, ext = os.path.splitext(name)
        if not self._dirs and self._extensions is not None and ext.lower() not in self._extensions:
          continue
        path = os.path.join(parent, name)
        rel = os.path.relpath(path, self.root)
        self._by_lower[rel.lower().replace(os.sep, '/')].append(path)
        self._by_stem[name if self._dirs else stem].append(path)
    self._built = True

  def find(self, relative: Optional[str] = None, stems: Sequence[str] = ()) -> Optional[str]:
    """The file at `relative` (exact, then case-insensitive), else the unique file of a stem;
    `AmbiguousFile` where several files have the stem (two copies of a dataset, a re-download
    beside the first: taking one would store whichever sorts first)."""
    if relative:
      exact = os.path.join(self.root, relative)
      if os.path.exists(exact):
        return exact
      self._build()
      found = self._one(self._by_lower.get(relative.lower().replace(os.sep, '/'), []),
                        relative)
      if found:
        return found
    self._build()
    for stem in stems:
      found = self._one(self._by_stem.get(stem, []), stem)
      if found:
        return found
    return None

  def _one(self, candidates: Sequence[str], name: str) -> Optional[str]:
    """The one file among `candidates` (links to one file count once), None for none;
    `AmbiguousFile` for several."""
    files = {}
    for path in sorted(candidates):
      files.setdefault(os.path.realpath(path), path)
    if len(files) > 1:
      shown = ', '.join(os.path.relpath(c, self.root) for c in list(files.values())[:4])
      raise AmbiguousFile(f'{len(files)} files named {name} under {self.root} ({shown}'
                          f'{", ..." if len(files) > 4 else ""}): which one is the listed video '
                          'cannot be told; keep one')
    return next(iter(files.values()), None)



def attach_sources(items: Iterable['Item'], index: FileIndex, stems_of=None) -> List['Item']:
  """Fills `source` of each item from the index (or records why it was not found)."""
  out = []
  for item in items:
    stems = stems_of(item) if stems_of else (os.path.splitext(os.path.basename(item.filename))[0],)
    try:
      path = index.find(item.filename, stems)
    except AmbiguousFile as e:
      item.missing = str(e)
      out.append(item)
      continue
    if path is None:
      item.missing = (f'missing video file: {item.filename} (not found under {index.root})')
    else:
      item.source = path
    out.append(item)
  return out


def attach_paths(items: Iterable['Item'], root: str) -> List['Item']:
  """Fills `source` with `root/filename` (an absolute filename as it is) where that exists: a
  video file, or a folder for frame items; else the one path under `root` that `filename` names
  in another letter case, as FileIndex finds official lists' videos (UCF101's lists say
  HandStandPushups/ where the folder is HandstandPushups/); otherwise records why it was not
  found."""
  listings: Dict[str, Dict[str, List[str]]] = {}
  out = []
  for item in items:
    source = item.filename if os.path.isabs(item.filename) else os.path.join(root, item.filename)
    exists = os.path.isdir if item.kind == 'frames' else os.path.exists
    if not exists(source) and not os.path.isabs(item.filename):
      source = _in_any_case(root, item.filename, listings) or source
    if exists(source):
      item.source = source
    else:
      item.missing = (f'missing frame folder: {source}' if item.kind == 'frames' else
                      f'missing video file: {source}')
    out.append(item)
  return out


def _in_any_case(root: str, relative: str, listings: Dict[str, Dict[str, List[str]]]
                 ) -> Optional[str]:
  """The one path under `root` that `relative` names when letter case is ignored; None where
  there is none, or several (two spellings: which one is meant cannot be told). `listings`
  keeps each folder's names by their lower case."""
  path = root
  for part in relative.replace(os.sep, '/').split('/'):
    if part in ('', '.'):
      continue
    if part == '..':
      return None
    if path not in listings:
      by_lower: Dict[str, List[str]] = collections.defaultdict(list)
      try:
        for name in os.listdir(path):
          by_lower[name.lower()].append(name)
      except OSError:
        pass
      listings[path] = by_lower
    matches = listings[path].get(part.lower(), [])
    if len(matches) != 1:
      return None
    path = os.path.join(path, matches[0])
  return path
