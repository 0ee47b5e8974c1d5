"""Precise BN replaces running statistics by the average batch statistics over N batches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
