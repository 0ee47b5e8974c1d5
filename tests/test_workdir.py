"""One trainer per workdir, a readable console mirrored to log.txt, the config written once."""

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from salinet_jax import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.conftest import subprocess_env
from tests.test_main import _main
from tests.test_main import _tiny_overrides


def _dead_pid() -> int:
  proc = subprocess.Popen(['true'])
  proc.wait()
  return proc.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
  path = tmp_path / workdir_lib.LOCK_FILE
  live = {'host': socket.gethostname(), 'pid': os.getppid(), 'started': '2026-11-30T08:00:00'}
  path.write_text(json.dumps(live))
  with pytest.raises(workdir_lib.WorkdirBusyError,
                     match=rf'in use by another trainer \(host {re.escape(live["host"])}, pid '
                     rf'{live["pid"]}, started 2026-11-30T08:00:00\)'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()

  path.write_text(json.dumps(dict(live, pid=_dead_pid())))  # a trainer killed with -9
  with workdir_lib.WorkdirLock(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()
  assert not path.exists()

  path.write_text(json.dumps(dict(live, host='another-machine', pid=_dead_pid())))
  with pytest.raises(workdir_lib.WorkdirBusyError, match='another-machine'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()  # its pid cannot be checked from here


def test_a_lock_is_judged_by_its_holders_pid_and_start_time(tmp_path):
  """A live holder's lock (its pid and its start time from /proc) is refused; the same pid with
  another start time is a pid reused after a crash, and its lock is taken over (audit: reading
  another /proc field than the start time, or ignoring it, passed every test)."""
  path = tmp_path / workdir_lib.LOCK_FILE
  pid = os.getppid()
  with open(f'/proc/{pid}/stat') as f:
    start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
  live = {'host': socket.gethostname(), 'pid': pid, 'start_ticks': start_ticks,
          'started': '2026-12-01T08:00:00'}
  path.write_text(json.dumps(live))
  with pytest.raises(workdir_lib.WorkdirBusyError, match=rf'pid {pid},'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads(path.read_text()) == live
  path.write_text(json.dumps(dict(live, start_ticks=start_ticks + 1)))
  with workdir_lib.WorkdirLock(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()


def test_a_lock_of_another_users_live_process_is_not_taken_over(tmp_path, monkeypatch):
  """Signalling another user's process is not permitted: that process is alive, and its lock
  is not stale."""
  path = tmp_path / workdir_lib.LOCK_FILE
  holder = {'host': socket.gethostname(), 'pid': 4242, 'started': '2026-11-30T08:00:00'}
  path.write_text(json.dumps(holder))

  def not_permitted(pid, signal):
    raise PermissionError(f'[Errno 1] Operation not permitted: {pid}, {signal}')

  monkeypatch.setattr(os, 'kill', not_permitted)
  with pytest.raises(workdir_lib.WorkdirBusyError, match='pid 4242'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads(path.read_text()) == holder


def test_releasing_a_lock_another_trainer_took_over_leaves_it_in_place(tmp_path):
  """A trainer whose lock was judged stale and taken over (e.g. it hung past the takeover)
  must not delete the new holder's lock when it finally exits."""
  lock = workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  path = tmp_path / workdir_lib.LOCK_FILE
  newer = {'host': socket.gethostname(), 'pid': os.getpid() + 1, 'started': '2026-12-03T10:00:00'}
  path.write_text(json.dumps(newer))
  lock.release()
  assert json.loads(path.read_text()) == newer


def test_a_second_trainer_on_the_same_workdir_refuses_in_one_line(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  env = subprocess_env()
  overrides = _tiny_overrides(tiny_data_dir)
  first = subprocess.Popen(
      [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={workdir}', *overrides,
       '--config.num_train_steps=100000', '--config.eval_every_steps=100000',
       '--config.checkpoint_every_steps=100000'], cwd=REPO_ROOT, env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    lock = workdir / workdir_lib.LOCK_FILE
    deadline = time.time() + 300
    while not lock.exists() and time.time() < deadline and first.poll() is None:
      time.sleep(0.5)
    assert lock.exists(), first.stderr.read()[-3000:] if first.poll() is not None else 'no lock'
    second = _main('--config=configs/demo.py', f'--workdir={workdir}', *overrides)
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'Traceback' not in second.stderr, second.stderr[-3000:]
    assert f'Workdir {workdir} is in use by another trainer' in errors[0]
    assert f'pid {first.pid}' in errors[0]
    assert first.poll() is None  # the first trainer goes on, its checkpoints untouched
  finally:
    first.kill()
    first.wait()


def test_a_profiled_run_says_where_its_trace_goes_and_not_clus_artifact(tiny_data_dir, tmp_path):
  """clu's profiler logged 'Created artifact [1] Profile of type ArtifactType.URL and value
  None.' and nothing said where the trace went (README audit)."""
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}',
               *_tiny_overrides(tiny_data_dir), '--config.num_train_steps=2',
               '--config.profile_first_step=1', '--config.profile_num_steps=1')
  assert proc.returncode == 0, proc.stderr[-4000:]
  where = workdir / 'plugins' / 'profile'
  assert f"Steps 2 to 2 are traced into {where} (TensorBoard's Profile tab)." in proc.stderr, (
      proc.stderr[-4000:])
  assert glob.glob(str(where / '*' / '*.xplane.pb'))
  assert 'Created artifact' not in proc.stderr, proc.stderr[-4000:]


def test_console_is_one_line_per_interval_and_mirrored_in_log_txt(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}',
               *_tiny_overrides(tiny_data_dir), '--config.num_train_steps=4',
               '--config.eval_every_steps=4', '--config.log_every_steps=2')
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = proc.stderr.strip().splitlines()
  assert all(re.match(r'\d\d:\d\d:\d\d ', line) for line in lines), lines
  text = proc.stderr
  for noise in ('logging_writer', 'Setting work unit notes', '[Hyperparameters]',
                'polynomial schedule', 'tracked_metric', 'read only', 'libtpu'):
    assert noise not in text, noise
  steps = [line for line in lines if re.search(r' step \d+/4 ', line)]
  assert [re.search(r'step (\d+)/4', line).group(1) for line in steps] == ['2', '4']
  assert all(k in steps[-1] for k in ('loss', 'lr', 'clips/s', 'data-wait', 'ETA'))
  assert sum('ETA' in line for line in lines) == len(steps)  # one ETA per interval, no second
  evals = [line for line in lines if ' eval val @ step 4: top-1 ' in line]
  assert len(evals) == 1
  assert any('Compiling the train step' in line for line in lines)
  assert len(lines) <= 14, '\n'.join(lines)
  # log.txt: every console line, from the process line on, then main.py's closing summary.
  logged = (workdir / 'log.txt').read_text().strip().splitlines()
  assert logged[:-1] == lines and 'JAX process 0/1' in logged[0]
  assert logged[-1].endswith(proc.stdout.strip().splitlines()[-1]), logged[-1]
  config = json.loads((workdir / 'config.json').read_text())
  assert config['num_train_steps'] == 4 and config['model']['width'] == 4
  assert 'val top-1:' in proc.stdout


def test_a_log_txt_that_cannot_be_written_is_reported_once_and_never_raises(tmp_path, capfd):
  """On a full disk the run must end with the checkpoint's error, not with one from log.txt:
  /dev/full fails every write with ENOSPC like a full disk does."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from salinet_jax import console  # pylint: disable=g-import-not-at-top
  os.symlink('/dev/full', tmp_path / 'log.txt')
  console.log_to_file(str(tmp_path))
  try:
    for i in range(3):
      logging.warning('line %d', i)
  finally:
    console.close_log_file()
  reports = [line for line in capfd.readouterr().err.splitlines() if 'Cannot write' in line]
  assert len(reports) == 1 and 'No space left on device' in reports[0], reports


def test_log_txt_of_a_resumed_run_keeps_the_earlier_runs_lines(tmp_path):
  """Each run in a workdir appends to its log.txt: a resume (after a SIGTERM, a crash) must not
  erase what the run before it said (audit: a log file started anew passed every test)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from salinet_jax import console  # pylint: disable=g-import-not-at-top
  for run in ('the first run', 'the resumed run'):
    assert console.log_to_file(str(tmp_path)) == str(tmp_path / 'log.txt')
    try:
      logging.warning('%s', run)
    finally:
      console.close_log_file()
  said = ['warning: the first run', 'warning: the resumed run']
  logged = (tmp_path / 'log.txt').read_text().splitlines()
  assert [line[9:] for line in logged if line[9:] in said] == said, logged


@pytest.mark.parametrize('kind', ['directory', 'dangling link', 'file it may not write'])
def test_a_log_txt_that_cannot_be_opened_is_reported_once_and_never_raises(kind, tmp_path, capfd,
                                                                           monkeypatch):
  """A log.txt that is a directory, or a link into a folder that is gone, raised out of the
  file handler's open and ended the run in a traceback; the README promises a warning. A file
  it may not write (root may write any, so its open is made to fail) is said once, not again
  by the closing summary."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from salinet_jax import console  # pylint: disable=g-import-not-at-top
  if kind == 'directory':
    (tmp_path / 'log.txt').mkdir()
  elif kind == 'dangling link':
    os.symlink(tmp_path / 'gone' / 'log.txt', tmp_path / 'log.txt')
  else:
    (tmp_path / 'log.txt').write_text('an earlier run\n')

    def refused(self):
      raise PermissionError(13, 'Permission denied', self.baseFilename)
    monkeypatch.setattr(console._LogFile, '_open', refused)  # pylint: disable=protected-access
  assert console.log_to_file(str(tmp_path)) is None  # train.py leaves out 'This log also goes'
  try:
    for i in range(3):
      logging.warning('line %d', i)
  finally:
    console.close_log_file()
  console.line_after_run(str(tmp_path), 'the closing summary')
  err = capfd.readouterr().err
  reports = [line for line in err.splitlines() if 'Cannot write' in line]
  assert len(reports) == 1, err
  assert reports[0].startswith(f"Cannot write {tmp_path / 'log.txt'} (") and reports[0].endswith(
      'the console keeps logging, the file stops here.'), reports[0]
  assert 'Traceback' not in err


_LINES_DURING_A_BAR = r"""
from absl import logging
from salinet_jax import console
logging.use_absl_handler()  # as absl's app.run does
console.setup()
with console.progress_bar(range(3), desc='videos', mininterval=0) as videos:
  for i in videos:
    logging.warning('video %d is odd', i)
"""


def test_console_lines_during_a_progress_bar_start_a_line_of_their_own():
  """predict's and features' warnings were written after the progress bar's text, on its line
  (README audit: '...| 1/3 [00:01, ...]12:00:01 warning: ...'); now above the bar, whole."""
  proc = subprocess.run([sys.executable, '-c', _LINES_DURING_A_BAR], cwd=REPO_ROOT,
                        env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  said = [line.split('\r')[-1] for line in proc.stderr.split('\n') if 'is odd' in line]
  assert len(said) == 3 and all(re.fullmatch(r'\d\d:\d\d:\d\d warning: video \d is odd', line)
                                for line in said), proc.stderr
  assert 'videos: 100%' in proc.stderr  # the bar is still drawn


def _race_for_the_lock(workdir, trials, barrier, results, hard_links):
  """One of two trainers starting at the same moment, `trials` times."""
  if not hard_links:  # a filesystem that refuses them (some network and FUSE mounts)
    def refuse(*args, **kwargs):
      raise PermissionError(1, 'Operation not permitted')
    os.link = refuse
  for _ in range(trials):
    barrier.wait()
    lock = workdir_lib.WorkdirLock(workdir)
    try:
      lock.acquire()
      results.put(1)
    except workdir_lib.WorkdirBusyError:
      results.put(0)
    barrier.wait()  # both have tried
    lock.release()
    barrier.wait()  # the lock is gone before the next trial


@pytest.mark.parametrize('hard_links', [True, False])
def test_two_trainers_starting_at_once_never_both_hold_the_lock(tmp_path, hard_links):
  """The lock file was created empty and filled afterwards: a trainer reading it in between took
  it for a stale lock and took it over, and both trained (51 of 100 trials, forked processes).
  Where hard links are refused, the lock is still created empty: a young empty one is waited
  for, not taken over."""
  import multiprocessing  # pylint: disable=g-import-not-at-top
  context = multiprocessing.get_context('spawn')
  trials = 25
  barrier, results = context.Barrier(2), context.Queue()
  workers = [context.Process(target=_race_for_the_lock,
                             args=(str(tmp_path), trials, barrier, results, hard_links))
             for _ in range(2)]
  for worker in workers:
    worker.start()
  held = [results.get(timeout=120) for _ in range(2 * trials)]
  for worker in workers:
    worker.join(60)
  assert sum(held) == trials, held  # exactly one holder per trial
  # no lock and no private or moved-aside files left
  assert os.listdir(tmp_path) == [workdir_lib.GUARD_FILE]


def test_three_trainers_meeting_a_stale_lock_never_both_hold_it(tmp_path, monkeypatch):
  """B judged a dead trainer's lock stale, but A took it over first and created its own; B then
  moved A's fresh lock aside, C created its lock in the gap before B could put A's back, B deleted
  A's, and A and C both trained. The interleaving is forced with threads; trainers now decide one
  at a time (B, which judged first, takes the lock and the others are refused)."""
  import threading  # pylint: disable=g-import-not-at-top
  path = tmp_path / workdir_lib.LOCK_FILE
  path.write_text(json.dumps({'host': socket.gethostname(), 'pid': _dead_pid(),
                              'started': '2026-12-01T08:00:00'}))
  b_judged, a_holds, b_moved, c_holds = (threading.Event() for _ in range(4))
  rename, link = os.rename, os.link

  def paced_rename(src, dst):
    if threading.current_thread().name == 'B' and '.stale.' in str(dst):
      b_judged.set()
      a_holds.wait(3)  # B moves the lock aside only after A has taken it over
      rename(src, dst)
      b_moved.set()
    else:
      rename(src, dst)

  def paced_link(src, dst):
    if threading.current_thread().name == 'B' and '.stale.' in str(src):
      c_holds.wait(3)  # and puts it back only after C has created its own
    link(src, dst)

  monkeypatch.setattr(os, 'rename', paced_rename)
  monkeypatch.setattr(os, 'link', paced_link)
  held = {}

  def trainer(after, holds):
    if after is not None:
      after.wait(10)
    lock = workdir_lib.WorkdirLock(str(tmp_path))
    try:
      lock.acquire()
      held[threading.current_thread().name] = lock
    except workdir_lib.WorkdirBusyError:
      pass
    holds.set()

  threads = [threading.Thread(target=trainer, args=args, name=name)
             for name, args in (('B', (None, threading.Event())), ('A', (b_judged, a_holds)),
                                ('C', (b_moved, c_holds)))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(30)
  assert sorted(held) == ['B'], sorted(held)
  # nothing moved aside is left behind
  assert sorted(os.listdir(tmp_path)) == [workdir_lib.GUARD_FILE, workdir_lib.LOCK_FILE]
  held['B'].release()
  assert os.listdir(tmp_path) == [workdir_lib.GUARD_FILE]


def test_a_stale_lock_replaced_before_it_is_moved_aside_is_put_back(tmp_path, monkeypatch):
  """Where the filesystem has no flock, another trainer may take a stale lock over between this
  one reading it and moving it aside: the fresh lock moved aside goes back, and this trainer is
  refused (audit: deleting it passed every test; the flock now decides the test above)."""
  path = tmp_path / workdir_lib.LOCK_FILE
  dead = {'host': socket.gethostname(), 'pid': _dead_pid(), 'started': '2026-12-01T08:00:00'}
  fresh = {'host': socket.gethostname(), 'pid': os.getppid(), 'started': '2026-12-01T08:00:05'}
  path.write_text(json.dumps(fresh))
  read, judged = workdir_lib.WorkdirLock._read, []  # pylint: disable=protected-access

  def read_before_the_other_took_over(self, where=None):
    if where is None and not judged:
      judged.append(dead)
      return dead
    return read(self, where)

  monkeypatch.setattr(workdir_lib.WorkdirLock, '_read', read_before_the_other_took_over)
  with pytest.raises(workdir_lib.WorkdirBusyError, match=rf'pid {os.getppid()},'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  assert judged and json.loads(path.read_text()) == fresh
  assert sorted(os.listdir(tmp_path)) == [workdir_lib.GUARD_FILE, workdir_lib.LOCK_FILE]


def test_an_empty_lock_is_waited_for_while_young_and_taken_over_when_old(tmp_path, monkeypatch):
  """Where hard links are refused, a trainer creates its lock empty and fills it in: another one
  must not take it for stale then (audit: taking it over passed the race test above, which the
  flock decides); one left empty longer than `_FILLING_S` (its creator died) is taken over."""
  path = tmp_path / workdir_lib.LOCK_FILE
  path.write_text('')
  monkeypatch.setattr(workdir_lib.time, 'sleep', lambda seconds: None)
  with pytest.raises(workdir_lib.WorkdirBusyError, match='another trainer keeps taking it'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  assert path.read_text() == ''
  old = time.time() - workdir_lib._FILLING_S - 5  # pylint: disable=protected-access
  os.utime(path, (old, old))
  with workdir_lib.WorkdirLock(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()


def test_a_trainer_stuck_while_taking_the_lock_is_reported_not_waited_for_forever(
    tmp_path, monkeypatch):
  import fcntl  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(workdir_lib, '_DECIDING_S', 0.3)
  fd = os.open(tmp_path / workdir_lib.GUARD_FILE, os.O_RDWR | os.O_CREAT)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)  # a trainer stopped in the middle of taking the lock
    with pytest.raises(workdir_lib.WorkdirBusyError,
                       match=r'another trainer has been taking its lock for 0.3 s; is it stuck\?'):
      workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  finally:
    os.close(fd)
  with workdir_lib.WorkdirLock(str(tmp_path)):  # once it is gone, the lock is free
    assert (tmp_path / workdir_lib.LOCK_FILE).exists()
  # A job script's `flock $WORKDIR python main.py ...` holds the directory, not the guard.
  fd = os.open(tmp_path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    with workdir_lib.WorkdirLock(str(tmp_path)):
      assert (tmp_path / workdir_lib.LOCK_FILE).exists()
  finally:
    os.close(fd)


def test_a_lock_of_another_machine_says_how_to_clear_it(tmp_path):
  path = tmp_path / workdir_lib.LOCK_FILE
  path.write_text(json.dumps({'host': 'node17', 'pid': 12345, 'started': '2026-12-01T08:00:00'}))
  with pytest.raises(workdir_lib.WorkdirBusyError,
                     match=r'\(host node17, .*If it no longer runs \(e.g. a job requeued on '
                           rf'another machine\), delete {re.escape(str(path))}\.$'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()


def test_tensorflow_info_lines_logged_through_absl_stay_off_the_console():
  """Each export printed 'Sharding callback duration: 4 microseconds' and 'Writing fingerprint
  to <a staging folder gone afterwards>' (TensorFlow's SavedModel writer logs INFO through absl);
  its warnings still show."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from salinet_jax import console  # pylint: disable=g-import-not-at-top
  saver = '/venv/lib/python3.11/site-packages/tensorflow/python/checkpoint/functional_saver.py'
  console_filters = console._CONSOLE_FILTERS  # pylint: disable=protected-access

  def shown(level, pathname, message, filters=console_filters):
    record = std_logging.LogRecord('absl', level, pathname, 1, message, None, None)
    return all(f.filter(record) for f in filters)

  assert not shown(std_logging.INFO, saver, 'Sharding callback duration: 4 microseconds')
  assert shown(std_logging.WARNING, saver, 'a TensorFlow warning')
  assert shown(std_logging.INFO, '/work/main/salinet_jax/train.py', 'step 2/4')
  # Orbax's error lines about a failed save are off the console (the project's one line says
  # it) but in log.txt, for diagnosis (audit: log.txt dropping them too passed).
  orbax = '/venv/lib/python3.11/site-packages/orbax/checkpoint/async_checkpointer.py'
  assert not shown(std_logging.ERROR, orbax, 'Save failed: [Errno 28] No space left on device')
  assert shown(std_logging.ERROR, orbax, 'Save failed: [Errno 28] No space left on device',
               console._FILTERS)  # pylint: disable=protected-access


def _event_file(path, steps):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(str(path)) as writer:
    for step in steps:
      event = tf.compat.v1.Event(step=step, wall_time=1.0)
      event.summary.value.add(tag='loss', simple_value=float(step))
      writer.write(event.SerializeToString())


def _event_steps(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [tf.compat.v1.Event.FromString(raw.numpy()).step
          for raw in tf.data.TFRecordDataset(str(path))]


def test_event_files_damaged_before_their_end_or_older_than_the_checkpoint_are_left_alone(
    tmp_path, caplog):
  """Points after a damaged record would have been lost with it when a file was rewritten
  without them (review); files last written before the checkpoint's save hold no later points
  and are not read."""
  damaged = tmp_path / 'events.out.tfevents.1.host.1.v2'
  _event_file(damaged, [0, 1, 2, 3, 4])
  data = bytearray(damaged.read_bytes())
  data[len(data) * 9 // 10] ^= 0xFF  # inside the last record: step 3 reads before it
  damaged.write_bytes(bytes(data))
  before = damaged.read_bytes()
  workdir_lib.set_aside_events_after(str(tmp_path), 2)
  assert damaged.read_bytes() == before and not (tmp_path / 'discarded').exists()
  assert f'TensorBoard: {damaged} is damaged (' in caplog.text
  old = tmp_path / 'events.out.tfevents.2.host.2.v2'
  _event_file(old, [0, 2, 3, 4])
  damaged.unlink()
  later = os.stat(old).st_mtime_ns + 120 * 10**9  # the save began two minutes after its write
  workdir_lib.set_aside_events_after(str(tmp_path), 2, since_ns=later)
  assert not (tmp_path / 'discarded').exists()
  # Written half a minute before the save began (clocks and flushes lag): read, and its points
  # of steps 3-4 set aside, the header (step 0) in both files, step 2 kept (audit: a file
  # skipped without the minute's margin, step 2 or the aside copy's header dropped, passed).
  workdir_lib.set_aside_events_after(str(tmp_path), 2,
                                     since_ns=os.stat(old).st_mtime_ns + 30 * 10**9)
  assert _event_steps(old) == [0, 2]
  assert _event_steps(tmp_path / 'discarded' / 'after_step_2' / old.name) == [0, 3, 4]



@pytest.mark.parametrize('override, expected', [
    ({'name': '', 'data_dir': ''}, r'^config\.dataset\.data_dir is empty'),
    ({'name': '', 'data_dir': 'MISSING'}, r"^No metadata\.json in records directory 'MISSING'"),
    ({'name': 'kinetics400'}, r"^config\.dataset\.name is 'kinetics400' but the records"),
    ({'train_split': 'trian'}, r"^Split 'trian' is not in the records"),
    ({'eval_split': 'vall'}, r"^Split 'vall' is not in the records"),
])
def test_a_training_start_refused_for_its_records_leaves_no_workdir_behind(config, tmp_path,
                                                                           override, expected):
  """A run whose records cannot be read (an empty or mistyped data_dir, another dataset's
  records, a split they lack) was refused after the workdir, its checkpoints/ folder, log.txt
  and the lock's guard file were made; now it is refused before anything is written, as a
  mistyped setting is."""
  from data import errors as data_errors  # pylint: disable=g-import-not-at-top
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  missing = str(tmp_path / 'no_such_records')
  for field, value in override.items():
    config.dataset[field] = missing if value == 'MISSING' else value
  expected = expected.replace('MISSING', re.escape(missing))
  with pytest.raises(data_errors.DataError, match=expected):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
