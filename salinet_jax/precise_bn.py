"""Precise BatchNorm: replace running statistics by their true average over many train batches.

Running averages with momentum lag behind the weights during training; PySlowFast therefore
recomputes them before evaluation (BN.USE_PRECISE_STATS, BN.NUM_BATCHES_PRECISE), with fvcore's
population estimator: the mean and the variance E[x^2] - E[x]^2 of every input element pooled over
all batches (so the spread between batch means counts). Here every BatchNorm call of the training
forward is intercepted and its input's per-channel mean and mean square recorded. A BatchNorm
module called several times per forward (SaliNet's shared saliency BN, where fvcore refuses the
layer) gets each call's population statistics weighted as its running averages weight them once
settled (call k of C: d^(C-k), d its momentum): pooling the calls as one population would add the
spread between their means to the variance, which training never normalised with. Each
micro-batch of gradient accumulation runs on its own and its clips are grouped by
config.bn_group_size, as in the train step, so every layer sees the inputs training gave it.
The batches come from a stream of their own (train.py), so the training data order does not
depend on evaluation.
"""

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from salinet_jax import errors
from salinet_jax import parallel
from salinet_jax.models import layers

Path = Tuple[str, ...]


def batch_moments(model: nn.Module, variables, video, kwargs,
                  bn_group_size: int = 0) -> Dict[Path, Tuple[jnp.ndarray, ...]]:
  """Per BatchNorm module: (weight (C,), mean (C, F), mean square (C, F)) of the inputs of its C
  calls in a training forward, each call weighted as its running average weights it. A call on
  its running averages (S2DNet's f_theta in the warm-up, which training never updates) is left
  out, and its statistics stay as they are."""
  records: Dict[Path, list] = {}
  momenta: Dict[Path, float] = {}

  def on_batch_statistics(context, args, kwargs) -> bool:
    if not (isinstance(context.module, (nn.BatchNorm, layers.BatchNorm))
            and context.method_name == '__call__'):
      return False
    given = kwargs.get('use_running_average', args[1] if len(args) > 1 else None)
    return not (context.module.use_running_average if given is None else given)

  def record(next_fun, args, kwargs, context):
    if on_batch_statistics(context, args, kwargs):
      x = args[0].astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      path = tuple(context.module.path)
      momenta[path] = context.module.momentum
      records.setdefault(path, []).append(
          (jnp.mean(x, axis=axes), jnp.mean(jnp.square(x), axis=axes)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record), layers.batch_norm_groups(bn_group_size):
    model.apply(variables, video, train=True, mutable=['batch_stats'],
                rngs={'dropout': jax.random.key(0)}, **kwargs)
  moments = {}
  for path, calls in records.items():
    weights = jnp.float32(momenta[path]) ** jnp.arange(len(calls) - 1, -1, -1)
    means, squares = (jnp.stack(values) for values in zip(*calls))
    moments[path] = (weights / jnp.sum(weights), means, squares)
  return moments


def make_moments_step(model: nn.Module, mesh, model_inputs, bn_group_size: int = 0,
                      accumulation_steps: int = 1):
  """The jitted (variables, batch) -> `batch_moments` step; build it once per run, since every
  new jit of it compiles a training forward again. With gradient accumulation each of the
  batch's `accumulation_steps` micro-batches runs on its own, as the train step runs them, and
  their moments are averaged (equal sizes: the moments of the whole batch).

  `model_inputs(batch)` gives the model's (clip, keyword inputs), see salinet_jax/inputs.py.
  """
  def moments(variables, batch):
    parts = [batch_moments(model, variables, *model_inputs(micro_batch), bn_group_size)
             for micro_batch in parallel.each_micro_batch(batch, accumulation_steps)]
    return jax.tree.map(lambda *values: sum(values) / accumulation_steps, *parts)

  return jax.jit(moments, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))


def recompute(moments_step, variables: Dict[str, Any], batches: Iterator[Dict[str, Any]],
              num_batches: int, mesh, stop_requested: Optional[Callable[[], bool]] = None) -> Any:
  """Returns new `batch_stats` averaged over `num_batches` global batches from `batches`, with
  the step from `make_moments_step`. `stop_requested` is asked before each batch; when it says
  True, errors.StopRequested ends the recomputation."""
  totals = None
  for index in range(num_batches):
    if stop_requested is not None and stop_requested():
      raise errors.StopRequested(f'stopped after {index} precise-BN batches')
    batch = parallel.to_global(next(batches), mesh)
    batch.pop('label', None)
    moments = moments_step(variables, batch)
    totals = moments if totals is None else jax.tree.map(jnp.add, totals, moments)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables['batch_stats']))
  for path, (weight_sum, mean_sum, square_sum) in totals.items():
    if path + ('mean',) not in flat:
      raise KeyError(f'BatchNorm at {"/".join(path)} has no running statistics to replace.')
    weights = (weight_sum / num_batches)[:, None]
    means = mean_sum / num_batches  # one row per call
    variances = jnp.maximum(square_sum / num_batches - jnp.square(means), 0.0)
    flat[path + ('mean',)] = jnp.sum(weights * means, axis=0)
    flat[path + ('var',)] = jnp.sum(weights * variances, axis=0)
  logging.info('Precise BN: recomputed %d BatchNorm layers over %d batches.', len(totals),
               num_batches)
  return flax.traverse_util.unflatten_dict(flat)
