"""Every recipe against the reference code, number by number, through the recipe card.

The expected values are read from the reference repositories (commit and file cited per value):
  PSF    facebookresearch/SlowFast configs/Kinetics/I3D_NLN_8x8_R50.yaml ("PT"),
         slowfast/config/defaults.py @ 3123669 ("D20"), slowfast/models/head_helper.py,
         slowfast/datasets/decoder.py
  SALI   xiaoxiAries/S2TFNet models/Nonlocal_I3D_R50.yaml ("Y", the only released SaliNet
         config), xiaoxiAries/SaliNet train_net.py, utils/checkpoint.py, models/
  S2D    aliyun/Synopsis-to-Detail-Network configs/mini_kinetics/train_warmup.yaml ("W"),
         train_sampling.yaml ("S"), configs/default_config.py ("C"), s2d_main.py ("M"),
         s2d/utils.py ("U"), README.md
  TSM    mit-han-lab/temporal-shift-module ops/transforms.py (GroupMultiScaleCrop, which S2D's
         README asks to take from TSM)
Values that no reference file holds (UCF101/HMDB51 fine-tuning, S2DNet on K400/SSv2 beyond the
code's dataset branches) are marked 'inherited' and pinned to the recipe they inherit from.
"""

import glob
import importlib
import os
import re
import pathlib

import jax
import numpy as np
import pytest

from configs import from_workdir
from data import records

from salinet_jax import checkpoints
from salinet_jax import convert
from salinet_jax import engine
from salinet_jax import info
from salinet_jax import inputs
from salinet_jax import pretrained
from salinet_jax import models
from salinet_jax import recipe
from salinet_jax import workdir as workdir_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# (config, field path in the card, expected value, source).
REFERENCE = [
    # SaliNet K400.
    ('k400_salinet', 'global_batch', 2, 'Y:9 TRAIN.BATCH_SIZE 2 over NUM_GPUS 2 (Y:66)'),
    ('k400_salinet', 'bn_group_batch', 1, 'per-GPU nn.BatchNorm3d (BN.NORM_TYPE batchnorm), 1 clip'),
    ('k400_salinet', 'peak_learning_rate', 5e-4, 'Y:31 SOLVER.BASE_LR'),
    ('k400_salinet', 'schedule', 'cosine', 'Y:32 LR_POLICY cosine, per iteration (train_net.py)'),
    ('k400_salinet', 'warmup_epochs', 0.0, 'Y:36 WARMUP_EPOCHS 0.0'),
    ('k400_salinet', 'resize_filter', 'bilinear',
     "PySlowFast's transform.py scale jitter and test resize: interpolate, mode bilinear"),
    ('k400_salinet', 'final_lr_fraction', 0.0, 'utils/lr_policy.py cosine ends at 0'),
    ('k400_salinet', 'epochs', 20.0, 'Y:33 MAX_EPOCH 20'),
    ('k400_salinet', 'optimizer.momentum', 0.9, 'Y:34 MOMENTUM 0.9'),
    ('k400_salinet', 'optimizer.nesterov', True, 'defaults.py NESTEROV True'),
    ('k400_salinet', 'optimizer.weight_decay', 1e-4, 'Y:35 WEIGHT_DECAY 1e-4'),
    ('k400_salinet', 'optimizer.weight_decay_rules', [['^norm:', 0.0], ['', 1.0]],
     'Y:28 BN.WEIGHT_DECAY 0.0; models/optimizer.py decays biases'),
    ('k400_salinet', 'frames.num_frames', 8, 'Y:16 DATA.NUM_ALL_FRAMES 8'),
    ('k400_salinet', 'frames.frame_stride', 8, 'Y:17 DATA.SAMPLING_RATE 8'),
    ('k400_salinet', 'frames.target_fps', 30.0,
     'defaults.py DATA.TARGET_FPS 30 (assumed: no released SaliNet code reads it)'),
    ('k400_salinet', 'frames.temporal_sampling', 'pyslowfast',
     'assumed: decoder.py (PySlowFast); the release lacks the datasets/ modules build.py imports'),
    ('k400_salinet', 'train_crop.short_side_range', [256, 320], 'Y:19 TRAIN_JITTER_SCALES'),
    ('k400_salinet', 'train_crop.crop_size', 224, 'Y:20 TRAIN_CROP_SIZE'),
    ('k400_salinet', 'train_augmentations', ['random_flip'], 'defaults.py RANDOM_FLIP True'),
    ('k400_salinet', 'test.clips', 10, 'Y:57 TEST.NUM_ENSEMBLE_VIEWS 10'),
    ('k400_salinet', 'test.crops', 3, 'Y:60 TEST.NUM_SPATIAL_CROP 3'),
    ('k400_salinet', 'test.short_side', 256, 'Y:21 TEST_CROP_SIZE 256'),
    ('k400_salinet', 'test.crop_size', 256, 'Y:21 TEST_CROP_SIZE 256'),
    ('k400_salinet', 'test.view_reduction', 'sum of logits',
     'ENSEMBLE_METHOD sum of the fc outputs: video_model_builder.py:199-202 has no softmax'),
    ('k400_salinet', 'precise_bn_batches', 200, 'Y:26 NUM_BATCHES_PRECISE 200'),
    ('k400_salinet', 'precision.config', 'float32', 'train_net.py: no autocast'),
    ('k400_salinet', 'loss.l1_weight', 1e-4, 'Y:48 MODEL.LAMDA'),
    ('k400_salinet', 'loss.gate1_weight', 1e-4, 'Y:49 MODEL.GAMA'),
    ('k400_salinet', 'loss.gate2_weight', 1e-4, 'Y:50 MODEL.THETA'),
    ('k400_salinet', 'initialisation.exclude', '^(ssf|tsfp|fusion|head)/',
     'utils/checkpoint.py load_part_of_resnet_checkpoint loads names present in SaliNet only'),
    # PySlowFast NL-I3D-R50 8x8 baseline.
    ('k400_i3d_nl', 'global_batch', 64, 'PT:4 TRAIN.BATCH_SIZE 64 (8 GPUs, PT:52)'),
    ('k400_i3d_nl', 'bn_group_batch', 8, 'per-GPU BatchNorm, 64 / 8 GPUs'),
    ('k400_i3d_nl', 'peak_learning_rate', 0.1, 'PT:31 BASE_LR 0.1'),
    ('k400_i3d_nl', 'schedule', 'pyslowfast_cosine', 'PT:32 cosine, lr_policy.py'),
    ('k400_i3d_nl', 'warmup_epochs', 34.0, 'PT:36 WARMUP_EPOCHS 34'),
    ('k400_i3d_nl', 'warmup_start_lr', 0.01, 'PT:37 WARMUP_START_LR 0.01'),
    ('k400_i3d_nl', 'epochs', 196.0, 'PT:33 MAX_EPOCH 196'),
    ('k400_i3d_nl', 'initialisation', 'from scratch', 'PT: no checkpoint for training'),
    ('k400_i3d_nl', 'test.view_reduction', 'sum of softmax',
     'head_helper.py softmax at test; meters.py sums the 30 views'),
    ('k400_i3d_nl', 'precise_bn_batches', 200, 'PT:27-29'),
    # ... and the numbers it inherits from configs/k400_salinet.py, pinned to its own yaml.
    ('k400_i3d_nl', 'optimizer.momentum', 0.9, 'PT:34 MOMENTUM 0.9'),
    ('k400_i3d_nl', 'optimizer.nesterov', True, 'D20:323 SOLVER.NESTEROV True'),
    ('k400_i3d_nl', 'optimizer.weight_decay', 1e-4, 'PT:35 WEIGHT_DECAY 1e-4'),
    ('k400_i3d_nl', 'optimizer.weight_decay_rules', [['^norm:', 0.0], ['', 1.0]],
     'D20:33 BN.WEIGHT_DECAY 0.0; models/optimizer.py decays the rest'),
    ('k400_i3d_nl', 'frames.temporal_sampling', 'pyslowfast', 'decoder.py'),
    ('k400_i3d_nl', 'frames.num_frames', 8, 'PT:9 NUM_FRAMES 8'),
    ('k400_i3d_nl', 'frames.frame_stride', 8, 'PT:10 SAMPLING_RATE 8'),
    ('k400_i3d_nl', 'frames.target_fps', 30.0, 'D20:267 DATA.TARGET_FPS 30'),
    ('k400_i3d_nl', 'train_crop.short_side_range', [256, 320], 'PT:11 TRAIN_JITTER_SCALES'),
    ('k400_i3d_nl', 'train_crop.crop_size', 224, 'PT:12 TRAIN_CROP_SIZE'),
    ('k400_i3d_nl', 'train_augmentations', ['random_flip'], 'D20:278 DATA.RANDOM_FLIP True'),
    ('k400_i3d_nl', 'test.clips', 10, 'D20:99 TEST.NUM_ENSEMBLE_VIEWS 10'),
    ('k400_i3d_nl', 'test.crops', 3, 'D20:103 TEST.NUM_SPATIAL_CROPS 3'),
    ('k400_i3d_nl', 'test.short_side', 256, 'PT:13 TEST_CROP_SIZE 256'),
    ('k400_i3d_nl', 'test.crop_size', 256, 'PT:13 TEST_CROP_SIZE 256'),
    ('k400_i3d_nl', 'test.centre_rounding', 'pyslowfast',
     'transform.py uniform_crop: int(math.ceil((size - crop) / 2))'),
    ('k400_i3d_nl', 'resize_filter', 'bilinear',
     'decoder.py / transform.py: torch.nn.functional.interpolate, mode bilinear'),
    ('k400_i3d_nl', 'loss.name', 'cross_entropy', 'PT:43 LOSS_FUNC cross_entropy'),
    # SaliNet UCF101: only the initialisation is in the reference.
    ('ucf101_salinet', 'initialisation.exclude', '^head/',
     "utils/checkpoint.py load_part_of_checkpoint_for_other_dataset skips 'fc'"),
    ('ucf101_salinet', 'peak_learning_rate', 5e-4, 'inherited from K400 (no reference config)'),
    ('ucf101_salinet', 'test.views', 30, 'inherited from K400 (no reference config)'),
    ('hmdb51_salinet', 'initialisation.exclude', '^head/',
     "utils/checkpoint.py load_part_of_checkpoint_for_other_dataset skips 'fc'"),
    ('hmdb51_salinet', 'peak_learning_rate', 5e-4, 'inherited from K400 (no reference config)'),
    ('hmdb51_salinet', 'test.views', 30, 'inherited from K400 (no reference config)'),
    # S2DNet Mini-Kinetics, warm-up stage.
    ('mini_kinetics_s2dnet:warmup', 'global_batch', 128,
     'README TRAIN.BATCH_SIZE 32 per process, NUM_GPUS 2 (W:1) x NUM_SHARDS 2 (C:25)'),
    ('mini_kinetics_s2dnet:warmup', 'bn_group_batch', 128, 'C:62 TRAIN.SYNC_BN True'),
    ('mini_kinetics_s2dnet:warmup', 'peak_learning_rate', 1.28e-3,
     'README BASE_LR 1e-5 per sample x 128 (M:969-976)'),
    ('mini_kinetics_s2dnet:warmup', 'warmup_start_lr', 6.4e-7, 'W:48 WARMUP_LR 0.5e-8 x 128'),
    ('mini_kinetics_s2dnet:warmup', 'schedule', 'epoch_cosine', 'U:96-163, once per epoch'),
    ('mini_kinetics_s2dnet:warmup', 'warmup_epochs', 5.0, 'C:69 WARMUP_EPOCHS 5'),
    ('mini_kinetics_s2dnet:warmup', 'final_lr_fraction', 0.01, 'U: lr_min = 0.01 BASE_LR'),
    ('mini_kinetics_s2dnet:warmup', 'epochs', 40.0, 'W:43 EPOCHS 40'),
    ('mini_kinetics_s2dnet:warmup', 'optimizer.nesterov', False, 'M:196-201 torch SGD default'),
    ('mini_kinetics_s2dnet:warmup', 'optimizer.momentum', 0.9, 'C:55 TRAIN.MOMENTUM (M:196-201)'),
    ('mini_kinetics_s2dnet:warmup', 'optimizer.weight_decay', 1e-3, 'W:42'),
    ('mini_kinetics_s2dnet:warmup', 'optimizer.weight_decay_rules', [['', 1.0]],
     'every parameter decayed (U adjust_learning_rate ignores decay_mult)'),
    ('mini_kinetics_s2dnet:warmup', 'optimizer.grad_clip_norm', 20.0, 'W:45 CLIP_GRADIENT 20'),
    ('mini_kinetics_s2dnet:warmup', 'optimizer.frozen', ':f_theta/',
     'M:221-245 no sampler optimizer in the WARMUP stage'),
    ('mini_kinetics_s2dnet:warmup', 'optimizer.lr_multipliers',
     [[':(snet/fc|f_m|dnet/fc)/kernel$', 5.0], [':(snet/fc|f_m|dnet/fc)/bias$', 10.0]],
     's2d/models.py:47,172-180 linear_mul 5, biases 2 x 5'),
    ('mini_kinetics_s2dnet:warmup', 'precision.config', 'bfloat16_on_accelerators',
     'C:27 AMP True (sampler in fp32)'),
    ('mini_kinetics_s2dnet:warmup', 'frames.num_frames', 150, 'M:131-133 300 // 2'),
    ('mini_kinetics_s2dnet:warmup', 'frames.frame_stride', 2, 'W:53 RAW_INPUT_SAMPLING_RATE 2'),
    ('mini_kinetics_s2dnet:warmup', 'frames.target_fps', None,
     'no rate: RAW_INPUT_SAMPLING_RATE counts native frames (C:42)'),
    ('mini_kinetics_s2dnet:warmup', 'train_crop.crop_size', 224,
     'M:137-138 DNET_INPUT_SIZE, s2d/default_config.py:41 224'),
    ('mini_kinetics_s2dnet:warmup', 'train_crop.max_distort', 1,
     'TSM:182 GroupMultiScaleCrop max_distort=1 (M:137-138 passes none)'),
    ('mini_kinetics_s2dnet:warmup', 'train_crop.more_fix_crop', True,
     'TSM:182 GroupMultiScaleCrop more_fix_crop=True'),
    ('mini_kinetics_s2dnet:warmup', 'train_augmentations', ['random_flip'],
     'M:139 GroupRandomHorizontalFlip'),
    ('mini_kinetics_s2dnet:warmup', 'train_crop.scales', [1.0, 0.875, 0.75, 0.66],
     'M:136-140 GroupMultiScaleCrop'),
    ('mini_kinetics_s2dnet:warmup', 'test.short_side', 256, 'M:150-153 GroupScale(256)'),
    ('mini_kinetics_s2dnet:warmup', 'test.crop_size', 224, 'M:150-153 GroupCenterCrop(224)'),
    ('mini_kinetics_s2dnet:warmup', 'test.centre_rounding', 'torchvision',
     'M:150-153 GroupCenterCrop: torchvision CenterCrop, int(round((w - 224) / 2.))'),
    ('mini_kinetics_s2dnet:warmup', 'resize_filter', 'pil_bilinear',
     'M:136-153 GroupMultiScaleCrop, GroupScale: PIL Image.resize(..., Image.BILINEAR)'),
    ('mini_kinetics_s2dnet:warmup', 'test.views', 1, 'M:150-153 one centre crop of the video'),
    ('mini_kinetics_s2dnet:warmup', 'loss.dnet_label_smoothing', 0.1,
     's2d/default_config.py:47 DNET_SMOOTH_ALPHA 0.1'),
    ('mini_kinetics_s2dnet:warmup', 'loss.snet_loss_weight', 0.1, 'SNET_LOSS_WEIGHT 0.1'),
    ('mini_kinetics_s2dnet:warmup', 'loss.snet_label_smoothing', 0.0,
     's2d/default_config.py:30 SNET_SMOOTH_ALPHA 0.'),
    ('mini_kinetics_s2dnet:warmup', 'initialisation.checkpoint', 'REQUIRED',
     'W:9 SNET_RESUME, W:22 DNET_RESUME (AdaFocus Mini-Kinetics models)'),
    # S2DNet Mini-Kinetics, sampling stage.
    ('mini_kinetics_s2dnet:sampling', 'peak_learning_rate', 1.28e-4,
     'README BASE_LR 1e-6 per sample x 128'),
    ('mini_kinetics_s2dnet:sampling', 'epochs', 80.0, 'S:52 EPOCHS 80'),
    ('mini_kinetics_s2dnet:sampling', 'global_batch', 128, 'README, as the warm-up'),
    ('mini_kinetics_s2dnet:sampling', 'warmup_epochs', 5.0, 'C:69 WARMUP_EPOCHS 5 (S sets none)'),
    ('mini_kinetics_s2dnet:sampling', 'warmup_start_lr', 6.4e-7, 'S:57 WARMUP_LR 0.5e-8 x 128'),
    ('mini_kinetics_s2dnet:sampling', 'optimizer.momentum', 0.9,
     'C:55 TRAIN.MOMENTUM, the sampler SGD too (M:221-227)'),
    ('mini_kinetics_s2dnet:sampling', 'optimizer.weight_decay', 1e-3, 'S:51'),
    ('mini_kinetics_s2dnet:sampling', 'optimizer.grad_clip_norm', 20.0, 'S:54 CLIP_GRADIENT 20'),
    ('mini_kinetics_s2dnet:sampling', 'optimizer.frozen', '',
     'M:221-242 the sampler trains (its own SGD) outside the WARMUP stage'),
    ('mini_kinetics_s2dnet:sampling', 'initialisation.which', 'latest',
     'README resumes the warm-up checkpoint saved after its last epoch (M:446-458)'),
    ('mini_kinetics_s2dnet:sampling', 'optimizer.lr_multipliers',
     [[':(snet/fc|f_m|dnet/fc)/kernel$', 5.0], [':(snet/fc|f_m|dnet/fc)/bias$', 10.0],
      [':f_theta/', 0.1]], 's2d/models.py linear_mul 5 / x10 biases; S:36 SAMPLER_LR_RATIO 0.1'),
    # S2DNet K400: the code's 'kinetics' branch, the Mini-Kinetics yamls.
    ('k400_s2dnet:warmup', 'frames.num_frames', 150,
     "M:131-133 300 // (1 x W:53 RAW_INPUT_SAMPLING_RATE 2) for 'kinetics'"),
    ('k400_s2dnet:warmup', 'train_augmentations', ['random_flip'], 'M:136-140'),
    ('k400_s2dnet:sampling', 'optimizer.frozen', '', 'inherited: M:221-242'),
    # S2DNet SSv2.
    ('ssv2_s2dnet:warmup', 'frames.num_frames', 85,
     'M:141-145 170 // (1 x W:53 RAW_INPUT_SAMPLING_RATE 2) for somethingv2'),
    ('ssv2_s2dnet:warmup', 'frames.frame_stride', 2,
     'inherited: W:53 RAW_INPUT_SAMPLING_RATE 2 (C:42 defaults to 1: 170 native frames)'),
    ('ssv2_s2dnet:warmup', 'train_augmentations', [], 'M:146-149 no flip for somethingv2'),
    ('ssv2_s2dnet:warmup', 'test.views', 1, 'M:150-153 for every dataset'),
]

# Worked LR values of the reference formula (U:96-163), per epoch start, as fractions of BASE.
S2DNET_LR_FRACTIONS = {
    'mini_kinetics_s2dnet:warmup': {0: 0.0005, 1: 0.2004, 5: 1.0, 6: 0.946, 20: 0.505, 39: 0.0115},
    'mini_kinetics_s2dnet:sampling': {0: 0.005, 6: 0.986, 20: 0.855, 79: 0.0104},
}


def load(name: str):
  """configs/<module>.py[:argument], as `--config=configs/<module>.py[:argument]` loads it."""
  module, _, argument = name.partition(':')
  return importlib.import_module(f'configs.{module}').get_config(*([argument] if argument else []))


def _field(card, path):
  value = card
  for key in path.split('.'):
    value = value[key]
  return value


# PySlowFast's cosine policy per recipe: (BASE_LR, WARMUP_EPOCHS, WARMUP_START_LR, MAX_EPOCH).
PYSLOWFAST_LR = {'k400_salinet': (5e-4, 0.0, 0.01, 20.0),  # Y:31, Y:36, Y:37, Y:33
                 'k400_i3d_nl': (0.1, 34.0, 0.01, 196.0)}  # PT:31, PT:36, PT:37, PT:33

# Each reference's pixel normalisation: (mean, std) of [0, 1] pixels.
KINETICS_MEAN_STD = ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORMALIZATION = [
    ('k400_salinet', KINETICS_MEAN_STD, 'SALI defaults.py:126,132 DATA.MEAN, DATA.STD'),
    ('k400_i3d_nl', KINETICS_MEAN_STD, 'D20:248,254 DATA.MEAN, DATA.STD'),
    ('ucf101_salinet', KINETICS_MEAN_STD, 'inherited from K400'),
    ('mini_kinetics_s2dnet:warmup', IMAGENET_MEAN_STD, 'C:37-38 DATA.MEAN, DATA.STD'),
    ('mini_kinetics_s2dnet:sampling', IMAGENET_MEAN_STD, 'C:37-38 DATA.MEAN, DATA.STD'),
    ('ssv2_s2dnet:warmup', IMAGENET_MEAN_STD, 'C:37-38, the code has one for every dataset'),
]


@pytest.fixture(scope='module')
def cards():
  return {name: recipe.card(load(name)) for name in {row[0] for row in REFERENCE}
          | set(S2DNET_LR_FRACTIONS) | set(PYSLOWFAST_LR) | {row[0] for row in NORMALIZATION}}


@pytest.mark.parametrize('name,path,expected,source', REFERENCE,
                         ids=[f'{r[0]}-{r[1]}' for r in REFERENCE])
def test_card_matches_the_reference(cards, name, path, expected, source):
  got = _field(cards[name], path)
  if isinstance(expected, float):
    assert got == pytest.approx(expected, rel=1e-9), source
  else:
    assert got == expected, source


@pytest.mark.parametrize('name', sorted(S2DNET_LR_FRACTIONS))
def test_s2dnet_learning_rate_per_epoch_follows_the_reference_formula(cards, name):
  card = cards[name]
  per_epoch = np.asarray(card['learning_rate_per_epoch']) / card['peak_learning_rate']
  assert len(per_epoch) == int(card['epochs'])
  for epoch, fraction in S2DNET_LR_FRACTIONS[name].items():
    assert per_epoch[epoch] == pytest.approx(fraction, abs=6e-4), epoch


def pyslowfast_learning_rate(epoch, base, warmup_epochs, warmup_start, max_epoch):
  """lr_policy.py get_lr_at_epoch with LR_POLICY cosine (SALI utils/ and D20 slowfast/utils/):
  a linear warm-up from WARMUP_START_LR to the cosine's value at WARMUP_EPOCHS, else
  BASE_LR (cos(pi e / MAX_EPOCH) + 1) / 2, at the (fractional) epoch e."""
  cosine = lambda e: base * (np.cos(np.pi * e / max_epoch) + 1.0) * 0.5  # noqa: E731
  if epoch < warmup_epochs:
    return epoch * (cosine(warmup_epochs) - warmup_start) / warmup_epochs + warmup_start
  return cosine(epoch)


@pytest.mark.parametrize('name', sorted(PYSLOWFAST_LR))
def test_pyslowfast_learning_rate_per_epoch_follows_the_reference_formula(cards, name):
  """Mutation audit: these recipes' schedules were pinned by name only; a warm-up ending at the
  peak instead of the cosine's value, a cosine restarted after the warm-up, one decaying to 1 %
  instead of 0 or warm-up epochs turned into the wrong number of steps passed every test.
  PySlowFast sets the LR each iteration at epoch + iteration / iterations: the card's first step
  of an epoch is within a step of its start, far below the tolerance."""
  card, reference = cards[name], PYSLOWFAST_LR[name]
  per_epoch = card['learning_rate_per_epoch']
  assert len(per_epoch) == card['epochs'] == reference[3]
  expected = [pyslowfast_learning_rate(epoch, *reference) for epoch in range(len(per_epoch))]
  np.testing.assert_allclose(per_epoch, expected, rtol=0, atol=1e-5 * reference[0])


@pytest.mark.parametrize('name,mean_std,source', NORMALIZATION,
                         ids=[row[0] for row in NORMALIZATION])
def test_the_card_normalizes_pixels_as_the_reference(cards, name, mean_std, source):
  """Mutation audit: no row pinned the normalisation: the card naming another preset than the
  run uses, or a recipe taking the other preset (with no convert command to compare it with, as
  the sampling stages), passed every test."""
  assert cards[name]['normalization'] == load(name).data.normalization
  assert inputs.normalization(load(name).data) == mean_std, source


def pyslowfast_indices(num_frames_video, fps, k, num_clips, frames=8, rate=8, target=30.0):
  """PySlowFast decoder.py's decode-all path: L = T s F / F0, delta = max(N - L, 0), start =
  delta k / K, indices floor(start + j (L - 1) / (T - 1)) clamped to N - 1."""
  length = frames * rate * fps / target
  start = max(num_frames_video - length, 0.0) * k / num_clips
  return [min(int(np.floor(start + j * (length - 1) / (frames - 1))), num_frames_video - 1)
          for j in range(frames)]


@pytest.mark.parametrize('frames,fps', [(300, 30.0), (250, 25.0), (40, 30.0), (500, 59.94)])
def test_test_frame_indices_of_the_salinet_recipe(frames, fps):
  card = recipe.card(load('k400_salinet'), video_frames=frames, video_fps=fps)
  clips = card['test_frame_indices']
  assert len(clips) == 10
  for k, clip in enumerate(clips):
    assert clip == pyslowfast_indices(frames, fps, k, 10), k
  if frames == 40:  # shorter than a clip: clamped at the end, no looping
    assert clips[0] == [0, 9, 18, 27, 36, 39, 39, 39]
  # Which of PySlowFast's paths these are: a video held as frames alone has no stream clock to
  # decode an MP4 or AVI selectively by (data/sampling.py).
  assert card['test_frame_indices_source'].startswith("PySlowFast's decode-all path, its "
                                                       'decoding of MKV and WebM; an MP4 or AVI')
  assert 'test_frame_indices_source' not in recipe.card(
      load('k400_r3d18'), video_frames=frames, video_fps=fps)  # dense: no PySlowFast path


CONFIG_NAMES = sorted(
    os.path.splitext(os.path.basename(p))[0] for p in glob.glob(str(REPO_ROOT / 'configs' / '*.py'))
    if not p.endswith(('__init__.py', 'base.py', 'from_workdir.py')))
ARGUMENTS = {'custom': ('scratch', 'i3d'), 'k400_i3d_nl': ('', 'slow_r50'),
             'ucf101_salinet': ('1', '2', '3'),
             'hmdb51_salinet': ('1', '2', '3'),
             'mini_kinetics_s2dnet': ('warmup', 'sampling'), 'k400_s2dnet': ('warmup', 'sampling'),
             'ssv2_s2dnet': ('warmup', 'sampling'), 'demo_s2dnet': ('warmup', 'sampling')}
EVERY_CONFIG = [f'{n}:{a}' if a else n for n in CONFIG_NAMES for a in ARGUMENTS.get(n, ('',))]


@pytest.mark.parametrize('name', EVERY_CONFIG)
def test_every_config_loads_and_builds_abstractly(name):
  config = load(name)
  if not config.dataset.data_dir and not config.dataset.name:  # configs/custom.py: any records
    config.dataset.data_dir = str(REPO_ROOT / 'tests' / 'fixtures' / 'records_schema1')
  model = models.build_model(config.model, info.num_classes_of(config), config.dtype)
  variables = models.abstract_variables(
      model, (1, config.data.num_frames, config.data.crop_size, config.data.crop_size, 3))
  assert jax.tree.leaves(variables['params'])
  card = recipe.card(config)
  assert card['global_batch'] == config.batch_size
  # configs/custom.py leaves the name to the records: the card names theirs ('' was printed).
  assert card['dataset'] == (config.dataset.name or records.read_metadata(
      config.dataset.data_dir).name) != ''


@pytest.mark.parametrize('name', EVERY_CONFIG)
def test_test_views_show_objects_at_the_smallest_train_scale(name):
  """configs/custom.py and fight_surv.py trained on 112 crops of short side 128-160 and tested at
  short side 112, where objects are smaller than at any train scale (audit). PySlowFast tests
  at the smallest train scale (256 after a 256-320 jitter), as every other config does."""
  data = load(name).data
  if data.train_crop == 'short_side_jitter':
    assert data.eval_short_side == data.train_min_scale, (data.eval_short_side,
                                                          data.train_min_scale)


def test_slow_r50_is_the_i3d_without_temporal_pooling_kernels_in_its_stem_or_non_local_blocks():
  """Slow R50 was advertised for --source=pyslowfast, but no config or override could express it
  (--config.model.stem_temporal_kernel is no field of configs/k400_i3d_nl.py), and weights
  converted for an I3D's temporal pooling load into it with every shape fitting."""
  slow = load('k400_i3d_nl:slow_r50').model
  assert (slow.use_nonlocal, slow.stem_temporal_kernel, slow.pool1_temporal) == (False, 1, 1)
  assert [list(k) for k in slow.temporal_kernels] == [[1], [1], [3], [3]]
  assert pretrained.converted_model_differences(slow.to_dict(), load('k400_i3d_nl').model) == [
      'model.pool1_temporal: converted with 1, given 2',
      'model.stem_temporal_kernel: converted with 1, given 5',
      'model.temporal_kernels: converted with [[1], [1], [3], [3]], given [[3], [3, 1], [3, 1], '
      '[1, 3]]',
      'model.use_nonlocal: converted with False, given True']


def test_batch_norm_over_micro_batches_is_on_the_card_and_said():
  """With gradient accumulation, bn_group_size=0 normalises over each micro-batch (each runs
  through the model on its own), but the card said the global batch: the S2DNet warm-up's sync
  BN over 128 clips printed 'bn_group_batch: 128' with 4 micro-batches of 32 (audit)."""
  config = load('mini_kinetics_s2dnet:warmup')
  assert (config.batch_size, config.bn_group_size) == (128, 0)
  assert engine.micro_batch_norm_warning(config) == ''
  config.grad_accumulation_steps = 4
  assert recipe.card(config)['bn_group_batch'] == 32
  assert engine.micro_batch_norm_warning(config) == (
      'config.grad_accumulation_steps=4 with config.bn_group_size=0: BatchNorm normalises each '
      'micro-batch of 32 clips on its own, not the global batch of 128, and updates its running '
      'averages 4 times a step. Set config.bn_group_size=32 to say so (the same training, '
      'without this line).')
  config.bn_group_size = 32
  assert recipe.card(config)['bn_group_batch'] == 32 and not engine.micro_batch_norm_warning(config)


@pytest.mark.parametrize('name', EVERY_CONFIG)
def test_the_convert_command_a_recipe_gives_names_a_config_file_that_exists(name):
  """The Kinetics-400 S2DNet warm-up told its users to convert with
  --config=configs/kinetics400_s2dnet.py, a file that does not exist."""
  command = load(name).init_from.convert_command
  # A command these patterns cannot read (say `--config FILE`) would pass the loops below.
  assert (len(re.findall(r'--config=([^\s:]+)', command)),
          len(re.findall(r'--source=(\w+)', command))) == ((1, 1) if command else (0, 0)), command
  for config_file in re.findall(r'--config=([^\s:]+)', command):
    assert (REPO_ROOT / config_file).is_file(), (name, command)
  # The weights it converts are for this recipe's model: init_from says nothing about them.
  for config_name in re.findall(r'--config=configs/(\S+)\.py(?::(\w+))?', command):
    converted_for = load(':'.join(filter(None, config_name))).model.to_dict()
    assert pretrained.converted_model_differences(converted_for, load(name).model) == []
  # ... and were trained on pixels normalised as the recipe normalises them.
  for source in re.findall(r'--source=(\w+)', command):
    assert convert.SOURCES[source].normalization == load(name).data.normalization, (name, source)


def _typed(value):
  """A config's values with their types: an int read back as a float (or a tuple as a list)
  would compare equal and still be another setting."""
  if isinstance(value, dict):
    return {key: _typed(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return (type(value).__name__, [_typed(item) for item in value])
  return (type(value).__name__, value)


@pytest.mark.parametrize('name', EVERY_CONFIG)
def test_every_config_reads_back_from_the_workdir_a_run_wrote_it_to(name, tmp_path, capsys):
  """configs/from_workdir.py:DIR is what a run's own config was, value and type, so eval,
  predict and a longer run need none of its overrides repeated."""
  config = load(name)
  config.batch_size = 3  # an override, as a training command gives one
  workdir_lib.write_config(str(tmp_path), config)
  read_back = from_workdir.get_config(str(tmp_path))
  assert _typed(read_back.to_dict()) == _typed(config.to_dict())
  assert capsys.readouterr().err == ''  # nothing predates base.py's settings


@pytest.mark.parametrize('name', EVERY_CONFIG)
def test_the_command_init_from_names_trains_what_it_reads(name):
  """The demo S2DNet's sampling stage, started without its warm-up, said to train
  `--config=configs/synthetic_s2dnet.py:warmup --workdir=runs/synthetic_s2dnet_warmup`: no such
  file, and not the workdir its init_from reads (S2DNet walkthrough)."""
  config = load(name)
  commands = re.findall(r'`(python main\.py [^`]*)`', config.init_from.source)
  for command in commands:
    config_file = re.search(r'--config=([^\s:]+)', command).group(1)
    assert (REPO_ROOT / config_file).is_file(), (name, command)
    assert re.search(r'--workdir=(\S+)', command).group(1) == config.init_from.checkpoint
  if config.model.name == 's2dnet' and config.model.stage == 'sampling':
    assert len(commands) == 1, config.init_from.source


WITH_CONVERT_COMMAND = [name for name in EVERY_CONFIG if load(name).init_from.convert_command]


@pytest.mark.parametrize('name', WITH_CONVERT_COMMAND)
def test_a_convert_command_whose_classifier_is_kept_records_its_classes(name):
  """The S2DNet warm-ups keep the reference's SNet classifier (only the DNet's is left out), but
  their convert command gave no --classes: every run warned that its rows were read in the
  records' class order unchecked, and a checkpoint of another order would have loaded."""
  config = load(name)
  kept = [path for path in models.classifier_paths(config.model, 7, inputs.clip_shape(config.data))
          if not (config.init_from.exclude and re.search(config.init_from.exclude, path))]
  command = config.init_from.convert_command
  assert ('--classes=' in command) == bool(kept), (kept, command)


def test_the_card_shows_the_values_the_config_runs_with():
  """Mutation audit: card fields read as constants (the checkpoint `which`, the normalisation,
  the TSM crop's distortion and grid, gradient accumulation, the model, the precision here) or
  epochs printed for a run whose length is set in steps passed every test, as no recipe sets
  other values. A config changed field by field shows each change on its card."""
  config = load('mini_kinetics_s2dnet:sampling')
  config.init_from.which = 'best'  # the sampling stage's row pins 'latest'
  config.data.normalization = 'kinetics'
  config.data.tsm_max_distort, config.data.tsm_more_fix_crop = 2, False
  config.grad_accumulation_steps = 2
  card = recipe.card(config)
  assert card['initialisation']['which'] == 'best'
  assert card['normalization'] == 'kinetics'
  assert (card['train_crop']['max_distort'], card['train_crop']['more_fix_crop']) == (2, False)
  assert card['grad_accumulation_steps'] == 2
  config = load('k400_salinet')
  config.dtype, config.num_train_steps = 'bfloat16', 1000
  card = recipe.card(config)
  assert (card['model'], card['precision']['here']) == ('salinet_i3d', 'bfloat16')
  assert (card['epochs'], card['steps']) == (None, 1000)
  assert card['steps_per_epoch'] == 246_535 / 2  # the official K400 train split, batch 2


def test_the_card_gives_each_epoch_the_learning_rate_of_its_first_step():
  """With a fractional number of steps per epoch (1,000 videos in batches of 128: 7.8125) the
  card read epoch 3's LR at step 23, still in epoch 2, and so printed epoch 2's LR twice."""
  config = load('mini_kinetics_s2dnet:warmup')
  per_epoch = recipe.learning_rate_per_epoch(config, 1000)
  peak = recipe.card(config)['peak_learning_rate']
  warmup = int(config.optimizer.warmup_epochs)
  start = config.optimizer.warmup_start_lr * config.batch_size
  for epoch in range(warmup + 1):  # the ramp: start + e (peak - start) / W, a new value each epoch
    assert per_epoch[epoch] == pytest.approx(start + epoch * (peak - start) / warmup, rel=1e-5)


def test_the_card_lists_the_epochs_the_run_trains_and_no_more():
  """A run of 100 epochs of 246,535 videos in batches of 64 is 385,211 steps (0-385,210); the
  card also listed an epoch 100, whose first step (385,211) is never trained (audit)."""
  assert len(recipe.learning_rate_per_epoch(load('k400_r3d18'), 246535)) == 100
  assert len(recipe.learning_rate_per_epoch(load('k400_r3d18'), 6400)) == 100  # whole steps


def test_the_printed_card_numbers_each_epoch_across_folded_lines():
  """Mutation audit: labels restarting at e0 on each folded line passed every test."""
  printed = recipe.format_card({'learning_rate_per_epoch': [0.1 * (i + 1) for i in range(10)],
                                'test_frame_indices': [[0, 2], [4, 6]], 'num_epochs': 10})
  assert printed.splitlines() == [
      'learning_rate_per_epoch:',
      '    e0=0.1 e1=0.2 e2=0.3 e3=0.4 e4=0.5 e5=0.6 e6=0.7 e7=0.8',
      '    e8=0.9 e9=1',
      'test_frame_indices:', '    clip 0: [0, 2]', '    clip 1: [4, 6]',
      'num_epochs: 10']


@pytest.mark.parametrize('name, dataset', [('mini_kinetics_s2dnet', 'mini_kinetics'),
                                           ('k400_s2dnet', 'kinetics400'),
                                           ('ssv2_s2dnet', 'ssv2')])
def test_a_sampling_stage_before_its_warm_up_says_to_train_the_warm_up_first(name, dataset,
                                                                              tmp_path,
                                                                              monkeypatch):
  """The sampling stage starts from the warm-up's workdir; run first, it said only 'Pretrained
  checkpoint .../runs/..._s2dnet_warmup does not exist.' (README audit): neither that this is the
  warm-up's default workdir nor how to make it."""
  monkeypatch.chdir(tmp_path)
  config = load(f'{name}:sampling')
  with pytest.raises(checkpoints.NoCheckpointError) as raised:
    pretrained.check_init_from(config.init_from)
  assert str(raised.value) == (
      f'Pretrained checkpoint {tmp_path}/runs/{dataset}_s2dnet_warmup does not exist: this recipe '
      f"starts from the warm-up stage's final weights: train `python main.py "
      f'--config=configs/{name}.py:warmup --workdir=runs/{dataset}_s2dnet_warmup ...` '
      'first, or pass --config.init_from.checkpoint=DIR.')


def test_the_ssv2_warm_up_asks_for_what_exists():
  """The SSv2 recipe said the reference ships no SSv2 checkpoints, and its warm-up asked for
  'the reference's ssv2 SNET_RESUME / DNET_RESUME checkpoints' (README audit)."""
  source = load('ssv2_s2dnet:warmup').init_from.source
  assert "the reference's" not in source and 'ships none' in source, source
