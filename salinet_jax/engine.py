"""What every mode (train, eval, predict, export) builds from one config: the `Engine`.

An Engine holds the model, the data-parallel mesh, the optimizer, the jitted train / eval /
precise-BN steps and the train state's creation and restoration. The class names travel with
the checkpoints (their metadata), so evaluating or predicting needs the workdir, not the
training records.
"""

import functools
import math
from typing import Any, Dict, FrozenSet, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
from jax._src import ad_checkpoint  # private: see round_narrow_residuals_only
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from data import host_malloc
from data import ops as data_ops
from salinet_jax import checkpoints
from salinet_jax import errors
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import inputs
from salinet_jax import losses
from salinet_jax import models
from salinet_jax import optim
from salinet_jax import parallel
from salinet_jax import precise_bn
from salinet_jax.models import layers
from salinet_jax.models import s2dnet


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint must hold to resume training exactly."""
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> Dict[str, Any]:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def num_train_steps(config, train_videos: int) -> int:
  """`config.num_train_steps`, or `config.num_epochs` worth of global batches when it is -1."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  if config.num_epochs <= 0:
    raise errors.ConfigError('Set config.num_train_steps or config.num_epochs to a positive '
                             'value.')
  return _steps_of_epochs(config, train_videos)


def _steps_of_epochs(config, train_videos: int) -> int:
  """The global batches `config.num_epochs` epochs of `train_videos` make, the last partial."""
  return int(math.ceil(config.num_epochs * train_videos / config.batch_size))


def runs_by_epochs(config, train_videos: Optional[int]) -> bool:
  """Whether config.num_epochs sets the run (and an epoch-based schedule's span): num_train_steps
  is -1, or the steps those epochs make, which is how config.json records a run by epochs
  (configs/from_workdir.py reads it back as the run it was)."""
  if config.num_epochs <= 0:
    return False
  return config.num_train_steps <= 0 or (
      bool(train_videos) and config.num_train_steps == _steps_of_epochs(config, train_videos))


def create_train_state(model: nn.Module, tx, rng: jax.Array, shape) -> TrainState:
  variables = models.init_variables(model, rng, shape)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params))


def train_step(state: TrainState, batch, rng: jax.Array, *, model, tx, loss_config, schedule,
               data_config, accumulation_steps: int = 1, bn_group_size: int = 0,
               frozen: Any = None):
  """One optimizer step on a global batch; returns (new state, scalar metrics).

  `frozen` (a tree of bools like the parameters, or None) marks the parameters
  config.optimizer.frozen freezes: their gradients are not computed (optim.without_frozen_gradients)
  and `grad_norm` leaves them out, as the clipping does (optim.clip_trainable_by_global_norm).

  BatchNorm statistics come from groups of `bn_group_size` clips (0: the whole micro-batch; see
  layers.batch_norm_groups).

  With `accumulation_steps` k > 1 the batch is processed as k sequential micro-batches (rows
  i, i+k, i+2k, ... form micro-batch i, so each stays sharded over the devices) whose mean-loss
  gradients are averaged before a single update: the same update as one batch for a model
  without BatchNorm, with less activation memory.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  want_aux = losses.needs_aux(loss_config)

  def loss_fn(params, batch_stats, micro_batch, micro_rng):
    video, kwargs = inputs.model_inputs(micro_batch, data_config)
    with layers.batch_norm_groups(bn_group_size):
      outputs, updates = model.apply(
          {'params': optim.without_frozen_gradients(params, frozen), 'batch_stats': batch_stats},
          video, train=True, return_aux=want_aux, mutable=['batch_stats'],
          rngs={'dropout': micro_rng}, **kwargs)
    logits, aux = outputs if want_aux else (outputs, {})
    total, terms = losses.compute_loss(loss_config, logits, micro_batch['label'], aux)
    top1 = jnp.mean(jnp.argmax(logits, -1) == micro_batch['label'])
    return total, (terms, top1, updates.get('batch_stats', batch_stats))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if accumulation_steps == 1:
    (loss, (terms, top1, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch,
                                                        dropout_rng)
  else:
    k = accumulation_steps
    micro_batches = parallel.micro_batches(batch, k)

    def accumulate(carry, inputs_k):
      grads_sum, batch_stats = carry
      index, micro_batch = inputs_k
      (loss, (terms, top1, batch_stats)), grads = grad_fn(
          state.params, batch_stats, micro_batch, jax.random.fold_in(dropout_rng, index))
      return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats), (loss, terms, top1)

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads_sum, batch_stats), (losses_k, terms_k, top1_k) = jax.lax.scan(
        accumulate, (zeros, state.batch_stats), (jnp.arange(k), micro_batches))
    grads = jax.tree.map(lambda g: g / k, grads_sum)
    loss, terms, top1 = jax.tree.map(jnp.mean, (losses_k, terms_k, top1_k))
  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, param_updates)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  metrics = {
      'loss': loss,
      'learning_rate': schedule(state.step),
      'train_top1': top1,
      'grad_norm': optim.trainable_norm(grads, frozen),
      **{f'loss/{name}': value for name, value in terms.items()},
  }
  return new_state, metrics


def outputs_finite(state: TrainState, batch, *, model, data_config, bn_group_size: int = 0,
                   accumulation_steps: int = 1) -> jnp.ndarray:
  """Whether `state` gives finite logits on `batch` in both a training (batch statistics, each
  micro-batch on its own as the train step normalises it) and an evaluation (running
  statistics) forward: finite weights can still predict NaN."""
  finite = jnp.array(True)
  for micro_batch in parallel.each_micro_batch(batch, accumulation_steps):
    video, kwargs = inputs.model_inputs(micro_batch, data_config)
    with layers.batch_norm_groups(bn_group_size):
      train_logits, _ = model.apply(state.variables, video, train=True, mutable=['batch_stats'],
                                    rngs={'dropout': jax.random.key(0)}, **kwargs)
    finite &= jnp.all(jnp.isfinite(train_logits))
  video, kwargs = inputs.model_inputs(batch, data_config)
  eval_logits = model.apply(state.variables, video, train=False, **kwargs)
  return finite & jnp.all(jnp.isfinite(eval_logits))


# XLA's CPU compiler turns optimisation barriers into no-ops (its pass 'cse_barrier_expander')
# before common-subexpression elimination, which then merges the backward pass's recomputations
# back into the forward values: every jax.checkpoint, so every config.remat mode, saved nothing
# there (R3D-18 train b4: 848 MiB of temporaries in all four modes). Without that pass they
# hold (SaliNet K400 train b2 with 'elementwise': 2,612 -> 1,441 MiB). GPUs and TPUs keep them.
KEEP_REMAT_ON_CPU = {'xla_disable_hlo_passes': 'cse_barrier_expander'}


def round_narrow_residuals_only(insert_rounding):
  """Wraps JAX's `ad_checkpoint._insert_reduce_precision` so that jax.checkpoint rounds only
  the saved activations narrower than float32.

  JAX rounds each value a checkpointed region saves for the backward pass to its own dtype
  (reduce_precision; JAX PR 22244), in case XLA computed it in more precision than it stores,
  so that the saved and the recomputed values agree. XLA only holds narrower floats in more
  precision (bfloat16 computed in float32); rounding a float32 or float64 value to its own dtype
  changes nothing. XLA's GPU compiler removes that no-op; its CPU compiler keeps it as a copy of
  every saved activation: 630 MiB per SaliNet K400 train step (b2), whose compile took 23.9-25.6 s
  with the copies and 18.2-20.3 s without (2 interleaved rounds). Private JAX API: no public
  switch exists (tests/test_bench.py checks the compiled step holds no such copy).
  """
  def is_wide(var) -> bool:
    dtype = var.aval.dtype
    return jnp.issubdtype(dtype, jnp.inexact) and jnp.finfo(dtype).bits >= 32

  @functools.wraps(insert_rounding)
  def insert_narrow_rounding(jaxpr, num_res: int):
    if not num_res:
      return insert_rounding(jaxpr, num_res)
    results, saved = jaxpr.outvars[:-num_res], jaxpr.outvars[-num_res:]
    narrow = [v for v in saved if not is_wide(v)]
    # Only the last `num_res` results are rounded: the wide ones move ahead of them.
    reordered = jaxpr.replace(outvars=results + [v for v in saved if is_wide(v)] + narrow)
    return insert_rounding(reordered, len(narrow)).replace(outvars=jaxpr.outvars)

  insert_narrow_rounding.narrow_only = True
  return insert_narrow_rounding


# pylint: disable=protected-access
if not getattr(ad_checkpoint._insert_reduce_precision, 'narrow_only', False):
  ad_checkpoint._insert_reduce_precision = round_narrow_residuals_only(
      ad_checkpoint._insert_reduce_precision)
# pylint: enable=protected-access


def remat_compiler_options(remat: str) -> Optional[Dict[str, str]]:
  """The train step's XLA options for `config.remat` on this backend (None: the defaults)."""
  if remat != 'none' and jax.default_backend() == 'cpu':
    return dict(KEEP_REMAT_ON_CPU)
  return None


# Config fields that count something (clips, frames, pixels, steps): 0 or less cannot work, and
# failed deep inside the run (a division by zero, an empty tensor) or, for a negative batch,
# after training had started.
_COUNTS = ('batch_size', 'eval_batch_size', 'data.num_frames', 'data.frame_stride',
           'data.crop_size', 'data.eval_short_side', 'data.eval_crop_size',
           'data.eval_num_clips', 'data.eval_num_crops', 'model.width')
_TRAINING_COUNTS = ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps')
# Fields outside whose range a run computes something else without failing: a negative learning
# rate or clip norm ascends the loss, a dropout of 1.5 zeroes every activation, a label smoothing
# above 1 makes the true class's target negative, a final LR fraction above 1 makes the schedule
# rise. field -> (lowest, highest or None, whether the highest itself is allowed).
_TRAINING_RANGES = {
    'optimizer.base_learning_rate': (0.0, None, False),
    'optimizer.weight_decay': (0.0, None, False),
    'optimizer.grad_clip_norm': (0.0, None, False),
    'optimizer.momentum': (0.0, 1.0, False),
    'optimizer.adam_b1': (0.0, 1.0, False),
    'optimizer.adam_b2': (0.0, 1.0, False),
    'optimizer.warmup_steps': (0, None, False),
    'optimizer.warmup_epochs': (0.0, None, False),
    'optimizer.warmup_start_lr': (0.0, None, False),
    'optimizer.base_batch_size': (0, None, False),
    'optimizer.final_lr_fraction': (0.0, 1.0, True),
    'loss.label_smoothing': (0.0, 1.0, False),
    'loss.dnet_label_smoothing': (0.0, 1.0, False),
    'loss.snet_label_smoothing': (0.0, 1.0, False),
    'loss.l1_weight': (0.0, None, False),
    'loss.gate1_weight': (0.0, None, False),
    'loss.gate2_weight': (0.0, None, False),
    'loss.snet_loss_weight': (0.0, None, False),
    'loss.reference_per_device_batch': (1, None, False),
    'model.dropout_rate': (0.0, 1.0, False),
    'data.all_frames_trim_fraction': (0.0, 0.5, False),  # trimmed at each end: 0.5 trims all
    'data.shuffle_buffer': (1, None, False),
    'precise_bn_batches': (0, None, False),
    'grad_accumulation_steps': (1, None, False),
    'profile_num_steps': (0, None, False),
    'profile_first_step': (0, None, False),
}
# Fields of every mode. The malloc thresholds reach glibc as a C int of bytes: from 2048 MiB
# they wrapped around, to never trimming or to trimming at every free, without a word.
_RANGES = {
    'eval.num_visualizations': (0, None, False),
    'predict.timeline_classes': (1, None, False),
    'predict.window_batch': (1, None, False),
    'data.malloc_mmap_threshold_mib': (0, 2047, True),
    'data.malloc_trim_threshold_mib': (0, 2047, True),
}


def _range_text(low, high, high_allowed: bool) -> str:
  if high is None:
    return f'at least {low}'
  return f'from {low} to {high}' + ('' if high_allowed else ' (not included)')


def check_counts_and_rates(config, training: bool) -> None:
  """Fails before any work on a count below 1 or a field outside its range, naming the field."""
  def value(field):
    node = config
    for part in field.split('.'):
      if not isinstance(node, (dict, ml_collections.ConfigDict)) or part not in node:
        return None
      node = node[part]
    return node

  for field in _COUNTS + (_TRAINING_COUNTS if training else ()):
    got = value(field)
    if got is not None and not isinstance(got, bool) and got <= 0:
      raise errors.ConfigError(f'config.{field} must be positive, got {got}.')
  ranges = dict(_RANGES, **(_TRAINING_RANGES if training else {}))
  for field, (low, high, high_allowed) in ranges.items():
    got = value(field)
    if got is None or isinstance(got, bool):
      continue
    if got < low or (high is not None and (got > high or (got == high and not high_allowed))):
      raise errors.ConfigError(f'config.{field} must be {_range_text(low, high, high_allowed)}, '
                               f'got {got}.')


def check_batch_sizes(config, devices: int, training: bool = True) -> None:
  """Fails before any work when a batch cannot be split over the devices (or micro-batches):
  the eval batch always, the train batch when `training` (evaluation takes none)."""
  parallel.check_batch_size(config.eval_batch_size, devices, 'config.eval_batch_size')
  evaluate_lib.check_clips_per_device_forward(
      config.eval.clips_per_device_forward, config.eval_batch_size // devices
      * config.data.eval_num_clips * config.data.eval_num_crops)
  if not training:
    return
  parallel.check_batch_size(config.batch_size, devices, 'config.batch_size')
  accumulation = config.grad_accumulation_steps
  if accumulation < 1 or config.batch_size % (accumulation * devices):
    raise errors.ConfigError(
        f'config.batch_size={config.batch_size} must split into '
        f'config.grad_accumulation_steps={accumulation} micro-batches that each divide over '
        f'the {devices} devices: use a multiple of {accumulation * devices}.')
  micro_batch = config.batch_size // accumulation
  if config.bn_group_size < 0 or (config.bn_group_size and micro_batch % config.bn_group_size):
    raise errors.ConfigError(
        f'config.bn_group_size={config.bn_group_size} must divide the {micro_batch} clips of a '
        'micro-batch (0 normalises over the whole micro-batch).')


def bn_group_batch(config) -> int:
  """How many clips each BatchNorm statistic of a train step comes from: a group of
  config.bn_group_size, or with 0 the whole micro-batch (the global batch without gradient
  accumulation: each micro-batch runs through the model on its own)."""
  return config.bn_group_size or config.batch_size // config.grad_accumulation_steps


def micro_batch_norm_warning(config) -> str:
  """A line when gradient accumulation makes bn_group_size=0, which reads as the whole global
  batch, normalise over each micro-batch instead; '' otherwise."""
  accumulation = config.grad_accumulation_steps
  if accumulation == 1 or config.bn_group_size:
    return ''
  return (f'config.grad_accumulation_steps={accumulation} with config.bn_group_size=0: '
          f'BatchNorm normalises each micro-batch of {bn_group_batch(config)} clips on its own, '
          f'not the global batch of {config.batch_size}, and updates its running averages '
          f'{accumulation} times a step. Set config.bn_group_size={bn_group_batch(config)} to say '
          'so (the same training, without this line).')


def check_config(config, training: bool, devices: int) -> None:
  """The checks the config alone decides: a run makes them before it reads data or writes to its
  workdir, so that a mistyped value leaves nothing behind."""
  check_counts_and_rates(config, training)
  check_batch_sizes(config, devices, training)
  if config.dtype == 'float16':
    raise errors.ConfigError(
        "config.dtype='float16' needs loss scaling, which is not implemented: use "
        "'bfloat16' (same memory, no loss scaling needed) or 'float32'.")
  inputs.normalization(config.data)  # an unknown preset fails now, not in the first step
  models.check_remat(config.remat)
  if training:  # an unknown schedule, or a warm-up the schedule has none of (one step an epoch)
    opt_config, _ = resolved_optimizer(config, train_videos=config.batch_size)
    optim.learning_rate_schedule(opt_config, 1, config.batch_size, 1.0, 1.0)
  if data_ops.pads_frames(config.data) and not models.takes_frame_counts(config.model):
    raise errors.ConfigError(
        f"config.data.temporal_sampling={config.data.temporal_sampling!r} pads each clip to "
        "num_frames and gives the model the count of its real frames, which model "
        f"{config.model.name!r} does not take: use it with 's2dnet', or another sampler.")


def schedule_epochs(config, total_steps: int, train_videos: Optional[int]) -> float:
  """The epochs an epoch-based schedule spans: the run's, i.e. config.num_epochs, or the epochs
  that num_train_steps makes when it sets the run. Outside training (`train_videos` None) any
  positive span gives the optimizer state its structure: the schedule is never stepped there."""
  if train_videos is None:
    return config.num_epochs if config.num_epochs > 0 else 1.0
  if config.num_train_steps > 0 and train_videos and not runs_by_epochs(config, train_videos):
    return total_steps / (train_videos / config.batch_size)
  return config.num_epochs


def resolved_optimizer(config, train_videos: Optional[int]):
  """(config.optimizer with warmup_epochs turned into warmup_steps, steps per epoch or 0)."""
  opt_config = config.optimizer
  steps_per_epoch = train_videos / config.batch_size if train_videos else 0.0
  if opt_config.warmup_epochs > 0 and steps_per_epoch and opt_config.schedule != 'epoch_cosine':
    opt_config = ml_collections.ConfigDict(opt_config.to_dict())
    opt_config.warmup_steps = int(math.ceil(opt_config.warmup_epochs * steps_per_epoch))
  return opt_config, steps_per_epoch


class Engine:
  """Model, mesh, optimizer and jitted steps of one config, for `classes`.

  `train_videos` (the size of the train split) sets the length of an epoch-based schedule; it
  is only needed for training, so evaluation and prediction leave it out.
  """

  def __init__(self, config: ml_collections.ConfigDict, classes: Sequence[str],
               train_videos: Optional[int] = None):
    self.config = config
    self.classes = tuple(classes)
    self._classifier_params: Optional[FrozenSet[str]] = None
    if not self.classes:
      raise errors.ConfigError('The model needs at least one class name.')
    self.mesh = parallel.create_mesh()
    check_config(config, training=train_videos is not None, devices=self.mesh.size)
    self.model = models.build_model(config.model, len(self.classes), config.dtype, config.remat)
    # Passes that read values inside the forward (precise BN's statistics, features' pooled
    # inputs) run it without remat: remat only matters with a backward pass, and a value read
    # inside jax.checkpoint leaks out of it (UnexpectedTracerError). Same variables.
    self.forward_model = (self.model if config.remat == 'none' else models.build_model(
        config.model, len(self.classes), config.dtype, 'none'))
    self.input_shape = inputs.clip_shape(config.data)
    self.total_steps = (num_train_steps(config, train_videos) if train_videos is not None
                        else max(config.num_train_steps, 1))
    abstract = models.abstract_variables(self.model, self.input_shape)
    opt_config, self.steps_per_epoch = resolved_optimizer(config, train_videos)
    # Evaluation, prediction and export never step the optimizer; an epoch-based schedule only
    # needs some epoch length there to give the state its structure.
    steps_per_epoch = self.steps_per_epoch or (1.0 if train_videos is None else 0.0)
    self.tx, self.schedule = optim.create_optimizer(
        opt_config, abstract['params'], self.total_steps, config.batch_size,
        steps_per_epoch, schedule_epochs(config, self.total_steps, train_videos))
    pairing = s2dnet.batch_pairing_warning(config.model)
    if pairing:
      logging.warning('%s', pairing)
    if train_videos is not None and config.model.name == 's2dnet':
      s2dnet.check_stage_recipe(config.model.stage, optim.frozen_names(
          abstract['params'], opt_config.frozen), opt_config.frozen)
    replicated = parallel.replicated(self.mesh)
    frozen = (optim.frozen_mask(abstract['params'], opt_config.frozen) if opt_config.frozen
              else None)
    # Initialisation runs once and is mostly random-number generation: compiled without XLA's
    # backend optimisations it compiles several times faster and gives the same values.
    self._init_state = jax.jit(
        functools.partial(create_train_state, self.model, self.tx, shape=self.input_shape),
        out_shardings=replicated,
        compiler_options={'xla_backend_optimization_level': 0})
    self.train_step = jax.jit(
        functools.partial(train_step, model=self.model, tx=self.tx, loss_config=config.loss,
                          schedule=self.schedule, data_config=config.data,
                          accumulation_steps=config.grad_accumulation_steps,
                          bn_group_size=config.bn_group_size, frozen=frozen),
        in_shardings=(replicated, parallel.batch_sharded(self.mesh), replicated),
        out_shardings=(replicated, replicated), donate_argnums=(0,),
        compiler_options=remat_compiler_options(config.remat))
    self.outputs_finite = jax.jit(
        functools.partial(outputs_finite, model=self.model, data_config=config.data,
                          bn_group_size=config.bn_group_size,
                          accumulation_steps=config.grad_accumulation_steps),
        in_shardings=(replicated, parallel.batch_sharded(self.mesh)), out_shardings=replicated)
    self.eval_step = evaluate_lib.make_eval_step(self.model, config.eval, self.mesh, config.data)
    self.moments_step = precise_bn.make_moments_step(
        self.forward_model, self.mesh,
        functools.partial(inputs.model_inputs, data_config=config.data),
        config.bn_group_size, config.grad_accumulation_steps)

  def fresh_state(self) -> TrainState:
    """A freshly initialised state. The compiled initialisation is dropped after its run: a
    process initialises once, and kept, it held about 120 MiB of a SaliNet process for good."""
    state = self._init_state(jax.random.key(self.config.seed))
    self._init_state.clear_cache()
    return state

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the train state: the restore target, nothing computed."""
    return jax.eval_shape(self._init_state, jax.random.key(self.config.seed))

  def restore(self, workdir: str, which: str, target: Optional[TrainState] = None
              ) -> Tuple[TrainState, str]:
    """The verified state chosen by `which` ('best' | 'latest' | a step directory path), read
    into `target` (the whole abstract state by default), and a description of it; a warning
    when its run has not finished."""
    target = self.abstract_state() if target is None else target
    # The malloc settings the input pipeline would put in effect later (eval), or never
    # (predict, export): from here, so the restore's reads leave no heap behind (data/
    # host_malloc.py). Export completes a stored config that predates them (export/source.py).
    host_malloc.apply_settings(self.config.data)
    if which in checkpoints.CHOICES:
      state, step_dir, description = self._restore_selected(workdir, which, target)
    else:
      state, description = checkpoints.restore_from_path(which, target, self.config), which
      step_dir = checkpoints.step_dir_of(which)
    unfinished = checkpoints.unfinished_run(step_dir)
    if unfinished:
      logging.warning('Checkpoint %s is from a run that stopped at step %d of its %d steps, '
                      'unfinished: rerun its training command to finish it.', description,
                      *unfinished)
    return state, description

  def _restore_selected(self, workdir: str, which: str, target: TrainState
                        ) -> Tuple[TrainState, str, str]:
    """(state, step directory, description) of the workdir's 'best' or 'latest' step."""

    def read() -> Tuple[TrainState, str, str]:
      store = checkpoints.CheckpointStore(workdir, self.config.checkpoint, read_only=True)
      try:
        step, description = store.selection(which)
        return store.restore(step, target, self.config), store.step_dir(step), description
      finally:
        store.close()

    return checkpoints.chosen_again_if_removed(which, read)

  def classifier_params(self) -> FrozenSet[str]:
    """Paths of the parameters whose shapes follow the number of classes (models.py); found
    once, since that builds the model twice (1 s for SaliNet K400), and a fine-tune's start
    asks before its compile and again at its load."""
    if self._classifier_params is None:
      self._classifier_params = models.classifier_paths(
          self.config.model, len(self.classes), self.input_shape, self.config.dtype,
          self.config.remat)
    return self._classifier_params

  def restore_variables(self, workdir: str, which: str) -> Tuple[Dict[str, Any], int, str]:
    """The variables and step of the verified checkpoint `which`, and a description of it: what
    evaluation, prediction and export use. The optimizer state (as large as the parameters) is
    checked against the config but not read."""
    state, description = self.restore(
        workdir, which, checkpoints.without_optimizer_state(self.abstract_state()))
    return state.variables, int(state.step), description


def checkpoint_classes(workdir: str, config) -> Tuple[str, ...]:
  """The class names saved with the checkpoint `config.eval.checkpoint` selects.

  Fails with a clear message when the checkpoint has none (written before names were saved).
  """
  return tuple(checkpoint_metadata(workdir, config)['classes'])


def checkpoint_metadata(workdir: str, config) -> Dict[str, Any]:
  """The metadata saved with the checkpoint `config.eval.checkpoint` selects (classes, config,
  decoding, ...); fails clearly on a damaged one or one without class names."""
  which = config.eval.checkpoint

  def read() -> Tuple[Dict[str, Any], str]:
    if which in checkpoints.CHOICES:
      store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
      try:
        where = store.step_dir(store.select_step(which))
      finally:
        store.close()
    else:
      where = checkpoints.step_dir_of(which)
    with checkpoints.removal_told(where, f'Checkpoint {where}'):
      metadata = checkpoints.read_step_metadata(where)
      problem = checkpoints.metadata_problem(where)
      if problem:  # not a checkpoint from before class names were saved: a damaged one
        raise checkpoints.CorruptCheckpointError(
            f'Checkpoint {where} is corrupt: {problem}. '
            f'{checkpoints.intact_steps_beside(where)}'.rstrip())
    return metadata, where

  metadata, where = checkpoints.chosen_again_if_removed(which, read)
  classes = metadata.get('classes')
  if not classes:
    raise checkpoints.CheckpointError(
        f'Checkpoint {where} carries no class names (it was written before they were saved): '
        'evaluate it on the records it was trained with (eval mode reads their names), or '
        'train it again.')
  return metadata
