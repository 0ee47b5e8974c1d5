"""Kinetics-400/600 (ActivityNet crawler CSVs, clip names) and Mini-Kinetics-200 (id lists)."""

import csv
import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from data.annotations.common import (UNLABELED, AnnotationError, Annotations, PathLike,
                                     UnknownLabels, VideoEntry, check_classes, index_of,
                                     numbered_lines, text_file)


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
  with text_file(path, newline='') as f:
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
      listed = row[col['split']].strip() if 'split' in col else ''
      rows.append((line, youtube_id, start, end, label, listed))

  if classes is None:
    classes = sorted({r[4] for r in rows}) if has_label else ()
  classes = check_classes(classes, os.fspath(path))
  index = index_of(classes)
  unknown = UnknownLabels(path, classes)
  for line, youtube_id, start, end, label, listed in rows:
    if has_label and label not in index:
      unknown.add(label, line)
      continue
    entries.append(VideoEntry(
        path_or_id=kinetics_clip_name(youtube_id, start, end),
        label_index=index[label] if has_label else UNLABELED,
        label_text=label, youtube_id=youtube_id, start=start, end=end, listed_split=listed))
  unknown.check()
  return Annotations(tuple(entries), classes)


def read_id_list(path: PathLike) -> List[Tuple[int, str]]:
  """Reads one id per line as (line number, id); fails on duplicates or lines with spaces."""
  ids, seen = [], {}
  for line, text in numbered_lines(path):
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
  classes = check_classes(classes, os.fspath(id_list_path))
  index = index_of(classes)
  unknown = UnknownLabels(id_list_path, classes)
  for (line, _), entry in zip(ids, joined):
    if entry.label_text not in index:
      unknown.add(entry.label_text, line)
  unknown.check()
  # The K400 split a row came from is not the Mini-Kinetics split its id list gives.
  return Annotations(tuple(dataclasses.replace(e, label_index=index[e.label_text], listed_split='')
                           for e in joined), classes)
