"""Precise BN replaces running statistics by the average batch statistics over N batches."""

import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salinet_jax import engine
from salinet_jax import inputs
from salinet_jax import parallel
from salinet_jax import precise_bn
from salinet_jax.bench import synthetic_batch
from salinet_jax.models import layers
from tests.conftest import equations
from tests.conftest import tiny_config
from tests.conftest import tiny_s2dnet_config


class SharedNormModel(nn.Module):
  """A BN on the input plus one BN module called twice (like SaliNet's shared saliency BN)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    first = nn.BatchNorm(use_running_average=not train, name='first')(x)
    shared = nn.BatchNorm(use_running_average=not train, name='shared')
    return shared(first) + shared(2.0 * x + 1.0)


def _shared_norm_run():
  """(model, its variables, 3 batches, the moments step, the mesh, precise statistics of the
  3 batches) of SharedNormModel."""
  model = SharedNormModel()
  rng = np.random.default_rng(0)
  batches = [{'video': rng.normal(3.0, 2.0, (4, 5, 3)).astype(np.float32)} for _ in range(3)]
  variables = model.init(jax.random.key(0), jnp.zeros((4, 5, 3)))
  mesh = parallel.create_mesh()
  step = precise_bn.make_moments_step(model, mesh, lambda batch: (batch['video'], {}))
  return model, variables, batches, step, mesh, precise_bn.recompute(step, variables,
                                                                      iter(batches), 3, mesh)


def test_running_stats_become_the_population_moments_pooled_over_batches():
  _, _, batches, _, _, stats = _shared_norm_run()
  # fvcore's population estimator: every element of every batch pooled (E[x^2] - E[x]^2), so the
  # spread between the batch means counts too.
  flat = np.concatenate([b['video'].reshape(-1, 3) for b in batches])
  np.testing.assert_allclose(stats['first']['mean'], flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['first']['var'], flat.var(0), rtol=1e-4)


def test_a_batch_norm_called_several_times_gets_what_its_running_averages_settle_at():
  """SaliNet's shared saliency BN normalises three inputs of far apart means in each forward;
  precise BN pooled them as one population, so the spread between the calls' means entered the
  variance: 3.7x what the running averages hold (8042 against 2189 on the tiny model), and the
  logits moved by 0.7 on a scale of 7 at every evaluation, without a word (training audit).
  Each call is now a population of its own, weighted as the running averages weight it."""
  model, variables, batches, step, mesh, stats = _shared_norm_run()
  # The shared BN sees each batch normalised by its own statistics (mean 0, var ~1), then 2x + 1
  # (mean 7, var 16): each call's inputs pooled over all batches, the later call weighted as a
  # running average of momentum d updated by both calls in turn weights it (1 against d).
  calls = [np.concatenate([(b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5) for b in
                           (b['video'].reshape(-1, 3) for b in batches)]),
           2.0 * np.concatenate([b['video'].reshape(-1, 3) for b in batches]) + 1.0]
  d = nn.BatchNorm.momentum
  weights = np.array([d, 1.0]) / (1.0 + d)
  np.testing.assert_allclose(stats['shared']['mean'],
                             sum(w * c.mean(0) for w, c in zip(weights, calls)), rtol=1e-4)
  np.testing.assert_allclose(stats['shared']['var'],
                             sum(w * c.var(0) for w, c in zip(weights, calls)), rtol=1e-4)
  # So on a single batch, precise statistics are where the running averages stay: a training
  # forward from them leaves them as they are.
  stats = precise_bn.recompute(step, variables, iter(batches[:1]), 1, mesh)
  _, updated = model.apply({'params': variables['params'], 'batch_stats': stats},
                           batches[0]['video'], train=True, mutable=['batch_stats'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               updated['batch_stats'], stats)


class GroupedNormModel(nn.Module):
  """BN -> ReLU -> BN with the project's BatchNorm, which honours config.bn_group_size."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(layers.BatchNorm(use_running_average=not train, name='first')(x))
    return layers.BatchNorm(use_running_average=not train, name='second')(x)


def test_precise_statistics_normalise_each_bn_group_of_clips_on_its_own():
  """Mutation audit: precise BN normalising the whole batch where training normalises groups of
  bn_group_size clips (PySlowFast's per-GPU BN) passed every test; the second layer's inputs
  then differ from training's."""
  model = GroupedNormModel()
  rng = np.random.default_rng(0)
  video = np.concatenate([rng.normal(0.0, 1.0, (1, 6, 2)), rng.normal(10.0, 3.0, (1, 6, 2))])
  variables = model.init(jax.random.key(0), jnp.zeros((2, 6, 2)))
  mesh = parallel.create_mesh()

  def second_layer_mean(group_size):
    step = precise_bn.make_moments_step(model, mesh, lambda batch: (batch['video'], {}),
                                        bn_group_size=group_size)
    stats = precise_bn.recompute(step, variables, iter([{'video': video.astype(np.float32)}]), 1,
                                 mesh)
    return np.asarray(stats['second']['mean'])

  def by_hand(groups):
    parts = np.split(video, groups)
    normalised = [(p - p.mean((0, 1))) / np.sqrt(p.var((0, 1)) + 1e-5) for p in parts]
    return np.maximum(np.concatenate(normalised), 0).mean((0, 1))

  np.testing.assert_allclose(second_layer_mean(1), by_hand(2), rtol=1e-4)
  np.testing.assert_allclose(second_layer_mean(0), by_hand(1), rtol=1e-4)
  assert not np.allclose(by_hand(1), by_hand(2), rtol=1e-2)


@pytest.mark.parametrize('kind', ['salinet', 's2dnet'])
def test_precise_statistics_and_the_nan_check_see_the_micro_batches_training_sees(
    tiny_data_dir, kind):
  """With gradient accumulation each micro-batch is normalised on its own in training, but the
  precise-BN forward normalised the whole batch at once: deeper layers saw other inputs and got
  variances 0.2-18x those of training, without a word. (A first fix grouped rows instead, and
  stopped an S2DNet run at its first checkpoint: its backbones' rows are frames.)"""
  config = (tiny_config(str(tiny_data_dir)) if kind == 'salinet'
            else tiny_s2dnet_config(str(tiny_data_dir), 'warmup'))
  config.batch_size, config.grad_accumulation_steps, config.bn_group_size = 4, 2, 0
  trainer = engine.Engine(config, ['a', 'b', 'c'], train_videos=8)
  state = trainer.fresh_state()
  full = synthetic_batch(config, 'train', 4, config.data.num_frames, config.data.crop_size, 3)
  batch = {key: value for key, value in full.items() if key != 'label'}
  got = trainer.moments_step(state.variables, batch)

  def moments(rows):
    part = jax.tree.map(lambda x: x[rows], batch)
    video, kwargs = inputs.model_inputs(part, config.data)
    return jax.jit(lambda v: precise_bn.batch_moments(trainer.model, v, video, kwargs))(
        state.variables)

  # Training's micro-batches are rows 0, 2 and rows 1, 3 (engine.train_step).
  first, second, whole = moments(slice(0, 4, 2)), moments(slice(1, 4, 2)), moments(slice(0, 4))
  differs = False
  for path in got:  # (weights, means, mean squares) of each call
    for k in range(3):
      np.testing.assert_allclose(got[path][k], (first[path][k] + second[path][k]) / 2,
                                 rtol=1e-4, atol=1e-6, err_msg=str(path))
    differs |= not np.allclose(got[path][2], whole[path][2], rtol=1e-3)
  assert differs  # the whole batch at once is another forward
  # The NaN check at each checkpoint runs the same micro-batches.
  assert bool(trainer.outputs_finite(state, full))


def _count_primitive(jaxpr, name: str) -> int:
  """How many equations of `jaxpr` and of the jaxprs nested in it (jit, remat, custom rules)
  bind the primitive `name`."""
  return sum(eqn.primitive.name == name for eqn in equations(jaxpr))


@pytest.mark.parametrize('remat', ['elementwise', 'blocks', 'full'])
def test_precise_statistics_under_remat_are_those_without(tiny_data_dir, remat):
  """Precise BN reads BatchNorm inputs inside the forward, which leaked out of jax.checkpoint:
  the K400 SaliNet recipes and NL-I3D (remat='elementwise', precise_bn_batches=200) would stop
  at their first evaluation with an UnexpectedTracerError (audit). So the moments step runs the
  same model built without remat. Mutation audit: both engines' moments steps were that plain
  forward, so the test also passed where config.remat never reached the trained model, or where
  the rematted forward training runs normalised other values than the plain one."""
  config = tiny_config(str(tiny_data_dir))
  plain = engine.Engine(config, ['a', 'b', 'c'], train_videos=8)
  config.remat = remat
  rematted = engine.Engine(config, ['a', 'b', 'c'], train_videos=8)
  state = plain.fresh_state()
  full = synthetic_batch(config, 'train', 4, config.data.num_frames, config.data.crop_size, 3)
  batch = {key: value for key, value in full.items() if key != 'label'}
  video, kwargs = inputs.model_inputs(batch, config.data)

  def training_forward(model):
    return lambda variables: model.apply(variables, video, train=True, mutable=['batch_stats'],
                                         rngs={'dropout': jax.random.key(0)}, **kwargs)

  # The trained model is rematted, the moments step (and the plain model) not.
  checkpoint = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).eqns[0].primitive.name

  def remats(f, *args):
    return _count_primitive(jax.make_jaxpr(f)(*args).jaxpr, checkpoint)

  assert remats(training_forward(rematted.model), state.variables) > 0
  assert remats(training_forward(plain.model), state.variables) == 0
  assert remats(rematted.moments_step, state.variables, batch) == 0
  # The rematted training forward normalises what the plain one does: the running statistics
  # it updates are those of the plain forward, whose moments precise BN records.
  (got_logits, got), (want_logits, want) = (jax.jit(training_forward(m))(state.variables)
                                            for m in (rematted.model, plain.model))
  np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-6)
  updated = 0
  for a, b, old in zip(*(jax.tree.leaves(t) for t in (got, want, state.batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    updated += not np.allclose(b, old)
  assert updated == len(jax.tree.leaves(state.batch_stats))
  expected = plain.moments_step(state.variables, batch)
  got = rematted.moments_step(state.variables, batch)
  assert sorted(got) == sorted(expected)
  assert len(got) == updated // 2  # every BatchNorm (mean and var) has its moments
  for path in got:
    for k in range(3):
      np.testing.assert_allclose(got[path][k], expected[path][k], rtol=1e-5, atol=1e-6)


def test_precise_statistics_leave_batch_norms_on_running_averages_as_they_are(tiny_data_dir):
  """S2DNet's warm-up runs f_theta's BatchNorms on their running averages, which training never
  updates, but precise BN rewrote them from batch statistics (mean 0 / var 1 to 0.04-0.23 /
  0.01-0.07 on the tiny model), into the checkpoint the sampling stage starts from (audit)."""
  config = tiny_s2dnet_config(str(tiny_data_dir), 'warmup')
  trainer = engine.Engine(config, ['a', 'b', 'c'], train_videos=8)
  state = trainer.fresh_state()
  full = synthetic_batch(config, 'train', 4, config.data.num_frames, config.data.crop_size, 3)
  batch = {key: value for key, value in full.items() if key != 'label'}
  recomputed = precise_bn.recompute(trainer.moments_step, state.variables, iter([batch]), 1,
                                    trainer.mesh)
  before = flax.traverse_util.flatten_dict(flax.core.unfreeze(state.batch_stats))
  after = flax.traverse_util.flatten_dict(recomputed)
  sampler = [path for path in before if path[0] == 'f_theta']
  assert sampler and all(np.array_equal(after[path], before[path]) for path in sampler)
  assert any(not np.allclose(after[path], before[path]) for path in before
             if path[0] != 'f_theta')


def test_each_evaluation_step_draws_its_own_precise_bn_clips_as_many_batches_as_asked(
    tiny_data_dir, monkeypatch):
  """Precise BN before each evaluation reads a stream seeded by the step: seeded by the run's
  seed alone, every evaluation would estimate from the same clips (and, in files mode, the ones
  the run's first batches hold). The same step draws the same clips again after a resume. It
  reads config.precise_bn_batches batches, at most one pass over the split."""
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config(str(tiny_data_dir))
  seeds, counts = [], []

  def recording_stream(stream_config, seed, **kwargs):
    seeds.append(seed)
    return real_stream(stream_config, seed=seed, **kwargs)

  real_stream = train.pipeline.train_dataset
  monkeypatch.setattr(train.pipeline, 'train_dataset', recording_stream)
  monkeypatch.setattr(precise_bn, 'recompute', lambda step, variables, batches, count, mesh,
                      stop_requested: counts.append(count))
  trainer = engine.Engine(config, ['a', 'b', 'c'], train_videos=8)
  state = types.SimpleNamespace(variables=None)
  statistics = train._precise_bn_stats  # pylint: disable=protected-access
  for step in (4, 8, 4):
    statistics(trainer, state, step, 'global_order')
  assert seeds[0] == seeds[2] and len({seeds[0], seeds[1], config.seed}) == 3, seeds
  one_pass = train.pipeline.split_info(config.dataset, 'train').num_videos // config.batch_size
  assert one_pass > 1
  for asked, read in ((1, 1), (one_pass + 5, one_pass)):
    config.precise_bn_batches = asked
    statistics(trainer, state, 4, 'global_order')
    assert counts[-1] == read
