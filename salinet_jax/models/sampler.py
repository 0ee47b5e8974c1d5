"""S2DNet's frame samplers: the uniform synopsis sampler and the Gaussian detail sampler.

Both read a batch of videos padded to a common length, (B, N, H, W, C), with a valid-frame count
per video, (B,), and never look at padded frames. Everything is vectorised over the batch (no
per-video Python loops), so one jitted function serves videos of any mix of lengths.

Synopsis (SNet input): frames floor(linspace(0, n - 1, T)) of each video (n = its valid count),
nearest-neighbour resized with PyTorch's legacy rule (src = floor(dst * in / out)).

Detail (DNet input), DRAW-style differentiable Gaussian filterbanks (Gregor et al. 2015), temporal
first, then spatial per output frame; all in float32 whatever the model's compute dtype (float64
when the video or the sampling parameters are float64, for parity checks under `jax_enable_x64`):

    c_t = tanh(o_t) (n-1)/2 + (n-1)/2          delta_t = n / (T'-1) * exp(s_t)
    mu_i = c_t + (i - (T'-1)/2) delta_t        F_t[k, i] ~ exp(-(k - mu_i)^2 / (2 var)), k < n
    frame_i = sum_k F_t[k, i] X[k]              (each column normalised by max(sum_k, 1e-7))

    c_x = tanh(dx_i) (W-1)/2 + (W-1)/2         delta_x = W / (w'-1) * exp(sx_i)       (same for y)
    mu_j = c_x + (j - (w'-1)/2) delta_x        F_x[j, a] ~ exp(-(a - mu_j)^2 / (2 var))
    Y_i = F_y frame_i F_x^T                     (rows normalised over a)

Out-of-range centres fade to ~0 (soft zero padding). `fixed=True` is the warm-up override: o_t = 0
and s_t = 0 (uniform temporal centres), c_x = (W-1)/2, c_y = (H-1)/2 and a final stride of exactly
1 pixel, i.e. the central h' x w' crop at native resolution (blurred by the variance-1 Gaussian).
"""

from typing import Any, Dict, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from salinet_jax.models import layers

# Floor of a filterbank's normaliser (the reference's eps tensor).
NORMALISER_EPS = 1e-7
# Variance of the Gaussian kernels (the reference's MANUAL_T_SIGMA / MANUAL_S_SIGMA, which are
# used as variances: exp(-(x - mu)^2 / (2 sigma))).
DEFAULT_VARIANCE = 1.0
# Scale of the initial strides relative to covering the whole input (DEFAULT_TIME/SPACE_RANGE).
DEFAULT_RANGE = 1.0
# True float32 products (no TF32/bf16 passes on accelerators), like the reference's sampler.
FLOAT32_PRECISION = jax.lax.Precision.HIGHEST


class SamplingParams(NamedTuple):
  """Raw f_theta outputs (before tanh / exp), float32 (or float64).

  temporal_offset, temporal_stride: (B,); spatial_offset, spatial_stride: (B, T', 2), last axis
  (x, y), one pair per output frame.
  """
  temporal_offset: jnp.ndarray
  temporal_stride: jnp.ndarray
  spatial_offset: jnp.ndarray
  spatial_stride: jnp.ndarray


def valid_counts(num_valid: Optional[jnp.ndarray], batch: int, frames: int) -> jnp.ndarray:
  """(B,) int32 valid-frame counts clipped to [1, frames]; all `frames` when `num_valid` is None.

  (A padded row of an eval batch may say 0 frames; it then reads its first, all-zero frame.)
  """
  if num_valid is None:
    return jnp.full((batch,), frames, jnp.int32)
  return jnp.clip(jnp.asarray(num_valid, jnp.int32).reshape((batch,)), 1, frames)


# ----------------------------------------------------------------------------------------------
# Synopsis: uniform frames, PyTorch nearest resize.
# ----------------------------------------------------------------------------------------------


def uniform_frame_indices(num_valid: jnp.ndarray, num_out: int) -> jnp.ndarray:
  """(B, num_out) int32 indices floor(linspace(0, n - 1, num_out)) per video (exact integers)."""
  n = num_valid.astype(jnp.int32)[:, None]
  i = jnp.arange(num_out, dtype=jnp.int32)[None, :]
  if num_out == 1:
    return jnp.zeros_like(n + i)
  return (i * (n - 1)) // (num_out - 1)


def nearest_resize_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index per output index under PyTorch's legacy 'nearest' interpolation.

  PyTorch computes floor(dst * scale) in float32 with scale = float32(in / out), clamped to
  in - 1 (identity when the sizes are equal); reproduced here with NumPy float32.
  """
  if in_size == out_size:
    return np.arange(out_size)
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


def synopsis_frames(video: jnp.ndarray, num_valid: jnp.ndarray, num_frames: int,
                    size: int):
  """Uniformly sampled, nearest-resized frames (B, T, size, size, C) and their indices (B, T)."""
  indices = uniform_frame_indices(num_valid, num_frames)
  frames = jnp.take_along_axis(video, indices[:, :, None, None, None], axis=1)
  rows = nearest_resize_indices(video.shape[2], size)
  cols = nearest_resize_indices(video.shape[3], size)
  frames = frames[:, :, rows][:, :, :, cols]
  return frames, indices


# ----------------------------------------------------------------------------------------------
# Detail: Gaussian filterbanks.
# ----------------------------------------------------------------------------------------------


def gaussian_filterbank(centers: jnp.ndarray, length: int, variance: float,
                        valid: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Normalised Gaussian weights (..., K, length) of positions 0..length-1 around centers (..., K).

  `valid` (..., length) zeroes positions (padded frames) before normalising.
  """
  positions = jnp.arange(length, dtype=centers.dtype)
  weights = jnp.exp(-jnp.square(positions - centers[..., None]) / (2.0 * variance))
  if valid is not None:
    weights = weights * valid[..., None, :].astype(weights.dtype)
  return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), NORMALISER_EPS)


def temporal_grid(offset: jnp.ndarray, log_stride: jnp.ndarray, num_valid: jnp.ndarray,
                  out_frames: int, time_range: float = DEFAULT_RANGE):
  """Centres mu (B, T') and stride delta (B,) in frame units, from raw (B,) offset / log-stride."""
  n = num_valid.astype(offset.dtype)
  half = (n - 1.0) / 2.0
  center = jnp.tanh(offset) * half + half
  stride = time_range * n / (out_frames - 1) * jnp.exp(log_stride)
  steps = jnp.arange(out_frames, dtype=offset.dtype) - (out_frames - 1) / 2.0
  return center[:, None] + steps[None, :] * stride[:, None], stride


def spatial_grid(offset: jnp.ndarray, log_stride: jnp.ndarray, in_size: int, out_size: int,
                 fixed: bool, space_range: float = DEFAULT_RANGE):
  """Centres mu (..., out) in pixels, centre and stride (...), from raw per-frame offset/log-stride.

  `fixed`: the window centre is the image centre and the stride exactly one pixel.
  """
  half = (in_size - 1) / 2.0
  if fixed:
    center = jnp.full(offset.shape, half, offset.dtype)
    stride = jnp.ones(offset.shape, offset.dtype)
  else:
    center = jnp.tanh(offset) * half + half
    stride = space_range * in_size / (out_size - 1) * jnp.exp(log_stride)
  steps = jnp.arange(out_size, dtype=offset.dtype) - (out_size - 1) / 2.0
  return center[..., None] + steps * stride[..., None], center, stride


def fixed_params(params: SamplingParams) -> SamplingParams:
  """The warm-up override: zero offsets and log-strides (spatial stride is fixed downstream)."""
  return SamplingParams(*(jnp.zeros_like(p) for p in params))


def gaussian_detail_sample(video: jnp.ndarray, num_valid: jnp.ndarray, params: SamplingParams,
                           out_frames: int, out_size: int, *, fixed: bool = False,
                           temporal_variance: float = DEFAULT_VARIANCE,
                           spatial_variance: float = DEFAULT_VARIANCE,
                           time_range: float = DEFAULT_RANGE,
                           space_range: float = DEFAULT_RANGE,
                           precision: Any = FLOAT32_PRECISION):
  """Differentiable detail frames (B, T', out, out, C) and the window geometry.

  Computes in float32, or float64 when `video` or `params` are float64 (`layers.at_least_float32`).

  Args:
    video: (B, N, H, W, C), frames >= num_valid[b] of video b are padding and never read.
    num_valid: (B,) valid-frame counts.
    params: raw f_theta outputs (ignored, apart from their shapes, when `fixed`).
    out_frames, out_size: T' and h' = w'.
    fixed: the warm-up override (uniform temporal centres, central crop at 1-pixel stride).
    precision: of the filterbank products (full float32 by default).

  Returns (frames, info) with info: 'mu_t' (B, T') temporal centres, 'delta_t' (B,),
  'center_x', 'center_y', 'delta_x', 'delta_y' (B, T') in pixels of the input frames.
  """
  if out_frames < 2 or out_size < 2:
    raise ValueError('The detail sampler needs at least 2 output frames and 2 output pixels.')
  dtype = layers.at_least_float32(
      jnp.result_type(video.dtype, *(jnp.asarray(p).dtype for p in params)))
  video = video.astype(dtype)
  params = SamplingParams(*(jnp.asarray(p, dtype) for p in params))
  if fixed:
    params = fixed_params(params)
  _, frames, height, width, _ = video.shape
  num_valid = num_valid.astype(jnp.int32)

  mu_t, delta_t = temporal_grid(params.temporal_offset, params.temporal_stride, num_valid,
                                out_frames, time_range)
  valid = jnp.arange(frames)[None, :] < num_valid[:, None]
  f_t = gaussian_filterbank(mu_t, frames, temporal_variance, valid)  # (B, T', N)
  # Zero weight is not enough to ignore padding that holds NaN/Inf: clear it.
  video = jnp.where(valid[:, :, None, None, None], video, 0.0)
  sampled = jnp.einsum('bin,bnhwc->bihwc', f_t, video, precision=precision)

  mu_x, center_x, delta_x = spatial_grid(params.spatial_offset[..., 0],
                                         params.spatial_stride[..., 0], width, out_size, fixed,
                                         space_range)
  mu_y, center_y, delta_y = spatial_grid(params.spatial_offset[..., 1],
                                         params.spatial_stride[..., 1], height, out_size, fixed,
                                         space_range)
  f_x = gaussian_filterbank(mu_x, width, spatial_variance)  # (B, T', w', W)
  f_y = gaussian_filterbank(mu_y, height, spatial_variance)  # (B, T', h', H)
  sampled = jnp.einsum('bikw,bihwc->bihkc', f_x, sampled,  # W first, as the reference
                       precision=precision)
  sampled = jnp.einsum('bijh,bihkc->bijkc', f_y, sampled, precision=precision)
  info = {'mu_t': mu_t, 'delta_t': delta_t, 'center_x': center_x, 'center_y': center_y,
          'delta_x': delta_x, 'delta_y': delta_y}
  return sampled, info


class GaussianDetailSampler(nn.Module):
  """Parameter-free module around `gaussian_detail_sample` (its own FLOP group, >= float32).

  Attributes:
    num_frames: T', detail frames per video.
    size: h' = w', detail frame size.
    fixed: the warm-up override.
    temporal_variance, spatial_variance: Gaussian kernel variances.
  """
  num_frames: int = 16
  size: int = 112
  fixed: bool = False
  temporal_variance: float = DEFAULT_VARIANCE
  spatial_variance: float = DEFAULT_VARIANCE

  @nn.compact
  def __call__(self, video, num_valid, params: SamplingParams):
    return gaussian_detail_sample(video, num_valid, params, self.num_frames, self.size,
                                  fixed=self.fixed, temporal_variance=self.temporal_variance,
                                  spatial_variance=self.spatial_variance)


def sampler_aux(info: Dict[str, jnp.ndarray]) -> Dict[str, jnp.ndarray]:
  """The window geometry under 'sampler_*' keys, for the model's aux outputs."""
  return {f'sampler_{k}': v for k, v in info.items()}
