"""Tests of the 3D ResNet trunks: PySlowFast NL-I3D-R50 structure and numerics, Hara family."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from salinet_jax.models import build_model
from salinet_jax.models import nonlocal_block
from salinet_jax.models import resnet3d
from tests.conftest import random_variables

K400_CLASSES = 400
CLIP_224 = (1, 8, 224, 224, 3)


def _init(model, *args, **kwargs):
  """model.init, jitted, with the non-partitionable threefry: compiles ~5x faster on CPU."""
  with jax.threefry_partitionable(False):
    return jax.jit(lambda *a: model.init(jax.random.PRNGKey(0), *a, **kwargs))(*args)


TINY_NONLOCAL = ((), (1,), (1,), ())


def _abstract_variables(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)


def _count(tree, path_filter=lambda path: True):
  return sum(int(np.prod(leaf.shape)) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
             if path_filter(jax.tree_util.keystr(path)))


@pytest.fixture(scope='module')
def nl_i3d_variables():
  return _abstract_variables(resnet3d.NonLocalI3DClassifier(num_classes=K400_CLASSES), CLIP_224)


def test_nl_i3d_r50_parameter_counts_match_reference(nl_i3d_variables):
  params = nl_i3d_variables['params']
  assert _count(params) == 35_401_936
  assert _count(params, lambda p: 'nonlocal' in p) == 7_358_464
  assert _count(params['head']) == 819_600


def test_nl_i3d_r50_names_mirror_pyslowfast(nl_i3d_variables):
  p = nl_i3d_variables['params']['backbone']
  assert p['s1']['pathway0_stem']['conv']['kernel'].shape == (5, 7, 7, 3, 64)
  assert set(p['s2']) == {'pathway0_res0', 'pathway0_res1', 'pathway0_res2'}
  assert set(p['s3']) == {'pathway0_res0', 'pathway0_res1', 'pathway0_res2', 'pathway0_res3',
                          'pathway0_nonlocal1', 'pathway0_nonlocal3'}
  assert {k for k in p['s4'] if 'nonlocal' in k} == {
      'pathway0_nonlocal1', 'pathway0_nonlocal3', 'pathway0_nonlocal5'}
  assert not any('nonlocal' in k for k in list(p['s2']) + list(p['s5']))
  assert set(p['s3']['pathway0_res0']) == {'branch1', 'branch1_bn', 'branch2'}
  assert 'branch1' not in p['s3']['pathway0_res1']
  assert set(p['s3']['pathway0_nonlocal1']) == {
      'conv_theta', 'conv_phi', 'conv_g', 'conv_out', 'bn'}
  assert p['s3']['pathway0_nonlocal1']['conv_theta']['bias'].shape == (256,)
  # Temporal kernels of the "a" convs: res2 3,3,3; res3 3,1,3,1; res4 3,1,...; res5 1,3,1.
  def kernel_t(stage, i):
    return p[stage][f'pathway0_res{i}']['branch2']['a']['kernel'].shape[0]

  assert [kernel_t('s2', i) for i in range(3)] == [3, 3, 3]
  assert [kernel_t('s3', i) for i in range(4)] == [3, 1, 3, 1]
  assert [kernel_t('s4', i) for i in range(6)] == [3, 1, 3, 1, 3, 1]
  assert [kernel_t('s5', i) for i in range(3)] == [1, 3, 1]
  assert p['s3']['pathway0_res0']['branch2']['b']['kernel'].shape == (1, 3, 3, 128, 128)


def test_nl_i3d_r50_initialisation_follows_pyslowfast():
  model = resnet3d.NonLocalI3DClassifier(num_classes=K400_CLASSES, width=8,
                                         stage_blocks=(1, 2, 2, 1), nonlocal_blocks=TINY_NONLOCAL)
  variables = _init(model, jnp.zeros((1, 4, 32, 32, 3)))
  p = variables['params']['backbone']
  np.testing.assert_array_equal(p['s3']['pathway0_res1']['branch2']['c_bn']['scale'], 0.0)
  np.testing.assert_array_equal(p['s3']['pathway0_nonlocal1']['bn']['scale'], 0.0)
  np.testing.assert_array_equal(p['s3']['pathway0_res1']['branch2']['a_bn']['scale'], 1.0)
  fc = variables['params']['head']['fc']
  assert 0.005 < float(jnp.std(fc['kernel'])) < 0.015
  np.testing.assert_array_equal(fc['bias'], 0.0)


def test_nl_i3d_r50_stage_shapes_for_8x224_clip():
  model = resnet3d.NonLocalI3DClassifier(num_classes=K400_CLASSES)
  variables = _abstract_variables(model, CLIP_224)
  x = jax.ShapeDtypeStruct(CLIP_224, jnp.float32)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=['intermediates']), variables, x)
  shapes = {k: v[0].shape for k, v in state['intermediates']['backbone'].items()}
  assert logits.shape == (1, K400_CLASSES) and logits.dtype == jnp.float32
  assert shapes == {
      's1_out': (1, 8, 56, 56, 64), 's2_out': (1, 8, 56, 56, 256), 'pool1': (1, 4, 56, 56, 256),
      's3_out': (1, 4, 28, 28, 512), 's4_out': (1, 4, 14, 14, 1024), 's5_out': (1, 4, 7, 7, 2048)}


def test_nl_i3d_trunk_is_configurable():
  tiny_clip = (1, 8, 32, 32, 3)
  no_nl = _abstract_variables(
      resnet3d.NonLocalI3DClassifier(num_classes=10, width=8, use_nonlocal=False), tiny_clip)
  assert _count(no_nl['params'], lambda p: 'nonlocal' in p) == 0
  r101 = _abstract_variables(
      resnet3d.NonLocalI3DClassifier(num_classes=10, depth=101, width=8), tiny_clip)
  assert sum(k.startswith('pathway0_res') for k in r101['params']['backbone']['s4']) == 23
  with pytest.raises(ValueError, match='nonlocal_blocks'):
    _abstract_variables(resnet3d.NonLocalI3DClassifier(num_classes=10, width=8,
                                                       stage_blocks=(1, 1, 1, 1)), tiny_clip)


def _randomise_batch_norms(variables, seed):
  """Random BN scales/biases/statistics, so zero-initialised branches become visible."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype)
    if 'bn' in name and name.endswith(("['scale']", "['bias']", "['mean']")):
      return jnp.asarray(rng.normal(0.0, 0.5, x.shape), x.dtype)
    return x
  return jax.tree_util.tree_map_with_path(leaf, variables)


def test_nonlocal_block_matches_numpy_reference():
  batch, frames, height, width, channels, inner = 2, 2, 4, 6, 8, 4
  x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, frames, height, width, channels)),
                  jnp.float32)
  block = nonlocal_block.NonLocalBlock(inner, (1, 2, 2), conv_impl='native')
  variables = random_variables(block, x, train=False)
  variables = jax.tree_util.tree_map(  # non-zero conv biases too
      lambda v: v + 0.1 if v.ndim == 1 else v, variables)
  variables = _randomise_batch_norms(variables, seed=2)
  y = np.asarray(block.apply(variables, x, False))

  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables['params'])
  s = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables['batch_stats'])
  xn = np.asarray(x, np.float64)
  dense = lambda v, name: v @ p[name]['kernel'][0, 0, 0] + p[name]['bias']  # noqa: E731
  pooled = xn.reshape(batch, frames, height // 2, 2, width // 2, 2, channels).max(axis=(3, 5))
  theta = dense(xn, 'conv_theta').reshape(batch, -1, inner)
  phi = dense(pooled, 'conv_phi').reshape(batch, -1, inner)
  g = dense(pooled, 'conv_g').reshape(batch, -1, inner)
  logits = np.einsum('bqc,bkc->bqk', theta, phi) / np.sqrt(inner)
  attention = np.exp(logits - logits.max(-1, keepdims=True))
  attention /= attention.sum(-1, keepdims=True)
  attended = np.einsum('bqk,bkc->bqc', attention, g).reshape(batch, frames, height, width, inner)
  out = dense(attended, 'conv_out')
  bn = (out - s['bn']['mean']) / np.sqrt(s['bn']['var'] + 1e-5) * p['bn']['scale'] + p['bn']['bias']
  np.testing.assert_allclose(y, xn + bn, rtol=1e-4, atol=1e-4)
  assert np.abs(bn).max() > 0.1  # the non-local branch actually contributed


def test_nonlocal_block_is_identity_at_init():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 4, 4, 8)), jnp.float32)
  block = nonlocal_block.NonLocalBlock(4)
  y = block.apply(_init(block, x, train=False), x, False)
  np.testing.assert_array_equal(y, x)


def test_tiny_nl_i3d_via_registry_train_and_eval_signatures():
  config = ml_collections.ConfigDict({
      'name': 'i3d_nl', 'width': 8, 'stage_blocks': (1, 2, 2, 1), 'nonlocal_blocks': TINY_NONLOCAL,
      'dropout_rate': 0.5})
  model = build_model(config, num_classes=5)
  variables, x = _abstract_variables(model, (2, 8, 32, 32, 3)), jax.ShapeDtypeStruct(
      (2, 8, 32, 32, 3), jnp.float32)
  logits, updates = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'],
                               rngs={'dropout': jax.random.PRNGKey(2)}), variables, x)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert jax.tree_util.tree_structure(updates['batch_stats']) == jax.tree_util.tree_structure(
      variables['batch_stats'])
  logits_eval, aux = jax.eval_shape(lambda v, x: model.apply(v, x, return_aux=True), variables, x)
  assert logits_eval.shape == (2, 5) and aux == {}
  with pytest.raises(ValueError, match='does not accept'):
    build_model(ml_collections.ConfigDict({'name': 'i3d_nl', 'ssf': True}), num_classes=5)


def test_hara_classifier_still_works():
  model = resnet3d.HaraResNet3DClassifier(num_classes=3, depth=10, width=8, conv_impl='native')
  x = jnp.ones((1, 8, 32, 32, 3))
  variables = random_variables(model, x)
  logits = model.apply(variables, x)
  assert logits.shape == (1, 3) and bool(jnp.all(jnp.isfinite(logits)))
  assert set(variables['params']) == {'backbone', 'head'}
