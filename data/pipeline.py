"""The tf.data input pipeline: read -> sample -> decode -> augment -> normalise -> batch.

Each phase is a named, swappable function on one video's dict of tensors. Frame indices are
sampled BEFORE any JPEG is decoded, so only the frames a clip uses are decoded.

Train batches: {'video': (B, T, H, W, 3) float32, 'label': (B,) int32}, infinite, per process.
Eval batches: {'video': (B, V, T, H, W, 3), 'label': (B,), 'filename': (B,) bytes,
'mask': (B,) bool}: every video of the split exactly once across all processes, V = temporal
clips x spatial crops views per video, padded at the end with mask=False so every process runs
the same number of equal-size batches.
"""

import dataclasses
import math
import os
from typing import Dict, Iterator, Optional, Tuple

import jax
import numpy as np
import tensorflow as tf

from data import datasets
from data import records
from data import synthetic

Features = Dict[str, tf.Tensor]

NORMALIZATION_PRESETS = {
    # PySlowFast Kinetics convention (pixels / 255 first).
    'kinetics': ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """A resolved split: where its shards are and how many videos it has."""
  directory: str
  dataset: str
  split: str
  num_videos: int
  classes: Tuple[str, ...]


def records_directory(dataset_config) -> str:
  """Where a dataset's records live; the built-in synthetic data defaults to a cache folder."""
  if dataset_config.data_dir:
    return os.path.expanduser(dataset_config.data_dir)
  if dataset_config.name == 'synthetic':
    cache = os.environ.get('SALINET_JAX_CACHE', os.path.expanduser('~/.cache/salinet_jax'))
    return os.path.join(cache, f'synthetic-{synthetic.fingerprint(dataset_config.synthetic)}')
  raise ValueError(f'config.dataset.data_dir is empty: set it to the records directory of '
                   f'dataset {dataset_config.name!r} (written by python -m data.convert).')


def prepare(dataset_config) -> records.DatasetMetadata:
  """Makes sure the dataset's records exist (generating the synthetic demo data on first use).

  On several hosts only process 0 writes; the others wait for it.
  """
  directory = records_directory(dataset_config)
  if dataset_config.name == 'synthetic':
    if jax.process_index() == 0:
      synthetic.ensure_generated(directory, dataset_config.synthetic)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('synthetic data generated')
  metadata = records.read_metadata(directory)
  info = datasets.get(dataset_config.name)
  if metadata.num_classes != info.num_classes:
    raise ValueError(f'Records in {directory} have {metadata.num_classes} classes but dataset '
                     f'{info.name!r} has {info.num_classes}.')
  return metadata


def split_info(dataset_config, split: str) -> SplitInfo:
  metadata = prepare(dataset_config)
  if split not in metadata.split_sizes:
    raise ValueError(f'Split {split!r} is not in the records of {metadata.name!r} '
                     f'(has {sorted(metadata.split_sizes)}).')
  return SplitInfo(records_directory(dataset_config), metadata.name, split,
                   metadata.split_sizes[split], tuple(metadata.classes))


# ----------------------------------------------------------------------------- read
def read(info: SplitInfo, *, shuffle: bool, seed: int, process_index: int,
         process_count: int, by_file: bool = True) -> tf.data.Dataset:
  """Serialized records of this process's part of the split.

  With `by_file`, shards are divided between processes by file when there are at least as many
  files as processes; otherwise every process reads every file and keeps every n-th element
  (evaluation does that so each process holds at most ceil(num_videos / processes) videos).
  """
  files = records.shard_files(info.directory, info.dataset, info.split)
  by_file = by_file and len(files) >= process_count
  if by_file:
    files = files[process_index::process_count]
  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                     num_parallel_calls=tf.data.AUTOTUNE)
  if not by_file:
    ds = ds.shard(process_count, process_index)
  return ds


# ----------------------------------------------------------------------------- sample
def dense_clip_indices(num_available: tf.Tensor, num_frames: int, stride: int,
                       start: tf.Tensor) -> tf.Tensor:
  """`num_frames` indices `stride` apart from `start`; short videos loop around."""
  offsets = start + tf.range(num_frames) * stride
  return tf.math.floormod(offsets, tf.maximum(num_available, 1))


def sample_random_clip(features: Features, num_frames: int, stride: int,
                       seed: tf.Tensor) -> Features:
  """Train sampling: one dense clip at a uniformly random start."""
  available = tf.shape(features['frames_jpeg'])[0]
  span = (num_frames - 1) * stride + 1
  max_start = tf.maximum(available - span, 0)
  start = tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)
  indices = dense_clip_indices(available, num_frames, stride, start)
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)[None]
  return features


def sample_uniform_clips(features: Features, num_frames: int, stride: int,
                         num_clips: int) -> Features:
  """Test sampling: `num_clips` dense clips with uniformly spaced starts (K x T indices)."""
  available = tf.shape(features['frames_jpeg'])[0]
  span = (num_frames - 1) * stride + 1
  max_start = tf.cast(tf.maximum(available - span, 0), tf.float32)
  if num_clips == 1:
    starts = tf.cast(tf.round(max_start / 2), tf.int32)[None]
  else:
    starts = tf.cast(tf.round(tf.linspace(0.0, max_start, num_clips)), tf.int32)
  indices = tf.map_fn(lambda s: dense_clip_indices(available, num_frames, stride, s), starts)
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)
  return features


# ----------------------------------------------------------------------------- decode
def decode_jpeg_frames(features: Features) -> Features:
  """Decodes the sampled (clips, T) JPEG strings into uint8 (clips, T, H, W, 3)."""
  jpegs = features.pop('frames_jpeg')
  shape = tf.shape(jpegs)
  flat = tf.reshape(jpegs, [-1])
  frames = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), flat,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  frames_shape = tf.shape(frames)
  features['video'] = tf.reshape(frames, tf.concat([shape, frames_shape[1:]], axis=0))
  return features


# ----------------------------------------------------------------------------- augment
def random_short_side_crop_flip(features: Features, crop_size: int, min_scale: int,
                                max_scale: int, flip: bool, seed: tf.Tensor) -> Features:
  """PySlowFast train augmentation: short side jittered in [min, max], random square crop, flip.

  The crop is cut at source resolution and resized once (same region as resize-then-crop,
  without resizing the whole frame).
  """
  video = features['video']  # (1, T, H, W, 3)
  seeds = tf.random.experimental.stateless_split(seed, 4)
  height = tf.cast(tf.shape(video)[2], tf.float32)
  width = tf.cast(tf.shape(video)[3], tf.float32)
  short_side = tf.cast(tf.random.stateless_uniform([], seeds[0], min_scale, max_scale + 1,
                                                   dtype=tf.int32), tf.float32)
  ratio = short_side / tf.minimum(height, width)
  crop_h = tf.minimum(crop_size / ratio, height)
  crop_w = tf.minimum(crop_size / ratio, width)
  y0 = tf.random.stateless_uniform([], seeds[1]) * (height - crop_h)
  x0 = tf.random.stateless_uniform([], seeds[2]) * (width - crop_w)
  box = tf.stack([y0 / height, x0 / width, (y0 + crop_h) / height, (x0 + crop_w) / width])
  frames = video[0]
  num_frames = tf.shape(frames)[0]
  cropped = tf.image.crop_and_resize(tf.cast(frames, tf.float32),
                                     tf.tile(box[None], [num_frames, 1]),
                                     tf.range(num_frames), [crop_size, crop_size])
  if flip:
    do_flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
    cropped = tf.cond(do_flip, lambda: tf.reverse(cropped, axis=[2]), lambda: cropped)
  features['video'] = cropped[None]
  return features


def resize_short_side(video: tf.Tensor, short_side: int) -> tf.Tensor:
  """Resizes (..., H, W, 3) frames so that min(H, W) == short_side (bilinear)."""
  shape = tf.shape(video)
  height, width = shape[-3], shape[-2]
  scale = short_side / tf.cast(tf.minimum(height, width), tf.float32)
  new_h = tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32)
  new_w = tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32)
  flat = tf.reshape(video, tf.concat([[-1], shape[-3:]], axis=0))
  resized = tf.image.resize(tf.cast(flat, tf.float32), [new_h, new_w])
  return tf.reshape(resized, tf.concat([shape[:-3], [new_h, new_w, 3]], axis=0))


def spatial_test_crops(features: Features, short_side: int, crop_size: int,
                       num_crops: int) -> Features:
  """Test views: resize short side, then 1 centre crop or 3 crops along the long side.

  (clips, T, H, W, 3) -> (clips * num_crops, T, crop, crop, 3), clip-major.
  """
  if num_crops not in (1, 3):
    raise ValueError(f'Number of spatial test crops must be 1 or 3, got {num_crops}.')
  video = resize_short_side(features['video'], short_side)
  height, width = tf.shape(video)[2], tf.shape(video)[3]
  centre_y = (height - crop_size) // 2
  centre_x = (width - crop_size) // 2
  if num_crops == 1:
    positions = [(centre_y, centre_x)]
  else:
    long_is_width = width >= height
    last_y = tf.where(long_is_width, centre_y, height - crop_size)
    last_x = tf.where(long_is_width, width - crop_size, centre_x)
    first_y = tf.where(long_is_width, centre_y, 0)
    first_x = tf.where(long_is_width, 0, centre_x)
    positions = [(first_y, first_x), (centre_y, centre_x), (last_y, last_x)]
  crops = [video[:, :, y:y + crop_size, x:x + crop_size] for y, x in positions]
  stacked = tf.stack(crops, axis=1)  # (clips, crops, T, c, c, 3)
  features['video'] = tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0))
  return features


# ----------------------------------------------------------------------------- normalise
def normalize(features: Features, mean, std) -> Features:
  """Pixels to [0, 1], then (x - mean) / std per channel, as float32."""
  video = tf.cast(features['video'], tf.float32) / 255.0
  features['video'] = (video - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
  return features


def normalization(data_config) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  if data_config.normalization not in NORMALIZATION_PRESETS:
    raise ValueError(f'config.data.normalization must be one of {sorted(NORMALIZATION_PRESETS)}, '
                     f'got {data_config.normalization!r}.')
  return NORMALIZATION_PRESETS[data_config.normalization]


def _check_batch(global_batch: int, process_count: int, what: str) -> int:
  if global_batch % process_count:
    raise ValueError(f'{what} {global_batch} is not divisible by the {process_count} processes.')
  return global_batch // process_count


# ----------------------------------------------------------------------------- datasets
def train_dataset(config, *, seed: int, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> tf.data.Dataset:
  """Infinite, shuffled, augmented train batches for this process (batch = global / processes)."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  data = config.data
  info = split_info(config.dataset, config.dataset.train_split)
  local_batch = _check_batch(config.batch_size, process_count, 'config.batch_size')
  mean, std = normalization(data)
  process_seed = seed * 7919 + process_index
  ds = read(info, shuffle=True, seed=process_seed, process_index=process_index,
            process_count=process_count)
  ds = ds.repeat().shuffle(data.shuffle_buffer, seed=process_seed)
  ds = ds.map(records.parse_video, num_parallel_calls=tf.data.AUTOTUNE)
  # One stateless seed per element, derived from the process seed and the element's position.
  ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=process_seed).batch(2)))

  def sample_decode_augment(features, element_seed):
    seeds = tf.random.experimental.stateless_split(element_seed, 2)
    features = sample_random_clip(features, data.num_frames, data.frame_stride, seeds[0])
    features = decode_jpeg_frames(features)
    features = random_short_side_crop_flip(features, data.crop_size, data.train_min_scale,
                                           data.train_max_scale, data.random_flip, seeds[1])
    features = normalize(features, mean, std)
    return {'video': features['video'][0], 'label': features['label']}

  ds = ds.map(sample_decode_augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(data.prefetch_batches)


def num_eval_batches(num_videos: int, local_batch: int, process_count: int) -> int:
  """Batches per process that cover every video once (the last ones padded)."""
  return max(1, math.ceil(math.ceil(num_videos / process_count) / local_batch))


def eval_dataset(config, split: str, *, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Tuple[tf.data.Dataset, int, SplitInfo]:
  """Every video of `split` once, as multi-view batches padded with mask=False.

  Returns (dataset, number of batches, split info). Every process yields the same number of
  batches, so collective evaluation never deadlocks on a ragged last batch.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  data = config.data
  info = split_info(config.dataset, split)
  local_batch = _check_batch(config.eval_batch_size, process_count, 'config.eval_batch_size')
  num_batches = num_eval_batches(info.num_videos, local_batch, process_count)
  mean, std = normalization(data)
  ds = read(info, shuffle=False, seed=0, process_index=process_index,
            process_count=process_count, by_file=False)
  ds = ds.map(records.parse_video, num_parallel_calls=tf.data.AUTOTUNE)

  def sample_decode_views(features):
    features = sample_uniform_clips(features, data.num_frames, data.frame_stride,
                                    data.eval_num_clips)
    features = decode_jpeg_frames(features)
    features = spatial_test_crops(features, data.eval_short_side, data.eval_crop_size,
                                  data.eval_num_crops)
    features = normalize(features, mean, std)
    return {'video': features['video'], 'label': features['label'],
            'filename': features['filename'], 'mask': tf.constant(True)}

  ds = ds.map(sample_decode_views, num_parallel_calls=tf.data.AUTOTUNE)
  views = data.eval_num_clips * data.eval_num_crops
  padding = tf.data.Dataset.from_tensors({
      'video': tf.zeros([views, data.num_frames, data.eval_crop_size, data.eval_crop_size, 3]),
      'label': tf.constant(0, tf.int32),
      'filename': tf.constant(b''),
      'mask': tf.constant(False),
  }).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(data.prefetch_batches), num_batches, info


def as_numpy(ds: tf.data.Dataset) -> Iterator[Dict[str, np.ndarray]]:
  return ds.as_numpy_iterator()
