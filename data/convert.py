r"""Converts videos (or extracted frames) plus official annotation files into sharded TFRecords.

  python -m data.convert --dataset=KIND --input=DIR --output=DIR [--annotations=PATH] [--split=NAME]

KIND and what --input / --annotations are:
  kinetics400, kinetics600  --input: the downloaded clips, `<youtube_id>_<start:06d>_<end:06d>.<ext>`
                            (or `<youtube_id>.<ext>`), flat or in per-class / per-split folders.
                            --annotations: crawler CSV(s), comma separated, `[split=]path`; the split
                            is read from the file name (train / val|validate / test) unless given.
                            Classes: sorted label names of the labeled CSVs (or --class_list).
  ucf101                    --input: UCF-101/ (`<Class>/v_*.avi`). --annotations: ucfTrainTestlist/
                            (classInd.txt, trainlist0k.txt, testlist0k.txt); --fold=1|2|3|all gives
                            splits train<k>/test<k>. Classes: classInd order.
  hmdb51                    --input: the per-class folders of .avi. --annotations: the official
                            testTrainMulti_7030_splits/ folder (`*_test_split<k>.txt`) with --fold,
                            or TSN-form list file(s) `split=path` (`<dir> <frames> <label>`).
  ssv2                      --input: the .webm files. --annotations: folder holding
                            something-something-v2-{labels,train,validation,test}.json
                            (splits train / val / test). Classes: the labels json index order.
  mini_kinetics             --input: a Kinetics-400 clip folder. --annotations: folder with
                            {train,val}_ytid_list.txt; --kinetics_csv: labeled K400 CSV(s) for them.
  folder                    --input: `<class>/<video>` tree (classes = sorted folder names).
  list                      --annotations: `[split=]path` list file(s) of `<path> <label>` lines or a
                            CSV with a header (`--path_column`, `--label_column`); with
                            --split_by_group=COLUMN the CSV is split into train/val by that column
                            (whole groups go to one side; --val_fraction, --val_groups, --group_seed).
  frames                    --input: frame folders. --annotations: TSN list(s) `<dir> <frames> <label>`
                            of `--frame_template` files (default {:06d}.jpg, from --frame_start).

Frames are decoded with PyAV in presentation order, turned upright from rotation metadata, stored
at --fps (0: every native frame) with short side --short_side (256) as JPEG (--jpeg_quality).
Class indices follow the official class order (--class_list overrides it); a label missing from
the class list stops the run before any decoding, listing every offender.

The work runs over --workers processes with a progress bar. Each shard is written to a temporary
name and renamed when complete, with its bookkeeping in OUTPUT/.convert/; a re-run with the same
arguments skips finished shards. A video that is missing, empty, corrupt or has no frames is left
out and reported (file, reason) in metadata.json and OUTPUT/failures.csv; the run carries on.

Output (OUTPUT/): `<name>-<split>.tfrecord-<i:05d>-of-<n:05d>` shards (data/records.py schema),
metadata.json, failures.csv, and TFDS's dataset_info.json + features.json: see data/records.py for
what `tfds.builder_from_directory(OUTPUT)` gives. Exit status: 0 when at least one video of each
converted split was written, 1 otherwise, 2 for bad arguments or annotations.
"""

import argparse
import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from data import annotations as ann
from data import video_io

if TYPE_CHECKING:  # TensorFlow is imported lazily: worker processes never need it
  from data import records  # pylint: disable=g-bad-import-order

KINDS = ('kinetics400', 'kinetics600', 'ucf101', 'hmdb51', 'ssv2', 'mini_kinetics', 'folder',
         'list', 'frames')
VIDEO_EXTENSIONS = video_io.VIDEO_EXTENSIONS
STATE_DIR = '.convert'
FAILURES_FILE = 'failures.csv'


class ConversionError(ValueError):
  """Bad arguments or annotations: reported before any video is decoded."""


@dataclasses.dataclass
class Item:
  """One video (or frame folder) to convert."""
  filename: str  # recorded as video/filename: the path or id the annotation gives
  label_index: int
  label_text: str
  source: str = ''  # absolute path of the video file / frame folder; '' when not found
  kind: str = 'video'  # 'video' | 'frames'
  num_frames: int = 0  # frames: count from the list (0: read until a gap)
  group: str = ''
  missing: str = ''  # why the source was not found


@dataclasses.dataclass
class Plan:
  """What a run converts: the class list and the items of each split."""
  name: str
  classes: Tuple[str, ...]
  splits: Dict[str, List[Item]]
  notes: Dict[str, Any] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------- finding files
class FileIndex:
  """Finds files under a root by relative path, case-insensitive path, stem or basename."""

  def __init__(self, root: str, extensions: Optional[Sequence[str]] = None, dirs: bool = False):
    self.root = os.path.abspath(root)
    self._extensions = None if extensions is None else {e.lower() for e in extensions}
    self._dirs = dirs
    self._built = False
    self._by_lower: Dict[str, str] = {}
    self._by_stem: Dict[str, List[str]] = collections.defaultdict(list)

  def _build(self):
    if self._built:
      return
    for parent, dirnames, filenames in os.walk(self.root):
      dirnames[:] = [d for d in dirnames if not d.startswith('.')]
      names = dirnames if self._dirs else filenames
      for name in names:
        if name.startswith('.'):
          continue
        stem, ext = os.path.splitext(name)
        if not self._dirs and self._extensions is not None and ext.lower() not in self._extensions:
          continue
        path = os.path.join(parent, name)
        rel = os.path.relpath(path, self.root)
        self._by_lower.setdefault(rel.lower().replace(os.sep, '/'), path)
        self._by_stem[name if self._dirs else stem].append(path)
    self._built = True

  def find(self, relative: Optional[str] = None, stems: Sequence[str] = ()) -> Optional[str]:
    """The file at `relative` (exact, then case-insensitive), else the unique file of a stem."""
    if relative:
      exact = os.path.join(self.root, relative)
      if os.path.exists(exact):
        return exact
      self._build()
      found = self._by_lower.get(relative.lower().replace(os.sep, '/'))
      if found:
        return found
    self._build()
    for stem in stems:
      candidates = self._by_stem.get(stem, [])
      if len(candidates) >= 1:
        return sorted(candidates)[0]
    return None


def _attach_sources(items: Iterable[Item], index: FileIndex, stems_of=None) -> List[Item]:
  """Fills `source` of each item from the index (or records why it was not found)."""
  out = []
  for item in items:
    stems = stems_of(item) if stems_of else (os.path.splitext(os.path.basename(item.filename))[0],)
    path = index.find(item.filename, stems)
    if path is None:
      item.missing = (f'missing video file: {item.filename} (not found under {index.root})')
    else:
      item.source = path
    out.append(item)
  return out


# ----------------------------------------------------------------------------- annotations
def _split_specs(value: str, what: str) -> List[Tuple[Optional[str], str]]:
  """Parses `[split=]path[,[split=]path...]`."""
  if not value:
    raise ConversionError(f'--annotations is required for --dataset={what}.')
  specs = []
  for part in value.split(','):
    part = part.strip()
    if not part:
      continue
    split, sep, path = part.partition('=')
    if not sep:
      split, path = None, part
    if not os.path.exists(path):
      raise ConversionError(f'Annotation file {path!r} does not exist.')
    specs.append((split or None, path))
  return specs


def _split_from_filename(path: str) -> Optional[str]:
  name = os.path.basename(path).lower()
  for pattern, split in ((r'train', 'train'), (r'val', 'val'), (r'test', 'test')):
    if re.search(pattern, name):
      return split
  return None


def _entries_to_items(entries: Iterable[ann.VideoEntry], kind: str = 'video') -> List[Item]:
  return [Item(filename=e.path_or_id, label_index=e.label_index, label_text=e.label_text,
               kind=kind, num_frames=e.num_frames or 0) for e in entries]


def _read_class_list(args) -> Optional[Tuple[str, ...]]:
  return ann.read_class_list(args.class_list) if args.class_list else None


def plan_kinetics(args) -> Plan:
  specs = _split_specs(args.annotations, args.dataset)
  classes = _read_class_list(args)
  parsed = []
  for split, path in specs:
    split = split or (args.split if len(specs) == 1 and args.split else None) or \
        _split_from_filename(path)
    if split is None:
      raise ConversionError(f'Cannot tell the split of {path}: write it as split=path.')
    parsed.append((split, path))
  if classes is None:
    names = set()
    for _, path in parsed:
      names.update(e.label_text for e in ann.parse_kinetics_csv(path).entries if e.labeled)
    classes = tuple(sorted(names))
  splits = {}
  index = FileIndex(args.input, _extensions(args))

  def stems_of(item):
    youtube_id = ann.parse_kinetics_clip_name(item.filename)[0]
    return (item.filename, youtube_id)

  for split, path in parsed:
    entries = ann.parse_kinetics_csv(path, classes).entries
    # The recorded filename is the clip name: it is how Kinetics clips are identified.
    splits[split] = _attach_sources(_entries_to_items(entries), index, stems_of)
  return Plan(args.name or args.dataset, classes, splits)


def plan_mini_kinetics(args) -> Plan:
  if not args.kinetics_csv:
    raise ConversionError('--dataset=mini_kinetics needs --kinetics_csv (labeled Kinetics-400 '
                          'CSVs holding the listed ids, comma separated).')
  csvs = [p.strip() for p in args.kinetics_csv.split(',') if p.strip()]
  root = args.annotations
  if not root or not os.path.isdir(root):
    raise ConversionError('--annotations must be the folder with train_ytid_list.txt and '
                          'val_ytid_list.txt.')
  wanted = [args.split] if args.split else ['train', 'val']
  classes = _read_class_list(args)
  lists = {s: os.path.join(root, f'{s}_ytid_list.txt') for s in wanted}
  lists = {s: p for s, p in lists.items() if os.path.exists(p)}
  if not lists:
    raise ConversionError(f'No {wanted} *_ytid_list.txt in {root}.')
  if classes is None and 'val' in lists:
    classes = ann.parse_mini_kinetics(lists['val'], csvs).classes
  index = FileIndex(args.input, _extensions(args))
  splits = {}
  for split, path in lists.items():
    parsed = ann.parse_mini_kinetics(path, csvs, classes)
    classes = classes or parsed.classes
    splits[split] = _attach_sources(
        _entries_to_items(parsed.entries), index,
        lambda item: (item.filename, ann.parse_kinetics_clip_name(item.filename)[0]))
  return Plan(args.name or 'mini_kinetics', tuple(classes), splits)


def _folds(args) -> List[int]:
  if args.fold == 'all':
    return [1, 2, 3]
  if args.fold not in ('1', '2', '3'):
    raise ConversionError(f'--fold must be 1, 2, 3 or all, got {args.fold!r}.')
  return [int(args.fold)]


def _keep_split(args, split: str) -> bool:
  return not args.split or args.split == split


def plan_ucf101(args) -> Plan:
  root = args.annotations
  if not root or not os.path.isdir(root):
    raise ConversionError('--annotations must be the ucfTrainTestlist folder (classInd.txt, '
                          'trainlist0k.txt, testlist0k.txt).')
  classes = ann.parse_ucf101_classes(os.path.join(root, 'classInd.txt'))
  index = FileIndex(args.input, _extensions(args))
  splits = {}
  for fold in _folds(args):
    for kind in ('train', 'test'):
      split = f'{kind}{fold}'
      if not _keep_split(args, split):
        continue
      parsed = ann.parse_ucf101_list(os.path.join(root, f'{kind}list0{fold}.txt'), classes)
      splits[split] = _attach_sources(_entries_to_items(parsed.entries), index)
  return Plan(args.name or 'ucf101', classes, splits)


def plan_hmdb51(args) -> Plan:
  index = FileIndex(args.input, _extensions(args))
  splits = {}
  classes = ann.HMDB51_CLASSES
  if args.annotations and os.path.isdir(args.annotations):
    for fold in _folds(args):
      train, test = ann.parse_hmdb51_split_dir(args.annotations, fold)
      for split, parsed in ((f'train{fold}', train), (f'test{fold}', test)):
        if _keep_split(args, split):
          splits[split] = _attach_sources(_entries_to_items(parsed.entries), index)
  else:
    for split, path in _split_specs(args.annotations, 'hmdb51'):
      split = split or args.split
      if not split:
        raise ConversionError(f'Give the split of TSN list {path} as split=path.')
      parsed = ann.parse_hmdb51_tsn_list(path)
      # TSN lists name frame folders ('data/HMDB51_flow/<clip>'): the video is `<clip>.avi`.
      items = [dataclasses.replace(i, filename=f'{i.label_text}/{os.path.basename(i.filename)}.avi')
               for i in _entries_to_items(parsed.entries)]
      splits[split] = _attach_sources(items, index)
  return Plan(args.name or 'hmdb51', classes, splits)


def plan_ssv2(args) -> Plan:
  root = args.annotations
  if not root or not os.path.isdir(root):
    raise ConversionError('--annotations must be the folder with something-something-v2-'
                          '{labels,train,validation,test}.json.')
  classes = ann.parse_ssv2_labels(os.path.join(root, 'something-something-v2-labels.json'))
  index = FileIndex(args.input, _extensions(args))
  splits = {}
  for split, name in (('train', 'train'), ('val', 'validation'), ('test', 'test')):
    path = os.path.join(root, f'something-something-v2-{name}.json')
    if not _keep_split(args, split) or not os.path.exists(path):
      continue
    parsed = ann.parse_ssv2_list(path, classes)
    splits[split] = _attach_sources(_entries_to_items(parsed.entries), index,
                                    lambda item: (item.filename,))
  if not splits:
    raise ConversionError(f'No something-something-v2 split json in {root}.')
  return Plan(args.name or 'ssv2', classes, splits)


def plan_folder(args) -> Plan:
  parsed = ann.parse_class_folders(args.input, _extensions(args))
  classes = parsed.classes
  if args.class_list:
    official = _read_class_list(args)
    unknown = sorted(set(classes) - set(official))
    if unknown:
      raise ConversionError(f'{args.input}: {len(unknown)} class folder(s) not in the '
                            f'{len(official)}-class list {args.class_list}: {unknown[:20]}.')
    index = {name: i for i, name in enumerate(official)}
    entries = [dataclasses.replace(e, label_index=index[e.label_text]) for e in parsed.entries]
    parsed, classes = ann.Annotations(tuple(entries), official), official
  items = _entries_to_items(parsed.entries)
  for item in items:
    item.source = os.path.join(os.path.abspath(args.input), item.filename)
  return Plan(args.name or 'folder', tuple(classes), {args.split or 'train': items})


def parse_csv_list(path: str, classes: Optional[Sequence[str]], path_column: str,
                   label_column: str, group_column: str = '') -> Tuple[List[Item], Tuple[str, ...]]:
  """Reads a CSV list with a header (e.g. fight_surv's `path,label,source_group`).

  Classes: `classes` when given, else the sorted label names. Labels outside the class list fail
  together, listing each (with its first line).
  """
  with open(path, encoding='utf-8-sig', newline='') as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    needed = [c for c in (path_column, label_column, group_column) if c]
    missing = [c for c in needed if c not in header]
    if missing:
      raise ConversionError(f'{path}: header {header} lacks column(s) {missing}.')
    rows = []
    for row in reader:
      if not any((v or '').strip() for v in row.values()):
        continue
      video, label = (row[path_column] or '').strip(), (row[label_column] or '').strip()
      if not video or not label:
        raise ConversionError(f'{path}:{reader.line_num}: empty {path_column} or {label_column}.')
      rows.append((reader.line_num, video, label,
                   (row[group_column] or '').strip() if group_column else ''))
  if classes is None:
    classes = sorted({label for _, _, label, _ in rows})
  classes = tuple(classes)
  index = {name: i for i, name in enumerate(classes)}
  unknown: Dict[str, int] = {}
  for line, _, label, _ in rows:
    if label not in index:
      unknown.setdefault(label, line)
  if unknown:
    shown = ', '.join(f'{label!r} (line {line})' for label, line in list(unknown.items())[:20])
    raise ConversionError(f'{path}: {len(unknown)} label(s) not in the {len(classes)}-class '
                          f'list: {shown}.')
  items = [Item(filename=video, label_index=index[label], label_text=label, group=group)
           for _, video, label, group in rows]
  return items, classes


def split_by_group(items: Sequence[Item], val_fraction: float, seed: int,
                   val_groups: Sequence[str] = ()) -> Dict[str, List[Item]]:
  """Splits items into 'train' and 'val' by whole groups (never one group on both sides).

  With `val_groups` those groups are val. Otherwise groups are visited in a seeded random order
  and moved to val while val stays within `val_fraction` of the items (groups that would overshoot
  are skipped), until val holds at least 90 % of that target.
  """
  by_group: Dict[str, List[Item]] = collections.defaultdict(list)
  for item in items:
    if not item.group:
      raise ConversionError(f'{item.filename} has an empty group: cannot split by group.')
    by_group[item.group].append(item)
  if val_groups:
    unknown = sorted(set(val_groups) - set(by_group))
    if unknown:
      raise ConversionError(f'--val_groups not in the list: {unknown}.')
    chosen = set(val_groups)
  else:
    if not 0.0 < val_fraction < 1.0:
      raise ConversionError(f'--val_fraction must be in (0, 1), got {val_fraction}.')
    target = val_fraction * len(items)
    order = sorted(by_group)
    random.Random(seed).shuffle(order)
    chosen, size = set(), 0
    for group in order:
      if size >= 0.9 * target:
        break
      if size + len(by_group[group]) <= target:
        chosen.add(group)
        size += len(by_group[group])
    if not chosen:  # every group is larger than the target: take the smallest one
      chosen.add(min(order, key=lambda g: len(by_group[g])))
  if len(chosen) == len(by_group):
    raise ConversionError('Splitting by group left no group for training.')
  return {'train': [i for i in items if i.group not in chosen],
          'val': [i for i in items if i.group in chosen]}


def plan_list(args) -> Plan:
  specs = _split_specs(args.annotations, 'list')
  classes = _read_class_list(args)
  root = os.path.abspath(args.input)
  parsed: List[Tuple[Optional[str], List[Item]]] = []
  csv_files = [p for _, p in specs if p.lower().endswith('.csv')]
  if csv_files and len(csv_files) != len(specs):
    raise ConversionError('Mix of CSV and plain list files in --annotations.')
  if csv_files:
    if classes is None:  # the sorted union over every file keeps indices consistent
      names = set()
      for _, path in specs:
        names.update(i.label_text for i in parse_csv_list(
            path, None, args.path_column, args.label_column)[0])
      classes = tuple(sorted(names))
    for split, path in specs:
      items, _ = parse_csv_list(path, classes, args.path_column, args.label_column,
                                args.split_by_group)
      parsed.append((split, items))
  else:
    if args.split_by_group:
      raise ConversionError('--split_by_group needs a CSV list with a header.')
    if classes is None:
      names, integer = set(), True
      for _, path in specs:
        result = ann.parse_list_file(path, None, args.label_index_base)
        integer = integer and not result.classes
        names.update(result.classes)
      if integer:
        raise ConversionError('The list files give integer labels: pass --class_list (one class '
                              'name per line, in index order).')
      classes = tuple(sorted(names))
    for split, path in specs:
      parsed.append((split, _entries_to_items(
          ann.parse_list_file(path, classes, args.label_index_base).entries)))
  splits: Dict[str, List[Item]] = {}
  for split, items in parsed:
    for item in items:
      source = item.filename if os.path.isabs(item.filename) else os.path.join(root, item.filename)
      if os.path.exists(source):
        item.source = source
      else:
        item.missing = f'missing video file: {source}'
    if args.split_by_group:
      if split:
        raise ConversionError('With --split_by_group give one CSV without a split= prefix.')
      val_groups = [g for g in (args.val_groups or '').split(',') if g]
      for name, part in split_by_group(items, args.val_fraction, args.group_seed,
                                       val_groups).items():
        splits[name] = part
    else:
      split = split or args.split or 'train'
      if split in splits:
        raise ConversionError(f'Split {split!r} is given twice in --annotations.')
      splits[split] = items
  plan = Plan(args.name or 'list', tuple(classes), splits)
  if args.split_by_group:
    plan.notes['groups'] = {s: sorted({i.group for i in items}) for s, items in splits.items()}
  return plan


def plan_frames(args) -> Plan:
  specs = _split_specs(args.annotations, 'frames')
  classes = _read_class_list(args)
  if classes is None:
    names = set()
    for _, path in specs:
      names.update(ann.parse_tsn_list(path, None, index_base=args.label_index_base).classes)
    if not names:
      raise ConversionError('The TSN lists give integer labels: pass --class_list.')
    classes = tuple(sorted(names))
  root = os.path.abspath(args.input)
  splits = {}
  for split, path in specs:
    split = split or args.split or _split_from_filename(path) or 'train'
    items = _entries_to_items(
        ann.parse_tsn_list(path, classes, index_base=args.label_index_base).entries, 'frames')
    for item in items:
      source = os.path.join(root, item.filename)
      if os.path.isdir(source):
        item.source = source
      else:
        item.missing = f'missing frame folder: {source}'
    splits[split] = items
  return Plan(args.name or 'frames', tuple(classes), splits)


PLANNERS = {
    'kinetics400': plan_kinetics, 'kinetics600': plan_kinetics, 'ucf101': plan_ucf101,
    'hmdb51': plan_hmdb51, 'ssv2': plan_ssv2, 'mini_kinetics': plan_mini_kinetics,
    'folder': plan_folder, 'list': plan_list, 'frames': plan_frames,
}


def _extensions(args) -> Tuple[str, ...]:
  return tuple(e.strip().lower() if e.strip().startswith('.') else '.' + e.strip().lower()
               for e in args.extensions.split(',') if e.strip())


def make_plan(args) -> Plan:
  """Parses the annotations into the class list and each split's items (no decoding)."""
  if args.dataset not in PLANNERS:
    raise ConversionError(f'--dataset must be one of {KINDS}, got {args.dataset!r}.')
  try:
    plan = PLANNERS[args.dataset](args)
  except ann.AnnotationError as e:
    raise ConversionError(str(e)) from None
  except ValueError as e:
    if isinstance(e, ConversionError):
      raise
    raise ConversionError(str(e)) from None
  if not plan.classes:
    raise ConversionError('No classes: check --annotations / --class_list.')
  if not re.fullmatch(r'[a-z][a-z0-9_]*', plan.name):
    raise ConversionError(f'--name {plan.name!r} must be snake_case (letters, digits, _): it '
                          'names the shard files and the TFDS dataset.')
  if not plan.splits:
    raise ConversionError('Nothing to convert: no split selected.')
  return plan


# ----------------------------------------------------------------------------- execution
def _decode_options(args, item: Item) -> Dict[str, Any]:
  if item.kind == 'frames':
    return dict(num_frames=item.num_frames, template=args.frame_template,
                start_index=args.frame_start, short_side=args.short_side,
                jpeg_quality=args.jpeg_quality, fps=args.frames_fps, max_frames=args.max_frames)
  return dict(fps=args.fps or None, short_side=args.short_side, jpeg_quality=args.jpeg_quality,
              max_frames=args.max_frames, interpolation=args.interpolation,
              threads=args.decode_threads)


def settings_of(args) -> Dict[str, Any]:
  """Everything that changes the bytes of the records (part of each split's fingerprint)."""
  return dict(fps=args.fps, short_side=args.short_side, jpeg_quality=args.jpeg_quality,
              max_frames=args.max_frames, interpolation=args.interpolation,
              frame_template=args.frame_template, frame_start=args.frame_start,
              frames_fps=args.frames_fps, shuffle_seed=args.shuffle_seed)


@dataclasses.dataclass
class ShardJob:
  split: str
  index: int
  num_shards: int
  path: str
  items: List[Item]
  fingerprint: str


def _fingerprint(plan: Plan, split: str, items: Sequence[Item], settings: Dict[str, Any],
                 index: int, num_shards: int) -> str:
  text = json.dumps([plan.name, list(plan.classes), split, index, num_shards, settings,
                     [(i.filename, i.label_index, i.source, i.kind, i.num_frames) for i in items]],
                    sort_keys=True)
  return hashlib.sha1(text.encode()).hexdigest()


def shard_jobs(plan: Plan, args, output: str) -> List[ShardJob]:
  """Orders each split (seeded shuffle) and cuts it into shards of --videos_per_shard."""
  from data import records  # pylint: disable=g-import-not-at-top
  settings = settings_of(args)
  jobs = []
  for split in sorted(plan.splits):
    items = list(plan.splits[split])
    if args.shuffle_seed >= 0:
      random.Random(f'{args.shuffle_seed}-{split}').shuffle(items)
    if args.num_shards > 0:
      num_shards = min(args.num_shards, max(1, len(items)))
    else:
      num_shards = max(1, -(-len(items) // max(1, args.videos_per_shard)))
    for index in range(num_shards):
      part = items[index * len(items) // num_shards:(index + 1) * len(items) // num_shards]
      path = records.shard_path(output, plan.name, split, index, num_shards)
      jobs.append(ShardJob(split, index, num_shards, path, part,
                           _fingerprint(plan, split, part, settings, index, num_shards)))
  return jobs


def _temporary_path(shard_path: str) -> str:
  """Where a shard is written before its rename: hidden, so no shard glob ever matches it."""
  return os.path.join(os.path.dirname(shard_path), f'.{os.path.basename(shard_path)}.incomplete')


def _state_path(output: str, shard_path: str) -> str:
  return os.path.join(output, STATE_DIR, os.path.basename(shard_path) + '.json')


def _read_state(output: str, job: ShardJob) -> Optional[Dict[str, Any]]:
  """The bookkeeping of a finished shard, or None when it must be (re)written."""
  path = _state_path(output, job.path)
  if not (os.path.exists(job.path) and os.path.exists(path)):
    return None
  try:
    with open(path) as f:
      state = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  if state.get('fingerprint') != job.fingerprint:
    return None
  if os.path.getsize(job.path) != state.get('num_bytes'):
    return None
  return state


def _write_json(path: str, value: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(value, f, indent=1)
  os.replace(path + '.tmp', path)


class _Runner:
  """Runs `video_io.convert_task` over tasks, in order, in a process pool (or inline)."""

  def __init__(self, workers: int):
    self.workers = workers
    self._pool = None

  def _new_pool(self, workers: int):
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context('spawn'))

  def map(self, tasks: Iterator[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
    if self.workers <= 1:
      for task in tasks:
        yield video_io.convert_task(task)
      return
    window = collections.deque()
    self._pool = self._new_pool(self.workers)
    try:
      tasks = iter(tasks)
      exhausted = False
      while True:
        while not exhausted and len(window) < 4 * self.workers:
          task = next(tasks, None)
          if task is None:
            exhausted = True
            break
          window.append((task, self._pool.submit(video_io.convert_task, task)))
        if not window:
          return
        task, future = window.popleft()
        try:
          yield future.result()
        except concurrent.futures.process.BrokenProcessPool:
          # A worker died (segfault, OOM kill). Retry every unfinished task alone in a fresh
          # process so only the culprit is reported, then carry on with a new pool.
          pending = [task] + [t for t, _ in window]
          window.clear()
          self._pool.shutdown(wait=False, cancel_futures=True)
          for retry in pending:
            yield self._run_isolated(retry)
          self._pool = self._new_pool(self.workers)
    finally:
      self._pool.shutdown(wait=True, cancel_futures=True)

  def _run_isolated(self, task):
    pool = self._new_pool(1)
    try:
      return pool.submit(video_io.convert_task, task).result()
    except concurrent.futures.process.BrokenProcessPool:
      return {'index': task['index'], 'ok': False, 'jpegs': [], 'fps': 0.0,
              'reason': 'decoder process crashed (killed or segmentation fault)'}
    finally:
      pool.shutdown(wait=True)


def run_jobs(jobs: Sequence[ShardJob], args, output: str) -> Dict[str, Dict[str, Any]]:
  """Writes every unfinished shard; returns the state of every shard by path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  states = {}
  todo = []
  for job in jobs:
    state = _read_state(output, job)
    if state is None:
      todo.append(job)
    else:
      states[job.path] = state
  skipped = len(jobs) - len(todo)
  if skipped:
    print(f'Resuming: {skipped} of {len(jobs)} shards already written, skipped.', file=sys.stderr)
  for job in jobs:  # leftovers of an interrupted run
    if os.path.exists(_temporary_path(job.path)):
      os.remove(_temporary_path(job.path))

  def tasks():
    for shard_number, job in enumerate(todo):
      for position, item in enumerate(job.items):
        task = {'index': (shard_number, position), 'source': item.source, 'kind': item.kind,
                'options': _decode_options(args, item)}
        if item.missing:
          task['missing'] = item.missing
        yield task

  total = sum(len(job.items) for job in todo)
  failures_so_far = 0
  results = _Runner(args.workers).map(tasks())
  with tqdm(total=total, unit='video', desc=f'convert {len(todo)} shards', file=sys.stderr,
            disable=args.quiet or total == 0, dynamic_ncols=True) as progress:
    for job in todo:
      tmp = _temporary_path(job.path)
      failures, videos = [], []
      with tf.io.TFRecordWriter(tmp) as writer:
        for item in job.items:
          result = next(results)
          if result['ok']:
            writer.write(records.serialize_video(result['jpegs'], item.label_index,
                                                 item.label_text, item.filename, result['fps'],
                                                 timing=result['timing']))
            videos.append({'filename': item.filename, 'num_frames': len(result['jpegs']),
                           'fps': round(result['fps'], 4), 'timing': result['timing']})
          else:
            failures.append({'split': job.split, 'file': item.filename,
                             'source': item.source, 'reason': result['reason']})
            failures_so_far += 1
          progress.update(1)
          progress.set_postfix(failures=failures_so_far, refresh=False)
      state = {'fingerprint': job.fingerprint, 'split': job.split, 'index': job.index,
               'num_shards': job.num_shards, 'num_videos': len(videos),
               'num_bytes': os.path.getsize(tmp), 'failures': failures, 'videos': videos}
      _write_json(_state_path(output, job.path), state)
      os.replace(tmp, job.path)
      states[job.path] = state
  results.close()  # shuts the worker pool down
  return states


def _remove_stale_shards(output: str, plan: Plan, jobs: Sequence[ShardJob]) -> None:
  """Deletes shards of the converted splits that this plan does not produce (other shard counts)."""
  import glob  # pylint: disable=g-import-not-at-top
  wanted = {job.path for job in jobs}
  for split in plan.splits:
    for path in glob.glob(os.path.join(output, f'{plan.name}-{split}.tfrecord-*-of-*')):
      if path not in wanted:
        os.remove(path)
        state = _state_path(output, path)
        if os.path.exists(state):
          os.remove(state)


def existing_metadata(output: str, plan: Plan) -> Optional['records.DatasetMetadata']:
  """The metadata already in `output` (other splits), failing if it is another dataset."""
  from data import records  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(output, records.METADATA_FILE)):
    return None
  try:
    metadata = records.read_metadata(output)
  except ValueError as e:
    raise ConversionError(str(e)) from None
  if metadata.name != plan.name or tuple(metadata.classes) != plan.classes:
    raise ConversionError(
        f'{output} holds dataset {metadata.name!r} with {len(metadata.classes)} classes; this '
        f'run converts {plan.name!r} with {len(plan.classes)} classes (another class list?). '
        'Use another --output.')
  return metadata


def write_outputs(output: str, plan: Plan, jobs: Sequence[ShardJob],
                  states: Dict[str, Dict[str, Any]], args) -> 'records.DatasetMetadata':
  """metadata.json (merged with other splits already there), failures.csv and the TFDS files."""
  from data import records  # pylint: disable=g-import-not-at-top
  metadata = existing_metadata(output, plan)
  if metadata is None:
    metadata = records.DatasetMetadata(name=plan.name, classes=list(plan.classes), split_sizes={},
                                       num_shards={})
  converted = set(plan.splits)
  metadata.failures = [f for f in metadata.failures if f.get('split') not in converted]
  for split in sorted(converted):
    split_jobs = [job for job in jobs if job.split == split]
    shard_states = [states[job.path] for job in split_jobs]
    metadata.split_sizes[split] = sum(s['num_videos'] for s in shard_states)
    metadata.num_shards[split] = len(split_jobs)
    metadata.shards[split] = [{'file': os.path.basename(job.path), 'num_videos': s['num_videos'],
                               'num_bytes': s['num_bytes']} for job, s in zip(split_jobs,
                                                                             shard_states)]
    for state in shard_states:
      metadata.failures.extend(state['failures'])
    timing = collections.Counter(v.get('timing', 'unknown') for s in shard_states
                                 for v in s['videos'])
    metadata.extra.setdefault('timing', {})[split] = dict(sorted(timing.items()))
  conversion = dict(metadata.extra.get('conversion', {}))
  for split in converted:
    conversion[split] = dict(source_kind=args.dataset, input=os.path.abspath(args.input),
                             annotations=args.annotations, settings=settings_of(args))
  metadata.extra['conversion'] = conversion
  metadata.extra['last_run'] = sorted(converted)  # the splits the latest run converted
  if 'groups' in plan.notes:
    groups = dict(metadata.extra.get('groups', {}))
    groups.update(plan.notes['groups'])
    metadata.extra['groups'] = groups
  records.write_metadata(output, metadata)
  with open(os.path.join(output, FAILURES_FILE), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['split', 'file', 'reason'])
    for failure in metadata.failures:
      writer.writerow([failure['split'], failure['file'], failure['reason']])
  records.write_tfds_info(output, metadata,
                          description=f'{plan.name}: converted by salinet_jax data.convert.')
  return metadata


def convert(args) -> Optional['records.DatasetMetadata']:
  """Runs a whole conversion for parsed arguments; returns the written metadata (None for
  --dry_run). Splits other than this run's, already in the output, are kept."""
  output = os.path.abspath(args.output)
  plan = make_plan(args)
  os.makedirs(output, exist_ok=True)
  jobs = shard_jobs(plan, args, output)
  counts = {split: len(items) for split, items in plan.splits.items()}
  missing = sum(1 for items in plan.splits.values() for i in items if i.missing)
  print(f'{plan.name}: {len(plan.classes)} classes, videos per split {counts}, '
        f'{len(jobs)} shards, {missing} listed videos not found.', file=sys.stderr)
  if args.dry_run:
    return None
  existing_metadata(output, plan)  # fail before decoding anything
  _remove_stale_shards(output, plan, jobs)
  start = time.time()
  states = run_jobs(jobs, args, output)
  metadata = write_outputs(output, plan, jobs, states, args)
  failed = [f for f in metadata.failures if f['split'] in plan.splits]
  print(f'Wrote {sum(metadata.split_sizes[s] for s in plan.splits)} videos '
        f'({ {s: metadata.split_sizes[s] for s in sorted(plan.splits)} }) to {output} in '
        f'{time.time() - start:.1f}s; {len(failed)} failed'
        + (f' (see {os.path.join(output, FAILURES_FILE)})' if failed else '') + '.',
        file=sys.stderr)
  for failure in failed[:10]:
    print(f"  {failure['split']}: {failure['file']}: {failure['reason']}", file=sys.stderr)
  return metadata


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m data.convert', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
  p.add_argument('--dataset', required=True, choices=KINDS, help='source layout / dataset kind')
  p.add_argument('--input', required=True, help='root of the videos or frame folders')
  p.add_argument('--output', required=True, help='records directory to write')
  p.add_argument('--annotations', default='', help='annotation file(s) or folder (see above)')
  p.add_argument('--split', default='', help='split name (single-split kinds) or the one split '
                 'to convert')
  p.add_argument('--name', default='', help='dataset name in shard files, metadata and TFDS '
                 '(default: the kind; use the registry name, e.g. fight_surv)')
  p.add_argument('--class_list', default='', help='class names one per line, in index order')
  p.add_argument('--fold', default='1', help='ucf101/hmdb51 fold: 1, 2, 3 or all')
  p.add_argument('--kinetics_csv', default='', help='mini_kinetics: labeled K400 CSV(s)')
  p.add_argument('--extensions', default=','.join(VIDEO_EXTENSIONS), help='video extensions')
  p.add_argument('--path_column', default='path', help='CSV lists: column of the video path')
  p.add_argument('--label_column', default='label', help='CSV lists: column of the label')
  p.add_argument('--label_index_base', type=int, default=0, help='integer labels start here')
  p.add_argument('--split_by_group', default='', help='CSV lists: split train/val by this column')
  p.add_argument('--val_fraction', type=float, default=0.25, help='share of videos in val')
  p.add_argument('--val_groups', default='', help='comma-separated groups forced into val')
  p.add_argument('--group_seed', type=int, default=0, help='seed of the group split')
  p.add_argument('--fps', type=float, default=0.0, help='stored frame rate; 0 = native')
  p.add_argument('--short_side', type=int, default=video_io.DEFAULT_SHORT_SIDE,
                 help='stored short side in pixels; 0 = original size')
  p.add_argument('--jpeg_quality', type=int, default=video_io.DEFAULT_JPEG_QUALITY)
  p.add_argument('--max_frames', type=int, default=0, help='keep at most this many frames; 0 = all')
  p.add_argument('--interpolation', default=video_io.DEFAULT_INTERPOLATION,
                 help='swscale resize filter (BILINEAR, AREA, BICUBIC, ...)')
  p.add_argument('--decode_threads', type=int, default=1, help='FFmpeg threads per video')
  p.add_argument('--frame_template', default='{:06d}.jpg', help='frames: file name template')
  p.add_argument('--frame_start', type=int, default=1, help='frames: first frame number')
  p.add_argument('--frames_fps', type=float, default=0.0, help='frames: rate they were taken at')
  p.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='decoding processes')
  p.add_argument('--videos_per_shard', type=int, default=32)
  p.add_argument('--num_shards', type=int, default=0, help='shards per split (overrides '
                 '--videos_per_shard)')
  p.add_argument('--shuffle_seed', type=int, default=0, help='order of videos in shards; -1 keeps '
                 'the annotation order')
  p.add_argument('--dry_run', action='store_true', help='parse annotations, print the plan, stop')
  p.add_argument('--quiet', action='store_true', help='no progress bar')
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    metadata = convert(args)
  except ConversionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if metadata is None:
    return 0
  empty = [s for s in metadata.extra['last_run'] if not metadata.split_sizes.get(s)]
  if empty:
    print(f'error: no video of split(s) {empty} could be converted.', file=sys.stderr)
  return 1 if empty else 0


if __name__ == '__main__':
  sys.exit(main())
