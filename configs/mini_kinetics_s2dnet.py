"""S2DNet on Mini-Kinetics-200, in two stages: `...s2dnet.py:warmup`, then `...s2dnet.py:sampling`.

Dataset, not the paper's: `mini_kinetics` records are Xie et al.'s Mini-Kinetics-200, the
YouTube-id lists of 80,000 train and 5,000 val videos that `python -m data.convert
--dataset=mini_kinetics` converts. The reference trained and evaluated on AR-Net's Mini-Kinetics
split files instead (its README: "use the train/val splits file from AR-Net"; ops/dataset_config.py
reads train/val_videofolder_mini.txt), which this project does not ship: accuracies on these
records are not comparable with the paper's. With AR-Net's files, convert their videos with the
`list` or `frames` kind of `python -m data.convert`.

The reference recipe (aliyun/Synopsis-to-Detail-Network: configs/mini_kinetics/train_*.yaml,
configs/default_config.py, s2d/default_config.py, s2d_main.py): all frames of a video
pre-subsampled x2 (up to 150; training trims a random 0..n/16 of the video's own frames at each
end), TSM multi-scale 224 crops + flip, resized as Pillow resizes (smoothing when it shrinks, where
PySlowFast's interpolate does not; the frame extraction its README points to, TSM's
tools/vid2img_kinetics.py, makes Kinetics frames 331 px high in any orientation, so most of its
train crops shrink: convert with `--frame_height=331` to store them so (its ffmpeg scales
bicubically: `--interpolation=BICUBIC`); the default `--short_side=256` enlarges the crops of
0.75 and 0.66); SGD momentum 0.9, weight decay
1e-3 on every parameter, gradient clipping at 20, per-sample LR (1e-5 warm-up stage, 1e-6 sampling
stage) x the global batch of 128 (2 GPUs x 2 shards x 32, synchronised BatchNorm), its LR set once
per epoch (5 warm-up epochs from 0.5e-8 per sample, then a cosine counted from epoch 0 down to 1%),
TSM LR multipliers (Linear weights x5, biases x10); mixed precision (bf16 activations on GPU and
TPU, the sampler and losses in float32). Stage 1 (40 epochs) starts from the AdaFocus Mini-Kinetics
MobileNetV2 (SNet) and ResNet-50 (DNet) checkpoints, samples a fixed 112 centre crop with uniform
temporal centres and freezes f_theta; stage 2 (80 epochs) starts from stage 1's final weights and
trains end to end with f_theta at LR x 0.1. Eval: one view, short side 256, centre 224
(torchvision's CenterCrop: an offset on a half pixel rounds to even, not up as PySlowFast's).
f_theta: fix 'B' (salinet_jax/models/s2dnet.py): the released code's trunk feeds a Linear that
expects 4 channels from 64 and crashes; 'B' is its own `HIDDEN_DIM 4 DETAIL_SAMPLING_DIM_RATE 1`
configuration, the one that runs. `python -m salinet_jax.info
--config=configs/mini_kinetics_s2dnet.py:sampling --recipe` prints the recipe.

  python -m salinet_jax.convert --source=tsm --checkpoint=mini_mbv2.pth.tar,mini_r50.pth.tar \
      --config=configs/mini_kinetics_s2dnet.py:warmup --output=/ckpt/s2dnet_mini_kinetics_init \
      --classes=mini-kinetics_label_map.txt
  python main.py --config=configs/mini_kinetics_s2dnet.py:warmup \
      --workdir=runs/mini_kinetics_s2dnet_warmup --config.dataset.data_dir=/data/mini_kinetics \
      --config.init_from.checkpoint=/ckpt/s2dnet_mini_kinetics_init
  python main.py --config=configs/mini_kinetics_s2dnet.py:sampling \
      --workdir=runs/mini_kinetics_s2dnet_sampling --config.dataset.data_dir=/data/mini_kinetics
(the sampling stage's `init_from.checkpoint` defaults to the warm-up workdir above.) The warm-up
keeps the SNet classifier of the reference's checkpoint: `--classes` gives the label map whose
order its rows follow (the reference's, REFERENCE_LABEL_MAPS), and init_from refuses records of
other classes or another order instead of reading its rows as the wrong classes.
"""

import ml_collections

from configs import base

STAGES = ('warmup', 'sampling')
# S2DNet parameters by optimisation role: f_theta is frozen in warm-up and trains at LR x 0.1 in
# the sampling stage (its own Linear layers follow that multiplier in the reference); the other
# Linear layers (SNet and DNet classifiers, f_m) get TSM's LR x 5 (weights) / x 10 (biases). The
# Gaussian sampler has no parameters. Regexes over 'KIND:PATH' names (salinet_jax/optim.py).
F_THETA_PARAMS = r':f_theta/'
LINEAR_PARAMS = r':(snet/fc|f_m|dnet/fc)/'
# The label map of each dataset in the reference (ops/dataset_config.py), the class order of its
# lists and so of its checkpoints' classifier rows.
REFERENCE_LABEL_MAPS = {'mini_kinetics': 'mini-kinetics_label_map.txt',
                        'kinetics400': 'kinetics_label_map.txt', 'ssv2': 'category.txt'}


def s2dnet_config(dataset: str, stage: str, config_file: str = '', warmup_workdir: str = ''
                  ) -> ml_collections.ConfigDict:
  """The S2DNet recipe on `dataset` for one training `stage`, from `config_file` (default
  configs/<dataset>_s2dnet.py), which the warm-up's convert command and the sampling stage's
  init_from name, as they do the warm-up's workdir (default runs/<dataset>_s2dnet_warmup)."""
  if stage not in STAGES:
    raise ValueError(f'S2DNet stage must be one of {STAGES}, got {stage!r} (it follows the '
                     'config file: --config=FILE.py:warmup).')
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
  config.data.resize_filter = 'pil_bilinear'  # GroupMultiScaleCrop and GroupScale resize in PIL
  config.data.train_augmentations = ('random_flip',)
  config.data.normalization = 'imagenet'
  config.data.eval_num_clips = 1
  config.data.eval_num_crops = 1
  config.data.eval_short_side = 256
  config.data.eval_crop_size = 224
  config.data.eval_crop_rounding = 'torchvision'  # GroupCenterCrop (torchvision's CenterCrop)

  # f_theta_head_init is the reference's TIME_PARAM_INIT_FACTOR (0.05 warm-up, 0.01 sampling
  # config); it only sets a fresh f_theta, and the sampling stage starts from the warm-up's
  # weights, f_theta included (as the reference's TRAIN.RESUME does), so 0.01 never applies there.
  # faithful_topk_tiling=True pairs DNet's frames with other videos' top-k vector as the reference
  # does, over the micro-batch rather than each of the reference's GPUs (models/s2dnet.py).
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
  opt.weight_decay_rules = (('', 1.0),)  # every parameter, BatchNorm and biases too
  opt.schedule = 'epoch_cosine'
  opt.warmup_epochs = 5.0
  opt.warmup_start_lr = 0.5e-8  # per sample, like the base LR
  opt.final_lr_fraction = 0.01
  opt.grad_clip_norm = 20.0
  opt.lr_multipliers = ((LINEAR_PARAMS + 'kernel$', 5.0), (LINEAR_PARAMS + 'bias$', 10.0))
  if warmup:
    opt.frozen = F_THETA_PARAMS
    config.init_from.checkpoint = 'REQUIRED'
    config.init_from.source = (
        f'the reference\'s {dataset} SNET_RESUME / DNET_RESUME checkpoints (AdaFocus '
        'MobileNetV2 and ResNet-50 TSN models), converted together')
    config.init_from.convert_command = (
        'python -m salinet_jax.convert --source=tsm --checkpoint=SNET.pth.tar,DNET.pth.tar '
        f'--config={config_file or f"configs/{dataset}_s2dnet.py"}:warmup '
        f'--output=/ckpt/s2dnet_{dataset}_init '
        f'--classes={REFERENCE_LABEL_MAPS.get(dataset, "CLASSES.txt")}')
    # New in S2DNet, or reshaped by it (the DNet classifier also reads g and the top-k vector).
    config.init_from.exclude = '^(f_theta|f_m|dnet/fusion_layer\\d+|dnet/fc)/'
  else:
    opt.lr_multipliers = opt.lr_multipliers + ((F_THETA_PARAMS, 0.1),)
    config.init_from.checkpoint = warmup_workdir or f'runs/{dataset}_s2dnet_warmup'
    config.init_from.which = 'latest'  # the warm-up's final weights, as the reference resumes
    config.init_from.source = (
        "the warm-up stage's final weights: train `python main.py "
        f'--config={config_file or f"configs/{dataset}_s2dnet.py"}:warmup '
        f'--workdir={config.init_from.checkpoint} ...` first')

  config.batch_size = 128  # 2 GPUs x 2 shards (NUM_SHARDS default) x 32 in the reference
  config.bn_group_size = 0  # synchronised BatchNorm over the whole batch (TRAIN.SYNC_BN)
  config.dtype = 'bfloat16_on_accelerators'  # AMP: float32 on CPU
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
