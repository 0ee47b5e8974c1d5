"""S2DNet samplers: the vectorised Gaussian detail sampler against a per-video loop written from the
spec formulas (values and gradients, mixed video lengths), the warm-up override, the synopsis
frame choice and PyTorch's nearest resize rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salinet_jax.models import sampler as sampler_lib

OUT_FRAMES = 4
OUT_SIZE = 6


def _gaussian_rows(centers, length, variance):
  """Row j: exp(-(a - centers[j])^2 / (2 variance)) over a < length, divided by max(sum, 1e-7)."""
  rows = []
  for center in centers:
    w = jnp.exp(-jnp.square(jnp.arange(length, dtype=jnp.float32) - center) / (2 * variance))
    rows.append(w / jnp.maximum(jnp.sum(w), 1e-7))
  return jnp.stack(rows)


def naive_detail_sample(video, num_valid, params, fixed=False, variance=1.0):
  """One video and one output frame at a time; reads only each video's valid frames."""
  _, _, height, width, _ = video.shape
  videos = []
  for b in range(video.shape[0]):
    n = int(num_valid[b])
    clip = video[b, :n].astype(jnp.float32)
    o_t, s_t = params.temporal_offset[b], params.temporal_stride[b]
    if fixed:
      o_t, s_t = 0.0, 0.0
    center_t = jnp.tanh(o_t) * (n - 1) / 2 + (n - 1) / 2
    delta_t = n / (OUT_FRAMES - 1) * jnp.exp(s_t)
    mu_t = [center_t + (i - (OUT_FRAMES - 1) / 2) * delta_t for i in range(OUT_FRAMES)]
    f_t = _gaussian_rows(mu_t, n, variance)  # (T', n)
    frames = []
    for i in range(OUT_FRAMES):
      frame = jnp.tensordot(f_t[i], clip, axes=1)  # (H, W, C)
      windows = []
      for axis, size in ((0, width), (1, height)):  # x then y
        if fixed:
          center, delta = (size - 1) / 2, 1.0
        else:
          center = jnp.tanh(params.spatial_offset[b, i, axis]) * (size - 1) / 2 + (size - 1) / 2
          delta = size / (OUT_SIZE - 1) * jnp.exp(params.spatial_stride[b, i, axis])
        mu = [center + (j - (OUT_SIZE - 1) / 2) * delta for j in range(OUT_SIZE)]
        windows.append(_gaussian_rows(mu, size, variance))
      f_x, f_y = windows
      frames.append(jnp.einsum('ja,abc,kb->jkc', f_y, frame, f_x))
    videos.append(jnp.stack(frames))
  return jnp.stack(videos)


def _random_inputs(num_valid, frames=9, height=10, width=7, seed=0):
  """Non-square frames (H != W), so that x and y (width and height) cannot be swapped unseen."""
  keys = jax.random.split(jax.random.key(seed), 6)
  batch = len(num_valid)
  video = jax.random.normal(keys[0], (batch, frames, height, width, 3))
  valid = np.arange(frames)[None, :] < np.asarray(num_valid)[:, None]
  video = jnp.where(valid[:, :, None, None, None], video, 1e4)  # loud padding: must never leak
  params = sampler_lib.SamplingParams(
      jax.random.normal(keys[1], (batch,)), 0.3 * jax.random.normal(keys[2], (batch,)),
      jax.random.normal(keys[3], (batch, OUT_FRAMES, 2)),
      0.3 * jax.random.normal(keys[4], (batch, OUT_FRAMES, 2)))
  weights = jax.random.normal(keys[5], (batch, OUT_FRAMES, OUT_SIZE, OUT_SIZE, 3))
  return video, jnp.asarray(num_valid, jnp.int32), params, weights


@pytest.mark.parametrize('fixed', [False, True])
def test_vectorised_sampler_equals_per_video_loop(fixed):
  num_valid = [9, 5, 2]  # different lengths in one batch, padded to 9
  video, counts, params, weights = _random_inputs(num_valid)

  def vectorised(video, params):
    out, _ = sampler_lib.gaussian_detail_sample(video, counts, params, OUT_FRAMES, OUT_SIZE,
                                                fixed=fixed)
    return out

  def naive(video, params):
    return naive_detail_sample(video, num_valid, params, fixed=fixed)

  out = jax.jit(vectorised)(video, params)
  expected = jax.jit(naive)(video, params)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  loss = lambda fn: lambda v, p: jnp.sum(fn(v, p) * weights)  # noqa: E731
  grads = jax.jit(jax.grad(loss(vectorised), argnums=(0, 1)))(video, params)
  expected_grads = jax.jit(jax.grad(loss(naive), argnums=(0, 1)))(video, params)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  video_grad = np.asarray(grads[0])
  for b, n in enumerate(num_valid):
    assert np.all(video_grad[b, n:] == 0)  # padded frames: no gradient
    assert np.any(video_grad[b, :n] != 0)
  if fixed:
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads[1]))
  else:
    assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads[1]))


def test_padding_content_never_matters():
  video, counts, params, _ = _random_inputs([9, 4])
  garbage = video.at[1, 4:].set(jnp.nan)
  out, _ = sampler_lib.gaussian_detail_sample(video, counts, params, OUT_FRAMES, OUT_SIZE)
  out_nan, _ = sampler_lib.gaussian_detail_sample(garbage, counts, params, OUT_FRAMES, OUT_SIZE)
  np.testing.assert_array_equal(out, out_nan)


def test_warmup_override_is_the_centre_crop_at_native_resolution():
  frame = jax.random.uniform(jax.random.key(1), (224, 224, 3))
  video = jnp.broadcast_to(frame, (1, 5, 224, 224, 3))  # static video: time blending is a no-op
  counts = jnp.array([5])
  random_params = _random_inputs([5])[2]
  params = sampler_lib.SamplingParams(*(p[:1] for p in random_params))
  params = params._replace(spatial_offset=jnp.zeros((1, 16, 2)),
                           spatial_stride=jnp.zeros((1, 16, 2)))

  # A vanishing variance leaves no blur at all: exactly the central 112 x 112 pixels.
  sharp, info = sampler_lib.gaussian_detail_sample(video, counts, params, 16, 112, fixed=True,
                                                   spatial_variance=1e-3)
  crop = frame[56:168, 56:168]
  for i in range(16):
    np.testing.assert_allclose(sharp[0, i], crop, atol=1e-5)
  np.testing.assert_allclose(info['center_x'], 111.5)
  np.testing.assert_allclose(info['center_y'], 111.5)
  np.testing.assert_allclose(info['delta_x'], 1.0)
  np.testing.assert_allclose(info['delta_y'], 1.0)

  # Variance 1: the same crop blurred by a normalised variance-1 Gaussian centred on each pixel.
  blurred, _ = sampler_lib.gaussian_detail_sample(video, counts, params, 16, 112, fixed=True)
  kernel = _gaussian_rows(jnp.arange(112, dtype=jnp.float32) + 56, 224, 1.0)  # (112, 224)
  expected = jnp.einsum('ja,abc,kb->jkc', kernel, frame, kernel)
  np.testing.assert_allclose(blurred[0, 3], expected, rtol=1e-5, atol=1e-5)
  # ... whose weights sit within a few pixels of the crop: it is the crop region, not a resize.
  assert float(jnp.sum(kernel[:, :50])) < 1e-6 and float(jnp.sum(kernel[:, 174:])) < 1e-6


def test_warmup_override_uses_uniform_temporal_centres():
  num_valid = [150, 37, 16]
  video = jnp.zeros((3, 150, 8, 8, 3))
  params = sampler_lib.SamplingParams(jnp.full((3,), 2.0), jnp.full((3,), -1.0),
                                      jnp.ones((3, 16, 2)), jnp.ones((3, 16, 2)))
  _, info = sampler_lib.gaussian_detail_sample(video, jnp.array(num_valid), params, 16, 4,
                                               fixed=True)
  for b, n in enumerate(num_valid):
    expected = [(n - 1) / 2 + (i - 7.5) * n / 15 for i in range(16)]
    np.testing.assert_allclose(info['mu_t'][b], expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(info['delta_t'][b], n / 15, rtol=1e-6)


def test_synopsis_frames_are_floor_linspace_of_the_valid_frames():
  counts = jnp.array([150, 16, 23, 1, 0])  # 0 (a padded eval row) is read as 1
  indices = np.asarray(sampler_lib.uniform_frame_indices(
      sampler_lib.valid_counts(counts, 5, 150), 16))
  for row, n in zip(indices, [150, 16, 23, 1, 1]):
    expected = [math.floor(i * (n - 1) / 15) for i in range(16)]
    assert row.tolist() == expected
  assert indices[0].tolist() == np.floor(np.linspace(0, 149, 16)).astype(int).tolist()


def test_synopsis_frames_are_each_videos_own_frames():
  """Frame t of video b is video b's frame indices[b, t]: not another video's index, not padding
  (indices right but gathered with video 0's passed the tests)."""
  counts = jnp.array([12, 7, 3])
  video = jnp.arange(3 * 12, dtype=jnp.float32).reshape(3, 12, 1, 1, 1)  # value = 12 b + frame
  video = jnp.broadcast_to(video, (3, 12, 4, 4, 1))
  frames, indices = sampler_lib.synopsis_frames(video, counts, 4, 4)
  np.testing.assert_array_equal(indices, [[0, 3, 7, 11], [0, 2, 4, 6], [0, 0, 1, 2]])
  np.testing.assert_array_equal(frames[:, :, 0, 0, 0], 12 * np.arange(3)[:, None] + indices)


def test_nearest_resize_uses_pytorch_legacy_rule():
  src = sampler_lib.nearest_resize_indices(224, 144)
  assert src.tolist() == [int(np.floor(np.float32(d) * np.float32(224 / 144))) for d in range(144)]
  assert src[:8].tolist() == [0, 1, 3, 4, 6, 7, 9, 10]
  assert src[-1] == 222
  video = jnp.arange(2 * 3 * 224 * 224, dtype=jnp.float32).reshape(1, 2, 224, 224, 3)
  frames, _ = sampler_lib.synopsis_frames(video, jnp.array([2]), 2, 144)
  np.testing.assert_array_equal(frames[0, 1, 5, 9], video[0, 1, src[5], src[9]])
