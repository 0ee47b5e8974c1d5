"""Spatial parts of the input pipeline: JPEG decoding, train crops and augmentations, test views.

Train: a crop box is sampled per video by the part named `config.data.train_crop` (registry
`CROP_BOXES`) and only that window of each JPEG is decoded (fused decode-and-crop) and resized
once to crop_size x crop_size; then each augmentation named in `config.data.train_augmentations`
(registry `AUGMENTATIONS`) runs on the clip. With `train_resize_on_device`, windows smaller than
the crop travel unresized (zero-padded) and salinet_jax/inputs.py finishes them in the jitted
step; augmentations then leave their pixel work to it where one is defined there (the flip).
Test: the short side is resized to eval_short_side and 1 centre or 3 crops are taken along the
long side, with PySlowFast's geometry (long side floored); a centre offset that falls on a half
pixel rounds as the part named `config.data.eval_crop_rounding` does (registry `CENTRE_ROUNDINGS`:
PySlowFast's up, torchvision's CenterCrop to even).
Both resize with the filter named by `config.data.resize_filter` (registry `RESIZE_FILTERS`):
PySlowFast's bilinear interpolation, or Pillow's, which smooths when it shrinks (TSM's
transforms, so S2DNet's).
"""

import re
from typing import Dict, Optional, Sequence

import tensorflow as tf

from data import errors
from data import ops
from data import records

Features = Dict[str, tf.Tensor]

CROP_BOXES = ops.Registry('train crop', 'config.data.train_crop')
AUGMENTATIONS = ops.Registry('augmentation', 'config.data.train_augmentations')
CENTRE_ROUNDINGS = ops.Registry('test crop centre rounding', 'config.data.eval_crop_rounding')
RESIZE_FILTERS = ops.Registry('resize filter', 'config.data.resize_filter')


@RESIZE_FILTERS.register('bilinear')
def bilinear(images: tf.Tensor, size) -> tf.Tensor:
  """PySlowFast's resize (torch's interpolate, bilinear, corners not aligned): each output pixel
  mixes the 2 x 2 source pixels nearest its centre, also when shrinking. Float (N, H, W, C)."""
  return tf.image.resize(images, size, method='bilinear')


@RESIZE_FILTERS.register('pil_bilinear')
def pil_bilinear(images: tf.Tensor, size) -> tf.Tensor:
  """Pillow's BILINEAR (TSM's GroupScale and GroupMultiScaleCrop, S2DNet's transforms): when
  shrinking, the triangle widens by the shrink factor, so an output pixel averages every source
  pixel under it; enlarging, as 'bilinear'. Float (N, H, W, C)."""
  return tf.image.resize(images, size, method='bilinear', antialias=True)


@CENTRE_ROUNDINGS.register('pyslowfast')
def half_rounded_up(margin: tf.Tensor) -> tf.Tensor:
  """The centre offset of a crop `margin` pixels smaller than its frame: PySlowFast's
  uniform_crop takes ceil(margin / 2)."""
  return (margin + 1) // 2


@CENTRE_ROUNDINGS.register('torchvision')
def half_rounded_to_even(margin: tf.Tensor) -> tf.Tensor:
  """torchvision's CenterCrop (TSM's GroupCenterCrop, S2DNet's test view) takes
  int(round(margin / 2)), Python's round: a half goes to the even neighbour (341 - 224 = 117
  wide: column 58, where PySlowFast takes 59)."""
  half = margin // 2
  return tf.where((margin % 2 == 1) & (half % 2 == 1), half + 1, half)


# ----------------------------------------------------------------------------- decode
def decode_jpeg_frames(features: Features) -> Features:
  """Decodes the sampled (clips, T) JPEG strings into uint8 (clips, T, H, W, 3)."""
  jpegs = features.pop('frames_jpeg')
  shape = tf.shape(jpegs)
  flat = tf.reshape(jpegs, [-1])
  if jpegs.shape.is_fully_defined():
    flat.set_shape([jpegs.shape.num_elements()])
  frames = _decode_each(flat, records.decode_frame)
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


def host_resize(frames: tf.Tensor, crop_size: int, *, resize_filter: str) -> tf.Tensor:
  """(T, h, w, 3) uint8 -> (T, crop, crop, 3) uint8 with the RESIZE_FILTERS filter named,
  rounded to nearest."""
  # Casting first takes TF's faster float resize kernel. Each filter's weights are nonnegative
  # and sum to one, so the +0.5 added before resizing makes the truncating cast round.
  resized = RESIZE_FILTERS.get(resize_filter)(tf.cast(frames, tf.float32) + 0.5,
                                              [crop_size, crop_size])
  return tf.cast(resized, tf.uint8)


def decode_crop_resize(features: Features, box_fn, crop_size: int, seed: tf.Tensor, *,
                       resize_filter: str, resize_on_device: bool = False) -> Features:
  """Fused train decode: one crop box per video, only that window of each JPEG is decoded.

  `box_fn(height, width, seed)` returns (y, x, h, w) in source pixels (float or int scalars);
  the frames (clips=1, T) are decoded with `tf.image.decode_and_crop_jpeg`.
  -> 'video' uint8 (1, T, crop, crop, 3).

  On the host (default) the crops are resized to crop_size x crop_size (`resize_filter`). With
  `resize_on_device`, a window that fits in crop_size x crop_size (upsampling, the usual case
  for short-side jitter) travels unresized in the top-left corner of a zero canvas; larger
  windows are resized here. The features then also hold 'crop_hw' (2,) int32, the window's size
  in the canvas, and 'flip' () bool (False until an augmentation sets it), which
  salinet_jax/inputs.py turns into the finished clip inside the jitted step.
  """
  jpegs = features.pop('frames_jpeg')[0]  # train sampling gives one clip: (1, T) -> (T,)
  shape = tf.image.extract_jpeg_shape(jpegs[0])
  height, width = shape[0], shape[1]
  window = integer_window(*box_fn(height, width, seed), height, width)
  crops = _decode_each(jpegs, lambda b: tf.image.decode_and_crop_jpeg(
      b, window, channels=3, dct_method=records.JPEG_DCT_METHOD))
  if not resize_on_device:
    features['video'] = host_resize(crops, crop_size, resize_filter=resize_filter)[None]
    return features
  fits = tf.logical_and(window[2] <= crop_size, window[3] <= crop_size)
  canvas = tf.cond(
      fits,
      lambda: tf.pad(crops, [[0, 0], [0, crop_size - window[2]], [0, crop_size - window[3]],
                             [0, 0]]),
      lambda: host_resize(crops, crop_size, resize_filter=resize_filter))
  features['video'] = tf.ensure_shape(canvas, [None, crop_size, crop_size, 3])[None]
  features['crop_hw'] = tf.where(fits, window[2:], tf.constant([crop_size, crop_size]))
  features['flip'] = tf.constant(False)
  return features


def integer_window(y, x, h, w, height, width) -> tf.Tensor:
  """A float box rounded to an in-bounds [y, x, h, w] int32 crop window of at least 1x1."""
  h = tf.clip_by_value(tf.cast(tf.round(tf.cast(h, tf.float32)), tf.int32), 1, height)
  w = tf.clip_by_value(tf.cast(tf.round(tf.cast(w, tf.float32)), tf.int32), 1, width)
  y = tf.clip_by_value(tf.cast(tf.round(tf.cast(y, tf.float32)), tf.int32), 0, height - h)
  x = tf.clip_by_value(tf.cast(tf.round(tf.cast(x, tf.float32)), tf.int32), 0, width - w)
  return tf.stack([y, x, h, w])


def to_pixels(video: tf.Tensor) -> tf.Tensor:
  """Resampled float pixels (a convex mix of [0, 255] values) rounded to uint8."""
  return tf.cast(video + 0.5, tf.uint8)


# ----------------------------------------------------------------------------- train crops
@CROP_BOXES.register('short_side_jitter')
def short_side_jitter_box(height, width, seed, data):
  """PySlowFast: short side scaled to a random size in [train_min_scale, train_max_scale], then
  a random crop_size square; expressed as the square of side crop_size / scale in source
  pixels."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  height = tf.cast(height, tf.float32)
  width = tf.cast(width, tf.float32)
  short_side = tf.cast(tf.random.stateless_uniform(
      [], seeds[0], data.train_min_scale, data.train_max_scale + 1, dtype=tf.int32), tf.float32)
  ratio = short_side / tf.minimum(height, width)
  crop_h = tf.minimum(data.crop_size / ratio, height)
  crop_w = tf.minimum(data.crop_size / ratio, width)
  y = tf.random.stateless_uniform([], seeds[1]) * (height - crop_h)
  x = tf.random.stateless_uniform([], seeds[2]) * (width - crop_w)
  return y, x, crop_h, crop_w


@CROP_BOXES.register('inception')
def inception_box(height, width, seed, data, max_attempts: int = 10):
  """Inception-style random resized crop: area in `inception_area_range` of the frame, aspect
  ratio (w/h) in `inception_aspect_range`; the whole frame when no box fits."""
  area_range = tuple(data.inception_area_range)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.stack([height, width, 3]), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=float(area_range[0]),
      aspect_ratio_range=tuple(data.inception_aspect_range), area_range=area_range,
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  return begin[0], begin[1], size[0], size[1]


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


@CROP_BOXES.register('tsm_multiscale')
def tsm_multiscale_box(height, width, seed, data):
  """TSM / TSN multi-scale crop: crop height and width are each one of `tsm_scales` x the short
  side (sizes within 3 px of crop_size snap to it), their scale indices at most
  `tsm_max_distort` apart; the crop sits at a random position of the fixed grid
  (`tsm_offsets`, 13 positions with `tsm_more_fix_crop`)."""
  scales = tuple(data.tsm_scales)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  base = tf.cast(tf.minimum(height, width), tf.float32)
  sizes = tf.cast(base * tf.constant(scales, tf.float32), tf.int32)
  sizes = tf.where(tf.abs(sizes - data.crop_size) < 3, data.crop_size, sizes)
  pairs = [(i, j) for i in range(len(scales)) for j in range(len(scales))
           if abs(i - j) <= data.tsm_max_distort]
  choice = tf.random.stateless_uniform([], seeds[0], 0, len(pairs), dtype=tf.int32)
  pair = tf.gather(tf.constant(pairs, tf.int32), choice)
  crop_h = tf.minimum(tf.gather(sizes, pair[0]), height)
  crop_w = tf.minimum(tf.gather(sizes, pair[1]), width)
  offsets = tsm_offsets(height, width, crop_h, crop_w, data.tsm_more_fix_crop)
  position = tf.random.stateless_uniform([], seeds[1], 0, tf.shape(offsets)[0], dtype=tf.int32)
  y, x = offsets[position][0], offsets[position][1]
  return y, x, crop_h, crop_w


def train_box_fn(data_config):
  """The crop-box sampler named by `config.data.train_crop`: (height, width, seed) -> box."""
  box = CROP_BOXES.get(data_config.train_crop)
  return lambda height, width, seed: box(height, width, seed, data_config)


# ----------------------------------------------------------------------------- augmentations
def flip_rows(frames: tf.Tensor) -> tf.Tensor:
  """Mirrors (..., H, W, C) frames left-right; reversing the (N * H, W, C) view is about twice
  as fast on the CPU as reversing axis -2 of the whole tensor."""
  shape = tf.shape(frames)
  rows = tf.reshape(frames, tf.concat([[-1], shape[-2:]], axis=0))
  return tf.reshape(tf.reverse(rows, axis=[1]), shape)


@AUGMENTATIONS.register('random_flip')
def random_flip(features: Features, data, seed: tf.Tensor) -> Features:
  """Horizontal flip with probability 1/2 (not for direction-sensitive sets such as SSv2 or
  the synthetic motion demo). Clips finished on the device only get the 'flip' decision."""
  del data
  do_flip = tf.random.stateless_uniform([], seed) < 0.5
  if 'flip' in features:
    features['flip'] = do_flip
  else:
    features['video'] = tf.cond(do_flip, lambda: flip_rows(features['video']),
                                lambda: features['video'])
  return features


# Words of a class name that tell a motion's direction apart from its mirror image.
DIRECTION_WORDS = ('left', 'right', 'leftward', 'leftwards', 'rightward', 'rightwards',
                   'clockwise', 'anticlockwise', 'counterclockwise')


def names_a_direction(name: str) -> bool:
  """Whether class `name` holds a direction word, however its words are joined ('Swiping Left',
  'swipe_left', 'SwipeLeft', 'counter-clockwise'; not 'Upright')."""
  words = re.findall(r'[A-Z]?[a-z]+|[A-Z]+(?![a-z])', name)
  return any(word.lower() in DIRECTION_WORDS for word in words)


def mirrored_directions_warning(classes: Sequence[str], data_config) -> Optional[str]:
  """A line when `random_flip` is among the train augmentations and class names name a
  direction (left, right, clockwise): a mirrored clip of 'swiping left' shows a swipe to the
  right and keeps the label 'swiping left'. None otherwise."""
  if 'random_flip' not in tuple(data_config.train_augmentations):
    return None
  named = [name for name in classes if names_a_direction(name)]
  if not named:
    return None
  kept = [name for name in data_config.train_augmentations if name != 'random_flip']
  return (f"config.data.train_augmentations holds 'random_flip', which mirrors half the clips "
          f'left to right, and {len(named)} of the {len(classes)} classes name a direction '
          f"({errors.first_few([repr(n) for n in named])}): a mirrored clip keeps its label "
          'though it shows the other direction. Where these classes are told apart by '
          f'direction, train with --config.data.train_augmentations="{tuple(kept)}".')


def augment(features: Features, data_config, seed: tf.Tensor) -> Features:
  """Applies every augmentation named in `config.data.train_augmentations`, in order."""
  names = tuple(data_config.train_augmentations)
  seeds = tf.random.experimental.stateless_split(seed, max(len(names), 1))
  for index, name in enumerate(names):
    features = AUGMENTATIONS.get(name)(features, data_config, seeds[index])
  return features


# ----------------------------------------------------------------------------- test views
def resize_short_side(video: tf.Tensor, short_side: int, *, resize_filter: str) -> tf.Tensor:
  """Resizes (..., H, W, 3) frames so that min(H, W) == short_side (with the RESIZE_FILTERS
  filter named); the long side becomes floor(long * short_side / short), as PySlowFast and
  torchvision compute it."""
  shape = tf.shape(video)
  height, width = shape[-3], shape[-2]
  short = tf.minimum(height, width)
  new_h = tf.where(height == short, short_side, height * short_side // short)
  new_w = tf.where(width == short, short_side, width * short_side // short)
  flat = tf.reshape(video, tf.concat([[-1], shape[-3:]], axis=0))
  resized = RESIZE_FILTERS.get(resize_filter)(tf.cast(flat, tf.float32), [new_h, new_w])
  return tf.reshape(resized, tf.concat([shape[:-3], [new_h, new_w, 3]], axis=0))


TEST_CROP_COUNTS = (1, 3)  # a centre crop, or PySlowFast's three along the long side


def check_test_crops(num_crops: int, rounding: str) -> None:
  if num_crops not in TEST_CROP_COUNTS:
    raise ops.UnknownOpError(f'config.data.eval_num_crops must be 1 or 3, got {num_crops}.')
  CENTRE_ROUNDINGS.get(rounding)


def check_crop_sizes(data_config, *, train: bool) -> None:
  """Fails, before any reading, where a `train` (else test) crop is larger than the frame it is
  cut from: tf's slices then start from the end and cut strips, and a jitter below the crop
  squashes whole frames to squares (PySlowFast's crops fail there too)."""
  data = data_config
  if not train and data.eval_crop_size > data.eval_short_side:
    raise errors.SettingError(
        f'config.data.eval_crop_size={data.eval_crop_size} is larger than '
        f'config.data.eval_short_side={data.eval_short_side}, the size test crops are cut from: '
        'use a crop no larger than the short side.')
  if train and data.train_crop == 'short_side_jitter':
    if data.train_max_scale < data.train_min_scale:
      raise errors.SettingError(
          f'config.data.train_max_scale={data.train_max_scale} is smaller than '
          f'config.data.train_min_scale={data.train_min_scale}: the short side jitters between '
          'the two.')
    if data.train_min_scale < data.crop_size:
      raise errors.SettingError(
          f'config.data.train_min_scale={data.train_min_scale} is smaller than '
          f'config.data.crop_size={data.crop_size}: frames resized to that short side cannot '
          'hold the crop (whole frames would be squashed to squares instead); use a '
          'train_min_scale of at least the crop size.')
  if train and data.train_crop == 'inception':
    (area_low, area_high), (aspect_low, aspect_high) = (data.inception_area_range,
                                                        data.inception_aspect_range)
    # A reversed or negative range crops what no range would (or fails inside TensorFlow).
    if not 0 < area_low <= area_high <= 1:
      raise errors.SettingError(
          f'config.data.inception_area_range={tuple(data.inception_area_range)} must be (low, '
          'high) with 0 < low <= high <= 1: the share of the frame a crop covers.')
    if not 0 < aspect_low <= aspect_high:
      raise errors.SettingError(
          f'config.data.inception_aspect_range={tuple(data.inception_aspect_range)} must be '
          '(low, high) with 0 < low <= high: the width / height ratios a crop takes.')


def spatial_test_crops(features: Features, short_side: int, crop_size: int,
                       num_crops: int, rounding: str, resize_filter: str) -> Features:
  """Test views: resize short side (`resize_filter`, a RESIZE_FILTERS name), then 1 centre crop
  or 3 crops along the long side (left/centre/right or top/centre/bottom; PySlowFast's
  uniform_crop), the centre offset rounded as `rounding` (a CENTRE_ROUNDINGS name) says.

  (clips, T, H, W, 3) -> (clips * num_crops, T, crop, crop, 3), clip-major.
  """
  check_test_crops(num_crops, rounding)
  video = resize_short_side(features['video'], short_side, resize_filter=resize_filter)
  height, width = tf.shape(video)[2], tf.shape(video)[3]
  centre = CENTRE_ROUNDINGS.get(rounding)
  centre_y = centre(height - crop_size)
  centre_x = centre(width - crop_size)
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


def eval_views(features: Features, data_config) -> Features:
  """Decodes the sampled test clips and cuts their spatial views: uint8 (V, T, c, c, 3)."""
  features = decode_jpeg_frames(features)
  features = spatial_test_crops(features, data_config.eval_short_side,
                                data_config.eval_crop_size, data_config.eval_num_crops,
                                data_config.eval_crop_rounding, data_config.resize_filter)
  features['video'] = to_pixels(features['video'])
  return features


def train_clip(features: Features, data_config, seed: tf.Tensor) -> Features:
  """Decodes the sampled train clip inside its crop box and augments it: uint8
  (1, T, crop, crop, 3) (plus 'crop_hw' and 'flip' with `train_resize_on_device`)."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  features = decode_crop_resize(features, train_box_fn(data_config), data_config.crop_size,
                                seeds[0], resize_filter=data_config.resize_filter,
                                resize_on_device=data_config.train_resize_on_device)
  return augment(features, data_config, seeds[1])
