"""FLOP and parameter counting: single layers by hand, the K400 SaliNet against the reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from salinet_jax import flops
from salinet_jax.models import fast_conv
from salinet_jax.models import layers
from salinet_jax.models import resnet3d
from salinet_jax.models import salinet


class ConvThenDense(nn.Module):
  """One 3x3x3 conv (3 -> 8, stride (1, 2, 2)), global average pool, one dense layer (8 -> 5)."""
  conv_impl: str = 'native'

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = layers.Conv3D(8, 3, (1, 2, 2), 1, use_bias=True, impl=self.conv_impl, name='conv')(x)
    x = layers.batch_norm(train, name='bn')(x)
    return nn.Dense(5, name='fc')(jnp.mean(x, axis=(1, 2, 3)))


@pytest.mark.parametrize('conv_impl', ['native', 'frame_sum'])
def test_single_conv_and_dense_by_hand(conv_impl):
  info = flops.model_info(ConvThenDense(conv_impl), (2, 4, 10, 10, 3))  # batch 2: per-view numbers
  conv_macs = (4 * 5 * 5 * 8) * (3 * 3 * 3 * 3)  # output elements x (Cin x kernel volume)
  dense_macs = 8 * 5
  assert info['gflops_by_group'] == pytest.approx(
      {'conv': conv_macs * 1e-9, 'fc': dense_macs * 1e-9})
  assert info['gflops'] == pytest.approx((conv_macs + dense_macs) * 1e-9)
  assert info['params_by_group'] == {'conv': 3 * 27 * 8 + 8, 'bn': 16, 'fc': 8 * 5 + 5}
  assert info['params'] == 656 + 16 + 45
  # Deeper breakdowns by module path (mutation audit: `depth` ignored passed every test).
  deeper = flops.model_info(ConvThenDense(conv_impl), (2, 4, 10, 10, 3), depth=2)
  assert deeper['params_by_module'] == {'conv/kernel': 3 * 27 * 8, 'conv/bias': 8, 'bn/scale': 8,
                                        'bn/bias': 8, 'fc/kernel': 8 * 5, 'fc/bias': 5}
  # Per view too (mutation audit: BatchNorm counted over the whole batch passed every test).
  with_norm = flops.model_info(ConvThenDense(conv_impl), (2, 4, 10, 10, 3), count_norm=True)
  assert with_norm['gflops_by_kind']['norm'] == pytest.approx(2 * 4 * 5 * 5 * 8 * 1e-9)


def test_matmul_counts():
  macs = flops.count_macs(lambda a, b: jnp.einsum('bqc,bkc->bqk', a, b),
                          jnp.ones((2, 6, 4)), jnp.ones((2, 3, 4)))
  assert sum(macs.values()) == 2 * 6 * 3 * 4


def test_matmuls_inside_a_scan_count_once_per_iteration():
  """Mutation audit: a scan's body counted once passed every test."""
  def three_steps(x, w):
    return jax.lax.scan(lambda carry, _: (carry @ w, None), x, None, length=3)[0]

  macs = flops.count_macs(three_steps, jnp.ones((1, 8)), jnp.ones((8, 8)))
  assert sum(macs.values()) == 3 * 8 * 8
  # A scan inside a scan: the outer length times the inner (the outer multiplier was dropped).
  twice_three = lambda x, w: jax.lax.scan(lambda c, _: (three_steps(c, w), None), x, None,
                                          length=2)[0]
  macs = flops.count_macs(twice_three, jnp.ones((1, 8)), jnp.ones((8, 8)))
  assert sum(macs.values()) == 2 * 3 * 8 * 8


def test_a_cond_counts_its_costliest_branch():
  """A cond runs one branch: the costliest is counted, not the cheapest nor their sum (mutation
  audit: no test had a cond)."""
  def either(pred, x):
    return jax.lax.cond(pred, lambda y: (y @ y) @ y, lambda y: y @ y, x)

  macs = flops.count_macs(either, True, jnp.ones((4, 4)))
  assert sum(macs.values()) == 2 * 4 * 4 * 4


def test_backward_pass_work_is_grouped_under_its_module():
  """Differentiated equations carry nested wrappers in their name stack
  ('transpose(jvp(backbone))'): every one is stripped, so a train step's backward pass counts
  under its module, not under a group of its own per transform."""
  def loss(w, x):
    with jax.named_scope('backbone'):
      return jnp.sum(jnp.tanh(x @ w) @ w)

  macs = flops.count_macs(jax.grad(loss), jnp.ones((8, 8)), jnp.ones((2, 8)))
  # Forward: two (2, 8) x (8, 8) products; backward: the weight's gradient of each, and the
  # gradient through the second to the first (no gradient to the input x).
  assert macs == {(('backbone',), 'dot_general'): (2 + 3) * 2 * 8 * 8}


def test_nl_i3d_r50_matches_reference_figures():
  info = flops.model_info(resnet3d.NonLocalI3DClassifier(num_classes=400), (8, 224, 224, 3))
  assert info['params'] == 35_401_936
  assert info['gflops'] == pytest.approx(36.54, abs=0.01)
  assert info['gflops_by_kind']['dot_general'] == pytest.approx(2.99 + 0.0008, abs=0.01)
  at_256 = flops.model_info(resnet3d.NonLocalI3DClassifier(num_classes=400), (8, 256, 256, 3))
  assert at_256['gflops'] == pytest.approx(48.91, abs=0.01)


def test_k400_salinet_matches_reference_figures():
  model = salinet.SaliNetI3D(num_classes=400)
  info = flops.model_info(model, (8, 224, 224, 3), depth=2, count_norm=True)
  assert info['params'] == 46_534_276
  assert info['params_by_group'] == {'backbone': 34_582_336, 'head': 819_600, 'ssf': 11_011_842,
                                     'tsfp': 120_488, 'fusion': 10}
  by_module = info['gflops_by_module']
  for k in (1, 2, 3):
    assert by_module[f'ssf/ssf{k}'] == pytest.approx(6.58, abs=0.01)
  assert by_module['tsfp/tsfp1'] == pytest.approx(0.75, abs=0.01)
  # The closed form runs TSFP_2's gate on the T P1-frames only; the reference runs it on all 2T
  # interleaved frames (0.37 G) and then discards the S2 half through its temporal stride.
  assert by_module['tsfp/tsfp2'] == pytest.approx(0.37 / 2, abs=0.01)
  assert info['gflops_by_kind']['norm'] == pytest.approx(57.54 - 57.40, abs=0.01)
  without_norm = info['gflops'] - info['gflops_by_kind']['norm']
  assert without_norm == pytest.approx(57.40 - 0.37 / 2, abs=0.02)
  at_256 = flops.model_info(model, (8, 256, 256, 3))
  assert at_256['gflops'] == pytest.approx(76.16 - 0.37 / 2 * (256 / 224)**2, abs=0.02)


@pytest.mark.parametrize('model', [
    resnet3d.HaraResNet3DClassifier(num_classes=10, depth=18, width=16),
    resnet3d.NonLocalI3DClassifier(num_classes=10, width=8)], ids=['hara_r3d18', 'nl_i3d'])
def test_counted_macs_agree_with_xla_cost_analysis(model):
  """XLA's cost analysis of the compiled forward counts 2 FLOPs per multiply-accumulate, skips
  the taps that fall on padding and adds elementwise work; at 112 px the two must agree to a
  few percent once the MACs are doubled."""
  import jax  # pylint: disable=g-import-not-at-top
  from salinet_jax import models  # pylint: disable=g-import-not-at-top
  shape = (1, 8, 112, 112, 3)
  counted = flops.model_info(model, shape[1:])['gflops'] * 1e9
  variables = models.abstract_variables(model, shape)
  # XLA's own convolutions: the CPU kernels (models/fast_conv.py) skip the temporal taps that
  # read only padding, so XLA would count fewer FLOPs than the textbook operations compute.
  with fast_conv.disabled():
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        variables, jax.ShapeDtypeStruct(shape, jnp.float32)).compile()
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  assert analysis['flops'] / (2 * counted) == pytest.approx(1.0, abs=0.08)
