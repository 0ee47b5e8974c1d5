"""Orbax checkpoints in `<workdir>/checkpoints` that a run can trust.

A checkpoint holds the whole train state (step, params, batch_stats, opt_state) and, as metadata,
the run's config, its class names and the validation figures of the evaluation run at that step
(used to pick the best one). `CheckpointStore` keeps the last k plus the best, and adds what orbax
leaves to its user:

* integrity: every step carries `checksums.json`, the SHA-256 of each of its array files, written
  into orbax's temporary directory before the step is committed (orbax's post-finalisation
  callback), so a committed step always has them. Restoring verifies them: a corrupt step is
  named; a resumed run moves it to `<workdir>/checkpoints_corrupt/` and continues from the newest
  intact step, saying so; evaluating a corrupt step fails. A step written before checksums
  existed is corrupt in the same way when its files are missing, cut short or undecodable (a
  denied permission or a full disk is not damage and keeps its traceback).
* finite state only: a step whose parameters, optimizer state or BatchNorm statistics hold a NaN
  or an Inf is never saved, so it can never become "last good" or "best".
* readable failures: a failed asynchronous save ends the run at the next step with one line
  naming the cause and the path; restoring into another model says which parameters differ and
  which config fields differ from the ones stored with the checkpoint.

Over 400 lines because checksums, verification, quarantine and the orbax store are one concern:
whether a saved step can be trusted.
"""

import contextlib
import functools
import hashlib
import json
import logging as python_logging
import os
import re
import shlex
import shutil
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from absl import logging
from orbax.checkpoint import checkpoint_managers

from data import errors as data_errors
from data import host_malloc
from data import ops
from salinet_jax import errors
from salinet_jax import workdir as workdir_lib

CHECKPOINT_DIR = 'checkpoints'
QUARANTINE_DIR = 'checkpoints_corrupt'
ITEM_DIR = 'default'  # orbax's item directory inside a step directory
CHECKSUMS_FILE = 'checksums.json'
STEP_METADATA_FILE = '_CHECKPOINT_METADATA'  # orbax's: step, metrics, our config and classes
# What the evaluations during training record with each step (config.checkpoint.best_metric).
BEST_METRICS = ('val_top1',)
TMP_SUFFIX = '.orbax-checkpoint-tmp'  # orbax's folder of a save in progress
_CHUNK = 1 << 22


class CheckpointError(errors.UserError):
  """A checkpoint that cannot be used or written as asked."""


class NoCheckpointError(CheckpointError, FileNotFoundError):
  """The workdir (or path) holds no checkpoint."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint whose files differ from the checksums recorded when it was written, or whose
  files cannot be read or decoded."""


class CheckpointSaveError(CheckpointError):
  """Writing a checkpoint failed (disk full, directory gone, ...)."""

  leaves_threads_hanging = True  # orbax's save threads wait for signals that never come


class NonFiniteStateError(CheckpointError):
  """The train state holds NaN or Inf values: it is not saved."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint whose arrays do not fit the model of the given config."""


class RemovedCheckpointError(CheckpointError):
  """A checkpoint step removed while it was read: a run training in its workdir drops its older
  steps as it saves new ones (config.checkpoint.keep_last)."""


# How long a reader whose step failed watches it disappear (orbax deletes a step's files, then
# its folders), and how often it looks whether files are still going.
_REMOVAL_WAIT_S = 5.0
_REMOVAL_LOOK_S = 0.2


def _file_count(step_dir: str) -> Optional[int]:
  """How many files the step directory holds; None once the directory is gone."""
  if not os.path.isdir(step_dir):
    return None
  return sum(len(names) for _, _, names in os.walk(step_dir))


def _removed_meanwhile(step_dir: str) -> bool:
  """Whether the step directory a read failed in is being removed: gone, or losing files until
  it is gone (within `_REMOVAL_WAIT_S`). A damaged step keeps its files: one look tells."""
  count = _file_count(step_dir)
  deadline = time.monotonic() + _REMOVAL_WAIT_S
  while count is not None:
    time.sleep(_REMOVAL_LOOK_S)
    now = _file_count(step_dir)
    if now is not None and ((now >= count and now > 0) or time.monotonic() > deadline):
      return False
    count = now
  return True


# The steps of a workdir a config or flag can name instead of a step directory.
CHOICES = ('best', 'latest')
# How often a reader chooses the workdir's 'best' or 'latest' step again where the one chosen was
# removed while it was read.
SELECTION_ATTEMPTS = 3


def chosen_again_if_removed(which: str, read: Callable[[], Any]) -> Any:
  """`read()`, which chooses the workdir's `which` step ('best' | 'latest') and reads it, called
  again where a run training in the workdir removed the chosen step while it was read (up to
  SELECTION_ATTEMPTS times, each said); an explicit step directory is read once."""
  attempt = 1
  while True:
    try:
      return read()
    except RemovedCheckpointError as e:
      if which not in CHOICES:
        raise
      if attempt == SELECTION_ATTEMPTS:
        raise RemovedCheckpointError(
            f'{e} The {which} step was removed as it was read {attempt} times in a row (the run '
            'saves new steps faster than one is read here): read it once the run ends, or '
            'train with a larger config.checkpoint.keep_last.') from e
      logging.warning('%s Choosing the %s step again.', e, which)
    attempt += 1


@contextlib.contextmanager
def removal_told(step_dir: str, what: str) -> Iterator[None]:
  """Inside it, a read of `step_dir` that fails because the step was removed meanwhile raises
  RemovedCheckpointError, not the damage (or the traceback) the missing files would show."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if not _removed_meanwhile(step_dir):
      raise
    raise RemovedCheckpointError(
        f'{what} was removed while it was read (a run training in its workdir drops its older '
        'steps as it saves new ones).') from e


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def refuse_unsavable(directory: str, setting: str) -> None:
  """A SettingError when orbax cannot save checkpoints that read back below `directory`.

  orbax (0.12) finds the per-process files it merges into a saved step with a glob over the
  step's whole path, where '[' and ']' make a pattern that matches nothing: it merges none,
  warns in a log line, and the step fails to restore ('corrupt: ... does not exist'), while the
  run that saved it reported success. Reading such a path works.
  """
  data_errors.refuse_brackets(directory, setting, "orbax's checkpoint writer")


def step_numbers(folder: str) -> List[int]:
  """The steps of a checkpoints folder, ascending: its committed step folders are named by their
  step (a save in progress adds a suffix); [] where the folder is missing or cannot be listed."""
  try:
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())
  except OSError:
    return []


def has_checkpoints(workdir: str) -> bool:
  """Whether the workdir holds a committed checkpoint step (a run would resume)."""
  return bool(step_numbers(checkpoint_dir(workdir)))


def require_checkpoint(workdir: str, which: str) -> None:
  """Fails before anything is written (eval, predict, features) when `which` ('best' or
  'latest') finds no checkpoint in `workdir`, e.g. a misspelt --workdir, or when `which` is a
  path that is not a checkpoint step directory."""
  if which not in CHOICES:
    if os.sep not in which and not os.path.exists(which):  # a misspelt word or a bare step
      folder = checkpoint_dir(workdir)
      steps = step_numbers(folder)
      example = f' (e.g. {os.path.join(folder, str(steps[-1]))})' if steps else ''
      raise errors.ConfigError(
          f"config.eval.checkpoint must be 'best', 'latest' or the path of a checkpoint step "
          f'directory{example}, got {which!r}. Steps in {folder}: {steps or "none"}.')
    step_dir_of(which)
  elif not has_checkpoints(workdir):
    raise NoCheckpointError(f'No checkpoint in {checkpoint_dir(workdir)}: train first (or pass '
                            'the path of a checkpoint step directory).')


# ----------------------------------------------------------------------------------- integrity
def file_checksums(item_dir: str) -> Dict[str, str]:
  """SHA-256 of every file below `item_dir`, by path relative to it."""
  sums = {}
  for parent, _, names in os.walk(item_dir):
    for name in names:
      path = os.path.join(parent, name)
      digest = hashlib.sha256()
      with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):  # pylint: disable=cell-var-from-loop
          digest.update(chunk)
      sums[os.path.relpath(path, item_dir)] = digest.hexdigest()
  return sums


def write_checksums(step_dir: str) -> None:
  """Records the checksums of `step_dir`'s array files in `step_dir/checksums.json`."""
  sums = file_checksums(os.path.join(step_dir, ITEM_DIR))
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  with open(path + '.tmp', 'w') as f:
    json.dump({'algorithm': 'sha256', 'files': sums}, f, indent=1, sort_keys=True)
  os.replace(path + '.tmp', path)


def checksums_digest(step_dir: str) -> Optional[str]:
  """The SHA-256 of the step's checksums.json, which fingerprints its weights (one step number
  of a run trained again holds others); None for a step without one."""
  try:
    with open(os.path.join(step_dir, CHECKSUMS_FILE), 'rb') as f:
      return hashlib.sha256(f.read()).hexdigest()
  except FileNotFoundError:
    return None


def metadata_problem(step_dir: str) -> Optional[str]:
  """'<file> is unreadable (...)' when the step's metadata file exists but is not JSON."""
  metadata = os.path.join(step_dir, STEP_METADATA_FILE)
  if os.path.exists(metadata):
    try:
      with open(metadata) as f:
        json.load(f)
    except (OSError, ValueError) as e:
      return f'{metadata} is unreadable ({e})'
  return None


def verify_step_dir(step_dir: str) -> Tuple[bool, str]:
  """(intact, problem) of a committed step directory.

  `problem` names the first file that is missing, unexpected or differs from its recorded
  checksum, or a step metadata file (config, classes) that is not JSON. A step written before
  checksums existed is (True, 'unverified: ...').
  """
  if not os.path.isdir(step_dir):  # e.g. a step whose asynchronous save has not committed
    return False, f'{step_dir} is missing'
  problem = metadata_problem(step_dir)
  if problem:
    return False, problem
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  if not os.path.exists(path):
    return True, f'unverified: {CHECKSUMS_FILE} is missing (written by an older version)'
  try:
    with open(path) as f:
      recorded = json.load(f)['files']
  except (OSError, ValueError, KeyError) as e:
    return False, f'{path} is unreadable ({e})'
  actual = file_checksums(os.path.join(step_dir, ITEM_DIR))
  for name in sorted(recorded):
    if name not in actual:
      return False, f'{os.path.join(step_dir, ITEM_DIR, name)} is missing'
    if actual[name] != recorded[name]:
      return False, f'{os.path.join(step_dir, ITEM_DIR, name)} does not match its checksum'
  extra = sorted(set(actual) - set(recorded))
  if extra:
    return False, f'{os.path.join(step_dir, ITEM_DIR, extra[0])} was not part of the checkpoint'
  return True, ''


@jax.jit
def _finite_by_collection(state) -> Dict[str, jnp.ndarray]:
  """Per top-level field of the state, whether every float in it is finite."""
  def finite(tree):
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)
  fields = state if isinstance(state, dict) else {
      name: getattr(state, name) for name in ('params', 'batch_stats', 'opt_state')}
  return {name: finite(value) for name, value in fields.items()}


def non_finite_parts(state: Any) -> List[str]:
  """Names of the parts of a train state (params, batch_stats, opt_state) holding NaN or Inf."""
  flags = jax.device_get(_finite_by_collection(state))
  return sorted(name for name, ok in flags.items() if not bool(ok))


_QUOTED_PATH = re.compile(r'"(/[^"]+)"')
# How a best-step warning names the records' digest of the evaluated split's video names.
_VIDEO_NAMES = 'video names digest'
# ... and each of its conversion settings (the same videos converted again keep their digest).
_CONVERTED_WITH = 'converted with'
# Conversion settings that leave every video's frames as they were (the order of the videos in
# the shards): steps evaluated before and after such a change compare.
_SCORE_NEUTRAL_SETTINGS = ('shuffle_seed',)


_said: Set[str] = set()


def _say_once(message: str, *args: Any) -> None:
  """A warning about what 'best' chooses, said once per process: a command selects a checkpoint
  more than once (eval reads its classes, then its weights; export three times)."""
  text = message % args
  if text not in _said:
    _said.add(text)
    logging.warning('%s', text)


def _chain(error: BaseException, past_suppressed: bool = True) -> Iterator[BaseException]:
  """`error` and the errors it was raised from or while handling (`raise ... from None` ends
  the chain unless `past_suppressed`)."""
  seen, cause = set(), error
  while cause is not None and id(cause) not in seen:
    seen.add(id(cause))
    yield cause
    suppressed = cause.__suppress_context__ and not past_suppressed
    cause = cause.__cause__ or (None if suppressed else cause.__context__)


def _root_cause(error: BaseException) -> Tuple[str, Optional[str]]:
  """The innermost OS-level reason of a (chained) exception and the path it names, if any,
  e.g. ('No space left on device', PATH), also when it arrives as the text of a TensorStore
  error. A failed `write()` carries no path: then the path is None."""
  found = None
  for cause in _chain(error):
    if isinstance(cause, OSError) and cause.strerror:
      found = cause
  if found is not None:
    return found.strerror, found.filename
  text = str(error)
  code = data_errors.OS_ERROR_CODE.search(text)
  if code:
    paths = _QUOTED_PATH.findall(text)
    return os.strerror(int(code.group(1))), paths[-1] if paths else None
  lines = text.strip().splitlines()
  return f'{type(error).__name__}: {lines[-1] if lines else ""}', None


def _flat_shapes(tree: Any) -> Dict[str, Tuple[int, ...]]:
  """'a/b/c' -> shape for every array-like leaf of a nested dict."""
  out = {}
  if isinstance(tree, dict):
    for key, value in tree.items():
      for path, shape in _flat_shapes(value).items():
        out[f'{key}/{path}' if path else str(key)] = shape
  elif hasattr(tree, 'shape'):
    out[''] = tuple(tree.shape)
  return out


def config_differences(stored_json: str, config: Any, limit: int = 12,
                       relevant: Callable[[str], bool] = lambda line: True) -> List[str]:
  """'field: stored X, given Y' lines for the `relevant` config fields that differ: the model's
  fields and dtype first (what decides whether the arrays fit), then the rest by name."""
  import flax  # pylint: disable=g-import-not-at-top
  try:
    stored = flax.traverse_util.flatten_dict(json.loads(stored_json), sep='.')
  except (TypeError, ValueError):
    return []
  given = flax.traverse_util.flatten_dict(json.loads(config.to_json()), sep='.')
  lines = []
  for key in sorted(set(stored) | set(given),
                    key=lambda key: (not key.startswith(('model.', 'dtype')), key)):
    before, after = stored.get(key, '<absent>'), given.get(key, '<absent>')
    if before != after:
      lines.append(f'{key}: stored {before!r}, given {after!r}')
  lines = [line for line in lines if relevant(line)]
  return lines[:limit] + ([f'... and {len(lines) - limit} more'] if len(lines) > limit else [])


# ----------------------------------------------------------------------------------- the store
class _CheckpointManager(ocp.CheckpointManager):
  """orbax's manager, kept from asking JAX's preemption service whether to save: that service
  counts the questions of every caller as one clock, the train loop's (train.PreemptionWatcher),
  and orbax's, with step numbers (some from its background finalisation), would move it: where
  every process's last question was orbax's, a SIGTERM would stop the group at a point already
  passed, that is never. The loop asks, and then saves with `force`."""

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


class CheckpointStore:
  """The checkpoints of one workdir: last `keep_last` plus the best by `best_metric`.

  Writing stores use orbax's asynchronous checkpointer (waiting after each save when
  `async_save` is off), so the checksums are always recorded before a step is committed.
  """

  def __init__(self, workdir: str, ckpt_config: Any, *, read_only: bool = False):
    self.workdir = os.path.abspath(workdir)
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    self._async = bool(ckpt_config.async_save)
    self._pending_step: Optional[int] = None
    self._save_failed = False  # a failed save has been raised as a CheckpointSaveError
    metric, mode = ckpt_config.best_metric, ckpt_config.best_mode
    self._metric = metric
    if metric not in BEST_METRICS:
      raise errors.ConfigError(f'config.checkpoint.best_metric must be one of {BEST_METRICS} (what '
                               f'the evaluations during training record), got {metric!r}.')
    if mode != 'max':
      raise errors.ConfigError(f"config.checkpoint.best_mode must be 'max' (the best metric is an "
                               f'accuracy: {mode!r} would keep the worst step), got {mode!r}.')
    if ckpt_config.keep_last < 1 and not read_only:
      raise errors.ConfigError(f'config.checkpoint.keep_last must be at least 1, got '
                               f'{ckpt_config.keep_last}: a run resumes from its newest '
                               'checkpoint, which would be deleted.')
    if read_only and not os.path.isdir(self.directory):
      raise NoCheckpointError(f'No checkpoint in {self.directory}: train first (or pass the path '
                              'of a checkpoint step directory).')
    policies = [checkpoint_managers.LatestN(n=ckpt_config.keep_last)]
    if ckpt_config.keep_best:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[metric], reverse=(mode == 'min'), n=1,
          keep_checkpoints_without_metrics=False))
    if not read_only:
      self._remove_unfinished_saves()
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=lambda metrics: metrics[metric], best_mode=mode, read_only=read_only,
        create=not read_only, enable_async_checkpointing=not read_only,
        async_options=None if read_only else ocp.AsyncOptions(
            post_finalization_callback=self._record_checksums))
    _drop_reports_of_abandoned_orbax_work()
    self.manager = self._open_manager(options)

  def _open_manager(self, options: ocp.CheckpointManagerOptions) -> _CheckpointManager:
    """orbax's manager of the directory; opened again where a step it listed was gone when it
    looked at it (a run training in the workdir drops its older steps as it saves new ones),
    which ended a reader in orbax's FileNotFoundError traceback."""
    attempt = 1
    while True:
      try:
        return _CheckpointManager(self.directory, options=options)
      except FileNotFoundError as e:
        inside = os.path.relpath(str(e.filename or self.directory), self.directory)
        step_dir = os.path.join(self.directory, inside.split(os.sep)[0])
        if (attempt == SELECTION_ATTEMPTS or inside == '.' or inside.startswith('..')
            or not _removed_meanwhile(step_dir)):
          raise
        logging.info('Checkpoint step folder %s was removed as the steps were listed: listing '
                     'them again.', step_dir)
      attempt += 1

  def _remove_unfinished_saves(self) -> None:
    """Removes, and names, the folders of saves that never finished (a full disk, a kill): they
    held their disk space for good. Done here rather than by orbax's cleanup_tmp_directories,
    which runs in the background: the line says what is gone by the time it is read."""
    if jax.process_index() != 0 or not os.path.isdir(self.directory):
      return
    for name in sorted(os.listdir(self.directory)):
      path = os.path.join(self.directory, name)
      if (name.endswith(TMP_SUFFIX) and name[:-len(TMP_SUFFIX)].isdigit()
          and os.path.isdir(path)):
        shutil.rmtree(path)
        logging.info('Removed the folder of an unfinished save of step %s in %s (a save that '
                     'failed or was cut short).', name[:-len(TMP_SUFFIX)], self.directory)

  # -- writing -------------------------------------------------------------------------------
  def _record_checksums(self) -> None:
    """Orbax's post-finalisation callback: the step's files are final, not yet committed."""
    if jax.process_index() != 0 or self._pending_step is None:
      return
    write_checksums(os.path.join(self.directory, f'{self._pending_step}{TMP_SUFFIX}'))

  def save(self, step: int, state: Any, *, metrics: Optional[Dict[str, float]] = None,
           config: Any = None, classes: Optional[Sequence[str]] = None,
           total_steps: Optional[int] = None, decoding: Optional[Dict[str, Any]] = None,
           records: Optional[Dict[str, Any]] = None,
           environment: Optional[Dict[str, Any]] = None,
           evaluation: Optional[Dict[str, Any]] = None) -> None:
    """Saves `state` at `step` with its validation `metrics`, the config, the class names, the
    run's length in steps (whether the step finished its run), how the videos of its eval
    records were decoded (data/pipeline.split_decoding, for predict to decode alike) and which
    conversion of its train and eval splits it saw (data/pipeline.records_identity), and how
    the run read its train stream and with which libraries (train._run_environment); with
    `metrics`, how the evaluation that scored them was made (`evaluation`: its split, views and
    labelled videos), which 'best' compares across steps.

    Raises NonFiniteStateError (nothing written) when the state holds NaN or Inf, and
    CheckpointSaveError when writing fails.
    """
    bad = non_finite_parts(state)
    if bad:
      intact = self.newest_intact_step()  # the latest step may be corrupt, or its save failed
      raise NonFiniteStateError(
          f'Not saving step {step}: its {" and ".join(bad)} hold NaN or Inf values. '
          + (f'The last good checkpoint is step {intact} in {self.directory}; '
             if intact is not None else 'No intact checkpoint was saved; ')
          + 'lower the learning rate or check the input data.')
    self.check_for_errors()
    # Orbax finishes the previous save before starting this one anyway; waiting here first keeps
    # `_pending_step` naming the step whose commit callback runs next, and lets `_best_seen`
    # read the previous step's metadata.
    self.wait()
    metadata = {'step': int(step), 'metrics': dict(metrics or {})}
    best_seen = self._best_seen(step, metrics)
    if best_seen:
      metadata['best_seen'] = best_seen
    if config is not None:
      metadata['config'] = config.to_json()
    if classes is not None:
      metadata['classes'] = list(classes)
    if total_steps is not None:
      metadata['total_steps'] = int(total_steps)
    if decoding:
      metadata['decoding'] = dict(decoding)
    if records:
      metadata['records'] = dict(records)
    if environment:
      metadata['environment'] = dict(environment)
    if evaluation:
      metadata['evaluation'] = dict(evaluation)
    self._pending_step = int(step)
    try:
      self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True,
                        custom_metadata=metadata)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    if not self._async:
      self.wait()

  def _best_seen(self, step: int, metrics: Optional[Dict[str, float]]) -> Dict[str, Any]:
    """{'step', best_metric} of the best evaluation of the run up to `step` (a tie goes to the
    newest, as the kept best), carried from the newest step's metadata: 'best' can then say
    when that step is no longer kept."""
    latest = self.manager.latest_step()
    seen = self.metadata(latest).get('best_seen', {}) if latest is not None else {}
    value = (metrics or {}).get(self._metric)
    if value is not None and (not seen or value >= seen[self._metric]):
      return {'step': int(step), self._metric: float(value)}
    return seen

  def _save_error(self, step: Optional[int], error: BaseException) -> CheckpointSaveError:
    """The one-line error for a failed save: OS reason, where (the step's directory being
    written when the OS error names no file), and the newest step a resume can use."""
    step = step if step is not None else self._pending_step
    self._save_failed = True
    # The step's other writes are left to orbax as coroutines it never awaits; Python warns of
    # each when it collects them, at exit after the one error line (seen once in a CI run).
    warnings.filterwarnings('ignore', message=r"coroutine '.*' was never awaited",
                            category=RuntimeWarning)
    reason, path = _root_cause(error)
    if path is None and step is not None:
      path = os.path.join(self.directory, f'{step}{TMP_SUFFIX}')
    intact = self.newest_intact_step()
    return CheckpointSaveError(
        f'Saving checkpoint step {step} failed: {reason}' + (f' at {path}' if path else '')
        + '. Newest intact checkpoint: '
        + (f'step {intact} in {self.directory}.' if intact is not None else 'none.'))

  def check_for_errors(self) -> None:
    """Raises CheckpointSaveError if an asynchronous save has failed since the last call.

    Orbax's own check raises nothing for a failed background save: orbax logs the error as the
    save finishes and forgets it there, keeping it for whoever waits on the save. So a save no
    longer in progress is waited for (at once) too; before, a failed save went unsaid until
    the next save or the end of the run."""
    try:
      self.manager.check_for_errors()
      if not self.manager.is_saving_in_progress():
        self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(None, e) from e

  def wait(self) -> None:
    """Blocks until the pending save is committed (raising CheckpointSaveError if it failed)."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(None, e) from e
    self.check_for_errors()

  def close(self) -> None:
    """Finishes the pending save and closes orbax's threads. A failed save is raised as a
    CheckpointSaveError once: orbax raises a failed background write again to each thread
    that waits for it, and closing after the failure was said (a run's `finally`) would replace
    its one line with that traceback."""
    try:
      self.manager.close()
    except Exception as e:  # pylint: disable=broad-except
      if self.read_only:  # it saves nothing: not a save failure
        raise
      # Orbax stopped closing at the re-raised error; the second call closes the rest.
      self.manager.close()
      if not self._save_failed:
        raise self._save_error(None, e) from e

  # -- reading -------------------------------------------------------------------------------
  def steps(self) -> List[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def item_dir(self, step: int) -> str:
    return os.path.join(self.step_dir(step), ITEM_DIR)

  def verify(self, step: int) -> Tuple[bool, str]:
    return verify_step_dir(self.step_dir(step))

  def newest_intact_step(self) -> Optional[int]:
    for step in reversed(self.steps()):
      if self.verify(step)[0]:
        return step
    return None

  def metadata(self, step: int) -> Dict[str, Any]:
    """The custom metadata (step, metrics, config json, classes) saved with checkpoint `step`."""
    return read_step_metadata(self.step_dir(step))

  def selection(self, which: str) -> Tuple[int, str]:
    """(step, description) of 'best' or 'latest', e.g. (600, 'best (step 600)'); 'best' of a
    workdir where no step was evaluated falls back to the latest, and says so."""
    step = self.select_step(which)
    chosen = ('best: none evaluated, so the latest' if which == 'best'
              and self.manager.best_step() is None else which)
    return step, f'{chosen} (step {step})'

  def select_step(self, which: str) -> int:
    """Resolves 'best' or 'latest' to a step, failing clearly when there is none."""
    if which not in CHOICES:
      raise errors.ConfigError(f"config.eval.checkpoint must be 'best', 'latest' or a checkpoint "
                               f'path, got {which!r}.')
    steps = self.steps()
    if not steps:
      raise NoCheckpointError(f'No checkpoint in {self.directory}: train first.')
    if which == 'best':
      best = self.manager.best_step()
      self._say_a_better_step_is_gone(best, steps)
      self._say_evaluations_differ(steps)
      return self.manager.latest_step() if best is None else best
    return self.manager.latest_step()

  def _say_evaluations_differ(self, steps: List[int]) -> None:
    """A warning when the kept steps that 'best' chooses among were evaluated differently
    (another split, views, labelled videos, other videos by the records' digest of the split's
    video names, other conversion settings of the split, or other clip settings in the steps'
    configs (_EVALUATION_FIELDS): a resume with another eval config or on records split or
    converted anew): their scores do not compare, and the highest may be the easier
    evaluation's. What a step's metadata does not know (steps saved before evaluations,
    digests or settings were recorded) is not compared; a step saved before evaluations were
    recorded is still compared by its stored config's clip settings."""
    evaluations: Dict[int, Dict[str, Any]] = {}
    for step in steps:
      metadata = self.metadata(step)
      if metadata.get('metrics'):
        evaluation = dict(metadata.get('evaluation') or {})
        records = (metadata.get('records') or {}).get(evaluation.get('split')) or {}
        evaluation[_VIDEO_NAMES] = records.get('names_digest')
        for name, value in (records.get('settings') or {}).items():
          if name not in _SCORE_NEUTRAL_SETTINGS:  # None is a setting's value here
            evaluation[f'{_CONVERTED_WITH} {name}'] = repr(value)
        evaluation.update(_evaluation_settings(stored_config_dict(metadata.get('config'))))
        evaluations[step] = evaluation
    known = lambda name: [e[name] for e in evaluations.values()  # noqa: E731
                          if e.get(name) is not None]
    differing = sorted(name for name in {n for e in evaluations.values() for n in e}
                       if len({json.dumps(v, sort_keys=True) for v in known(name)}) > 1)
    ways: Dict[Tuple[Any, ...], List[int]] = {}
    for step, evaluation in evaluations.items():
      way = tuple(evaluation.get(name) for name in differing)
      if any(value is not None for value in way):
        ways.setdefault(way, []).append(step)
    if len(ways) < 2:
      return
    described = '; '.join(
        f"step(s) {', '.join(map(str, taken))}: "
        + ', '.join(f'{name} {value}' for name, value in zip(differing, way) if value is not None)
        for way, taken in ways.items())
    _say_once("'best' of %s compares %s scored by different evaluations, which do not "
              "compare (%s): pass a step's path to choose one.", self.directory, self._metric,
              described)

  def _say_a_better_step_is_gone(self, best: Optional[int], steps: List[int]) -> None:
    """A warning when the run's best evaluation (`best_seen`) scored above the best kept step
    (or no kept step was evaluated) and is gone: 'best' then is not what the run scored best."""
    seen = self.metadata(steps[-1]).get('best_seen', {})
    if not seen or seen['step'] in steps:
      return
    if best is None:
      taken = f'the newest step, {steps[-1]}, as no step kept was evaluated'
    else:
      score = self.metadata(best)['metrics'][self._metric]
      if score >= seen[self._metric]:
        return
      taken = f'step {best} ({self._metric} {score:.4g}), the best of the steps kept'
    _say_once("'best' of %s is %s; the best evaluation of the run, step %d (%s %.4g), was "
              'deleted (config.checkpoint.keep_best was off).', self.directory, taken,
              seen['step'], self._metric, seen[self._metric])

  def restore(self, step: int, target: Any, config: Any = None) -> Any:
    """Restores verified step `step` into the structure (and shardings) of `target`.

    Raises CorruptCheckpointError when its files differ from their checksums,
    CheckpointMismatchError (with the differing parameters and config fields) when its arrays
    do not fit `target`, and RemovedCheckpointError where a run training in the workdir removed
    it while it was read.
    """
    return _restore_step(self.step_dir(step), target, config,
                         f'Checkpoint step {step} in {self.directory}')

  def other_intact_steps(self, step: int) -> str:
    """Which verified steps other than `step` there are, and how to evaluate one."""
    return intact_steps_beside(self.step_dir(step))

  def restore_for_resume(self, target: Any, config: Any = None,
                         accept: Optional[Callable[[int], None]] = None
                         ) -> Tuple[Any, Optional[int]]:
    """(state, step) of the newest intact checkpoint, or (None, None) when there is none.

    Corrupt steps are reported and moved to `<workdir>/checkpoints_corrupt/` (process 0), so
    the run continues from the newest intact one and saves that step number again later.
    `accept(step)` may refuse the restored step by raising, before a word is said about
    resuming it (e.g. the trainer's check that the records hold the classes it was trained on).
    """
    corrupt = []
    for step in reversed(self.steps()):
      intact, problem = self.verify(step)
      if not intact:
        logging.warning('Checkpoint step %d is corrupt (%s): skipping it.', step, problem)
        corrupt.append(step)
        continue
      if problem:
        logging.warning('Checkpoint step %d: %s; restoring it without verification.', step,
                        problem)
      stored_config = self.metadata(step).get('config')
      state, unreadable = None, ''
      try:
        state = _restore_item(self.item_dir(step), target,
                              f'checkpoint step {step} in {self.directory}', stored_config, config)
      except CorruptCheckpointError as e:
        unreadable = str(e)
      # Every process skips the step if any could not read it, so all resume from one step.
      if _on_any_process(bool(unreadable)):
        logging.warning('%s Skipping it.', unreadable or
                        f'Checkpoint step {step} could not be read by another process.')
        corrupt.append(step)
        continue
      self._quarantine(corrupt)
      if accept is not None:
        accept(step)
      # A run by epochs given its own length in steps (config.json records it so) is that run.
      own_length = f"num_train_steps: stored -1, given {self.metadata(step).get('total_steps')}"
      _warn_of_differences(f'Resuming checkpoint step {step} with a config that differs from the '
                           'one it was trained with (schedule and data follow the given one; '
                           "TensorBoard's HParams keep the values the run started with)",
                           stored_config, config,
                           relevant=lambda line: changes_the_run(line) and line != own_length)
      if stored_config and config is not None and config_differences(
          stored_config, config, relevant=lambda line: line.startswith(_INIT_WEIGHT_FIELDS)):
        logging.warning('config.init_from only starts a run: the resumed weights are checkpoint '
                        'step %d\'s, not those of the given init_from.', step)
      if corrupt:
        logging.warning('Resuming from step %d, the newest intact checkpoint (corrupt steps %s '
                        'moved to %s).', step, corrupt, os.path.join(self.workdir,
                                                                      QUARANTINE_DIR))
      self._remove_steps_no_longer_kept()
      return state, step
    self._quarantine(corrupt)
    if corrupt:
      logging.warning('No intact checkpoint is left in %s: training starts again from step 0 '
                      '(corrupt steps %s moved to %s).', self.directory, corrupt,
                      os.path.join(self.workdir, QUARANTINE_DIR))
    return None, None

  def _remove_steps_no_longer_kept(self) -> None:
    """Deletes the steps that keep_last and keep_best no longer keep. orbax deletes them after
    each save: a run killed between committing a step and deleting them left them (one perhaps
    half deleted), and a rerun with nothing left to train, which saves nothing, kept them for
    good. Called once the resumed step is restored, so none older is needed to fall back on."""
    # Private: orbax's preservation policies over its own list of steps, as a save applies them.
    stale = self.manager._get_old_steps_to_remove()  # pylint: disable=protected-access
    for step in stale:
      self.manager.delete(step)
    if stale:
      logging.info('Removed checkpoint step(s) %s from %s, which config.checkpoint no longer '
                   'keeps (a run stopped before it deleted them).', stale, self.directory)

  def _quarantine(self, steps: Sequence[int]) -> None:
    if not steps:
      return
    if jax.process_index() == 0:
      target_root = os.path.join(self.workdir, QUARANTINE_DIR)
      os.makedirs(target_root, exist_ok=True)
      for step in steps:
        shutil.move(self.step_dir(step), os.path.join(target_root, f'{step}-{int(time.time())}'))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('corrupt checkpoints moved')
    self.manager.reload()


def _on_any_process(flag: bool) -> bool:
  """Whether `flag` holds on any process (every process must call this, in the same order)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def without_optimizer_state(state: Any) -> Any:
  """The restore target `state` (a TrainState's abstract value) whose optimizer state is only
  checked, not read: its leaves become orbax placeholders. The stored optimizer state must still
  have the structure the config builds (a checkpoint of another optimizer or S2DNet stage is
  refused as before), but its arrays, as large as the parameters, never reach memory: an
  evaluation's peak is the variables'."""
  return state.replace(opt_state=jax.tree.map(lambda _: ocp.PLACEHOLDER, state.opt_state))


def _has_placeholders(target: Any) -> bool:
  return any(leaf is ocp.PLACEHOLDER for leaf in jax.tree.leaves(target))


def _read_item(item_dir: str, target: Any) -> Any:
  """orbax's restore of the item `item_dir` into `target`, skipping its placeholder leaves
  (which only the PyTree handler takes; the Standard one refuses them). Orbax's read buffers,
  once freed, would stay resident under the compilation and steps that follow (README, step
  benchmark): they are read with glibc's initial thresholds where the config's are in effect
  (host_malloc.frees_handed_back), and the heap is trimmed after every restore."""
  with host_malloc.frees_handed_back():
    if not _has_placeholders(target):
      with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(item_dir, target)
    else:
      with ocp.PyTreeCheckpointer() as checkpointer:
        state = checkpointer.restore(item_dir, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
  host_malloc.trim()
  return state


# Config fields that change what a restored model computes on one view: the model, its dtype
# and how the clip it sees is sampled, sized and normalised. Training-only augmentation, input
# plumbing (prefetching, sharding) and the number of eval views are left out.
_VIEW_FIELDS = ('model.', 'dtype', 'data.temporal_sampling', 'data.num_frames',
                'data.frame_stride', 'data.target_fps', 'data.normalization',
                'data.eval_short_side', 'data.eval_crop_size', 'data.eval_crop_rounding',
                'data.resize_filter')


# Config fields that only set how this process compiles (XLA's CPU flags) and caches what it
# compiled: a resume with other values trains the same run, so they are not named.
_PROCESS_FIELDS = ('xla_cpu_', 'compilation_cache_dir')
# The config fields that change how an evaluation scores a video: those of a view (the model
# cannot change across a resume) and how the views' scores combine.
_EVALUATION_FIELDS = tuple(f for f in _VIEW_FIELDS if not f.endswith('.')) + ('eval.view_scores',)


def _evaluation_settings(stored: Dict[str, Any]) -> Dict[str, str]:
  """{'config.FIELD': repr(value)} of the _EVALUATION_FIELDS a step's stored config gives, for
  'best' to compare across steps; a sampler's own field (target_fps, frame_stride) only under a
  sampler that reads it (data.ops.SAMPLER_FIELDS)."""
  data = stored.get('data') if isinstance(stored.get('data'), dict) else {}
  sampler_reads = ops.SAMPLER_FIELDS.get(data.get('temporal_sampling'))
  owned = {field for fields in ops.SAMPLER_FIELDS.values() for field in fields}
  settings = {}
  for field in _EVALUATION_FIELDS:
    name = field.split('.')[-1]
    if field.startswith('data.') and name in owned and sampler_reads is not None \
        and name not in sampler_reads:
      continue
    value = functools.reduce(lambda d, key: d.get(key) if isinstance(d, dict) else None,
                             field.split('.'), stored)
    if value is not None:
      settings[f'config.{field}'] = repr(value)
  return settings


# The config.init_from fields that decide which weights a run starts from (the others describe).
_INIT_WEIGHT_FIELDS = ('init_from.checkpoint', 'init_from.which', 'init_from.exclude',
                       'init_from.strict')

_INPUT_DIFFERENCES = ' was trained with other model or clip settings; using the given ones'


def changes_a_view(line: str) -> bool:
  """Whether a `config_differences` line is a field that changes a model's output on a view."""
  return line.startswith(_VIEW_FIELDS)


def changes_the_run(line: str) -> bool:
  """Whether a `config_differences` line is a field that changes what a run computes."""
  return not line.startswith(_PROCESS_FIELDS)


def stored_config_dict(stored_config: Optional[str]) -> Dict[str, Any]:
  """The config a checkpoint recorded (its metadata's json), as a dict; {} where there is none
  or it cannot be read (a step saved by other code)."""
  try:
    stored = json.loads(stored_config or '{}')
  except ValueError:
    return {}
  return stored if isinstance(stored, dict) else {}


def with_stored_init_from(config: Any, stored_config: Optional[str]) -> Any:
  """A copy of `config` whose `init_from` is the stored config's: what a resumed run records in
  config.json, since its weights descend from the init_from it started with, not the given one."""
  stored = stored_config_dict(stored_config).get('init_from')
  if not isinstance(stored, dict) or 'init_from' not in config:
    return config
  as_run = config.copy_and_resolve_references()
  with as_run.unlocked():
    for field, value in stored.items():
      if field in as_run.init_from:
        as_run.init_from[field] = value
  return as_run


@functools.cache
def _base_defaults() -> Dict[Tuple[str, ...], Any]:
  """configs/base.py's settings and their defaults, by path: what a stored config that lacks
  one (saved before it existed) was made with."""
  import flax  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top
  return flax.traverse_util.flatten_dict(base.get_base_config().to_dict())


@functools.cache
def _defaults_predated() -> frozenset:
  """The `config_differences` lines of a setting a stored config lacks given its default
  (_base_defaults): the checkpoint was made as that default makes one."""
  return frozenset(f"{'.'.join(path)}: stored '<absent>', given {json.loads(json.dumps(value))!r}"
                   for path, value in _base_defaults().items())


def with_later_settings(config: Any, what: str) -> Any:
  """`config` (stored with `what`: 'Checkpoint DIR', 'The stablehlo export DIR') with the
  configs/base.py settings it lacks set to their defaults, said in one line: the Engine and the
  input pipeline read every setting, and those `what` predates did not exist when it was saved.
  A stored value where base.py has a section, or a section where it has a value, is kept as it
  is."""
  import flax  # pylint: disable=g-import-not-at-top
  traverse_util = flax.traverse_util
  stored = traverse_util.flatten_dict(config.to_dict(), keep_empty_nodes=True)
  empty = {path for path, value in stored.items() if value is traverse_util.empty_node}

  def lacks(path):
    return not (any(key[:len(path)] == path for key in stored)  # the value, or a section
                or any(path[:n] in stored and path[:n] not in empty
                       for n in range(1, len(path))))  # a value where base.py has a section

  absent = {path: value for path, value in _base_defaults().items() if lacks(path)}
  if not absent:
    return config
  logging.warning('%s predates %s: their defaults are used (%s).', what,
                  ', '.join(f'config.{".".join(path)}' for path in absent),
                  ', '.join(f'{".".join(path)}={value!r}' for path, value in absent.items()))
  filled = {key: value for key, value in stored.items()
            if not (key in empty and any(path[:len(key)] == key for path in absent))}
  return ml_collections.ConfigDict(traverse_util.unflatten_dict({**filled, **absent}))


def _warn_of_differences(message: str, stored_config: Optional[str], config: Any,
                         relevant: Callable[[str], bool] = lambda line: True) -> None:
  """One warning, `message: field: stored X, given Y; ...`, when a checkpoint is resumed or used
  (eval, predict, export) with a config whose `relevant` fields differ from its own: allowed
  (a longer run, longer clips), never silent. A setting the checkpoint predates, given its
  default, is no difference."""
  if not stored_config or config is None:
    return
  differences = config_differences(
      stored_config, config, relevant=lambda line: relevant(line) and
      line not in _defaults_predated())
  if differences:
    logging.warning('%s: %s.', message, '; '.join(differences))


def _restore_item(item_dir: str, target: Any, what: str, stored_config: Optional[str],
                  config: Any) -> Any:
  """The orbax item `item_dir` read into `target`, its failures named in one line:
  arrays of other shapes, or orbax's tree-structure error (same parameters, another optimizer
  state: another optimizer, freezing or S2DNet stage), become the mismatch error; files that
  cannot be read or decoded (damage no checksum caught: a step written before checksums) a
  CorruptCheckpointError. Anything else keeps its traceback."""
  try:
    stored_tree = item_tree(item_dir)
    mismatches = _shape_mismatches(stored_tree, target)
    if mismatches:
      raise _mismatch_error(what, mismatches, stored_config, config, item_dir)
    if not _skipped_parts_fit(stored_tree, target):
      raise _mismatch_error(what, [], stored_config, config, item_dir)
    return _read_item(item_dir, target)
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except (TensorStore raises plain Exceptions)
    if 'tree structures do not match' in str(e):
      raise _mismatch_error(what, [], stored_config, config, item_dir) from e
    damage = _damage(e, item_dir)
    if damage is None:
      raise
    raise CorruptCheckpointError(f'{what[0].upper()}{what[1:]} is corrupt: {damage}.') from e


def _drop_reports_of_abandoned_orbax_work() -> None:
  """Keeps the console to the one line that reports a failed save or restore.

  When one write or read of a step fails, orbax closes its private event loop while the step's
  other writes and reads are still in TensorStore's threads; each of them then prints a
  traceback, as an unraisable error ('Event loop is closed', or its own error with the whole
  TensorStore spec) or through asyncio's logger ('Task exception was never retrieved'): 326
  tracebacks (980 lines) and then 131 more (630 lines) for one full-disk save of the demo
  model, thousands of lines for a resume past a truncated step. The failure itself reaches the
  caller through orbax's API and is reported there, so these copies go to the debug log only;
  every other unraisable error or asyncio record is reported as before. Installed once per
  process.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'drops_abandoned_orbax_work', False):
    return

  def hook(unraisable):
    if _is_abandoned_orbax_work(unraisable.exc_value, unraisable.exc_traceback):
      logging.debug('Orbax work abandoned after a failure: %r', unraisable.exc_value)
    else:
      previous(unraisable)

  hook.drops_abandoned_orbax_work = True
  sys.unraisablehook = hook
  python_logging.getLogger('asyncio').addFilter(_keep_unless_abandoned_orbax_work)


def _keep_unless_abandoned_orbax_work(record: python_logging.LogRecord) -> bool:
  error = record.exc_info[1] if record.exc_info else None
  if error is None or not _is_abandoned_orbax_work(error, error.__traceback__):
    return True
  logging.debug('Orbax work abandoned after a failure: %r', error)
  return False


# TensorStore's status line for a file it could not read, write or open (missing, truncated,
# garbled, disk full, ...); in this process only orbax's checkpoints use TensorStore.
_TENSORSTORE_FILE_FAILURE = re.compile(r'^[A-Z_]+: Error (?:reading|writing|opening|decoding)', re.M)
# Those of them that say the files themselves are damaged; a denied permission, a full disk or a
# timeout says nothing about the checkpoint, so it keeps its traceback.
_TENSORSTORE_DAMAGE = re.compile(
    r'^(?:(?:OUT_OF_RANGE|DATA_LOSS|NOT_FOUND): Error (?:reading|opening|decoding).*|'
    r'FAILED_PRECONDITION: Error reading .*(?:decompress|[Cc]orrupt).*)$', re.M)
_ORBAX_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__))) + os.sep


def _is_abandoned_orbax_work(error: BaseException, trace: Any) -> bool:
  if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
    return True
  if _TENSORSTORE_FILE_FAILURE.search(str(error)):
    return True
  return bool(trace) and any(frame.filename.startswith(_ORBAX_PACKAGE)
                             for frame in traceback.extract_tb(trace))


def _damage(error: BaseException, item_dir: str) -> Optional[str]:
  """What in a restore error (or the errors it was raised from) says the files of `item_dir`
  are damaged: TensorStore's missing, truncated or undecodable file, or orbax metadata that is
  not JSON; None for any other error."""
  # orbax re-raises TensorStore's error while handling it (e.g. 'Encountered error while
  # reading array index'), so the damage may only be in the context.
  for cause in _chain(error, past_suppressed=False):
    if isinstance(cause, (json.JSONDecodeError, UnicodeDecodeError)):
      return f'orbax metadata in {item_dir} is not JSON ({cause})'
    found = _TENSORSTORE_DAMAGE.search(str(cause))
    if found:
      return found.group(0).rstrip('.')
  return None


def item_tree(item_dir: str) -> Any:
  """The tree of array metadata (shapes, dtypes) of an orbax item directory: no array read."""
  metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(item_dir))
  return getattr(metadata, 'tree', metadata)


def _shape_mismatches(stored_tree: Any, target: Any) -> List[str]:
  """'collection/path: stored S, model M' for params and BN statistics that do not fit."""
  lines = []
  for collection in ('params', 'batch_stats'):
    stored = _flat_shapes(_field(stored_tree, collection) or {})
    wanted = _flat_shapes(jax.tree.map(lambda x: x, _field(target, collection) or {}))
    for path in sorted(set(stored) | set(wanted)):
      if stored.get(path) != wanted.get(path):
        lines.append(f'{collection}/{path}: stored '
                     f'{stored.get(path, "absent")}, model {wanted.get(path, "absent")}')
  return lines


def _skipped_parts_fit(stored_tree: Any, target: Any) -> bool:
  """Whether the stored tree's leaves have the paths of the target's when the target skips some
  (placeholders): orbax takes a placeholder for a path the checkpoint lacks, so a checkpoint of
  another optimizer would pass. (Empty nodes, such as optax's EmptyState, orbax checks itself.)"""
  def paths(tree):
    # keep_empty_nodes only lets serialize_tree take a leading EmptyState; both sides drop them.
    return set(ocp.tree.to_flat_dict(ocp.tree.serialize_tree(tree, keep_empty_nodes=True)))
  return not _has_placeholders(target) or paths(target) == paths(stored_tree)


def _field(tree: Any, name: str) -> Any:
  if isinstance(tree, dict):
    return tree.get(name)
  return getattr(tree, name, None)


# Config fields that decide the structure of the optimizer state (salinet_jax/optim.py), most
# telling first; S2DNet's stages freeze other parts.
_OPTIMIZER_STATE_FIELDS = ('optimizer.name', 'model.stage', 'optimizer.frozen',
                           'optimizer.grad_clip_norm', 'optimizer.lr_multipliers',
                           'optimizer.weight_decay', 'optimizer.momentum')


def _mismatch_error(what: str, mismatches: List[str], stored_config: Optional[str],
                    config: Any, item_dir: str) -> CheckpointMismatchError:
  """The error for a checkpoint that does not fit: the parameters whose shapes differ (none:
  the parameters fit but the optimizer state has another structure), the config fields, and
  the --config that reads back the one it was trained with."""
  shown = mismatches[:8] + ([f'... and {len(mismatches) - 8} more'] if len(mismatches) > 8 else [])
  differences = config_differences(stored_config, config) if stored_config and config else []
  # Those of them that build another optimizer state: named on the first line, where 'optimizer'
  # alone misleads an evaluation that never steps it.
  by_field = {line.split(':', 1)[0]: line for line in config_differences(
      stored_config, config, limit=len(_OPTIMIZER_STATE_FIELDS),
      relevant=lambda line: line.split(':', 1)[0] in _OPTIMIZER_STATE_FIELDS)} if differences else {}
  shaping = [by_field[field] for field in _OPTIMIZER_STATE_FIELDS if field in by_field][:3]
  message = (f'{what} does not fit the model of the given config: {len(mismatches)} '
             'parameter(s) differ:\n  ' + '\n  '.join(shown) if mismatches else
             f'{what} does not fit the optimizer of the given config: its optimizer state has '
             'another structure' + (f' ({"; ".join(shaping)}).' if shaping else '.'))
  if differences:
    message += ('\nThe config stored with the checkpoint differs from the given one:\n  '
                + '\n  '.join(differences))
  # Said for every command that restores one (bench has no --workdir: README review).
  trained_in = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(item_dir))))
  flag = shlex.quote(f'--config=configs/from_workdir.py:{trained_in}')  # pasted into a shell
  if not os.path.isfile(os.path.join(trained_in, workdir_lib.CONFIG_FILE)):
    flag = '--config=configs/from_workdir.py:DIR, DIR the workdir it was trained in'
  message += (f'\nUse the config the checkpoint was trained with ({flag}), or another '
              'checkpoint.')
  return CheckpointMismatchError(message)


def step_dir_of(path: str) -> str:
  """The step directory an explicit checkpoint path names (the step directory or its item
  directory). A workdir or a checkpoints folder is refused with the steps it holds: which of
  them is meant ('best', 'latest') is the config's choice, not a guess."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise NoCheckpointError(f'Checkpoint path {path} does not exist.')
  if os.path.isdir(os.path.join(path, ITEM_DIR)):
    return path
  if os.path.basename(path) == ITEM_DIR:
    return os.path.dirname(path)
  folder = checkpoint_dir(path) if os.path.isdir(checkpoint_dir(path)) else path
  steps = step_numbers(folder)
  example = f' such as {os.path.join(folder, str(steps[-1]))}' if steps else ''
  raise NoCheckpointError(
      f'Checkpoint path {path} is not a checkpoint step directory (it has no {ITEM_DIR}/ '
      f'folder): pass a step directory{example}, or best / latest to use the --workdir\'s '
      'checkpoints.')


def intact_steps_beside(step_dir: str) -> str:
  """Which verified steps other than `step_dir` its workdir's checkpoints folder holds, and how
  to evaluate one; '' for a step directory outside such a folder."""
  folder = os.path.dirname(os.path.abspath(step_dir))
  if os.path.basename(folder) != CHECKPOINT_DIR:
    return ''
  others = [os.path.join(folder, str(step)) for step in step_numbers(folder)]
  others = [other for other in others if other != os.path.abspath(step_dir)
            and verify_step_dir(other)[0]]
  if not others:
    return 'No intact step is left.'
  return (f'Intact steps: {[int(os.path.basename(other)) for other in others]}; pass one as a '
          f'path, e.g. --config.eval.checkpoint={others[-1]} (export: --checkpoint=...).')


def restore_from_path(path: str, target: Any, config: Any = None) -> Any:
  """Restores a train state from an explicit checkpoint step directory (verified)."""
  step_dir = step_dir_of(path)
  return _restore_step(step_dir, target, config, f'Checkpoint {step_dir}')


def _restore_step(step_dir: str, target: Any, config: Any, name: str) -> Any:
  """The verified step `step_dir` (`name` in messages) read into `target`: damage names the
  intact steps beside it, a step removed while it was read says so (`removal_told`)."""
  with removal_told(step_dir, name):
    intact, problem = verify_step_dir(step_dir)
    if not intact:
      raise CorruptCheckpointError(
          f'{name} is corrupt: {problem}. {intact_steps_beside(step_dir)}'.rstrip())
    if problem:
      logging.warning('%s: %s.', name, problem)
    stored_config = read_step_metadata(step_dir).get('config')
    _drop_reports_of_abandoned_orbax_work()
    try:
      state = _restore_item(os.path.join(step_dir, ITEM_DIR), target, name, stored_config, config)
    except CorruptCheckpointError as e:
      raise CorruptCheckpointError(f'{e} {intact_steps_beside(step_dir)}'.rstrip()) from e
  _warn_of_differences(f'{name}{_INPUT_DIFFERENCES}', stored_config, config, changes_a_view)
  return state


def unfinished_run(step_dir: str) -> Optional[Tuple[int, int]]:
  """(the step its run stopped at, the run's length in steps) when the run of checkpoint
  `step_dir` has not finished (its newest step is short of the length that step recorded:
  stopped and never resumed; or of the length in the workdir's config.json, which a relaunch
  that lengthened the run wrote before its first save), else None; None also for a step outside
  a run's checkpoints folder (a copied step: its run cannot be seen). The newest step says,
  since a resume may have changed the run's length after `step_dir` was saved."""
  folder = os.path.dirname(os.path.abspath(step_dir))  # a finished run has its last step there
  if os.path.basename(folder) != CHECKPOINT_DIR:
    return None
  steps = step_numbers(folder)
  if not steps:
    return None
  reached = steps[-1]
  metadata = read_step_metadata(os.path.join(folder, str(reached)))
  if not metadata:  # its newest step's metadata is unreadable: this step's length, then
    metadata = read_step_metadata(step_dir)
  total = metadata.get('total_steps')
  if total is None:  # saved before the run's length was recorded: its config's, if in steps
    total = stored_config_dict(metadata.get('config')).get('num_train_steps')
  relaunched = workdir_run_length(os.path.dirname(folder))
  if relaunched is not None and (not isinstance(total, int) or relaunched > total):
    total = relaunched
  if isinstance(total, int) and reached < total:
    return reached, total
  return None


def workdir_run_length(workdir: str) -> Optional[int]:
  """num_train_steps of the workdir's config.json (the run's length, as its last launch
  resolved it), or None where it is missing, unreadable or not a count of steps."""
  try:
    with open(os.path.join(workdir, workdir_lib.CONFIG_FILE)) as f:
      length = json.load(f).get('num_train_steps')
  except (OSError, ValueError, AttributeError):
    return None
  return length if isinstance(length, int) and length > 0 else None


def save_started_ns(step_dir: str) -> Optional[int]:
  """When the save of a step directory began (orbax's init timestamp, in ns), None if unknown."""
  try:
    with open(os.path.join(step_dir, STEP_METADATA_FILE)) as f:
      started = json.load(f).get('init_timestamp_nsecs')
  except (OSError, ValueError):
    return None
  return int(started) if isinstance(started, int) else None


def read_step_metadata(step_dir: str) -> Dict[str, Any]:
  """The custom metadata of a step directory, read without a manager ({} if unreadable)."""
  try:
    with open(os.path.join(step_dir, STEP_METADATA_FILE)) as f:
      return dict(json.load(f).get('custom_metadata') or {})
  except (OSError, ValueError):
    return {}
