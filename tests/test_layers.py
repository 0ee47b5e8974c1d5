"""Shared layers: the CPU-friendly 3D convolution equals the native one, PyTorch padding."""

import jax
import numpy as np
import pytest

from salinet_jax.models import layers


@pytest.mark.parametrize('kernel,strides,padding', [
    ((3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((3, 7, 7), (2, 2, 2), (1, 3, 3)),
    ((5, 1, 1), (1, 1, 1), (2, 0, 0)),
    ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
])
def test_frame_sum_conv_equals_native_conv(kernel, strides, padding):
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 10, 3))
  native = layers.Conv3D(5, kernel, strides, padding, use_bias=True, impl='native')
  frame_sum = layers.Conv3D(5, kernel, strides, padding, use_bias=True, impl='frame_sum')
  variables = native.init(jax.random.key(1), x)
  expected = native.apply(variables, x)
  got = frame_sum.apply(variables, x)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-5)
  grad_native = jax.grad(lambda v: native.apply(v, x).sum())(variables)
  grad_frames = jax.grad(lambda v: frame_sum.apply(v, x).sum())(variables)
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
  with pytest.raises(ValueError, match="conv impl must be"):
    layers.conv_impl_for_backend('im2col')


def test_max_pool_ignores_padding_and_avg_pool_counts_it():
  x = -np.ones((1, 1, 2, 2, 1), np.float32)
  assert float(layers.max_pool3d(x, (1, 3, 3), 1, (0, 1, 1)).max()) == -1.0
  np.testing.assert_allclose(layers.avg_pool3d(x, (1, 3, 3), 1, (0, 1, 1))[0, 0, 0, 0, 0], -4 / 9)
