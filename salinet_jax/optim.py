"""Optimisers and learning-rate schedules built from `config.optimizer` (optax).

Weight decay is coupled L2 added to the gradient before momentum, as PyTorch's SGD does, and by
default skips normalisation parameters (PySlowFast's BN.WEIGHT_DECAY = 0).
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def learning_rate_schedule(opt_config, total_steps: int) -> Schedule:
  """`config.optimizer.schedule`: 'constant', 'cosine' (to 0) or 'warmup_cosine'.

  Cosine schedules decay to `base_learning_rate * final_lr_fraction` at `total_steps`.
  """
  base = opt_config.base_learning_rate
  warmup = opt_config.warmup_steps
  final = base * opt_config.final_lr_fraction
  if opt_config.schedule == 'constant':
    return optax.constant_schedule(base)
  if opt_config.schedule == 'cosine':
    if warmup:
      raise ValueError("config.optimizer.warmup_steps needs schedule='warmup_cosine'.")
    return optax.cosine_decay_schedule(base, max(total_steps, 1), alpha=opt_config.final_lr_fraction)
  if opt_config.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=final)
  raise ValueError(f"config.optimizer.schedule must be 'constant', 'cosine' or 'warmup_cosine', "
                   f'got {opt_config.schedule!r}.')


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


def create_optimizer(opt_config, params: Any, total_steps: int):
  """Returns (optax transformation, schedule) for `config.optimizer`."""
  schedule = learning_rate_schedule(opt_config, total_steps)
  parts = []
  if opt_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  if opt_config.weight_decay:
    parts.append(optax.add_decayed_weights(
        opt_config.weight_decay, mask=decay_mask(params, opt_config.decay_norm_params, opt_config.decay_biases)))
  if opt_config.name == 'sgd':
    parts.append(optax.sgd(schedule, momentum=opt_config.momentum or None,
                           nesterov=opt_config.nesterov))
  else:
    raise ValueError(f"config.optimizer.name must be 'sgd', got {opt_config.name!r}.")
  return optax.chain(*parts), schedule


def global_norm(tree: Any) -> jnp.ndarray:
  return optax.global_norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))
