"""Building blocks shared by every video model: 3D convolution, batch norm, pooling.

All tensors are NTHWC. Padding is always explicit and symmetric (PyTorch semantics), never
XLA's 'SAME', so that PyTorch checkpoints give identical outputs after conversion.
"""

import contextlib
import contextvars
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from salinet_jax import errors
from salinet_jax.models import fast_conv
from salinet_jax.models import fast_pool

Triple = Tuple[int, int, int]
IntOrTriple = Union[int, Sequence[int]]

# He normal, fan_out, untruncated: PyTorch's kaiming_normal_(mode='fan_out', nonlinearity='relu').
he_normal_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# PyTorch BatchNorm defaults: momentum 0.1 on the new value == Flax momentum 0.9 on the old one.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# The `jax.checkpoint` name of BatchNorm's training statistics (per group and channel: the mean
# and 1 / std). config.remat='elementwise' saves them, so the backward pass recomputes the
# normalisation elementwise without reducing the activations again.
BN_STATISTICS = 'bn_statistics'


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


def widened(x: jnp.ndarray) -> jnp.ndarray:
  """`x` in float32 at least, for a value broadcast into a larger one (a bias, a mask, a vector
  tiled over frames) before the result is rounded to the compute dtype: autodiff sums the
  gradient over the broadcast axes in the broadcast value's dtype, and a bfloat16 sum rounds
  every partial sum (PyTorch AMP sums such gradients in float32)."""
  return x.astype(at_least_float32(x.dtype))


def add_bias(y: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """`y + bias` in y's dtype, added in float32 at least (`widened`): the bias gradient sums
  every position and clip."""
  return (widened(y) + widened(bias)).astype(y.dtype)


class Dense(nn.Module):
  """flax's `nn.Dense` (the same parameters, initialisers and matrix product) with its bias
  added by `add_bias`, where flax adds it in the compute dtype. `dtype=None` computes in that of
  the input and kernel together, as flax's does."""
  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable[..., Any] = nn.linear.default_kernel_init
  bias_init: Callable[..., Any] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype),
                            (((x.ndim - 1,), (0,)), ((), ())), precision=self.precision)
    if not self.use_bias:
      return y
    return add_bias(y, self.param('bias', self.bias_init, (self.features,), self.param_dtype))


def conv_impl_for_backend(impl: str) -> str:
  """Resolves 'auto' to the faster 3D convolution strategy for the current backend.

  XLA's CPU 3D convolution is several times slower than summing kT 2D convolutions over
  shifted frames; on GPU/TPU the native 3D convolution is the better choice.
  """
  if impl == 'auto':
    return 'frame_sum' if jax.default_backend() == 'cpu' else 'native'
  if impl not in ('native', 'frame_sum'):
    raise errors.ConfigError(f"config.model.conv_impl must be 'auto', 'native' or 'frame_sum', "
                             f'got {impl!r}.')
  return impl


class Conv3D(nn.Module):
  """A 3D convolution with PyTorch padding; kernel layout (kT, kH, kW, Cin, Cout) like nn.Conv.

  `impl='frame_sum'` computes the same result as kT 2D convolutions over temporally shifted
  frames (faster on CPU); `impl='native'` is a single 3D convolution. The output is named
  `fast_conv.CONV_OUTPUT` (what config.remat='elementwise' saves).
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
      y = add_bias(y, self.param('bias', self.bias_init, (self.features,), self.param_dtype))
    return checkpoint_name(y, fast_conv.CONV_OUTPUT)


def _frame_sum_conv(x, kernel, strides: Triple, padding: Triple):
  """3D convolution as a sum over temporal taps of 2D convolutions on (B*T', H, W, C)
  (salinet_jax/models/fast_conv.py: padding frames are never materialised, weight gradients are
  matrix products on the CPU backend)."""
  return fast_conv.frame_sum_conv3d(x, kernel, tuple(strides), tuple(padding))


_BN_GROUP_SIZE = contextvars.ContextVar('bn_group_size', default=0)
_ROWS_PER_CLIP = contextvars.ContextVar('rows_per_clip', default=1)


@contextlib.contextmanager
def batch_norm_groups(size: int):
  """Within this context, training-mode BatchNorms normalise each group of `size` consecutive
  clips of the batch with that group's own statistics (0: the whole batch the model is given,
  the global batch, or a micro-batch of it under gradient accumulation).

  PySlowFast's BatchNorm normalises over each GPU's own clips (BN.NUM_SYNC_DEVICES 1); a group
  size makes that independent of how many devices run the job. The engine enters this context
  around the training forward (config.bn_group_size), so it is fixed when the step is traced.
  """
  token = _BN_GROUP_SIZE.set(int(size))
  try:
    yield
  finally:
    _BN_GROUP_SIZE.reset(token)


@contextlib.contextmanager
def rows_per_clip(rows: int):
  """Within this context the batch's rows are frames, `rows` per clip (TSM's 2D backbones run
  on (B * T) frames): a `batch_norm_groups` group of g clips is g * rows rows."""
  token = _ROWS_PER_CLIP.set(int(rows))
  try:
    yield
  finally:
    _ROWS_PER_CLIP.reset(token)


class BatchNorm(nn.Module):
  """PyTorch's BatchNorm: the same parameters and statistics as flax.linen.BatchNorm ('scale',
  'bias'; 'mean', 'var'), but the running variance takes the UNBIASED batch variance
  (n / (n - 1), as torch.nn.BatchNorm updates running_var; Flax keeps the biased one), and
  training statistics can come from groups of clips (`batch_norm_groups`). The running
  statistics then move towards the mean over groups of their means and unbiased variances;
  the references' per-GPU BatchNorm under DistributedDataParallel (its default broadcast of
  buffers) keeps the first GPU's instead: an estimate of the same statistics from fewer clips.
  Statistics are computed in float32 (two passes); the output has `dtype`.
  """
  use_running_average: Optional[bool] = None
  momentum: float = BN_MOMENTUM
  epsilon: float = BN_EPSILON
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  scale_init: Callable[..., Any] = nn.initializers.ones
  bias_init: Callable[..., Any] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None):
    use_running_average = nn.merge_param('use_running_average', self.use_running_average,
                                         use_running_average)
    features = x.shape[-1]
    stats_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), stats_dtype))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), stats_dtype))
    scale = self.param('scale', self.scale_init, (features,), self.param_dtype)
    bias = self.param('bias', self.bias_init, (features,), self.param_dtype)
    compute = jnp.promote_types(x.dtype, stats_dtype)
    xf = x.astype(compute)
    if use_running_average:
      mean, var = ra_mean.value.astype(compute), ra_var.value.astype(compute)
      normalized = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
    else:
      group = _BN_GROUP_SIZE.get() * _ROWS_PER_CLIP.get() or x.shape[0]
      if x.shape[0] % group:
        raise ValueError(f'BatchNorm group size {group} does not divide the batch of '
                         f'{x.shape[0]} clips (per micro-batch): set config.bn_group_size to a '
                         'divisor of it.')
      grouped = xf.reshape((x.shape[0] // group, group) + x.shape[1:])
      axes = tuple(range(1, grouped.ndim - 1))
      if grouped.size == grouped.shape[0] * features and not self.is_initializing():
        # PyTorch refuses this too: every value would normalise to 0 (its variance is 0).
        raise errors.ConfigError(
            f'BatchNorm {"/".join(self.path) or "layer"} would normalise 1 value per channel '
            f'(groups of {group} row(s) of {x.shape[1:-1]} positions): its outputs would be '
            'constant. Use larger clips or more clips per BatchNorm group (config.bn_group_size, '
            'or config.batch_size over config.grad_accumulation_steps).')
      group_mean = checkpoint_name(jnp.mean(grouped, axis=axes, keepdims=True), BN_STATISTICS)
      group_var = jnp.mean(jnp.square(grouped - group_mean), axis=axes, keepdims=True)
      inv_std = checkpoint_name(jax.lax.rsqrt(group_var + self.epsilon), BN_STATISTICS)
      normalized = ((grouped - group_mean) * inv_std).reshape(xf.shape)
      if not self.is_initializing():
        count = grouped.size // (grouped.shape[0] * features)
        bessel = count / max(count - 1, 1)
        mean = jnp.mean(group_mean.reshape(-1, features), axis=0)
        unbiased = jnp.mean(group_var.reshape(-1, features), axis=0) * bessel
        # Cast back: float64 activations would otherwise turn float32 statistics into float64
        # ones after the first step (another state structure, so the step compiled again).
        ra_mean.value = (self.momentum * ra_mean.value
                         + (1 - self.momentum) * mean).astype(stats_dtype)
        ra_var.value = (self.momentum * ra_var.value
                        + (1 - self.momentum) * unbiased).astype(stats_dtype)
    y = normalized * scale.astype(compute) + bias.astype(compute)
    return y.astype(self.dtype)


def batch_norm(train: bool, dtype: Any = jnp.float32, zero_init: bool = False,
               name: str = None) -> BatchNorm:
  """PyTorch-equivalent BatchNorm (momentum 0.1, eps 1e-5); statistics kept in float32.

  Under `jax.jit` on a device mesh the batch mean is taken over the whole (sharded) batch the
  model is given (a micro-batch under gradient accumulation), which is what synchronised
  BatchNorm does in PyTorch; `batch_norm_groups` restricts it to groups of clips.
  """
  return BatchNorm(use_running_average=not train, dtype=dtype, param_dtype=jnp.float32,
                   scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
                   name=name)


def check_window_fits(x, window: Triple, padding: Triple, what: str) -> None:
  """Fails when a pooling window is larger than the (padded) feature map of NTHWC `x`: the output
  would have no elements (a clip too small for the model; the non-local blocks' 1x2x2 key pool
  on a 1x1 map gave empty attention and an error deep inside the backward pass)."""
  sizes = tuple(x.shape[1:4])
  if any(n + 2 * p < w for n, w, p in zip(sizes, window, padding)):
    raise errors.ConfigError(
        f'The clips are too small for this model: a {what} window {window} (padding {padding}) '
        f'does not fit its {sizes} (frames, height, width) feature map. Use larger clips '
        '(config.data.crop_size / eval_crop_size, num_frames).')


def max_pool3d(x, window: IntOrTriple, strides: IntOrTriple, padding: IntOrTriple = 0):
  """PyTorch MaxPool3d (padding never wins the max)."""
  pt, ph, pw = triple(padding)
  check_window_fits(x, triple(window), (pt, ph, pw), 'max-pool')
  return fast_pool.max_pool_for_backend(x, triple(window), triple(strides),
                                        ((pt, pt), (ph, ph), (pw, pw)))


def avg_pool3d(x, window: IntOrTriple, strides: IntOrTriple, padding: IntOrTriple = 0):
  """PyTorch AvgPool3d with count_include_pad=True."""
  pt, ph, pw = triple(padding)
  check_window_fits(x, triple(window), (pt, ph, pw), 'average-pool')
  return nn.avg_pool(x, triple(window), triple(strides), ((pt, pt), (ph, ph), (pw, pw)),
                     count_include_pad=True)
