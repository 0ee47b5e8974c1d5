"""SaliNet on UCF101, one of the three official splits: `configs/ucf101_salinet.py:2`.

Fine-tuned from a Kinetics-400 SaliNet (a K400 run's workdir or a converted reference SaliNet
checkpoint) without its classifier, as the reference's loader skips every 'fc' key. The SaliNet
release holds no UCF101/HMDB51 config: every other number is the K400 recipe's.

  python main.py --config=configs/ucf101_salinet.py:1 --workdir=runs/ucf101_s1 \\
      --config.dataset.data_dir=/data/ucf101_records --config.init_from.checkpoint=runs/k400_salinet
"""

import ml_collections

from configs import k400_salinet

SPLITS = ('1', '2', '3')


def fold_config(dataset: str, split: str) -> ml_collections.ConfigDict:
  """The K400 recipe moved to `dataset`'s official fold `split` (UCF101 and HMDB51)."""
  split = str(split)
  if split not in SPLITS:
    raise ValueError(f'{dataset} split must be one of {SPLITS}, got {split!r} (it follows the '
                     'config file: --config=FILE.py:1).')
  config = k400_salinet.get_config()
  config.dataset.name = dataset
  config.dataset.train_split = f'train{split}'
  config.dataset.eval_split = f'test{split}'
  config.eval_every_steps = 5_000
  config.init_from.checkpoint = 'REQUIRED'
  config.init_from.source = ('a Kinetics-400 SaliNet: the workdir of a configs/k400_salinet.py '
                             'run, or a converted reference SaliNet checkpoint')
  config.init_from.convert_command = (
      'python -m salinet_jax.convert --source=salinet --checkpoint=SALINET_K400.pyth '
      '--config=configs/k400_salinet.py --output=/ckpt/salinet_k400')
  config.init_from.exclude = '^head/'
  return config


def get_config(split: str = '1') -> ml_collections.ConfigDict:
  return fold_config('ucf101', split)
