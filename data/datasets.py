"""Dataset registry: each dataset's fixed metadata (classes, splits and their sizes).

Configs name a dataset (`config.dataset.name`); the pipeline reads its records from
`config.dataset.data_dir`. Class names of converted datasets live in the records' metadata json
written by the converter, in the official class order.
"""

import dataclasses
from typing import Dict, Mapping, Optional, Tuple


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
    description: one line for humans.
  """
  name: str
  num_classes: int
  split_sizes: Mapping[str, int]
  train_split: str = 'train'
  eval_split: str = 'val'
  class_names: Optional[Tuple[str, ...]] = None
  description: str = ''


REGISTRY: Dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
  if info.name in REGISTRY:
    raise ValueError(f'Dataset {info.name!r} is registered twice.')
  if info.class_names is not None and len(info.class_names) != info.num_classes:
    raise ValueError(f'Dataset {info.name!r}: {len(info.class_names)} class names for '
                     f'{info.num_classes} classes.')
  REGISTRY[info.name] = info
  return info


def get(name: str) -> DatasetInfo:
  """Returns the registered dataset `name`, or fails listing the known names."""
  if name not in REGISTRY:
    raise ValueError(f'Unknown dataset {name!r}; registered datasets: {sorted(REGISTRY)}.')
  return REGISTRY[name]


SYNTHETIC = register(DatasetInfo(
    name='synthetic',
    num_classes=4,
    split_sizes={'train': 1024, 'val': 256},
    class_names=('moving_right', 'moving_left', 'moving_down', 'moving_up'),
    description='Built-in demo: direction of a textured square over a drifting background '
                '(data/synthetic.py); sizes are the demo config defaults.'))


# Real datasets. Split names are what the converter writes; datasets with official folds (UCF101,
# HMDB51) name each fold's splits 'train<k>'/'test<k>' (k = 1..3) and train/evaluate on fold 1 by
# default (set config.dataset.train_split/eval_split to 'train2'/'test2' etc. for the other folds).
# Sizes are the official annotation counts; downloaded copies of YouTube-based sets are smaller.
# Parsers for the annotation files: data/annotations.py.

KINETICS400 = register(DatasetInfo(
    name='kinetics400',
    num_classes=400,
    split_sizes={'train': 246_535, 'val': 19_906, 'test': 38_685},
    description='Kinetics-400 (crawler CSVs, classes = sorted label names). val/test: rows of '
                'kinetics-400_{val,test}.csv; train: the commonly cited count, not checked here; '
                'test is unlabeled.'))

KINETICS600 = register(DatasetInfo(
    name='kinetics600',
    num_classes=600,
    split_sizes={'train': 392_622, 'val': 30_000, 'test': 72_924},
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
    description='UCF101, 3 official folds (classInd.txt order; 13,320 clips per fold); counts of '
                'trainlist0k/testlist0k.txt.'))

HMDB51 = register(DatasetInfo(
    name='hmdb51',
    num_classes=51,
    split_sizes={'train1': 3570, 'test1': 1530, 'train2': 3570, 'test2': 1530,
                 'train3': 3570, 'test3': 1530},
    train_split='train1',
    eval_split='test1',
    description='HMDB51, 3 official folds of 70 train / 30 test clips per class (sorted class '
                'names; the rest of the 6,766 clips is unused in each fold).'))

SSV2 = register(DatasetInfo(
    name='ssv2',
    num_classes=174,
    split_sizes={'train': 168_913, 'val': 24_777, 'test': 27_157},
    description='Something-Something v2 (class order = labels json index). Commonly cited sizes '
                '(no list files checked here); test labels were never released.'))

MINI_KINETICS = register(DatasetInfo(
    name='mini_kinetics',
    num_classes=200,
    split_sizes={'train': 80_000, 'val': 5_000},
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
