"""Optimisers and learning-rate schedules built from `config.optimizer` (optax).

- SGD (momentum, Nesterov) or AdamW.
- Schedules: constant, cosine, linear warm-up + cosine, PySlowFast-style steps with relative LRs.
- Per-parameter factors come from rule lists, as big_vision's optax helper does: a list of
  (regex, factor) pairs, the first regex found in a parameter's qualified name wins. The qualified
  name is 'KIND:PATH', PATH the '/'-joined parameter path and KIND 'norm' for the scale and bias
  of normalisation layers (recognised by their `scale`, whatever the layer is called), 'bias' for
  other biases and 'weight' for the rest, e.g. 'norm:backbone/s1/pathway0_stem/bn/scale'.
- Weight decay (`weight_decay` x the factor of `weight_decay_rules`; 1 where no rule matches) is
  coupled L2 added to the gradient before momentum for SGD, as PyTorch's SGD does, decoupled for
  AdamW. PySlowFast: (('^norm:', 0.0), ('', 1.0)), no decay on BatchNorm (BN.WEIGHT_DECAY = 0).
- LR multipliers (`lr_multipliers`; 1 where no rule matches), e.g. TSM's x5 for classifier
  weights and x10 for their biases.
- Frozen parameters (`frozen`, a regex over the qualified names) get no gradient, no update and
  no change to their optimizer state, as PyTorch's parameters with requires_grad=False.
- Optional global-norm clipping; `base_batch_size` > 0 scales the LR linearly with the batch.
"""

import math
import numbers
import re
from typing import Any, Callable, Dict, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from salinet_jax import errors

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def scaled_learning_rate(opt_config, learning_rate: float, global_batch: int) -> float:
  """`learning_rate` scaled by global_batch / base_batch_size when that is > 0."""
  if opt_config.base_batch_size > 0:
    return learning_rate * global_batch / opt_config.base_batch_size
  return learning_rate


def peak_learning_rate(opt_config, global_batch: int) -> float:
  """`base_learning_rate`, scaled by global_batch / base_batch_size when that is > 0."""
  return scaled_learning_rate(opt_config, opt_config.base_learning_rate, global_batch)


SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'steps', 'pyslowfast_cosine', 'epoch_cosine')
# The config.optimizer fields only some optimizers or schedules read (the others read all the
# rest): an override of one the config's choice does not read changes nothing.
OPTIMIZER_FIELDS = {'sgd': ('momentum', 'nesterov'), 'adamw': ('adam_b1', 'adam_b2', 'adam_eps')}
SCHEDULE_FIELDS = {'steps': ('step_boundaries', 'relative_lrs', 'warmup_steps'),
                   'cosine': ('final_lr_fraction',),
                   'warmup_cosine': ('final_lr_fraction', 'warmup_steps'),
                   'epoch_cosine': ('final_lr_fraction',),  # its warm-up counts epochs
                   'constant': ('warmup_steps',), 'pyslowfast_cosine': ('warmup_steps',)}


def learning_rate_schedule(opt_config, total_steps: int, global_batch: int,
                           steps_per_epoch: float = 0.0, num_epochs: float = 0.0) -> Schedule:
  """`config.optimizer.schedule`, one of SCHEDULES.

  Per-step schedules, after an optional linear warm-up from `warmup_start_lr` (scaled with the
  batch like the base LR; 0 by default) over `warmup_steps`:
    constant, cosine / warmup_cosine: cosine from the warm-up's end to peak * final_lr_fraction
      at `total_steps`; steps: the peak times `relative_lrs[i]` from `step_boundaries[i-1] *
      total_steps` on (PySlowFast SOLVER.LR_POLICY=steps_with_relative_lrs).
    pyslowfast_cosine: PySlowFast's cosine policy, counted from step 0 over the whole run,
      peak/2 (1 + cos(pi s / total)); the warm-up ramps linearly from warmup_start_lr to the
      cosine's value at its end (SOLVER.WARMUP_START_LR, WARMUP_EPOCHS).
  Per-epoch schedule (set once per epoch; needs `steps_per_epoch`):
    epoch_cosine: S2DNet's (s2d/utils.py adjust_learning_rate): for epoch e <= W
      (warmup_epochs), start + e (peak - start) / W; after it, floor + (peak - floor) / 2
      (1 + cos(pi e / E)), floor = peak * final_lr_fraction, E = num_epochs, the cosine counted
      from epoch 0 (and the floor after epoch E).
  `steps_per_epoch` (float) and `num_epochs` (the run's length in epochs) define the epochs of
  'epoch_cosine'.
  """
  peak = peak_learning_rate(opt_config, global_batch)
  start = scaled_learning_rate(opt_config, opt_config.warmup_start_lr, global_batch)
  warmup = opt_config.warmup_steps
  total_steps = max(total_steps, 1)
  name = opt_config.schedule
  if name == 'epoch_cosine':
    return _epoch_cosine(opt_config, peak, start, steps_per_epoch, num_epochs)
  if name == 'pyslowfast_cosine':
    cosine = lambda step: 0.5 * peak * (1.0 + jnp.cos(jnp.pi * step / total_steps))  # noqa: E731
    if not warmup:
      return cosine
    end = cosine(warmup)
    return lambda step: jnp.where(step < warmup, start + step * (end - start) / warmup,
                                  cosine(step))
  if name == 'constant':
    after_warmup = optax.constant_schedule(peak)
  elif name in ('cosine', 'warmup_cosine'):
    if name == 'cosine' and warmup:
      given = 'warmup_epochs' if opt_config.warmup_epochs > 0 else 'warmup_steps'
      raise errors.ConfigError(f"config.optimizer.{given} needs a schedule with a warm-up "
                               "('warmup_cosine', 'steps', 'constant' or 'pyslowfast_cosine'), "
                               "not 'cosine'.")
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
    raise errors.ConfigError(f'config.optimizer.schedule must be one of {SCHEDULES}, got '
                             f'{name!r}.')
  if not warmup:
    return after_warmup
  return optax.join_schedules([optax.linear_schedule(start, peak, warmup), after_warmup],
                              [warmup])


def _epoch_cosine(opt_config, peak: float, start: float, steps_per_epoch: float,
                  epochs: float) -> Schedule:
  if steps_per_epoch <= 0 or epochs <= 0:
    raise errors.ConfigError("schedule='epoch_cosine' counts epochs: set config.num_epochs "
                             '(and train on records whose train split size is known).')
  warmup_epochs = opt_config.warmup_epochs
  floor = peak * opt_config.final_lr_fraction

  def schedule(step):
    epoch = jnp.minimum(jnp.floor(step / steps_per_epoch), epochs)  # the floor after the end
    ramp = start + epoch * (peak - start) / max(warmup_epochs, 1e-9)
    cosine = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * epoch / epochs))
    return jnp.where(epoch <= warmup_epochs, ramp, cosine) if warmup_epochs else cosine

  return schedule


def qualified_names(params: Any) -> Dict[Tuple[str, ...], str]:
  """'KIND:PATH' of every parameter (see the module docstring), by flattened path."""
  flat = flax.traverse_util.flatten_dict(params)
  norm_modules = {path[:-1] for path in flat if path[-1] == 'scale'}

  def kind(path) -> str:
    if path[:-1] in norm_modules:
      return 'norm'
    return 'bias' if path[-1] == 'bias' else 'weight'

  return {path: f"{kind(path)}:{'/'.join(str(p) for p in path)}" for path in flat}


def _regex(pattern: str, field: str) -> 're.Pattern':
  """`pattern` compiled, or a ConfigError naming the config `field` that holds it."""
  try:
    return re.compile(pattern)
  except re.error as e:
    raise errors.ConfigError(f'{field}: {pattern!r} is not a valid regex ({e}).') from None


def _rule(rule: Any, field: str) -> Tuple['re.Pattern', float]:
  """A (regex, factor) rule of config `field`, compiled; one of another shape, or a factor that
  is not a finite number of at least 0, is a ConfigError naming the field. A factor given as
  text failed in a traceback, and a negative one trained without a word: a negative learning
  rate multiplier ascends the loss on what it matches, a negative decay factor grows it."""
  if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
    raise errors.ConfigError(f"{field}: {rule!r} is not a (regex, factor) pair, e.g. "
                             f"(':head/', 10.0).")
  pattern, factor = rule
  if (isinstance(factor, bool) or not isinstance(factor, numbers.Real)
      or not math.isfinite(factor) or factor < 0):
    raise errors.ConfigError(f'{field}: the factor of {pattern!r} must be a number of at least '
                             f'0, got {factor!r}.')
  return _regex(pattern, field), float(factor)


def factors_from_rules(params: Any, rules: Sequence[Tuple[str, float]], unmatched: float,
                       what: str) -> Any:
  """Per-parameter factor: that of the first (regex, factor) rule found in its qualified name,
  `unmatched` where none is. A rule that matches no parameter is a config error."""
  compiled = [_rule(rule, what) for rule in rules]
  names = qualified_names(params)
  used = set()
  factors = {}
  for path, name in names.items():
    factors[path] = unmatched
    for index, (pattern, factor) in enumerate(compiled):
      if pattern.search(name):
        factors[path] = factor
        used.add(index)
        break
  unused = [rules[i][0] for i in range(len(rules)) if i not in used]
  if unused:
    raise errors.ConfigError(f'{what}: rule(s) {unused} match no parameter (names look like '
                             f'{next(iter(names.values()))!r}).')
  return flax.traverse_util.unflatten_dict(factors)


def frozen_names(params: Any, pattern: str) -> Dict[str, bool]:
  """{qualified name: whether `pattern` freezes it} ('' freezes nothing)."""
  regex = _regex(pattern, 'config.optimizer.frozen') if pattern else None
  return {name: bool(regex and regex.search(name)) for name in qualified_names(params).values()}


def frozen_mask(params: Any, pattern: str) -> Any:
  """True for parameters whose qualified name matches `pattern` ('' freezes nothing)."""
  frozen = frozen_names(params, pattern)
  return flax.traverse_util.unflatten_dict(
      {path: frozen[name] for path, name in qualified_names(params).items()})


def without_frozen_gradients(params: Any, frozen: Any = None) -> Any:
  """`params` with the frozen ones (`frozen`, a tree of bools, or None) behind stop_gradient:
  their gradients are zeros that cost nothing, as PyTorch computes none for parameters with
  requires_grad=False (XLA drops their weight-gradient convolutions); the gradients of the
  activations still flow through their layers."""
  if frozen is None:
    return params
  return jax.tree.map(lambda p, is_frozen: jax.lax.stop_gradient(p) if is_frozen else p,
                      params, frozen)


def keep_frozen_state(inner: optax.GradientTransformation, frozen: Any
                      ) -> optax.GradientTransformation:
  """`inner` whose updates leave the frozen parameters' share of its state (momentum, Adam's
  moments) as it was, as PyTorch's optimizers skip parameters without gradients: a resume that
  unfreezes them starts them from it. The state is `inner`'s own, so checkpoints resume
  either way."""
  def update(updates, state, params=None):
    new_updates, new_state = inner.update(updates, state, params)
    keep = optax.tree_map_params(inner, lambda _, is_frozen: is_frozen, state, frozen,
                                 transform_non_params=lambda _: False)
    return new_updates, jax.tree.map(lambda new, old, is_frozen: old if is_frozen else new,
                                     new_state, state, keep)
  return optax.GradientTransformation(inner.init, update)


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by its fixed per-parameter factor."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers))


def trainable_norm(grads: Any, frozen: Any = None) -> jnp.ndarray:
  """The global norm of the gradients of the parameters `frozen` (a tree of bools, or None)
  does not freeze: PyTorch's frozen parameters (requires_grad=False) have none."""
  if frozen is None:
    return optax.global_norm(grads)
  return optax.global_norm([g for g, is_frozen in zip(jax.tree.leaves(grads),
                                                      jax.tree.leaves(frozen)) if not is_frozen])


def clip_trainable_by_global_norm(max_norm: float, frozen: Any = None
                                  ) -> optax.GradientTransformation:
  """optax.clip_by_global_norm over the trainable parameters' norm, as PyTorch's
  clip_grad_norm_ skips frozen ones: counted, they clipped the others harder. The same (empty)
  state as optax's, so checkpoints resume either way."""
  if frozen is None:
    return optax.clip_by_global_norm(max_norm)

  def clip(updates, params=None):
    del params
    norm = trainable_norm(updates, frozen)
    return jax.tree.map(lambda u: jnp.where(norm < max_norm, u, u / norm.astype(u.dtype)
                                            * max_norm), updates)
  return optax.stateless(clip)


def add_decayed_weights(factors: Any, weight_decay: float) -> optax.GradientTransformation:
  """update + weight_decay * factor * param, per parameter. optax's version takes one rate and a
  boolean mask; the rules may give any factor."""
  def add(updates, params):
    return jax.tree.map(lambda u, p, f: u + jnp.asarray(weight_decay * f, u.dtype) * p if f else u,
                        updates, params, factors)
  return optax.stateless(add)


def create_optimizer(opt_config, params: Any, total_steps: int, global_batch: int,
                     steps_per_epoch: float = 0.0, num_epochs: float = 0.0):
  """Returns (optax transformation, schedule) for `config.optimizer` over `params`."""
  schedule = learning_rate_schedule(opt_config, total_steps, global_batch, steps_per_epoch,
                                    num_epochs)
  frozen = None
  if opt_config.frozen:
    frozen = frozen_mask(params, opt_config.frozen)
    if not any(jax.tree.leaves(frozen)):
      raise errors.ConfigError(f'config.optimizer.frozen={opt_config.frozen!r} matches no '
                               'parameter.')
  parts = []
  if opt_config.grad_clip_norm:
    parts.append(clip_trainable_by_global_norm(opt_config.grad_clip_norm, frozen))
  decay = factors_from_rules(params, opt_config.weight_decay_rules, 1.0,
                             'config.optimizer.weight_decay_rules')
  decayed = [add_decayed_weights(decay, opt_config.weight_decay)] if opt_config.weight_decay else []
  if opt_config.name == 'sgd':  # coupled L2: decay enters the momentum, as in torch.optim.SGD
    parts += decayed
    parts.append(optax.sgd(schedule, momentum=opt_config.momentum or None,
                           nesterov=opt_config.nesterov))
  elif opt_config.name == 'adamw':  # decoupled: optax.adamw's chain with per-parameter decay
    parts.append(optax.scale_by_adam(b1=opt_config.adam_b1, b2=opt_config.adam_b2,
                                     eps=opt_config.adam_eps))
    parts += decayed
    parts.append(optax.scale_by_learning_rate(schedule))
  else:
    raise errors.ConfigError(f"config.optimizer.name must be 'sgd' or 'adamw', got "
                             f'{opt_config.name!r}.')
  if opt_config.lr_multipliers:
    parts.append(scale_by_multipliers(factors_from_rules(
        params, opt_config.lr_multipliers, 1.0, 'config.optimizer.lr_multipliers')))
  if frozen is None:
    return optax.chain(*parts), schedule
  # Last in the chain: whatever decay or momentum computed, frozen parameters do not move.
  parts.append(optax.masked(optax.set_to_zero(), frozen))
  return keep_frozen_state(optax.chain(*parts), frozen), schedule
