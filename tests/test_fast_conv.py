"""CPU kernels (salinet_jax/models/fast_conv.py, fast_pool.py) against JAX's own operations.

In float64, so that the custom gradients are checked to rounding, not to float32 noise: every
path (1x1 as matmul, matmul weight gradient, im2col backward, gradients written as convolutions,
patch weight gradient of stems, padding-free frame sums, depthwise multiply-adds, max-pool
gradient routing with ties) must give the values and the gradients that autodiff of the plain
XLA operation gives.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from salinet_jax import parallel
from salinet_jax.models import fast_conv
from salinet_jax.models import fast_pool
from salinet_jax.models import layers

from conftest import TEST_XLA_FLAGS

NHWC = ('NHWC', 'HWIO', 'NHWC')
NDHWC = ('NDHWC', 'DHWIO', 'NDHWC')


@pytest.fixture(autouse=True)
def _ynnpack_convolutions(monkeypatch):
  """The matmul, patch and frame-pair paths run where XLA keeps YNNPACK's convolutions (its
  default); tests of the Eigen mode set XLA_FLAGS themselves."""
  monkeypatch.setenv('XLA_FLAGS', TEST_XLA_FLAGS)


RTOL = 1e-10


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def _value_and_grads(f, *args):
  """f(*args) and the gradient of sum(sin(f)) (a non-uniform cotangent) for every argument."""
  out = f(*args)
  grads = jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=tuple(range(len(args))))(*args)
  return out, grads


def _assert_same(got, expected):
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert a.shape == b.shape
    scale = max(1.0, float(jnp.max(jnp.abs(b))))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=RTOL * scale)


def _assert_conv_matches_xla(conv, x, w, strides, padding):
  """`conv(x, w, strides, padding)` gives XLA's convolution's value and gradients; returns
  those."""
  expected = _value_and_grads(
      lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC), x, w)
  _assert_same(_value_and_grads(lambda x, w: conv(x, w, strides, padding), x, w), expected)
  return expected


@pytest.mark.parametrize('n,size,cin,cout,k,stride,pad', [
    (2, 6, 5, 7, 1, 1, 0),      # 1x1: matrix product
    (2, 7, 5, 7, 1, 2, 0),      # strided 1x1
    (2, 16, 32, 6, 3, 1, 1),    # matmul weight gradient (16 x 16 outputs > im2col limit)
    (2, 33, 32, 6, 3, 2, 1),    # strided, odd size
    (3, 7, 40, 8, 3, 1, 1),     # im2col backward (small feature map)
    (2, 9, 36, 5, 5, 2, 2),     # im2col backward, 5x5 stride 2
    (2, 10, 8, 6, 3, 1, 1),     # few channels: gradients as library convolutions
    (2, 12, 8, 6, 3, 2, 0),     # strided: the last input row is never read
    (2, 12, 5, 3, 4, 3, 1),     # even kernel, stride 3
    (1, 9, 6, 4, 5, 2, 2),      # 5x5 stride 2
])
def test_conv2d_matches_xla_values_and_gradients(n, size, cin, cout, k, stride, pad):
  with jax.enable_x64(True):
    x = _random((n, size, size, cin), 0)
    w = _random((k, k, cin, cout), 1)
    padding = ((pad, pad), (pad, pad))
    expected = _assert_conv_matches_xla(fast_conv.conv2d, x, w, (stride, stride), padding)
    # The weight gradient on its own (the custom rule), and under jit.
    got_jit = jax.jit(lambda x, w: _value_and_grads(
        lambda x, w: fast_conv.conv2d(x, w, (stride, stride), padding), x, w))(x, w)
    _assert_same(got_jit, expected)


@pytest.mark.parametrize('size,k,stride,padding', [
    (10, 3, 2, ((0, 2), (1, 0))),   # asymmetric padding
    (7, 2, 2, ((0, 0), (0, 1))),    # even kernel, no padding on one side
    (13, 5, 4, ((2, 1), (3, 3))),   # stride 4: two input rows past the last window
])
def test_gradients_written_as_convolutions_equal_autodiffs(size, k, stride, padding):
  with jax.enable_x64(True):
    x, w = _random((2, size, size + 1, 6), 14), _random((k, k, 6, 5), 15)
    _assert_conv_matches_xla(fast_conv.conv2d_library_gradients, x, w, (stride, stride), padding)


def _convolution_layouts(compiled_text: str):
  return sorted(set(re.findall(r'dim_labels=([0-9a-z_]+->[0-9a-z]+)', compiled_text)))


EIGEN_DISPATCH = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


@pytest.mark.parametrize('eigen', [False, True], ids=['ynnpack_dispatch', 'eigen_dispatch'])
@pytest.mark.parametrize('cin,stride,size', [(8, 1, 12), (32, 1, 16), (32, 2, 17)])
def test_gradients_inside_a_loop_are_library_convolutions(monkeypatch, eigen, cin, stride, size):
  """Autodiff's gradient convolutions come in dimension orders that XLA's CPU backend turns into
  its library kernels' order in the entry computation only: inside the `lax.scan` of gradient
  accumulation they ran as generic loops, 20x slower. Every convolution of a scanned gradient,
  input gradients included (the second convolution's), is in the NHWC/HWIO order (XLA's
  b01f_01io->b01f). XLA_FLAGS steers only which path `conv2d` takes here: XLA read them when
  the tests started its backend."""
  if jax.default_backend() != 'cpu':
    pytest.skip('the CPU kernels are only used on the CPU backend')
  if eigen:
    monkeypatch.setenv('XLA_FLAGS', EIGEN_DISPATCH)
  w = _random((3, 3, cin, cin), 16).astype(jnp.float32)
  clips = _random((2, 2, size, size, cin), 17).astype(jnp.float32)
  padding = ((1, 1), (1, 1))

  def loss(w, x):
    hidden = fast_conv.conv2d(x, w, (stride, stride), padding)
    return jnp.sum(fast_conv.conv2d(hidden, w, (1, 1), padding) ** 2)

  def accumulated(w, clips):
    def step(total, x):
      return total + jax.grad(loss)(w, x), None
    return lax.scan(step, jnp.zeros_like(w), clips)[0]

  text = jax.jit(accumulated).lower(w, clips).compile().as_text()
  assert 'while' in text
  assert _convolution_layouts(text) == ['b01f_01io->b01f']


@pytest.mark.parametrize('conv', ['conv2d', 'stem'])
def test_gradients_not_asked_for_are_not_traced(conv):
  """A clip's input gradient (a stem's) was traced, though never used: XLA removed it, but the
  benchmark's FLOP count, which reads the traced program, counted it (R3D-18's train step at
  4 x 8 x 112^2: 141 GFLOPs, of which 66 this gradient). The rules build only the gradients
  of what is differentiated."""
  from salinet_jax import flops  # pylint: disable=g-import-not-at-top
  if conv == 'conv2d':
    x, w = _random((2, 10, 10, 8), 18), _random((3, 3, 8, 4), 19)
    apply = lambda x, w: fast_conv.conv2d(x, w, (1, 1), ((1, 1), (1, 1)))
  else:
    x, w = _random((2, 4, 12, 12, 3), 20), _random((3, 5, 5, 3, 4), 21)
    apply = lambda x, w: fast_conv.frame_sum_conv3d(x, w, (1, 2, 2), (1, 2, 2))

  def macs(argnums):
    grad = jax.grad(lambda x, w: jnp.sum(jnp.sin(apply(x, w))), argnums=argnums)
    return sum(flops.jaxpr_macs(jax.make_jaxpr(grad)(x, w)).values())

  forward = sum(flops.jaxpr_macs(jax.make_jaxpr(apply)(x, w)).values())
  weight_only, input_only, both = macs(1), macs(0), macs((0, 1))
  assert weight_only + input_only == both + forward
  assert weight_only < both and input_only < both


def test_a_zero_cotangent_from_a_later_rule_is_no_gradient():
  """With symbolic zeros, a rule after the convolution may hand back no cotangent at all."""
  @jax.custom_vjp
  def blocked(y):
    return y

  blocked.defvjp(lambda y: (y, None), lambda _, g: (None,))
  x, w = _random((1, 5, 5, 2), 22), _random((3, 3, 2, 2), 23)
  x3, w3 = _random((1, 3, 6, 6, 2), 24), _random((3, 3, 3, 2, 2), 25)
  convs = [lambda w: fast_conv.conv2d_library_gradients(x, w, (1, 1), ((1, 1), (1, 1))),
           lambda w: fast_conv.conv2d_matmul_grad(x, w, (1, 1), ((1, 1), (1, 1))),
           lambda w: fast_conv.channel_matmul(x, w[0, 0]),
           lambda w: fast_conv.frame_sum_conv3d(x3, w3 * jnp.sum(w), (1, 1, 1), (1, 1, 1))]
  for conv in convs:
    grad = jax.grad(lambda w: jnp.sum(blocked(conv(w))) + jnp.sum(w))(w)
    np.testing.assert_array_equal(grad, jnp.ones_like(w))


@pytest.mark.parametrize('height,width,k,stride,pad', [
    (2, 2, 3, 1, 1), (1, 1, 3, 1, 1), (6, 6, 7, 2, 3), (4, 4, 5, 1, 2),
    (1, 4, 3, 1, 1),  # smaller than the kernel in one dimension only
])
def test_maps_smaller_than_their_kernel_are_matrix_products(height, width, k, stride, pad):
  """XLA's CPU backend swaps the operands of a convolution on a map smaller than its kernel and
  runs it as a generic loop (3x3 on 32 x 2 x 2 x 512: 292 ms): such maps with many channels are
  im2col products, with the values and gradients of the convolution, and no convolution is
  left."""
  padding = ((pad, pad), (pad, pad))
  cin = fast_conv.SMALL_MAP_MIN_CHANNELS
  with jax.enable_x64(True):
    x, w = _random((3, height, width, cin), 26), _random((k, k, cin, 4), 27)
    _assert_conv_matches_xla(fast_conv.conv2d, x, w, (stride, stride), padding)
  if jax.default_backend() == 'cpu':
    x, w = x.astype(jnp.float32), w.astype(jnp.float32)
    grads = jax.grad(lambda x, w: jnp.sum(fast_conv.conv2d(x, w, (stride, stride), padding)),
                     argnums=(0, 1))
    # XLA may itself turn a convolution on a one-row map into a product: the traced program
    # holds none either.
    assert 'conv_general_dilated' not in str(jax.make_jaxpr(grads)(x, w))
    assert _convolution_layouts(jax.jit(grads).lower(x, w).compile().as_text()) == []


def _assert_frame_sum_matches_xla(x, w, strides, padding):
  """frame_sum_conv3d's value and gradients equal XLA's 3D convolution's (float64)."""
  pads = tuple((p, p) for p in padding)
  expected = _value_and_grads(
      lambda x, w: lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NDHWC), x, w)
  got = _value_and_grads(lambda x, w: fast_conv.frame_sum_conv3d(x, w, strides, padding), x, w)
  _assert_same(got, expected)


# The function that computes each case's weight gradient on the CPU backend with YNNPACK's
# convolutions (XLA's default; Eigen's move 2D ones onto other paths): 'frame_pairs'
# (frame_pair_weight_gradient), 'patch' (patch_weight_gradient), and for per-tap 2D
# convolutions 'im2col' (up to IM2COL_GRAD_MAX_POSITIONS output positions) or 'matmul'
# (weight_gradient, one product per tap); 'library' (weight_gradient_as_conv) is counted too.
WEIGHT_GRADIENT_FUNCTIONS = {'frame_pairs': 'frame_pair_weight_gradient',
                             'patch': 'patch_weight_gradient', 'im2col': 'im2col',
                             'matmul': 'weight_gradient',
                             'library': 'weight_gradient_as_conv'}


def _count_calls(monkeypatch, names):
  """Wraps each fast_conv function of `names` (looked up by name when traced) to count its
  calls; returns {name: calls}."""
  calls = dict.fromkeys(names, 0)
  for name in names:
    function = getattr(fast_conv, name)

    def counted(*args, _name=name, _function=function, **kwargs):
      calls[_name] += 1
      return _function(*args, **kwargs)

    monkeypatch.setattr(fast_conv, name, counted)
  return calls


@pytest.mark.parametrize('frames,kernel,strides,padding,cin,weight_gradient', [
    (8, (3, 3, 3), (1, 1, 1), (1, 1, 1), 32, 'patch'),       # R3D's 3x3x3
    (1, (3, 3, 3), (1, 1, 1), (1, 1, 1), 33, 'patch'),       # one frame: outer taps on padding
    (2, (3, 3, 3), (2, 2, 2), (1, 1, 1), 32, 'im2col'),      # strided in time: 2D, 8 x 8 outputs
    (4, (1, 3, 3), (1, 1, 1), (0, 1, 1), 32, 'matmul'),      # one temporal tap: 2D, 15 x 15 outputs
    (8, (7, 7, 7), (1, 2, 2), (3, 3, 3), 3, 'frame_pairs'),  # R3D stem
    (6, (5, 3, 3), (2, 2, 2), (2, 1, 1), 3, 'frame_pairs'),  # strided in time and space
    (4, (4, 3, 3), (1, 1, 1), (0, 1, 1), 2, 'frame_pairs'),  # one output frame
    (8, (5, 7, 7), (1, 2, 2), (2, 3, 3), 3, 'frame_pairs'),  # I3D stem
    (5, (3, 3, 3), (2, 1, 1), (1, 1, 1), 3, 'frame_pairs'),  # strided in time
    (4, (2, 4, 4), (1, 3, 3), (0, 1, 1), 2, 'frame_pairs'),  # even kernel, stride 3 in space
    (9, (3, 7, 7), (1, 2, 2), (1, 3, 3), 3, 'patch'),        # stem on a long clip
    (4, (1, 9, 9), (1, 1, 1), (0, 4, 4), 1, 'patch'),        # TSFP's first gate
    (8, (1, 9, 9), (2, 2, 2), (0, 4, 4), 1, 'patch'),        # strided in time: dY dilated
    (16, (3, 7, 7), (2, 2, 2), (1, 3, 3), 3, 'patch'),       # stem, strided in time
    (4, (3, 1, 1), (1, 1, 1), (1, 0, 0), 6, 'patch'),        # I3D "a" conv (1x1 spatial)
    (1, (3, 3, 3), (1, 1, 1), (3, 1, 1), 3, 'frame_pairs'),  # output frames that read padding only
])
def test_frame_sum_conv3d_matches_native_3d_conv(monkeypatch, frames, kernel, strides, padding,
                                                 cin, weight_gradient):
  """Each case also reaches the weight gradient it names, so that a changed threshold cannot
  move a case onto another path unnoticed."""
  calls = _count_calls(monkeypatch, WEIGHT_GRADIENT_FUNCTIONS.values())
  with jax.enable_x64(True):
    x = _random((2, frames, 15, 15, cin), 2)
    w = _random(tuple(kernel) + (cin, 5), 3)
    _assert_frame_sum_matches_xla(x, w, strides, padding)
  if jax.default_backend() == 'cpu' and not parallel.cpu_convolutions_are_eigens():
    reached = sorted(name for name, count in calls.items() if count)
    assert reached == [WEIGHT_GRADIENT_FUNCTIONS[weight_gradient]]


def test_patch_weight_gradient_serves_stems_and_stride_one_temporal_kernels():
  uses = fast_conv.uses_patch_weight_gradient
  assert uses(3, (5, 7, 7), (1, 2, 2))       # stem
  assert uses(3, (1, 7, 7), (1, 2, 2))       # 2D stem of a frame-wise network
  assert uses(64, (3, 3, 3), (1, 1, 1))      # R3D-18's blocks
  assert uses(256, (3, 1, 1), (1, 1, 1))     # I3D's temporal "a" convolutions
  assert not uses(64, (3, 3, 3), (2, 2, 2))  # R3D-18's downsampling: half the frames
  assert not uses(64, (1, 3, 3), (1, 1, 1))  # I3D's spatial "b" convolutions


def test_eigen_convolutions_keep_convolution_weight_gradients_except_for_stems(monkeypatch):
  """With XLA's Eigen convolutions (config.xla_cpu_convolutions='eigen'), 2D weight gradients
  as convolutions are faster than the matmul and patch ones: only stems with several temporal
  taps keep theirs (2D kernels on few channels too run as convolutions), and the values and
  gradients stay XLA's."""
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution')
  uses = fast_conv.uses_patch_weight_gradient
  assert not uses(64, (3, 3, 3), (1, 1, 1))
  assert not uses(256, (3, 1, 1), (1, 1, 1))
  assert uses(3, (7, 7, 7), (1, 2, 2))
  assert not uses(1, (1, 9, 9), (1, 1, 1))  # TSFP's gate on a one-channel map: a 2D kernel
  assert not uses(3, (1, 7, 7), (1, 2, 2))
  with jax.enable_x64(True):
    _assert_frame_sum_matches_xla(_random((2, 4, 9, 9, 32), 8), _random((3, 3, 3, 32, 4), 9),
                                  (1, 1, 1), (1, 1, 1))
    _assert_frame_sum_matches_xla(_random((2, 3, 11, 11, 1), 12), _random((1, 5, 5, 1, 4), 13),
                                  (1, 1, 1), (0, 2, 2))
    x2, w2 = _random((2, 9, 9, 32), 10), _random((3, 3, 32, 4), 11)
    jaxpr = str(jax.make_jaxpr(jax.grad(
        lambda w: jnp.sum(fast_conv.conv2d(x2, w, (1, 1), ((1, 1), (1, 1))))))(w2))
    # The weight gradient is one convolution (with YNNPACK's: a matrix product per tap).
    assert 'dot_general' not in jaxpr
    assert jaxpr.count('conv_general_dilated') == 2  # the forward and the weight gradient


def test_frame_pairs_serve_stems_where_they_waste_few_products():
  waste = fast_conv.frame_pair_waste
  assert waste(8, 7, 1, 3) == 64 / 44          # R3D-18's stem: 8 x 8 pairs, 44 read
  assert waste(6, 5, 2, 2) == 18 / 12
  assert waste(4, 4, 1, 0) == 1
  uses = fast_conv.uses_frame_pair_weight_gradient
  assert uses(3, 8, (7, 7, 7), (1, 2, 2), (3, 3, 3))       # R3D-18's stem, 8 or 16 frames
  assert uses(3, 16, (7, 7, 7), (1, 2, 2), (3, 3, 3))
  assert uses(3, 8, (5, 7, 7), (1, 2, 2), (2, 3, 3))       # I3D's stem
  assert not uses(3, 16, (3, 7, 7), (1, 2, 2), (1, 3, 3))  # 5.6 pairs computed per pair read
  assert not uses(3, 32, (5, 7, 7), (1, 2, 2), (2, 3, 3))
  assert not uses(64, 8, (3, 3, 3), (1, 1, 1), (1, 1, 1))  # R3D-18's blocks: patch gradient


def test_pointwise_weight_gradient_reads_the_output_gradient_untransposed():
  """Differentiated automatically, a 1x1 convolution's weight gradient made XLA's CPU backend
  write a transposed (Cout, N*H*W) copy of the output gradient, fused into its producer (in
  SaliNet, BatchNorm's backward): 22 % of the K400 train step. channel_matmul's rule reads dy as
  it is stored."""
  if jax.default_backend() != 'cpu':
    pytest.skip('the CPU kernels are only used on the CPU backend')
  n, size, cin, cout = 2, 16, 8, 32

  def loss(x, w, s):
    y = fast_conv.conv2d(x, w, (1, 1), ((0, 0), (0, 0)))
    return jnp.sum(jax.nn.relu(y * s) ** 2)

  args = (jnp.ones((n, size, size, cin)), jnp.ones((1, 1, cin, cout)), jnp.ones((cout,)))
  text = jax.jit(jax.grad(loss, argnums=1)).lower(*args).compile().as_text()
  shapes = (f'f32[{cout},{n * size * size}]', f'f32[{cout},{n},{size},{size}]')
  transposed = [line for line in text.splitlines() if any(shape in line for shape in shapes)]
  assert not transposed, transposed[:3]


def test_kernels_switch_off_to_plain_xla():
  """Inside `disabled()` the gradient is autodiff's of plain XLA operations: no custom rule is
  traced (the patch weight gradient's is, outside, on the CPU backend)."""
  x, w = _random((2, 4, 8, 8, 32), 4), _random((3, 3, 3, 32, 4), 5)

  def gradient_jaxpr():
    # A new function per trace: make_jaxpr caches traces by function, and CPU_KERNELS is no key.
    return str(jax.make_jaxpr(jax.grad(
        lambda w: jnp.sum(jnp.sin(fast_conv.frame_sum_conv3d(x, w, (1, 1, 1), (1, 1, 1))))))(w))

  on_cpu = jax.default_backend() == 'cpu'
  on = fast_conv.frame_sum_conv3d(x, w, (1, 1, 1), (1, 1, 1))
  assert fast_conv.use_cpu_kernels() == on_cpu
  assert ('custom_vjp_call' in gradient_jaxpr()) == on_cpu
  with fast_conv.disabled():
    assert not fast_conv.use_cpu_kernels()
    assert 'custom_vjp_call' not in gradient_jaxpr()
    off = fast_conv.frame_sum_conv3d(x, w, (1, 1, 1), (1, 1, 1))
  assert fast_conv.use_cpu_kernels() == on_cpu
  np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stride', [1, 2])
def test_depthwise_conv_matches_grouped_conv(stride):
  with jax.enable_x64(True):
    x = _random((2, 11, 11, 6), 6)
    w = _random((3, 3, 1, 6), 7)
    padding = ((1, 1), (1, 1))
    expected = _value_and_grads(
        lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                              dimension_numbers=NHWC, feature_group_count=6),
        x, w)
    got = _value_and_grads(
        lambda x, w: fast_conv.depthwise_conv2d(x, w, (stride, stride), padding), x, w)
    _assert_same(got, expected)


def test_pointwise_3d_convolution_is_a_product_of_channels():
  """A 1x1x1 3D convolution through the backend drop-in (S2DNet's f_theta trunk) is a matrix
  product with XLA's values and gradients: no convolution, so none in autodiff's order inside
  the loop of gradient accumulation."""
  with jax.enable_x64(True):
    x, w = _random((2, 3, 4, 4, 6), 28), _random((1, 1, 1, 6, 5), 29)
    pads = ((0, 0),) * 3
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, NDHWC)
    conv = lambda x, w: fast_conv.conv_general_dilated_for_backend(  # noqa: E731
        x, w, (1, 1, 1), 'SAME', dimension_numbers=numbers)  # as flax nn.Conv passes it
    expected = _value_and_grads(
        lambda x, w: lax.conv_general_dilated(x, w, (1, 1, 1), pads, dimension_numbers=NDHWC),
        x, w)
    _assert_same(_value_and_grads(conv, x, w), expected)
    assert 'conv_general_dilated' not in str(jax.make_jaxpr(jax.grad(
        lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1)))(x, w))


@pytest.mark.parametrize('groups,features', [(1, 8), (6, 6)])
def test_flax_conv_with_the_backend_convolution(groups, features):
  x = _random((2, 9, 9, 6), 8).astype(jnp.float32)
  plain = nn.Conv(features, (3, 3), (2, 2), ((1, 1), (1, 1)), feature_group_count=groups,
                  use_bias=False)
  fast = nn.Conv(features, (3, 3), (2, 2), ((1, 1), (1, 1)), feature_group_count=groups,
                 use_bias=False, conv_general_dilated_cls=fast_conv.ConvForBackend)
  variables = plain.init(jax.random.key(0), x)
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('window,strides,padding', [
    ((3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1))),   # R3D stem pool
    ((1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),   # I3D stem pool
    ((2, 1, 1), (2, 1, 1), ((0, 0), (0, 0), (0, 0))),   # I3D pool1
    ((1, 2, 2), (1, 2, 2), ((0, 0), (0, 0), (0, 0))),   # non-local keys
])
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_values_and_gradient_routing(window, strides, padding, ties):
  with jax.enable_x64(True):
    x = np.random.default_rng(9).standard_normal((2, 6, 9, 9, 3))
    if ties:  # ReLU outputs: many equal maxima; the gradient goes to the first in window order
      x = np.maximum(np.round(x), 0.0)
    x = jnp.asarray(x)
    expected = _value_and_grads(lambda x: nn.max_pool(x, window, strides, padding), x)
    got = _value_and_grads(lambda x: fast_pool.max_pool(x, window, strides, padding), x)
    _assert_same(got, expected)
    np.testing.assert_array_equal(
        layers.max_pool3d(x, window, strides, tuple(p[0] for p in padding)),
        nn.max_pool(x, window, strides, padding))
