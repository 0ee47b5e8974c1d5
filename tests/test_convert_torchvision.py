"""torchvision / TSM checkpoints -> S2DNet's TSM-MobileNetV2 (SNet) and TSM-ResNet-50 (DNet).

PyTorch modules in torchvision's layout and in TSM's (shift wrapper '.net', MobileNetV2's flat
`conv.{0,1,3,4,6,7}`) are converted and compared with the Flax backbones on (B*T, H, W, C) frame
batches: float64 to 1e-10 (they differ by 1e-12 or less), float32 within the PyTorch modules'
own float32 error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_torch as ref
from salinet_jax import convert
from salinet_jax import errors
from salinet_jax.convert import layout
from salinet_jax.convert import torchvision as tv
from salinet_jax.models import mobilenet_v2
from salinet_jax.models import resnet2d
from salinet_jax.models import s2dnet

torch = ref.torch
F64_TOL = 1e-10
SEGMENTS = 4
TORCHVISION_MAP = [(r'(.*)', lambda m: tv.torchvision_module(m.group(1)))]


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def compare(torch_module, make_flax, x, convert_fn, what):
  """Runs both sides in float64 and float32; checks the parity bounds."""
  with torch.no_grad():
    t32 = np.moveaxis(torch_module.float()(nchw(x.astype(np.float32))).numpy(), 1, -1)
    t64 = np.moveaxis(torch_module.double()(nchw(x)).numpy(), 1, -1)
  state_dict = ref.state_dict_numpy(torch_module)
  out = {}
  for tag, dtype in (('j64', jnp.float64), ('j32', jnp.float32)):
    with jax.enable_x64(tag == 'j64'):
      module = make_flax(dtype)
      variables, report = convert_fn(module, state_dict,
                                     np.float64 if tag == 'j64' else np.float32)
      assert report.ok, report.summary()
      out[tag] = np.asarray(module.apply(variables, jnp.asarray(x, dtype), train=False))
  err = ref.max_abs(out['j64'], t64)
  assert err <= F64_TOL, f'{what}: float64 max abs difference {err:.3g}'
  ref.assert_f32_parity(out['j32'], t32, t64, what)
  return report


def convert_block(x):
  def fn(module, state_dict, dtype):
    template = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
    return layout.convert_state_dict(tv.strip_tsm_prefix(state_dict), template, TORCHVISION_MAP,
                                     dtype=dtype)
  return fn


@pytest.mark.parametrize('stride,inplanes', [(2, 16), (1, 32)])
def test_tsm_bottleneck(stride, inplanes):
  block = ref.randomise(ref.TorchvisionBottleneck(inplanes, 8, stride, segments=SEGMENTS))
  assert 'conv1.net.weight' in block.state_dict()  # TSM's wrapper
  x = np.random.default_rng(0).standard_normal((2 * SEGMENTS, 8, 8, inplanes))
  compare(block, lambda d: resnet2d.Bottleneck(8, stride, SEGMENTS, dtype=d), x, convert_block(x),
          'TSM bottleneck')


@pytest.mark.parametrize('inp,oup,stride,t', [(16, 16, 1, 6), (24, 32, 2, 6), (32, 16, 1, 1)])
def test_torchvision_inverted_residual(inp, oup, stride, t):
  block = ref.randomise(ref.InvertedResidual(inp, oup, stride, t, 'torchvision', SEGMENTS))
  # On a unit-variance input no depthwise ReLU6 output reached 6, where ReLU6 and ReLU differ: a
  # larger input and a raised BN bias clip some at 6 and leave others at 0.
  depthwise_bn, depthwise_relu6 = block.conv[-3][1:]
  with torch.no_grad():
    depthwise_bn.bias += 1.0
  x = np.random.default_rng(0).standard_normal((2 * SEGMENTS, 6, 6, inp)) * 8
  activations = []
  hook = depthwise_relu6.register_forward_hook(
      lambda module, inputs, output: activations.append(output.clone()))
  compare(block, lambda d: mobilenet_v2.InvertedResidual(oup, stride, t, SEGMENTS, dtype=d), x,
          convert_block(x), 'inverted residual')
  hook.remove()
  for output in activations:  # the float32 and the float64 pass
    assert float((output == 6).double().mean()) > 1e-3
    assert float((output == 0).double().mean()) > 0.1


def s2dnet_template(num_classes=3, **kwargs):
  model = s2dnet.S2DNet(num_classes, topk=2, synopsis_frames=SEGMENTS, detail_frames=SEGMENTS,
                        synopsis_size=32, detail_size=32, f_theta_mlp=(8, 8),
                        context_features=8, **kwargs)
  return convert.model_template(model, (1, 6, 48, 48, 3))


def tsm_checkpoint(state_dict, fc_shape):
  """A TSM-style state dict: 'module.base_model.*' plus 'module.new_fc.*'."""
  out = {f'module.base_model.{k}': v for k, v in state_dict.items()}
  rng = np.random.default_rng(0)
  out['module.new_fc.weight'] = rng.standard_normal(fc_shape) * 0.01
  out['module.new_fc.bias'] = rng.standard_normal(fc_shape[:1])
  return out


def test_tsm_mobilenet_v2_checkpoint_initialises_the_snet():
  torch.manual_seed(0)
  features = ref.randomise(ref.MobileNetV2Features('tsm', SEGMENTS))
  # Without statistics of real activations the 52 layers saturate: the output would not depend
  # on the input at all.
  ref.calibrate_batch_norm(features, torch.randn(2 * SEGMENTS, 3, 32, 32))
  keys = tsm_checkpoint(ref.state_dict_numpy(features), (3, 1280))
  assert 'module.base_model.features.3.conv.0.net.weight' in keys  # shifted expansion conv
  assert 'module.base_model.features.1.conv.3.weight' in keys  # first block's projection
  template = s2dnet_template()
  x = np.random.default_rng(0).standard_normal((SEGMENTS, 32, 32, 3))

  def fn(module, state_dict, dtype):
    state_dict = tv.strip_tsm_prefix(tsm_checkpoint(state_dict, (3, 1280)))
    variables, report = convert.convert('tsm', state_dict, template, 's2dnet', dtype=dtype)
    assert not report.ignored or all(k.endswith('num_batches_tracked') for k in report.ignored)
    np.testing.assert_array_equal(variables['params']['snet']['fc']['kernel'],
                                  state_dict['new_fc.weight'].T.astype(dtype))
    assert report.converted + len(report.ignored) == len(state_dict)
    return {c: variables[c]['snet']['backbone'] for c in variables}, report

  compare(features, lambda d: mobilenet_v2.MobileNetV2(num_segments=SEGMENTS, dtype=d), x, fn,
          'TSM-MobileNetV2 features')


def test_tsm_resnet50_checkpoint_initialises_the_dnet():
  torch.manual_seed(0)
  trunk = ref.randomise(ref.TorchvisionResNet50Like(width=4, segments=SEGMENTS))
  # Without statistics of real activations most ReLUs stay closed: another input moved the
  # output by 0.3% of its scale, and a stem output scaled by 1.01 moved it by 1e-4 only.
  ref.calibrate_batch_norm(trunk, torch.randn(2 * SEGMENTS, 3, 32, 32))
  template = s2dnet_template(dnet_width=4)
  x = np.random.default_rng(0).standard_normal((SEGMENTS, 32, 32, 3))

  def fn(module, state_dict, dtype):
    # TSM's new_fc classifies 128 features; DNet's fc classifies [x ; m ; s]: skipped.
    state_dict = tv.strip_tsm_prefix(tsm_checkpoint(state_dict, (3, 128)))
    variables, report = convert.convert('tsm', state_dict, template, 's2dnet', dtype=dtype)
    assert {'new_fc.weight', 'new_fc.bias'} <= set(report.ignored)
    assert set(variables['params']) == {'dnet'}
    return {c: variables[c]['dnet']['backbone'] for c in variables}, report

  compare(trunk, lambda d: resnet2d.ResNet2D(50, 4, num_segments=SEGMENTS, dtype=d), x, fn,
          'TSM-ResNet-50 features')
  other_x = np.random.default_rng(1).standard_normal(x.shape)
  with torch.no_grad():
    out, other_out = (trunk.double()(nchw(v)).numpy() for v in (x, other_x))
  moved = ref.max_abs(out, other_out)
  assert moved > 0.1 * np.max(np.abs(out)), f'another input moves the output by {moved:.3g} only'


def test_s2dnet_files_convert_into_one_network_each_and_both_are_needed():
  """A DNet file alone reported 'missing 0' and was written without an SNet (init_from then
  failed with 262 missing tensors); two files of one network merged, the second winning."""
  dnet = {'params': {'dnet': {'backbone': {'conv': np.zeros(2)}}}}
  snet = {'params': {'snet': {'backbone': {'conv': np.ones(2)}}},
          'batch_stats': {'snet': {'bn': {'mean': np.ones(2)}}}}
  assert convert.networks_not_converted(dnet, 's2dnet') == ['snet']
  assert convert.networks_not_converted(dnet, 'i3d_nl') == []
  merged = convert.merge_parts([('D.pth', dnet), ('S.pth', snet)])
  assert convert.networks_not_converted(merged, 's2dnet') == []
  np.testing.assert_array_equal(merged['params']['snet']['backbone']['conv'], np.ones(2))
  with pytest.raises(errors.ConversionError,
                     match=r'^D.pth and D2.pth both convert params/dnet/backbone/conv: give one '
                           'checkpoint per network.'):
    convert.merge_parts([('D.pth', dnet), ('D2.pth', dnet)])


def test_torchvision_imagenet_files_pick_their_network():
  resnet = {'conv1.weight': 0, 'layer1.0.conv1.weight': 0, 'fc.weight': 0}
  mobilenet = {'features.0.0.weight': 0, 'classifier.1.weight': 0}
  assert tv.detect_target(resnet) == 'dnet' and tv.detect_target(mobilenet) == 'snet'
  assert tv.skipped_keys(resnet, 'torchvision', 'dnet') == ['fc.weight']
  name_map = tv.name_map('s2dnet', mobilenet, {})
  assert layout.torch_module_name('snet/backbone/features_3/conv_1_0', name_map) == (
      'features.3.conv.1.0')
  assert layout.torch_module_name('dnet/backbone/layer1_0/conv1', name_map) is None
  with pytest.raises(ValueError, match='S2DNet'):
    tv.name_map('i3d_nl_2d', resnet, {})
