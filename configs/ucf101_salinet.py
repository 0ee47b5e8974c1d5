"""SaliNet on UCF101, one of the three official splits: `configs/ucf101_salinet.py:2`.

Same model and optimiser as the K400 recipe, fine-tuned from K400 SaliNet weights without the
classifier (spec salinet.md, 6). Test views as for K400.

  python main.py --config=configs/ucf101_salinet.py:1 --workdir=runs/ucf101_s1 \\
      --config.dataset.data_dir=/data/ucf101_records
"""

import ml_collections

from configs import k400_salinet

SPLITS = ('1', '2', '3')


def fold_config(dataset: str, split: str) -> ml_collections.ConfigDict:
  """The K400 recipe moved to `dataset`'s official fold `split` (UCF101 and HMDB51)."""
  split = str(split)
  if split not in SPLITS:
    raise ValueError(f'{dataset} split must be one of {SPLITS}, got {split!r} '
                     f'(use configs/{dataset}_salinet.py:1).')
  config = k400_salinet.get_config()
  config.dataset.name = dataset
  config.dataset.train_split = f'train{split}'
  config.dataset.eval_split = f'test{split}'
  config.batch_size = 2
  config.eval_every_steps = 5_000
  # Fine-tune from K400 SaliNet weights without its 400-class classifier:
  # --config.init_from.checkpoint=runs/k400_salinet (a workdir) or a converted checkpoint.
  config.init_from.exclude = '^head/'
  return config


def get_config(split: str = '1') -> ml_collections.ConfigDict:
  return fold_config('ucf101', split)
