"""Demo: a tiny S2DNet learns the synthetic motion data on a CPU, in two stages.

  python main.py --config=configs/demo_s2dnet.py:warmup --workdir=/tmp/s2dnet_demo_warmup
  python main.py --config=configs/demo_s2dnet.py:sampling --workdir=/tmp/s2dnet_demo_sampling \\
      --config.init_from.checkpoint=/tmp/s2dnet_demo_warmup
"""

import ml_collections

from configs import demo
from configs import mini_kinetics_s2dnet


def get_config(stage: str = 'warmup') -> ml_collections.ConfigDict:
  config = mini_kinetics_s2dnet.s2dnet_config('synthetic', stage, 'configs/demo_s2dnet.py',
                                              '/tmp/s2dnet_demo_warmup')
  config.dataset.synthetic = demo.get_config().dataset.synthetic
  config.data.update(dict(
      num_frames=16, frame_stride=1, train_crop='short_side_jitter', crop_size=40,
      train_min_scale=40, train_max_scale=44, train_augmentations=(), normalization='kinetics',
      eval_short_side=40, eval_crop_size=40, shuffle_buffer=512))
  config.model.update(dict(
      synopsis_frames=8, synopsis_size=32, detail_frames=8, detail_size=24, snet_width=0.25,
      snet_last_channels=128, dnet_depth=10, dnet_width=16, f_theta_mlp=(64, 32),
      context_features=32, topk=2))
  opt = config.optimizer
  opt.base_learning_rate = 0.05
  opt.base_batch_size = 0
  opt.nesterov = True
  opt.weight_decay = 1e-4
  opt.schedule = 'warmup_cosine'
  opt.warmup_epochs = 0.0
  opt.warmup_start_lr = 0.0
  opt.warmup_steps = 15
  config.dtype = 'float32'
  config.init_from.exclude = ''
  if stage == 'warmup':
    config.init_from.checkpoint = 'none'  # a demo: no pretrained backbones
    config.init_from.source = config.init_from.convert_command = ''
  config.batch_size = 16
  config.eval_batch_size = 32
  config.num_epochs = -1.0
  config.num_train_steps = 150
  config.log_every_steps = 25
  config.eval_every_steps = 150
  config.checkpoint_every_steps = 150
  config.eval.num_visualizations = 4
  return config
