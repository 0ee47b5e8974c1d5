"""UCF101 (classInd.txt, train/test lists) and HMDB51 (official split folders, TSN-form lists)."""

import os
import re
from typing import Dict, Optional, Sequence, Tuple

from data.annotations.common import (AnnotationError, Annotations, PathLike, UnknownLabels,
                                     VideoEntry, check_classes, index_of, numbered_lines,
                                     parse_int)
from data.annotations.lists import parse_tsn_list

# ----------------------------------------------------------------------------------------------
# UCF101.


def parse_ucf101_classes(class_ind_path: PathLike) -> Tuple[str, ...]:
  """Reads classInd.txt (`<1-based index> <name>`) into names in index order (0: ApplyEyeMakeup)."""
  by_index: Dict[int, Tuple[int, str]] = {}
  for line, text in numbered_lines(class_ind_path):
    parts = text.split()
    if len(parts) != 2:
      raise AnnotationError(class_ind_path, line, f'expected "<index> <class>", got {text!r}.')
    idx = parse_int(class_ind_path, line, parts[0], 'class index')
    if idx in by_index:
      raise AnnotationError(class_ind_path, line, f'index {idx} repeats line {by_index[idx][0]}.')
    by_index[idx] = (line, parts[1])
  if sorted(by_index) != list(range(1, len(by_index) + 1)):
    raise AnnotationError(class_ind_path, None, f'class indices must be 1..{len(by_index)}, '
                          f'got {sorted(by_index)[:5]}...')
  return check_classes([by_index[i][1] for i in sorted(by_index)], os.fspath(class_ind_path))


def parse_ucf101_list(path: PathLike, classes: Sequence[str]) -> Annotations:
  """Parses trainlist0k.txt (`Class/v_Class_gXX_cYY.avi <1-based label>`) or testlist0k.txt (paths).

  The class comes from the label when given, else from the folder name, matched case-insensitively
  if needed: list paths say `HandStandPushups/` while classInd says `HandstandPushups`. A label that
  disagrees with the folder is an error. `path_or_id` keeps the path as written (as on disk).
  """
  classes = check_classes(classes, os.fspath(path))
  index = index_of(classes)
  folded = {}
  for i, name in enumerate(classes):
    folded.setdefault(name.lower(), i)
  unknown = UnknownLabels(path, classes)
  entries = []
  for line, text in numbered_lines(path):
    parts = text.split()
    if len(parts) not in (1, 2):
      raise AnnotationError(path, line, f'expected "<Class>/<video>.avi [label]", got {text!r}.')
    video = parts[0]
    folder = video.split('/', 1)[0] if '/' in video else None
    from_folder = None
    if folder is not None:
      from_folder = index.get(folder, folded.get(folder.lower()))
    if len(parts) == 2:
      label = parse_int(path, line, parts[1], 'label')
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


def _clip_stem(name: str) -> str:
  """A clip's file or frame-folder name without its extension; dots inside HMDB51 titles stay."""
  return re.sub(r'\.[A-Za-z0-9]{2,4}$', '', os.path.basename(name.rstrip('/')))


def hmdb51_class_from_clip_name(name: str) -> Optional[str]:
  """The class token of an HMDB51 clip name (`<title>_<class>_<tags>_<n>[.avi]`), None if absent.

  The longest matching class wins, so '..._draw_sword_f_...' is draw_sword, not sword.
  """
  match = _HMDB51_TAGS.match(_clip_stem(name))
  if not match:
    return None
  head = match.group('head')
  found = [c for c in HMDB51_CLASSES if head == c or head.endswith('_' + c)]
  return max(found, key=len) if found else None


_UCF101_CLIP = re.compile(r'^v_(?P<name>[A-Za-z]+)_g\d+_c\d+$')


def class_in_clip_name(name: str, classes: Sequence[str]) -> Optional[str]:
  """The class of `classes` that a UCF101 (`v_<Class>_g08_c01`) or HMDB51 clip name carries; None
  where the name follows neither scheme or its class is not in `classes`. UCF101 names match
  case-insensitively: its files say HandStandPushups where classInd says HandstandPushups."""
  ucf = _UCF101_CLIP.match(_clip_stem(name))
  if ucf:
    folded = {c.lower(): c for c in classes}
    return folded.get(ucf.group('name').lower())
  hmdb = hmdb51_class_from_clip_name(name)
  return hmdb if hmdb in classes else None


def parse_hmdb51_split_dir(split_dir: PathLike, fold: int, classes: Sequence[str] = HMDB51_CLASSES
                          ) -> Tuple[Annotations, Annotations]:
  """(train, test) of fold `fold` (1..3) from the official testTrainMulti_7030_splits folder.

  Reads every `<class>_test_split<fold>.txt` (`<name>.avi <0|1|2>`: 1 train, 2 test, 0 unused).
  The class comes from the file name; every class of `classes` needs a file and no other file may
  exist. `path_or_id` is `<class>/<name>.avi`, the layout of the official per-class archives.
  """
  if fold not in (1, 2, 3):
    raise ValueError(f'HMDB51 fold must be 1, 2 or 3, got {fold!r}.')
  classes = check_classes(classes, os.fspath(split_dir))
  suffix = f'_test_split{fold}.txt'
  files = {name[:-len(suffix)]: os.path.join(split_dir, name)
           for name in sorted(os.listdir(split_dir)) if name.endswith(suffix)}
  unknown = UnknownLabels(split_dir, classes)
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
    for line, text in numbered_lines(path):
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
  for entry, (line, _) in zip(parsed.entries, numbered_lines(path)):
    token = hmdb51_class_from_clip_name(entry.path_or_id)
    if token is not None and token != entry.label_text:
      raise AnnotationError(path, line, f'label means {entry.label_text!r} in the TSN list order '
                            f'but the clip name says {token!r}.')
  return parsed
