"""2D convolutions (NHWC, HWIO) for XLA's CPU backend: the same results, faster gradients.

XLA differentiates a convolution into two more convolutions. The input gradient is a transposed
convolution that XLA's CPU backend runs about as fast as the forward. The weight gradient is a
convolution whose window covers the whole output feature map (56x56, 28x28, ...) and whose
"batch" is the input channels; XLA's CPU backend runs that several times slower than oneDNN's
weight-gradient kernels (4-8x at 56^2 and 28^2 in this project's layers).

`conv2d` keeps XLA's forward, writes the input gradient as one convolution (`input_gradient`)
and computes the weight gradient as what it is, a matrix product contracting over the (large)
batch x output-space extent, one per kernel tap:

    dW[i, j] = X_ij^T . dY,   X_ij = the input window of tap (i, j) at every output position,
                              reshaped to (N * Ho * Wo, Cin); dY reshaped to (N * Ho * Wo, Cout)

(for few input channels the taps are concatenated into one (N * Ho * Wo, kh * kw * Cin) patch
matrix and a single product). 1x1 convolutions do that and their forward as plain matrix
products. `depthwise_conv2d` runs a depthwise convolution as kh * kw shifted multiply-adds, which
XLA fuses into one loop; its grouped convolution is several times slower on CPU.

Where XLA runs convolutions with its Eigen kernels instead of YNNPACK's
(config.xla_cpu_convolutions='eigen', the default of main.py and the benchmark;
`parallel.cpu_convolutions_are_eigens`), 2D weight gradients as convolutions are the faster
ones, and only 1x1 convolutions and 3D stems keep the products. 3x3, batch 16, 2-core AVX-512
Xeon, XLA's against the matmul ones: 0.0059 against 0.0176 s at 28^2 x 64 channels, 0.027
against 0.100 s at 56^2 x 64, 0.017 against 0.043 s at 28^2 x 128, 0.015 against 0.023 s at
14^2 x 256 (with YNNPACK's convolutions XLA's take 0.023, 0.102, 0.052 and 0.017 s).

The other 2D convolutions (`conv2d_library_gradients`) have their gradients written as
convolutions in the NHWC/HWIO order of XLA's library kernels, as has the input gradient of the
matmul path: XLA's CPU backend puts autodiff's dimension orders into that order in its entry
computation only, and inside a loop (the `lax.scan` of gradient accumulation) ran them as
generic loops. A convolution on a map smaller than its kernel, of SMALL_MAP_MIN_CHANNELS input
channels or more (`small_map_conv2d`), is one matrix product over im2col patches. Every custom
rule here builds only the gradients of the operands being differentiated (never a clip's input
gradient: XLA would remove it, but the benchmark's FLOP count reads the traced program).

`conv_general_dilated_for_backend` is a drop-in for `lax.conv_general_dilated` (flax `nn.Conv`'s
`conv_general_dilated_cls`) that uses these on the CPU backend and passes everything else
(accelerators, dilations, other layouts) to `lax.conv_general_dilated` unchanged.
"""

import contextlib
import functools
from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from salinet_jax import parallel

Pair = Tuple[int, int]
Padding = Tuple[Pair, Pair]
NHWC = ('NHWC', 'HWIO', 'NHWC')
CHANNELS_LAST = {4: NHWC, 5: ('NDHWC', 'DHWIO', 'NDHWC')}
# Below this many input channels XLA's own weight gradient is as fast or faster (measured).
MATMUL_GRAD_MIN_CHANNELS = 32
# Up to this many output positions per image (14 x 14), the backward pass of a convolution is
# two im2col matrix products: dW = patches^T . dY and dpatches = dY . W^T, folded back onto the
# input (col2im). The patch matrix is small there, and XLA's CPU convolutions (and the kernel
# transposes its input gradient needs) are slowest relative to a matrix product.
IM2COL_GRAD_MAX_POSITIONS = 14 * 14
# From this many input channels up, a convolution on a map smaller than its kernel is an im2col
# product (`small_map_conv2d`). 3x3 on 32 x 2 x 2 maps, forward and backward, XLA's against the
# product's: 49.8 against 5.3 ms at 256 channels, 600 against 12 ms at 512; 5.2 against 0.9 ms
# at 64 and 6.8 against 2.2 at 128, where the product's extra kernels cost more compile time
# (the demo's train step: 9.2 s against 7.1) than they save in a short run.
SMALL_MAP_MIN_CHANNELS = 256
# A 3D convolution's weight gradient is one product of an im2col patch matrix (kh * kw * Cin
# columns) with the output gradient shifted once per temporal tap (kt * Cout columns) up to this
# many input channels (video stems: 3; most take the frame pairs below instead), and for every
# kernel with several temporal taps and temporal stride 1 (see `uses_patch_weight_gradient`).
# Stems run forward as `stacked_taps_conv3d`.
PATCH_GRAD_MAX_CHANNELS = 4
# A stem's weight gradient is one matrix product over all (input frame, output frame) pairs of
# the clip (`frame_pair_weight_gradient`) where that computes at most this many times the pairs
# the kernel reads (`frame_pair_waste`). Measured on a 2-core CPU: 7x7x7 on 16 frames (2.6x)
# 0.17 s against the patch weight gradient's 0.235 s; 3x7x7 on 16 frames (5.6x) 0.165 against
# 0.12 s. (The forward as the same kind of product, with a block-Toeplitz kernel, lost to
# `stacked_taps_conv3d` with XLA's Eigen convolutions: R3D-18's stem 0.094 against 0.077 s.)
FRAME_PAIRS_MAX_WASTE = 3.0
# Switch for A/B measurements: False makes every function here a plain lax convolution.
CPU_KERNELS = True
# The `jax.checkpoint` name of every convolution's output (here and in layers.Conv3D):
# config.remat='elementwise' saves these for the backward pass and recomputes the rest.
CONV_OUTPUT = 'conv_output'


def _plain_conv(x, w, strides: Pair, padding: Padding, precision=None):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                  precision=precision)


def _out_size(size: int, kernel: int, stride: int, pad: Pair) -> int:
  return (size + pad[0] + pad[1] - kernel) // stride + 1


def _tap(x_padded, i: int, j: int, strides: Pair, out_hw: Pair):
  """The input of kernel tap (i, j) at every output position: (N, Ho, Wo, C)."""
  n, _, _, c = x_padded.shape
  (sh, sw), (ho, wo) = strides, out_hw
  return lax.slice(x_padded, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                   (1, sh, sw, 1))


def _pad_hw(x, padding: Padding):
  if all(p == 0 for pair in padding for p in pair):
    return x
  return jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))


def _rows(a):
  """(N, H, W, C) -> (N * H * W, C)."""
  return a.reshape(-1, a.shape[-1])


def weight_gradient(x, dy, kernel_hw: Pair, strides: Pair, padding: Padding, precision=None):
  """dW (kh, kw, Cin, Cout) of `_plain_conv(x, w, strides, padding)` for output gradient dy:
  one (Cin x M) . (M x Cout) product per tap, M = N * Ho * Wo."""
  kh, kw = kernel_hw
  cin, cout = x.shape[-1], dy.shape[-1]
  out_hw = dy.shape[1:3]
  x_padded = _pad_hw(x, padding)
  dy_rows = _rows(dy)
  grads = [jnp.dot(_rows(_tap(x_padded, i, j, strides, out_hw)).T, dy_rows, precision=precision)
           for i in range(kh) for j in range(kw)]
  return jnp.stack(grads).reshape(kh, kw, cin, cout)


def _define_rule(op, forward, gradients):
  """Gives the custom_vjp `op(x, w, *settings)` its rule, with symbolic zeros: the value from
  `forward(x, w, *settings)`, and `gradients(settings, x, w, dy, want_dx, want_dw)` ->
  (dx or None, dw or None) for the operands being differentiated only; no gradient at all for
  a zero cotangent."""

  def fwd(x, w, *settings):
    return forward(x.value, w.value, *settings), (x.value, w.value, x.perturbed, w.perturbed)

  def bwd(*args):
    settings, (x, w, want_dx, want_dw), dy = args[:-2], args[-2], args[-1]
    if isinstance(dy, jax.custom_derivatives.SymbolicZero):
      return None, None
    dx, dw = gradients(settings, x, w, dy, want_dx, want_dw)
    return (None if dx is None else dx.astype(x.dtype),
            None if dw is None else dw.astype(w.dtype))

  op.defvjp(fwd, bwd, symbolic_zeros=True)


def input_gradient(dy, w, in_hw: Pair, strides: Pair, padding: Padding, precision=None):
  """dx (N, H, W, Cin) of `_plain_conv(x, w, strides, padding)` for output gradient dy, as one
  NHWC/HWIO convolution: dy dilated by the strides, correlated with the flipped kernel whose
  channels are swapped (the form XLA's CPU backend runs with its library kernels; see
  `conv2d_library_gradients`)."""
  pads = []
  for size, k, stride, (low, _), out in zip(in_hw, w.shape[:2], strides, padding, dy.shape[1:3]):
    pads.append((k - 1 - low, size - (out - 1) * stride + low - 1))
  kernel = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
  return lax.conv_general_dilated(dy, kernel, (1, 1), pads, lhs_dilation=strides,
                                  dimension_numbers=NHWC, precision=precision)


def weight_gradient_as_conv(x, dy, kernel_hw: Pair, strides: Pair, padding: Padding,
                            precision=None):
  """dW (kh, kw, Cin, Cout) of `_plain_conv(x, w, strides, padding)` for output gradient dy, as
  one NHWC/HWIO convolution whose batch is the input channels, whose features are the clips and
  whose kernel is dy dilated by the strides (see `conv2d_library_gradients`)."""
  pads = []
  for size, k, stride, (low, _), out in zip(x.shape[1:3], kernel_hw, strides, padding,
                                            dy.shape[1:3]):
    pads.append((low, k - size - low + (out - 1) * stride))
  grad = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1),
                                  pads, rhs_dilation=strides, dimension_numbers=NHWC,
                                  precision=precision)
  return grad.transpose(1, 2, 0, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d_library_gradients(x, w, strides: Pair, padding: Padding, precision=None):
  """XLA's convolution, with both gradients written as NHWC/HWIO convolutions.

  Differentiated automatically, a convolution's gradients come out as convolutions in other
  dimension orders (the weight gradient's batch is the input channels). XLA's CPU backend
  rewrites those into the order its Eigen and YNNPACK kernels take, but only in the entry
  computation: inside a loop (the `lax.scan` of gradient accumulation) they ran as generic
  loops, 20x slower (3x3, 64 channels, 16 x 16^2: 0.143 s against 0.006 s). Written in that
  order here, they are the same convolutions wherever they run.
  """
  return _plain_conv(x, w, strides, padding, precision)


def _gradients_with(weight_gradient_fn, settings, x, w, dy, want_dx: bool, want_dw: bool):
  """The gradients asked for: dx from `input_gradient`, dW from `weight_gradient_fn`."""
  strides, padding, precision = settings
  dx = dw = None
  if want_dx:
    dx = input_gradient(dy, w, x.shape[1:3], strides, padding, precision)
  if want_dw:
    dw = weight_gradient_fn(x, dy, w.shape[:2], strides, padding, precision)
  return dx, dw


_define_rule(conv2d_library_gradients, _plain_conv,
             functools.partial(_gradients_with, weight_gradient_as_conv))


def _is_pointwise(w, padding: Padding) -> bool:
  return w.shape[0] == 1 and w.shape[1] == 1 and all(p == 0 for pair in padding for p in pair)


def pointwise_conv2d(x, w, strides: Pair, precision=None):
  """A 1x1 convolution without padding as a matrix product (see `channel_matmul`)."""
  if strides != (1, 1):
    x = x[:, ::strides[0], ::strides[1]]
  return channel_matmul(x, w[0, 0], precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def channel_matmul(x, w, precision=None):
  """x (..., Cin) . w (Cin, Cout), with the weight gradient written as x_rows^T . dy_rows.

  Differentiated automatically, the weight gradient comes out as a product that XLA's CPU
  backend feeds with a transposed copy of dy, fused into the producer of dy (BatchNorm's
  backward pass): a strided write of the whole activation, duplicating the producer's work.
  Written this way, the product reads both operands as they are stored; a 1x1 convolution and
  the BatchNorm around it train 12-30 % faster (16 x 56^2, 256 -> 64 and 64 -> 256 channels).
  """
  return _channel_product(x, w, precision)


def _channel_product(x, w, precision=None):
  return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _channel_matmul_gradients(settings, x, w, dy, want_dx: bool, want_dw: bool):
  precision, = settings
  dx = dw = None
  if want_dx:
    dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())), precision=precision)
  if want_dw:
    dw = lax.dot_general(_rows(x), _rows(dy), (((0,), (0,)), ((), ())), precision=precision)
  return dx, dw


_define_rule(channel_matmul, _channel_product, _channel_matmul_gradients)


def conv2d(x, w, strides: Pair, padding: Padding, precision=None):
  """`lax.conv_general_dilated(x, w, strides, padding)` in NHWC/HWIO: 1x1 convolutions as
  matrix products; wider ones with the matmul weight gradient from `Cin` =
  MATMUL_GRAD_MIN_CHANNELS input channels up, unless XLA runs convolutions with its Eigen
  kernels; wide maps smaller than the kernel as im2col products (see the module docstring)."""
  if not use_cpu_kernels():
    return _plain_conv(x, w, strides, padding, precision)
  if _is_pointwise(w, padding):
    return pointwise_conv2d(x, w, strides, precision)
  if x.shape[-1] >= SMALL_MAP_MIN_CHANNELS and (x.shape[1] < w.shape[0]
                                                or x.shape[2] < w.shape[1]):
    return small_map_conv2d(x, w, strides, padding, precision)
  if x.shape[-1] >= MATMUL_GRAD_MIN_CHANNELS and not parallel.cpu_convolutions_are_eigens():
    return conv2d_matmul_grad(x, w, strides, padding, precision)
  return conv2d_library_gradients(x, w, strides, padding, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d_matmul_grad(x, w, strides: Pair, padding: Padding, precision=None):
  """XLA's convolution; the input gradient from `input_gradient` and the weight gradient from
  `weight_gradient` (on small maps, both from im2col products)."""
  return _plain_conv(x, w, strides, padding, precision)


def im2col(x, kernel_hw: Pair, strides: Pair, padding: Padding, out_hw: Pair):
  """(N, Ho, Wo, kh * kw * C) patches, taps in (i, j) order, channels innermost."""
  x_padded = _pad_hw(x, padding)
  return jnp.concatenate([_tap(x_padded, i, j, strides, out_hw)
                          for i in range(kernel_hw[0]) for j in range(kernel_hw[1])], axis=-1)


def small_map_conv2d(x, w, strides: Pair, padding: Padding, precision=None):
  """A convolution on a map smaller than its kernel, as one product of its im2col patches with
  the kernel's rows. XLA's CPU backend swaps such a convolution's operands (the map becomes the
  kernel) into an order its library kernels do not take, and runs it as a generic loop: 3x3 on
  32 x 2 x 2 x 512 (a stage-4 map of R3D-18 on 64^2 clips) in 292 ms forward, the product in
  4.8 ms."""
  out_hw = tuple(_out_size(size, k, stride, pad) for size, k, stride, pad
                 in zip(x.shape[1:3], w.shape[:2], strides, padding))
  patches = im2col(x, w.shape[:2], strides, padding, out_hw)
  return _channel_product(patches, w.reshape(-1, w.shape[-1]), precision)


def _matmul_path_gradients(settings, x, w, dy, want_dx: bool, want_dw: bool):
  strides, padding, precision = settings
  out_hw = dy.shape[1:3]
  dx = dw = None
  if out_hw[0] * out_hw[1] <= IM2COL_GRAD_MAX_POSITIONS:
    patches, col2im = jax.vjp(lambda x_: im2col(x_, w.shape[:2], strides, padding, out_hw), x)
    if want_dw:
      dw = jnp.dot(_rows(patches).T, _rows(dy), precision=precision).reshape(w.shape)
    if want_dx:
      w_rows = w.reshape(-1, w.shape[-1])
      dx, = col2im(lax.dot_general(dy, w_rows, (((3,), (1,)), ((), ())), precision=precision))
    return dx, dw
  return _gradients_with(weight_gradient, settings, x, w, dy, want_dx, want_dw)


_define_rule(conv2d_matmul_grad, _plain_conv, _matmul_path_gradients)


def depthwise_conv2d(x, w, strides: Pair, padding: Padding):
  """Depthwise convolution (w: (kh, kw, 1, C), one filter per channel) as shifted
  multiply-adds; equal to `lax.conv_general_dilated(..., feature_group_count=C)`. Computed in
  float32 at least, as XLA's convolutions accumulate: in bfloat16, the taps' sum and the weight
  gradient (a sum over every clip and position) would round every partial sum."""
  kh, kw = w.shape[:2]
  out_hw = (_out_size(x.shape[1], kh, strides[0], padding[0]),
            _out_size(x.shape[2], kw, strides[1], padding[1]))
  wide = jnp.promote_types(x.dtype, jnp.float32)
  x_padded = _pad_hw(x.astype(wide), padding)
  w = w.astype(wide)
  total = None
  for i in range(kh):
    for j in range(kw):
      term = _tap(x_padded, i, j, strides, out_hw) * w[i, j, 0]
      total = term if total is None else total + term
  return total.astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# 3D convolutions as sums of 2D ones over temporal taps.
# ----------------------------------------------------------------------------------------------

Triple = Tuple[int, int, int]


def _tap_frames(frames: int, out_frames: int, tap: int, stride: int, pad: int):
  """(first, count) of the output frames whose input frame o * stride + tap - pad is real."""
  first = max(0, -(-(pad - tap) // stride))
  last = min(out_frames - 1, (frames - 1 + pad - tap) // stride)
  return first, last - first + 1


def _output_frames(frames: int, kt: int, st: int, pt: int) -> int:
  out_frames = (frames + 2 * pt - kt) // st + 1
  if out_frames < 1:
    raise ValueError(f'Temporal kernel {kt} does not fit {frames} frames with padding {pt}.')
  return out_frames


def _frame_sum_forward(x, kernel, strides: Triple, padding: Triple):
  kt = kernel.shape[0]
  st, sh, sw = strides
  pt, ph, pw = padding
  batch, frames = x.shape[:2]
  out_frames = _output_frames(frames, kt, st, pt)
  spatial_padding = ((ph, ph), (pw, pw))
  if not use_cpu_kernels():  # the textbook form: every tap on the zero-padded clip
    if pt:
      x = jnp.pad(x, ((0, 0), (pt, pt)) + ((0, 0),) * (x.ndim - 2))
      frames, pt = frames + 2 * pt, 0
  total = None
  for tap in range(kt):
    first, count = _tap_frames(frames, out_frames, tap, st, pt)
    if count < 1:
      continue
    start = first * st + tap - pt
    frames_for_tap = x[:, start:start + st * (count - 1) + 1:st]
    flat = frames_for_tap.reshape((batch * count,) + frames_for_tap.shape[2:])
    y = conv2d(flat, kernel[tap], (sh, sw), spatial_padding)
    y = y.reshape((batch, count) + y.shape[1:])
    if count < out_frames:
      y = jnp.pad(y, ((0, 0), (first, out_frames - first - count)) + ((0, 0),) * (y.ndim - 2))
    total = y if total is None else total + y
  if total is None:  # every output frame reads padding only
    shape = jax.eval_shape(lambda: conv2d(x[:, 0], kernel[0], (sh, sw), spatial_padding)).shape
    return jnp.zeros((batch, out_frames) + shape[1:], x.dtype)
  return total


def frame_sum_conv3d(x, kernel, strides: Triple, padding: Triple):
  """A 3D convolution (NTHWC, kernel (kT, kH, kW, Cin, Cout), symmetric padding) as kT 2D
  convolutions of the frames each temporal tap reads, summed.

  Only real frames are convolved: the temporal zero padding is never materialised, and a tap
  that would read padding only (a 3x3x3 kernel on a single frame) costs nothing; the sum is the
  same as over a zero-padded clip. On the CPU backend, the weight gradient is
  `patch_weight_gradient` where `uses_patch_weight_gradient` says so, and stems (up to
  PATCH_GRAD_MAX_CHANNELS input channels) run as `stacked_taps_conv3d`.
  """
  if use_cpu_kernels() and x.ndim == 5 and uses_patch_weight_gradient(
      x.shape[-1], kernel.shape, strides):
    return _frame_sum_patch_grad(x, kernel, strides, padding)
  return _frame_sum_forward(x, kernel, strides, padding)


def uses_patch_weight_gradient(cin: int, kernel_shape: Sequence[int], strides: Triple) -> bool:
  """Whether a frame-sum 3D convolution's weight gradient is `patch_weight_gradient` (or, for
  stems, `frame_pair_weight_gradient` where `uses_frame_pair_weight_gradient` says so).

  Stems (few input channels), and kernels with several temporal taps at temporal stride 1:
  per tap, the 2D weight gradients would copy the input kT * kH * kW times, the patch matrix
  copies it kH * kW times, and one large product replaces kT * kH * kW small ones. R3D-18's
  3x3x3 convolutions (64 channels, 28^2): dW in 0.039 s instead of 0.067 s on a 2-core CPU
  (train step: README). With temporal stride 2 the patch matrix covers twice the frames the
  taps read (0.0094 s against 0.0054). Where XLA runs convolutions with its Eigen kernels, only
  stems: the per-tap 2D convolutions' own weight gradients are faster than the patch one (R3D-18
  train step 0.650 s against 0.717-0.723 s, SaliNet K400 4.60-4.71 s against 4.80-4.82 s).
  There, a 2D kernel (kT = 1) on few channels runs as XLA's too: SaliNet's TSFP gate, 1x9x9 on
  a one-channel 2 x 8 x 56^2 map, forward and backward in 9.7-11.0 ms against 15.2-16.3 ms,
  and compiled in 0.27-0.30 s against 1.15-1.24 s (the patch matrix's 81 tap slices are 81
  kernels).
  """
  temporal = kernel_shape[0] > 1
  if parallel.cpu_convolutions_are_eigens():
    return temporal and cin <= PATCH_GRAD_MAX_CHANNELS
  return cin <= PATCH_GRAD_MAX_CHANNELS or (temporal and strides[0] == 1)


def patch_weight_gradient(x, dy, kernel_shape: Sequence[int], strides: Triple,
                          padding: Triple):
  """dW (kT, kH, kW, Cin, Cout) of a frame-sum 3D convolution as one matrix product:

      patches (B*T*Ho*Wo, kH*kW*Cin)^T . [dY shifted to tap 0's frames | ... | tap kT-1's]

  The 2D patches of every input frame are built once and shared by all temporal taps; the
  output gradient is moved onto the input frames each tap reads (zeros elsewhere).
  """
  kt, kh, kw, cin, cout = kernel_shape
  st, sh, sw = strides
  pt, ph, pw = padding
  batch, frames = x.shape[:2]
  out_frames, out_hw = dy.shape[1], dy.shape[2:4]
  flat = x.reshape((batch * frames,) + x.shape[2:])
  x_padded = _pad_hw(flat, ((ph, ph), (pw, pw)))
  patches = jnp.concatenate([_tap(x_padded, i, j, (sh, sw), out_hw)
                             for i in range(kh) for j in range(kw)], axis=-1)
  shifted = []
  for tap in range(kt):
    # Input frame f = o * st + tap - pt receives dY[o]: dilate by st, shift by tap - pt, crop.
    low = tap - pt
    high = frames - low - (out_frames - 1) * st - 1
    shifted.append(lax.pad(dy, jnp.zeros((), dy.dtype),
                           ((0, 0, 0), (low, high, st - 1), (0, 0, 0), (0, 0, 0), (0, 0, 0))))
  dy_taps = jnp.concatenate(shifted, axis=-1)  # (B, T, Ho, Wo, kT * Cout)
  grad = jnp.dot(_rows(patches).T, _rows(dy_taps))  # (kH * kW * Cin, kT * Cout)
  return grad.reshape(kh, kw, cin, kt, cout).transpose(3, 0, 1, 2, 4)


def _frame_major_patches(x, kernel_hw: Pair, strides: Pair, padding: Padding, out_hw: Pair):
  """The 2D im2col patches of every frame of x (B, T, H, W, C), frame-major and transposed:
  (T, C * kh * kw, B * Ho * Wo).

  The frames are split into their sh x sw stride phases first, so every kernel tap reads a
  unit-stride window: XLA's loops then copy whole rows (a strided gather, or a row-major patch
  matrix transposed afterwards, took 2-4x as long for stems).
  """
  (kh, kw), (sh, sw), (ho, wo) = kernel_hw, strides, out_hw
  batch, frames, height, width, cin = x.shape
  (ph0, ph1), (pw0, pw1) = padding
  hq, wq = -(-(height + ph0 + ph1) // sh), -(-(width + pw0 + pw1) // sw)
  pads = ((0, 0),) * 3 + ((ph0, hq * sh - height - ph0), (pw0, wq * sw - width - pw0))
  x = jnp.pad(x.transpose(1, 4, 0, 2, 3), pads)
  phases = x.reshape(frames, cin, batch, hq, sh, wq, sw).transpose(0, 1, 2, 4, 6, 3, 5)
  rows = jnp.stack([phases[:, :, :, i % sh, :, i // sh:i // sh + ho] for i in range(kh)], 2)
  taps = jnp.stack([rows[:, :, :, :, j % sw, :, j // sw:j // sw + wo] for j in range(kw)], 3)
  return taps.reshape(frames, cin * kh * kw, batch * ho * wo)


def frame_pair_waste(frames: int, kt: int, st: int, pt: int) -> float:
  """All (input frame, output frame) pairs of a clip over those a temporal kernel reads."""
  out_frames = _output_frames(frames, kt, st, pt)
  needed = sum(_tap_frames(frames, out_frames, tap, st, pt)[1] for tap in range(kt))
  return frames * out_frames / max(needed, 1)


def uses_frame_pair_weight_gradient(cin: int, frames: int, kernel_shape: Sequence[int],
                                    strides: Triple, padding: Triple) -> bool:
  """Whether a frame-sum 3D convolution's weight gradient is `frame_pair_weight_gradient`:
  stems (few input channels) where the frame pairs waste at most FRAME_PAIRS_MAX_WASTE. For
  more channels the frame-major patches are no faster than `patch_weight_gradient`'s (R3D-18's
  3x3x3 at 14^2: 0.010 s against 0.008 s)."""
  return (cin <= PATCH_GRAD_MAX_CHANNELS and frame_pair_waste(
      frames, kernel_shape[0], strides[0], padding[0]) <= FRAME_PAIRS_MAX_WASTE)


def frame_pair_weight_gradient(x, dy, kernel_shape: Sequence[int], strides: Triple,
                               padding: Triple):
  """dW (kT, kH, kW, Cin, Cout) of a frame-sum 3D convolution from one matrix product over all
  (input frame, output frame) pairs:

      Q = patches (T * kH * kW * Cin, B * Ho * Wo) . dY (B * Ho * Wo, To * Cout)
      dW[tap] = sum over output frames o of Q[input frame o * sT + tap - pT, o]

  The product is a plain, well-shaped one (XLA's CPU backend runs it near peak, where the
  patch weight gradient's contracts over rows and needs a kT-times copy of dY): R3D-18's stem
  on 4 x 8 x 112^2, 0.10-0.13 s against 0.22 s; SaliNet's on 2 x 8 x 224^2, 0.19-0.20 against
  0.36-0.39 s, though these compute 64 frame pairs where the kernels need 44 and 40.
  """
  kt, kh, kw, cin, cout = kernel_shape
  st, sh, sw = strides
  pt, ph, pw = padding
  batch, frames = x.shape[:2]
  out_frames, out_hw = dy.shape[1], dy.shape[2:4]
  patches = _frame_major_patches(x, (kh, kw), (sh, sw), ((ph, ph), (pw, pw)), out_hw)
  dy_cols = dy.transpose(0, 2, 3, 1, 4).reshape(-1, out_frames * cout)
  pairs = jnp.dot(patches.reshape(frames * cin * kh * kw, -1), dy_cols)
  pairs = pairs.reshape(frames, cin * kh * kw, out_frames, cout).transpose(2, 0, 1, 3)
  # Tap t of output frame o sits at padded frame o * sT + t: skew the (o, padded frame) grid by
  # sT per row, so that every tap becomes one column, and sum over the output frames.
  padded = frames + 2 * pt
  pairs = jnp.pad(pairs, ((0, 0), (pt, pt), (0, 0), (0, 0)))
  pairs = pairs.reshape((out_frames * padded,) + pairs.shape[2:])
  pairs = jnp.pad(pairs, ((0, out_frames * st), (0, 0), (0, 0)))
  grad = pairs.reshape((out_frames, padded + st) + pairs.shape[1:])[:, :kt].sum(0)
  return grad.reshape(kt, cin, kh, kw, cout).transpose(0, 2, 3, 1, 4)


def stacked_taps_conv3d(x, kernel, strides: Triple, padding: Triple):
  """A 3D convolution as one 2D convolution over frames whose channels are the kT frames each
  output frame reads (zero frames for the temporal padding), kernel (kH, kW, kT * Cin, Cout).

  For stems (3 input channels) XLA's CPU convolution runs far below its speed on more channels.
  With its Eigen kernels (config.xla_cpu_convolutions='eigen'), SaliNet's 5x7x7 stem on
  2 x 8 x 224^2 takes 0.127-0.132 s this way against 0.174-0.186 s as a frame sum, R3D-18's
  7x7x7 on 4 x 8 x 112^2 0.080-0.084 against 0.112-0.116 s (with YNNPACK's: 0.11-0.12 against
  0.24 s, 0.13 s either way), though it also multiplies the padding frames.
  """
  kt, kh, kw, cin, cout = kernel.shape
  st, sh, sw = strides
  pt, ph, pw = padding
  batch, frames = x.shape[:2]
  out_frames = _output_frames(frames, kt, st, pt)
  x_padded = jnp.pad(x, ((0, 0), (pt, pt), (0, 0), (0, 0), (0, 0)))
  stacked = jnp.concatenate(
      [x_padded[:, tap:tap + st * (out_frames - 1) + 1:st] for tap in range(kt)], axis=-1)
  flat = stacked.reshape((batch * out_frames,) + stacked.shape[2:])
  kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * cin, cout)
  y = conv2d(flat, kernel_2d, (sh, sw), ((ph, ph), (pw, pw)))
  return y.reshape((batch, out_frames) + y.shape[1:])


def _patch_grad_forward(x, kernel, strides, padding):
  if x.shape[-1] <= PATCH_GRAD_MAX_CHANNELS:
    return stacked_taps_conv3d(x, kernel, strides, padding)
  return _frame_sum_forward(x, kernel, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _frame_sum_patch_grad(x, kernel, strides, padding):
  return _patch_grad_forward(x, kernel, strides, padding)


def _frame_sum_patch_gradients(settings, x, kernel, dy, want_dx: bool, want_dw: bool):
  strides, padding = settings
  dx = dw = None
  if want_dx:
    _, input_vjp = jax.vjp(lambda x_: _patch_grad_forward(x_, kernel, strides, padding), x)
    dx, = input_vjp(dy)
  if want_dw and uses_frame_pair_weight_gradient(x.shape[-1], x.shape[1], kernel.shape, strides,
                                                 padding):
    dw = frame_pair_weight_gradient(x, dy, kernel.shape, strides, padding)
  elif want_dw:
    dw = patch_weight_gradient(x, dy, kernel.shape, strides, padding)
  return dx, dw


_define_rule(_frame_sum_patch_grad, _patch_grad_forward, _frame_sum_patch_gradients)


def use_cpu_kernels() -> bool:
  return CPU_KERNELS and jax.default_backend() == 'cpu'


@contextlib.contextmanager
def disabled():
  """Traces plain XLA operations (and frame sums over padded clips) inside the block: what FLOP
  counts (salinet_jax/flops.py) and A/B measurements compare against."""
  global CPU_KERNELS
  previous, CPU_KERNELS = CPU_KERNELS, False
  try:
    yield
  finally:
    CPU_KERNELS = previous


def conv_general_dilated_for_backend(lhs, rhs, window_strides: Sequence[int], padding,
                                     lhs_dilation: Optional[Sequence[int]] = None,
                                     rhs_dilation: Optional[Sequence[int]] = None,
                                     dimension_numbers: Any = None,
                                     feature_group_count: int = 1,
                                     batch_group_count: int = 1, precision=None,
                                     preferred_element_type=None):
  """`lax.conv_general_dilated`, with `conv2d` / `depthwise_conv2d` for the 2D NHWC cases on
  the CPU backend, and a matrix product for pointwise 3D ones (S2DNet's f_theta trunk; the
  other 3D convolutions are layers.Conv3D's frame sums)."""
  plain = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  if (not use_cpu_kernels() or any(d != 1 for d in (lhs_dilation or ()))
      or any(d != 1 for d in (rhs_dilation or ()))
      or batch_group_count != 1 or preferred_element_type is not None
      or not _is_channels_last(dimension_numbers, lhs.ndim)):
    return plain()
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):  # 'SAME' or 'VALID' (flax nn.Conv's default is 'SAME')
    padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if lhs.ndim == 5:
    if (feature_group_count == 1 and rhs.shape[:3] == (1, 1, 1) and strides == (1, 1, 1)
        and all(pad == (0, 0) for pad in pads)):
      return channel_matmul(lhs, rhs[0, 0, 0], precision)
    return plain()
  if feature_group_count == 1:
    return conv2d(lhs, rhs, strides, pads, precision)
  if feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[2] == 1:
    return depthwise_conv2d(lhs, rhs, strides, pads)
  return plain()


def _is_channels_last(dimension_numbers, ndim: int) -> bool:
  """Whether a convolution's dimension numbers are NHWC/HWIO (2D) or NDHWC/DHWIO (3D)."""
  spec = CHANNELS_LAST.get(ndim)
  if dimension_numbers is None or spec is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, spec)
  return tuple(dimension_numbers) == spec


class ConvForBackend:
  """For flax `nn.Conv(..., conv_general_dilated_cls=ConvForBackend)`; its output is named
  CONV_OUTPUT."""

  def __call__(self, *args, **kwargs):
    return checkpoint_name(conv_general_dilated_for_backend(*args, **kwargs), CONV_OUTPUT)
