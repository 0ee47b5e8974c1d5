"""Building blocks shared by every video model: 3D convolution, batch norm, pooling.

All tensors are NTHWC. Padding is always explicit and symmetric (PyTorch semantics), never
XLA's 'SAME', so that PyTorch checkpoints give identical outputs after conversion.
"""

from typing import Any, Callable, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

Triple = Tuple[int, int, int]
IntOrTriple = Union[int, Sequence[int]]

# He normal, fan_out, untruncated: PyTorch's kaiming_normal_(mode='fan_out', nonlinearity='relu').
he_normal_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# PyTorch BatchNorm defaults: momentum 0.1 on the new value == Flax momentum 0.9 on the old one.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def triple(value: IntOrTriple) -> Triple:
  """Returns `value` as a (t, h, w) tuple."""
  if isinstance(value, int):
    return (value, value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 3:
    raise ValueError(f'Expected an int or 3 ints, got {value!r}.')
  return value


def at_least_float32(dtype: Any) -> Any:
  """The dtype of numerically sensitive outputs (logits, saliency maps, softmax) for `dtype`.

  float32 when computing in bfloat16/float16/float32; float64 when the whole model computes in
  float64 (parity checks against PyTorch with `jax_enable_x64`).
  """
  return jnp.promote_types(dtype, jnp.float32)


def conv_impl_for_backend(impl: str) -> str:
  """Resolves 'auto' to the faster 3D convolution strategy for the current backend.

  XLA's CPU 3D convolution is several times slower than summing kT 2D convolutions over
  shifted frames; on GPU/TPU the native 3D convolution is the better choice.
  """
  if impl == 'auto':
    return 'frame_sum' if jax.default_backend() == 'cpu' else 'native'
  if impl not in ('native', 'frame_sum'):
    raise ValueError(f"conv impl must be 'auto', 'native' or 'frame_sum', got {impl!r}.")
  return impl


class Conv3D(nn.Module):
  """A 3D convolution with PyTorch padding; kernel layout (kT, kH, kW, Cin, Cout) like nn.Conv.

  `impl='frame_sum'` computes the same result as kT 2D convolutions over temporally shifted
  frames (faster on CPU); `impl='native'` is a single 3D convolution.
  """
  features: int
  kernel_size: IntOrTriple
  strides: IntOrTriple = 1
  padding: IntOrTriple = 0
  use_bias: bool = False
  kernel_init: Callable[..., Any] = he_normal_fan_out
  bias_init: Callable[..., Any] = nn.initializers.zeros
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kt, kh, kw = triple(self.kernel_size)
    st, sh, sw = triple(self.strides)
    pt, ph, pw = triple(self.padding)
    in_features = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kt, kh, kw, in_features, self.features),
                        self.param_dtype)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    if conv_impl_for_backend(self.impl) == 'native' or x.ndim != 5:
      y = jax.lax.conv_general_dilated(
          x, kernel, window_strides=(st, sh, sw), padding=((pt, pt), (ph, ph), (pw, pw)),
          dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
    else:
      y = _frame_sum_conv(x, kernel, (st, sh, sw), (pt, ph, pw))
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def _frame_sum_conv(x, kernel, strides: Triple, padding: Triple):
  """3D convolution as a sum over temporal taps of 2D convolutions on (B*T', H, W, C)."""
  kt = kernel.shape[0]
  st, sh, sw = strides
  pt, ph, pw = padding
  batch, frames = x.shape[:2]
  if pt:
    x = jnp.pad(x, ((0, 0), (pt, pt), (0, 0), (0, 0), (0, 0)))
  out_frames = (frames + 2 * pt - kt) // st + 1
  if out_frames < 1:
    raise ValueError(f'Temporal kernel {kt} does not fit {frames} frames with padding {pt}.')
  total = None
  for tap in range(kt):
    frames_for_tap = x[:, tap:tap + st * (out_frames - 1) + 1:st]
    flat = frames_for_tap.reshape((batch * out_frames,) + frames_for_tap.shape[2:])
    y = jax.lax.conv_general_dilated(
        flat, kernel[tap], window_strides=(sh, sw), padding=((ph, ph), (pw, pw)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    total = y if total is None else total + y
  return total.reshape((batch, out_frames) + total.shape[1:])


def batch_norm(train: bool, dtype: Any = jnp.float32, zero_init: bool = False,
               name: str = None) -> nn.BatchNorm:
  """PyTorch-equivalent BatchNorm (momentum 0.1, eps 1e-5); statistics kept in float32.

  Under `jax.jit` on a device mesh the batch mean is taken over the global (sharded) batch,
  which is what synchronised BatchNorm does in PyTorch.
  """
  return nn.BatchNorm(
      use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype,
      param_dtype=jnp.float32,
      scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones, name=name)


def max_pool3d(x, window: IntOrTriple, strides: IntOrTriple, padding: IntOrTriple = 0):
  """PyTorch MaxPool3d (padding never wins the max)."""
  pt, ph, pw = triple(padding)
  return nn.max_pool(x, triple(window), triple(strides), ((pt, pt), (ph, ph), (pw, pw)))


def avg_pool3d(x, window: IntOrTriple, strides: IntOrTriple, padding: IntOrTriple = 0):
  """PyTorch AvgPool3d with count_include_pad=True."""
  pt, ph, pw = triple(padding)
  return nn.avg_pool(x, triple(window), triple(strides), ((pt, pt), (ph, ph), (pw, pw)),
                     count_include_pad=True)
