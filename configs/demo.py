"""Demo: a small SaliNet (3D-ResNet-10 + SSF/TSFP/mask) learns the synthetic motion data on a CPU.

  python main.py --config=configs/demo.py --workdir=/tmp/demo
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_base_config()
  config.dataset.name = 'synthetic'
  config.dataset.synthetic = ml_collections.ConfigDict(dict(
      num_train=1024, num_val=256, num_frames=16, frame_size=40, object_size=12, object_cell=3,
      background_cell=4, speed=2.0, background_speed=1.0, fps=10.0, seed=0, num_shards=4,
      jpeg_quality=90))

  config.data.num_frames = 8
  config.data.frame_stride = 1
  config.data.crop_size = 32
  config.data.train_min_scale = 32
  config.data.train_max_scale = 40
  config.data.eval_num_clips = 2
  config.data.eval_num_crops = 1
  config.data.eval_short_side = 32
  config.data.eval_crop_size = 32
  config.data.shuffle_buffer = 512
  # A flip swaps 'moving_left' and 'moving_right': direction classes must not be flipped.
  config.data.train_augmentations = ()

  config.model = ml_collections.ConfigDict(dict(
      name='salinet_hara', depth=10, width=16, stem_temporal_kernel=3, stem_max_pool=False,
      dropout_rate=0.2, ssf=True, tsfp=True, shared_saliency_bn=True, conv_impl='auto'))
  config.loss.name = 'ce_l1_l2'

  config.optimizer.base_learning_rate = 0.1
  config.optimizer.schedule = 'cosine'
  config.batch_size = 32
  config.eval_batch_size = 32
  config.num_train_steps = 600
  config.num_epochs = -1.0
  config.log_every_steps = 25
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  config.eval.num_visualizations = 4
  return config
