"""Whole reference S2DNet checkpoints (the `s2dnet` source) -> S2DNet: f_theta, the Gaussian
sampler, lateral fusion and a tiny whole model against PyTorch modules with the reference's names
and semantics (reference_torch.S2DNetReference): float64 to 1e-8 (the sampling stage's logits
differ by 1.4e-10, its Gaussian windows amplifying rounding; the rest by 1e-13 or less),
float32 within the PyTorch modules' own float32 error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_torch as ref
from salinet_jax import convert
from salinet_jax.convert import layout
from salinet_jax.convert import s2dnet as s2dnet_map
from salinet_jax.models import s2dnet
from salinet_jax.models import sampler as sampler_lib

torch = ref.torch
F64_TOL = 1e-8
NUM_CLASSES = 8
SYNOPSIS_FRAMES, SYNOPSIS_SIZE = 4, 40  # feature map 2 x 2
DETAIL_FRAMES, DETAIL_SIZE = 4, 32
MLP = (16, 8)
CONTEXT = 8
DNET_WIDTH = 4
VALID = [7, 5]  # two videos padded to 7 frames
FRAME_SIZE = 48


def f64_and_f32(run):
  """{'f64': run(jnp.float64, np.float64), 'f32': run(jnp.float32, np.float32)}, x64 for f64."""
  out = {}
  for tag, dtype, np_dtype in (('f64', jnp.float64, np.float64), ('f32', jnp.float32, np.float32)):
    with jax.enable_x64(tag == 'f64'):
      out[tag] = run(dtype, np_dtype)
  return out


def assert_parity(jax_out, torch32, torch64, what):
  err = ref.max_abs(jax_out['f64'], torch64)
  assert err <= F64_TOL, f'{what}: float64 max abs difference {err:.3g}'
  ref.assert_f32_parity(jax_out['f32'], torch32, torch64, what)


def torch_both(fn):
  """fn(torch dtype) in float32 and float64 -> (numpy outputs f32, f64)."""
  with torch.no_grad():
    return [jax.tree.map(lambda t: t.detach().numpy(), fn(dtype))
            for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize('fix', ['A', 'B'])
def test_f_theta_matches_the_reference_sampler_head(fix):
  torch.manual_seed(0)
  channels = 24
  head = ref.randomise(ref.S2DSamplerHead(channels + NUM_CLASSES, s2dnet.F_THETA_FIX_CHANNELS[fix],
                                          SYNOPSIS_FRAMES, 2, MLP, DETAIL_FRAMES))
  rng = np.random.default_rng(0)
  e = rng.standard_normal((3, SYNOPSIS_FRAMES, channels, 2, 2))  # PyTorch (B, T, C, h, w)
  s = np.zeros((3, NUM_CLASSES))
  for video, top_k in enumerate(([1, 4, 6], [0, 2, 7], [3, 5, 6])):  # each its own: no mix-up
    s[video, top_k] = 1.0
  t32, t64 = torch_both(lambda d: head.to(d)(torch.from_numpy(e).to(d), torch.from_numpy(s).to(d)))
  state_dict = {f'{s2dnet_map.SAMPLER}.{k}': v for k, v in ref.state_dict_numpy(head).items()}

  def run(dtype, np_dtype):
    module = s2dnet.SamplerHead(DETAIL_FRAMES, s2dnet.F_THETA_FIX_CHANNELS[fix], MLP)
    e_nthwc = jnp.asarray(np.moveaxis(e, 2, -1), dtype)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), e_nthwc, jnp.asarray(s)))
    template = {c: {'f_theta': shapes[c]} for c in shapes}
    variables, report = convert.convert('s2dnet', state_dict, template, 's2dnet', dtype=np_dtype)
    assert report.ok and report.converted == len(state_dict) - len(report.ignored)
    params = module.apply({c: v['f_theta'] for c, v in variables.items()}, e_nthwc,
                          jnp.asarray(s, dtype))
    assert all(p.dtype == dtype for p in params)
    return [np.asarray(p) for p in params]

  out = f64_and_f32(run)
  for i, name in enumerate(sampler_lib.SamplingParams._fields):
    assert_parity({k: v[i] for k, v in out.items()}, t32[i], t64[i], f'f_theta {name}')


@pytest.mark.parametrize('fixed', [False, True])
def test_gaussian_sampler_matches_the_reference(fixed):
  rng = np.random.default_rng(1)
  video = rng.standard_normal((2, 7, 3, 12, 10))  # (B, N, C, H, W), W != H
  video[1, VALID[1]:] = 1e4  # padding, never read
  raw = (rng.standard_normal(2), 0.5 * rng.standard_normal(2),
         rng.standard_normal((2, DETAIL_FRAMES, 2)),
         0.5 * rng.standard_normal((2, DETAIL_FRAMES, 2)))
  t32, t64 = torch_both(lambda d: ref.gaussian_detail_frames(
      torch.from_numpy(video).to(d), VALID, *(torch.from_numpy(p).to(d) for p in raw),
      DETAIL_FRAMES, 6, fixed))

  def run(dtype, np_dtype):
    frames, _ = sampler_lib.gaussian_detail_sample(
        jnp.asarray(np.moveaxis(video, 2, -1), dtype), jnp.asarray(VALID),
        sampler_lib.SamplingParams(*(jnp.asarray(p, dtype) for p in raw)), DETAIL_FRAMES, 6,
        fixed=fixed)
    assert frames.dtype == dtype
    return np.moveaxis(np.asarray(frames), -1, 2)

  assert_parity(f64_and_f32(run), t32, t64, 'detail frames')


def test_lateral_fusion_conv_is_numbered_by_rank_among_fusion_stages():
  torch.manual_seed(0)
  fusion = ref.fusion_layer(16, CONTEXT)
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2 * DETAIL_FRAMES, 16, 3, 3))  # (B*T, C, h, w)
  context = rng.standard_normal((2, CONTEXT))
  t32, t64 = torch_both(lambda d: ref.lateral_fuse(
      torch.from_numpy(x).to(d), torch.from_numpy(context).to(d), fusion.to(d), DETAIL_FRAMES))
  # The only fusion stage of this model is 3: the reference's fusion_layers.0.
  state_dict = {f'{s2dnet_map.DNET}.fusion_layers.0.{k}': v
                for k, v in ref.state_dict_numpy(fusion).items()}

  def run(dtype, np_dtype):
    module = s2dnet.LateralFusion(DETAIL_FRAMES, dtype)
    x_nhwc, m = jnp.asarray(np.moveaxis(x, 1, -1), dtype), jnp.asarray(context, dtype)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x_nhwc, m))
    template = {'params': {'dnet': {'fusion_layer3': shapes['params']}}}
    variables, report = convert.convert('s2dnet', state_dict, template, 's2dnet', dtype=np_dtype)
    assert report.ok and report.converted == 1, report.summary()
    variables = {'params': variables['params']['dnet']['fusion_layer3']}
    return np.moveaxis(np.asarray(module.apply(variables, x_nhwc, m)), -1, 1)

  assert_parity(f64_and_f32(run), t32, t64, 'lateral fusion')


def test_name_map_covers_every_s2dnet_module():
  name_map = s2dnet_map.name_map((2, 3))
  expected = {
      'snet/backbone/features_0_0': 'SNet.model.base_model.features.0.0',
      'snet/backbone/features_1/conv_1': 'SNet.model.base_model.features.1.conv.3',
      'snet/backbone/features_3/conv_2': 'SNet.model.base_model.features.3.conv.6',
      'snet/fc': 'SNet.model.new_fc',
      'f_theta/conv': 'DNet.sampler.space_time_convs.0.0',
      'f_theta/conv_bn': 'DNet.sampler.space_time_convs.1',
      'f_theta/fc1': 'DNet.sampler.space_time_convs.3.0',
      'f_theta/fc1_bn': 'DNet.sampler.space_time_convs.4',
      'f_theta/fc2': 'DNet.sampler.space_time_convs.6.0',
      'f_theta/fc2_bn': 'DNet.sampler.space_time_convs.7',
      'f_theta/spatial_stride': 'DNet.sampler.fc_spatial_stride.0.0',
      'f_m': 'DNet.ctx_feature_layer.0',
      'dnet/backbone/layer2_0/downsample_1': 'DNet.model.base_model.layer2.0.downsample.1',
      'dnet/fusion_layer2/conv': 'DNet.model.fusion_layers.0.0',
      'dnet/fusion_layer3/conv': 'DNet.model.fusion_layers.1.0',
      'dnet/fc': 'DNet.model.new_fc',
  }
  for path, torch_name in expected.items():
    assert layout.torch_module_name(path, name_map) == torch_name, path
  only_layer3 = s2dnet_map.name_map((3,))
  assert layout.torch_module_name('dnet/fusion_layer3/conv', only_layer3) == (
      'DNet.model.fusion_layers.0.0')
  with pytest.raises(ValueError, match='fusion stages'):
    layout.torch_module_name('dnet/fusion_layer2/conv', only_layer3)
  assert s2dnet_map.strip_shift_wrappers({'a.conv.0.net.weight': 1}) == {'a.conv.0.weight': 1}


def tiny_model(stage, dtype=jnp.float32, fix='A'):
  return s2dnet.S2DNet(
      NUM_CLASSES, dtype, stage=stage, synopsis_frames=SYNOPSIS_FRAMES,
      synopsis_size=SYNOPSIS_SIZE, detail_frames=DETAIL_FRAMES, detail_size=DETAIL_SIZE,
      dnet_width=DNET_WIDTH, f_theta_fix=fix, f_theta_mlp=MLP, context_features=CONTEXT,
      faithful_topk_tiling=True)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float32', 'float64'])
def test_sensitive_outputs_are_float32_unless_the_model_is_float64(dtype):
  with jax.enable_x64(dtype == 'float64'):
    model = tiny_model('sampling', jnp.dtype(dtype))
    video = jnp.zeros((2, 7, FRAME_SIZE, FRAME_SIZE, 3), jnp.float64 if dtype == 'float64'
                      else jnp.float32)
    (logits, aux), _ = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), video, return_aux=True, num_valid=jnp.asarray(VALID)))
  want = jnp.float64 if dtype == 'float64' else jnp.float32
  for name, value in [('logits', logits)] + [(k, aux[k]) for k in (
      'snet_logits', 'synopsis', 'detail_frames', 'sampler_mu_t', 'sampler_delta_x')]:
    assert value.dtype == want, f'{name}: {value.dtype}'


@pytest.fixture(scope='module')
def reference_checkpoint(tmp_path_factory):
  """A tiny S2DNetReference with random weights, saved as the reference's training script does."""
  torch.manual_seed(0)
  model = ref.S2DNetReference(NUM_CLASSES, SYNOPSIS_FRAMES, SYNOPSIS_SIZE, DETAIL_FRAMES,
                              DETAIL_SIZE, s2dnet.F_THETA_FIX_CHANNELS['A'], MLP, CONTEXT,
                              DNET_WIDTH)
  rng = np.random.default_rng(3)
  calibration = torch.from_numpy(rng.standard_normal((4, 7, 3, FRAME_SIZE, FRAME_SIZE))).float()
  ref.calibrate_batch_norm(ref.randomise(model), calibration, [7, 6, 5, 4])
  path = tmp_path_factory.mktemp('s2dnet') / 's2dnet_sampling.pth.tar'
  torch.save({'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()},
              'epoch': 3}, path)
  video = rng.standard_normal((2, 7, 3, FRAME_SIZE, FRAME_SIZE))
  video[1, VALID[1]:] = 1e4  # padding, never read
  return model, str(path), video


@pytest.mark.parametrize('stage', ['sampling', 'warmup'])
def test_whole_s2dnet_checkpoint_converts_completely_and_matches(reference_checkpoint, stage):
  model, path, video = reference_checkpoint
  t32, t64 = torch_both(lambda d: model.to(d)(torch.from_numpy(video).to(d), VALID,
                                              fixed=stage == 'warmup'))
  model.float()
  snet_sorted = np.sort(t64[1], axis=1)[:, ::-1]
  assert np.min(snet_sorted[:, 4] - snet_sorted[:, 5]) > 1e-3  # a stable top-5 choice
  state_dict, unplaced = convert.read_checkpoint('s2dnet', path)
  assert not unplaced and not any('.net.' in k or k.startswith('module.') for k in state_dict)
  x = np.moveaxis(video, 2, -1)

  def run(dtype, np_dtype):
    flax_model = tiny_model(stage, dtype)
    template = convert.model_template(flax_model, (1,) + x.shape[1:])
    variables, report = convert.convert('s2dnet', state_dict, template, 's2dnet', dtype=np_dtype)
    assert report.ok, report.summary()
    assert all(k.endswith('num_batches_tracked') for k in report.ignored)
    assert report.converted + len(report.ignored) == len(state_dict)
    apply = jax.jit(lambda v, x: flax_model.apply(v, x, return_aux=True,
                                                  num_valid=jnp.asarray(VALID)))
    logits, aux = apply(variables, jnp.asarray(x, dtype))
    assert logits.dtype == aux['snet_logits'].dtype == aux['detail_frames'].dtype == dtype
    return (np.asarray(logits), np.asarray(aux['snet_logits']),
            np.moveaxis(np.asarray(aux['detail_frames']), -1, 2))

  out = f64_and_f32(run)
  for i, what in enumerate(('DNet logits', 'SNet logits', 'detail frames')):
    assert_parity({k: v[i] for k, v in out.items()}, t32[i], t64[i], f'{stage}: {what}')


def test_the_other_f_theta_fix_is_reported_mis_shaped(reference_checkpoint):
  _, path, video = reference_checkpoint
  state_dict, _ = convert.read_checkpoint('s2dnet', path)
  template = convert.model_template(tiny_model('sampling', fix='B'),
                                    (1,) + np.moveaxis(video, 2, -1).shape[1:])
  _, report = convert.convert('s2dnet', state_dict, template, 's2dnet')
  assert not report.missing and not report.unexpected
  assert sorted(m.split(' ')[0] for m in report.mis_shaped) == [
      'f_theta/conv/bias', 'f_theta/conv/kernel', 'f_theta/conv_bn/bias', 'f_theta/conv_bn/mean',
      'f_theta/conv_bn/scale', 'f_theta/conv_bn/var', 'f_theta/fc1/kernel']
  with pytest.raises(ValueError, match="converts into models \\['s2dnet'\\]"):
    convert.convert('s2dnet', state_dict, template, 'i3d_nl')


def test_a_sampling_step_s_gradients_and_statistics_match_pytorch_autograd():
  """Train mode, float64, the sampling stage: the logits, the gradient of every parameter (f_theta
  through the Gaussian sampler; SNet only through its own loss and g, as e reaches f_theta
  detached, the reference's SAMPLER_STOP_GRADIENTS) and the running statistics after the step
  equal PyTorch autograd through the reference modules. The parity above is in eval mode."""
  torch.manual_seed(0)
  model = ref.S2DNetReference(NUM_CLASSES, SYNOPSIS_FRAMES, SYNOPSIS_SIZE, DETAIL_FRAMES,
                              DETAIL_SIZE, s2dnet.F_THETA_FIX_CHANNELS['B'], MLP, CONTEXT,
                              DNET_WIDTH, faithful_tiling=False)
  rng = np.random.default_rng(4)
  calibration = torch.from_numpy(rng.standard_normal((4, 7, 3, FRAME_SIZE, FRAME_SIZE)))
  ref.calibrate_batch_norm(ref.randomise(model.double()), calibration, [7, 6, 5, 4])
  with torch.no_grad():  # f_theta's head starts near 0: larger weights move the windows
    for name, param in model.named_parameters():
      if 'sampler.fc_' in name:
        param.normal_(0, 0.3)
  state_dict = s2dnet_map.strip_shift_wrappers(
      {k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
  sampler_head = model.DNet.sampler.forward
  model.DNet.sampler.forward = lambda e, s: sampler_head(e.detach(), s)
  model.train()
  # Four videos: on two, f_theta's train-mode BatchNorm1d normalises every feature to +-1, so
  # the sampling parameters depended only on the sign of the videos' difference.
  video = rng.standard_normal((4, 7, 3, FRAME_SIZE, FRAME_SIZE))
  labels = np.array([2, 5, 0, 7])
  num_valid = [7, 5, 6, 4]

  def loss_of(dnet_logits, snet_logits, log_softmax, mean):
    def pick(logits):
      return log_softmax(logits)[np.arange(len(labels)), labels]
    return -mean(pick(dnet_logits)) - 0.5 * mean(pick(snet_logits))

  dnet_logits, snet_logits, _ = model(torch.from_numpy(video), num_valid)
  snet_sorted = np.sort(snet_logits.detach().numpy(), axis=1)[:, ::-1]
  assert np.min(snet_sorted[:, 4] - snet_sorted[:, 5]) > 1e-3  # a stable top-5 choice
  torch_loss = loss_of(dnet_logits, snet_logits, lambda v: torch.log_softmax(v, -1), torch.mean)
  torch_loss.backward()
  torch_after = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  torch_after.update({k: p.grad.numpy() for k, p in model.named_parameters()})
  assert np.max(np.abs(torch_after['DNet.sampler.fc_spatial_offset.0.0.weight'])) > 1e-6
  assert np.max(np.abs(torch_after['DNet.sampler.fc_temporal_stride.0.0.weight'])) > 1e-6

  with jax.enable_x64(True):
    flax_model = s2dnet.S2DNet(
        NUM_CLASSES, jnp.float64, stage='sampling', synopsis_frames=SYNOPSIS_FRAMES,
        synopsis_size=SYNOPSIS_SIZE, detail_frames=DETAIL_FRAMES, detail_size=DETAIL_SIZE,
        dnet_width=DNET_WIDTH, f_theta_fix='B', f_theta_mlp=MLP, context_features=CONTEXT,
        snet_dropout=0.0, context_dropout=0.0, dnet_dropout=0.0)
    x = jnp.asarray(np.moveaxis(video, 2, -1))
    template = convert.model_template(flax_model, (1,) + x.shape[1:])
    variables, report = convert.convert('s2dnet', state_dict, template, 's2dnet',
                                        dtype=np.float64)
    assert report.ok, report.summary()
    expected, _ = convert.convert('s2dnet', s2dnet_map.strip_shift_wrappers(torch_after),
                                  template, 's2dnet', dtype=np.float64)

    def loss(params):
      (logits, aux), updated = flax_model.apply(
          {'params': params, 'batch_stats': variables['batch_stats']}, x, train=True,
          return_aux=True, num_valid=jnp.asarray(num_valid), mutable=['batch_stats'])
      value = loss_of(logits, aux['snet_logits'], lambda v: jax.nn.log_softmax(v, -1), jnp.mean)
      return value, (logits, updated['batch_stats'])

    (value, (logits, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables['params'])
  torch_loss = float(torch_loss.detach())
  assert abs(float(value) - torch_loss) <= 1e-9 * abs(torch_loss)
  np.testing.assert_allclose(np.asarray(logits), dnet_logits.detach().numpy(), rtol=1e-9,
                             atol=1e-9)
  ref.assert_training_step_parity(jax.device_get(grads), jax.device_get(stats), expected)
