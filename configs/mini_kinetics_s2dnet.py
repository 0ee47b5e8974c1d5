"""S2DNet on Mini-Kinetics-200, in two stages: `...s2dnet.py:warmup`, then `...s2dnet.py:sampling`.

The reference recipe (spec s2dnet.md, 6): all frames of a clip (pre-subsampled x2, up to 150,
random start/end trim at train time); TSM multi-scale 224 crops + flip; SGD momentum 0.9, weight
decay 1e-3 on every parameter, gradient clipping at 20, per-sample LR (1e-5 warm-up stage, 1e-6
sampling stage) x global batch, 5 linear warm-up epochs then cosine to 1 %, TSM LR multipliers
(Linear weights x5, biases x10); stage 1 (40 epochs) samples a fixed 112 centre crop with uniform
temporal centres and freezes f_theta; stage 2 (80 epochs) starts from stage 1's weights, trains
end to end with the sampler (f_theta) at LR x 0.1. Eval: one view, short side 256, centre 224.

  python main.py --config=configs/mini_kinetics_s2dnet.py:warmup \\
      --workdir=runs/mini_kinetics_s2dnet_warmup --config.dataset.data_dir=/data/mini_kinetics
  python main.py --config=configs/mini_kinetics_s2dnet.py:sampling \\
      --workdir=runs/mini_kinetics_s2dnet_sampling --config.dataset.data_dir=/data/mini_kinetics
(the sampling stage's `init_from.checkpoint` defaults to the warm-up workdir above.)
"""

import ml_collections

from configs import base
from salinet_jax.models import s2dnet

STAGES = ('warmup', 'sampling')


def s2dnet_config(dataset: str, stage: str) -> ml_collections.ConfigDict:
  """The S2DNet recipe on `dataset` for one training `stage`."""
  if stage not in STAGES:
    raise ValueError(f'S2DNet stage must be one of {STAGES}, got {stage!r} '
                     f'(use configs/{dataset}_s2dnet.py:warmup).')
  warmup = stage == 'warmup'
  config = base.get_base_config()
  config.dataset.name = dataset
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'

  config.data.temporal_sampling = 'all_frames'
  config.data.num_frames = 150  # at most N frames per video, padded with a validity mask
  config.data.frame_stride = 2  # frames are pre-subsampled x2
  config.data.train_crop = 'tsm_multiscale'
  config.data.crop_size = 224
  config.data.random_flip = True
  config.data.normalization = 'imagenet'
  config.data.eval_num_clips = 1
  config.data.eval_num_crops = 1
  config.data.eval_short_side = 256
  config.data.eval_crop_size = 224

  config.model = ml_collections.ConfigDict(dict(
      name='s2dnet', stage=stage, synopsis_frames=16, synopsis_size=144, detail_frames=16,
      detail_size=112, topk=5, f_theta_fix='B', f_theta_head_init=0.05 if warmup else 0.01,
      faithful_topk_tiling=False))

  config.loss.name = 's2dnet'
  config.loss.dnet_label_smoothing = 0.1
  config.loss.snet_label_smoothing = 0.0
  config.loss.snet_loss_weight = 0.1

  opt = config.optimizer
  opt.name = 'sgd'
  opt.momentum = 0.9
  opt.nesterov = False
  opt.base_learning_rate = 1e-5 if warmup else 1e-6  # per sample
  opt.base_batch_size = 1
  opt.weight_decay = 1e-3
  opt.decay_norm_params = True
  opt.decay_biases = True
  opt.schedule = 'warmup_cosine'
  opt.warmup_epochs = 5.0
  opt.final_lr_fraction = 0.01
  opt.grad_clip_norm = 20.0
  opt.lr_multipliers = ((s2dnet.LINEAR_PARAMS + 'kernel$', 5.0),
                        (s2dnet.LINEAR_PARAMS + 'bias$', 10.0))
  if warmup:
    opt.frozen = s2dnet.F_THETA_PARAMS
  else:
    opt.lr_multipliers = opt.lr_multipliers + ((s2dnet.F_THETA_PARAMS, 0.1),)
    config.init_from.checkpoint = f'runs/{dataset}_s2dnet_warmup'
    config.init_from.which = 'best'

  config.batch_size = 128  # 2 GPUs x 64 in the reference
  config.eval_batch_size = 32
  config.num_train_steps = -1
  config.num_epochs = 40.0 if warmup else 80.0
  config.log_every_steps = 50
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.eval.view_reduction = 'mean'
  return config


def get_config(stage: str = 'warmup') -> ml_collections.ConfigDict:
  return s2dnet_config('mini_kinetics', stage)
