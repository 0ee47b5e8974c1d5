"""The workdir of a run: one trainer at a time, its config and log written where a person looks.

* `WorkdirLock`: `<workdir>/trainer.lock` names the process that trains in the workdir (host, pid,
  start time). A second trainer refuses to start; a lock left by a process that is gone (same host,
  its pid no longer running that process) is taken over with a warning. Trainers starting together
  decide one at a time (an flock on `.trainer.lock.guard`). On several hosts only process 0
  takes it. A SIGTERM that ends the process before training takes it over (main.py's guard)
  gives it back.
  Evaluation and prediction only read the workdir and take no lock.
* `write_config`: the resolved config as `<workdir>/config.json`, named once in the log.
* `check_writable`: fails before any work when outputs cannot be written where asked.
* `set_aside_events_after`: at a resume, TensorBoard points of steps no checkpoint kept move to
  `<workdir>/discarded/`, so the plots show one value per step.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import time
import uuid
from typing import Any, Dict, Iterator, Optional

import jax
from absl import logging

from configs import from_workdir
from data import errors as data_errors
from salinet_jax import errors

LOCK_FILE = 'trainer.lock'
GUARD_FILE = '.trainer.lock.guard'  # flocked while a trainer takes the lock; empty, kept
CONFIG_FILE = from_workdir.CONFIG_FILE


class WorkdirBusyError(errors.UserError):
  """Another trainer holds the workdir."""


class NotWritableError(errors.UserError):
  """Outputs cannot be written where they were asked for."""


def _process_start_ticks(pid: int) -> Optional[int]:
  """The start time of `pid` in clock ticks since boot (Linux), None where unknown.

  Together with the pid it identifies a process: a pid reused by another process after a crash
  has another start time.
  """
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[19])
  except (OSError, IndexError, ValueError):
    return None


def _pid_running(pid: int, start_ticks: Optional[int]) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  if start_ticks is None:
    return True
  current = _process_start_ticks(pid)
  return current is None or current == start_ticks


# How long a lock file may stay empty while its creator fills it in (filesystems without hard
# links); an empty one older than that is stale.
_FILLING_S = 10.0
# How long a trainer waits for another one to finish deciding about the lock.
_DECIDING_S = 30.0


@contextlib.contextmanager
def _one_at_a_time(directory: str) -> Iterator[None]:
  """An exclusive flock on `<directory>/GUARD_FILE` while a trainer reads, takes over or
  creates its lock.

  Without it, three trainers meeting a stale lock could interleave so that one moved a fresh lock
  aside while a third created its own, and two trained. The kernel drops the flock when its
  process ends, so it never goes stale. The guard is a file of its own, opened for writing: a job
  script's `flock $WORKDIR` does not block it, and NFS grants it (as a POSIX lock). Where the
  filesystem has no locks at all, the decisions go unguarded.
  """
  try:
    fd = os.open(os.path.join(directory, GUARD_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  except OSError:
    yield
    return
  try:
    deadline = time.monotonic() + _DECIDING_S
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if time.monotonic() > deadline:
          raise WorkdirBusyError(f'Workdir {directory}: another trainer has been taking its lock '
                                 f'for {_DECIDING_S:g} s; is it stuck?') from None
        time.sleep(0.05)
      except OSError:
        break  # no flock on this filesystem
    yield
  finally:
    os.close(fd)  # drops the flock


class WorkdirLock:
  """Exclusive right to train in one workdir (process 0 of a run holds it)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._held = False

  def _holder(self) -> Dict[str, Any]:
    pid = os.getpid()
    return {'host': socket.gethostname(), 'pid': pid, 'start_ticks': _process_start_ticks(pid),
            'started': datetime.datetime.now().isoformat(timespec='seconds')}

  def acquire(self) -> 'WorkdirLock':
    if jax.process_index() != 0:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    # Before the lock is made: a SIGTERM just after it is in place gives it back too.
    data_errors.run_if_a_sigterm_ends(self._remove_if_ours)
    try:
      return self._take()
    except BaseException:
      data_errors.no_longer_if_a_sigterm_ends(self._remove_if_ours)
      raise

  def _take(self) -> 'WorkdirLock':
    with _one_at_a_time(os.path.dirname(self.path)):
      for _ in range(20):
        if self._create():
          self._held = True
          return self
        existing = self._read()
        if existing is None and self._age_s() < _FILLING_S:
          time.sleep(0.1)  # another trainer is filling it in (where locks cannot be linked)
          continue
        if existing is None or self._is_stale(existing):
          self._take_over(existing)
          continue
        advice = ('' if existing.get('host') == socket.gethostname() else
                  f' If it no longer runs (e.g. a job requeued on another machine), delete '
                  f'{self.path}.')
        raise WorkdirBusyError(
            f'Workdir {os.path.dirname(self.path)} is in use by another trainer '
            f'({_describe(existing)}): stop it first, or train in another --workdir.{advice}')
    raise WorkdirBusyError(f'Could not take the lock {self.path}: another trainer keeps taking '
                           'it.')

  def _create(self) -> bool:
    """Creates the lock file with this process as its holder in one step (False if it exists).

    The holder is written to a private file first and linked into place: a lock file created
    empty and filled afterwards looked unreadable, hence stale, to a second trainer started at
    the same moment, and both trained.
    """
    private = f'{self.path}.{os.getpid()}.{uuid.uuid4().hex}'
    with open(private, 'w') as f:
      json.dump(self._holder(), f)
    try:
      os.link(private, self.path)
      return True
    except FileExistsError:
      return False
    except OSError:
      if os.stat(private).st_nlink == 2:  # NFS can report a link it made as failed
        return True
      # A filesystem without hard links: create it exclusively, then fill it in (a trainer
      # finding it empty waits `_FILLING_S` before taking it for stale).
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'w') as f:
        json.dump(self._holder(), f)
      return True
    finally:
      os.remove(private)

  def _take_over(self, stale: Optional[Dict[str, Any]]) -> None:
    """Removes the stale lock `stale`, unless another trainer replaced it meanwhile: the lock is
    moved aside first and put back if it is no longer the one judged stale."""
    aside = f'{self.path}.stale.{os.getpid()}.{uuid.uuid4().hex}'
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return  # another trainer removed it first; try again
    moved = self._read(aside)
    if moved != stale:  # another trainer's fresh lock: put it back
      try:
        os.link(aside, self.path)
        os.remove(aside)
      except FileExistsError:
        os.remove(aside)
      except OSError:  # no hard links here
        if not os.path.exists(self.path):
          os.rename(aside, self.path)
        else:
          os.remove(aside)
      return
    logging.warning('Taking over the stale lock %s of %s.', self.path,
                    _describe(stale) if stale else 'an unreadable holder')
    os.remove(aside)

  def _age_s(self) -> float:
    try:
      return time.time() - os.path.getmtime(self.path)
    except OSError:
      return 0.0

  def _read(self, path: Optional[str] = None) -> Optional[Dict[str, Any]]:
    try:
      with open(path or self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  @staticmethod
  def _is_stale(holder: Dict[str, Any]) -> bool:
    if holder.get('host') != socket.gethostname():
      return False  # another machine's process cannot be checked from here
    return not _pid_running(int(holder.get('pid', -1)), holder.get('start_ticks'))

  def release(self) -> None:
    data_errors.no_longer_if_a_sigterm_ends(self._remove_if_ours)
    if self._held:
      self._remove_if_ours()
      self._held = False

  def _remove_if_ours(self) -> None:
    ours = self._holder()
    try:
      holder = self._read() or {}
      if all(holder.get(key) == ours[key] for key in ('host', 'pid', 'start_ticks')):
        os.remove(self.path)
    except OSError:
      pass

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _describe(holder: Dict[str, Any]) -> str:
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
          f"{holder.get('started', '?')}")


def check_writable(directory: str, what: str, hint: str = '') -> str:
  """Creates `directory` if needed and proves a file can be written there; returns its path.

  Raises NotWritableError naming the directory, the reason and `hint`.
  """
  reason = data_errors.path_refusal(directory)
  if reason:
    raise NotWritableError(f'Cannot write {what} to {data_errors.printable(directory)}: it '
                           f'{reason}' + (f' {hint}' if hint else ''))
  directory = os.path.abspath(directory)
  problem = data_errors.unwritable(directory)
  if problem:
    raise NotWritableError(f'Cannot write {what} to {directory}: {problem}.'
                           + (f' {hint}' if hint else ''))
  return directory


def write_config(workdir: str, config: Any) -> str:
  """Writes the resolved config to `<workdir>/config.json` (process 0); returns the path."""
  path = os.path.join(os.path.abspath(workdir), CONFIG_FILE)
  if jax.process_index() == 0:
    with data_errors.replacing(path) as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return path


def set_aside_events_after(workdir: str, step: int, since_ns: Optional[int] = None) -> None:
  """Moves the TensorBoard points of steps after `step` out of the workdir's event files, into
  `<workdir>/discarded/after_step_<step>/` (TensorBoard shows it as a run of its own), saying so.

  A run resumed at checkpoint `step` trains the steps after it again; points logged there by a
  run that stopped without saving them (a crash, an out-of-memory kill) came from weights no
  checkpoint kept, and would share the plots with the resumed run's. At step 0 (a run that
  starts again) its hyperparameters, logged at step 0, go with them. Files last written before
  `since_ns` (when the checkpoint's save began, less a minute) hold none and are not read. A
  file damaged before its end is left as it is, and said. Process 0 only, which alone writes
  event files.
  """
  if jax.process_index() != 0:
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  aside = os.path.join(os.path.abspath(workdir), 'discarded', f'after_step_{step}')
  later, moved_any = [], False
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name)
    if (not name.startswith('events.out.tfevents.') or not os.path.isfile(path)
        or (since_ns is not None and os.stat(path).st_mtime_ns < since_ns - 60 * 10**9)):
      continue
    steps, headers = [], []
    try:
      for raw in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(raw.numpy())
        steps.append(event.step)
        headers.append(event.WhichOneof('what') == 'file_version')
    except tf.errors.DataLossError as e:  # a record cut short at the end (a kill) is dropped
      if 'truncated' not in e.message:  # records after the damage would be lost with it
        logging.warning('TensorBoard: %s is damaged (%s): its points of steps after %d, if any, '
                        'stay in it.', path, e.message.strip().splitlines()[0], step)
        continue
    # What stays: the header (the file version, at step 0), and after a resume the points up to
    # `step`, the resumed run's hyperparameters among them.
    stays = [header or (step > 0 and event_step <= step)
             for event_step, header in zip(steps, headers)]
    if all(stays):
      continue
    moved_any = True
    os.makedirs(aside, exist_ok=True)
    with data_errors.writing(path, path + '.tmp', os.path.join(aside, name)), \
        tf.io.TFRecordWriter(os.path.join(aside, name)) as moved, \
        tf.io.TFRecordWriter(path + '.tmp') as kept:
      for raw, event_step, kept_here in zip(tf.data.TFRecordDataset(path).take(len(steps)), steps,
                                            stays):
        if event_step == 0 or not kept_here:
          moved.write(raw.numpy())
        if kept_here:
          kept.write(raw.numpy())
    os.replace(path + '.tmp', path)
    later += [event_step for event_step in steps if event_step > step]
  if later:
    logging.warning('TensorBoard: the points of steps %d-%d in the event files were logged by '
                    'weights no checkpoint kept; moved to %s (a run of its own in TensorBoard).',
                    min(later), max(later), aside)
  elif moved_any:
    logging.info('TensorBoard: the hyperparameters an earlier start of this run logged were '
                 'moved to %s.', aside)
