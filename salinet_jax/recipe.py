"""The recipe card: what a config trains and tests, resolved to the numbers that run.

  python -m salinet_jax.info --config=configs/k400_salinet.py --recipe [--json]
      [--video_frames=300 --video_fps=30]

Initialisation (or "from scratch"), global and per-BatchNorm-group batch, peak LR and the LR at
the start of every epoch, warm-up, epochs and steps, precision, loss, frames / stride / target
fps, train and test crops, views and their reduction, precise BN; with a video size, the frame
indices of every test clip as the eval pipeline computes them. Epochs are counted over the
official train split of the registered datasets (data/datasets.py), else over the records.
tests/test_recipes.py pins every card against the reference code, file by file.
"""

import itertools
import json
from typing import Any, Dict, List, Optional

import jax
import ml_collections

from data import datasets
from data import pipeline
from salinet_jax import engine
from salinet_jax import losses
from salinet_jax import models
from salinet_jax import optim


def train_videos_of(config) -> Optional[int]:
  """The train split's size: the official count of a registered dataset, else the records'."""
  if config.dataset.name == 'synthetic' and not config.dataset.data_dir:
    return config.dataset.synthetic.num_train  # the demo data, without generating it
  info = datasets.REGISTRY.get(config.dataset.name)
  if info is not None and config.dataset.train_split in info.split_sizes:
    return info.split_sizes[config.dataset.train_split]
  try:
    return pipeline.split_info(config.dataset, config.dataset.train_split).num_videos
  except Exception:  # pylint: disable=broad-except
    return None  # no records here: the card gives steps, not epochs


def records_name_of(config) -> str:
  """The name the records give their dataset, for a config that leaves config.dataset.name
  empty (configs/custom.py); '' without records to read."""
  try:
    return pipeline.prepare(config.dataset).name
  except Exception:  # pylint: disable=broad-except
    return ''


def learning_rate_per_epoch(config, train_videos: int) -> List[float]:
  """The LR of the first step of every epoch of the run: the first step whose batch starts at
  or after video e x videos, step ceil(e x videos / batch) counted from 0 as the schedule counts."""
  opt_config, steps_per_epoch = engine.resolved_optimizer(config, train_videos)
  total = engine.num_train_steps(config, train_videos)
  schedule = optim.learning_rate_schedule(opt_config, total, config.batch_size, steps_per_epoch,
                                          engine.schedule_epochs(config, total, train_videos))
  starts = (-(-e * train_videos // config.batch_size) for e in itertools.count())
  firsts = itertools.takewhile(lambda step: step < total, starts)  # the epochs the run trains
  return [float(schedule(step)) for step in firsts]


# Which of PySlowFast's decoding paths the 'pyslowfast' sampler's frames are (data/sampling.py).
PYSLOWFAST_PATH = ("PySlowFast's decode-all path, its decoding of MKV and WebM; an MP4 or AVI "
                   "converted with its stream clock takes PySlowFast's selective decoding's "
                   'frames instead, in most clips one frame off these (data/sampling.py)')


def test_frame_indices(data_config, num_frames: int, fps: float) -> List[List[int]]:
  """The frame indices of every test clip of a video of `num_frames` frames at `fps`, from the
  eval pipeline's own sampler (data/sampling.py)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import sampling  # pylint: disable=g-import-not-at-top
  features = {'frames_jpeg': tf.constant([str(i).encode() for i in range(num_frames)]),
              'fps': tf.constant(fps, tf.float32)}
  clips = sampling.sample(features, data_config, train=False)['frames_jpeg'].numpy()
  return [[int(i) for i in clip] for clip in clips]


def card(config: ml_collections.ConfigDict, video_frames: int = 0,
         video_fps: float = 0.0) -> Dict[str, Any]:
  """The resolved recipe of `config` as a dict (see the module docstring)."""
  opt, data = config.optimizer, config.data
  init = config.init_from
  train_videos = train_videos_of(config)
  out: Dict[str, Any] = {
      'dataset': config.dataset.name or records_name_of(config),
      'model': config.model.name,
      'initialisation': ('from scratch' if init.checkpoint in ('none', '') else {
          'checkpoint': init.checkpoint, 'source': init.source, 'exclude': init.exclude,
          'which': init.which, 'convert_command': init.convert_command}),
      'global_batch': config.batch_size,
      'bn_group_batch': engine.bn_group_batch(config),
      'grad_accumulation_steps': config.grad_accumulation_steps,
      'optimizer': {
          'name': opt.name, 'momentum': opt.momentum, 'nesterov': opt.nesterov,
          'weight_decay': opt.weight_decay,
          'weight_decay_rules': [list(r) for r in opt.weight_decay_rules],
          'grad_clip_norm': opt.grad_clip_norm,
          'lr_multipliers': [list(r) for r in opt.lr_multipliers], 'frozen': opt.frozen},
      'peak_learning_rate': optim.peak_learning_rate(opt, config.batch_size),
      'schedule': opt.schedule,
      'warmup_epochs': opt.warmup_epochs,
      'warmup_steps': opt.warmup_steps,
      'warmup_start_lr': optim.scaled_learning_rate(opt, opt.warmup_start_lr, config.batch_size),
      'final_lr_fraction': opt.final_lr_fraction,
      'epochs': (config.num_epochs if config.num_train_steps <= 0
                 or engine.runs_by_epochs(config, train_videos) else None),
      'train_videos': train_videos,
      'precision': {'config': config.dtype,
                    'here': str(models.compute_dtype(config.dtype).dtype),
                    'backend': jax.default_backend()},
      'loss': {'name': config.loss.name,
               **{key: config.loss[key] for key in losses.LOSS_FIELDS[config.loss.name]}},
      'frames': {'temporal_sampling': data.temporal_sampling, 'num_frames': data.num_frames,
                 'frame_stride': data.frame_stride,
                 'target_fps': data.target_fps if data.temporal_sampling == 'pyslowfast' else None},
      'train_crop': {'name': data.train_crop, 'crop_size': data.crop_size,
                     **_crop_fields(data)},
      'train_augmentations': list(data.train_augmentations),
      'resize_filter': data.resize_filter,
      'normalization': data.normalization,
      'test': {'clips': data.eval_num_clips, 'crops': data.eval_num_crops,
               'short_side': data.eval_short_side, 'crop_size': data.eval_crop_size,
               'centre_rounding': data.eval_crop_rounding,
               'views': data.eval_num_clips * data.eval_num_crops,
               'view_reduction': f'{config.eval.view_reduction} of {config.eval.view_scores}'},
      'precise_bn_batches': config.precise_bn_batches,
  }
  if train_videos or config.num_train_steps > 0:
    total = engine.num_train_steps(config, train_videos or 0)
    out['steps'] = total
    if train_videos:
      out['steps_per_epoch'] = train_videos / config.batch_size
      out['learning_rate_per_epoch'] = learning_rate_per_epoch(config, train_videos)
  if video_frames:
    out['test_frame_indices'] = test_frame_indices(data, video_frames, video_fps)
    out['test_video'] = {'frames': video_frames, 'fps': video_fps}
    if data.temporal_sampling == 'pyslowfast':
      out['test_frame_indices_source'] = PYSLOWFAST_PATH
  return out


def _crop_fields(data) -> Dict[str, Any]:
  if data.train_crop == 'short_side_jitter':
    return {'short_side_range': [data.train_min_scale, data.train_max_scale]}
  if data.train_crop == 'tsm_multiscale':
    return {'scales': list(data.tsm_scales), 'max_distort': data.tsm_max_distort,
            'more_fix_crop': data.tsm_more_fix_crop}
  return {'area_range': list(data.inception_area_range),
          'aspect_range': list(data.inception_aspect_range)}


def format_card(recipe: Dict[str, Any]) -> str:
  """The card as aligned `field: value` lines (the per-epoch LRs folded a few per line)."""
  lines = []
  for key, value in recipe.items():
    if key == 'learning_rate_per_epoch':
      values = [f'{v:.4g}' for v in value]
      lines.append(f'{key}:')
      lines += ['    ' + ' '.join(f'e{i + j}={v}' for j, v in enumerate(values[i:i + 8]))
                for i in range(0, len(values), 8)]
    elif key == 'test_frame_indices':
      lines.append(f'{key}:')
      lines += [f'    clip {k}: {clip}' for k, clip in enumerate(value)]
    else:
      lines.append(f'{key}: {json.dumps(value)}')
  return '\n'.join(lines)
