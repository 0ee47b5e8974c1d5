"""Generic layouts: `path label` lists, TSN frame-folder lists, class-per-folder trees and CSV
lists with a header, plus the train/val split of a CSV list by whole groups (e.g. fight_surv's
source videos, so clips of one source never sit on both sides).
"""

import collections
import csv
import os
import random
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from data import tree
from data.annotations.common import (AnnotationError, Annotations, PathLike, UnknownLabels,
                                     VideoEntry, check_classes, index_of, is_int, numbered_lines,
                                     parse_int, text_file)


def _by_index(token: str, order: Sequence[str], index_base: int) -> Optional[str]:
  """The class an integer label names as an index into `order`, None where out of range."""
  number = int(token) - index_base
  return order[number] if 0 <= number < len(order) else None


def _reads_as_names(path: PathLike, rows: List[Tuple[int, str]], classes: Sequence[str],
                    order: Sequence[str], index_base: int) -> bool:
  """Integer labels beside classes named by integers read two ways: as an index into `order`
  and as a class name. Whichever reading alone fits every label is taken (names where only
  they do); where both fit and give another class for some label, which one is meant is the
  user's to say (`integer_labels`)."""
  names = set(classes)
  if not all(token in names for _, token in rows):  # also where no class is named by an integer
    return False
  by_index = [_by_index(token, order, index_base) for _, token in rows]
  if None in by_index:
    return True
  for (line, token), indexed in zip(rows, by_index):
    if indexed != token:
      base = f' (counted from {index_base})' if index_base else ''
      raise AnnotationError(path, line, f'label {token!r} is the class named {token!r} and also '
                            f'index {token}{base} of the class list, class {indexed!r}: say '
                            'which it is with --integer_labels=name or --integer_labels=index.')
  return False


def _resolve_labels(path: PathLike, rows: List[Tuple[int, str]], classes: Optional[Sequence[str]],
                    label_order: Optional[Sequence[str]], index_base: int,
                    integer_labels: str = ''):
  """Maps label tokens to (index, text); integer labels iff every token of the file is an integer
  (read as names instead with `integer_labels='name'`).

  Integer labels index `label_order` (default `classes`), counted from `index_base`, and are then
  looked up by name in `classes`; without any class list they are kept as-is with empty text.
  Where classes are named by integers too, the reading that alone fits every label is taken;
  where both fit and differ, `integer_labels` ('index' or 'name') must say which is meant. Name
  labels without `classes` define the class list as their sorted unique values.
  """
  if integer_labels and rows and not any(is_int(token) for _, token in rows):
    raise AnnotationError(path, None, f'--integer_labels={integer_labels} reads integer labels, '
                          'and this file has none: it would be ignored.')
  integer = (bool(rows) and all(is_int(token) for _, token in rows)
             and integer_labels != 'name')
  if integer and classes is not None and not integer_labels and _reads_as_names(
      path, rows, classes, label_order if label_order is not None else classes, index_base):
    integer = False
  if not integer and classes is None:
    numbered = next(((line, token) for line, token in rows if is_int(token)), None)
    if numbered is not None and integer_labels != 'name':  # they would become classes
      named = next(token for _, token in rows if not is_int(token))
      raise AnnotationError(path, numbered[0], f'labels mix integers (e.g. {numbered[1]!r}) and '
                            f'class names (e.g. {named!r}): give every label as a name, or every '
                            'one as an index with --class_list (or read them all as names with '
                            '--integer_labels=name).')
    classes = sorted({token for _, token in rows})
  if classes is None and label_order is not None:
    classes = label_order
  classes = check_classes(classes if classes is not None else (), os.fspath(path))
  order = tuple(label_order) if label_order is not None else classes
  index = index_of(classes)
  unknown = UnknownLabels(path, classes)
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
        if number == len(order) and index_base == 0 and label_order is None:  # a user's list
          unknown.hint = (f' Labels reach {number} with {len(order)} classes: if they count from '
                          '1 (as UCF101\'s lists do), give an index base of 1 '
                          '(--label_index_base=1).')
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
                    index_base: int = 0, integer_labels: str = '') -> Annotations:
  """Parses a generic `<path> <label>` list; the label is a class index or a class name.

  The path may contain spaces (the label is the last field). With name labels and no `classes`, the
  class list is their sorted unique values; integer labels count from `index_base` (1 for lists
  numbered like UCF101's) and keep empty `label_text` when no `classes` is given.
  """
  rows, paths = [], []
  for line, text in numbered_lines(path):
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
      raise AnnotationError(path, line, f'expected "<path> <label>", got {text!r}.')
    paths.append(parts[0])
    rows.append((line, parts[1]))
  resolved, classes = _resolve_labels(path, rows, classes, None, index_base, integer_labels)
  return Annotations(tuple(VideoEntry(path_or_id=p, label_index=i, label_text=t)
                           for p, (i, t) in zip(paths, resolved)), classes)


def parse_tsn_list(path: PathLike, classes: Optional[Sequence[str]] = None,
                   label_order: Optional[Sequence[str]] = None, index_base: int = 0,
                   integer_labels: str = '') -> Annotations:
  """Parses a TSN/mmaction frame-folder list `<frame_dir> <num_frames> <label>`.

  `label_order` is the class order the file's integer labels refer to when it differs from the
  official `classes` (see HMDB51_TSN_LIST_ORDER); entries get indices into `classes`.
  """
  rows, dirs, counts = [], [], []
  for line, text in numbered_lines(path):
    parts = text.rsplit(None, 2)
    if len(parts) != 3:
      raise AnnotationError(path, line,
                            f'expected "<frame_dir> <num_frames> <label>", got {text!r}.')
    frames = parse_int(path, line, parts[1], 'num_frames')
    if frames < 0:
      raise AnnotationError(path, line, f'negative num_frames {frames}.')
    dirs.append(parts[0])
    counts.append(frames)
    rows.append((line, parts[2]))
  resolved, classes = _resolve_labels(path, rows, classes, label_order, index_base,
                                      integer_labels)
  return Annotations(tuple(VideoEntry(path_or_id=d, label_index=i, label_text=t, num_frames=n)
                           for d, n, (i, t) in zip(dirs, counts, resolved)), classes)


def parse_class_folders(root: PathLike, extensions: Optional[Iterable[str]] = None) -> Annotations:
  """Reads a `root/<class>/...` tree; classes are the sorted folder names.

  With `extensions` (e.g. ['.mp4', '.avi'], case-insensitive) every matching file below a class
  folder is a video, at any depth; a video inside a subfolder (`<class>/<group>/<video>`) gets
  that subfolder as its group. Without it every non-hidden file and folder directly in a class
  folder is a video (frame folders). `path_or_id` is `<class>/<relative path>`; entries sorted;
  the other files below the class folders are listed in `skipped`, and hidden files of a
  video's extension (macOS's ._ files, or a video renamed) in `hidden`.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise ValueError(f'{root}: not a directory.')
  exts = None if extensions is None else {e.lower() if e.startswith('.') else '.' + e.lower()
                                          for e in extensions}
  names = [d for d in sorted(os.listdir(root)) if not d.startswith('.')]
  for name in names:  # a class folder on a disk not mounted: its class would be left out
    link = os.path.join(root, name)
    if (os.path.islink(link) and not os.path.exists(link)
        and not os.path.splitext(name)[1]):  # a name with an extension is a file's
      raise ValueError(f'{link}: a link to {os.path.realpath(link)}, which is not there: its '
                       'class would be left out of the model. Make it reachable (mount it) or '
                       'remove the link.')
  classes = tuple(d for d in names if os.path.isdir(os.path.join(root, d)))
  if not classes:
    raise ValueError(f'{root}: no class folders.')
  entries, skipped = [], []
  hidden = [] if exts is None else _hidden_videos_outside_class_folders(root, exts)
  for idx, cls in enumerate(classes):
    folder = os.path.join(root, cls)
    if exts is None:
      names = [n for n in sorted(os.listdir(folder)) if not n.startswith('.')]
    else:
      names = []
      for parent, _, filenames in tree.walk(folder, hidden=True):
        for n in filenames:
          relative = os.path.relpath(os.path.join(parent, n), folder)
          video = os.path.splitext(n)[1].lower() in exts
          if tree.is_hidden(relative):
            if video:
              hidden.append(f'{cls}/{relative}')
          else:
            (names if video else skipped).append(relative if video else f'{cls}/{relative}')
      names.sort()
    for name in names:
      parts = name.replace(os.sep, '/').split('/')
      entries.append(VideoEntry(path_or_id=f'{cls}/{"/".join(parts)}', label_index=idx,
                                label_text=cls, group=parts[0] if len(parts) > 1 else ''))
  return Annotations(tuple(entries), classes, tuple(sorted(skipped)), tuple(sorted(hidden)))


def _hidden_videos_outside_class_folders(root: str, exts: Set[str]) -> List[str]:
  """The files of an extension in `exts` hidden directly in `root` or below its hidden folders
  (relative to `root`): a class folder's are found while walking it."""
  found = []
  for parent, dirnames, filenames in tree.walk(root, hidden=True):
    if parent == root:
      dirnames[:] = [d for d in dirnames if d.startswith('.')]
      filenames = [n for n in filenames if n.startswith('.')]
    found += [os.path.relpath(os.path.join(parent, n), root) for n in filenames
              if os.path.splitext(n)[1].lower() in exts]
  return found


def parse_csv_list(path: PathLike, classes: Optional[Sequence[str]], path_column: str,
                   label_column: str, group_column: str = '', index_base: int = 0,
                   integer_labels: str = '') -> Annotations:
  """Reads a CSV list with a header (e.g. fight_surv's `path,label,source_group`).

  Labels are class names or indices, as in `parse_list_file`. Labels outside the class list
  fail together, listing each (with its first line). `group_column` fills each entry's `group`.
  """
  with text_file(path, newline='') as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    needed = [c for c in (path_column, label_column, group_column) if c]
    missing = [c for c in needed if c not in header]
    if missing:
      raise AnnotationError(path, None, f'header {header} lacks column(s) {missing}.')
    rows = []
    for row in reader:
      extra, short = row.pop(None, []), [c for c in header if row[c] is None]
      if not any((v or '').strip() for v in list(row.values()) + extra):
        continue
      if extra or short:  # a comma too many or too few: the columns may have shifted
        fields = len(header) + len(extra) - len(short)
        raise AnnotationError(path, reader.line_num, f'{fields} fields, the header '
                              f'({",".join(header)}) has {len(header)}.')
      video, label = row[path_column].strip(), row[label_column].strip()
      if not video or not label:
        raise AnnotationError(path, reader.line_num, f'empty {path_column} or {label_column}.')
      group = row[group_column].strip() if group_column else ''
      if group_column and not group:
        raise AnnotationError(path, reader.line_num, f'empty {group_column}: cannot split by '
                              'group.')
      rows.append((reader.line_num, video, label, group))
  resolved, classes = _resolve_labels(path, [(line, label) for line, _, label, _ in rows],
                                      classes, None, index_base, integer_labels)
  return Annotations(tuple(VideoEntry(path_or_id=video, label_index=i, label_text=text,
                                      group=group)
                           for (_, video, _, group), (i, text) in zip(rows, resolved)), classes)


def split_by_group(entries: Sequence[VideoEntry], val_fraction: float, seed: int,
                   val_groups: Sequence[str] = ()) -> Dict[str, List[VideoEntry]]:
  """Splits entries into 'train' and 'val' by whole groups (never one group on both sides).

  With `val_groups` those groups are val. Otherwise groups are visited in a seeded random order
  and moved to val while val stays within `val_fraction` of the entries (groups that would
  overshoot are skipped), until val holds at least 90 % of that target. A group is not moved
  when it holds the last train videos of a class, and classes still missing from val then get
  one of their groups there (smallest first) where that takes no class's last train group,
  while val stays within twice the target and at most half of the entries: a class spread over
  two or more groups is trained and, as far as those bounds allow, evaluated on. Both sides
  keep the entries' order. Errors name the converter's flags (--val_groups, --val_fraction).
  """
  by_group: Dict[str, List[VideoEntry]] = collections.defaultdict(list)
  for entry in entries:
    if not entry.group:
      raise ValueError(f'{entry.path_or_id} has an empty group: cannot split by group.')
    by_group[entry.group].append(entry)
  if val_groups:
    unknown = sorted(set(val_groups) - set(by_group))
    if unknown:
      raise ValueError(f'--val_groups not in the list: {unknown}.')
    chosen = set(val_groups)
  else:
    if not 0.0 < val_fraction < 1.0:
      raise ValueError(f'--val_fraction must be in (0, 1), got {val_fraction}.')
    target = val_fraction * len(entries)
    order = sorted(by_group)
    random.Random(seed).shuffle(order)
    classes_of = {g: {e.label_index for e in by_group[g] if e.label_index >= 0} for g in order}
    train_groups = collections.Counter(c for g in order for c in classes_of[g])
    chosen, size, in_val = set(), 0, set()

    def keeps_every_class_trained(group: str) -> bool:
      return all(train_groups[c] > 1 for c in classes_of[group])

    def choose(group: str) -> None:
      nonlocal size
      chosen.add(group)
      size += len(by_group[group])
      train_groups.subtract(classes_of[group])
      in_val.update(classes_of[group])

    for group in order:
      if size >= 0.9 * target:
        break
      if size + len(by_group[group]) <= target and keeps_every_class_trained(group):
        choose(group)
    # Classes still without a val group get one, smallest groups first, while val stays within
    # twice the target and at most half of the entries.
    limit = min(2 * target, len(entries) / 2)
    for group in sorted(order, key=lambda g: len(by_group[g])):
      if (group not in chosen and classes_of[group] - in_val
          and size + len(by_group[group]) <= limit and keeps_every_class_trained(group)):
        choose(group)
    if not chosen:  # every group is larger than the target: take the smallest one, if possible
      smallest = [g for g in sorted(order, key=lambda g: len(by_group[g]))
                  if keeps_every_class_trained(g)]
      if not smallest:
        raise ValueError(
            f'Every group holds the only videos of a class ({len(order)} groups, e.g. '
            f'{sorted(order)[0]}): any val group would leave its class untrained; pass '
            '--val_groups to choose them anyway, or split by finer groups (a folder tree: '
            '--split_by_group=file).')
      chosen.add(smallest[0])
  if len(chosen) == len(by_group):
    raise ValueError('Splitting by group left no group for training.')
  return {'train': [e for e in entries if e.group not in chosen],
          'val': [e for e in entries if e.group in chosen]}
