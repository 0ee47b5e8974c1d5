"""Training: `train_and_evaluate(config, workdir)` and `evaluate(config, workdir)`.

One jitted train step on a data-parallel device mesh; periodic full-split evaluation; orbax
checkpoints (last k + best by val top-1) in the workdir; clu metrics (TensorBoard + log lines).
A restarted run resumes from the latest checkpoint with the data RNG folded with the step.
"""

import functools
import math
import os
import signal
import threading
import time
from typing import Any, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from clu import periodic_actions

from data import datasets
from data import pipeline
from salinet_jax import checkpoints
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import inputs
from salinet_jax import losses
from salinet_jax import optim
from salinet_jax import parallel
from salinet_jax import precise_bn
from salinet_jax import pretrained
from salinet_jax.models import build_model


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


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss; the last good checkpoint is left untouched."""


class PreemptionWatcher:
  """Turns SIGTERM (preemption, `kill`, SLURM time-out) into a save-and-exit at a step boundary.

  On several processes JAX's coordination service makes every process agree on the step.
  """

  def __init__(self):
    self._requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the end of this step and exiting.')
    self._requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step)) or self._requested
    return self._requested

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _with_memory_advice(error: Exception, config) -> Exception:
  """Adds what to change to an accelerator out-of-memory error; other errors pass unchanged."""
  if 'RESOURCE_EXHAUSTED' not in str(error) and 'Out of memory' not in str(error):
    return error
  per_device = config.batch_size // max(jax.device_count(), 1)
  return MemoryError(
      f'Out of device memory with a per-device batch of {per_device} clips. Lower '
      f'config.batch_size, raise config.grad_accumulation_steps (same effective batch, '
      f"{config.grad_accumulation_steps} now), or use config.dtype='bfloat16'. "
      f'Original error: {str(error)[:2000]}')


def input_shape(config, batch_size: int = 1) -> Tuple[int, ...]:
  """(B, T, H, W, 3) of one training clip batch."""
  data = config.data
  return (batch_size, data.num_frames, data.crop_size, data.crop_size, 3)


def num_train_steps(config, train_videos: int) -> int:
  """`config.num_train_steps`, or `config.num_epochs` worth of global batches when it is -1."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  if config.num_epochs <= 0:
    raise ValueError('Set config.num_train_steps or config.num_epochs to a positive value.')
  return int(math.ceil(config.num_epochs * train_videos / config.batch_size))


def count_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def create_train_state(model: nn.Module, tx, rng: jax.Array, shape) -> TrainState:
  variables = model.init({'params': rng, 'dropout': rng}, jnp.zeros(shape, jnp.float32),
                         train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params))


def train_step(state: TrainState, batch, rng: jax.Array, *, model, tx, loss_config, schedule,
               data_config, accumulation_steps: int = 1):
  """One optimizer step on a global batch; returns (new state, scalar metrics).

  With `accumulation_steps` k > 1 the batch is processed as k sequential micro-batches (rows
  i, i+k, i+2k, ... form micro-batch i, so each stays sharded over the devices) whose mean-loss
  gradients are averaged before a single update: the same update as one batch for a model
  without BatchNorm, with less activation memory.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  want_aux = losses.needs_aux(loss_config)

  def loss_fn(params, batch_stats, micro_batch, micro_rng):
    video, kwargs = inputs.model_inputs(micro_batch, data_config)
    outputs, updates = model.apply(
        {'params': params, 'batch_stats': batch_stats}, video, train=True,
        return_aux=want_aux, mutable=['batch_stats'], rngs={'dropout': micro_rng}, **kwargs)
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
    micro_batches = jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1), batch)

    def accumulate(carry, inputs):
      grads_sum, batch_stats = carry
      index, micro_batch = inputs
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
      'grad_norm': optax.global_norm(grads),
      **{f'loss/{name}': value for name, value in terms.items()},
  }
  return new_state, metrics


def dataset_facts(dataset_config) -> Tuple[Tuple[str, ...], int]:
  """(class names, train-split size) of the config's dataset.

  From its records' metadata when they are there; otherwise from the dataset registry, so that
  evaluating or predicting with a trained checkpoint does not need the training data.
  """
  try:
    info = pipeline.split_info(dataset_config, dataset_config.train_split)
    return info.classes, info.num_videos
  except FileNotFoundError:
    registered = datasets.get(dataset_config.name)
    classes = registered.class_names or tuple(
        f'class_{i}' for i in range(registered.num_classes))
    return tuple(classes), registered.split_sizes.get(dataset_config.train_split, 0)


class Trainer:
  """Builds model, optimizer, mesh, jitted steps and checkpoint manager for one config."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.mesh = parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, self.mesh.size, 'config.batch_size')
    accumulation = config.grad_accumulation_steps
    if accumulation < 1 or config.batch_size % (accumulation * self.mesh.size):
      raise ValueError(
          f'config.batch_size={config.batch_size} must split into '
          f'config.grad_accumulation_steps={accumulation} micro-batches that each divide over '
          f'the {self.mesh.size} devices: use a multiple of {accumulation * self.mesh.size}.')
    parallel.check_batch_size(config.eval_batch_size, self.mesh.size, 'config.eval_batch_size')
    self.classes, train_videos = dataset_facts(config.dataset)
    self.model = build_model(config.model, len(self.classes), config.dtype)
    self.total_steps = num_train_steps(config, train_videos)
    abstract_params = jax.eval_shape(
        lambda: self.model.init({'params': jax.random.key(0), 'dropout': jax.random.key(0)},
                                jnp.zeros(input_shape(config), jnp.float32), train=False))
    opt_config = config.optimizer
    if opt_config.warmup_epochs > 0:
      opt_config = ml_collections.ConfigDict(opt_config.to_dict())
      opt_config.warmup_steps = int(math.ceil(
          opt_config.warmup_epochs * train_videos / config.batch_size))
    self.tx, self.schedule = optim.create_optimizer(opt_config, abstract_params['params'],
                                                    self.total_steps, config.batch_size)
    replicated = parallel.replicated(self.mesh)
    self.init_state = jax.jit(
        functools.partial(create_train_state, self.model, self.tx, shape=input_shape(config)),
        out_shardings=replicated)
    self.train_step = jax.jit(
        functools.partial(train_step, model=self.model, tx=self.tx, loss_config=config.loss,
                          schedule=self.schedule, data_config=config.data,
                          accumulation_steps=config.grad_accumulation_steps),
        in_shardings=(replicated, parallel.batch_sharded(self.mesh), replicated),
        out_shardings=(replicated, replicated), donate_argnums=(0,))
    self.eval_step = evaluate_lib.make_eval_step(self.model, config.eval, self.mesh, config.data)
    self.moments_step = precise_bn.make_moments_step(
        self.model, self.mesh, functools.partial(inputs.model_inputs, data_config=config.data))

  def fresh_state(self) -> TrainState:
    return self.init_state(jax.random.key(self.config.seed))

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the train state (restore target, no allocation)."""
    return jax.eval_shape(self.fresh_state)

  def evaluate(self, state: TrainState, split: str, visualize_dir: Optional[str] = None,
               data_config: Optional[ml_collections.ConfigDict] = None):
    """(results dict, per-video predictions) of `state` on every video of `split`.

    With `visualize_dir`, also draws `config.eval.num_visualizations` PNGs of what the model
    looked at in the first batch (process 0 only). `data_config` replaces the config for the
    input side (another records directory or batch size; same model and views).
    """
    config = data_config or self.config
    visualize = None
    if visualize_dir and config.eval.num_visualizations and jax.process_index() == 0:
      visualize = lambda batch: evaluate_lib.write_visualizations(  # noqa: E731
          self.model, state.variables, batch, visualize_dir, config.eval.num_visualizations,
          config.data)
    return evaluate_lib.evaluate_split(config, state.variables, split, self.mesh,
                                       self.eval_step, visualize)


def initialize_from(trainer: Trainer, state: TrainState, init_config) -> TrainState:
  """Loads `config.init_from` weights into a fresh state (salinet_jax/pretrained.py).

  The source is another run's workdir (e.g. S2DNet's warm-up stage for its sampling stage), a
  checkpoint step directory, or a converted PyTorch checkpoint (python -m salinet_jax.convert).
  Parameters matching `init_from.exclude` keep their fresh initialisation. Only weights travel:
  the optimizer state and step start afresh.
  """
  params, batch_stats, report = pretrained.load_pretrained(state.params, state.batch_stats,
                                                           init_config)
  logging.info('Initialised from %s', report.summary())
  return state.replace(params=params, batch_stats=batch_stats)


def _log_model_summary(trainer: Trainer, state: TrainState, writer) -> None:
  num_params = count_params(state.params)
  gflops = per_view_gflops(trainer)
  logging.info('Model %s: %.3f M parameters, %.3f GFLOPs per view %s.', trainer.config.model.name,
               num_params / 1e6, gflops, input_shape(trainer.config)[1:])
  writer.write_scalars(0, {'model/params_millions': num_params / 1e6,
                           'model/gflops_per_view': gflops})


def per_view_gflops(trainer: Trainer) -> float:
  """Multiply-accumulates of one training-size view in the forward pass, in G (fvcore style)."""
  from salinet_jax import flops  # pylint: disable=g-import-not-at-top
  info = flops.model_info(trainer.model, input_shape(trainer.config))
  return float(info['gflops'])


def _check_finite(metrics: Dict[str, float], step: int, workdir: str) -> None:
  if not np.isfinite(metrics['loss']):
    raise NonFiniteLossError(
        f'Loss is {metrics["loss"]} at step {step}: stopping. The last good checkpoint in '
        f'{checkpoints.checkpoint_dir(workdir)} is kept; lower the learning rate or check the '
        'input data.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it has checkpoints); returns the last eval results."""
  trainer = Trainer(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  manager = checkpoints.create_manager(workdir, config.checkpoint)
  state = trainer.fresh_state()
  latest = manager.latest_step()
  if latest is not None:
    state = checkpoints.restore(manager, latest, trainer.abstract_state())
    logging.info('Resumed from checkpoint step %d in %s.', latest, manager.directory)
  else:
    writer.write_hparams(_flat_hparams(config))
    if config.init_from.checkpoint:
      state = initialize_from(trainer, state, config.init_from)
  start_step = int(state.step)
  _log_model_summary(trainer, state, writer)
  total_steps = trainer.total_steps
  eval_results: Dict[str, Any] = {}
  if start_step >= total_steps:
    logging.info('Checkpoint step %d >= num_train_steps %d: nothing to train.', start_step,
                 total_steps)
  else:
    eval_results = _train_loop(trainer, state, start_step, manager, writer)
  manager.wait_until_finished()
  manager.close()
  writer.flush()
  return eval_results


def _train_loop(trainer: Trainer, state: TrainState, start_step: int, manager, writer):
  config, workdir = trainer.config, trainer.workdir
  total_steps = trainer.total_steps
  if config.dtype == 'float16':
    raise ValueError("config.dtype='float16' needs loss scaling, which is not implemented: use "
                     "'bfloat16' (same memory, no loss scaling needed) or 'float32'.")
  train_ds = pipeline.train_dataset(config, seed=config.seed, start_step=start_step)
  train_iter = pipeline.as_numpy(train_ds)
  rng = jax.random.key(config.seed + 1)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_steps=config.log_every_steps)
  hooks = [report]
  if config.profile_num_steps and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(
        logdir=workdir, num_profile_steps=config.profile_num_steps,
        first_profile=config.profile_first_step, every_secs=None))
  preemption = PreemptionWatcher()
  try:
    return _run_steps(trainer, state, start_step, manager, writer, train_iter, rng, hooks,
                      preemption)
  finally:
    preemption.close()


def _run_steps(trainer, state, start_step, manager, writer, train_iter, rng, hooks, preemption):
  config, workdir = trainer.config, trainer.workdir
  total_steps = trainer.total_steps
  eval_results: Dict[str, Any] = {}
  window_start, window_steps, data_wait = time.time(), 0, 0.0
  pending_metrics = None
  for step in range(start_step + 1, total_steps + 1):
    fetch_start = time.time()
    batch = parallel.to_global(next(train_iter), trainer.mesh)
    data_wait += time.time() - fetch_start
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      try:
        state, pending_metrics = trainer.train_step(state, batch, rng)
      except jax.errors.JaxRuntimeError as e:
        raise _with_memory_advice(e, config) from e
    window_steps += 1
    for hook in hooks:
      hook(step)
    is_last = step == total_steps
    stop = preemption.should_stop(step) and not is_last
    if step % config.log_every_steps == 0 or is_last:
      metrics = jax.tree.map(lambda x: float(np.asarray(x)), pending_metrics)
      _check_finite(metrics, step, workdir)
      elapsed = time.time() - window_start
      metrics['clips_per_sec'] = window_steps * config.batch_size / max(elapsed, 1e-9)
      metrics['step_time_ms'] = 1000 * elapsed / max(window_steps, 1)
      metrics['data_wait_fraction'] = data_wait / max(elapsed, 1e-9)
      metrics['eta_minutes'] = (total_steps - step) * elapsed / max(window_steps, 1) / 60
      writer.write_scalars(step, metrics)
      logging.info('step %d/%d: loss %.4f lr %.3g train_top1 %.3f, %.1f clips/s, ETA %.1f min',
                   step, total_steps, metrics['loss'], metrics['learning_rate'],
                   metrics['train_top1'], metrics['clips_per_sec'], metrics['eta_minutes'])
      window_start, window_steps, data_wait = time.time(), 0, 0.0
    if step % config.eval_every_steps == 0 or is_last:
      loss = float(np.asarray(pending_metrics['loss']))
      _check_finite({'loss': loss}, step, workdir)
      if config.precise_bn_batches:
        state = state.replace(batch_stats=precise_bn.recompute(
            trainer.moments_step, state.variables, train_iter, config.precise_bn_batches,
            trainer.mesh))
      eval_results, _ = trainer.evaluate(state, config.dataset.eval_split)
      eval_results['step'] = step
      writer.write_scalars(step, {f'val/{k}': v for k, v in eval_results.items()
                                  if k in ('top1', 'top5') + evaluate_lib.EXTRA_METRICS})
      checkpoints.save(manager, step, state, metrics={'val_top1': eval_results['top1']},
                       config=config)
    elif step % config.checkpoint_every_steps == 0 or stop:
      _check_finite({'loss': float(np.asarray(pending_metrics['loss']))}, step, workdir)
      checkpoints.save(manager, step, state, config=config)
    if stop:
      manager.wait_until_finished()
      logging.warning('Preempted: saved checkpoint step %d in %s; rerun the same command to '
                      'resume.', step, manager.directory)
      return {'preempted_at_step': step}
  return eval_results


def _flat_hparams(config) -> Dict[str, Any]:
  flat = flax.traverse_util.flatten_dict(config.to_dict(), sep='.')
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}


def restore_for_eval(trainer: Trainer, workdir: str) -> Tuple[TrainState, str]:
  """The state chosen by `config.eval.checkpoint` ('best' | 'latest' | path), and its name."""
  config = trainer.config
  target = trainer.abstract_state()
  which = config.eval.checkpoint
  if which in ('best', 'latest'):
    manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
    step = checkpoints.select_step(manager, which)
    state = checkpoints.restore(manager, step, target)
    manager.close()
    return state, f'{which} (step {step})'
  return checkpoints.restore_from_path(which, target), which


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             split: Optional[str] = None) -> Dict[str, Any]:
  """Restores the checkpoint chosen by `config.eval.checkpoint` and evaluates a whole split.

  Writes `<workdir>/eval_<split>.json` (returned), the per-class and predictions CSVs and the
  confusion-matrix PNG.
  """
  trainer = Trainer(config, workdir)
  split = split or config.dataset.eval_split
  state, source = restore_for_eval(trainer, workdir)
  results, predictions = trainer.evaluate(
      state, split, visualize_dir=os.path.join(workdir, f'visualizations_{split}'))
  results['step'] = int(state.step)
  results['checkpoint'] = source
  for path in evaluate_lib.write_outputs(workdir, results, predictions):
    logging.info('Wrote %s', path)
  return results
