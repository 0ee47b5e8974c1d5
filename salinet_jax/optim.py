"""Optimisers and learning-rate schedules built from `config.optimizer` (optax).

- SGD (momentum, Nesterov) or AdamW.
- Schedules: constant, cosine, linear warm-up + cosine, PySlowFast-style steps with relative LRs.
- Weight decay is coupled L2 added to the gradient before momentum for SGD, as PyTorch's SGD
  does, decoupled for AdamW; by default it skips normalisation parameters (PySlowFast's
  BN.WEIGHT_DECAY = 0), switchable for biases too.
- Per-group LR multipliers: `lr_multipliers` pairs a regex over the '/'-joined parameter path
  with a factor (e.g. TSM's x5 for classifier weights, x10 for their biases).
- Frozen parameters (`frozen` regex) get no update at all.
- Optional global-norm clipping; `base_batch_size` > 0 scales the LR linearly with the batch.
"""

import re
from typing import Any, Callable, Dict, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from salinet_jax import errors

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def peak_learning_rate(opt_config, global_batch: int) -> float:
  """`base_learning_rate`, scaled by global_batch / base_batch_size when that is > 0."""
  if opt_config.base_batch_size > 0:
    return opt_config.base_learning_rate * global_batch / opt_config.base_batch_size
  return opt_config.base_learning_rate


def learning_rate_schedule(opt_config, total_steps: int, global_batch: int) -> Schedule:
  """`config.optimizer.schedule`: 'constant', 'cosine', 'warmup_cosine' or 'steps'.

  Cosine schedules decay to `peak * final_lr_fraction` at `total_steps`; 'steps' multiplies the
  peak by `relative_lrs[i]` from `step_boundaries[i-1] * total_steps` on (PySlowFast
  SOLVER.LR_POLICY=steps_with_relative_lrs), after an optional linear warm-up.
  """
  peak = peak_learning_rate(opt_config, global_batch)
  warmup = opt_config.warmup_steps
  total_steps = max(total_steps, 1)
  name = opt_config.schedule
  if name == 'constant':
    after_warmup = optax.constant_schedule(peak)
  elif name in ('cosine', 'warmup_cosine'):
    if name == 'cosine' and warmup:
      raise errors.ConfigError("config.optimizer.warmup_steps needs schedule='warmup_cosine' "
                               "(or 'steps').")
    # The cosine starts after the warm-up and reaches peak * final_lr_fraction at total_steps.
    after_warmup = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1),
                                               alpha=opt_config.final_lr_fraction)
  elif name == 'steps':
    boundaries = list(opt_config.step_boundaries)
    relative = list(opt_config.relative_lrs)
    if len(relative) != len(boundaries) + 1:
      raise errors.ConfigError(f'config.optimizer.relative_lrs needs one more value than '
                               f'step_boundaries (got {len(relative)} and {len(boundaries)}).')
    if any(not 0 < b < 1 for b in boundaries) or boundaries != sorted(boundaries):
      raise errors.ConfigError(f'config.optimizer.step_boundaries must be increasing fractions '
                               f'of training in (0, 1), got {boundaries}.')
    steps = optax.piecewise_constant_schedule(
        peak * relative[0],
        {int(round(b * total_steps)): relative[i + 1] / relative[i]
         for i, b in enumerate(boundaries)})
    # The boundaries are fractions of the whole run: the warm-up only overrides its first steps.
    after_warmup = lambda step: steps(step + warmup)  # noqa: E731
  else:
    raise errors.ConfigError(f"config.optimizer.schedule must be 'constant', 'cosine', "
                             f"'warmup_cosine' or 'steps', got {name!r}.")
  if not warmup:
    return after_warmup
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after_warmup], [warmup])


def _paths(params: Any) -> Dict[Tuple[str, ...], str]:
  return {path: '/'.join(str(p) for p in path)
          for path in flax.traverse_util.flatten_dict(params)}


def decay_mask(params: Any, decay_norm_params: bool, decay_biases: bool) -> Any:
  """True for the parameters that get weight decay.

  Normalisation layers are recognised by their `scale` parameter; their `scale` and `bias` are
  excluded unless `decay_norm_params`. Other layers' biases are excluded unless `decay_biases`.
  """
  flat = flax.traverse_util.flatten_dict(params)
  norm_modules = {path[:-1] for path in flat if path[-1] == 'scale'}

  def decays(path) -> bool:
    if path[:-1] in norm_modules:
      return decay_norm_params
    if path[-1] == 'bias':
      return decay_biases
    return True

  return flax.traverse_util.unflatten_dict({k: decays(k) for k in flat})


def lr_multipliers(params: Any, rules: Sequence[Tuple[str, float]]) -> Any:
  """Per-parameter LR factor: the product of the factors of every rule whose regex matches."""
  compiled = [(re.compile(pattern), float(factor)) for pattern, factor in rules]
  factors = {}
  for path, name in _paths(params).items():
    factor = 1.0
    for pattern, value in compiled:
      if pattern.search(name):
        factor *= value
    factors[path] = factor
  return flax.traverse_util.unflatten_dict(factors)


def frozen_mask(params: Any, pattern: str) -> Any:
  """True for parameters whose path matches `pattern` ('' freezes nothing)."""
  regex = re.compile(pattern) if pattern else None
  return flax.traverse_util.unflatten_dict(
      {path: bool(regex and regex.search(name)) for path, name in _paths(params).items()})


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by its fixed per-parameter factor."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers))


def create_optimizer(opt_config, params: Any, total_steps: int, global_batch: int):
  """Returns (optax transformation, schedule) for `config.optimizer` over `params`."""
  schedule = learning_rate_schedule(opt_config, total_steps, global_batch)
  parts = []
  if opt_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  mask = decay_mask(params, opt_config.decay_norm_params, opt_config.decay_biases)
  if opt_config.name == 'sgd':
    if opt_config.weight_decay:
      parts.append(optax.add_decayed_weights(opt_config.weight_decay, mask=mask))
    parts.append(optax.sgd(schedule, momentum=opt_config.momentum or None,
                           nesterov=opt_config.nesterov))
  elif opt_config.name == 'adamw':
    parts.append(optax.adamw(schedule, b1=opt_config.adam_b1, b2=opt_config.adam_b2,
                             eps=opt_config.adam_eps, weight_decay=opt_config.weight_decay,
                             mask=mask))
  else:
    raise ValueError(f"config.optimizer.name must be 'sgd' or 'adamw', got {opt_config.name!r}.")
  if opt_config.lr_multipliers:
    parts.append(scale_by_multipliers(lr_multipliers(params, opt_config.lr_multipliers)))
  if opt_config.frozen:
    frozen = frozen_mask(params, opt_config.frozen)
    if not any(jax.tree.leaves(frozen)):
      raise ValueError(f'config.optimizer.frozen={opt_config.frozen!r} matches no parameter.')
    # Last in the chain: whatever decay or momentum computed, frozen parameters do not move.
    parts.append(optax.masked(optax.set_to_zero(), frozen))
  return optax.chain(*parts), schedule
