"""Generic layout conversion: kernels, Linear, BatchNorm, inflation, reports, readers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_torch as ref
from salinet_jax.convert import layout
from salinet_jax.models import layers

torch = ref.torch


def convert_module(torch_module, flax_module, x, name_map, **kwargs):
  template = jax.eval_shape(lambda: flax_module.init(jax.random.key(0), x))
  variables, report = layout.convert_state_dict(ref.state_dict_numpy(torch_module), template,
                                                name_map, dtype=np.float64, **kwargs)
  return variables, report


@pytest.mark.parametrize('kernel,stride,padding', [((3, 5, 5), (1, 2, 2), (1, 2, 2)),
                                                   ((1, 3, 3), (1, 1, 1), (0, 1, 1))])
def test_conv3d_oidhw_to_dhwio(kernel, stride, padding):
  with jax.enable_x64(True):
    conv = torch.nn.Conv3d(3, 6, kernel, stride, padding, bias=True).double()
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9, 3))
    flax_conv = layers.Conv3D(6, kernel, stride, padding, use_bias=True, dtype=jnp.float64)
    variables, report = convert_module(conv, flax_conv, jnp.asarray(x),
                                       layout.identity_name_map())
    assert report.ok and report.converted == 2
    got = flax_conv.apply(variables, jnp.asarray(x))
    with torch.no_grad():
      want = ref.from_ncthw(conv(ref.to_ncthw(x)))
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize('groups', [1, 8])  # dense and depthwise (MobileNetV2)
def test_conv2d_oihw_to_hwio(groups):
  with jax.enable_x64(True):
    conv = torch.nn.Conv2d(8, 8, 3, 2, 1, groups=groups, bias=False).double()
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 8))
    flax_conv = nn.Conv(8, (3, 3), 2, ((1, 1), (1, 1)), feature_group_count=groups,
                        use_bias=False, dtype=jnp.float64, param_dtype=jnp.float64)
    variables, report = convert_module(conv, flax_conv, jnp.asarray(x),
                                       layout.identity_name_map())
    assert report.ok
    got = flax_conv.apply(variables, jnp.asarray(x))
    with torch.no_grad():
      want = conv(torch.from_numpy(np.moveaxis(x, -1, 1))).numpy()
    np.testing.assert_allclose(got, np.moveaxis(want, 1, -1), atol=1e-12)


def test_linear_and_kernel_round_trip():
  with jax.enable_x64(True):
    linear = torch.nn.Linear(6, 4).double()
    x = np.random.default_rng(0).standard_normal((3, 6))
    dense = nn.Dense(4, dtype=jnp.float64, param_dtype=jnp.float64)
    variables, report = convert_module(linear, dense, jnp.asarray(x), layout.identity_name_map())
    assert report.ok
    with torch.no_grad():
      want = linear(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(dense.apply(variables, jnp.asarray(x)), want, atol=1e-12)
  w = np.random.default_rng(0).standard_normal((5, 3, 2, 4, 4))
  np.testing.assert_array_equal(layout.flax_to_torch_kernel(layout.torch_to_flax_kernel(w)), w)


def test_batch_norm_eval_uses_running_stats_as_stored():
  with jax.enable_x64(True):
    bn = ref.randomise(torch.nn.BatchNorm3d(5)).double()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4, 5))
    flax_bn = layers.batch_norm(False, jnp.float64)
    variables, report = convert_module(bn, flax_bn, jnp.asarray(x), layout.identity_name_map())
    assert report.ok and report.ignored == ['num_batches_tracked']
    assert set(variables['batch_stats']) == {'mean', 'var'}
    with torch.no_grad():
      want = ref.from_ncthw(bn(ref.to_ncthw(x)))
    np.testing.assert_allclose(flax_bn.apply(variables, jnp.asarray(x)), want, atol=1e-12)


@pytest.mark.parametrize('mode', ['repeat', 'centre'])
def test_inflation_reproduces_the_2d_response_on_a_static_clip(mode):
  conv2d = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
  frame = np.random.default_rng(0).standard_normal((1, 6, 6, 3))
  clip = np.repeat(frame[:, None], 5, axis=1)  # (1, T, H, W, C), all frames equal
  with jax.enable_x64(True):
    conv3d = layers.Conv3D(4, (3, 3, 3), padding=(1, 1, 1), dtype=jnp.float64)
    variables, report = convert_module(conv2d, conv3d, jnp.asarray(clip),
                                       layout.identity_name_map(), inflate=mode)
    assert report.ok and report.inflated == ['kernel']
    got = np.asarray(conv3d.apply(variables, jnp.asarray(clip)))
  with torch.no_grad():
    want = np.moveaxis(conv2d(torch.from_numpy(np.moveaxis(frame, -1, 1))).numpy(), 1, -1)
  # Interior frames see three copies of the frame (the padded end frames fewer, with 'repeat').
  np.testing.assert_allclose(got[:, 2], want, atol=1e-12)
  kernel = variables['params']['kernel']
  if mode == 'centre':
    assert not np.any(kernel[0]) and not np.any(kernel[2])
  else:
    np.testing.assert_allclose(kernel[0], kernel[1])


def test_report_lists_missing_unexpected_mis_shaped_and_excluded():
  template = {
      'params': {'a': {'kernel': jax.ShapeDtypeStruct((1, 1, 1, 2, 3), jnp.float32)},
                 'b': {'kernel': jax.ShapeDtypeStruct((4, 5), jnp.float32),
                       'bias': jax.ShapeDtypeStruct((5,), jnp.float32)},
                 'c': {'scale': jax.ShapeDtypeStruct((3,), jnp.float32)},
                 'head': {'kernel': jax.ShapeDtypeStruct((8, 2), jnp.float32)}},
      'batch_stats': {'c': {'mean': jax.ShapeDtypeStruct((3,), jnp.float32),
                            'var': jax.ShapeDtypeStruct((3,), jnp.float32)}},
  }
  state_dict = {
      'a.weight': np.zeros((3, 2, 1, 1, 1)),
      'b.weight': np.zeros((6, 4)),  # Linear(4 -> 6): mis-shaped against (4, 5)
      'b.bias': np.zeros(5),
      'c.weight': np.ones(3), 'c.running_mean': np.zeros(3),  # c.running_var missing
      'c.num_batches_tracked': np.zeros(()),
      'head.weight': np.zeros((2, 8)),
      'extra.weight': np.zeros(2),
  }
  variables, report = layout.convert_state_dict(state_dict, template, layout.identity_name_map(),
                                                exclude='^head/')
  assert report.missing == ['c/var (no c.running_var)']
  assert report.unexpected == ['extra.weight']
  assert report.mis_shaped == ['b/kernel (b.weight): checkpoint (4, 6), model (4, 5)']
  assert report.excluded == ['head/kernel']
  assert report.ignored == ['c.num_batches_tracked']
  assert not report.ok and 'missing 1, unexpected 1, mis-shaped 1' in report.summary()
  assert variables['params']['a']['kernel'].shape == (1, 1, 1, 2, 3)
  assert variables['params']['a']['kernel'].dtype == np.float64  # dtype=None keeps it
  assert 'head' not in variables['params']
  # A checkpoint tensor the model has no place for is left out by --exclude too (it stayed
  # 'unexpected', and only --nostrict, which lifts every check, got past it).
  _, report = layout.convert_state_dict(state_dict, template, layout.identity_name_map(),
                                        exclude='^head/|^extra\\.')
  assert report.unexpected == [] and report.excluded == ['head/kernel', 'checkpoint:extra.weight']


def test_name_map_first_match_and_callables():
  name_map = [(r'backbone/(s\d)/x', r'\1.y'), (r'backbone/(.*)', lambda m: 'z.' + m.group(1)),
              (r'head/fc', 'head.projection')]
  assert layout.torch_module_name('backbone/s2/x', name_map) == 's2.y'
  assert layout.torch_module_name('backbone/s2/w', name_map) == 'z.s2/w'
  assert layout.torch_module_name('other', name_map) is None
  assert layout.torch_key('batch_stats', ('head', 'fc', 'var'), name_map) == (
      'head.projection.running_var')
