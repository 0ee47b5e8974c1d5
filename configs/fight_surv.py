r"""A small 3D ResNet learns fight vs noFight on 115 real surveillance clips, on a CPU.

The clips (../shared/testdata/real_clips/fight_surv, clips.csv: path,label,source_group) are split
by source video, never by clip: most source videos feed both classes, so a clip-level split would
let the model recognise the camera instead of the action. The converter keeps whole source groups
on one side (default --val_fraction=0.25 --group_seed=0: 87 train / 28 val clips, 5 val sources).

1. Convert (about 15 s with 2 workers; short side 128 keeps CPU training fast):

  python -m data.convert --dataset=list --name=fight_surv \
      --input=../shared/testdata/real_clips/fight_surv \
      --annotations=../shared/testdata/real_clips/fight_surv/clips.csv \
      --split_by_group=source_group --short_side=128 --output=/tmp/fight_surv_records

2. Train (evaluates the held-out source groups at the end; a few minutes on 2 CPU cores):

  python main.py --config=configs/fight_surv.py --workdir=/tmp/fight

  (--config.dataset.data_dir=DIR if the records are elsewhere.)
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_base_config()
  config.dataset.name = 'fight_surv'
  config.dataset.data_dir = '/tmp/fight_surv_records'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'

  # Records are stored at short side 128; 8 frames 4 apart span about 1-3 s at 10-30 fps.
  config.data.num_frames = 8
  config.data.frame_stride = 4
  config.data.crop_size = 112
  config.data.train_min_scale = 128
  config.data.train_max_scale = 160
  # Left/right does not change whether people fight.
  config.data.train_augmentations = ('random_flip',)
  config.data.shuffle_buffer = 128
  config.data.eval_num_clips = 4
  config.data.eval_num_crops = 3
  # Test views at the smallest train scale, as PySlowFast tests (objects at a size training
  # saw): 3 crops of 128 along the long side.
  config.data.eval_short_side = 128
  config.data.eval_crop_size = 128

  config.model = ml_collections.ConfigDict(dict(
      name='hara_resnet3d', depth=10, width=16, stem_temporal_kernel=3, stem_max_pool=True,
      dropout_rate=0.5, conv_impl='auto'))

  config.optimizer.base_learning_rate = 0.05
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 20
  config.optimizer.weight_decay = 1e-3
  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = 600  # about 110 epochs of the 87 train clips (~5 min on 2 cores)
  config.num_epochs = -1.0
  config.log_every_steps = 25
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  return config
