"""S2DNet on Kinetics-400 (the Mini-Kinetics recipe on all 400 classes): `:warmup` / `:sampling`.

The warm-up starts from the reference's Kinetics SNet/DNet checkpoints, converted together (its
error without them gives the command, as for configs/mini_kinetics_s2dnet.py).

  python main.py --config=configs/k400_s2dnet.py:warmup --workdir=runs/kinetics400_s2dnet_warmup \\
      --config.dataset.data_dir=/data/k400_records --config.init_from.checkpoint=/ckpt/s2dnet_kinetics400_init
  python main.py --config=configs/k400_s2dnet.py:sampling \\
      --workdir=runs/kinetics400_s2dnet_sampling --config.dataset.data_dir=/data/k400_records
"""

import ml_collections

from configs import mini_kinetics_s2dnet


def get_config(stage: str = 'warmup') -> ml_collections.ConfigDict:
  config = mini_kinetics_s2dnet.s2dnet_config('kinetics400', stage, 'configs/k400_s2dnet.py')
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  return config
