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


def test_running_stats_become_the_average_batch_moments():
  model = SharedNormModel()
  rng = np.random.default_rng(0)
  batches = [{'video': rng.normal(3.0, 2.0, (4, 5, 3)).astype(np.float32)} for _ in range(3)]
  variables = model.init(jax.random.key(0), jnp.zeros((4, 5, 3)))
  mesh = parallel.create_mesh()
  step = precise_bn.make_moments_step(model, mesh, lambda batch: (batch['video'], {}))
  stats = precise_bn.recompute(step, variables, iter(batches), 3, mesh)

  flat = np.concatenate([b['video'].reshape(-1, 3) for b in batches])
  per_batch = [b['video'].reshape(-1, 3) for b in batches]
  np.testing.assert_allclose(stats['first']['mean'], flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['first']['var'], np.mean([b.var(0) for b in per_batch], 0),
                             rtol=1e-5)
  # The shared BN sees the normalised input (mean 0, var ~1) and 2x + 1 (mean 2m + 1).
  expected_shared_mean = np.mean([(0.0 + 2 * b.mean(0) + 1) / 2 for b in per_batch], 0)
  np.testing.assert_allclose(stats['shared']['mean'], expected_shared_mean, rtol=1e-4, atol=1e-5)
  expected_shared_var = np.mean([(b.var(0) / (b.var(0) + 1e-5) + 4 * b.var(0)) / 2
                                 for b in per_batch], 0)
  np.testing.assert_allclose(stats['shared']['var'], expected_shared_var, rtol=1e-4)
