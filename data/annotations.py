"""Parsers for official video-dataset annotation files.

Each parser turns annotation files into an `Annotations(entries, classes)` pair: a tuple of
`VideoEntry` and the class list in the dataset's official order, so that class indices never
depend on dict/set iteration order or on which videos happened to download.

Formats: Kinetics-400/600 crawler CSVs, UCF101 classInd + train/test lists, HMDB51 official
`<class>_test_split<k>.txt` folds and their TSN list form, Something-Something v2 json,
Mini-Kinetics-200 id lists, and generic ones (class-per-folder trees, `path label` lists, TSN
`frame_dir num_frames label` lists). Every error names the file and, where there is one, the
line. Files may have CRLF line ends.
"""

import csv
import dataclasses
import json
import os
import re
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

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

  @property
  def labeled(self) -> bool:
    return self.label_index != UNLABELED


class Annotations(NamedTuple):
  """Parsed entries (file order) and the class list (official order) their indices refer to."""
  entries: Tuple[VideoEntry, ...]
  classes: Tuple[str, ...]


class AnnotationError(ValueError):
  """A malformed annotation file; the message starts with `file:line:`."""

  def __init__(self, path: PathLike, line: Optional[int], message: str):
    self.path = os.fspath(path)
    self.line = line
    where = f'{self.path}:{line}' if line is not None else self.path
    super().__init__(f'{where}: {message}')


# ----------------------------------------------------------------------------------------------
# Shared helpers.


def _lines(path: PathLike) -> Iterator[Tuple[int, str]]:
  """Yields (1-based line number, stripped text) of the non-blank lines; CRLF/BOM tolerant."""
  with open(path, encoding='utf-8-sig', newline=None) as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if line:
        yield number, line


def _parse_int(path: PathLike, line: int, token: str, what: str) -> int:
  try:
    return int(token)
  except ValueError:
    raise AnnotationError(path, line, f'{what} must be an integer, got {token!r}.') from None


def _is_int(token: str) -> bool:
  return re.fullmatch(r'[+-]?\d+', token) is not None


def _check_classes(classes: Sequence[str], source: str) -> Tuple[str, ...]:
  classes = tuple(classes)
  seen = set()
  for name in classes:
    if not name:
      raise ValueError(f'{source}: empty class name in the class list.')
    if name in seen:
      raise ValueError(f'{source}: class {name!r} appears twice in the class list.')
    seen.add(name)
  return classes


class _UnknownLabels:
  """Collects labels missing from the class list so one error can list them all."""

  def __init__(self, path: PathLike, classes: Sequence[str]):
    self.path = os.fspath(path)
    self.num_classes = len(classes)
    self.first_line: Dict[str, Optional[int]] = {}

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
        + ', '.join(shown) + (f' and {more} more' if more > 0 else '') + '.')


def read_class_list(path: PathLike) -> Tuple[str, ...]:
  """Reads a label map with one class name per line (line i -> index i), e.g. mmaction2's."""
  return _check_classes([text for _, text in _lines(path)], os.fspath(path))


def _index_of(classes: Sequence[str]) -> Dict[str, int]:
  return {name: i for i, name in enumerate(classes)}


# ----------------------------------------------------------------------------------------------
# Kinetics (ActivityNet crawler CSV) and Mini-Kinetics-200.


def kinetics_clip_name(youtube_id: str, start: int, end: int) -> str:
  """The crawler's clip file stem `<youtube_id>_<start:06d>_<end:06d>`."""
  if not youtube_id:
    raise ValueError('Empty youtube_id.')
  if int(start) != start or int(end) != end or start < 0 or end < start:
    raise ValueError(f'Bad segment [{start}, {end}] for {youtube_id!r}: '
                     'need integers 0 <= start <= end.')
  return f'{youtube_id}_{int(start):06d}_{int(end):06d}'


def parse_kinetics_clip_name(name: str) -> Tuple[str, int, int]:
  """Inverse of `kinetics_clip_name`; accepts a path or a file name with extension.

  YouTube ids may contain '_' and '-' but never '.', so the two last '_' fields are the times.
  """
  stem = os.path.basename(os.fspath(name)).split('.', 1)[0]
  parts = stem.rsplit('_', 2)
  if len(parts) != 3 or not parts[0] or not all(re.fullmatch(r'\d{6,}', p) for p in parts[1:]):
    raise ValueError(f'{name!r} is not a Kinetics clip name <youtube_id>_<start:06d>_<end:06d>.')
  return parts[0], int(parts[1]), int(parts[2])


def _parse_seconds(path: PathLike, line: int, token: str, what: str) -> int:
  """Kinetics times are whole seconds; '36.0' (some re-exports) is accepted, '36.5' is not."""
  try:
    value = float(token)
  except ValueError:
    value = float('nan')
  if value != value or value < 0 or value != int(value):
    raise AnnotationError(path, line, f'{what} must be a whole number of seconds, got {token!r}.')
  return int(value)


def parse_kinetics_csv(path: PathLike, classes: Optional[Sequence[str]] = None) -> Annotations:
  """Parses a Kinetics crawler CSV (`label,youtube_id,time_start,time_end,split[,is_cc]`).

  The class list is `classes` when given (pass the train/val list or a label map when parsing
  another split), else the sorted unique label names of this file: the official Kinetics order.
  Test CSVs have no label column: their entries are unlabeled. Extra columns are ignored.
  """
  entries: List[VideoEntry] = []
  with open(path, encoding='utf-8-sig', newline='') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
      raise AnnotationError(path, 1, 'empty file; expected a header such as '
                            'label,youtube_id,time_start,time_end,split.')
    header = [h.strip() for h in header]
    missing = [c for c in ('youtube_id', 'time_start', 'time_end') if c not in header]
    if missing:
      raise AnnotationError(path, 1, f'header {header} lacks column(s) {missing}.')
    col = {name: i for i, name in enumerate(header)}
    has_label = 'label' in col
    rows = []
    for row in reader:
      line = reader.line_num
      if not row or all(not cell.strip() for cell in row):
        continue
      if len(row) != len(header):
        raise AnnotationError(path, line,
                              f'{len(row)} fields, the header has {len(header)}: {row}.')
      youtube_id = row[col['youtube_id']].strip()
      if not youtube_id:
        raise AnnotationError(path, line, 'empty youtube_id.')
      start = _parse_seconds(path, line, row[col['time_start']].strip(), 'time_start')
      end = _parse_seconds(path, line, row[col['time_end']].strip(), 'time_end')
      if end < start:
        raise AnnotationError(path, line, f'time_end {end} < time_start {start}.')
      label = row[col['label']].strip() if has_label else ''
      if has_label and not label:
        raise AnnotationError(path, line, 'empty label in a labeled CSV.')
      rows.append((line, youtube_id, start, end, label))

  if classes is None:
    classes = sorted({r[4] for r in rows}) if has_label else ()
  classes = _check_classes(classes, os.fspath(path))
  index = _index_of(classes)
  unknown = _UnknownLabels(path, classes)
  for line, youtube_id, start, end, label in rows:
    if has_label and label not in index:
      unknown.add(label, line)
      continue
    entries.append(VideoEntry(
        path_or_id=kinetics_clip_name(youtube_id, start, end),
        label_index=index[label] if has_label else UNLABELED,
        label_text=label, youtube_id=youtube_id, start=start, end=end))
  unknown.check()
  return Annotations(tuple(entries), classes)


def read_id_list(path: PathLike) -> List[Tuple[int, str]]:
  """Reads one id per line as (line number, id); fails on duplicates or lines with spaces."""
  ids, seen = [], {}
  for line, text in _lines(path):
    if len(text.split()) != 1:
      raise AnnotationError(path, line, f'expected one id per line, got {text!r}.')
    if text in seen:
      raise AnnotationError(path, line, f'id {text!r} repeats line {seen[text]}.')
    seen[text] = line
    ids.append((line, text))
  return ids


def parse_mini_kinetics(id_list_path: PathLike, kinetics_csvs: Sequence[PathLike],
                        classes: Optional[Sequence[str]] = None) -> Annotations:
  """Mini-Kinetics-200: joins a YouTube-id list with labeled Kinetics-400 CSV rows.

  `kinetics_csvs` (one path or several) are labeled crawler-format CSVs holding the ids (the K400 train CSV for the train
  list; the K400 val CSV or val_labeled_from_k400_val.csv for the val list). The class list is
  `classes` or else the sorted labels of the joined entries (Kinetics order restricted to the 200
  classes; pass the val list's classes when parsing train to be safe). Entries keep id-list order.
  Ids absent from the CSVs, or present there with two different labels, are errors.
  """
  if isinstance(kinetics_csvs, (str, os.PathLike)):
    kinetics_csvs = [kinetics_csvs]
  by_id: Dict[str, VideoEntry] = {}
  ambiguous = set()
  for csv_path in kinetics_csvs:
    for entry in parse_kinetics_csv(csv_path).entries:
      other = by_id.setdefault(entry.youtube_id, entry)
      if other.label_text != entry.label_text:
        ambiguous.add(entry.youtube_id)
  ids = read_id_list(id_list_path)
  missing = [(line, i) for line, i in ids if i not in by_id]
  if missing:
    shown = ', '.join(f'{i!r} (line {line})' for line, i in missing[:10])
    raise ValueError(f'{os.fspath(id_list_path)}: {len(missing)} of {len(ids)} ids not found in '
                     f'{[os.fspath(p) for p in kinetics_csvs]}: {shown}'
                     + (' ...' if len(missing) > 10 else '') + '.')
  bad = [(line, i) for line, i in ids if i in ambiguous]
  if bad:
    raise AnnotationError(id_list_path, bad[0][0], f'id {bad[0][1]!r} has two different labels in '
                          f'the Kinetics CSVs ({len(bad)} such ids).')
  joined = [by_id[i] for _, i in ids]
  if classes is None:
    classes = sorted({e.label_text for e in joined})
  classes = _check_classes(classes, os.fspath(id_list_path))
  index = _index_of(classes)
  unknown = _UnknownLabels(id_list_path, classes)
  for (line, _), entry in zip(ids, joined):
    if entry.label_text not in index:
      unknown.add(entry.label_text, line)
  unknown.check()
  return Annotations(
      tuple(dataclasses.replace(e, label_index=index[e.label_text]) for e in joined), classes)


# ----------------------------------------------------------------------------------------------
# UCF101.


def parse_ucf101_classes(class_ind_path: PathLike) -> Tuple[str, ...]:
  """Reads classInd.txt (`<1-based index> <name>`) into names in index order (0: ApplyEyeMakeup)."""
  by_index: Dict[int, Tuple[int, str]] = {}
  for line, text in _lines(class_ind_path):
    parts = text.split()
    if len(parts) != 2:
      raise AnnotationError(class_ind_path, line, f'expected "<index> <class>", got {text!r}.')
    idx = _parse_int(class_ind_path, line, parts[0], 'class index')
    if idx in by_index:
      raise AnnotationError(class_ind_path, line, f'index {idx} repeats line {by_index[idx][0]}.')
    by_index[idx] = (line, parts[1])
  if sorted(by_index) != list(range(1, len(by_index) + 1)):
    raise AnnotationError(class_ind_path, None, f'class indices must be 1..{len(by_index)}, '
                          f'got {sorted(by_index)[:5]}...')
  return _check_classes([by_index[i][1] for i in sorted(by_index)], os.fspath(class_ind_path))


def parse_ucf101_list(path: PathLike, classes: Sequence[str]) -> Annotations:
  """Parses trainlist0k.txt (`Class/v_Class_gXX_cYY.avi <1-based label>`) or testlist0k.txt (paths).

  The class comes from the label when given, else from the folder name, matched case-insensitively
  if needed: list paths say `HandStandPushups/` while classInd says `HandstandPushups`. A label that
  disagrees with the folder is an error. `path_or_id` keeps the path as written (as on disk).
  """
  classes = _check_classes(classes, os.fspath(path))
  index = _index_of(classes)
  folded = {}
  for i, name in enumerate(classes):
    folded.setdefault(name.lower(), i)
  unknown = _UnknownLabels(path, classes)
  entries = []
  for line, text in _lines(path):
    parts = text.split()
    if len(parts) not in (1, 2):
      raise AnnotationError(path, line, f'expected "<Class>/<video>.avi [label]", got {text!r}.')
    video = parts[0]
    folder = video.split('/', 1)[0] if '/' in video else None
    from_folder = None
    if folder is not None:
      from_folder = index.get(folder, folded.get(folder.lower()))
    if len(parts) == 2:
      label = _parse_int(path, line, parts[1], 'label')
      if not 1 <= label <= len(classes):
        unknown.add(parts[1], line)
        continue
      idx = label - 1
      if folder is not None and from_folder != idx:
        raise AnnotationError(path, line, f'label {label} ({classes[idx]}) disagrees with the '
                              f'folder {folder!r}; is the class list the matching classInd.txt?')
    elif from_folder is None:
      unknown.add(folder if folder is not None else video, line)
      continue
    else:
      idx = from_folder
    entries.append(VideoEntry(path_or_id=video, label_index=idx, label_text=classes[idx]))
  unknown.check()
  return Annotations(tuple(entries), classes)


def parse_ucf101_split(split_dir: PathLike, split: int) -> Tuple[Annotations, Annotations]:
  """(train, test) of official split `split` (1..3) from a ucfTrainTestlist folder."""
  if split not in (1, 2, 3):
    raise ValueError(f'UCF101 split must be 1, 2 or 3, got {split!r}.')
  classes = parse_ucf101_classes(os.path.join(split_dir, 'classInd.txt'))
  return (parse_ucf101_list(os.path.join(split_dir, f'trainlist0{split}.txt'), classes),
          parse_ucf101_list(os.path.join(split_dir, f'testlist0{split}.txt'), classes))


# ----------------------------------------------------------------------------------------------
# HMDB51.

# Official order: sorted class names (= mmaction2's label_map = sorted official split-file classes).
HMDB51_CLASSES = (
    'brush_hair', 'cartwheel', 'catch', 'chew', 'clap', 'climb', 'climb_stairs', 'dive',
    'draw_sword', 'dribble', 'drink', 'eat', 'fall_floor', 'fencing', 'flic_flac', 'golf',
    'handstand', 'hit', 'hug', 'jump', 'kick', 'kick_ball', 'kiss', 'laugh', 'pick', 'pour',
    'pullup', 'punch', 'push', 'pushup', 'ride_bike', 'ride_horse', 'run', 'shake_hands',
    'shoot_ball', 'shoot_bow', 'shoot_gun', 'sit', 'situp', 'smile', 'smoke', 'somersault', 'stand',
    'swing_baseball', 'sword', 'sword_exercise', 'talk', 'throw', 'turn', 'walk', 'wave')


def _swap(names, a, b):
  names = list(names)
  i, j = names.index(a), names.index(b)
  names[i], names[j] = names[j], names[i]
  return tuple(names)


# Index order of the widely shared TSN-form lists (hmdb51_{rgb,flow}_{train,val}_split_k.txt):
# HMDB51_CLASSES with kick_ball=20/kick=21 and sword_exercise=44/sword=45 swapped.
HMDB51_TSN_LIST_ORDER = _swap(_swap(HMDB51_CLASSES, 'kick', 'kick_ball'), 'sword', 'sword_exercise')

# HMDB51 clip names end with tags: visible body part, camera motion, people, viewpoint, quality, n.
_HMDB51_TAGS = re.compile(
    r'^(?P<head>.+)_[fhlu]_(?:cm|nm)_np\d+_(?:fr|le|ri|ba)_(?:bad|med|goo)_\d+$')


def hmdb51_class_from_clip_name(name: str) -> Optional[str]:
  """The class token of an HMDB51 clip name (`<title>_<class>_<tags>_<n>[.avi]`), None if absent.

  The longest matching class wins, so '..._draw_sword_f_...' is draw_sword, not sword.
  """
  stem = os.path.basename(name)
  if stem.endswith('.avi'):
    stem = stem[:-4]
  match = _HMDB51_TAGS.match(stem)
  if not match:
    return None
  head = match.group('head')
  found = [c for c in HMDB51_CLASSES if head == c or head.endswith('_' + c)]
  return max(found, key=len) if found else None


def parse_hmdb51_split_dir(split_dir: PathLike, fold: int, classes: Sequence[str] = HMDB51_CLASSES
                          ) -> Tuple[Annotations, Annotations]:
  """(train, test) of fold `fold` (1..3) from the official testTrainMulti_7030_splits folder.

  Reads every `<class>_test_split<fold>.txt` (`<name>.avi <0|1|2>`: 1 train, 2 test, 0 unused).
  The class comes from the file name; every class of `classes` needs a file and no other file may
  exist. `path_or_id` is `<class>/<name>.avi`, the layout of the official per-class archives.
  """
  if fold not in (1, 2, 3):
    raise ValueError(f'HMDB51 fold must be 1, 2 or 3, got {fold!r}.')
  classes = _check_classes(classes, os.fspath(split_dir))
  suffix = f'_test_split{fold}.txt'
  files = {name[:-len(suffix)]: os.path.join(split_dir, name)
           for name in sorted(os.listdir(split_dir)) if name.endswith(suffix)}
  unknown = _UnknownLabels(split_dir, classes)
  for name in files:
    if name not in classes:
      unknown.add(name, None)
  unknown.check()
  absent = [c for c in classes if c not in files]
  if absent:
    raise ValueError(f'{os.fspath(split_dir)}: no *{suffix} file for class(es) {absent}.')
  train, test, seen = [], [], {}
  for idx, cls in enumerate(classes):
    path = files[cls]
    for line, text in _lines(path):
      parts = text.split()
      if len(parts) != 2 or parts[1] not in ('0', '1', '2'):
        raise AnnotationError(path, line, f'expected "<name>.avi <0|1|2>", got {text!r}.')
      if parts[0] in seen:
        raise AnnotationError(path, line,
                              f'{parts[0]} is listed again (first in {seen[parts[0]]}).')
      seen[parts[0]] = f'{path}:{line}'
      if parts[1] == '0':
        continue
      entry = VideoEntry(path_or_id=f'{cls}/{parts[0]}', label_index=idx, label_text=cls)
      (train if parts[1] == '1' else test).append(entry)
  return Annotations(tuple(train), classes), Annotations(tuple(test), classes)


def parse_hmdb51_tsn_list(path: PathLike) -> Annotations:
  """Parses an HMDB51 list in TSN form (`<frame_dir> <num_frames> <label>`) into official indices.

  Such lists number classes in `HMDB51_TSN_LIST_ORDER`; labels are remapped to `HMDB51_CLASSES`
  and cross-checked against the class token of the clip name, so a list using yet another order
  fails loudly instead of silently mislabeling two classes.
  """
  parsed = parse_tsn_list(path, classes=HMDB51_CLASSES, label_order=HMDB51_TSN_LIST_ORDER)
  for entry, (line, _) in zip(parsed.entries, _lines(path)):
    token = hmdb51_class_from_clip_name(entry.path_or_id)
    if token is not None and token != entry.label_text:
      raise AnnotationError(path, line, f'label means {entry.label_text!r} in the TSN list order '
                            f'but the clip name says {token!r}.')
  return parsed


# ----------------------------------------------------------------------------------------------
# Something-Something v2.


def _line_at(text: str, pos: int) -> int:
  return text.count('\n', 0, pos) + 1


def _read_json_text(path: PathLike) -> str:
  with open(path, encoding='utf-8-sig') as f:
    return f.read()


class _Pairs(list):
  """The (key, value) pairs of one json object, in file order."""


def parse_ssv2_labels(labels_json: PathLike) -> Tuple[str, ...]:
  """Reads something-something-v2-labels.json (`{"<template>": "<index>"}`) into index order."""
  text = _read_json_text(labels_json)

  def pairs_hook(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
      dup = next(k for k in keys if keys.count(k) > 1)
      raise AnnotationError(labels_json, _line_at(text, text.find(json.dumps(dup))),
                            f'template {dup!r} appears twice.')
    return _Pairs(pairs)

  try:
    pairs = json.loads(text, object_pairs_hook=pairs_hook)
  except json.JSONDecodeError as e:
    raise AnnotationError(labels_json, e.lineno, f'invalid json: {e.msg}.') from None
  if not isinstance(pairs, _Pairs) or any(isinstance(v, _Pairs) for _, v in pairs):
    raise AnnotationError(labels_json, 1, 'expected a flat json object {"template": "index"}.')
  by_index: Dict[int, str] = {}
  for name, value in pairs:
    line = _line_at(text, max(text.find(json.dumps(name)), 0))
    if not re.fullmatch(r'\d+', str(value)):
      raise AnnotationError(labels_json, line,
                            f'index of {name!r} must be an integer, got {value!r}.')
    if int(value) in by_index:
      raise AnnotationError(labels_json, line, f'index {value} of {name!r} is already used by '
                            f'{by_index[int(value)]!r}.')
    by_index[int(value)] = name
  if sorted(by_index) != list(range(len(by_index))):
    raise AnnotationError(labels_json, None,
                          f'indices must be 0..{len(by_index) - 1} without gaps.')
  return _check_classes([by_index[i] for i in range(len(by_index))], os.fspath(labels_json))


def _iter_json_array(path: PathLike) -> Iterator[Tuple[int, object]]:
  """Yields (line number, item) of a top-level json array, so item errors can name their line."""
  text = _read_json_text(path)
  decoder = json.JSONDecoder()
  ws = re.compile(r'\s*')
  pos = ws.match(text, 0).end()
  if text[pos:pos + 1] != '[':
    raise AnnotationError(path, _line_at(text, pos), 'expected a json array of videos.')
  pos = ws.match(text, pos + 1).end()
  if text[pos:pos + 1] == ']':
    return
  while True:
    try:
      item, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise AnnotationError(path, e.lineno, f'invalid json: {e.msg}.') from None
    yield _line_at(text, pos), item
    pos = ws.match(text, end).end()
    sep = text[pos:pos + 1]
    if sep == ']':
      if text[ws.match(text, pos + 1).end():]:
        raise AnnotationError(path, _line_at(text, pos), 'text after the closing ].')
      return
    if sep != ',':
      raise AnnotationError(path, _line_at(text, pos), f'expected , or ] but got {sep!r}.')
    pos = ws.match(text, pos + 1).end()


def ssv2_template_class(template: str) -> str:
  """'Putting [something] on [something]' -> 'Putting something on something' (the class name)."""
  return template.replace('[', '').replace(']', '')


def parse_ssv2_list(list_json: PathLike, classes: Sequence[str]) -> Annotations:
  """Parses something-something-v2-{train,validation,test}.json.

  Items are `{"id", "label", "template", "placeholders"}`; the class is the template with its
  brackets removed, which must be a name of `classes` (from `parse_ssv2_labels`). Test items carry
  only an id and give unlabeled entries. `path_or_id` is the id (videos are `<id>.webm`).
  """
  classes = _check_classes(classes, os.fspath(list_json))
  index = _index_of(classes)
  unknown = _UnknownLabels(list_json, classes)
  entries, seen = [], {}
  for line, item in _iter_json_array(list_json):
    if not isinstance(item, dict) or 'id' not in item:
      raise AnnotationError(list_json, line,
                            f'expected an object with an "id", got {str(item)[:80]}.')
    video_id = str(item['id']).strip()
    if not video_id:
      raise AnnotationError(list_json, line, 'empty id.')
    if video_id in seen:
      raise AnnotationError(list_json, line, f'id {video_id} repeats line {seen[video_id]}.')
    seen[video_id] = line
    placeholders = item.get('placeholders') or ()
    if not isinstance(placeholders, list) and placeholders != ():
      raise AnnotationError(list_json, line,
                            f'"placeholders" must be a list, got {placeholders!r}.')
    caption = item.get('label')
    if 'template' not in item:
      entries.append(VideoEntry(path_or_id=video_id, caption=caption,
                                placeholders=tuple(map(str, placeholders))))
      continue
    if not isinstance(item['template'], str):
      raise AnnotationError(list_json, line,
                            f'"template" must be a string, got {item["template"]!r}.')
    name = ssv2_template_class(item['template'])
    if name not in index:
      unknown.add(name, line)
      continue
    entries.append(VideoEntry(path_or_id=video_id, label_index=index[name], label_text=name,
                              caption=caption, placeholders=tuple(map(str, placeholders))))
  unknown.check()
  return Annotations(tuple(entries), classes)


# ----------------------------------------------------------------------------------------------
# Generic layouts.


def _resolve_labels(path: PathLike, rows: List[Tuple[int, str]], classes: Optional[Sequence[str]],
                    label_order: Optional[Sequence[str]], index_base: int):
  """Maps label tokens to (index, text); integer labels iff every token of the file is an integer.

  Integer labels index `label_order` (default `classes`), counted from `index_base`, and are then
  looked up by name in `classes`; without any class list they are kept as-is with empty text.
  Name labels without `classes` define the class list as their sorted unique values.
  """
  integer = bool(rows) and all(_is_int(token) for _, token in rows)
  if not integer and classes is None:
    classes = sorted({token for _, token in rows})
  if classes is None and label_order is not None:
    classes = label_order
  classes = _check_classes(classes if classes is not None else (), os.fspath(path))
  order = tuple(label_order) if label_order is not None else classes
  index = _index_of(classes)
  unknown = _UnknownLabels(path, classes)
  resolved = []
  for line, token in rows:
    if integer:
      number = int(token) - index_base
      if not classes:
        if number < 0:
          raise AnnotationError(path, line, f'negative label {token} (index base {index_base}).')
        resolved.append((number, ''))
        continue
      if not 0 <= number < len(order):
        unknown.add(token, line)
        resolved.append(None)
        continue
      token = order[number]
    if token not in index:
      unknown.add(token, line)
      resolved.append(None)
      continue
    resolved.append((index[token], token))
  unknown.check()
  return resolved, classes


def parse_list_file(path: PathLike, classes: Optional[Sequence[str]] = None,
                    index_base: int = 0) -> Annotations:
  """Parses a generic `<path> <label>` list; the label is a class index or a class name.

  The path may contain spaces (the label is the last field). With name labels and no `classes`, the
  class list is their sorted unique values; integer labels count from `index_base` (1 for lists
  numbered like UCF101's) and keep empty `label_text` when no `classes` is given.
  """
  rows, paths = [], []
  for line, text in _lines(path):
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
      raise AnnotationError(path, line, f'expected "<path> <label>", got {text!r}.')
    paths.append(parts[0])
    rows.append((line, parts[1]))
  resolved, classes = _resolve_labels(path, rows, classes, None, index_base)
  return Annotations(tuple(VideoEntry(path_or_id=p, label_index=i, label_text=t)
                           for p, (i, t) in zip(paths, resolved)), classes)


def parse_tsn_list(path: PathLike, classes: Optional[Sequence[str]] = None,
                   label_order: Optional[Sequence[str]] = None, index_base: int = 0) -> Annotations:
  """Parses a TSN/mmaction frame-folder list `<frame_dir> <num_frames> <label>`.

  `label_order` is the class order the file's integer labels refer to when it differs from the
  official `classes` (see HMDB51_TSN_LIST_ORDER); entries get indices into `classes`.
  """
  rows, dirs, counts = [], [], []
  for line, text in _lines(path):
    parts = text.rsplit(None, 2)
    if len(parts) != 3:
      raise AnnotationError(path, line,
                            f'expected "<frame_dir> <num_frames> <label>", got {text!r}.')
    frames = _parse_int(path, line, parts[1], 'num_frames')
    if frames < 0:
      raise AnnotationError(path, line, f'negative num_frames {frames}.')
    dirs.append(parts[0])
    counts.append(frames)
    rows.append((line, parts[2]))
  resolved, classes = _resolve_labels(path, rows, classes, label_order, index_base)
  return Annotations(tuple(VideoEntry(path_or_id=d, label_index=i, label_text=t, num_frames=n)
                           for d, n, (i, t) in zip(dirs, counts, resolved)), classes)


def parse_class_folders(root: PathLike, extensions: Optional[Iterable[str]] = None) -> Annotations:
  """Reads a `root/<class>/<video or frame folder>` tree; classes are the sorted folder names.

  `extensions` (e.g. ['.mp4', '.avi'], case-insensitive) keeps only matching files; without it every
  non-hidden file and folder is a video. `path_or_id` is `<class>/<name>`; entries are sorted.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise ValueError(f'{root}: not a directory.')
  exts = None if extensions is None else {e.lower() if e.startswith('.') else '.' + e.lower()
                                          for e in extensions}
  classes = tuple(sorted(d for d in os.listdir(root)
                         if not d.startswith('.') and os.path.isdir(os.path.join(root, d))))
  if not classes:
    raise ValueError(f'{root}: no class folders.')
  entries = []
  for idx, cls in enumerate(classes):
    for name in sorted(os.listdir(os.path.join(root, cls))):
      if name.startswith('.'):
        continue
      if exts is not None and os.path.splitext(name)[1].lower() not in exts:
        continue
      entries.append(VideoEntry(path_or_id=f'{cls}/{name}', label_index=idx, label_text=cls))
  return Annotations(tuple(entries), classes)
