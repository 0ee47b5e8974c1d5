"""Temporal shift (TSM, Lin et al., ICCV 2019) as a parameter-free op on channels-last frames.

A 2D network run on the frames of several videos at once sees a (B*T, H, W, C) batch in which
each video's T frames ("segments") are consecutive. The shift lets neighbouring frames exchange
information at zero FLOPs: with fold = C // fold_div,

    out[t, ..., 0:fold]       = in[t + 1, ..., 0:fold]       (these channels look one frame ahead)
    out[t, ..., fold:2 fold]  = in[t - 1, ..., fold:2 fold]  (these look one frame back)
    out[t, ..., 2 fold:]      = in[t, ..., 2 fold:]          (unchanged)

with zeros where t + 1 or t - 1 falls outside the video (no wrap-around, no leakage between
videos). This is the TSM reference's out-of-place `TemporalShift.shift`.
"""

import jax.numpy as jnp

DEFAULT_FOLD_DIV = 8


def shift_time_axis(x: jnp.ndarray, fold_div: int = DEFAULT_FOLD_DIV, axis: int = 1) -> jnp.ndarray:
  """Temporal shift of `x` along `axis` (time), channels last; returns an array of x's shape."""
  channels = x.shape[-1]
  fold = channels // fold_div
  if fold == 0:
    return x
  axis = axis % x.ndim
  frames = x.shape[axis]

  def take(array, start, stop):
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return array[tuple(index)]

  def pad_time(array, before, after):
    widths = [(0, 0)] * array.ndim
    widths[axis] = (before, after)
    return jnp.pad(array, widths)

  ahead = pad_time(take(x[..., :fold], 1, frames), 0, 1)            # out[t] = in[t + 1]
  behind = pad_time(take(x[..., fold:2 * fold], 0, frames - 1), 1, 0)  # out[t] = in[t - 1]
  return jnp.concatenate([ahead, behind, x[..., 2 * fold:]], axis=-1)


def temporal_shift(x: jnp.ndarray, num_segments: int,
                   fold_div: int = DEFAULT_FOLD_DIV) -> jnp.ndarray:
  """Temporal shift of a (B*T, ..., C) frame batch of videos with `num_segments` frames each."""
  if x.shape[0] % num_segments:
    raise ValueError(f'Batch of {x.shape[0]} frames is not a multiple of {num_segments} segments.')
  videos = x.reshape((x.shape[0] // num_segments, num_segments) + x.shape[1:])
  return shift_time_axis(videos, fold_div, axis=1).reshape(x.shape)
