"""Optimisers, schedules, weight-decay masks, per-group LR multipliers and frozen parameters."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import base
from salinet_jax import errors
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
  # A quarter of the 100 decay steps: on the cosine, not on a straight line between its ends.
  assert float(schedule(30)) == pytest.approx(
      64e-5 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 25 / 100))))
  assert float(schedule(105)) == pytest.approx(64e-5 * 0.01)
  with pytest.raises(ValueError, match='warmup_cosine'):
    optim.learning_rate_schedule(_opt_config(schedule='cosine', warmup_steps=3), 10, 8)


@pytest.mark.parametrize('nesterov', [True, False])
def test_sgd_momentum_is_torchs_with_and_without_nesterov(nesterov):
  """Mutation audit: the nesterov flag ignored passed every test. torch.optim.SGD with a constant
  gradient g: buffer g then (1 + m) g; steps g (1 + m) then g (1 + m + m^2) with Nesterov, g then
  g (1 + m) without."""
  m = 0.9
  config = _opt_config(momentum=m, nesterov=nesterov)
  tx, schedule = optim.create_optimizer(config, PARAMS, total_steps=10, global_batch=8)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  state = tx.init(PARAMS)
  expected = [1 + m, 1 + m + m * m] if nesterov else [1.0, 1 + m]
  for step, factor in enumerate(expected):
    updates, state = tx.update(grads, state, PARAMS)
    np.testing.assert_allclose(updates['conv']['kernel'], -float(schedule(step)) * factor,
                               rtol=1e-6, err_msg=f'step {step}')


def test_gradients_above_the_clip_norm_are_scaled_to_it():
  """Mutation audit: clipping never applied passed every test (S2DNet's recipes clip at 20)."""
  config = _opt_config(grad_clip_norm=2.0)
  lr = float(optim.learning_rate_schedule(config, total_steps=10, global_batch=8)(0))
  for scale, clipped in ((10.0, True), (1e-3, False)):
    grads = jax.tree.map(lambda x, s=scale: s * jnp.ones_like(x), PARAMS)
    norm = float(optax.global_norm(grads))
    assert (norm > 2.0) == clipped
    updates = _one_update(config, grads)
    assert float(optax.global_norm(updates)) == pytest.approx(lr * min(norm, 2.0), rel=1e-5)


def test_qualified_names_tell_norm_layers_biases_and_weights():
  assert sorted(optim.qualified_names(PARAMS).values()) == [
      'bias:head/fc/bias', 'bias:sampler/dense/bias', 'norm:bn/bias', 'norm:bn/scale',
      'weight:conv/kernel', 'weight:head/fc/kernel', 'weight:sampler/dense/kernel']


def test_weight_decay_rules_first_match_wins_and_default_skips_norm_parameters():
  rules = base.get_base_config().optimizer.weight_decay_rules
  factors = optim.factors_from_rules(PARAMS, rules, 0.0, 'rules')
  assert factors['bn'] == {'scale': 0.0, 'bias': 0.0}
  assert factors['conv']['kernel'] == factors['head']['fc']['bias'] == 1.0
  factors = optim.factors_from_rules(PARAMS, (('^norm:', 0.0), ('^bias:', 0.0), ('', 1.0)),
                                     0.0, 'rules')
  assert factors['head']['fc']['bias'] == 0.0 and factors['head']['fc']['kernel'] == 1.0
  with pytest.raises(ValueError, match=r"rule\(s\) \['nothing'\] match no parameter"):
    optim.factors_from_rules(PARAMS, (('nothing', 1.0),), 0.0, 'rules')
  # Coupled SGD decay: update = -lr * (grad + wd * factor * param).
  config = _opt_config(weight_decay=0.1, weight_decay_rules=(('^norm:', 0.0), (':head/', 2.0),
                                                             ('', 1.0)))
  updates = _one_update(config, jax.tree.map(jnp.zeros_like, PARAMS))
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5 * 0.1)
  np.testing.assert_allclose(updates['head']['fc']['kernel'], -0.5 * 0.1 * 2.0)
  np.testing.assert_allclose(updates['bn']['scale'], 0.0)
  # A rule set without a catch-all, meaning 'no decay on biases', took every other parameter's
  # decay away without a word (engine audit): a parameter no rule matches decays fully, as a
  # parameter no lr_multipliers rule matches keeps its learning rate.
  updates = _one_update(_opt_config(weight_decay=0.1, weight_decay_rules=(('^bias:', 0.0),)),
                        jax.tree.map(jnp.zeros_like, PARAMS))
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5 * 0.1)
  np.testing.assert_allclose(updates['head']['fc']['bias'], 0.0)


@pytest.mark.parametrize('field', ['lr_multipliers', 'weight_decay_rules'])
@pytest.mark.parametrize('rule,says', [
    ((':head/', 'x'), "the factor of ':head/' must be a number of at least 0, got 'x'"),
    ((':head/', -1.0), "the factor of ':head/' must be a number of at least 0, got -1.0"),
    ((':head/', float('nan')), "the factor of ':head/' must be a number of at least 0, got nan"),
    ((':head/', True), "the factor of ':head/' must be a number of at least 0, got True"),
    ((':head/',), r"\(':head/',\) is not a \(regex, factor\) pair"),
    ((1.0, ':head/'), r"\(1.0, ':head/'\) is not a \(regex, factor\) pair"),
], ids=['text', 'negative', 'nan', 'bool', 'one item', 'swapped'])
def test_a_rule_that_is_not_a_regex_and_a_factor_of_at_least_0_is_refused(field, rule, says):
  """README review: a factor given as text, or a rule of one item, ended main.py in a
  traceback; a negative learning-rate multiplier trained without a word, ascending the loss on
  the parameters it matched (and a negative decay factor grew them)."""
  with pytest.raises(errors.ConfigError, match=f'^config.optimizer.{field}: {says}'):
    _one_update(_opt_config(weight_decay=0.1, **{field: (rule,)}))


def test_lr_multipliers_and_frozen_parameters():
  config = _opt_config(lr_multipliers=((r':head/.*/kernel$', 5.0), (r':head/.*/bias$', 10.0),
                                       (r':sampler/', 0.1)))
  updates = _one_update(config)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5)
  np.testing.assert_allclose(updates['head']['fc']['kernel'], -2.5)
  np.testing.assert_allclose(updates['head']['fc']['bias'], -5.0)
  np.testing.assert_allclose(updates['sampler']['dense']['kernel'], -0.05)

  updates = _one_update(_opt_config(frozen=r':sampler/', weight_decay=0.1))
  assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates['sampler']))
  assert float(jnp.abs(updates['conv']['kernel']).max()) > 0
  with pytest.raises(ValueError, match='matches no parameter'):
    _one_update(_opt_config(frozen=r'^nothing_here/'))
  # A malformed pattern was an re.error traceback, naming no field.
  with pytest.raises(errors.ConfigError, match=re.escape(
      "config.optimizer.frozen: '[' is not a valid regex (unterminated character set")):
    _one_update(_opt_config(frozen='['))
  with pytest.raises(errors.ConfigError, match=re.escape(
      "config.optimizer.weight_decay_rules: '[norm' is not a valid regex")):
    _one_update(_opt_config(weight_decay_rules=(('[norm', 0.0),)))


def test_adamw_decays_decoupled_and_unknown_names_fail():
  grads = jax.tree.map(jnp.zeros_like, PARAMS)
  updates = _one_update(_opt_config(name='adamw', weight_decay=0.1), grads)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5 * 0.1, rtol=1e-6)
  np.testing.assert_allclose(updates['bn']['scale'], 0.0)
  with pytest.raises(ValueError, match="'sgd' or 'adamw'"):
    _one_update(_opt_config(name='lamb'))
  with pytest.raises(ValueError, match='schedule must be'):
    _one_update(_opt_config(schedule='poly'))
  # A warm-up in epochs was refused as warmup_steps, a field the user had not set.
  with pytest.raises(errors.ConfigError, match=re.escape(
      "config.optimizer.warmup_epochs needs a schedule with a warm-up ('warmup_cosine', 'steps', "
      "'constant' or 'pyslowfast_cosine'), not 'cosine'.")):
    _one_update(_opt_config(schedule='cosine', warmup_epochs=1.0, warmup_steps=4))
  assert isinstance(optax.global_norm(updates), jax.Array)


def test_epoch_cosine_is_s2dnets_per_epoch_formula():
  """s2d/utils.py adjust_learning_rate, B = 128, BASE_LR 1e-5 and WARMUP_LR 0.5e-8 per sample,
  5 warm-up epochs, 40 epochs, floor 1 %: values worked out from the reference formula."""
  config = _opt_config(schedule='epoch_cosine', base_learning_rate=1e-5, base_batch_size=1,
                       warmup_start_lr=0.5e-8, warmup_epochs=5.0, final_lr_fraction=0.01)
  steps_per_epoch = 100.0
  schedule = optim.learning_rate_schedule(config, total_steps=4000, global_batch=128,
                                          steps_per_epoch=steps_per_epoch, num_epochs=40.0)
  base, start = 1e-5 * 128, 0.5e-8 * 128
  lr = lambda epoch, offset=0: float(schedule(epoch * steps_per_epoch + offset))  # noqa: E731
  assert lr(0) == pytest.approx(start) and lr(0, 99) == pytest.approx(start)  # once per epoch
  assert lr(1) == pytest.approx(start + (base - start) / 5, rel=1e-6)
  assert lr(5) == pytest.approx(base, rel=1e-6)  # the ramp reaches the base at epoch 5 ...
  assert lr(6) / base == pytest.approx(0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 6 / 40)), rel=1e-5)
  assert lr(6) / base == pytest.approx(0.946, abs=5e-4)  # ... then the cosine counted from 0
  assert lr(20) / base == pytest.approx(0.505, abs=5e-4)
  assert lr(39) / base == pytest.approx(0.0115, abs=5e-4)


def test_pyslowfast_cosine_warms_up_from_its_start_lr_to_the_cosine():
  """PySlowFast I3D_NLN_8x8_R50: LR 0.1, cosine over 196 epochs from epoch 0, linear warm-up
  from 0.01 over 34 epochs to the cosine's value there (0.1 (1 + cos(34 pi / 196)) / 2)."""
  config = _opt_config(schedule='pyslowfast_cosine', base_learning_rate=0.1,
                       warmup_start_lr=0.01, warmup_steps=340)
  schedule = optim.learning_rate_schedule(config, total_steps=1960, global_batch=64)
  end = 0.05 * (1 + np.cos(34 * np.pi / 196))
  assert end == pytest.approx(0.09275, abs=1e-5)
  assert float(schedule(0)) == pytest.approx(0.01)
  assert float(schedule(170)) == pytest.approx(0.01 + 0.5 * (end - 0.01), rel=1e-5)
  assert float(schedule(340)) == pytest.approx(end, rel=1e-5)
  assert float(schedule(980)) == pytest.approx(0.05, rel=1e-5)
