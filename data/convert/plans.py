"""What a conversion does, decided before any decoding: one planner per dataset kind.

A planner reads the kind's annotation files (data/annotations/) into a `Plan`: the class list in
its official order and, per split, the `Item`s to convert with their source files found on disk
(data/convert/files.py). Bad arguments or annotations raise `ConversionError` here, so a run
stops before decoding anything.
"""

import argparse
import collections
import dataclasses
import os
import re
import unicodedata
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from data import annotations as ann
from data import errors
from data.convert import files


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
  missing: str = ''  # why the source was not found
  clip_seconds: float = 0.0  # the clip's length where its file may hold more (0: not checked)


@dataclasses.dataclass
class Plan:
  """What a run converts: the class list and the items of each split."""
  name: str
  classes: Tuple[str, ...]
  splits: Dict[str, List[Item]]
  notes: Dict[str, Any] = dataclasses.field(default_factory=dict)
  warnings: List[str] = dataclasses.field(default_factory=list)  # printed before decoding


def split_specs(value: str, what: str) -> List[Tuple[Optional[str], str]]:
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
    path = errors.local_path(path, '--annotations')
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
  specs = split_specs(args.annotations, args.dataset)
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
  index = files.FileIndex(args.input, _extensions(args))

  def stems_of(item):
    youtube_id = ann.parse_kinetics_clip_name(item.filename)[0]
    return (item.filename, youtube_id)

  warnings = []
  for split, path in parsed:
    entries = ann.parse_kinetics_csv(path, classes).entries
    listed = collections.Counter(_split_from_filename(e.listed_split) or e.listed_split
                                 for e in entries if e.listed_split)
    if _keep_split(args, split):
      warnings.extend(f'{count:,} row(s) of {path} name split {other!r} in their split '
                      f'column, but are converted as split {split!r}: check the split=path '
                      'given.' for other, count in sorted(listed.items()) if other != split)
    # The recorded filename is the clip name: it is how Kinetics clips are identified.
    splits[split] = _clip_lengths_of_files_named_by_id(
        files.attach_sources(_entries_to_items(entries), index, stems_of))
  return Plan(args.name or args.dataset, classes, splits, warnings=warnings)


def _clip_lengths_of_files_named_by_id(items: List[Item]) -> List[Item]:
  """Sets `clip_seconds` of the Kinetics clips found as a file named by their YouTube id alone:
  such a download may be the whole video, not the clip (decoding refuses it if it is longer)."""
  for item in items:
    youtube_id, start, end = ann.parse_kinetics_clip_name(item.filename)
    if item.source and os.path.basename(item.source).split('.', 1)[0] == youtube_id:
      item.clip_seconds = float(end - start)
  return items


def plan_mini_kinetics(args) -> Plan:
  if not args.kinetics_csv:
    raise ConversionError('--dataset=mini_kinetics needs --kinetics_csv (labeled Kinetics-400 '
                          'CSVs holding the listed ids, comma separated).')
  csvs = [errors.local_path(p.strip(), '--kinetics_csv')
          for p in args.kinetics_csv.split(',') if p.strip()]
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
  index = files.FileIndex(args.input, _extensions(args))
  splits = {}
  for split, path in lists.items():
    parsed = ann.parse_mini_kinetics(path, csvs, classes)
    classes = classes or parsed.classes
    splits[split] = _clip_lengths_of_files_named_by_id(files.attach_sources(
        _entries_to_items(parsed.entries), index,
        lambda item: (item.filename, ann.parse_kinetics_clip_name(item.filename)[0])))
  return Plan(args.name or 'mini_kinetics', tuple(classes), splits)


def _folds(args) -> List[int]:
  fold = '1' if args.fold is None else args.fold
  if fold == 'all':
    return [1, 2, 3]
  if fold not in ('1', '2', '3'):
    raise ConversionError(f'--fold must be 1, 2, 3 or all, got {fold!r}.')
  return [int(fold)]


def _keep_split(args, split: str) -> bool:
  return not args.split or args.split == split


def plan_ucf101(args) -> Plan:
  root = args.annotations
  if not root or not os.path.isdir(root):
    raise ConversionError('--annotations must be the ucfTrainTestlist folder (classInd.txt, '
                          'trainlist0k.txt, testlist0k.txt).')
  classes = ann.parse_ucf101_classes(os.path.join(root, 'classInd.txt'))
  index = files.FileIndex(args.input, _extensions(args))
  splits = {}
  for fold in _folds(args):
    for kind in ('train', 'test'):
      split = f'{kind}{fold}'
      if not _keep_split(args, split):
        continue
      parsed = ann.parse_ucf101_list(os.path.join(root, f'{kind}list0{fold}.txt'), classes)
      splits[split] = files.attach_sources(_entries_to_items(parsed.entries), index)
  return Plan(args.name or 'ucf101', classes, splits)


def plan_hmdb51(args) -> Plan:
  index = files.FileIndex(args.input, _extensions(args))
  splits = {}
  classes = ann.HMDB51_CLASSES
  if args.annotations and os.path.isdir(args.annotations):
    for fold in _folds(args):
      train, test = ann.parse_hmdb51_split_dir(args.annotations, fold)
      for split, parsed in ((f'train{fold}', train), (f'test{fold}', test)):
        if _keep_split(args, split):
          splits[split] = files.attach_sources(_entries_to_items(parsed.entries), index)
  else:
    if args.fold is not None:
      raise ConversionError(f'--fold={args.fold} picks a fold of the official split folder; TSN '
                            'lists are one fold each, given as split=path: it would be ignored.')
    for split, path in split_specs(args.annotations, 'hmdb51'):
      split = split or args.split
      if not split:
        raise ConversionError(f'Give the split of TSN list {path} as split=path.')
      parsed = ann.parse_hmdb51_tsn_list(path)
      # TSN lists name frame folders ('data/HMDB51_flow/<clip>'): the video is `<clip>.avi`.
      items = [dataclasses.replace(i, filename=f'{i.label_text}/{os.path.basename(i.filename)}.avi')
               for i in _entries_to_items(parsed.entries)]
      splits[split] = files.attach_sources(items, index)
  return Plan(args.name or 'hmdb51', classes, splits)


def plan_ssv2(args) -> Plan:
  root = args.annotations
  if not root or not os.path.isdir(root):
    raise ConversionError('--annotations must be the folder with something-something-v2-'
                          '{labels,train,validation,test}.json.')
  classes = ann.parse_ssv2_labels(os.path.join(root, 'something-something-v2-labels.json'))
  index = files.FileIndex(args.input, _extensions(args))
  splits = {}
  for split, name in (('train', 'train'), ('val', 'validation'), ('test', 'test')):
    path = os.path.join(root, f'something-something-v2-{name}.json')
    if not _keep_split(args, split) or not os.path.exists(path):
      continue
    parsed = ann.parse_ssv2_list(path, classes)
    splits[split] = files.attach_sources(_entries_to_items(parsed.entries), index,
                                    lambda item: (item.filename,))
  if not splits:
    raise ConversionError(f'No something-something-v2 split json in {root}.')
  return Plan(args.name or 'ssv2', classes, splits)


# How --split_by_group splits a class-per-folder tree into train and val.
FOLDER_GROUPS = ('subfolder', 'file')


# Folder names that name a split (ROOT/train/<class>/...), with the split a refusal suggests
# (training evaluates split 'val' by default), in the order it lists them.
SPLIT_FOLDER_NAMES = {'train': 'train', 'training': 'train', 'val': 'val', 'valid': 'val',
                      'validation': 'val', 'dev': 'val', 'eval': 'val', 'evaluation': 'val',
                      'test': 'test', 'testing': 'test'}


def _refuse_split_folders_as_classes(root: str, classes: Sequence[str]) -> None:
  """A tree of split folders (ROOT/train/<class>/..., ROOT/val/<class>/...) read as a class
  tree would train a 'train vs val' classifier, its classes made groups."""
  if not classes or not all(c.casefold() in SPLIT_FOLDER_NAMES for c in classes):
    return
  order = list(SPLIT_FOLDER_NAMES)
  ordered = sorted(classes, key=lambda c: order.index(c.casefold()))
  commands = ', then '.join(f'--input={os.path.join(root, c)} '
                            f'--split={SPLIT_FOLDER_NAMES[c.casefold()]}' for c in ordered)
  raise ConversionError(f'{root}: its folders ({", ".join(classes)}) are named like splits, not '
                        f'classes: convert each with its split into one output, e.g. '
                        f'{commands} (or pass --class_list if they are the classes).')


def plan_folder(args) -> Plan:
  parsed = ann.parse_class_folders(args.input, _extensions(args))
  classes = parsed.classes
  if not args.class_list:  # a class list naming them says they are classes
    _refuse_split_folders_as_classes(args.input, classes)
  _refuse_class_names_that_print_alike(classes)
  empty = sorted(set(classes) - {e.label_text for e in parsed.entries})
  if empty and not args.class_list:
    raise ConversionError(
        f'{args.input}: {len(empty)} class folder(s) hold no video with extensions '
        f'{args.extensions}: {empty[:20]}. Each folder is a class of the model: remove these '
        '(or add their videos), or pass --class_list to fix the class list yourself.')
  if len(classes) == 1 and not args.class_list:
    raise ConversionError(
        f'{args.input} holds one class folder ({classes[0]}): a model needs two or more classes '
        '(training refuses records of one). Add the folders of the other classes, or pass '
        '--class_list with the classes of the model these videos are for.')
  if args.class_list:
    official = _read_class_list(args)
    unknown = sorted(set(classes) - set(official))
    if unknown:
      raise ConversionError(f'{args.input}: {len(unknown)} class folder(s) not in the '
                            f'{len(official)}-class list {args.class_list}: {unknown[:20]}.')
    index = {name: i for i, name in enumerate(official)}
    entries = [dataclasses.replace(e, label_index=index[e.label_text]) for e in parsed.entries]
    parsed, classes = parsed._replace(entries=tuple(entries), classes=official), official
  entries = list(parsed.entries)
  if args.split_by_group:
    if args.split_by_group not in FOLDER_GROUPS:
      raise ConversionError(f'--dataset=folder splits with --split_by_group=subfolder (whole '
                            f'subfolders of a class folder go to one side) or =file, got '
                            f'{args.split_by_group!r}.')
    if args.split_by_group == 'file':
      entries = [dataclasses.replace(e, group=e.path_or_id) for e in entries]
    loose = [e.path_or_id for e in entries if not e.group]
    if loose:
      raise ConversionError(f'--split_by_group=subfolder needs every video in a subfolder of its '
                            f'class folder; {len(loose)} are not (e.g. {loose[0]}).')
    val_groups = [g for g in (args.val_groups or '').split(',') if g]
    splits = ann.split_by_group(entries, args.val_fraction, args.group_seed, val_groups)
  else:
    splits = {args.split or 'train': entries}
  root = os.path.abspath(args.input)
  plan = Plan(args.name or 'folder', tuple(classes), {})
  for split, part in splits.items():
    items = _entries_to_items(part)
    for item in items:
      item.source = os.path.join(root, item.filename)
    plan.splits[split] = items
  if args.split_by_group:
    plan.notes['groups'] = {s: sorted({e.group for e in part}) for s, part in splits.items()}
  loose = sorted(name for name in os.listdir(root) if not name.startswith('.')
                 and os.path.splitext(name)[1].lower() in _extensions(args))
  stray = [name for name in loose if os.path.isfile(os.path.join(root, name))]
  if stray:
    plan.warnings.append(
        f'{len(stray)} video(s) directly in {args.input} are in no class folder and left out '
        f'({errors.first_few(stray)}): move each into the folder of its class.')
  if parsed.hidden:
    plan.warnings.append(
        f'{len(parsed.hidden)} hidden file(s) under {args.input} are left out although their '
        f'extensions are among --extensions ({errors.first_few(parsed.hidden)}): rename any '
        'that is a video, or the hidden folder holding it, so that no part of its path starts '
        'with a dot.')
  # In the class folders, or directly in --input where a video would be in none.
  nowhere = [name for name in (*loose, *parsed.skipped) if os.path.islink(os.path.join(root, name))
             and not os.path.exists(os.path.join(root, name))]
  if nowhere:
    plan.warnings.append(
        f'{len(nowhere)} link(s) under {args.input} lead nowhere and are left out '
        f'({errors.first_few(nowhere)}): what they stood for (a folder or video on a disk not '
        'mounted?) is not in the records.')
  others = [name for name in parsed.skipped if name not in nowhere]
  if others:
    plan.warnings.append(
        f'{len(others)} file(s) in the class folders are left out, their extensions not '
        f'being among --extensions ({errors.first_few(others)}); add any that are '
        'videos to --extensions.')
  return plan



def _label_names(parsed: Iterable[Tuple[str, ann.Annotations]]) -> Dict[str, Tuple[str, ...]]:
  """Each list file's label names, from (path, its annotations parsed without a class list):
  none where its labels are integers; files without entries are left out (they label nothing)."""
  return {path: tuple(a.classes) for path, a in parsed if a.entries}


def _refuse_an_index_base_for_names(named: Dict[str, Tuple[str, ...]], index_base: int) -> None:
  """--label_index_base counts integer labels: beside files of name labels it is ignored."""
  if index_base and named and all(named.values()):
    raise ConversionError(f'--label_index_base={index_base} counts integer labels, and the labels '
                          f'of {", ".join(named)} are class names: it would be ignored.')


def _names_of_the_labels(named: Dict[str, Tuple[str, ...]]) -> Tuple[str, ...]:
  """The sorted class names that list files label their videos with, from `named` (each file's
  label names, none where its labels are integers). Files of integer labels need --class_list,
  and beside files of names they would index those files' sorted names: both are refused."""
  integer = [path for path, names in named.items() if not names]
  if integer and len(integer) < len(named):
    raise ConversionError(
        f'{integer[0]} gives integer labels and {next(p for p in named if named[p])} class '
        'names: the integers would be read as indices into the sorted names. Give every file '
        'names, or integers with --class_list (one class name per line, in index order).')
  if integer:
    raise ConversionError('The list files give integer labels: pass --class_list (one class '
                          'name per line, in index order), or --integer_labels=name if the '
                          'integers are the class names.')
  return tuple(sorted({name for names in named.values() for name in names}))


def _index_base_warnings(named: Dict[str, Tuple[str, ...]], splits, index_base: int) -> List[str]:
  """A line when integer labels counted from 0 never use 0: lists numbered from 1 (UCF101's)
  read that way label every video with the class after its own, and only a class left without
  videos would show it."""
  if index_base != 0 or any(named.values()):
    return []
  if any(item.label_index == 0 for items in splits.values() for item in items):
    return []
  return [f'the integer labels of {", ".join(named)} never use 0: if they count from 1 (as '
          "UCF101's lists do), pass --label_index_base=1, or each video takes the class after "
          'its own.']


def _refuse_labels_that_contradict_clip_names(path: str, entries: Sequence[ann.VideoEntry],
                                             classes: Sequence[str]) -> None:
  """Refuses a list whose labels contradict the class its UCF101 or HMDB51 clip names carry.

  Integer labels read in another class order or from another base label videos with a wrong
  class and nothing else shows it: HMDB51's TSN lists swap kick/kick_ball and
  sword/sword_exercise against mmaction2's label map, UCF101's lists count from 1.
  """
  wrong = [(carried, e) for e in entries if e.labeled
           for carried in [ann.class_in_clip_name(e.path_or_id, classes)]
           if carried is not None and carried != e.label_text]
  if not wrong:
    return
  first: Dict[Tuple[str, str], str] = {}
  for carried, e in wrong:
    first.setdefault((carried, e.label_text), e.path_or_id)
  examples = '; '.join(f'{carried!r} labelled {label!r}: {clip}'
                       for (carried, label), clip in list(first.items())[:4])
  hmdb51 = (' HMDB51\'s TSN lists convert with --dataset=hmdb51, which reads their order.'
            if set(classes) == set(ann.HMDB51_CLASSES) else '')
  raise ConversionError(
      f'{path}: {len(wrong):,} of its {len(entries):,} clips are labelled with another class '
      f'than their names carry (e.g. {examples}): its labels count the classes in another order '
      f'than the class list, or from another base (--label_index_base).{hmdb51}')


def plan_list(args) -> Plan:
  specs = split_specs(args.annotations, 'list')
  classes = _read_class_list(args)
  parsed: List[Tuple[Optional[str], Sequence[ann.VideoEntry]]] = []
  csv_files = [p for _, p in specs if p.lower().endswith('.csv')]
  if csv_files and len(csv_files) != len(specs):
    raise ConversionError('Mix of CSV and plain list files in --annotations.')
  if csv_files:
    parse = lambda path, classes: ann.parse_csv_list(  # noqa: E731
        path, classes, args.path_column, args.label_column, args.split_by_group,
        args.label_index_base, args.integer_labels)
  else:
    if args.split_by_group:
      raise ConversionError('--split_by_group needs a CSV list with a header.')
    parse = lambda path, classes: ann.parse_list_file(  # noqa: E731
        path, classes, args.label_index_base, args.integer_labels)
  named = _label_names((path, parse(path, None)) for _, path in specs)
  _refuse_an_index_base_for_names(named, args.label_index_base)
  if classes is None:  # the sorted union over every file keeps indices consistent
    classes = _names_of_the_labels(named)
  for split, path in specs:
    entries = parse(path, classes).entries
    _refuse_labels_that_contradict_clip_names(path, entries, classes)
    parsed.append((split, entries))
  _refuse_class_names_that_print_alike(classes)
  splits: Dict[str, Sequence[ann.VideoEntry]] = {}
  for split, entries in parsed:
    if args.split_by_group:
      if split:
        raise ConversionError('With --split_by_group give one CSV without a split= prefix.')
      val_groups = [g for g in (args.val_groups or '').split(',') if g]
      splits.update(ann.split_by_group(entries, args.val_fraction, args.group_seed, val_groups))
    else:
      split = split or args.split or 'train'
      if split in splits:
        raise ConversionError(f'Split {split!r} is given twice in --annotations.')
      splits[split] = entries
  root = os.path.abspath(args.input)
  plan = Plan(args.name or 'list', tuple(classes),
              {split: files.attach_paths(_entries_to_items(entries), root)
               for split, entries in splits.items()})
  if args.split_by_group:
    plan.notes['groups'] = {s: sorted({e.group for e in entries}) for s, entries in splits.items()}
  plan.warnings.extend(_index_base_warnings(named, plan.splits, args.label_index_base))
  return plan


def plan_frames(args) -> Plan:
  specs = split_specs(args.annotations, 'frames')
  classes = _read_class_list(args)
  named = _label_names((path, ann.parse_tsn_list(path, None, index_base=args.label_index_base,
                                                 integer_labels=args.integer_labels))
                       for _, path in specs)
  _refuse_an_index_base_for_names(named, args.label_index_base)
  if classes is None:
    classes = _names_of_the_labels(named)
  root = os.path.abspath(args.input)
  splits = {}
  for split, path in specs:
    split = split or args.split or _split_from_filename(path) or 'train'
    if split in splits:
      raise ConversionError(f'Split {split!r} is given twice in --annotations ({path} is the '
                            'second); give each list its split, e.g. train=LIST,val=LIST.')
    entries = ann.parse_tsn_list(path, classes, index_base=args.label_index_base,
                                 integer_labels=args.integer_labels).entries
    _refuse_labels_that_contradict_clip_names(path, entries, classes)
    splits[split] = files.attach_paths(_entries_to_items(entries, 'frames'), root)
  plan = Plan(args.name or 'frames', tuple(classes), splits)
  plan.warnings.extend(_index_base_warnings(named, splits, args.label_index_base))
  return plan


PLANNERS = {
    'kinetics400': plan_kinetics, 'kinetics600': plan_kinetics, 'ucf101': plan_ucf101,
    'hmdb51': plan_hmdb51, 'ssv2': plan_ssv2, 'mini_kinetics': plan_mini_kinetics,
    'folder': plan_folder, 'list': plan_list, 'frames': plan_frames,
}
KINDS = tuple(PLANNERS)  # the --dataset choices


def _extensions(args) -> Tuple[str, ...]:
  return tuple(e.strip().lower() if e.strip().startswith('.') else '.' + e.strip().lower()
               for e in args.extensions.split(',') if e.strip())


DEFAULT_VAL_FRACTION = 0.25
DEFAULT_GROUP_SEED = 0


GROUP_SPLIT_KINDS = ('folder', 'list')


def _check_split_arguments(args) -> None:
  """--split_by_group splits folder trees and lists; --val_groups names its val side, or
  --val_fraction and --group_seed draw it. A flag that would be ignored without a word is
  refused (any of them without a group split, the draw's beside --val_groups); with a group
  split the draw's defaults are filled in."""
  if args.split_by_group and args.dataset not in GROUP_SPLIT_KINDS:
    raise ConversionError(f'--split_by_group splits --dataset={" or ".join(GROUP_SPLIT_KINDS)}; '
                          f'--dataset={args.dataset} has splits of its own.')
  given = [f'--{name}' for name in ('val_fraction', 'val_groups', 'group_seed')
           if getattr(args, name) not in (None, '')]
  if args.split_by_group:
    drawn = [flag for flag in given if flag != '--val_groups']
    if args.val_groups and drawn:
      raise ConversionError(f'{" and ".join(drawn)} would be ignored beside --val_groups, which '
                            'names the val groups itself: give one or the other.')
    if args.val_fraction is None:
      args.val_fraction = DEFAULT_VAL_FRACTION
    if args.group_seed is None:
      args.group_seed = DEFAULT_GROUP_SEED
    return
  if given:
    raise ConversionError(
        f'{" and ".join(given)} {"applies" if len(given) == 1 else "apply"} only with '
        '--split_by_group (whole groups of videos to train or val: =subfolder or =file for a '
        'folder tree, a CSV column for a list); alone '
        + ('it' if len(given) == 1 else 'they') + ' would be ignored.')


def _planned(args) -> Plan:
  """The plan of --dataset's planner, its annotation errors as ConversionErrors."""
  try:
    return PLANNERS[args.dataset](args)
  except ann.AnnotationError as e:
    raise ConversionError(str(e)) from None
  except ValueError as e:
    if isinstance(e, ConversionError):
      raise
    raise ConversionError(str(e)) from None


def make_plan(args) -> Plan:
  """Parses the annotations into the class list and each split's items (no decoding)."""
  if args.dataset not in PLANNERS:
    raise ConversionError(f'--dataset must be one of {KINDS}, got {args.dataset!r}.')
  _check_split_arguments(args)
  plan = _planned(args)
  # A video listed in two splits is one whether or not both are converted now.
  _handle_videos_listed_twice(plan, args.dataset)
  if args.split:  # the one split to convert (with a group split, one side of it, drawn whole)
    plan.splits = {split: items for split, items in plan.splits.items() if split == args.split}
  if not plan.classes:
    unlabelled = sum(len(items) for items in plan.splits.values())
    raise ConversionError(
        'No classes: check --annotations / --class_list' + (
            f' (the annotations give {unlabelled:,} videos and no label, as test lists do: add '
            'a labelled list, e.g. the val one, or pass --class_list with the label map).'
            if unlabelled else '.'))
  if not re.fullmatch(r'[a-z][a-z0-9_]*', plan.name):
    raise ConversionError(f'--name {plan.name!r} must be snake_case (letters, digits, _): it '
                          'names the shard files and the TFDS dataset.')
  if not plan.splits and args.split:
    every = _planned(argparse.Namespace(**{**vars(args), 'split': ''})).splits
    raise ConversionError(f'Nothing to convert: --split={args.split} is none of the splits the '
                          f'annotations give ({", ".join(sorted(every))}).')
  if not plan.splits:
    raise ConversionError('Nothing to convert: no split selected.')
  plan.warnings.extend(_classes_differing_in_case_only(plan.classes))
  if args.dataset in USER_LIST_KINDS and not args.class_list:
    plan.warnings.extend(_classes_one_typo_apart(plan))
  return plan


# Kinds whose lists the user writes: a video listed twice there is refused. The official
# datasets' annotations cannot be corrected by the user: their repeats are reported and skipped.
USER_LIST_KINDS = ('folder', 'list', 'frames')


def _handle_videos_listed_twice(plan: Plan, kind: str) -> None:
  """A video listed twice would be stored twice: in train and val (scored on what it trained
  on), with two labels, or twice in one split (counted twice). For official annotations (e.g.
  two Kinetics clips of one YouTube id found as one `<id>.mp4`, which holds one of them at most)
  every listing of such a file becomes a failure with the reason. The splits of different folds
  (train1/test1 beside train2/test2, as --fold=all gives) hold the same videos by design."""
  where = {}
  for split, items in plan.splits.items():
    fold = re.search(r'\d*$', split).group()
    for item in items:
      where.setdefault((fold, _same_file_key(item)), []).append((split, item))
  repeated = {key: listed for key, listed in where.items() if len(listed) > 1}
  if not repeated:
    return
  spelt = lambda item: item.source or item.filename  # noqa: E731
  places = lambda listed: ', '.join(  # noqa: E731
      f'{split} as {item.label_text!r}'
      + (f' ({item.filename})' if len({i.filename for _, i in listed}) > 1 else '')
      for split, item in listed)
  shown = '; '.join(f'{spelt(listed[0][1])} ({places(listed)})'
                    for listed in list(repeated.values())[:5])
  more = ' ...' if len(repeated) > 5 else ''
  if kind in USER_LIST_KINDS:
    raise ConversionError(f'{len(repeated)} video(s) are listed more than once: {shown}{more}. '
                          'List each video once, in one split.')
  for listed in repeated.values():
    video, said = spelt(listed[0][1]), places(listed)
    for _, item in listed:
      item.source, item.missing = '', (
          f'{video} is listed {len(listed)} times ({said}): which listing it holds '
          'cannot be told (name each file after its listing, e.g. Kinetics clips '
          '<youtube_id>_<start>_<end>)')
  plan.warnings.append(f'{len(repeated)} video file(s) are listed more than once and are left '
                       f'out, each listing reported as a failure: {shown}{more}.')


def _classes_one_typo_apart(plan: Plan) -> List[str]:
  """A warning per pair of class names (of 4 or more characters) one typo apart (a letter
  added, dropped, replaced or two swapped: 'figth' beside 'fight') where one has at most a
  quarter of the other's videos. Without --class_list, a mistyped label is a class of its own,
  which only its few videos show; real classes one letter apart ('kick', 'pick') are alike in
  size."""
  videos = collections.Counter(item.label_index for items in plan.splits.values()
                               for item in items)
  classes = plan.classes
  return [f'classes {classes[i]!r} ({videos[i]} videos) and {classes[j]!r} ({videos[j]}) are '
          'one typo apart: if the smaller is a misspelt label, correct it (or pass '
          '--class_list, which refuses labels outside it).'
          for i in range(len(classes)) for j in range(i + 1, len(classes))
          if min(len(classes[i]), len(classes[j])) >= 4
          and classes[i].casefold() != classes[j].casefold()  # said as differing in case
          and 4 * min(videos[i], videos[j]) <= max(videos[i], videos[j])
          and _one_edit_apart(classes[i], classes[j])]


def _one_edit_apart(a: str, b: str) -> bool:
  """Whether one insertion, deletion, substitution or swap of neighbours turns a into b."""
  if a == b or abs(len(a) - len(b)) > 1:
    return False
  start = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
  rest_a, rest_b = a[start:], b[start:]
  return (rest_a[1:] == rest_b[1:] or rest_a[1:] == rest_b or rest_a == rest_b[1:]
          or (len(rest_a) >= 2 and rest_a[:2] == rest_b[1::-1] and rest_a[2:] == rest_b[2:]))


def _same_file_key(item) -> str:
  """One key per file on disk however a list spells its path ('./a/x.mp4', 'a//x.mp4', an
  absolute path, a symbolic link): a video listed under two spellings is one video."""
  if item.source:
    return os.path.realpath(item.source)
  return os.path.normpath(item.filename)


def _printed(name: str) -> str:
  """How a class name reads on a screen: compatibility characters (a no-break space, a
  full-width letter) as their plain forms, invisible ones (a zero-width space, a soft hyphen,
  a byte-order mark) dropped, runs of spaces as one, none at the ends."""
  shown = ''.join(c for c in unicodedata.normalize('NFKC', name)
                  if unicodedata.category(c) != 'Cf')
  return ' '.join(shown.split())


def _refuse_class_names_that_print_alike(classes: Sequence[str]) -> None:
  """Class names no output could tell apart are refused: one name in two Unicode forms (an
  accent composed in one folder name, decomposed in another), names differing in spaces,
  invisible or compatibility characters only, and names holding a control character or line
  separator (a line break would split the one-class-per-line labels files). The planners of user trees and lists call it
  before a group split, whose errors about such classes would hide the cause."""
  for name in classes:
    if any(unicodedata.category(c) in ('Cc', 'Zl', 'Zp') for c in name):
      raise ConversionError(f'class {name!r} holds a control character (a line break, tab or '
                            'the like): the labels files, one class per line, would split or '
                            'garble it. Rename the folder or label.')
  for names in _alike(classes, lambda n: unicodedata.normalize('NFC', n)):
    forms = ', '.join(
        f"{n!r} ({'composed' if unicodedata.is_normalized('NFC', n) else 'decomposed'})"
        for n in names)
    raise ConversionError(f'classes {forms} are one name written in two Unicode forms (an '
                          'accent as one character, or as a letter and a combining accent): '
                          'they would print alike as two classes. Rename the folders or labels '
                          'to one form.')
  for names in _alike(classes, _printed):
    raise ConversionError(f'classes {", ".join(repr(n) for n in names)} print alike (they '
                          'differ in spaces, invisible characters or compatibility characters '
                          'such as a no-break space or a full-width letter): no output could '
                          'tell the classes apart. Rename the folders or labels to one '
                          'spelling.')


def _alike(classes: Sequence[str], key) -> List[List[str]]:
  """The sets of two or more class names that `key` maps to one value."""
  groups = {}
  for name in classes:
    groups.setdefault(key(name), []).append(name)
  return [names for names in groups.values() if len(names) > 1]


def _classes_differing_in_case_only(classes: Sequence[str]) -> List[str]:
  """A warning per set of class names that differ in case only (a typo in a list, e.g. 'Fight'
  beside 'fight', makes a class of its own); names that print alike are refused."""
  _refuse_class_names_that_print_alike(classes)
  warnings = []
  for names in _alike(classes, lambda n: _printed(n).casefold()):
    warnings.append(f'classes {", ".join(repr(n) for n in names)} differ in case only: each is '
                    'a class of the model; correct the labels if they are one class '
                    '(--class_list then refuses any label outside the list).')
  return warnings
