"""Temporal shift semantics on hand-made tensors, and where the TSM backbones shift."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salinet_jax.models import mobilenet_v2
from salinet_jax.models import resnet2d
from salinet_jax.models import tsm


def _hand_made(videos=2, frames=3, channels=16):
  """value = 100 * video + 10 * (frame + 1) + channel / 100: every entry says where it came from."""
  v, t, c = np.meshgrid(np.arange(videos), np.arange(frames), np.arange(channels), indexing='ij')
  return (100 * v + 10 * (t + 1) + c / 100).astype(np.float32)


def test_shift_moves_one_eighth_each_way_with_zeros_at_the_ends():
  x = _hand_made()  # (2 videos, 3 frames, 16 channels): fold = 2
  out = np.asarray(tsm.shift_time_axis(jnp.asarray(x), fold_div=8, axis=1))
  for v in range(2):
    for t in range(3):
      for c in range(16):
        if c < 2:  # looks one frame ahead
          expected = x[v, t + 1, c] if t + 1 < 3 else 0.0
        elif c < 4:  # looks one frame back
          expected = x[v, t - 1, c] if t >= 1 else 0.0
        else:
          expected = x[v, t, c]
        assert out[v, t, c] == expected, (v, t, c)


def test_flat_frame_batch_never_mixes_videos():
  x = _hand_made(videos=3, frames=4, channels=8)  # fold = 1
  frames = np.broadcast_to(x[:, :, None, None, :], (3, 4, 2, 2, 8)).reshape(12, 2, 2, 8)
  out = np.asarray(tsm.temporal_shift(jnp.asarray(frames), num_segments=4, fold_div=8))
  out = out.reshape(3, 4, 2, 2, 8)[:, :, 0, 0]
  np.testing.assert_array_equal(out[:, :-1, 0], x[:, 1:, 0])
  np.testing.assert_array_equal(out[:, -1, 0], 0.0)  # last frame: nothing ahead, not the next video
  np.testing.assert_array_equal(out[:, 1:, 1], x[:, :-1, 1])
  np.testing.assert_array_equal(out[:, 0, 1], 0.0)  # first frame: nothing behind
  np.testing.assert_array_equal(out[..., 2:], x[..., 2:])


def test_mobilenet_v2_shifts_the_residual_expansion_blocks():
  shifted = [spec.index for spec in mobilenet_v2.block_specs() if spec.shifts]
  assert shifted == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


@pytest.mark.parametrize('depth, every', [(50, 1), (101, 2), (152, 2)])
def test_resnets_shift_the_blocks_tsm_shifts(depth, every, monkeypatch):
  """TSM's 'blockres' shifts conv1's input in every residual block, and in every second one of
  each stage (blocks 0, 2, 4, ...) once layer3 has 23 blocks or more (ResNet-101/152): the
  converted TSM-R101/152 checkpoints were trained so. Traced only, so the deep nets cost little."""
  shifted, calls = [], []
  real_shift = tsm.temporal_shift

  def recording_shift(x, num_segments, fold_div=tsm.DEFAULT_FOLD_DIV):
    shifted.append(calls[-1])
    return real_shift(x, num_segments, fold_div)

  def note_block(next_fun, args, kwargs, context):
    if isinstance(context.module, (resnet2d.Bottleneck, resnet2d.BasicBlock)):
      calls.append(context.module.name)
    return next_fun(*args, **kwargs)

  monkeypatch.setattr(tsm, 'temporal_shift', recording_shift)
  model = resnet2d.ResNet2D(depth=depth, width=2, num_segments=2)
  with nn.intercept_methods(note_block):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
  _, stage_sizes = resnet2d.DEPTHS[depth]
  assert len(calls) == sum(stage_sizes)
  assert shifted == [f'layer{stage + 1}_{block}' for stage, size in enumerate(stage_sizes)
                     for block in range(0, size, every)]
