"""Shared layers: the CPU-friendly 3D convolution equals the native one, PyTorch padding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from salinet_jax import errors
from salinet_jax.models import build_model
from salinet_jax.models import layers


@pytest.mark.parametrize('kernel,strides,padding', [
    ((3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((3, 7, 7), (2, 2, 2), (1, 3, 3)),
    ((5, 1, 1), (1, 1, 1), (2, 0, 0)),
    ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
])
def test_frame_sum_conv_equals_native_conv(kernel, strides, padding):
  """Values, and the gradients of the parameters and of the input for a loss that weighs every
  output differently (a sum's all-ones output gradient would not see it permuted)."""
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 10, 3))
  native = layers.Conv3D(5, kernel, strides, padding, use_bias=True, impl='native')
  frame_sum = layers.Conv3D(5, kernel, strides, padding, use_bias=True, impl='frame_sum')
  variables = native.init(jax.random.key(1), x)
  expected = native.apply(variables, x)
  got = frame_sum.apply(variables, x)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-5)
  weights = jax.random.normal(jax.random.key(2), expected.shape)

  def gradients(conv):
    return jax.grad(lambda v, x: jnp.sum(conv.apply(v, x) * weights), argnums=(0, 1))(
        variables, x)

  grad_native, grad_frames = gradients(native), gradients(frame_sum)
  assert len(jax.tree.leaves(grad_native)) == 3  # kernel, bias and input
  for a, b in zip(jax.tree.leaves(grad_native), jax.tree.leaves(grad_frames)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_uses_symmetric_pytorch_padding():
  # Stride 2 on an even size: XLA's 'SAME' would pad (0, 1); PyTorch pads (1, 1).
  x = np.zeros((1, 1, 4, 4, 1), np.float32)
  x[0, 0, 0, 0, 0] = 1.0
  conv = layers.Conv3D(1, (1, 3, 3), (1, 2, 2), (0, 1, 1), impl='native')
  kernel = np.zeros((1, 3, 3, 1, 1), np.float32)
  kernel[0, 1, 1] = 1.0  # centre tap: output (0, 0) reads input (0, 0) only with pad 1 on top
  out = conv.apply({'params': {'kernel': kernel}}, x)
  assert out.shape == (1, 1, 2, 2, 1) and out[0, 0, 0, 0, 0] == 1.0


def test_unknown_conv_impl_is_rejected():
  with pytest.raises(ValueError, match="conv_impl must be"):
    layers.conv_impl_for_backend('im2col')


def test_max_pool_ignores_padding_and_avg_pool_counts_it():
  x = -np.ones((1, 1, 2, 2, 1), np.float32)
  assert float(layers.max_pool3d(x, (1, 3, 3), 1, (0, 1, 1)).max()) == -1.0
  np.testing.assert_allclose(layers.avg_pool3d(x, (1, 3, 3), 1, (0, 1, 1))[0, 0, 0, 0, 0], -4 / 9)


def _torch_bn_after_one_step(x_ncthw, weight, bias):
  """(output, running_mean, running_var) of torch.nn.BatchNorm3d after one training forward."""
  torch = pytest.importorskip('torch', reason='PyTorch is needed to compare BatchNorm statistics '
                              'with torch.nn.BatchNorm3d (pip install -r requirements-test.txt)')
  bn = torch.nn.BatchNorm3d(x_ncthw.shape[1], momentum=0.1, eps=1e-5).double()
  with torch.no_grad():
    bn.weight.copy_(torch.from_numpy(weight))
    bn.bias.copy_(torch.from_numpy(bias))
  out = bn.train()(torch.from_numpy(x_ncthw))
  return (out.detach().numpy(), bn.running_mean.numpy(), bn.running_var.numpy())


def _ours_after_one_step(x, weight, bias, group_size):
  variables = {'params': {'scale': weight, 'bias': bias},
               'batch_stats': {'mean': np.zeros(4), 'var': np.ones(4)}}
  with jax.enable_x64(True), layers.batch_norm_groups(group_size):
    bn = layers.BatchNorm(use_running_average=False, dtype=np.float64, param_dtype=np.float64)
    out, updates = bn.apply(variables, x, mutable=['batch_stats'])
  # As numpy arrays: arithmetic on them after the float64 block would truncate to float32.
  return np.asarray(out), jax.tree.map(np.asarray, updates['batch_stats'])


def test_batch_norm_running_variance_is_unbiased_as_in_pytorch():
  """Flax keeps the biased batch variance; torch (and this BatchNorm) the unbiased one, which
  matters for small groups (3 clips x 2 frames x 2 x 2 = 24 values per channel here)."""
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, (3, 2, 2, 2, 4))
  weight, bias = rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
  out, stats = _ours_after_one_step(x, weight, bias, group_size=0)
  torch_out, torch_mean, torch_var = _torch_bn_after_one_step(
      np.ascontiguousarray(np.moveaxis(x, -1, 1)), weight, bias)
  np.testing.assert_allclose(np.moveaxis(out, -1, 1), torch_out, atol=1e-10)
  np.testing.assert_allclose(stats['mean'], torch_mean, atol=1e-12)
  np.testing.assert_allclose(stats['var'], torch_var, atol=1e-12)
  biased = 0.9 + 0.1 * x.reshape(-1, 4).var(0)
  assert np.abs(stats['var'] - biased).min() > 1e-3  # the difference is real


def test_batch_norm_at_eval_normalises_with_its_running_statistics_as_pytorch():
  """The running-average branch against torch.nn.BatchNorm3d in eval mode (mutation audit: a
  mean added instead of subtracted, or epsilon dropped, passed this file; only the checkpoint
  parity tests saw them). Small variances make epsilon count."""
  torch = pytest.importorskip('torch', reason='PyTorch is needed to compare BatchNorm with '
                              'torch.nn.BatchNorm3d (pip install -r requirements-test.txt)')
  rng = np.random.default_rng(1)
  x = rng.normal(1.0, 0.05, (2, 2, 3, 3, 4))
  weight, bias = rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
  mean, var = np.array([0.9, 1.1, -0.5, 2.0]), np.array([1e-4, 3e-3, 0.5, 2.0])
  variables = {'params': {'scale': weight, 'bias': bias},
               'batch_stats': {'mean': mean, 'var': var}}
  with jax.enable_x64(True):
    bn = layers.BatchNorm(use_running_average=True, dtype=np.float64, param_dtype=np.float64)
    out = np.asarray(bn.apply(variables, x))
  torch_bn = torch.nn.BatchNorm3d(4, eps=1e-5).double().eval()
  with torch.no_grad():
    for name, value in (('weight', weight), ('bias', bias), ('running_mean', mean),
                        ('running_var', var)):
      getattr(torch_bn, name).copy_(torch.from_numpy(value))
    expected = torch_bn(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))))
  np.testing.assert_allclose(np.moveaxis(out, -1, 1), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_batch_norm_statistics_keep_their_dtype_under_float64_activations():
  """config.dtype='float64' with float32 parameters turned the float32 running statistics into
  float64 after the first step: another train-state structure, so the step compiled again, and
  a resumed run (restored into float32) was no longer the uninterrupted one."""
  x = np.random.default_rng(2).normal(size=(2, 2, 2, 2, 4))
  with jax.enable_x64(True):
    bn = layers.BatchNorm(use_running_average=False, dtype=np.float64, param_dtype=np.float32)
    variables = bn.init(jax.random.key(0), x)
    assert variables['batch_stats']['mean'].dtype == np.float32
    out, updates = bn.apply(variables, x, mutable=['batch_stats'])
    assert out.dtype == np.float64
    assert {v.dtype for v in jax.tree.leaves(updates['batch_stats'])} == {np.dtype(np.float32)}


def test_batch_norm_groups_normalise_each_group_as_its_own_device_would():
  """Group size 2 on 4 clips = two PyTorch BatchNorms (one per device with 2 clips each):
  identical outputs; the running statistics take the mean of the two devices' updates."""
  rng = np.random.default_rng(1)
  x = rng.normal(1.0, 2.0, (4, 2, 3, 3, 4))
  weight, bias = rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
  out, stats = _ours_after_one_step(x, weight, bias, group_size=2)
  per_device = [_torch_bn_after_one_step(np.ascontiguousarray(np.moveaxis(x[i:i + 2], -1, 1)),
                                         weight, bias) for i in (0, 2)]
  np.testing.assert_allclose(np.moveaxis(out, -1, 1),
                             np.concatenate([d[0] for d in per_device]), atol=1e-10)
  np.testing.assert_allclose(stats['mean'], np.mean([d[1] for d in per_device], 0), atol=1e-12)
  np.testing.assert_allclose(stats['var'], np.mean([d[2] for d in per_device], 0), atol=1e-12)
  with pytest.raises(ValueError, match='group size 3 does not divide the batch of 4'):
    _ours_after_one_step(x, weight, bias, group_size=3)


def test_a_batch_norm_over_one_value_per_channel_is_a_config_error():
  """bn_group_size=1 on clips whose last stage is 1x1x1 trained with every such output
  constant (loss exactly ln 2 for 2 classes), where PyTorch raises."""
  bn = layers.BatchNorm(use_running_average=False)
  x = jnp.ones((2, 1, 1, 1, 4))
  variables = bn.init(jax.random.key(0), x)
  with layers.batch_norm_groups(1), pytest.raises(
      errors.ConfigError, match=r'would normalise 1 value per channel \(groups of 1 row\(s\) of '
      r'\(1, 1, 1\) positions\)'):
    bn.apply(variables, x, mutable=['batch_stats'])
  with layers.batch_norm_groups(2):  # 2 values per channel: fine
    bn.apply(variables, x, mutable=['batch_stats'])
  bn.apply(variables, x, mutable=['batch_stats'])  # the whole batch of 2: fine


def test_batch_norm_groups_of_clips_hold_every_frame_of_a_clip_in_2d_backbones():
  """S2DNet's backbones run on (B * T) frames: config.bn_group_size=1 normalised each frame
  alone, where PySlowFast's per-GPU BatchNorm (and the README: groups of clips) takes a clip's
  frames together."""
  rng = np.random.default_rng(2)
  x = rng.normal(1.0, 2.0, (4, 3, 3, 5)).astype(np.float32)  # 2 clips of 2 frames
  bn = layers.BatchNorm(use_running_average=False)
  variables = bn.init(jax.random.key(0), x)
  with layers.batch_norm_groups(1), layers.rows_per_clip(2):
    out, _ = bn.apply(variables, x, mutable=['batch_stats'])
  for clip in (slice(0, 2), slice(2, 4)):
    part = x[clip]
    want = (part - part.mean((0, 1, 2))) / np.sqrt(part.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(out[clip], want, rtol=1e-4, atol=1e-5)


def test_a_pooling_window_larger_than_the_feature_map_is_a_config_error():
  """A clip too small for the model: NL-I3D's non-local key pool (1x2x2) met a 1x1 map at
  16^2 crops, gave empty attention and failed deep in the backward pass; now the model says so
  when it is traced."""
  with pytest.raises(errors.ConfigError, match=r'max-pool window \(1, 2, 2\) .* \(2, 1, 1\)'):
    layers.max_pool3d(jnp.zeros((1, 2, 1, 1, 4)), (1, 2, 2), (1, 2, 2))
  fits = layers.max_pool3d(jnp.zeros((1, 2, 2, 2, 4)), (1, 2, 2), (1, 2, 2))
  assert fits.shape == (1, 2, 1, 1, 4)
  assert layers.max_pool3d(jnp.zeros((1, 2, 1, 1, 4)), 3, 2, 1).shape == (1, 1, 1, 1, 4)
  model = build_model(ml_collections.ConfigDict(dict(
      name='i3d_nl', depth=50, width=4, stage_blocks=(1, 2, 2, 1),
      nonlocal_blocks=((), (1,), (1,), ()), use_nonlocal=True, dropout_rate=0.5,
      conv_impl='auto')), 4)
  with pytest.raises(errors.ConfigError, match='clips are too small for this model'):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4, 16, 16, 3)),
                                      train=False))
