"""What every annotation parser returns and the helpers they share.

`VideoEntry` is one video of an annotation file, `Annotations` the entries plus the class list
their indices refer to, `AnnotationError` a malformed file (message `file:line: ...`). The helpers
read CRLF/BOM-tolerant numbered lines and check labels against a class list, collecting every
unknown label so one error lists them all.
"""

import contextlib
import dataclasses
import os
import re
from typing import IO, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

PathLike = Union[str, 'os.PathLike[str]']

UNLABELED = -1  # `label_index` of entries whose file gives no label (Kinetics/SSv2 test sets).


@dataclasses.dataclass(frozen=True)
class VideoEntry:
  """One video of an annotation file.

  Attributes:
    path_or_id: how to find the video, as the annotation names it: a path relative to the video root
      (UCF101 `Class/v_..avi`, HMDB51 `class/name.avi`, TSN frame folders), a Kinetics clip name
      `<youtube_id>_<start:06d>_<end:06d>` (the crawler's file stem) or an SSv2 numeric id.
    label_index: index into the class list, `UNLABELED` (-1) for unlabeled entries.
    label_text: the class name in its official spelling, '' for unlabeled entries.
    youtube_id, start, end: Kinetics source video and segment (integer seconds).
    num_frames: frame count given by a TSN list (0 there means unknown).
    caption: SSv2 label with the placeholders filled in ('holding potato next to ...').
    placeholders: SSv2 objects filling the template's [something] slots.
    group: CSV lists' group column (e.g. fight_surv's source_group), '' elsewhere; whole groups
      go to one side of a train/val split (`split_by_group`).
    listed_split: the split the row itself names (Kinetics CSVs' split column), '' elsewhere.
  """
  path_or_id: str
  label_index: int = UNLABELED
  label_text: str = ''
  youtube_id: Optional[str] = None
  start: Optional[int] = None
  end: Optional[int] = None
  num_frames: Optional[int] = None
  caption: Optional[str] = None
  placeholders: Tuple[str, ...] = ()
  group: str = ''
  listed_split: str = ''

  @property
  def labeled(self) -> bool:
    return self.label_index != UNLABELED


class Annotations(NamedTuple):
  """Parsed entries (file order) and the class list (official order) their indices refer to;
  `skipped`: files a folder tree holds that were not taken as videos (their extension);
  `hidden`: those left out as hidden (a leading dot in their name or a folder's), though of a
  video's extension."""
  entries: Tuple[VideoEntry, ...]
  classes: Tuple[str, ...]
  skipped: Tuple[str, ...] = ()
  hidden: Tuple[str, ...] = ()


class AnnotationError(ValueError):
  """A malformed annotation file; the message starts with `file:line:`."""

  def __init__(self, path: PathLike, line: Optional[int], message: str):
    self.path = os.fspath(path)
    self.line = line
    where = f'{self.path}:{line}' if line is not None else self.path
    super().__init__(f'{where}: {message}')


@contextlib.contextmanager
def text_file(path: PathLike, newline: Optional[str] = None) -> Iterator[IO[str]]:
  """`path` opened as UTF-8 text (a BOM tolerated); reading text that is not UTF-8 (a list saved
  as latin-1) raises an AnnotationError naming the file, where Python's error named none."""
  with open(path, encoding='utf-8-sig', newline=newline) as f:
    try:
      yield f
    except UnicodeDecodeError as e:
      raise AnnotationError(path, None, f'not UTF-8 text ({e.reason} at byte '
                            f'{e.object[e.start:e.start + 1]!r}): save it as UTF-8 (e.g. iconv '
                            '-f latin1 -t utf8 FILE > NEW) and pass that.') from None


def numbered_lines(path: PathLike) -> Iterator[Tuple[int, str]]:
  """Yields (1-based line number, stripped text) of the non-blank lines; CRLF/BOM tolerant."""
  with text_file(path) as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if line:
        yield number, line


def parse_int(path: PathLike, line: int, token: str, what: str) -> int:
  try:
    return int(token)
  except ValueError:
    raise AnnotationError(path, line, f'{what} must be an integer, got {token!r}.') from None


def is_int(token: str) -> bool:
  return re.fullmatch(r'[+-]?\d+', token) is not None


def check_classes(classes: Sequence[str], source: str) -> Tuple[str, ...]:
  classes = tuple(classes)
  seen = set()
  for name in classes:
    if not name:
      raise ValueError(f'{source}: empty class name in the class list.')
    if name in seen:
      raise ValueError(f'{source}: class {name!r} appears twice in the class list.')
    seen.add(name)
  return classes


class UnknownLabels:
  """Collects labels missing from the class list so one error can list them all."""

  def __init__(self, path: PathLike, classes: Sequence[str]):
    self.path = os.fspath(path)
    self.num_classes = len(classes)
    self.first_line: Dict[str, Optional[int]] = {}
    self.hint = ''  # what the labels suggest, added to the error

  def add(self, label: str, line: Optional[int]):
    self.first_line.setdefault(label, line)

  def check(self):
    if not self.first_line:
      return
    shown = [f'{label!r} (line {line})' if line is not None else repr(label)
             for label, line in list(self.first_line.items())[:20]]
    more = len(self.first_line) - len(shown)
    raise ValueError(
        f'{self.path}: {len(self.first_line)} label(s) not in the {self.num_classes}-class list: '
        + ', '.join(shown) + (f' and {more} more' if more > 0 else '') + '.' + self.hint)


def read_class_list(path: PathLike) -> Tuple[str, ...]:
  """Reads a label map: one class name per line (line i -> index i, mmaction2's), or lines
  numbered in order from 0 or 1, `<index> <name>` (UCF101's classInd.txt), whose numbers are no
  part of the names: stored in the records, '1 ApplyEyeMakeup' would be every class's name.
  Lines numbered otherwise are names (that begin with a number)."""
  lines = [text for _, text in numbered_lines(path)]
  numbered = [re.fullmatch(r'(\d+)\s+(\S.*)', text) for text in lines]
  if lines and all(numbered):
    first = int(numbered[0][1])
    if first in (0, 1) and [int(m[1]) for m in numbered] == list(range(first,
                                                                        first + len(lines))):
      return check_classes([match[2] for match in numbered], os.fspath(path))
  return check_classes(lines, os.fspath(path))


def index_of(classes: Sequence[str]) -> Dict[str, int]:
  return {name: i for i, name in enumerate(classes)}
