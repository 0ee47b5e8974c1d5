"""Optimisers, schedules, weight-decay masks, per-group LR multipliers and frozen parameters."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import base
from salinet_jax import optim

PARAMS = {
    'conv': {'kernel': jnp.ones((3, 3, 2, 4))},
    'bn': {'scale': jnp.ones((4,)), 'bias': jnp.zeros((4,))},
    'head': {'fc': {'kernel': jnp.ones((4, 5)), 'bias': jnp.zeros((5,))}},
    'sampler': {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.zeros((2,))}},
}


def _opt_config(**overrides) -> ml_collections.ConfigDict:
  config = base.get_base_config().optimizer
  config.update(dict(schedule='constant', weight_decay=0.0, momentum=0.0, nesterov=False,
                     base_learning_rate=0.5))
  config.update(overrides)
  return config


def _one_update(opt_config, grads=None):
  grads = grads or jax.tree.map(jnp.ones_like, PARAMS)
  tx, _ = optim.create_optimizer(opt_config, PARAMS, total_steps=10, global_batch=8)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  return updates


def test_steps_schedule_with_relative_lrs_and_warmup():
  config = _opt_config(schedule='steps', step_boundaries=(0.5, 0.8), relative_lrs=(1.0, 0.1, 0.01),
                       warmup_steps=2, base_learning_rate=1.0)
  schedule = optim.learning_rate_schedule(config, total_steps=10, global_batch=8)
  values = [float(schedule(i)) for i in range(10)]
  np.testing.assert_allclose(values[:2], [0.0, 0.5])
  np.testing.assert_allclose(values[2:5], [1.0] * 3, rtol=1e-6)
  np.testing.assert_allclose(values[5:8], [0.1] * 3, rtol=1e-6)
  np.testing.assert_allclose(values[8:], [0.01] * 2, rtol=1e-6)


def test_cosine_warmup_and_linear_batch_scaling():
  config = _opt_config(schedule='warmup_cosine', warmup_steps=5, base_learning_rate=1e-5,
                       base_batch_size=1, final_lr_fraction=0.01)
  schedule = optim.learning_rate_schedule(config, total_steps=105, global_batch=64)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(64e-5)
  assert float(schedule(105)) == pytest.approx(64e-5 * 0.01)
  with pytest.raises(ValueError, match='warmup_cosine'):
    optim.learning_rate_schedule(_opt_config(schedule='cosine', warmup_steps=3), 10, 8)


def test_weight_decay_skips_norm_parameters_only_by_default():
  mask = optim.decay_mask(PARAMS, decay_norm_params=False, decay_biases=True)
  assert mask['bn'] == {'scale': False, 'bias': False}
  assert mask['conv']['kernel'] and mask['head']['fc']['bias']
  mask = optim.decay_mask(PARAMS, decay_norm_params=False, decay_biases=False)
  assert not mask['head']['fc']['bias'] and mask['head']['fc']['kernel']
  # Coupled SGD decay: update = -lr * (grad + wd * param) on decayed leaves only.
  updates = _one_update(_opt_config(weight_decay=0.1), jax.tree.map(jnp.zeros_like, PARAMS))
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5 * 0.1)
  np.testing.assert_allclose(updates['bn']['scale'], 0.0)


def test_lr_multipliers_and_frozen_parameters():
  config = _opt_config(lr_multipliers=((r'head/.*/kernel$', 5.0), (r'head/.*/bias$', 10.0),
                                       (r'^sampler/', 0.1)))
  updates = _one_update(config)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5)
  np.testing.assert_allclose(updates['head']['fc']['kernel'], -2.5)
  np.testing.assert_allclose(updates['head']['fc']['bias'], -5.0)
  np.testing.assert_allclose(updates['sampler']['dense']['kernel'], -0.05)

  updates = _one_update(_opt_config(frozen=r'^sampler/', weight_decay=0.1))
  assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates['sampler']))
  assert float(jnp.abs(updates['conv']['kernel']).max()) > 0
  with pytest.raises(ValueError, match='matches no parameter'):
    _one_update(_opt_config(frozen=r'^nothing_here/'))


def test_adamw_decays_decoupled_and_unknown_names_fail():
  grads = jax.tree.map(jnp.zeros_like, PARAMS)
  updates = _one_update(_opt_config(name='adamw', weight_decay=0.1), grads)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5 * 0.1, rtol=1e-6)
  np.testing.assert_allclose(updates['bn']['scale'], 0.0)
  with pytest.raises(ValueError, match="'sgd' or 'adamw'"):
    _one_update(_opt_config(name='lamb'))
  with pytest.raises(ValueError, match='schedule must be'):
    _one_update(_opt_config(schedule='poly'))
  assert isinstance(optax.global_norm(updates), jax.Array)
