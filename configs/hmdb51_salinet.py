"""SaliNet on HMDB51, one of the three official splits: `configs/hmdb51_salinet.py:3`.

Fine-tuned from a Kinetics-400 SaliNet, as configs/ucf101_salinet.py (whose docstring says how).

  python main.py --config=configs/hmdb51_salinet.py:1 --workdir=runs/hmdb51_s1 \\
      --config.dataset.data_dir=/data/hmdb51_records --config.init_from.checkpoint=runs/k400_salinet
"""

import ml_collections

from configs import ucf101_salinet


def get_config(split: str = '1') -> ml_collections.ConfigDict:
  config = ucf101_salinet.fold_config('hmdb51', split)
  config.eval_every_steps = 2_000
  return config
