"""Training and evaluation of a config in a workdir: `train_and_evaluate` and `evaluate`.

Training takes the workdir's lock (one trainer per workdir), writes the resolved config to
`config.json` and its log to `log.txt`, resumes from the newest intact checkpoint (or
initialises, from `config.init_from` where set), runs the jitted train step on the device mesh,
evaluates the validation split every `eval_every_steps` (precise BatchNorm statistics first, from
a stream of their own so the training data order never depends on evaluation) and keeps orbax
checkpoints (last k + best) of finite states only. SIGTERM saves the current step and exits.

Over 400 lines because the loop's phases (resume, steps, evaluation, precise BN, preemption, save
failures) act on one run's state; the jitted parts live in engine.py.
"""

import contextlib
import glob
import os
import signal
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from clu import periodic_actions

from data import augment
from data import errors as data_errors
from data import pipeline
from data import records
from salinet_jax import checkpoints
from salinet_jax import console
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import inputs
from salinet_jax import models
from salinet_jax import optim
from salinet_jax import parallel
from salinet_jax import precise_bn
from salinet_jax import pretrained
from salinet_jax import reports
from salinet_jax import visualize
from salinet_jax import workdir as workdir_lib
from salinet_jax.models import s2dnet


class NonFiniteLossError(errors.UserError):
  """Training produced a NaN/Inf loss; the last good checkpoint is left untouched."""


class PreemptionWatcher:
  """Turns SIGTERM (preemption, `kill`, SLURM time-out) into a save-and-exit at a step boundary,
  and on a single process the first Ctrl-C (SIGINT, where Python's default handler has it) too:
  a second Ctrl-C interrupts at once, without saving.

  Where jax.distributed was joined with JAX's preemption service (main.py's training; a group
  of one too), SIGTERM is left to it (its handler is set in C; a Python handler would replace
  it, and a SIGTERM it took before the loop would go unasked): a SIGTERM to any process of the
  group reaches every process through the coordination service, and all stop at the same point
  (`multihost_utils.reached_preemption_sync_point`). Each process stopping at the step its own
  signal arrived in left the others waiting in a collective until the group aborted. A Ctrl-C
  reaches one process only, so on several it interrupts as Python does.
  """

  def __init__(self):
    self.received: Optional[str] = None  # the name of the signal that asked to stop
    self._previous = {}
    self._group = parallel.preemption_service_runs()
    self._asked = 0  # on a group: how often this process asked the preemption service
    self.finishing = False  # the run's last step and evaluation, which a signal does not stop
    if threading.current_thread() is threading.main_thread():
      if not self._group:
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
      # Not where SIGINT is ignored (a background job of a script) or handled by someone else.
      if (jax.process_count() == 1
          and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    what = (" during the run's last step: finishing it and its evaluation (a rerun would "
            'evaluate nothing), then the run ends' if self.finishing else
            ': saving a checkpoint at the end of this step and exiting')
    if signum == signal.SIGINT:  # the next Ctrl-C interrupts as usual
      signal.signal(signal.SIGINT, self._previous.pop(signal.SIGINT))
      logging.warning('Ctrl-C received%s (Ctrl-C again stops at once, without saving).', what)
    else:
      data_errors.sigterm_taken_inside()  # not main.py's guard's to end
      logging.warning('%s received%s.', name, what)
    self.received = self.received or name

  @property
  def heard(self) -> str:
    """How the stop came: 'SIGTERM received', or on a group, where it reached one process."""
    return f'{self.received} ' + ('reached a process of this group' if self._group else 'received')

  def should_stop(self, step: int) -> bool:
    """Asked after every train step: whether to save this step and exit (the loop finishes
    the run's last step and its evaluation regardless)."""
    if self._reached_group_stop():
      if self.finishing:
        logging.warning("SIGTERM reached a process of this group during the run's last step: "
                        'every process finishes it and its evaluation (a rerun would evaluate '
                        'nothing), then the run ends.')
      else:
        logging.warning('SIGTERM reached a process of this group: every process saves a '
                        'checkpoint at the end of step %d and exits.', step)
    return bool(self.received)

  def stop_requested(self) -> bool:
    """Asked before every batch of an evaluation inside training (precise BN, eval batches):
    whether to end it and save the step without it."""
    self._reached_group_stop()
    return bool(self.received)

  def stop_after_save(self, step: int) -> bool:
    """Asked after every save but the run's last: whether to exit there."""
    if self._reached_group_stop():
      logging.warning('SIGTERM reached a process of this group while step %d was saved: every '
                      'process exits.', step)
    return bool(self.received)

  def say_if_stopped_too_late(self, step: int) -> None:
    """Asked once after the last step and its evaluation, where nothing is left to stop: on a
    group, says that a SIGTERM came meanwhile (on one process, the signal's own line did)."""
    if self._reached_group_stop():
      logging.warning('SIGTERM reached a process of this group during its last step or '
                      'evaluation: the run had finished, with step %d saved.', step)

  def _reached_group_stop(self) -> bool:
    """On a group, whether the processes' agreed stop point is this question (then `received`).

    JAX's service sets the stop point at one past the largest count of questions any process
    has reported when the signal arrives. The count is of questions, not of steps, so that an
    evaluation inside training can stop at a batch: every process asks at the same points
    (after each train step and save, before each batch of an evaluation), so one count is a
    clock for all. Nothing else may ask the service (checkpoints.CheckpointStore keeps orbax
    from it).
    """
    if not self._group or self.received:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    self._asked += 1
    if not multihost_utils.reached_preemption_sync_point(self._asked):
      return False
    self.received = 'SIGTERM'
    return True

  def close(self) -> None:
    for signum, previous in list(self._previous.items()):
      signal.signal(signum, previous)
    self._previous = {}


def _memory_advice(config, error: Exception, where: str = '') -> str:
  """What to change when the train step (or precise BN's pass over train batches: `where`) ran
  out of device memory (`error`, XLA's message)."""
  per_device = config.batch_size // max(jax.device_count(), 1)
  accumulation = config.grad_accumulation_steps
  held = f'{per_device} clips' + (f' ({per_device // accumulation} in each of its {accumulation} '
                                  'micro-batches)' if accumulation > 1 else '')
  narrower = ('' if models.compute_dtype(config.dtype) == jnp.bfloat16 else
              ", or use config.dtype='bfloat16'")
  return (f'Out of device memory{where} with a per-device batch of {held}. Lower config.batch_size'
          + (', raise' if narrower else ' or raise') + ' config.grad_accumulation_steps (same '
          f'effective batch, {accumulation} now){narrower}. Original error: {str(error)[:2000]}')


def _out_of_memory_told(config, where: str = ''):
  """`errors.out_of_device_memory_told` with `_memory_advice`. It wraps the train step's
  dispatch and every first read of its results: a step dispatched ahead that runs out of
  memory while it runs says so only where its results are read."""
  return errors.out_of_device_memory_told(lambda e: _memory_advice(config, e, where))


def _read_loss(metrics, config) -> float:
  """A train step's loss, read on the host: its first read says if the step ran out of memory."""
  with _out_of_memory_told(config):
    return float(metrics['loss'])


def check_training_config(config: ml_collections.ConfigDict) -> None:
  """Fails on what the config alone makes wrong for training, before data or the workdir."""
  pipeline.check_train_clips(config.data)
  pipeline.check_eval_views(config.data)
  engine.check_config(config, training=True, devices=jax.device_count())


def with_run_length(config: ml_collections.ConfigDict, total_steps: int
                    ) -> ml_collections.ConfigDict:
  """A copy of `config` whose num_train_steps is the run's length: a run by epochs (-1) says in
  config.json how many steps its epochs made."""
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.num_train_steps = total_steps
  return resolved


def training_engine(config: ml_collections.ConfigDict) -> engine.Engine:
  """The Engine of a training run: classes and the epoch length come from the train split. The
  eval split and the eval view settings are checked too, so that they fail now, not after the
  first steps."""
  check_training_config(config)
  info = pipeline.train_split_info(config.dataset)
  pipeline.split_info(config.dataset, config.dataset.eval_split)
  lines = [pipeline.shared_videos_warning(config.dataset, config.dataset.eval_split,
                                         'the evaluations during training score videos the '
                                         'model trains on'),
           pipeline.clip_settings_warning(config.dataset, config.dataset.eval_split,
                                          'the evaluations during training score clips unlike '
                                          'those the model trains on')]
  lines += pipeline.enlarging_warnings(config.dataset, config.data, config.dataset.train_split,
                                       config.dataset.eval_split)
  lines += pipeline.clip_coverage_warnings(config.dataset, config.data,
                                           config.dataset.train_split, config.dataset.eval_split)
  lines.append(augment.mirrored_directions_warning(info.classes, config.data))
  lines.append(engine.micro_batch_norm_warning(config))
  for line in filter(None, lines):
    logging.warning('%s', line)
  trainer = engine.Engine(config, info.classes, train_videos=info.num_videos)
  if (config.num_train_steps > 0 and config.num_epochs > 0
      and not engine.runs_by_epochs(config, info.num_videos)):
    logging.warning('config.num_train_steps=%d sets the run\'s length: config.num_epochs=%g is '
                    'not read (set num_train_steps=-1 to train by epochs).',
                    config.num_train_steps, config.num_epochs)
  warmup = engine.resolved_optimizer(config, info.num_videos)[0].warmup_steps
  opt = config.optimizer
  if opt.warmup_steps > 0 and opt.schedule == 'epoch_cosine':
    logging.warning("config.optimizer.warmup_steps=%d is not read by schedule='epoch_cosine', "
                    'whose warm-up counts epochs (config.optimizer.warmup_epochs=%g).',
                    opt.warmup_steps, opt.warmup_epochs)
  elif opt.warmup_epochs > 0 and opt.warmup_steps > 0:
    logging.warning('config.optimizer.warmup_epochs=%g sets the warm-up (%d step(s) here): '
                    'config.optimizer.warmup_steps=%d is not read (set warmup_epochs=0 to warm '
                    'up by steps).', opt.warmup_epochs, warmup, opt.warmup_steps)
  if config.optimizer.schedule != 'epoch_cosine' and warmup >= trainer.total_steps:
    logging.warning('The warm-up (%d steps) is not shorter than this run of %d: its learning rate '
                    'never reaches the peak %.4g (the last step trains at %.4g); shorten '
                    'config.optimizer.warmup_steps (or warmup_epochs).', warmup,
                    trainer.total_steps, optim.peak_learning_rate(config.optimizer,
                                                                  config.batch_size),
                    float(trainer.schedule(trainer.total_steps - 1)))
  return trainer


def initialize_from(trainer: engine.Engine, state: engine.TrainState,
                    init_config) -> Tuple[engine.TrainState, Dict[str, Any], List[str]]:
  """Loads `config.init_from` weights into a fresh state (salinet_jax/pretrained.py); returns
  it, what it started from ({'source', 'unfinished': [step, run steps] of a source run that
  had not finished, or None}), which the run's checkpoints keep for its resumes, and the
  variables it loaded ('collection:module/.../leaf').

  The source is another run's workdir (e.g. S2DNet's warm-up stage for its sampling stage), a
  checkpoint step directory, or a converted PyTorch checkpoint (python -m salinet_jax.convert).
  Parameters matching `init_from.exclude` keep their fresh initialisation. Only weights travel:
  the optimizer state and step start afresh.
  """
  params, batch_stats, report = pretrained.load_pretrained(
      state.params, state.batch_stats, init_config, trainer.config.model, trainer.classes,
      trainer.classifier_params)
  # Tensors left fresh under init_from.strict=False are a warning: the user should see them.
  log = logging.info if report.ok else logging.warning
  log('Initialised from %s', report.summary())
  if report.source_config:
    _say_how_the_source_differs(report, trainer.config)
  if report.converted_for:
    differences = pretrained.converted_model_differences(report.converted_for,
                                                         trainer.config.model)
    if differences:
      logging.warning('init_from %s was converted for another model than this run, with the '
                      'same tensor shapes (the weights load, but compute otherwise): %s.',
                      report.source, '; '.join(differences))
  normalization = trainer.config.data.normalization
  if report.converted_normalization not in (None, normalization):
    logging.warning('init_from %s holds weights trained on pixels normalised as %s, but this run '
                    'normalises them as %s: set --config.data.normalization=%s to give them the '
                    'inputs they were trained on (weights trained otherwise than their source: '
                    'convert them again with --normalization=%s to record it).', report.source,
                    inputs.described_normalization(report.converted_normalization),
                    inputs.described_normalization(normalization),
                    report.converted_normalization, normalization)
  started_from = {'source': report.source,
                  'unfinished': list(report.unfinished) if report.unfinished else None}
  return state.replace(params=params, batch_stats=batch_stats), started_from, report.loaded


def _refuse_a_start_that_cannot_work(trainer: engine.Engine) -> None:
  """The refusals of a fresh start that come with the init_from load (a checkpoint that does not
  fit, frozen parameters it leaves random), from the model's shapes and the checkpoint's
  metadata: before an event file, the init compile (11 s for SaliNet K400 on 2 CPU cores) and
  the load. The checks at the load stay (a resume whose steps all turn out corrupt starts
  afresh)."""
  config = trainer.config
  from_scratch = config.init_from.checkpoint == pretrained.FROM_SCRATCH
  if from_scratch and not config.optimizer.frozen:
    return
  state = trainer.abstract_state()
  report = pretrained.check_fit(state.params, state.batch_stats, config.init_from, config.model,
                                trainer.classes, trainer.classifier_params)
  _refuse_frozen_random_parameters(config, state.params, report.loaded)


def _refuse_frozen_random_parameters(config, params, loaded: Sequence[str]) -> None:
  """Fails when config.optimizer.frozen freezes parameters that keep their random
  initialisation (no init_from, or one that excludes or lacks them): they would never train,
  without a word. S2DNet's warm-up freezes its fresh sampler on purpose (its sampling stage
  trains it)."""
  pattern = config.optimizer.frozen
  if not pattern:
    return
  given = {name.split(':', 1)[1] for name in loaded if name.startswith('params:')}
  warmup = config.model.name == 's2dnet' and config.model.stage == 'warmup'
  frozen = [name.split(':', 1)[1]
            for name, is_frozen in optim.frozen_names(params, pattern).items() if is_frozen]
  random = [path for path in frozen
            if path not in given and not (warmup and s2dnet.in_sampler(path))]
  if random:
    source = ('no config.init_from' if config.init_from.checkpoint == pretrained.FROM_SCRATCH
              else f'config.init_from.checkpoint={config.init_from.checkpoint!r} does not give '
              'them (excluded or missing)')
    raise errors.ConfigError(
        f'config.optimizer.frozen={pattern!r} freezes {len(random)} parameters that keep their '
        f'random initialisation ({data_errors.first_few(random, 3)}; {source}): they would '
        'never train. Give them weights through config.init_from, or leave them out of '
        'config.optimizer.frozen.')


# Model fields that leave what the loaded weights compute unchanged (pretrained.py says which).
_INIT_ONLY_FIELDS = tuple(f'model.{field}:' for field in pretrained.SAME_COMPUTATION_FIELDS)


def _say_how_the_source_differs(report: pretrained.LoadReport, config) -> None:
  """A run started from another run's checkpoint whose model or clip settings differ (input
  normalisation, frames, S2DNet's top-k), or an S2DNet sampling stage started from anything but
  a warm-up stage, is warned about: its weights were trained under other conditions."""
  differences = checkpoints.config_differences(
      report.source_config, config,
      relevant=lambda line: (checkpoints.changes_a_view(line)
                             and not line.startswith(_INIT_ONLY_FIELDS)))
  if differences:
    logging.warning('init_from %s was trained with other model or clip settings than this run: '
                    '%s.', report.source, '; '.join(differences))
  if config.model.name == 's2dnet' and config.model.stage == 'sampling':
    stage = (checkpoints.stored_config_dict(report.source_config).get('model') or {}).get('stage')
    if stage != 'warmup':
      logging.warning("S2DNet's sampling stage starts from its warm-up stage, but init_from %s "
                      'is %s.', report.source, f'a {stage!r}-stage run' if stage else
                      'not an S2DNet run')


def _give_config_json_the_steps_length(workdir: str, metadata: Dict[str, Any]) -> None:
  """Where config.json says another run length than the newest step recorded (a relaunch that
  lengthened the run wrote it, then stopped before its first save), it is rewritten from that
  step's config at the step's length: otherwise the run would read as unfinished for ever, to
  eval and init_from, while rerunning it at its own length trains nothing."""
  total = metadata.get('total_steps')
  stored = checkpoints.stored_config_dict(metadata.get('config'))
  if not isinstance(total, int) or not stored or checkpoints.workdir_run_length(workdir) in (
      None, total):
    return
  stored['num_train_steps'] = total
  logging.info('Config written to %s, with the %d steps of its checkpoints (it said another '
               'length, of a relaunch that saved no step).', workdir_lib.write_config(
                   workdir, ml_collections.ConfigDict(stored)), total)


def _model_summary(trainer: engine.Engine, state: engine.TrainState, writer,
                   resumed: bool) -> str:
  """The console's Model line; TensorBoard gets its figures once, when the run starts (a resume
  writing them again would put a second point at step 0)."""
  from salinet_jax import flops  # pylint: disable=g-import-not-at-top
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))
  gflops = float(flops.model_info(trainer.model, trainer.input_shape)['gflops'])
  if not resumed:
    writer.write_scalars(0, {'model/params_millions': num_params / 1e6,
                             'model/gflops_per_view': gflops})
  t, h, w = trainer.input_shape[1:4]
  return (f'Model {trainer.config.model.name}: {num_params / 1e6:.3f} M parameters, '
          f'{gflops:.3f} GFLOPs (multiply-adds) per {t}x{h}x{w} view, '
          f'{len(trainer.classes)} classes '
          f'({", ".join(repr(c) for c in trainer.classes[:10])}'
          f'{", ..." if len(trainer.classes) > 10 else ""})')


def _metric_writer(workdir: str):
  """TensorBoard event files on process 0 (the console has its own lines: no logging writer)."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  return _EventFiles(workdir)


class _EventFiles(metric_writers.MultiWriter):
  """The workdir's TensorBoard event files. A write the disk refuses for space is said once in
  one line and ends the writing, as for log.txt: clu's traceback ended the run mid-training, or
  replaced the line a failed save ends a run with when closing flushed the writer. Any other
  error is raised."""

  def __init__(self, workdir: str):
    super().__init__([metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))])
    self.failed = False

  def _guarded(self, write, *args, **kwargs) -> None:
    if self.failed:
      return
    try:
      write(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      refused = data_errors.refused_for_space(e)
      if refused is None:
        raise
      self.failed = True
      logging.warning('Cannot write TensorBoard events to %s: %s. Training goes on; the points '
                      'from here on are in the console only.', refused.filename, refused.strerror)

  def write_summaries(self, *args, **kwargs):
    self._guarded(super().write_summaries, *args, **kwargs)

  def write_scalars(self, *args, **kwargs):
    self._guarded(super().write_scalars, *args, **kwargs)

  def write_images(self, *args, **kwargs):
    self._guarded(super().write_images, *args, **kwargs)

  def write_videos(self, *args, **kwargs):
    self._guarded(super().write_videos, *args, **kwargs)

  def write_audios(self, *args, **kwargs):
    self._guarded(super().write_audios, *args, **kwargs)

  def write_texts(self, *args, **kwargs):
    self._guarded(super().write_texts, *args, **kwargs)

  def write_histograms(self, *args, **kwargs):
    self._guarded(super().write_histograms, *args, **kwargs)

  def write_hparams(self, *args, **kwargs):
    self._guarded(super().write_hparams, *args, **kwargs)

  def flush(self):
    self._guarded(super().flush)

  def close(self):
    """Closes the writer's thread and file, also after a refused write (refused again then)."""
    if not self.failed:
      self._guarded(super().close)
      return
    try:
      super().close()
    except Exception as e:  # pylint: disable=broad-except
      if data_errors.refused_for_space(e) is None:
        raise


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it has checkpoints); returns the last eval results
  (or {'preempted_at_step': step, 'stopped_by': 'SIGTERM' | 'SIGINT'} after either)."""
  check_training_config(config)
  checkpoints.refuse_unsavable(workdir, '--workdir')
  parallel.check_preemption_service()
  if not checkpoints.has_checkpoints(workdir):  # a resumed run does not initialise again
    pretrained.check_init_from(config.init_from)
  pipeline.check_splits(config.dataset, (config.dataset.train_split, config.dataset.eval_split))
  workdir_lib.check_writable(workdir, 'checkpoints and logs',
                             'Pass a --workdir you can write to.')
  # Its checkpoints folder too: otherwise the run would train until its first save fails.
  workdir_lib.check_writable(checkpoints.checkpoint_dir(workdir), 'checkpoints',
                             'Pass a --workdir you can write to.')
  with workdir_lib.WorkdirLock(workdir):
    log_path = console.log_to_file(workdir)
    try:
      if log_path:
        logging.info('This log also goes to %s.', log_path)
      return _train(config, workdir)
    except (errors.UserError, data_errors.DataError) as e:
      console.error_to_log_file(str(e))
      raise
    except data_errors.NoSpace as e:
      console.error_to_log_file(errors.no_space_line(e))
      raise
    except KeyboardInterrupt:  # before the loop takes Ctrl-C over, or a second one inside it
      console.error_to_log_file('Interrupted by Ctrl-C at:\n' + traceback.format_exc())
      raise errors.Interrupted(
          'the run stopped unfinished; the same command resumes from its newest checkpoint, '
          f'if any (the traceback of where it stopped is in {log_path}).') from None
    except Exception as e:  # the console shows its traceback; log.txt must not end before it
      line = parallel.ending_line(e)
      console.error_to_log_file('The run stopped at this error:\n' + traceback.format_exc().rstrip()
                                + (f'\n{line}' if line else ''))
      raise
    finally:
      console.close_log_file()


def _train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  trainer = training_engine(config)
  if not checkpoints.has_checkpoints(workdir):
    _refuse_a_start_that_cannot_work(trainer)
  writer = _metric_writer(workdir)
  store = checkpoints.CheckpointStore(workdir, config.checkpoint)

  environment = _run_environment(config)

  def resumable(step: int) -> None:
    stored = store.metadata(step)
    split = config.dataset.train_split
    info = pipeline.split_info(config.dataset, split)
    _say_how_the_environment_changed(stored.get('environment'), environment, step)
    if stored.get('classes') is not None:
      _require_same_classes(
          stored['classes'], info, split, f'Checkpoint step {step} in {store.directory}',
          'resume on the records it was trained on, or use another --workdir',
          checkpoints.CheckpointMismatchError)
    _check_run_length(stored, step, store.directory, config, trainer.total_steps,
                      info.num_videos)
    _say_records_changes(stored.get('records'), config.dataset,
                         f'Checkpoint step {step} in {store.directory}',
                         config.dataset.eval_split)

  started_from = None
  try:
    state, step = store.restore_for_resume(trainer.abstract_state(), config, resumable)
    if state is not None:
      logging.info('Resumed from checkpoint step %d in %s.', step, store.directory)
      workdir_lib.set_aside_events_after(workdir, step,
                                         checkpoints.save_started_ns(store.step_dir(step)))
      started_from = (store.metadata(step).get('environment') or {}).get('started_from')
      _say_the_run_started_from_an_unfinished_one(started_from)
    else:
      from_scratch = config.init_from.checkpoint == pretrained.FROM_SCRATCH
      # Again, as after the load below: a workdir whose checkpoints all turned out corrupt
      # skipped _refuse_a_start_that_cannot_work.
      if from_scratch:  # before anything is compiled
        _refuse_frozen_random_parameters(config, trainer.abstract_state().params, ())
      logging.info('Initialising the model (compiled once per run)...')
      state = trainer.fresh_state()
      if not from_scratch:
        state, started_from, loaded = initialize_from(trainer, state, config.init_from)
        _refuse_frozen_random_parameters(config, state.params, loaded)
      # Once the run is known to start: a refused one leaves no hyperparameters in TensorBoard,
      # nor moves the points of a run killed before its first save (or whose checkpoints were
      # all corrupt), which this one logs again.
      workdir_lib.set_aside_events_after(workdir, 0)
      writer.write_hparams(_flat_hparams(config))
    start_step = int(state.step)
    # The run's config from here on: a resumed run's init_from stays the one its weights started
    # from, in config.json and in every checkpoint it saves.
    if step is not None:
      trainer.config = checkpoints.with_stored_init_from(config,
                                                         store.metadata(step).get('config'))
    # Only now: a config the checkpoint refused must not replace the one it was trained with;
    # nor a config no step will train with (a resume with nothing left to train).
    finished = step is not None and start_step >= trainer.total_steps
    if not finished:
      logging.info('Config written to %s.', workdir_lib.write_config(
          workdir, with_run_length(trainer.config, trainer.total_steps)))
    logging.info('%s; %d train steps of %d clips.',
                 _model_summary(trainer, state, writer, resumed=step is not None),
                 trainer.total_steps, config.batch_size)
    results: Dict[str, Any] = {}
    if finished:
      _give_config_json_the_steps_length(workdir, store.metadata(step))
      logging.info('Checkpoint step %d >= num_train_steps %d: nothing to train; %s keeps the '
                   'config its steps trained with.', start_step, trainer.total_steps,
                   os.path.join(os.path.abspath(workdir), workdir_lib.CONFIG_FILE))
    elif start_step >= trainer.total_steps:
      logging.info('num_train_steps is %d: nothing to train.', trainer.total_steps)
    else:
      results = _train_loop(trainer, state, start_step, store, writer,
                            dict(environment, started_from=started_from))
    store.wait()
  except BaseException:
    _close_while_failing(store, writer)
    raise
  store.close()  # a failed save heard only now is the run's error
  writer.close()
  return results


def _close_while_failing(store, writer) -> None:
  """Closes the store and the writer while an error ends the run: a save failure first heard
  there (the pending save) is said as a warning, so that it replaces neither the error's own
  line or traceback nor a Ctrl-C's status."""
  try:
    store.close()
  except checkpoints.CheckpointSaveError as failed:
    logging.warning('%s', failed)
  finally:
    writer.close()


def _say_the_run_started_from_an_unfinished_one(started_from: Optional[Dict[str, Any]]) -> None:
  """A resumed run whose weights started from a run that had not finished (warned about then)
  keeps that start: said again at every resume, as finishing the source since changes nothing."""
  if started_from and started_from.get('unfinished'):
    step, total = started_from['unfinished']
    logging.warning('This run started from init_from %s when its run had reached step %d of '
                    '%d: resuming keeps that start. To start from the finished run, train this '
                    'one again in a new --workdir.', started_from['source'], step, total)


def _run_environment(config) -> Dict[str, Any]:
  """What decides a run's batches and random draws besides its config: the mode its processes
  read the train stream in (data/pipeline.train_sharding: 'auto' depends on the process count)
  and the libraries that draw them. Saved with every checkpoint, with what its weights started
  from ('started_from', from `initialize_from`); a resume says what changed."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  info = pipeline.split_info(config.dataset, config.dataset.train_split)
  return {'train_sharding': pipeline.train_sharding(config.data, jax.process_count(), info),
          'processes': jax.process_count(),
          'versions': {'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
                       'flax': flax.__version__, 'optax': optax.__version__,
                       'tensorflow': tf.__version__},
          'jax_threefry_partitionable': bool(jax.config.jax_threefry_partitionable)}


def _say_how_the_environment_changed(stored: Optional[Dict[str, Any]], now: Dict[str, Any],
                                     step: int) -> None:
  """Warns where a resumed run's batches or random draws will not be those an uninterrupted run
  would have had: a train stream read by files (reshuffled at the resumed step) or in another
  mode than before, and other library versions or RNG settings (checkpoints from before these
  were recorded say nothing of the libraries)."""
  stored = stored or {}
  mode, before = now['train_sharding'], stored.get('train_sharding')
  how = f"config.data.train_sharding reads {mode!r} on {now['processes']} process(es)"
  if before is not None and before != mode:
    logging.warning("Resuming at step %d: the run so far read its train stream in %r on %d "
                    'process(es); %s, so the batches from here on are not those an '
                    "uninterrupted run would have seen (set config.data.train_sharding=%r to "
                    'keep them).', step, before, stored.get('processes', 1), how, before)
  elif mode == 'files':
    logging.warning("Resuming at step %d: %s, which reshuffles the train stream at the resumed "
                    "step: the batches from here on are not those an uninterrupted run would "
                    "have seen ('global_order' resumes them exactly).", step, how)
  changed = [f'{name} {stored["versions"][name]} -> {version}'
             for name, version in now['versions'].items()
             if name in stored.get('versions', {}) and stored['versions'][name] != version]
  if 'jax_threefry_partitionable' in stored and (
      stored['jax_threefry_partitionable'] != now['jax_threefry_partitionable']):
    changed.append(f"jax_threefry_partitionable {stored['jax_threefry_partitionable']} -> "
                   f"{now['jax_threefry_partitionable']}")
  if changed:
    logging.warning('Resuming at step %d with other libraries or random-number settings than '
                    'it was trained with (%s): its random draws (dropout, augmentation) may '
                    'differ from an uninterrupted run\'s.', step, ', '.join(changed))


def _check_run_length(stored: Dict[str, Any], step: int, directory: str, config,
                      total_steps: int, train_videos: int) -> None:
  """A resumed run counts where its data stream and schedule stand in steps of its batch: a
  batch_size other than the checkpoint's would skip or repeat clips and shift an epoch-based
  schedule, so it is refused; a run length other than the checkpoint's (a changed
  num_train_steps or num_epochs, or train records of another size) is said."""
  stored_config = checkpoints.stored_config_dict(stored.get('config'))
  stored_batch = stored_config.get('batch_size')
  if stored_batch is not None and stored_batch != config.batch_size:
    raise checkpoints.CheckpointMismatchError(
        f'Checkpoint step {step} in {directory} was trained with batch_size {stored_batch}, '
        f'this config has {config.batch_size}: a resumed run counts where its data stream and '
        f'learning-rate schedule stand in steps of its batch, so it would skip or repeat clips '
        f'and move its schedule. Resume with --config.batch_size={stored_batch}, or start '
        'another --workdir from this one (config.init_from).')
  stored_total = stored.get('total_steps')
  if stored_total is not None and int(stored_total) != total_steps:
    length_fields = [f for f in ('num_train_steps', 'num_epochs')
                     if f in stored_config and stored_config[f] != config[f]]
    why = (f"{' and '.join(length_fields)} changed" if length_fields else
           f'the train split now holds {train_videos} videos')
    logging.warning('Checkpoint step %d belongs to a run of %d steps; this run has %d (%s): '
                    'the rest of its learning-rate schedule follows the new length.', step,
                    int(stored_total), total_steps, why)


class _Progress:
  """Throughput, ETA and the data-wait fraction of each logging window.

  clu's ReportProgress measures steps per second (and writes it to TensorBoard with the
  uptime); it is fed a training clock that stops during evaluation and checkpointing, so the
  figures describe training alone. The data wait (time blocked on the input pipeline) has no
  clu counterpart per window, so it is timed here.
  """

  def __init__(self, total_steps: int, every_steps: int, batch_size: int, writer):
    self._capture = _LatestScalars(writer)
    self._report = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=self._capture, every_steps=every_steps,
        every_secs=None)
    self._paused = 0.0
    self._data_wait = 0.0
    self._window_start = time.monotonic()
    self._window_first_step: Optional[int] = None  # None until a window of clu's has ended
    self.total_steps, self.batch_size = total_steps, batch_size

  def clock(self) -> float:
    return time.monotonic() - self._paused

  def waited_for_data(self, seconds: float) -> None:
    self._data_wait += seconds

  def pause(self, seconds: float) -> None:
    self._paused += seconds

  def step_done(self, step: int) -> None:
    self._report(step, self.clock())

  def window(self, step: int) -> Dict[str, float]:
    """clips/s, data-wait fraction and ETA (minutes) of the window ending at `step`."""
    elapsed = max(self.clock() - self._window_start, 1e-9)
    out = {'data_wait_fraction': self._data_wait / elapsed}
    if self._capture.steps.get('steps_per_sec') == step:  # clu measured this window
      steps_per_sec = self._capture.latest['steps_per_sec']
    elif self._window_first_step is not None:  # cut short by a stop: timed here
      steps_per_sec = (step - self._window_first_step) / elapsed
    else:  # the first window cut short: its time is mostly compiling
      steps_per_sec = None
    self._window_first_step = step
    if steps_per_sec:
      out['clips_per_sec'] = steps_per_sec * self.batch_size
      out['eta_minutes'] = (self.total_steps - step) / steps_per_sec / 60
    self._window_start, self._data_wait = self.clock(), 0.0
    return out


class _LatestScalars(metric_writers.MultiWriter):
  """Forwards to a writer and remembers the latest value of each scalar, and its step."""

  def __init__(self, writer):
    super().__init__([writer])
    self.latest: Dict[str, float] = {}
    self.steps: Dict[str, int] = {}  # the step each latest value was written at

  def write_scalars(self, step, scalars):
    self.latest.update({k: float(v) for k, v in scalars.items()})
    self.steps.update({k: int(step) for k in scalars})
    super().write_scalars(step, scalars)


def _format_minutes(minutes: float) -> str:
  seconds = int(round(minutes * 60))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


def _log_line(step: int, total: int, metrics: Dict[str, float]) -> str:
  line = (f"step {step}/{total}  loss {metrics['loss']:.4f}  lr {metrics['learning_rate']:.3g}  "
          f"train top-1 {metrics['train_top1']:.3f}")
  if 'clips_per_sec' in metrics:
    line += f"  {metrics['clips_per_sec']:.1f} clips/s"
  line += f"  data-wait {100 * metrics['data_wait_fraction']:.0f}%"
  if 'eta_minutes' in metrics:
    line += f"  ETA {_format_minutes(metrics['eta_minutes'])}"
  return line


def _check_finite_loss(loss: float, step: int, store: checkpoints.CheckpointStore) -> None:
  if not np.isfinite(loss):
    latest = store.newest_intact_step()
    raise NonFiniteLossError(
        f'Loss is {loss} at step {step}: stopping. '
        + (f'The last good checkpoint is step {latest} in {store.directory}; '
           if latest is not None else 'No intact checkpoint was saved; ')
        + 'lower the learning rate or check the input data.')


def _precise_bn_stats(trainer: engine.Engine, state: engine.TrainState, step: int,
                      sharding: str, stop_requested=None):
  """BatchNorm statistics over `precise_bn_batches` train batches from a stream of their own
  (seeded by the step, read in the training stream's `sharding`), so that the training stream
  is the same with or without it; `stop_requested` as in `precise_bn.recompute`."""
  config = trainer.config
  seed = int(np.random.SeedSequence([config.seed, step, 0x5BA7]).generate_state(1)[0] >> 1)
  info = pipeline.split_info(config.dataset, config.dataset.train_split)
  # At most one pass over the split, as PySlowFast caps NUM_BATCHES_PRECISE at its loader's
  # length: more batches would count clips twice.
  count = min(config.precise_bn_batches, max(1, info.num_videos // config.batch_size))
  if info.num_videos < config.batch_size:
    logging.warning('Precise BN: the %d train videos are fewer than a batch of %d, so its one '
                    'batch repeats clips.', info.num_videos, config.batch_size)
  elif count < config.precise_bn_batches:
    logging.info('Precise BN: config.precise_bn_batches=%d, but the %d train videos make %d '
                 'batch(es) of %d: using %d.', config.precise_bn_batches, info.num_videos,
                 count, config.batch_size, count)
  batches = pipeline.as_numpy(
      pipeline.train_dataset(config, seed=seed, sharding=sharding).take(count), info)
  # Its results are read here, not first by the evaluation after it, so that running out of
  # memory is told as precise BN's (its batches are the train step's, micro-batches too).
  with _out_of_memory_told(config, " in precise BN's pass over train batches"):
    return jax.block_until_ready(precise_bn.recompute(
        trainer.moments_step, state.variables, batches, count, trainer.mesh,
        stop_requested=stop_requested))


def _train_loop(trainer: engine.Engine, state: engine.TrainState, start_step: int,
                store: checkpoints.CheckpointStore, writer,
                environment: Dict[str, Any]) -> Dict[str, Any]:
  config = trainer.config
  info = pipeline.split_info(config.dataset, config.dataset.train_split)
  train_iter = parallel.prefetch_to_mesh(pipeline.as_numpy(
      pipeline.train_dataset(config, seed=config.seed, start_step=start_step,
                             sharding=environment['train_sharding']), info, training=True),
      trainer.mesh, config.data.device_prefetch)
  rng = jax.random.key(config.seed + 1)
  progress = _Progress(trainer.total_steps, config.log_every_steps, config.batch_size, writer)
  hooks = []
  if config.profile_num_steps and jax.process_index() == 0:
    hooks += _profiler(config, start_step, trainer.total_steps, store.workdir)
  preemption = PreemptionWatcher()
  try:
    results = _run_steps(trainer, state, start_step, store, writer, train_iter, rng, progress,
                         hooks, preemption, environment)
    # The last save commits while SIGTERM is still the loop's: main.py's guard, which has it
    # back after, would end a finished run in it and lose its last step.
    store.wait()
    return results
  finally:
    preemption.close()


@jax.jit
def _add_metrics(a, b):
  return jax.tree.map(jnp.add, a, b)


def _window_means(window, steps: int, last) -> Dict[str, float]:
  """The logged metrics: means over the steps since the last log line (as PySlowFast and Scenic
  log them; one batch's loss and top-1 are noisy), the learning rate that of the last step."""
  values = {name: float(np.asarray(value)) / steps for name, value in window.items()}
  values['learning_rate'] = float(np.asarray(last['learning_rate']))
  return values


def _profiler(config, start_step: int, total_steps: int, workdir: str) -> List[Any]:
  """clu's profiler of the `profile_num_steps` steps after step `profile_first_step`, or, where
  this run (resumed at `start_step`) does not hold them all, a warning and none: it starts only
  at that step and writes its trace only once they have run."""
  first, count = config.profile_first_step, config.profile_num_steps
  traces = os.path.join(workdir, 'plugins', 'profile')  # where clu's Profile writes them
  if start_step < first and first + count <= total_steps:
    logging.info('Steps %d to %d are traced into %s (TensorBoard\'s Profile tab).', first + 1,
                 first + count, traces)
    return [periodic_actions.Profile(logdir=workdir, num_profile_steps=count,
                                     profile_duration_ms=None, first_profile=first,
                                     every_secs=None)]
  if first + count <= start_step and glob.glob(os.path.join(glob.escape(traces), '*')):
    return []  # resumed past the steps it traced before
  latest = total_steps - count  # the last step after which the whole trace fits in the run
  remedy = (f'set --config.profile_first_step to a step from {start_step + 1} to {latest}'
            if latest > start_step else 'the run has too few steps left for that many')
  logging.warning('config.profile_num_steps=%d traces the %d step(s) after step %d '
                  '(config.profile_first_step), outside this run (steps %d to %d): no trace is '
                  'written; %s.', count, count, first, start_step + 1, total_steps, remedy)
  return []


def _evaluates_later(store: checkpoints.CheckpointStore, step: int) -> str:
  """The command that evaluates a step saved without its evaluation."""
  return f'`--mode=eval --config.eval.checkpoint={store.step_dir(step)}` evaluates it'


def _run_steps(trainer, state, start_step, store, writer, train_iter, rng, progress, hooks,
               preemption, environment):
  config = trainer.config
  total_steps = trainer.total_steps
  decoding = pipeline.split_decoding(config.dataset, config.dataset.eval_split)
  seen = pipeline.records_identity(  # the eval split's groups are not needed: its digest is
      config.dataset, (config.dataset.train_split, config.dataset.eval_split),
      groups_of=(config.dataset.train_split,))
  if start_step in store.steps():  # resumed: what it trained on before counts too
    _keep_earlier_train_groups(seen, store.metadata(start_step).get('records'),
                               config.dataset.train_split)
  train_info = pipeline.split_info(config.dataset, config.dataset.train_split)
  eval_results: Dict[str, Any] = {}
  previous = None  # the metrics of the step before: at most two steps are ever in flight
  window, window_steps = None, 0  # the metrics summed over the steps since the last log line
  for step in range(start_step + 1, total_steps + 1):
    preemption.finishing = step == total_steps
    fetch_start = time.monotonic()
    batch = next(train_iter)
    progress.waited_for_data(time.monotonic() - fetch_start)
    if step == start_step + 1:
      logging.info('Compiling the train step (the first step takes longer)...')
    with jax.profiler.StepTraceAnnotation('train', step_num=step), _out_of_memory_told(config):
      state, metrics = trainer.train_step(state, batch, rng)
    if previous is not None:
      # Waiting for the step before keeps the host one step ahead: a SIGTERM, a NaN or a failed
      # save is acted on at the next step, not after a queue of dispatched ones.
      _check_finite_loss(_read_loss(previous[1], config), previous[0], store)
    previous = (step, metrics)
    window = metrics if window is None else _add_metrics(window, metrics)
    window_steps += 1
    progress.step_done(step)
    for hook in hooks:
      hook(step)
    store.check_for_errors()
    is_last = step == total_steps
    stop = preemption.should_stop(step) and not is_last
    if step % config.log_every_steps == 0 or is_last or stop:
      with _out_of_memory_told(config):
        values = _window_means(window, window_steps, metrics)
      window, window_steps = None, 0
      _check_finite_loss(values['loss'], step, store)
      values.update(progress.window(step))
      writer.write_scalars(step, values)
      logging.info('%s', _log_line(step, total_steps, values))
    paused = time.monotonic()
    saving = (step % config.eval_every_steps == 0 or is_last
              or step % config.checkpoint_every_steps == 0 or stop)
    if saving:  # not a state trained on shards changed since the stream opened them
      pipeline.checked_shard_files(train_info)
    evaluated = False
    evaluates = step % config.eval_every_steps == 0 or is_last
    if evaluates and stop:  # before the evaluation's pipelines are even built
      logging.warning('Not evaluating step %d (stopping): %s.', step,
                      _evaluates_later(store, step))
    elif evaluates:
      _check_finite_loss(_read_loss(metrics, config), step, store)
      # A stop asked for meanwhile ends the evaluation, which can take longer than a scheduler's
      # grace period; not the run's last, as a finished run evaluates nothing when rerun.
      stop_requested = None if is_last else preemption.stop_requested
      split = config.dataset.eval_split
      try:
        evaluated_state = state
        if config.precise_bn_batches:
          evaluated_state = state.replace(batch_stats=_precise_bn_stats(
              trainer, state, step, environment['train_sharding'], stop_requested))
        eval_results, _ = evaluate_lib.evaluate_split(
            config, evaluated_state.variables, split, trainer.mesh, trainer.eval_step,
            what=f'the model at step {step}', stop_requested=stop_requested)
        state, evaluated = evaluated_state, True
      except errors.StopRequested as e:
        logging.warning('%s during the evaluation of step %d: saving step %d without it (%s) '
                        'and exiting; %s.', preemption.heard, step, step, e,
                        _evaluates_later(store, step))
        stop = True
    if evaluated:
      eval_results['step'] = step
      writer.write_scalars(step, {f'{split}/{k}': v for k, v in eval_results.items()
                                  if k in evaluate_lib.SCALAR_METRICS})
      logging.info('eval %s @ step %d: %s', split, step, evaluate_lib.summary_line(eval_results))
      metric = ({name: eval_results[name[len('val_'):]] for name in checkpoints.BEST_METRICS}
                if 'top1' in eval_results else None)
      store.save(step, state, metrics=metric, config=config, classes=trainer.classes,
                 total_steps=trainer.total_steps, decoding=decoding, records=seen,
                 environment=environment, evaluation={
                     key: eval_results[key] for key in evaluate_lib.EVALUATION_SETTINGS})
    elif step % config.checkpoint_every_steps == 0 or stop:
      _check_finite_loss(_read_loss(metrics, config), step, store)
      if not bool(trainer.outputs_finite(state, batch)):
        latest = store.newest_intact_step()
        raise checkpoints.NonFiniteStateError(
            f'Not saving step {step}: its weights are finite but predict NaN or Inf. '
            + (f'The last good checkpoint is step {latest} in {store.directory}; '
               if latest is not None else 'No intact checkpoint was saved; ')
            + 'lower the learning rate or check the input data.')
      store.save(step, state, config=config, classes=trainer.classes,
                 total_steps=trainer.total_steps, decoding=decoding, records=seen,
                 environment=environment)
    progress.pause(time.monotonic() - paused)
    # A SIGTERM during this step's evaluation or save stops here, at the step just saved, not
    # after training and saving one more.
    stop = stop or (saving and not is_last and preemption.stop_after_save(step))
    if stop:
      store.wait()
      logging.warning('Preempted: saved checkpoint step %d in %s; rerun the same command to '
                      'resume.', step, store.directory)
      return {'preempted_at_step': step, 'stopped_by': preemption.received or 'SIGTERM'}
  preemption.say_if_stopped_too_late(total_steps)
  return eval_results


def _flat_hparams(config) -> Dict[str, Any]:
  flat = flax.traverse_util.flatten_dict(config.to_dict(), sep='.')
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}


def evaluation_engine(config: ml_collections.ConfigDict, workdir: str,
                      split: str) -> engine.Engine:
  """The Engine for evaluating a workdir's checkpoint on `split` of the config's records.

  The classes are the checkpoint's; the records of `split` must hold the same ones (a model
  scored against another class list would be silently wrong). Checkpoints written before class
  names were saved take the records' names, with a warning.
  """
  info = pipeline.split_info(config.dataset, split)
  try:
    metadata = engine.checkpoint_metadata(workdir, config)
    classes = metadata['classes']
  except (checkpoints.NoCheckpointError, checkpoints.CorruptCheckpointError):
    raise
  except checkpoints.CheckpointError as e:
    logging.warning('%s Using the class names of the records instead.', e)
    metadata, classes = {}, info.classes
  _require_same_classes(classes, info, split, 'The checkpoint',
                        'evaluate on records of the same dataset', records.MissingRecordsError)
  other_videos = _say_records_changes(metadata.get('records'), config.dataset, 'The checkpoint',
                                      split)
  train_split = ((checkpoints.stored_config_dict(metadata.get('config')).get('dataset') or {})
                 .get('train_split') or config.dataset.train_split)
  lines = []
  # A split of the train split's name, but of other videos (a held-out set converted as 'train'
  # into another output), is not the one it trained on: its changes were said above.
  if not (split == train_split and split in other_videos):
    lines.append(pipeline.shared_videos_warning(config.dataset, split, 'evaluating the '
                                                'checkpoint there scores videos it trained on',
                                                train_split))
  trained = (metadata.get('records') or {}).get(train_split) or {}
  lines.append(pipeline.clip_settings_warning(config.dataset, split, 'the checkpoint is scored on '
                                              'clips unlike those it trained on', train_split,
                                              trained.get('settings')))
  lines += pipeline.enlarging_warnings(config.dataset, config.data, eval_split=split)
  lines += pipeline.clip_coverage_warnings(config.dataset, config.data, eval_split=split)
  for line in filter(None, lines):
    logging.warning('%s', line)
  return engine.Engine(config, classes)


def _say_records_changes(seen: Optional[Dict[str, Any]], dataset_config, what: str,
                         evaluated: Optional[str] = None) -> Set[str]:
  """Warns where the records of the splits a checkpoint trained and was evaluated on are not
  the conversion it saw (`seen`: pipeline.records_identity when it was saved; None for
  checkpoints from before, whose check cannot be made: said): other videos, sizes, groups or
  settings. Where `evaluated` holds groups the checkpoint trained on (the videos split anew,
  into another --output or not), its evaluation would score videos it trained on: that is said
  apart. Returns the splits of `seen` that now hold other videos."""
  directory = pipeline.records_directory(dataset_config)
  if not seen:
    logging.warning('%s does not record which conversion of its records it saw (it predates '
                    'that): whether %s holds the videos, sizes and frame rates it was trained '
                    'and evaluated on cannot be checked.', what, directory)
    return set()
  now = pipeline.records_identity(dataset_config, seen)
  train_split = dataset_config.train_split
  for split, then in seen.items():
    changes = records.split_changes(then, now[split]) if split in now else []
    if changes:
      logging.warning('%s was %s on another conversion of split %r than %s holds now: %s.',
                      what, 'trained' if split == train_split else 'evaluated while training',
                      split, directory, '; '.join(changes))
  trained_groups = _trained_groups(seen.get(train_split))
  if evaluated and evaluated != train_split and evaluated in now:
    shared = sorted(trained_groups & set(now[evaluated].get('groups') or ()))
    if shared:
      logging.warning('%s trained on %d of the groups split %r of %s holds now (%s): its '
                      'evaluation there scores videos it trained on.', what, len(shared),
                      evaluated, directory, data_errors.first_few(list(shared), 4))
  return {split for split, then in seen.items()
          if split in now and records.holds_other_videos(then, now[split])}


def _trained_groups(identity: Optional[Dict[str, Any]]) -> Set[str]:
  """The groups a checkpoint trained on: those of the train split's records when it was saved
  and, after a resume on records split anew, those of the records its earlier steps read."""
  identity = identity or {}
  return set(identity.get('groups') or ()) | set(identity.get('earlier_groups') or ())


def _keep_earlier_train_groups(seen: Dict[str, Any], resumed: Optional[Dict[str, Any]],
                               train_split: str) -> None:
  """Adds to the train split's identity in `seen` (the records read from now on) the groups the
  resumed checkpoint trained on that these records' train split lacks, as 'earlier_groups': the
  steps saved from now on trained on both, and evaluating them on a split holding the earlier
  groups scores videos they trained on."""
  now = seen.get(train_split)
  if now is None or now.get('groups') is None:
    return
  earlier = sorted(_trained_groups((resumed or {}).get(train_split)) - set(now['groups']))
  if earlier:
    now['earlier_groups'] = earlier


def _require_same_classes(trained_on, info, split: str, what: str, remedy: str,
                          error: type) -> None:
  """A checkpoint is evaluated on, or resumed with, records of the classes it was trained on:
  the same number of other classes would fit the model and be silently wrong."""
  if tuple(trained_on) != tuple(info.classes):
    raise error(
        f'{what} was trained on {len(trained_on)} classes '
        f'({data_errors.first_few(list(trained_on), 4)}) but split {split!r} in '
        f'{info.directory} has {len(info.classes)} '
        f'({data_errors.first_few(list(info.classes), 4)}): {remedy}.')


def evaluate(config: ml_collections.ConfigDict, workdir: str, split: Optional[str] = None,
             output_dir: Optional[str] = None) -> Dict[str, Any]:
  """Restores the checkpoint chosen by `config.eval.checkpoint` and evaluates a whole split.

  Needs only the split it reads. Writes `eval_<split>.json` (returned), the predictions CSV, and
  where the split has labels the per-class CSV and the confusion PNG, plus the pictures of
  `config.eval.num_visualizations` videos, into `output_dir` (default: the workdir; checked
  writable before any work).
  """
  split = split or config.dataset.eval_split
  checkpoints.require_checkpoint(workdir, config.eval.checkpoint)
  output_dir = workdir_lib.check_writable(
      output_dir or workdir, 'eval outputs',
      'Pass --output_dir=DIR to write them elsewhere (the workdir is only read).')
  trainer = evaluation_engine(config, workdir, split)
  variables, step, source = trainer.restore_variables(workdir, config.eval.checkpoint)
  drawing = contextlib.nullcontext()
  if config.eval.num_visualizations and jax.process_index() == 0:
    drawing = visualize.replacing_pictures(
        trainer.model, variables, os.path.join(output_dir, f'visualizations_{split}'),
        config.eval.num_visualizations, config.data, trainer.classes)
  with data_errors.replacing_together():  # the pictures, then the results: one evaluation's
    with drawing as pictures:
      results, predictions = evaluate_lib.evaluate_split(
          config, variables, split, trainer.mesh, trainer.eval_step, pictures,
          what=f'checkpoint {source}')
    results['step'] = step
    results['checkpoint'] = source
    results['dtype'] = jnp.dtype(models.compute_dtype(config.dtype)).name  # what it computed in
    logging.info('eval %s (checkpoint %s): %s', split, source,
                 evaluate_lib.summary_line(results))
    written = reports.write_outputs(output_dir, results, predictions)
  for path in written:
    logging.info('Wrote %s', path)
  if pictures is not None and pictures.paths:
    logging.info('%s', pictures.summary(results['num_videos']))
  return results
