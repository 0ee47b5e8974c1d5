"""S2DNet: full-size parameter/FLOP figures against the spec (abstract tracing only), the 2D
backbones against torchvision's totals, and on a tiny model the gradient paths of both stages."""

import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from configs import mini_kinetics_s2dnet
from salinet_jax import engine
from salinet_jax import flops
from salinet_jax import losses
from salinet_jax import optim
from salinet_jax.models import build_model
from salinet_jax.models import mobilenet_v2
from salinet_jax.models import resnet2d
from salinet_jax.models import s2dnet

from conftest import tiny_s2dnet_config

# A CPU-sized S2DNet: 4 synopsis frames at 32 px, 4 detail frames at 16 px, ResNet-10 of width 8.
TINY = dict(synopsis_frames=4, synopsis_size=32, detail_frames=4, detail_size=16, snet_width=0.25,
            snet_last_channels=32, dnet_depth=10, dnet_width=8, f_theta_mlp=(16, 8),
            context_features=8, topk=2)
TINY_CLASSES = 5


def _num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_params(model, shape):
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  return jax.eval_shape(lambda: model.init(rngs, jnp.zeros(shape)))['params']


# ---------------------------------------------------------------------------------------------
# Full size, abstract only.
# ---------------------------------------------------------------------------------------------


def test_backbones_match_torchvision_parameter_totals():
  assert _num_params(_abstract_params(mobilenet_v2.MobileNetV2(num_classes=1000),
                                      (1, 224, 224, 3))) == 3_504_872
  assert _num_params(_abstract_params(resnet2d.ResNet2D(depth=50, num_classes=1000),
                                      (1, 224, 224, 3))) == 25_557_032


def test_full_size_parameters_match_the_spec():
  # Parameters do not depend on the number of input frames: 16 keeps the trace short.
  fix_a = flax.traverse_util.flatten_dict(
      _abstract_params(s2dnet.S2DNet(num_classes=200, f_theta_fix='A'), (1, 16, 224, 224, 3)),
      sep='/')
  params_b = _abstract_params(s2dnet.S2DNet(num_classes=200), (1, 16, 224, 224, 3))
  fix_b = flax.traverse_util.flatten_dict(params_b, sep='/')
  group = lambda flat, name: sum(int(np.prod(v.shape)) for k, v in flat.items()  # noqa: E731
                                 if k.startswith(name + '/'))
  total_a = _num_params(fix_a)
  assert total_a == 55_444_304  # spec: 55.4 M
  assert group(fix_a, 'snet') == 2_480_072  # spec: 2.48 M
  assert group(fix_a, 'f_theta') == 26_872_128  # spec: 26.87 M
  assert total_a - group(fix_a, 'snet') == 52_964_232  # spec: DNet incl. f_theta 52.96 M
  # Fix B: Conv3d(1480 -> 4), BN3d(4), Linear(1600 -> 1024) instead of 64 channels / 25600 inputs.
  assert group(fix_b, 'f_theta') == 2_207_148
  assert total_a - _num_params(fix_b) == 24_664_980  # "about 25 M fewer"
  assert fix_b['f_theta/fc1/kernel'].shape == (1600, 1024)
  assert fix_a['f_theta/fc1/kernel'].shape == (25600, 1024)
  assert fix_b['f_theta/spatial_offset/kernel'].shape == (514, 32)
  assert fix_b['dnet/fc/kernel'].shape == (2048 + 256 + 200, 200)
  assert fix_b['dnet/fusion_layer2/conv/kernel'].shape == (1, 1, 1, 512 + 256, 512)
  assert fix_b['f_m/kernel'].shape == (200 + 1280, 256)
  names = optim.qualified_names(params_b).values()
  paths = lambda pattern: {n.split(':', 1)[1] for n in names if re.search(pattern, n)}  # noqa: E731
  assert paths(mini_kinetics_s2dnet.LINEAR_PARAMS) == {
      'snet/fc/kernel', 'snet/fc/bias', 'f_m/kernel', 'f_m/bias', 'dnet/fc/kernel', 'dnet/fc/bias'}
  assert paths(mini_kinetics_s2dnet.F_THETA_PARAMS) == {
      k for k in fix_b if k.startswith('f_theta/')}


def test_full_size_gflops_match_the_reference_breakdown():
  info = flops.model_info(s2dnet.S2DNet(num_classes=200, f_theta_fix='A'), (150, 224, 224, 3),
                          depth=2, count_norm=True)  # fvcore style: BN counts 2 per element
  by_group = info['gflops_by_group']
  assert by_group['snet'] == pytest.approx(2.20, abs=0.01)
  assert by_group['dnet'] == pytest.approx(19.57, abs=0.01)
  assert (by_group['dnet'] - info['gflops_by_module']['dnet/backbone'] -
          info['gflops_by_module']['dnet/fc']) == pytest.approx(2.26, abs=0.01)  # fusion convs
  # Filterbanks: temporal N T' H W C + spatial T' (H W w' + h' H w') C multiply-accumulates.
  filterbanks = (150 * 16 * 224 * 224 * 3 + 16 * (224 * 224 * 112 + 112 * 224 * 112) * 3) * 1e-9
  assert by_group['sampler'] == pytest.approx(filterbanks, rel=1e-6)
  assert by_group['f_theta'] == pytest.approx(0.065, abs=0.001)
  # The reference's 0.74 "sampler" is f_theta plus fvcore's count of the second spatial matmul,
  # which ignores its broadcast over the 3 channels (16 * 112 * 224 * 112 counted once).
  fvcore_sampler = filterbanks - 2 * 16 * 112 * 224 * 112 * 1e-9 + by_group['f_theta']
  assert fvcore_sampler == pytest.approx(0.74, abs=0.005)
  assert info['gflops'] == pytest.approx(22.5, abs=1.0)


def test_registry_builds_s2dnet_from_config():
  config = ml_collections.ConfigDict(dict(name='s2dnet', stage='warmup', f_theta_fix='A', **TINY))
  model = build_model(config, num_classes=7, dtype='bfloat16')
  assert isinstance(model, s2dnet.S2DNet)
  assert (model.stage, model.f_theta_fix, model.num_classes) == ('warmup', 'A', 7)
  assert model.dtype == jnp.bfloat16


# ---------------------------------------------------------------------------------------------
# Small pieces.
# ---------------------------------------------------------------------------------------------


def test_synopsis_tiling_per_frame_and_the_reference_bug():
  s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  correct = s2dnet.tile_per_frame(s, 3)
  faithful = s2dnet.tile_per_frame(s, 3, faithful_bug=True)
  np.testing.assert_array_equal(correct, s[jnp.array([0, 0, 0, 1, 1, 1])])  # row b*T+t: video b
  np.testing.assert_array_equal(faithful, s[jnp.array([0, 1, 0, 1, 0, 1])])  # row r: video r % B


def test_top_k_multi_hot_and_masked_softmax():
  """Each row (video) gets its own top-k: rows with different winners keep them apart."""
  logits = jnp.array([[0.1, 3.0, -1.0, 2.0, 0.5], [4.0, -2.0, 1.0, 0.0, 5.0]])
  np.testing.assert_array_equal(s2dnet.top_k_multi_hot(logits, 2),
                                [[0, 1, 0, 1, 0], [1, 0, 0, 0, 1]])
  logits = logits[:1]
  prob = s2dnet.masked_softmax(logits, s2dnet.top_k_multi_hot(logits, 2))
  expected = np.exp([3.0, 2.0]) / (np.exp([3.0, 2.0]).sum() + 1e-6 * np.exp(3.0))
  np.testing.assert_allclose(prob[0, [1, 3]], expected, rtol=1e-5)
  assert float(prob[0, 0]) == 0.0


def test_s2dnet_loss_is_smoothed_dnet_ce_plus_weighted_snet_ce():
  dnet = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
  snet = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
  labels = jnp.array([0, 2])
  config = base.get_base_config().loss
  config.name = 's2dnet'
  assert losses.needs_aux(config)
  total, terms = losses.compute_loss(config, dnet, labels, {'snet_logits': snet})

  def ce(logits, smoothing):
    logp = jax.nn.log_softmax(logits)
    target = (1 - smoothing) * jax.nn.one_hot(labels, 3) + smoothing / 3
    return float(-jnp.mean(jnp.sum(target * logp, axis=-1)))

  assert float(terms['dnet_cross_entropy']) == pytest.approx(ce(dnet, 0.1), rel=1e-6)
  assert float(terms['weighted_snet_cross_entropy']) == pytest.approx(0.1 * ce(snet, 0.0),
                                                                    rel=1e-6)
  assert float(total) == pytest.approx(ce(dnet, 0.1) + 0.1 * ce(snet, 0.0), rel=1e-6)


def test_detail_network_tiles_synopsis_per_video_unless_faithful():
  frames = jax.random.normal(jax.random.key(0), (2, 2, 16, 16, 3))
  context = jax.random.normal(jax.random.key(1), (2, 4))
  s = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
  net = s2dnet.DetailNetwork(3, num_frames=2, depth=10, width=4)
  variables = jax.jit(net.init)(jax.random.key(2), frames, context, s)
  fc = variables['params']['fc']['kernel']
  variables['params']['fc']['kernel'] = fc.at[-3:].set(
      jax.random.normal(jax.random.key(3), (3, 3)))  # make s matter visibly
  w_s = variables['params']['fc']['kernel'][-3:]
  correct = jax.jit(net.apply)(variables, frames, context, s)
  faithful = jax.jit(net.clone(faithful_topk_tiling=True).apply)(variables, frames, context, s)
  # Under the bug both videos' frame rows alternate s0, s1: each video sees their mean.
  np.testing.assert_allclose(faithful - correct, (s.mean(0, keepdims=True) - s) @ w_s,
                             rtol=1e-4, atol=1e-5)


def test_faithful_tiling_says_that_scores_depend_on_the_batch(tiny_data_dir, caplog):
  """With the reference's tiling a video's scores change with the videos beside it (the test
  above), so an engine built for it says so; the default tiling says nothing."""
  caplog.set_level('WARNING', logger='absl')
  config = tiny_s2dnet_config(tiny_data_dir, 'sampling')
  engine.Engine(config, ['a', 'b', 'c'])
  assert 'faithful_topk_tiling' not in caplog.text
  config.model.faithful_topk_tiling = True
  engine.Engine(config, ['a', 'b', 'c'])
  assert ("config.model.faithful_topk_tiling=True gives the detail frames of a clip the top-k "
          'vectors of the clips of its batch in turn') in caplog.text
  assert 'grad_accumulation_steps, config.eval_batch_size' in caplog.text


# ---------------------------------------------------------------------------------------------
# Tiny model: stages and gradient paths.
# ---------------------------------------------------------------------------------------------

GEOMETRY_KEYS = ('sampler_mu_t', 'sampler_delta_t', 'sampler_center_x', 'sampler_center_y',
                 'sampler_delta_x', 'sampler_delta_y')


def _is_zero(tree) -> bool:
  return all(not np.any(np.asarray(x)) for x in jax.tree.leaves(tree))


def _is_nonzero_everywhere(tree) -> bool:
  return all(np.any(np.asarray(x)) for x in jax.tree.leaves(tree))


def _but_biases_before_batch_norm(f_theta):
  """f_theta's gradients without those of fc1's and fc2's biases: a train-mode BatchNorm
  follows each and subtracts the batch mean, so their exact gradient is zero and what is
  computed is rounding noise, all zero on some CPUs (an AMD EPYC's run failed on fc1's)."""
  return {name: ({'kernel': leaves['kernel']} if name in ('fc1', 'fc2') else leaves)
          for name, leaves in f_theta.items()}


@pytest.fixture(scope='module')
def tiny_batch():
  """Two videos of 12 and 7 valid frames (the second zero-padded to 12), 32 x 32, labels, and
  variables of the tiny model (the same tree in both stages)."""
  num_valid = jnp.array([12, 7], jnp.int32)
  valid = jnp.arange(12)[None, :] < num_valid[:, None]
  video = jax.random.normal(jax.random.key(0), (2, 12, 32, 32, 3))
  video = jnp.where(valid[:, :, None, None, None], video, 0.0)
  model = s2dnet.S2DNet(num_classes=TINY_CLASSES, **TINY)
  variables = jax.jit(lambda v, n: model.init(
      {'params': jax.random.key(1), 'dropout': jax.random.key(2)}, v, num_valid=n))(
          video, num_valid)
  return video, num_valid, jnp.array([1, 3]), variables


def _stage_gradients(stage, batch):
  """Jacobian of (total loss, DNet CE only, sum of the sampler geometry) w.r.t. every parameter."""
  video, num_valid, labels, variables = batch
  model = s2dnet.S2DNet(num_classes=TINY_CLASSES, stage=stage, **TINY)
  loss_config = base.get_base_config().loss
  loss_config.name = 's2dnet'

  def objectives(params):
    (logits, aux), updates = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, video, train=True,
        return_aux=True, num_valid=num_valid, mutable=['batch_stats'],
        rngs={'dropout': jax.random.key(3)})
    total, _ = losses.compute_loss(loss_config, logits, labels, aux)
    dnet_ce = losses.cross_entropy(logits, labels, 0.1)
    geometry = sum(jnp.sum(aux[k]) for k in GEOMETRY_KEYS)
    return jnp.stack([total, dnet_ce, geometry]), (aux, updates)

  jacobian, (aux, updates) = jax.jit(jax.jacrev(objectives, has_aux=True))(variables['params'])
  per_objective = [jax.tree.map(lambda g, i=i: g[i], jacobian) for i in range(3)]
  return variables, per_objective, aux, updates


def test_sampling_stage_gradient_paths(tiny_batch):
  variables, (total, dnet_ce, geometry), aux, updates = _stage_gradients('sampling', tiny_batch)
  # The loss trains f_theta through the sampler...
  assert _is_nonzero_everywhere(_but_biases_before_batch_norm(total['f_theta']))
  assert _is_nonzero_everywhere(total['dnet'])
  # ... whose parameters depend on f_theta only: e is detached and s carries no gradient.
  assert _is_nonzero_everywhere(_but_biases_before_batch_norm(geometry['f_theta']))
  assert _is_zero(geometry['snet']) and _is_zero(geometry['dnet']) and _is_zero(geometry['f_m'])
  # The DNet loss reaches SNet's backbone through g only: SNet's classifier (which only feeds
  # the detached top-k s) gets nothing from it.
  assert _is_nonzero_everywhere(dnet_ce['snet']['backbone'])
  assert _is_zero(dnet_ce['snet']['fc'])
  assert _is_nonzero_everywhere(total['snet']['fc'])  # from the SNet CE term
  # f_theta's BatchNorms train in this stage.
  assert not _is_zero(jax.tree.map(lambda a, b: a - b, updates['batch_stats']['f_theta'],
                                   variables['batch_stats']['f_theta']))
  assert aux['detail_frames'].shape == (2, 4, 16, 16, 3)
  assert aux['detail_frames'].dtype == jnp.float32
  assert aux['snet_logits'].shape == (2, TINY_CLASSES)
  np.testing.assert_array_equal(aux['synopsis'].sum(-1), [2, 2])
  np.testing.assert_array_equal(aux['synopsis_frame_indices'], [[0, 3, 7, 11], [0, 2, 4, 6]])


def test_warmup_stage_freezes_the_sampler(tiny_batch):
  variables, (total, dnet_ce, _), aux, updates = _stage_gradients('warmup', tiny_batch)
  assert _is_zero(total['f_theta'])
  assert _is_nonzero_everywhere(total['dnet'])
  assert _is_nonzero_everywhere(dnet_ce['snet']['backbone'])  # g still trains SNet
  # f_theta's BN statistics stay put; the backbones' move.
  assert _is_zero(jax.tree.map(lambda a, b: a - b, updates['batch_stats']['f_theta'],
                               variables['batch_stats']['f_theta']))
  assert not _is_zero(jax.tree.map(lambda a, b: a - b, updates['batch_stats']['dnet'],
                                   variables['batch_stats']['dnet']))
  # Fixed windows: centre crop at 1-pixel stride on both axes, uniform temporal centres.
  for key, value in (('center_x', 15.5), ('center_y', 15.5), ('delta_x', 1.0), ('delta_y', 1.0)):
    np.testing.assert_allclose(aux[f'sampler_{key}'], np.full((2, 4), value), err_msg=key)
  for b, n in enumerate([12, 7]):
    np.testing.assert_allclose(aux['sampler_mu_t'][b],
                               [(n - 1) / 2 + (i - 1.5) * n / 3 for i in range(4)], rtol=1e-6)
    np.testing.assert_allclose(aux['sampler_delta_t'][b], n / 3, rtol=1e-6)


def test_sampling_stage_windows_follow_f_theta_and_each_videos_valid_frames(tiny_batch):
  """The sampling stage's windows are f_theta's raw outputs through the paper's maps: temporal
  centre tanh(o)(n-1)/2 + (n-1)/2 and stride n/(T'-1) exp(l) over the video's own n valid
  frames, spatial centre tanh(o)(W-1)/2 + (W-1)/2 and stride W/(w'-1) exp(l), x from the
  first of each (x, y) pair. The warm-up test sees none of this: its windows are fixed."""
  video, num_valid, _, variables = tiny_batch
  model = s2dnet.S2DNet(num_classes=TINY_CLASSES, **TINY)
  (_, aux), state = jax.jit(lambda v: model.apply(
      v, video, train=True, return_aux=True, num_valid=num_valid,
      mutable=['batch_stats', 'intermediates'], rngs={'dropout': jax.random.key(3)},
      capture_intermediates=lambda module, _: module.name == 'f_theta'))(variables)
  raw = jax.tree.map(np.asarray, state['intermediates']['f_theta']['__call__'][0])
  assert np.ptp(raw.temporal_offset) > 0 and np.ptp(raw.spatial_offset[..., 0]) > 0
  n = np.array([12.0, 7.0])
  half = (n - 1) / 2
  center_t = np.tanh(raw.temporal_offset) * half + half
  delta_t = n / 3 * np.exp(raw.temporal_stride)
  np.testing.assert_allclose(aux['sampler_delta_t'], delta_t, rtol=1e-5)
  np.testing.assert_allclose(aux['sampler_mu_t'],
                             center_t[:, None] + (np.arange(4) - 1.5) * delta_t[:, None],
                             rtol=1e-5)
  for axis, name in enumerate('xy'):
    np.testing.assert_allclose(aux[f'sampler_center_{name}'],
                               np.tanh(raw.spatial_offset[..., axis]) * 15.5 + 15.5, rtol=1e-6)
    np.testing.assert_allclose(aux[f'sampler_delta_{name}'],
                               32 / 15 * np.exp(raw.spatial_stride[..., axis]), rtol=1e-6)


def test_features_are_what_the_per_frame_classifier_reads_averaged_over_frames(tiny_batch):
  """S2DNet's classifier runs on every detail frame and averages: features mode wrote its inputs
  of all frames end to end (8 frames x D), not one D-vector per view, with no word. The features
  are the frames' mean, so the classifier applied to them gives the model's logits."""
  from salinet_jax import features  # pylint: disable=g-import-not-at-top
  from salinet_jax import inputs  # pylint: disable=g-import-not-at-top
  video, num_valid, _, variables = tiny_batch
  model = s2dnet.S2DNet(num_classes=TINY_CLASSES, **TINY)
  data_config = ml_collections.ConfigDict(dict(normalization='kinetics', num_frames=12))
  frame_mask = jnp.arange(12)[None, :] < num_valid[:, None]
  batch = {'video': video[:, None], 'frame_mask': frame_mask}
  got = features.view_features(variables, batch, model=model, data_config=data_config,
                               clips_per_forward=0)
  dim = TINY['dnet_width'] * 8 + TINY['context_features'] + TINY_CLASSES  # ResNet-10: 8x width
  assert got.shape == (2, 1, dim)
  fc = variables['params']['dnet']['fc']
  logits = model.apply(variables, inputs.normalize_on_device(video, data_config, frame_mask),
                       num_valid=num_valid)
  np.testing.assert_allclose(got[:, 0] @ fc['kernel'] + fc['bias'], logits, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.sort(got[:, 0, -TINY_CLASSES:], axis=-1)[:, -2:], 1.0)


def test_a_videos_outputs_depend_on_its_own_valid_frames_only(tiny_batch):
  """Eval-mode outputs of a video in a batch equal those of the video alone with other padding:
  no top-k, synopsis frame, detail frame or tiled context comes from another video or from
  padding (a top-k over the batch, video 0's synopsis indices for all, or m tiled over the
  videos in DNet's classifier or lateral fusion passed the tests)."""
  video, num_valid, _, variables = tiny_batch
  variables = jax.tree.map(lambda x: x, variables)
  # Random SNet logits are near-equal (top-k margins ~1e-10) and rank the classes alike for
  # both videos: set SNet's classifier to rank them 0 > 1 > ... for video 0, the reverse for 1.
  snet = s2dnet.SynopsisNetwork(TINY_CLASSES, TINY['synopsis_frames'], TINY['synopsis_size'],
                                TINY['snet_width'], TINY['snet_last_channels'])
  _, _, g, _ = jax.jit(snet.apply)({c: variables[c]['snet'] for c in variables}, video, num_valid)
  direction = (g[0] - g[1]) / jnp.sum(jnp.square(g[0] - g[1]))
  alpha = jnp.array([2.0, 1.0, 0.0, -1.0, -2.0])
  variables['params']['snet']['fc'] = {
      'kernel': direction[:, None] * alpha, 'bias': -alpha * jnp.dot(g[0] + g[1], direction) / 2}
  model = s2dnet.S2DNet(num_classes=TINY_CLASSES, **TINY)
  apply = jax.jit(lambda v, n: model.apply(variables, v, return_aux=True, num_valid=n))
  logits, aux = apply(video, num_valid)
  synopsis = np.asarray(aux['synopsis'])
  np.testing.assert_array_equal(synopsis, [[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]])
  for b in range(2):
    np.testing.assert_array_equal(synopsis[b],
                                  s2dnet.top_k_multi_hot(aux['snet_logits'][b:b + 1], 2)[0])
    alone = video[b:b + 1]
    alone = alone.at[:, int(num_valid[b]):].set(1e4)  # other (loud) padding
    logits_alone, aux_alone = apply(alone, num_valid[b:b + 1])
    np.testing.assert_array_equal(aux_alone['synopsis'][0], synopsis[b])
    for key in ('snet_logits', 'detail_frames', 'sampler_mu_t', 'sampler_center_x'):
      np.testing.assert_allclose(aux_alone[key][0], aux[key][b], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits_alone[0], logits[b], rtol=1e-4, atol=1e-5)


def test_the_detail_classifier_starts_as_a_fresh_torch_linear(tiny_batch):
  """The reference replaces DNet's new_fc by a fresh nn.Linear over [features; context; synopsis]
  (s2d/models.py mount_lateral_fusion), after TSN's N(0, 0.001) init of the old one: PyTorch's
  default U(+-1/sqrt(fan_in)) for weight and bias. It was N(0, 0.001) with a zero bias here,
  about 20x smaller at full size; SNet's classifier keeps TSN's init."""
  params = tiny_batch[3]['params']
  kernel, bias = (np.asarray(params['dnet']['fc'][n]) for n in ('kernel', 'bias'))
  bound = 1 / np.sqrt(kernel.shape[0])
  assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
  assert kernel.std() > 0.4 * bound and np.abs(bias).max() > 0.2 * bound
  snet = np.asarray(params['snet']['fc']['kernel'])
  assert snet.std() < 0.002 and not np.any(np.asarray(params['snet']['fc']['bias']))
