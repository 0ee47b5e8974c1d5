"""Model inputs from pipeline batches, computed inside the jitted steps on the accelerator.

Batches arrive from data/pipeline.py with uint8 pixels. Here, train crops that the host left
unresized (a 'crop_hw' key, `config.data.train_resize_on_device`) are resized and flipped, the
normalisation named by `config.data.normalization` is applied (XLA fuses it into the first
layer), and padded variable-length videos (S2DNet) give the model their valid-frame counts.
Nothing here imports TensorFlow: it is JAX code that runs in the step.
"""

from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from salinet_jax import errors

NORMALIZATION_PRESETS = {
    # PySlowFast Kinetics convention (pixels / 255 first).
    'kinetics': ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def normalization(data_config) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  """(mean, std) per channel of the preset `config.data.normalization`, for [0, 1] pixels."""
  if data_config.normalization not in NORMALIZATION_PRESETS:
    raise errors.ConfigError(f'config.data.normalization must be one of {sorted(NORMALIZATION_PRESETS)}, '
                     f'got {data_config.normalization!r}.')
  return NORMALIZATION_PRESETS[data_config.normalization]


def described_normalization(name: str) -> str:
  """`'NAME' (mean M, std S)` of a preset, for messages; the quoted name alone where `name`
  is no preset."""
  if name not in NORMALIZATION_PRESETS:
    return repr(name)
  mean, std = NORMALIZATION_PRESETS[name]
  return f'{name!r} (mean {mean}, std {std})'


def normalize_on_device(video: jnp.ndarray, data_config,
                        frame_mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """The pipeline's last op, run inside the jitted steps: uint8 (or float) pixels ->
  (pixels / 255 - mean) / std as float32, one fused multiply-add.

  `video` is (B, [V,] T, H, W, 3); with `frame_mask` (B, T), padded frames stay exactly zero, as
  if they had been padded after normalisation.
  """
  mean, std = normalization(data_config)
  scale = np.asarray([1.0 / (255.0 * s) for s in std], np.float32)
  offset = np.asarray([-m / s for m, s in zip(mean, std)], np.float32)
  normalized = video.astype(jnp.float32) * scale + offset
  if frame_mask is not None:
    views = video.ndim - 5
    mask = frame_mask.reshape(frame_mask.shape[:1] + (1,) * views + frame_mask.shape[1:2]
                              + (1, 1, 1))
    normalized = jnp.where(mask, normalized, 0.0)
  return normalized


def _bilinear_taps(in_sizes: jnp.ndarray, out_size: int):
  """Per-row (lower index, upper index, upper weight), each (B, out_size), of TF's bilinear
  resize with half-pixel centres from `in_sizes` (B,) pixels to `out_size` pixels."""
  in_sizes = in_sizes.astype(jnp.int32)
  scale = in_sizes.astype(jnp.float32) / out_size
  position = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale[:, None] - 0.5
  floor = jnp.floor(position)
  lower = jnp.maximum(floor.astype(jnp.int32), 0)
  upper = jnp.minimum(jnp.ceil(position).astype(jnp.int32), in_sizes[:, None] - 1)
  return lower, upper, position - floor


def resize_crops_on_device(video: jnp.ndarray, crop_hw: jnp.ndarray,
                           flip: jnp.ndarray) -> jnp.ndarray:
  """Finishes train crops made with `resize_on_device` (see data/augment.py `decode_crop_resize`),
  inside the jitted step: the top-left `crop_hw` window of each (T, S, S, 3) canvas is resized
  bilinearly to S x S (the same sampling as tf.image.resize) and mirrored where `flip`. Only
  windows no larger than S come here, enlarged, which every data.augment.RESIZE_FILTERS filter
  does alike.

  video (B, T, S, S, 3) uint8, crop_hw (B, 2) int, flip (B,) bool -> float32 pixels in [0, 255],
  not rounded to uint8. Two-tap gathers and lerps, exact in float32 on any backend.
  """
  size = video.shape[-2]
  row_lo, row_hi, row_w = _bilinear_taps(crop_hw[:, 0], size)
  col_lo, col_hi, col_w = _bilinear_taps(crop_hw[:, 1], size)
  mirror = lambda taps: jnp.where(flip[:, None], taps[:, ::-1], taps)
  col_lo, col_hi, col_w = mirror(col_lo), mirror(col_hi), mirror(col_w)

  def resize_one(frames, row_lo, row_hi, row_w, col_lo, col_hi, col_w):
    frames = frames.astype(jnp.float32)
    left, right = frames[:, :, col_lo], frames[:, :, col_hi]
    rows = left + (right - left) * col_w[None, None, :, None]
    top, bottom = rows[:, row_lo], rows[:, row_hi]
    return top + (bottom - top) * row_w[None, :, None, None]

  return jax.vmap(resize_one)(video, row_lo, row_hi, row_w, col_lo, col_hi, col_w)


def clip_shape(data_config, batch_size: int = 1) -> Tuple[int, ...]:
  """(B, T, H, W, 3) of a batch of training clips: the one home of the model's input shape."""
  return (batch_size, data_config.num_frames, data_config.crop_size, data_config.crop_size, 3)


def model_inputs(batch: Mapping[str, Any], data_config) -> Tuple[jnp.ndarray, Dict[str, Any]]:
  """(normalised float32 video, keyword inputs) of a batch; video keeps its (B, [V,] T, ...) shape.

  The keyword inputs hold 'num_valid' (B,) int32 when the batch has a 'frame_mask' (B, T).
  """
  frame_mask = batch.get('frame_mask')
  video = batch['video']
  if 'crop_hw' in batch:
    video = resize_crops_on_device(video, batch['crop_hw'], batch['flip'])
  video = normalize_on_device(video, data_config, frame_mask)
  kwargs = {}
  if frame_mask is not None:
    kwargs['num_valid'] = jnp.sum(frame_mask, axis=-1).astype(jnp.int32)
  return video, kwargs
