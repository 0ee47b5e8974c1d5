"""Precise BN replaces running statistics by the average batch statistics over N batches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from salinet_jax import inputs
from salinet_jax import parallel
from salinet_jax import precise_bn


class SharedNormModel(nn.Module):
  """A BN on the input plus one BN module called twice (like SaliNet's shared saliency BN)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    first = nn.BatchNorm(use_running_average=not train, name='first')(x)
    shared = nn.BatchNorm(use_running_average=not train, name='shared')
    return shared(first) + shared(2.0 * x + 1.0)


def test_running_stats_become_the_population_moments_pooled_over_batches():
  model = SharedNormModel()
  rng = np.random.default_rng(0)
  batches = [{'video': rng.normal(3.0, 2.0, (4, 5, 3)).astype(np.float32)} for _ in range(3)]
  variables = model.init(jax.random.key(0), jnp.zeros((4, 5, 3)))
  mesh = parallel.create_mesh()
  step = precise_bn.make_moments_step(model, mesh, lambda batch: (batch['video'], {}))
  stats = precise_bn.recompute(step, variables, iter(batches), 3, mesh)

  # fvcore's population estimator: every element of every batch pooled (E[x^2] - E[x]^2), so the
  # spread between the batch means counts too.
  flat = np.concatenate([b['video'].reshape(-1, 3) for b in batches])
  np.testing.assert_allclose(stats['first']['mean'], flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['first']['var'], flat.var(0), rtol=1e-4)
  # The shared BN sees each batch normalised by its own statistics (mean 0, var ~1) and 2x + 1:
  # both calls' inputs pooled over all batches.
  normalised = np.concatenate([(b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5) for b in
                               (b['video'].reshape(-1, 3) for b in batches)])
  shared_inputs = np.concatenate([normalised, 2.0 * flat + 1.0])
  np.testing.assert_allclose(stats['shared']['mean'], shared_inputs.mean(0), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(stats['shared']['var'], shared_inputs.var(0), rtol=1e-4)


def test_precise_statistics_group_the_clips_as_training_does(tiny_data_dir):
  """With gradient accumulation each micro-batch is normalised on its own in training, but the
  precise-BN forward normalised the whole batch at once: deeper layers saw other inputs and got
  variances 0.2-18x those of training, without a word."""
  from salinet_jax import engine  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(str(tiny_data_dir))
  config.batch_size, config.grad_accumulation_steps, config.bn_group_size = 4, 2, 0
  assert engine.training_bn_group_size(config) == 2
  trainer = engine.Engine(config, ['a', 'b'], train_videos=8)
  variables = trainer.fresh_state().variables
  shape = (4, config.data.num_frames, config.data.crop_size, config.data.crop_size, 3)
  batch = {'video': np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)}
  got = trainer.moments_step(variables, batch)
  video, kwargs = inputs.model_inputs(batch, config.data)

  def moments(group):
    return jax.jit(lambda v: precise_bn.batch_moments(trainer.model, v, video, kwargs, group))(
        variables)

  by_micro_batch, whole = moments(2), moments(0)
  deepest = sorted(got)[-1]
  np.testing.assert_allclose(got[deepest][1], by_micro_batch[deepest][1], rtol=1e-5)
  assert not np.allclose(got[deepest][1], whole[deepest][1], rtol=1e-3)
  config.grad_accumulation_steps, config.bn_group_size = 1, 0
  assert engine.training_bn_group_size(config) == 0
  config.bn_group_size = 1
  assert engine.training_bn_group_size(config) == 1
