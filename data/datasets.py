"""The official facts of the standard datasets (class lists, split sizes), to check records.

A records directory written by python -m data.convert describes its own dataset (classes in
order, splits and their sizes: metadata.json), so any converted folder trains without an entry
here. For the datasets registered here, `check_records` compares converted records with the
official facts and says what differs (a class count, the class list or its order, videos
missing from a split), because a downloaded copy of a YouTube-based set is usually incomplete
and a wrong class list is silent: a reference checkpoint's classifier reads its rows in the
official order.
"""

import dataclasses
import hashlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Fixed facts about one dataset.

  Attributes:
    name: registry key.
    num_classes: number of classes.
    split_sizes: official number of videos per split (train/val/test names as the converter writes).
    train_split: split used for training.
    eval_split: split used for validation/evaluation.
    class_names: the class list when it is fixed by the code (synthetic data), else None.
    classes_sha256: the SHA-256 of the official class list ('\n'-joined names in index order, as
      the converter writes them from the official annotation files), else ''.
    description: one line for humans.
  """
  name: str
  num_classes: int
  split_sizes: Mapping[str, int]
  train_split: str = 'train'
  eval_split: str = 'val'
  class_names: Optional[Tuple[str, ...]] = None
  classes_sha256: str = ''
  description: str = ''


REGISTRY: Dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
  if info.name in REGISTRY:
    raise ValueError(f'Dataset {info.name!r} is registered twice.')
  for role, split in (('train', info.train_split), ('eval', info.eval_split)):
    if split not in info.split_sizes:
      raise ValueError(f'Dataset {info.name!r}: its {role} split {split!r} is not among its '
                       f'splits {sorted(info.split_sizes)}.')
  if info.class_names is not None and len(info.class_names) != info.num_classes:
    raise ValueError(f'Dataset {info.name!r}: {len(info.class_names)} class names for '
                     f'{info.num_classes} classes.')
  REGISTRY[info.name] = info
  return info


def check_records(metadata, split: str) -> List[str]:
  """Warnings for records (a `records.DatasetMetadata`) whose labelled split `split` holds no
  video of some classes or lacks listed videos the converter left out (any dataset), or, for a
  registered dataset, whose split size, class count or class list differs from the official
  facts."""
  warnings = []
  per_class = metadata.extra.get('videos_per_class', {}).get(split)
  absent = [name for name, count in zip(metadata.classes, per_class or ()) if not count]
  if absent and any(per_class):
    warnings.append(
        f'Split {split!r} of {metadata.name!r} holds no video of {len(absent)} of its '
        f'{len(metadata.classes)} classes: {absent[:20]}' + (' ...' if len(absent) > 20 else '')
        + '; trained on, the model never sees them; evaluated on, its accuracy covers the other '
        'classes only.')
  failed = sum(failure.get('split') == split for failure in metadata.failures)
  if failed:
    kept = metadata.split_sizes.get(split, 0)
    warnings.append(
        f'Split {split!r} of {metadata.name!r} lacks {failed:,} of its listed videos, which the '
        "converter left out (not found, listed twice or unreadable; the records' failures.csv "
        f'names them): training and evaluation see its other {kept:,}.')
  info = REGISTRY.get(metadata.name)
  if info is None:
    return warnings
  if metadata.num_classes != info.num_classes:
    warnings.append(f'Records of {info.name!r} have {metadata.num_classes} classes; the official '
                    f'dataset has {info.num_classes}: was another class list used?')
  elif not official_classes(info, metadata.classes):
    warnings.append(
        f'Records of {info.name!r} name or order their {info.num_classes} classes otherwise than '
        'the official list: a classifier trained on that list (a reference checkpoint) would read '
        f'its rows as other classes. Convert with --dataset={info.name} from the official '
        'annotation files.')
  official = info.split_sizes.get(split)
  have = metadata.split_sizes.get(split, 0)
  if official and have != official:
    missing = official - have
    warnings.append(
        f'Split {split!r} of {info.name!r} holds {have:,} of the official {official:,} videos'
        + (f' ({missing:,} missing, {100 * missing / official:.1f}%)' if missing > 0 else
           f' ({-missing:,} more than official)')
        + '; accuracy is not comparable with published figures.')
  return warnings


def classes_digest(classes: Sequence[str]) -> str:
  """The SHA-256 of a class list in order (`DatasetInfo.classes_sha256`)."""
  return hashlib.sha256('\n'.join(classes).encode('utf-8')).hexdigest()


def official_classes(info: DatasetInfo, classes: Sequence[str]) -> bool:
  """Whether `classes` are the registered dataset's official list in its order (True where the
  registry holds no list)."""
  if info.class_names is not None:
    return tuple(classes) == tuple(info.class_names)
  return not info.classes_sha256 or classes_digest(classes) == info.classes_sha256


def get(name: str) -> DatasetInfo:
  """Returns the registered dataset `name`, or fails listing the known names."""
  if name not in REGISTRY:
    raise ValueError(f'Unknown dataset {name!r}; registered datasets: {sorted(REGISTRY)}.')
  return REGISTRY[name]


# Real datasets. Split names are what the converter writes; datasets with official folds (UCF101,
# HMDB51) name each fold's splits 'train<k>'/'test<k>' (k = 1..3) and train/evaluate on fold 1 by
# default (set config.dataset.train_split/eval_split to 'train2'/'test2' etc. for the other folds).
# Sizes are the official annotation counts; downloaded copies of YouTube-based sets are smaller.
# Parsers for the annotation files: data/annotations/.

KINETICS400 = register(DatasetInfo(
    name='kinetics400',
    num_classes=400,
    split_sizes={'train': 246_535, 'val': 19_906, 'test': 38_685},
    classes_sha256='a8dafb93a1204d4ecfa904f943ce5ee0c62ddeeb1df71aa1f96983fca17d777e',
    description='Kinetics-400 (crawler CSVs, classes = sorted label names). val/test: rows of '
                'kinetics-400_{val,test}.csv; train: the commonly cited count, not checked here; '
                'test is unlabeled.'))

KINETICS600 = register(DatasetInfo(
    name='kinetics600',
    num_classes=600,
    split_sizes={'train': 392_622, 'val': 30_000, 'test': 72_924},
    classes_sha256='5d9a560f98fcfed08f6129dd498f97e043edf729efb3c02dd96b482d2970f9c0',
    description='Kinetics-600 (crawler CSVs, classes = sorted label names). val/test: rows of '
                'kinetics-600_{val,test}.csv; train: the commonly cited count, not checked here; '
                'test is unlabeled.'))

UCF101 = register(DatasetInfo(
    name='ucf101',
    num_classes=101,
    split_sizes={'train1': 9537, 'test1': 3783, 'train2': 9586, 'test2': 3734,
                 'train3': 9624, 'test3': 3696},
    train_split='train1',
    eval_split='test1',
    classes_sha256='3ec3894f84996395754fb9c47fe6decb6a3a713ab4621a9ab090802e4f316525',
    description='UCF101, 3 official folds (classInd.txt order; 13,320 clips per fold); counts of '
                'trainlist0k/testlist0k.txt.'))

HMDB51 = register(DatasetInfo(
    name='hmdb51',
    num_classes=51,
    split_sizes={'train1': 3570, 'test1': 1530, 'train2': 3570, 'test2': 1530,
                 'train3': 3570, 'test3': 1530},
    train_split='train1',
    eval_split='test1',
    classes_sha256='154ef596b60371212a4963ee5f33996f926eb53ca8e44fa2499c8267f9db561e',
    description='HMDB51, 3 official folds of 70 train / 30 test clips per class (sorted class '
                'names; the rest of the 6,766 clips is unused in each fold).'))

SSV2 = register(DatasetInfo(
    name='ssv2',
    num_classes=174,
    split_sizes={'train': 168_913, 'val': 24_777, 'test': 27_157},
    classes_sha256='a31a2ad624a558d609762c50f4d5d4778246d3ace6717cf24b993b0bf2d9a68b',
    description='Something-Something v2 (class order = labels json index). Commonly cited sizes '
                '(no list files checked here); test labels were never released.'))

MINI_KINETICS = register(DatasetInfo(
    name='mini_kinetics',
    num_classes=200,
    split_sizes={'train': 80_000, 'val': 5_000},
    classes_sha256='a63f2d5afa051e890a92fdf522bb5bfa648777ad8305fbf6a2a0dba0c3aaba65',
    description='Mini-Kinetics-200 (Xie et al. 2018): YouTube-id lists over Kinetics-400 with K400 '
                'labels; classes = sorted names of its 200 K400 classes; counts of the id lists.'))

FIGHT_SURV = register(DatasetInfo(
    name='fight_surv',
    num_classes=2,
    split_sizes={'train': 87, 'val': 28},
    class_names=('fight', 'noFight'),
    description='Fight detection in surveillance / YouTube footage (115 real clips of '
                '../shared/testdata/real_clips/fight_surv, seymanurakti/fight-detection-surv-'
                'dataset subset). Split by source_group (python -m data.convert --dataset=list '
                '--split_by_group=source_group, default --val_fraction=0.25 --group_seed=0): '
                '5 source videos for val; see configs/fight_surv.py.'))
