r"""Fine-tune on your own videos: any records directory written by python -m data.convert.

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

The default model is a small 3D ResNet-10 (8 frames of 112 px) that a CPU fine-tunes in minutes
from scratch. On GPUs, start from Kinetics-400 weights instead: convert PySlowFast's NL-I3D-R50,
  python -m salinet_jax.convert --source=pyslowfast --checkpoint=I3D_NLN_8x8_R50.pkl \
      --config=configs/k400_i3d_nl.py --output=/ckpt/i3d_nln_k400
then train with its model and without its 400-class classifier:
  --config.model.name=i3d_nl --config.model.depth=50 --config.model.width=64 \
  --config.init_from.checkpoint=/ckpt/i3d_nln_k400 --config.init_from.exclude='^head/' \
  --config.data.crop_size=224 --config.data.train_min_scale=256 --config.data.train_max_scale=320 \
  --config.data.eval_short_side=256 --config.data.eval_crop_size=256 \
  --config.data.frame_stride=8 --config.optimizer.base_learning_rate=0.01
(records converted at the default short side 256 for that).
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
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
  config.data.eval_short_side = 112
  config.data.eval_crop_size = 112

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
  return config
