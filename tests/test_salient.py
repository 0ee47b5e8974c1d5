"""SaliNet side modules and models: shapes, closed form vs literal, switches, gradients."""

from typing import Any, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from salinet_jax import losses
from salinet_jax.models import build_model
from salinet_jax.models import layers
from salinet_jax.models import salient
from salinet_jax.models import salinet
from tests.conftest import random_variables

K400_CLASSES = 400
CLIP_224 = (1, 8, 224, 224, 3)
I3D_STRIDES = ((1, 2, 2), (1, 2, 2), (1, 2, 2))
# These tests run each compiled function once: XLA's cheapest CPU backend level halves compile time.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def interleave_frames(a, b):
  """[a_0, b_0, a_1, b_1, ...] along time (axis 1): the reference's chunk-and-concatenate."""
  if a.shape != b.shape:
    raise ValueError(f'Cannot interleave maps of shapes {a.shape} and {b.shape}.')
  stacked = jnp.stack([a, b], axis=2)
  return stacked.reshape((a.shape[0], 2 * a.shape[1]) + a.shape[2:])


class InterleavedCrossScaleFusion(nn.Module):
  """The reference's literal interleave-then-pool, to test the closed-form `CrossScaleFusion`.

  Same attributes and parameter names as `CrossScaleFusion`. Where the closed form pools with
  temporal stride r, the literal form pools the interleaved (2x longer) sequence with stride 2r,
  and TSFP_2's gate runs on the interleaved sequence with temporal stride 2r. Requires sizes that
  divide exactly (as in the reference).
  """
  strides: Sequence[layers.Triple]
  use_tsfp: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, s1, s2, s3) -> Dict[str, jnp.ndarray]:
    st1, st2, st3 = (tuple(s) for s in self.strides)
    doubled = lambda s: (2 * s[0], s[1], s[2])  # noqa: E731
    out = {}
    if self.use_tsfp:
      out['P1'], out['G1'] = salient.TSFP(st1, dtype=self.dtype, conv_impl=self.conv_impl,
                                          name='tsfp1')(s1)
      out['P2'], out['G2'] = salient.TSFP(doubled(st2), dtype=self.dtype,
                                          conv_impl=self.conv_impl,
                                          name='tsfp2')(interleave_frames(out['P1'], s2))
    else:
      out['P1'] = layers.avg_pool3d(s1, st1, st1)
      out['P2'] = layers.avg_pool3d(interleave_frames(out['P1'], s2), doubled(st2), doubled(st2))
    out['P3'] = layers.avg_pool3d(interleave_frames(out['P2'], s3), doubled(st3), doubled(st3))
    return out


def _abstract(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  return variables, x


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------------------------------------
# The full-size K400 model, abstractly.
# ----------------------------------------------------------------------------------------------


def test_k400_salinet_shapes_for_8x224_clip():
  model = salinet.SaliNetI3D(num_classes=K400_CLASSES)
  variables, x = _abstract(model, CLIP_224)
  (logits, aux), state = jax.eval_shape(
      lambda v, x: model.apply(v, x, return_aux=True, mutable=['intermediates']), variables, x)
  assert logits.shape == (1, K400_CLASSES) and logits.dtype == jnp.float32
  assert {k: v.shape for k, v in aux.items()} == {
      'S1': (1, 4, 56, 56, 1), 'S2': (1, 4, 28, 28, 1), 'S3': (1, 4, 14, 14, 1),
      'P1': (1, 4, 28, 28, 1), 'G1': (1, 4, 28, 28, 1),
      'P2': (1, 4, 14, 14, 1), 'G2': (1, 4, 14, 14, 1),
      'P3': (1, 4, 7, 7, 1), 'saliency_final': (1, 1, 7, 7, 1)}
  assert all(v.dtype == jnp.float32 for v in aux.values())
  stages = {k: v[0].shape for k, v in state['intermediates']['backbone'].items()}
  assert stages == {
      's1_out': (1, 8, 56, 56, 64), 's2_out': (1, 8, 56, 56, 256), 'pool1': (1, 4, 56, 56, 256),
      's3_out': (1, 4, 28, 28, 512), 's4_out': (1, 4, 14, 14, 1024), 's5_out': (1, 4, 7, 7, 2048)}


def test_k400_salinet_parameter_counts_match_reference():
  variables, _ = _abstract(salinet.SaliNetI3D(num_classes=K400_CLASSES), CLIP_224)
  params = variables['params']
  assert _count(params) == 46_534_276
  assert _count(params['backbone']) + _count(params['head']) == 35_401_936
  assert [_count(params['ssf'][f'ssf{k}']) for k in (1, 2, 3)] == [524_544, 2_097_664, 8_389_632]
  assert _count(params['ssf']['shared_bn']) == 2
  assert [_count(params['tsfp'][f'tsfp{k}']) for k in (1, 2)] == [60_244, 60_244]
  assert _count(params['fusion']) == 10
  # The reference state_dict has 433 keys: ours, plus num_batches_tracked for each of its 59 BNs.
  num_bns = sum(1 for path, _ in jax.tree_util.tree_leaves_with_path(variables['batch_stats'])
                if jax.tree_util.keystr(path).endswith("['mean']"))
  assert num_bns == 59
  assert len(jax.tree_util.tree_leaves(variables)) + num_bns == 433


def test_shared_saliency_bn_switch_changes_param_tree():
  shared, _ = _abstract(salinet.SaliNetI3D(num_classes=K400_CLASSES), CLIP_224)
  separate, _ = _abstract(
      salinet.SaliNetI3D(num_classes=K400_CLASSES, shared_saliency_bn=False), CLIP_224)
  assert set(shared['params']['ssf']) == {'shared_bn', 'ssf1', 'ssf2', 'ssf3'}
  assert set(separate['params']['ssf']) == {'ssf1', 'ssf2', 'ssf3'}
  for k in (1, 2, 3):
    assert 'bn' not in shared['params']['ssf'][f'ssf{k}']
    assert set(separate['params']['ssf'][f'ssf{k}']['bn']) == {'scale', 'bias'}
    assert set(separate['batch_stats']['ssf'][f'ssf{k}']['bn']) == {'mean', 'var'}
  assert set(shared['batch_stats']['ssf']) == {'shared_bn'}
  assert _count(separate['params']) == _count(shared['params']) + 4


def test_shared_saliency_bn_updates_its_statistics_once_per_scale():
  rng = np.random.default_rng(3)
  features = [jnp.asarray(rng.normal(size=(2, 2, 8 // 2**k, 8 // 2**k, 8 * 2**k)), jnp.float32)
              for k in range(3)]
  separate = salient.SSFPyramid(shared_bn=False, conv_impl='native')
  shared = salient.SSFPyramid(shared_bn=True, conv_impl='native')
  sep_vars = random_variables(separate, features, train=False)
  shared_vars = random_variables(shared, features, train=False)
  # Same SSF weights in both; BN scale 1 / bias 0 and running stats (0, 1) in both.
  shared_vars['params'].update(
      {k: {n: v for n, v in sep_vars['params'][k].items() if n != 'bn'} for k in
       ('ssf1', 'ssf2', 'ssf3')})
  _, sep_state = separate.apply(sep_vars, features, train=True, mutable=['batch_stats'])
  _, shared_state = shared.apply(shared_vars, features, train=True, mutable=['batch_stats'])
  # One update from 0 with PyTorch momentum 0.1 stores 0.1 * (batch mean of scale k).
  batch_means = [10 * sep_state['batch_stats'][f'ssf{k}']['bn']['mean'] for k in (1, 2, 3)]
  expected = 0.0
  for mean in batch_means:  # the shared BN is updated by scale 1, then 2, then 3
    expected = 0.9 * expected + 0.1 * mean
  np.testing.assert_allclose(shared_state['batch_stats']['shared_bn']['mean'], expected, rtol=1e-5)
  assert float(jnp.abs(batch_means[0] - batch_means[2]).max()) > 1e-3


def test_module_switches():
  plain, _ = _abstract(salinet.SaliNetI3D(num_classes=10, ssf=False, tsfp=False), CLIP_224)
  assert set(plain['params']) == {'backbone', 'head'}
  assert _count(plain['params']) == 35_401_936 - 400 * 2049 + 10 * 2049
  ssf_only, x = _abstract(salinet.SaliNetI3D(num_classes=10, tsfp=False), CLIP_224)
  assert set(ssf_only['params']) == {'backbone', 'ssf', 'fusion', 'head'}
  _, aux = jax.eval_shape(lambda v, x: salinet.SaliNetI3D(num_classes=10, tsfp=False).apply(
      v, x, return_aux=True), ssf_only, x)
  assert 'G1' not in aux and aux['P1'].shape == (1, 4, 28, 28, 1)
  with pytest.raises(ValueError, match='tsfp'):
    _abstract(salinet.SaliNetI3D(num_classes=10, ssf=False, tsfp=True), CLIP_224)


# ----------------------------------------------------------------------------------------------
# Closed-form cross-scale fusion against the reference's literal interleave-then-pool.
# ----------------------------------------------------------------------------------------------


def _uniform(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def _maps(seed, batch, scales):
  """Random saliency-like maps in (0, 1), one per scale."""
  return [_uniform((batch,) + s + (1,), seed=seed * 10 + k) for k, s in enumerate(scales)]


@pytest.mark.parametrize('frames', [2, 4, 6])
@pytest.mark.parametrize('use_tsfp', [True, False])
def test_closed_form_matches_interleave_then_pool(frames, use_tsfp):
  scales = [(frames, 16, 16), (frames, 8, 8), (frames, 4, 4)]
  _check_closed_form(scales, I3D_STRIDES, use_tsfp, seed=frames)


def test_closed_form_matches_interleave_then_pool_when_time_halves():
  # A Hara-like pyramid: each scale also halves time, so pools and TSFP_2's gate stride 2 in time.
  scales = [(4, 16, 16), (2, 8, 8), (1, 4, 4)]
  _check_closed_form(scales, ((2, 2, 2), (2, 2, 2), (1, 2, 2)), True, seed=7)


def _check_closed_form(scales, strides, use_tsfp, seed):
  s1, s2, s3 = _maps(seed, 2, scales)
  closed = salient.CrossScaleFusion(strides, use_tsfp=use_tsfp, conv_impl='native')
  literal = InterleavedCrossScaleFusion(strides, use_tsfp=use_tsfp, conv_impl='native')
  variables = random_variables(closed, s1, s2, s3, seed=seed)
  # Random output projections, so the gradient test sees every output.
  out_shapes = jax.eval_shape(lambda *a: closed.apply(variables, *a), s1, s2, s3)
  rng = np.random.default_rng(seed)
  weights = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32)
             for k, v in sorted(out_shapes.items())}

  def objective(module, variables, maps):
    out = module.apply(variables, *maps)
    return sum(jnp.sum(out[k] * weights[k]) for k in weights), out

  results = []
  for module in (closed, literal):
    grad_fn = jax.jit(jax.value_and_grad(lambda v, m: objective(module, v, m), argnums=(0, 1),
                                         has_aux=True), compiler_options=FAST_COMPILE)
    results.append(grad_fn(variables, (s1, s2, s3)))
  (_, out_c), (gv_c, gm_c) = results[0]
  (_, out_l), (gv_l, gm_l) = results[1]
  expected_keys = {'P1', 'G1', 'P2', 'G2', 'P3'} if use_tsfp else {'P1', 'P2', 'P3'}
  assert set(out_c) == set(out_l) == expected_keys
  for k in out_c:
    np.testing.assert_allclose(out_c[k], out_l[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree_util.tree_leaves((gv_c, gm_c)), jax.tree_util.tree_leaves((gv_l, gm_l))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(gm_c))


def _same_conv_numpy(x, kernel, strides):
  """Bias-free 1xkxk convolution with "same" padding and `strides` (t, h, w), in float64 numpy:
  a strided convolution with padding k // 2 is the stride-1 one sampled at 0, s, 2s, ..."""
  k = kernel.shape[1]
  assert kernel.shape[0] == 1 and kernel.shape[2] == k
  padded = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  h, w = x.shape[2:4]
  out = sum(padded[:, :, dy:dy + h, dx:dx + w, :] @ kernel[0, dy, dx]
            for dy in range(k) for dx in range(k))
  st, sh, sw = strides
  return out[:, ::st, ::sh, ::sw]


@pytest.mark.parametrize('strides', [(1, 2, 2), (2, 2, 2)])
def test_tsfp_module_returns_gated_pool(strides):
  """P = avgpool(x) * G(gate_input), G recomputed in numpy from the module's own kernels (ReLU
  convs, the last with the pool's stride, a 1x1x1 conv and a sigmoid). Mutation audit: the test
  only checked P against the module's own G, so a gate without its sigmoid or ReLUs, read from x
  instead of gate_input, with another stride, or a pool of gate_input, passed."""
  x = _uniform((1, 4, 8, 8, 1))
  gate_input = _uniform((1, 4, 8, 8, 1), seed=1)
  tsfp = salient.TSFP(strides, conv_impl='native')
  variables = random_variables(tsfp, x)
  params = {name: np.asarray(p['kernel'], np.float64) for name, p in variables['params'].items()}
  assert sorted(params) == [f'gate{n}' for n in range(1, 8)]
  p, g = tsfp.apply(variables, x, gate_input=gate_input)
  st, sh, sw = strides
  shape = (1, 4 // st, 4, 4, 1)
  assert p.shape == g.shape == shape

  hidden = np.asarray(gate_input, np.float64)
  for n in range(1, 7):
    hidden = np.maximum(_same_conv_numpy(hidden, params[f'gate{n}'], strides if n == 6 else
                                         (1, 1, 1)), 0.0)
  logit = hidden @ params['gate7'][0, 0, 0]
  expected_g = 1.0 / (1.0 + np.exp(-logit))
  pooled = np.asarray(x, np.float64).reshape(1, 4 // st, st, 4, sh, 4, sw, 1).mean(axis=(2, 4, 6))
  np.testing.assert_allclose(g, expected_g, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(p, pooled * expected_g, rtol=1e-4, atol=1e-6)
  # The gate varies (a constant one would hide a wrong branch) and differs from its input's gate.
  assert np.ptp(expected_g) > 0.05
  p_x, g_x = tsfp.apply(variables, x)
  assert not np.allclose(g_x, expected_g, atol=1e-3)
  np.testing.assert_allclose(p_x, pooled * np.asarray(g_x), rtol=1e-5, atol=1e-7)
  assert _count(variables['params']) == 60_244


def test_temporal_mask_fusion_formula():
  p3 = _uniform((2, 4, 3, 3, 1))
  fusion = salient.TemporalMaskFusion()
  variables = random_variables(fusion, p3)
  w1 = np.asarray(variables['params']['conv1']['kernel'][0, 0, 0])  # (T, T/2)
  w2 = np.asarray(variables['params']['conv2']['kernel'][0, 0, 0])  # (T/2, 1)
  assert w1.shape == (4, 2) and w2.shape == (2, 1)
  frames_last = np.moveaxis(np.asarray(p3[..., 0]), 1, -1)  # (B, H, W, T)
  expected = np.maximum(frames_last @ w1, 0) @ w2  # no bias, no sigmoid
  s_final = fusion.apply(variables, p3)
  assert s_final.shape == (2, 1, 3, 3, 1)
  np.testing.assert_allclose(s_final[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_scale_strides():
  assert salient.scale_strides([(4, 56, 56), (4, 28, 28), (4, 14, 14), (4, 7, 7)]) == I3D_STRIDES
  assert salient.scale_strides([(4, 28, 28), (2, 14, 14), (1, 7, 7), (1, 4, 4)]) == (
      (2, 2, 2), (2, 2, 2), (1, 2, 2))
  with pytest.raises(ValueError, match='cannot be pooled'):
    salient.scale_strides([(4, 7, 7), (4, 14, 14)])


# ----------------------------------------------------------------------------------------------
# Small real models: Hara family and I3D, forward and gradients.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('size,width', [(32, 8), (64, 16)])
def test_salinet_hara_small_inputs(size, width):
  model = salinet.SaliNetHara(num_classes=4, depth=10, width=width)
  x = jax.ShapeDtypeStruct((2, 8, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  logits, aux = jax.eval_shape(lambda v, x: model.apply(v, x, return_aux=True), variables, x)
  s = size // 4  # stem stride 2, max-pool stride 2
  assert logits.shape == (2, 4)
  assert aux['S1'].shape == (2, 4, s, s, 1) and aux['S2'].shape == (2, 2, s // 2, s // 2, 1)
  assert aux['G1'].shape == aux['P1'].shape == aux['S2'].shape
  assert aux['G2'].shape == aux['P2'].shape == aux['S3'].shape == (2, 1, s // 4, s // 4, 1)
  assert aux['saliency_final'].shape == (2, 1, s // 8, s // 8, 1)


def test_salinet_hara_16x112_rounds_odd_sizes():
  model = salinet.SaliNetHara(num_classes=4, depth=18, width=8)
  x = jax.ShapeDtypeStruct((1, 16, 112, 112, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  _, aux = jax.eval_shape(lambda v, x: model.apply(v, x, return_aux=True), variables, x)
  assert aux['S3'].shape == (1, 2, 7, 7, 1) and aux['P3'].shape == (1, 1, 4, 4, 1)


TINY_I3D = dict(width=8, stage_blocks=(1, 1, 1, 1), nonlocal_blocks=((), (0,), (0,), ()),
                conv_impl='native')


@pytest.mark.parametrize('name,extra', [
    ('salinet_i3d', TINY_I3D), ('salinet_hara', dict(depth=10, width=8, conv_impl='native'))])
def test_ce_l1_l2_gradients_reach_every_salient_parameter(name, extra):
  # No dropout: its random mask would only add (slow-to-compile) threefry code.
  config = ml_collections.ConfigDict(dict(name=name, dropout_rate=0.0, **extra))
  model = build_model(config, num_classes=5)
  loss_config = base.get_base_config().loss
  loss_config.name = 'ce_l1_l2'
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 32, 32, 3)), jnp.float32)
  labels = jnp.array([1, 3])
  variables = random_variables(model, x)

  def loss_fn(params):
    (logits, aux), _ = model.apply({**variables, 'params': params}, x, train=True,
                                   return_aux=losses.needs_aux(loss_config),
                                   mutable=['batch_stats'])
    return losses.compute_loss(loss_config, logits, labels, aux)

  (total, terms), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True),
                                  compiler_options=FAST_COMPILE)(variables['params'])
  assert set(terms) == {'cross_entropy', 'weighted_saliency_l1', 'weighted_gate1_mse',
                        'weighted_gate2_mse'}
  assert bool(jnp.isfinite(total))
  # Hara on 8 frames ends with T = 1, where the mask fusion has no parameters.
  expected = ('ssf', 'tsfp', 'fusion') if name == 'salinet_i3d' else ('ssf', 'tsfp')
  assert set(grads) == {'backbone', 'head'} | set(expected)
  salient_grads = {k: grads[k] for k in expected}
  for path, g in jax.tree_util.tree_leaves_with_path(salient_grads):
    assert float(jnp.abs(g).max()) > 0, f'no gradient reaches {jax.tree_util.keystr(path)}'
  assert len(jax.tree_util.tree_leaves(salient_grads)) > 20
