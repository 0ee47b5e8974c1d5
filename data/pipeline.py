"""The tf.data input pipeline: read -> sample -> decode -> augment -> batch.

Each phase is a named, swappable function on one video's dict of tensors. Frame indices are
sampled BEFORE any JPEG is decoded, so only the frames a clip uses are decoded. Batches carry
uint8 pixels; normalisation runs inside the jitted steps on the accelerator
(salinet_jax/inputs.py): a quarter of float32's host memory, batching copies and host-to-device
traffic, and no host time spent on it. With `train_resize_on_device`, train crops that need
upsampling are also resized (and flipped) there.

Named ops chosen by the config (`config.data.get(field, default)`):
  temporal_sampling  'dense' (num_frames x frame_stride clips: random start for train, K uniformly
                     spaced clips for test, short videos loop), 'tsn' (num_frames segments, one
                     frame each: random position for train, centre for test), 'all_frames' (up to
                     num_frames frames from the start, train trims a random 0..N*trim_fraction
                     frames at each end; padded to num_frames, batches get 'frame_mask').
  train_crop         'short_side_jitter' (PySlowFast), 'inception' (random resized crop),
                     'tsm_multiscale' (TSM scales 1/.875/.75/.66, max distortion 1, fixed-offset
                     grid); each samples a box, then only that window of each JPEG is decoded
                     (fused decode-and-crop) and resized once to crop_size x crop_size (on the
                     accelerator when the window is smaller and train_resize_on_device is set).
  random_flip        horizontal flip on/off (off for direction-sensitive sets like SSv2).

Train batches: {'video': (B, T, H, W, 3) uint8, 'label': (B,) int32}, infinite, per process;
with train_resize_on_device also 'crop_hw' (B, 2) int32 and 'flip' (B,) bool, which
salinet_jax/inputs.py turns into finished clips.
Eval batches: {'video': (B, V, T, H, W, 3) uint8, 'label': (B,), 'filename': (B,) bytes,
'mask': (B,) bool}: every video of the split exactly once across all processes, V = temporal
clips x spatial crops views per video, padded at the end with mask=False so every process runs
the same number of equal-size batches.
"""

import dataclasses
import functools
import math
import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from data import datasets
from data import host_malloc
from data import records
from data import synthetic

Features = Dict[str, tf.Tensor]



@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """A resolved split: where its shards are and how many videos it has."""
  directory: str
  dataset: str
  split: str
  num_videos: int
  classes: Tuple[str, ...]
  # (shard basename, bytes written by the converter) pairs; empty when not recorded.
  shard_bytes: Tuple[Tuple[str, int], ...] = ()


def records_directory(dataset_config) -> str:
  """Where a dataset's records live; the built-in synthetic data defaults to a cache folder."""
  if dataset_config.data_dir:
    return os.path.expanduser(dataset_config.data_dir)
  if dataset_config.name == 'synthetic':
    cache = os.environ.get('SALINET_JAX_CACHE', os.path.expanduser('~/.cache/salinet_jax'))
    return os.path.join(cache, f'synthetic-{synthetic.fingerprint(dataset_config.synthetic)}')
  raise records.MissingRecordsError(
      'config.dataset.data_dir is empty: set it to a records directory written by '
      'python -m data.convert (--config.dataset.data_dir=DIR).')


def prepare(dataset_config) -> records.DatasetMetadata:
  """The metadata of the config's records (generating the synthetic demo data on first use).

  The records describe their dataset: classes in order, splits and sizes. `config.dataset.name`
  may be '' (take the records' name); when given it must be the records' name. For the standard
  datasets of the registry (data/datasets.py), what differs from the official facts (class
  count, videos missing from a split) is logged as a warning. On several hosts only process 0
  generates synthetic data; the others wait for it.
  """
  directory = records_directory(dataset_config)
  if dataset_config.name == 'synthetic':
    if jax.process_index() == 0:
      synthetic.ensure_generated(directory, dataset_config.synthetic)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('synthetic data generated')
  metadata = records.read_metadata(directory)
  if dataset_config.name and dataset_config.name != metadata.name:
    raise records.MissingRecordsError(
        f'config.dataset.name is {dataset_config.name!r} but the records in {directory} hold '
        f'dataset {metadata.name!r} ({metadata.num_classes} classes): set '
        f"--config.dataset.name={metadata.name} (or '' to take the records' name), or point "
        'config.dataset.data_dir at the right records.')
  return metadata


_CHECKED = set()


def split_info(dataset_config, split: str) -> SplitInfo:
  """The split `split` of the config's records; fails listing the splits there are."""
  metadata = prepare(dataset_config)
  directory = records_directory(dataset_config)
  if split not in metadata.split_sizes:
    raise records.MissingRecordsError(
        f'Split {split!r} is not in the records of {metadata.name!r} in {directory} (it has '
        f'{sorted(metadata.split_sizes)}): pass one of those (--split=NAME in eval mode, '
        'config.dataset.train_split / eval_split in training).')
  if (directory, split) not in _CHECKED:
    _CHECKED.add((directory, split))
    for warning in datasets.check_records(metadata, split):
      logging.warning('%s', warning)
  shard_bytes = tuple((shard['file'], int(shard['num_bytes']))
                      for shard in metadata.shards.get(split, ()))
  return SplitInfo(directory, metadata.name, split, metadata.split_sizes[split],
                   tuple(metadata.classes), shard_bytes)


# ----------------------------------------------------------------------------- read
def read(info: SplitInfo, *, shuffle: bool, seed: int, process_index: int,
         process_count: int, by_file: bool = True) -> tf.data.Dataset:
  """Serialized records of this process's part of the split.

  With `by_file`, shards are divided between processes by file when there are at least as many
  files as processes; otherwise every process reads every file and keeps every n-th element
  (evaluation does that so each process holds at most ceil(num_videos / processes) videos).
  """
  files = records.shard_files(info.directory, info.dataset, info.split)
  # A missing or truncated shard fails here, naming the file, instead of deep inside tf.data.
  records.check_shards(files, dict(info.shard_bytes))
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


def tsn_segment_indices(num_available: tf.Tensor, num_segments: int, positions: tf.Tensor
                        ) -> tf.Tensor:
  """One frame per segment: the video is cut into `num_segments` equal segments and each takes
  the frame at relative `positions` (in [0, 1), one per segment) inside its segment.

  Videos shorter than `num_segments` repeat frames (each segment still yields one index).
  """
  n = tf.cast(tf.maximum(num_available, 1), tf.float32)
  seg = n / num_segments
  starts = tf.range(num_segments, dtype=tf.float32) * seg
  indices = tf.cast(tf.floor(starts + positions * seg), tf.int32)
  return tf.clip_by_value(indices, 0, tf.maximum(num_available, 1) - 1)


def sample_tsn_segments(features: Features, num_segments: int, *, train: bool,
                        seed: Optional[tf.Tensor] = None, num_clips: int = 1) -> Features:
  """TSN sampling: `num_segments` segments, one frame each.

  Train: a uniformly random frame inside each segment -> (1, S). Test: `num_clips` views whose
  frames sit at (k + 0.5) / num_clips of each segment (k = 0..K-1; K = 1 is the centre) -> (K, S).
  """
  available = tf.shape(features['frames_jpeg'])[0]
  if train:
    positions = tf.random.stateless_uniform([num_segments], seed)
    indices = tsn_segment_indices(available, num_segments, positions)[None]
  else:
    offsets = (tf.range(num_clips, dtype=tf.float32) + 0.5) / num_clips
    indices = tf.stack([tsn_segment_indices(available, num_segments,
                                            tf.fill([num_segments], offsets[k]))
                        for k in range(num_clips)])
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)
  return features


def sample_all_frames(features: Features, max_frames: int, *, train: bool,
                      seed: Optional[tf.Tensor] = None, trim_fraction: float = 1 / 16,
                      stride: int = 1) -> Features:
  """All frames up to `max_frames` (S2DNet): returns (1, num_valid) JPEGs and 'num_valid'.

  Every `stride`-th frame is used (S2DNet's x2 pre-subsampling). Train: first drops a random
  0..floor(max_frames * trim_fraction) frames at each end (at least one frame always stays),
  then keeps the first `max_frames`. Test: the first `max_frames`.
  `pad_frames` later pads the decoded clip to `max_frames` and adds the validity mask.
  """
  available = tf.shape(features['frames_jpeg'])[0]
  start, end = tf.constant(0, tf.int32), available
  if train:
    max_trim = int(max_frames * trim_fraction)
    trims = tf.random.stateless_uniform([2], seed, 0, max_trim + 1, dtype=tf.int32)
    start = tf.minimum(trims[0], tf.maximum(available - 1, 0))
    end = tf.maximum(available - trims[1], start + 1)
  num_valid = tf.minimum((end - start + stride - 1) // stride, max_frames)
  indices = start + stride * tf.range(num_valid)
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)[None]
  features['num_valid'] = num_valid
  return features


def pad_frames(features: Features, max_frames: int) -> Features:
  """Pads decoded (V, T, H, W, C) clips with zero frames to T = `max_frames`.

  Adds 'frame_mask' (max_frames,) bool, True for the `num_valid` real frames.
  """
  video = features['video']
  num_valid = tf.shape(video)[1]
  padding = [[0, 0], [0, max_frames - num_valid], [0, 0], [0, 0], [0, 0]]
  padded = tf.pad(video, padding)
  static = video.shape.as_list()
  padded.set_shape([static[0], max_frames] + static[2:])
  features['video'] = padded
  features['frame_mask'] = tf.range(max_frames) < num_valid
  features['num_valid'] = num_valid
  return features


# ----------------------------------------------------------------------------- decode
def decode_jpeg_frames(features: Features) -> Features:
  """Decodes the sampled (clips, T) JPEG strings into uint8 (clips, T, H, W, 3)."""
  jpegs = features.pop('frames_jpeg')
  shape = tf.shape(jpegs)
  flat = tf.reshape(jpegs, [-1])
  if jpegs.shape.is_fully_defined():
    flat.set_shape([jpegs.shape.num_elements()])
  frames = _decode_each(flat, lambda b: tf.io.decode_jpeg(b, channels=3))
  frames_shape = tf.shape(frames)
  features['video'] = tf.reshape(frames, tf.concat([shape, frames_shape[1:]], axis=0))
  return features


def _decode_each(jpegs: tf.Tensor, decode_fn) -> tf.Tensor:
  """Applies `decode_fn` to each string of a 1-D tensor: unrolled when the length is static
  (the ops then run in parallel on tf.data's threads), else with tf.map_fn."""
  count = jpegs.shape[0]
  if count is not None and count <= 64:
    return tf.stack([decode_fn(jpegs[i]) for i in range(count)])
  return tf.map_fn(decode_fn, jpegs, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def decode_crop_resize(features: Features, box_fn, crop_size: int, seed: tf.Tensor,
                       flip_seed: Optional[tf.Tensor] = None,
                       resize_on_device: bool = False) -> Features:
  """Fused train decode: one crop box per video, only that window of each JPEG is decoded.

  `box_fn(height, width, seed)` returns (y, x, h, w) in source pixels (float or int scalars);
  the frames (clips=1, T) are decoded with `tf.image.decode_and_crop_jpeg`. A flip happens with
  probability 1/2 when `flip_seed` is given. -> 'video' uint8 (1, T, crop, crop, 3).

  On the host (default) the crops are flipped (while small) and resized to crop_size x crop_size
  (bilinear). With `resize_on_device`, a window that fits in crop_size x crop_size (upsampling,
  the usual case for short-side jitter) travels unresized in the top-left corner of a zero
  canvas; larger windows are resized here. The features then also hold 'crop_hw' (2,) int32,
  the window's size in the canvas, and 'flip' () bool; `resize_crops_on_device` finishes the
  clip inside the jitted step, taking that work off the host.
  """
  jpegs = features.pop('frames_jpeg')[0]  # train sampling gives one clip: (1, T) -> (T,)
  shape = tf.image.extract_jpeg_shape(jpegs[0])
  height, width = shape[0], shape[1]
  y, x, h, w = box_fn(height, width, seed)
  window = _integer_window(y, x, h, w, height, width)
  crops = _decode_each(jpegs, lambda b: tf.image.decode_and_crop_jpeg(b, window, channels=3))
  do_flip = (tf.random.stateless_uniform([], flip_seed) < 0.5 if flip_seed is not None
             else tf.constant(False))

  def host_resize(frames):
    # Casting first takes TF's faster float resize kernel. Bilinear weights sum to one, so the
    # +0.5 added before resizing makes the truncating cast back to uint8 round to nearest.
    resized = tf.image.resize(tf.cast(frames, tf.float32) + 0.5, [crop_size, crop_size],
                              method='bilinear')
    return tf.cast(resized, tf.uint8)

  if not resize_on_device:
    if flip_seed is not None:
      crops = tf.cond(do_flip, lambda: flip_rows(crops), lambda: crops)
    features['video'] = host_resize(crops)[None]
    return features
  fits = tf.logical_and(window[2] <= crop_size, window[3] <= crop_size)
  canvas = tf.cond(
      fits,
      lambda: tf.pad(crops, [[0, 0], [0, crop_size - window[2]], [0, crop_size - window[3]],
                             [0, 0]]),
      lambda: host_resize(crops))
  features['video'] = tf.ensure_shape(canvas, [None, crop_size, crop_size, 3])[None]
  features['crop_hw'] = tf.where(fits, window[2:], tf.constant([crop_size, crop_size]))
  features['flip'] = do_flip
  return features


def flip_rows(frames: tf.Tensor) -> tf.Tensor:
  """Mirrors (T, H, W, C) frames left-right; reversing the (T * H, W, C) view is about twice as
  fast on the CPU as reversing axis 2 of the 4-D tensor."""
  shape = tf.shape(frames)
  rows = tf.reshape(frames, tf.concat([[-1], shape[2:]], axis=0))
  return tf.reshape(tf.reverse(rows, axis=[1]), shape)


def to_pixels(video: tf.Tensor) -> tf.Tensor:
  """Resampled float pixels (a convex mix of [0, 255] values) rounded to uint8."""
  return tf.cast(video + 0.5, tf.uint8)


def _integer_window(y, x, h, w, height, width) -> tf.Tensor:
  """A float box rounded to an in-bounds [y, x, h, w] int32 crop window of at least 1x1."""
  h = tf.clip_by_value(tf.cast(tf.round(tf.cast(h, tf.float32)), tf.int32), 1, height)
  w = tf.clip_by_value(tf.cast(tf.round(tf.cast(w, tf.float32)), tf.int32), 1, width)
  y = tf.clip_by_value(tf.cast(tf.round(tf.cast(y, tf.float32)), tf.int32), 0, height - h)
  x = tf.clip_by_value(tf.cast(tf.round(tf.cast(x, tf.float32)), tf.int32), 0, width - w)
  return tf.stack([y, x, h, w])


# ----------------------------------------------------------------------------- augment
def short_side_jitter_box(height, width, seed, *, crop_size: int, min_scale: int,
                          max_scale: int):
  """PySlowFast: short side scaled to a random size in [min_scale, max_scale], then a random
  crop_size square; expressed as the square of side crop_size / scale in source pixels."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  short_side = tf.cast(tf.random.stateless_uniform([], seeds[0], min_scale, max_scale + 1,
                                                   dtype=tf.int32), tf.float32)
  ratio = short_side / tf.minimum(height, width)
  crop_h = tf.minimum(crop_size / ratio, height)
  crop_w = tf.minimum(crop_size / ratio, width)
  y = tf.random.stateless_uniform([], seeds[1]) * (height - crop_h)
  x = tf.random.stateless_uniform([], seeds[2]) * (width - crop_w)
  return y, x, crop_h, crop_w


def inception_box(height, width, seed, *, area_range=(0.08, 1.0),
                  aspect_range=(3 / 4, 4 / 3), max_attempts: int = 10):
  """Inception-style random resized crop: area in `area_range` of the frame, aspect ratio (w/h)
  in `aspect_range`; the whole frame when no box fits in `max_attempts`."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.stack([height, width, 3]), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=float(area_range[0]), aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range), max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  return begin[0], begin[1], size[0], size[1]


TSM_SCALES = (1.0, 0.875, 0.75, 0.66)


def tsm_offsets(height, width, crop_h, crop_w, more_fix_crop: bool = True) -> tf.Tensor:
  """The fixed-offset grid of TSM's multi-scale crop: (num_positions, 2) of (y, x).

  Steps are a quarter of the free space; 5 positions (corners + centre) or 13 with
  `more_fix_crop` (adds edge midpoints and the four quarter points).
  """
  h_step = (height - crop_h) // 4
  w_step = (width - crop_w) // 4
  grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
  if more_fix_crop:
    grid += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
  return tf.stack([tf.stack([gy * h_step, gx * w_step]) for gy, gx in grid])


def tsm_multiscale_box(height, width, seed, *, crop_size: int, scales=TSM_SCALES,
                       max_distort: int = 1, more_fix_crop: bool = True):
  """TSM / TSN multi-scale crop: crop height and width are each one of `scales` x the short
  side (sizes within 3 px of crop_size snap to it), their scale indices at most `max_distort`
  apart; the crop sits at a random position of the fixed grid (`tsm_offsets`)."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  base = tf.cast(tf.minimum(height, width), tf.float32)
  sizes = tf.cast(base * tf.constant(scales, tf.float32), tf.int32)
  sizes = tf.where(tf.abs(sizes - crop_size) < 3, crop_size, sizes)
  pairs = [(i, j) for i in range(len(scales)) for j in range(len(scales))
           if abs(i - j) <= max_distort]
  choice = tf.random.stateless_uniform([], seeds[0], 0, len(pairs), dtype=tf.int32)
  pair = tf.gather(tf.constant(pairs, tf.int32), choice)
  crop_h = tf.minimum(tf.gather(sizes, pair[0]), height)
  crop_w = tf.minimum(tf.gather(sizes, pair[1]), width)
  offsets = tsm_offsets(height, width, crop_h, crop_w, more_fix_crop)
  position = tf.random.stateless_uniform([], seeds[1], 0, tf.shape(offsets)[0], dtype=tf.int32)
  y, x = offsets[position][0], offsets[position][1]
  return y, x, crop_h, crop_w


def crop_box_resize(features: Features, box_fn, crop_size: int, seed: tf.Tensor) -> Features:
  """Applies one sampled box to every frame of decoded (1, T, H, W, 3) video, resized to
  crop_size -> float32 (1, T, crop, crop, 3). Same region as `decode_crop_resize`."""
  video = features['video']
  height, width = tf.shape(video)[2], tf.shape(video)[3]
  window = _integer_window(*box_fn(height, width, seed), height, width)
  frames = video[0, :, window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
  features['video'] = tf.image.resize(frames, [crop_size, crop_size], method='bilinear')[None]
  return features


TRAIN_CROPS = ('short_side_jitter', 'inception', 'tsm_multiscale')
TEMPORAL_SAMPLINGS = ('dense', 'tsn', 'all_frames')


def train_box_fn(data_config):
  """The crop-box sampler named by `config.data.train_crop`, bound to its config fields."""
  name = data_config.get('train_crop', 'short_side_jitter')
  crop_size = data_config.crop_size
  if name == 'short_side_jitter':
    return functools.partial(short_side_jitter_box, crop_size=crop_size,
                             min_scale=data_config.train_min_scale,
                             max_scale=data_config.train_max_scale)
  if name == 'inception':
    return functools.partial(
        inception_box, area_range=tuple(data_config.get('inception_area_range', (0.08, 1.0))),
        aspect_range=tuple(data_config.get('inception_aspect_range', (3 / 4, 4 / 3))))
  if name == 'tsm_multiscale':
    return functools.partial(
        tsm_multiscale_box, crop_size=crop_size,
        scales=tuple(data_config.get('tsm_scales', TSM_SCALES)),
        max_distort=data_config.get('tsm_max_distort', 1),
        more_fix_crop=data_config.get('tsm_more_fix_crop', True))
  raise ValueError(f'config.data.train_crop must be one of {TRAIN_CROPS}, got {name!r}.')


def temporal_sampling(data_config) -> str:
  name = data_config.get('temporal_sampling', 'dense')
  if name not in TEMPORAL_SAMPLINGS:
    raise ValueError(f'config.data.temporal_sampling must be one of {TEMPORAL_SAMPLINGS}, got '
                     f'{name!r}.')
  return name


def sample_train(features: Features, data_config, seed: tf.Tensor) -> Features:
  """The train temporal sampler named by the config -> frames_jpeg (1, T)."""
  name = temporal_sampling(data_config)
  if name == 'dense':
    return sample_random_clip(features, data_config.num_frames, data_config.frame_stride, seed)
  if name == 'tsn':
    return sample_tsn_segments(features, data_config.num_frames, train=True, seed=seed)
  return sample_all_frames(features, data_config.num_frames, train=True, seed=seed,
                           stride=data_config.frame_stride,
                           trim_fraction=data_config.get('all_frames_trim_fraction', 1 / 16))


def sample_eval(features: Features, data_config) -> Features:
  """The test temporal sampler named by the config -> frames_jpeg (K, T)."""
  name = temporal_sampling(data_config)
  if name == 'dense':
    return sample_uniform_clips(features, data_config.num_frames, data_config.frame_stride,
                                data_config.eval_num_clips)
  if name == 'tsn':
    return sample_tsn_segments(features, data_config.num_frames, train=False,
                               num_clips=data_config.eval_num_clips)
  if data_config.eval_num_clips != 1:
    raise ValueError('temporal_sampling="all_frames" gives one temporal view per video: set '
                     f'config.data.eval_num_clips=1 (got {data_config.eval_num_clips}).')
  return sample_all_frames(features, data_config.num_frames, train=False,
                           stride=data_config.frame_stride)


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


def _check_batch(global_batch: int, process_count: int, what: str) -> int:
  if global_batch % process_count:
    raise ValueError(f'{what} {global_batch} is not divisible by the {process_count} processes.')
  return global_batch // process_count


# ----------------------------------------------------------------------------- datasets
TRAIN_SHARDINGS = ('auto', 'global_order', 'files')


def train_sharding(data_config, process_count: int) -> str:
  """'global_order' on one process (same cost, exact resume), else the configured mode.

  'global_order': every process walks the same global, per-epoch shuffled stream and keeps every
  n-th element, so the global batch of step s is the same whatever the number of processes, and
  a resumed run sees exactly the batches an uninterrupted one would (each process reads every
  file, but parses and decodes only its own elements). 'files': each process reads its own shard
  files (the least I/O on many hosts); a resumed run reshuffles with the step folded into the seed.
  """
  mode = data_config.train_sharding
  if mode not in TRAIN_SHARDINGS:
    raise ValueError(f'config.data.train_sharding must be one of {TRAIN_SHARDINGS}, got {mode!r}.')
  if mode == 'auto':
    return 'global_order' if process_count == 1 else 'files'
  return mode


def train_dataset(config, *, seed: int, start_step: int = 0,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> tf.data.Dataset:
  """Infinite, shuffled, augmented train batches for this process (batch = global / processes).

  The stream starts at global step `start_step` (see `train_sharding` for what resuming means in
  each mode).
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  data = config.data
  info = split_info(config.dataset, config.dataset.train_split)
  local_batch = _check_batch(config.batch_size, process_count, 'config.batch_size')
  host_malloc.keep_buffers_in_heap(data.malloc_mmap_threshold_mib)
  sampling = temporal_sampling(data)
  box_fn = train_box_fn(data)
  resize_on_device = data.train_resize_on_device

  def parse_and_sample(serialized, element_seed):
    seeds = tf.random.experimental.stateless_split(element_seed, 2)
    features = records.parse_video(serialized)
    features = sample_train(features, data, seeds[0])
    features.pop('label_text')
    features.pop('fps')
    features.pop('filename')
    features['seed'] = seeds[1]
    return features

  def decode_augment(features):
    seeds = tf.random.experimental.stateless_split(features.pop('seed'), 2)
    flip_seed = seeds[1] if data.random_flip else None
    features = decode_crop_resize(features, box_fn, data.crop_size, seeds[0],
                                  flip_seed=flip_seed, resize_on_device=resize_on_device)
    if sampling == 'all_frames':
      features = pad_frames(features, data.num_frames)
    out = {'video': features['video'][0], 'label': features['label']}
    if resize_on_device:
      out['crop_hw'] = features['crop_hw']
      out['flip'] = features['flip']
    if sampling == 'all_frames':
      out['frame_mask'] = features['frame_mask']
    return out

  if train_sharding(data, process_count) == 'global_order':
    ds = _global_order_stream(info, data, seed, start_step * config.batch_size, parse_and_sample)
    if process_count > 1:
      # Process p takes rows [p * local, (p + 1) * local) of every global batch, so the assembled
      # global array has the same rows in the same order for any number of processes.
      ds = ds.batch(local_batch, drop_remainder=True).shard(process_count, process_index).unbatch()
  else:
    # Sampling comes before the shuffle, so the buffer holds the few JPEGs of each clip instead
    # of whole serialized videos (memory), and the decode step only sees what it decodes.
    process_seed = (seed * 7919 + process_index + 1_000_003 * start_step) % (2**31 - 1)
    ds = read(info, shuffle=True, seed=process_seed, process_index=process_index,
              process_count=process_count)
    ds = ds.repeat()
    # One stateless seed per element, derived from the process seed and the element's position.
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=process_seed).batch(2)))
    ds = ds.map(parse_and_sample, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.shuffle(data.shuffle_buffer, seed=process_seed)
  ds = ds.map(decode_augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(data.prefetch_batches)


def _global_order_stream(info: SplitInfo, data, seed: int, start_element: int,
                         parse_and_sample) -> tf.data.Dataset:
  """The global train stream from element `start_element` on: epoch after epoch, each with its
  own file order, shuffle and per-element seeds, all derived from (seed, epoch, position)."""
  files = records.shard_files(info.directory, info.dataset, info.split)
  records.check_shards(files, dict(info.shard_bytes))
  files = tf.constant(files)
  num_files = int(files.shape[0])
  per_epoch = max(info.num_videos, 1)
  first_epoch, skip = divmod(start_element, per_epoch)

  def epoch_stream(epoch):
    epoch_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    order = tf.random.experimental.stateless_shuffle(tf.range(num_files), seed=epoch_seed)
    ds = tf.data.Dataset.from_tensor_slices(tf.gather(files, order))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(num_files, 8), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.enumerate().map(
        lambda i, serialized: parse_and_sample(
            serialized, tf.random.experimental.stateless_fold_in(epoch_seed, i)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    shuffle_seed = tf.cast(tf.random.experimental.stateless_fold_in(epoch_seed, -1)[0], tf.int64)
    return ds.shuffle(data.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

  first = epoch_stream(tf.constant(first_epoch, tf.int64)).skip(skip)
  rest = tf.data.Dataset.range(first_epoch + 1, 2**62).flat_map(epoch_stream)
  return first.concatenate(rest)


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
  host_malloc.keep_buffers_in_heap(data.malloc_mmap_threshold_mib)
  ds = read(info, shuffle=False, seed=0, process_index=process_index,
            process_count=process_count, by_file=False)
  ds = ds.map(records.parse_video, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(eval_views_fn(data), num_parallel_calls=tf.data.AUTOTUNE)
  return pad_and_batch(ds, data, num_batches, local_batch), num_batches, info


def eval_views_fn(data_config):
  """The eval map of one parsed video (frames_jpeg, label, filename): its test views as uint8
  (V, T, crop, crop, 3), label, filename, mask=True (and frame_mask for 'all_frames')."""
  sampling = temporal_sampling(data_config)
  data = data_config

  def sample_decode_views(features):
    features = sample_eval(features, data)
    features = decode_jpeg_frames(features)
    features = spatial_test_crops(features, data.eval_short_side, data.eval_crop_size,
                                  data.eval_num_crops)
    features['video'] = to_pixels(features['video'])
    if sampling == 'all_frames':
      features = pad_frames(features, data.num_frames)
    out = {'video': features['video'], 'label': features['label'],
           'filename': features['filename'], 'mask': tf.constant(True)}
    if sampling == 'all_frames':
      out['frame_mask'] = features['frame_mask']
    return out

  return sample_decode_views


def pad_and_batch(ds: tf.data.Dataset, data_config, num_batches: int,
                  batch_size: int) -> tf.data.Dataset:
  """Eval elements padded with mask=False elements to `num_batches` full batches."""
  data = data_config
  views = data.eval_num_clips * data.eval_num_crops
  padding = {
      'video': tf.zeros([views, data.num_frames, data.eval_crop_size, data.eval_crop_size, 3],
                        tf.uint8),
      'label': tf.constant(0, tf.int32),
      'filename': tf.constant(b''),
      'mask': tf.constant(False),
  }
  if temporal_sampling(data) == 'all_frames':
    padding['frame_mask'] = tf.zeros([data.num_frames], tf.bool)
  padding = tf.data.Dataset.from_tensors(padding).repeat()
  ds = ds.concatenate(padding).take(num_batches * batch_size)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(data.prefetch_batches)


def video_eval_batches(data_config, jpegs: Sequence[bytes], filename: str, fps: float,
                       batch_size: int) -> tf.data.Dataset:
  """The eval views of one video held in memory (JPEG frames, e.g. decoded for prediction),
  through the same ops as a split's videos: one batch of `batch_size`, the video first and
  the rest padding. Its label is -1 (unlabelled)."""
  features = {'frames_jpeg': tf.constant(list(jpegs), tf.string),
              'label': tf.constant(-1, tf.int32), 'label_text': tf.constant(''),
              'filename': tf.constant(filename), 'fps': tf.constant(fps, tf.float32)}
  ds = tf.data.Dataset.from_tensors(features).map(eval_views_fn(data_config))
  return pad_and_batch(ds, data_config, 1, batch_size)


def as_numpy(ds: tf.data.Dataset, info: Optional[SplitInfo] = None
             ) -> Iterator[Dict[str, np.ndarray]]:
  """The dataset's elements as numpy. With the split's `info`, a corrupt shard met while reading
  ends the iteration with a CorruptShardError naming the file and the byte offset."""
  iterator = ds.as_numpy_iterator()
  if info is None:
    return iterator
  return _explained(iterator, info)


def _explained(iterator, info: SplitInfo):
  while True:
    try:
      element = next(iterator)
    except StopIteration:
      return
    except tf.errors.DataLossError as e:
      files = records.shard_files(info.directory, info.dataset, info.split)
      raise records.locate_corruption(files, e) from None
    yield element
