"""S2DNet on Kinetics-400 (the Mini-Kinetics recipe on all 400 classes): `:warmup` / `:sampling`.

  python main.py --config=configs/k400_s2dnet.py:warmup --workdir=runs/kinetics400_s2dnet_warmup \\
      --config.dataset.data_dir=/data/k400_records
  python main.py --config=configs/k400_s2dnet.py:sampling \\
      --workdir=runs/kinetics400_s2dnet_sampling --config.dataset.data_dir=/data/k400_records
"""

import ml_collections

from configs import mini_kinetics_s2dnet


def get_config(stage: str = 'warmup') -> ml_collections.ConfigDict:
  config = mini_kinetics_s2dnet.s2dnet_config('kinetics400', stage)
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  return config
