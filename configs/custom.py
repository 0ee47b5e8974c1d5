r"""Train on your own videos: any records directory written by python -m data.convert.

The records describe the dataset (classes, splits): nothing to register, no code to edit. The
converter's 'train' and 'val' splits are used (--split_by_group / --val_fraction make them).

  python -m data.convert --dataset=folder --input=my_videos --split_by_group=subfolder \
      --short_side=128 --name=my_videos --output=/data/my_videos_records
  python main.py --config=configs/custom.py --workdir=runs/my_videos \
      --config.dataset.data_dir=/data/my_videos_records
  python main.py --config=configs/custom.py --workdir=runs/my_videos --mode=predict \
      --video=new_videos/

(`my_videos/<class>/<group>/<video>`: videos of one group, e.g. cut from the same recording,
stay on one side of the split; `--split_by_group=file` splits video by video.)

`configs/custom.py` (the default, `:scratch`) trains a small 3D ResNet-10 (8 frames of 112 px)
from scratch, which a CPU does in minutes. `configs/custom.py:i3d` fine-tunes PySlowFast's
Kinetics-400 NL-I3D-R50 instead (GPUs): 8 frames 8 apart, 224 crops of short side 256-320,
its 400-class classifier left out; records converted at the default short side 256. It asks
for the converted weights until given them:
  python -m salinet_jax.convert --source=pyslowfast --checkpoint=I3D_NLN_8x8_R50.pkl \
      --config=configs/k400_i3d_nl.py --output=/ckpt/i3d_nln_k400
  python main.py --config=configs/custom.py:i3d --workdir=runs/my_videos_i3d \
      --config.dataset.data_dir=/data/my_videos_records \
      --config.init_from.checkpoint=/ckpt/i3d_nln_k400
"""

import ml_collections

from configs import base
from configs import k400_i3d_nl


VARIANTS = ('scratch', 'i3d')


def get_config(variant: str = 'scratch') -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f'configs/custom.py variants are {VARIANTS} (--config=configs/custom.py:'
                     f'VARIANT), got {variant!r}.')
  config = base.get_base_config()
  config.dataset.name = ''  # taken from the records
  config.dataset.data_dir = ''  # required: --config.dataset.data_dir=RECORDS
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'

  # Records at short side 128: 8 frames 4 apart span about 1-3 s at 10-30 fps.
  config.data.num_frames = 8
  config.data.frame_stride = 4
  config.data.crop_size = 112
  config.data.train_min_scale = 128
  config.data.train_max_scale = 160
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
  config.num_train_steps = 600
  config.num_epochs = -1.0
  config.log_every_steps = 25
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  if variant == 'i3d':
    fine_tune_kinetics_i3d(config)
  return config


def fine_tune_kinetics_i3d(config: ml_collections.ConfigDict) -> None:
  """The NL-I3D-R50 of configs/k400_i3d_nl.py, its converted Kinetics-400 weights but the
  classifier, at its clip and crop sizes; LR 0.01 at batch 8 (PySlowFast trains it from scratch
  at 0.1 per 64 clips)."""
  recipe = k400_i3d_nl.get_config()
  config.model = recipe.model
  config.remat = recipe.remat
  config.data.update({field: recipe.data[field] for field in (
      'num_frames', 'frame_stride', 'crop_size', 'train_min_scale', 'train_max_scale',
      'eval_short_side', 'eval_crop_size')})
  config.init_from.checkpoint = 'REQUIRED'
  config.init_from.source = "PySlowFast's Kinetics-400 NL-I3D-R50 8x8 (I3D_NLN_8x8_R50.pkl)"
  config.init_from.convert_command = (
      'python -m salinet_jax.convert --source=pyslowfast --checkpoint=I3D_NLN_8x8_R50.pkl '
      '--config=configs/k400_i3d_nl.py --output=/ckpt/i3d_nln_k400')
  config.init_from.exclude = '^head/'
  config.optimizer.base_learning_rate = 0.01
  config.batch_size = 8
  config.eval_batch_size = 8
