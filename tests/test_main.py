"""The command line: config overrides, locked configs, train then eval through main.py."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import fill_disk
from tests.conftest import subprocess_env


def _main(*args, timeout=600, devices=0, platforms='cpu'):
  """main.py in a subprocess; `platforms=None` leaves JAX_PLATFORMS unset, as a user runs it."""
  env = subprocess_env(devices)
  if platforms is None:
    env.pop('JAX_PLATFORMS')
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _tiny_overrides(data_dir):
  return [
      f'--config.dataset.data_dir={data_dir}', '--config.dataset.synthetic.num_train=8',
      '--config.dataset.synthetic.num_val=7', '--config.dataset.synthetic.num_frames=6',
      '--config.dataset.synthetic.frame_size=20', '--config.dataset.synthetic.object_size=6',
      '--config.dataset.synthetic.num_shards=2', '--config.data.num_frames=4',
      '--config.data.crop_size=16', '--config.data.train_min_scale=16',
      '--config.data.train_max_scale=20', '--config.data.eval_short_side=16',
      '--config.data.eval_crop_size=16', '--config.model.width=4', '--config.batch_size=4',
      '--config.eval_batch_size=4', '--config.num_train_steps=2', '--config.eval_every_steps=2',
      '--config.log_every_steps=1',
  ]


def test_train_then_eval_through_main(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(tiny_data_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'val top-1:' in proc.stdout
  assert 'clips/s' in proc.stderr and 'ETA' in proc.stderr
  assert 'GFLOPs (multiply-adds) per' in proc.stderr
  # The classes in their index order, which log.txt kept nowhere else (user audit).
  assert ("4 classes ('moving_right', 'moving_left', 'moving_down', 'moving_up')"
          in proc.stderr)
  # The environment's cache (the tests' own) takes precedence over the config's user folder.
  assert f"XLA compilation cache: {subprocess_env()['JAX_COMPILATION_CACHE_DIR']}" in proc.stderr
  # log.txt holds the console's lines from the first (process and devices) to the last.
  logged = (workdir / 'log.txt').read_text().splitlines()
  assert 'JAX process 0/1, ' in logged[0] and 'val top-1: ' in logged[-1], logged
  # Evaluated without JAX_PLATFORMS, as a user runs it: JAX's probing of backends this machine
  # lacks ("Unable to initialize backend 'tpu'") stays off the console.
  # --split is passed on (mutation audit: evaluating the config's split instead went unnoticed).
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', '--mode=eval', '--split=train',
               *_tiny_overrides(tiny_data_dir), platforms=None)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'Unable to initialize backend' not in proc.stderr, proc.stderr[:2000]
  assert re.match(r'\d\d:\d\d:\d\d JAX process 0/1, ', proc.stderr), proc.stderr[:2000]
  assert not (workdir / 'eval_val.json').exists()
  results = json.loads((workdir / 'eval_train.json').read_text())
  assert results['split'] == 'train' and results['num_videos'] == 8 and results['step'] == 2
  assert f"train top-1: {results['top1']:.4f}" in proc.stdout
  # Predict where no video could be read ends as a failure, not with status 0 (mutation audit).
  unreadable = tmp_path / 'not_a_video.mp4'
  unreadable.write_text('text\n')
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', '--mode=predict',
               f'--video={unreadable}', *_tiny_overrides(tiny_data_dir))
  assert proc.returncode == 1 and proc.stderr.rstrip().endswith(
      'error: No video could be read for predict (see the reasons above).'), proc.stderr[-3000:]
  assert 'not_a_video.mp4' in (workdir / 'predictions' / 'predictions.csv').read_text()


def test_a_stray_argument_is_refused_before_anything_runs(tmp_path):
  """A word without its flag (`--mode=eval test` for --split=test) would leave the config's split
  evaluated, or a run trained, the word never read (mutation audit: no test covered the check)."""
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', '--mode=eval', 'test',
               timeout=120)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stderr.rstrip().endswith("Unexpected arguments: ['test']"), proc.stderr[-3000:]
  assert not workdir.exists()


@pytest.mark.parametrize('mode, flag', [(None, '--video=clip.mp4'), ('train', '--split=val'),
                                        ('train', '--output_dir=out'), ('eval', '--video=x.mp4'),
                                        ('predict', '--split=val')])
def test_a_flag_of_another_mode_is_refused_before_anything_runs(tmp_path, mode, flag):
  """`main.py --video=clip.mp4` without --mode=predict trained (or resumed training) in the
  workdir; --split and --output_dir were ignored outside their modes likewise. The mode named is
  the one given, or train as the default where none was (it said 'the default is train' after
  an --mode=eval given too: audit)."""
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}',
               *([f'--mode={mode}'] if mode else []), flag, timeout=120)
  name = flag[2:].split('=')[0]
  assert proc.returncode == 1 and f'error: --{name} applies to --mode=' in proc.stderr, proc.stderr
  said = 'not to --mode=train (the default):' if mode is None else f'not to --mode={mode}:'
  assert said in proc.stderr and not workdir.exists(), proc.stderr


CACHE_PROBE = """
import sys
import jax
from salinet_jax import parallel
print(parallel.enable_compilation_cache(sys.argv[1]))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.jit(lambda x: x * 2 + 1).lower(1.0).compile()
"""


@pytest.mark.parametrize('from_environment', [False, True])
def test_compilation_cache_folder(tmp_path, from_environment):
  """config.compilation_cache_dir (user paths expanded) receives the compiled programs; a
  JAX_COMPILATION_CACHE_DIR in the environment is used instead."""
  env = subprocess_env(HOME=str(tmp_path / 'home'))
  env.pop('JAX_COMPILATION_CACHE_DIR')
  if from_environment:
    env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'from_env')
  proc = subprocess.run([sys.executable, '-c', CACHE_PROBE, '~/xla_cache'], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  used = tmp_path / ('from_env' if from_environment else 'home/xla_cache')
  assert proc.stdout.split() == [str(used)]
  assert any(used.iterdir())
  assert from_environment != (tmp_path / 'home' / 'xla_cache').exists()


def test_cpu_xla_flags_added_once_and_never_over_the_users(monkeypatch):
  from salinet_jax import errors  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false')
  assert (parallel.set_cpu_xla_flags('concurrency', 'ynnpack', True) ==
          '--xla_cpu_multi_thread_eigen=false')
  flags = parallel.set_cpu_xla_flags('memory', 'eigen', False)
  assert flags.split() == ['--xla_cpu_multi_thread_eigen=false',
                           '--xla_cpu_enable_concurrency_optimized_scheduler=false',
                           '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
                           '--xla_backend_extra_options=xla_cpu_disable_loop_unrolling']
  assert parallel.set_cpu_xla_flags('memory', 'eigen', False) == flags  # a second call adds nothing
  assert parallel.cpu_convolutions_are_eigens()  # what fast_conv reads back
  users = ('--xla_cpu_enable_concurrency_optimized_scheduler=true '
           '--xla_cpu_experimental_ynn_fusion_type=individual_dot '
           '--xla_backend_extra_options=xla_cpu_disable_slp_vectorizer')
  monkeypatch.setenv('XLA_FLAGS', users)
  assert parallel.set_cpu_xla_flags('memory', 'eigen', True) == users
  # The backend's extra options are a list: the user's own keep loop unrolling off too.
  both = users + ',xla_cpu_disable_loop_unrolling'
  assert parallel.set_cpu_xla_flags('memory', 'eigen', False) == both
  assert parallel.set_cpu_xla_flags('memory', 'eigen', False) == both
  with pytest.raises(errors.ConfigError, match="xla_cpu_scheduler must be one of .* 'memroy'"):
    parallel.set_cpu_xla_flags('memroy', 'eigen', False)
  with pytest.raises(errors.ConfigError, match="xla_cpu_convolutions must be one of .* 'egien'"):
    parallel.set_cpu_xla_flags('memory', 'egien', False)
  with pytest.raises(errors.ConfigError, match="xla_cpu_unroll_loops must be one of .* 'no'"):
    parallel.set_cpu_xla_flags('memory', 'eigen', 'no')


@pytest.mark.parametrize('flags,eigen', [
    ('', False),
    ('--xla_cpu_multi_thread_eigen=false', False),
    ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution', True),
    ('--a=1 --xla_cpu_experimental_ynn_fusion_type=-INDIVIDUAL_CONVOLUTION,+eltwise --b=2', True),
    ('--xla_cpu_experimental_ynn_fusion_type=-individual_dot', False),
    ('--xla_cpu_experimental_ynn_fusion_type=individual_dot', True),   # overwrites the list
    ('--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution', False),
    ('--xla_cpu_experimental_ynn_fusion_type=', True),                 # no YNNPACK fusions
])
def test_eigen_convolutions_read_from_xla_flags(monkeypatch, flags, eigen):
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('XLA_FLAGS', flags)
  assert parallel.cpu_convolutions_are_eigens() == eigen


def test_host_memory_handed_back_after_each_compile(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from data import host_malloc  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(host_malloc, 'trim', lambda: calls.append(1) or True)
  parallel.trim_host_memory_after_compiles()
  parallel.trim_host_memory_after_compiles()  # registered once: one trim per compile
  jax.jit(lambda x: x * 3.25 - 0.125).lower(1.0).compile()
  assert len(calls) == 1


def test_trim_frees_released_heap_pages_on_glibc():
  import platform  # pylint: disable=g-import-not-at-top
  from data import host_malloc  # pylint: disable=g-import-not-at-top
  if platform.libc_ver()[0] != 'glibc':
    pytest.skip('malloc_trim is glibc-only; elsewhere trim() is a documented no-op')
  blocks = [bytearray(64 * 1024) for _ in range(4096)]  # 256 MiB of heap (below mmap size)
  del blocks[::2]
  assert host_malloc.trim() is True


_USER_ERROR_BESIDE_A_HUNG_THREAD = '''
import threading, time
from salinet_jax import checkpoints, cli
threading.Thread(target=time.sleep, args=(600,)).start()  # like orbax's threads after a failed save
with cli.user_errors_in_one_line():
  raise checkpoints.CheckpointSaveError('Saving checkpoint step 4 failed: Operation not permitted.')
'''


def test_a_tpu_pod_process_that_did_not_join_through_jax_distributed_is_refused(monkeypatch):
  """Accelerator audit: on a TPU pod JAX runs a process as one of several without
  jax.distributed (optional there). The run then took itself for a single process in places:
  no SIGTERM handler and no preemption service (a SIGTERM killed every host, saving nothing,
  where the README promises a save), JAX's compilation cache written by every host as process
  0. It is refused as JAX starts, saying what to set."""
  import jax  # pylint: disable=g-import-not-at-top
  from salinet_jax import errors  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  parallel.start_backend()  # one process: nothing to refuse
  monkeypatch.setattr(jax, 'process_count', lambda: 4)
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  with pytest.raises(errors.UserError, match=r'^JAX runs this process as one of 4 .* not joined '
                     r'through jax\.distributed: .* Set SALINET_JAX_DISTRIBUTED=1 on every '
                     r'host'):
    parallel.start_backend()
  with pytest.raises(errors.UserError, match=r'^JAX runs this process as one of 4 '):
    parallel.check_preemption_service()  # train_and_evaluate called without main.py
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: True)
  parallel.start_backend()  # joined: a group, as main.py runs one


def test_a_process_that_loses_its_group_says_so_in_one_line(monkeypatch, capsys):
  """When process 0 of a group stopped on a user error (a workdir in use), process 1 printed,
  30 s later, a long runtime traceback ending in a Gloo DEADLINE_EXCEEDED, with no word about
  the other process."""
  import jax  # pylint: disable=g-import-not-at-top
  from salinet_jax import cli  # pylint: disable=g-import-not-at-top
  lost = ("UNKNOWN: Gloo context initialization failed: DEADLINE_EXCEEDED: Barrier timed out "
          "(sync_global_devices 'synthetic data generated')\nmore")
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  monkeypatch.setattr(cli, 'end_without_the_group', lambda status: sys.exit(status))
  # Gloo's own error where another process left the group (a SIGTERM ended it) comes as a
  # ValueError, and printed its traceback only (audit).
  left = ('UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:547] '
          'Connection closed by peer [127.0.0.1]:11184')
  # A training group's process killed (SIGKILL) between steps: the other's next all-reduce read
  # a reset connection, printed its traceback and waited 77 s at JAX's shutdown barrier, which
  # then aborted it (status -6).
  reset = ('UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] '
           'Read error [127.0.0.1]:55431: Connection reset by peer')
  for error in (jax.errors.JaxRuntimeError(lost), ValueError(left),
                jax.errors.JaxRuntimeError(reset)):
    with pytest.raises(SystemExit) as stopped:
      with cli.user_errors_in_one_line():
        raise error
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert 'Traceback' in err and err.endswith(
        f'error: process 1 of 2 lost the other processes of its group in a collective '
        f'({str(error).splitlines()[0]}): one of them stopped or is stuck: its own output '
        '(process 0 writes log.txt) says why, or ends without a word where it was killed (out '
        'of memory, a scheduler).\n'), err
  with pytest.raises(ValueError):  # any other error keeps its traceback
    with cli.user_errors_in_one_line():
      raise ValueError('Connection closed by peer, elsewhere')

  def backend_started():
    raise AssertionError('a ValueError of a config file started the backend (review)')

  monkeypatch.setattr(jax, 'process_count', backend_started)
  with pytest.raises(ValueError, match='a bad value'):
    with cli.user_errors_in_one_line():
      raise ValueError('a bad value')
  with pytest.raises(jax.errors.JaxRuntimeError):  # any other runtime error keeps its traceback
    with cli.user_errors_in_one_line():
      raise jax.errors.JaxRuntimeError('DEADLINE_EXCEEDED: a compile took too long')
  monkeypatch.setattr(jax, 'process_count', lambda: 1)
  with pytest.raises(jax.errors.JaxRuntimeError):
    with cli.user_errors_in_one_line():
      raise jax.errors.JaxRuntimeError(lost)


def test_an_error_that_ends_one_process_of_a_group_skips_the_shutdown_barrier(monkeypatch,
                                                                            capsys):
  """JAX's exit handler waits at a shutdown barrier for every process of the group; those
  waiting for this one in a collective never come, and 300 s later all abort. A bug keeps its
  traceback (and a line), a user error its one line, a Ctrl-C its status."""
  import jax  # pylint: disable=g-import-not-at-top
  from data import errors as data_errors  # pylint: disable=g-import-not-at-top
  from salinet_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from salinet_jax import cli  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  ended = []
  monkeypatch.setattr(cli, 'exit_even_if_threads_hang', lambda status: ended.append('waited'))

  def end_without_the_group(status):
    ended.append(status)
    sys.exit(status)

  monkeypatch.setattr(cli, 'end_without_the_group', end_without_the_group)
  monkeypatch.setattr(parallel, 'in_a_group', lambda: True)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  for error, status, last in [
      (RuntimeError('a bug'), 1, 'error: process 1 of 2 stopped at this RuntimeError: the other '
       'processes of its group end at their next collective; if one of them stopped first, its '
       'output says why.'),
      (data_errors.DataError('shard x is corrupt'), 1, 'error: shard x is corrupt'),
      # Not after waiting for orbax's threads (5 s), nor through the exit handlers.
      (checkpoints.CheckpointSaveError('Saving step 4 failed.'), 1,
       'error: Saving step 4 failed.'),
      (KeyboardInterrupt(), 130, 'Interrupted by Ctrl-C. Exit status 130.')]:
    with pytest.raises(SystemExit) as stopped:
      with cli.user_errors_in_one_line():
        raise error
    assert stopped.value.code == status and ended == [status]
    ended.clear()
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1] == last, err
    assert ('Traceback' in err) == isinstance(error, RuntimeError), err
  monkeypatch.undo()
  # A group of one (JAX_NUM_PROCESSES=1, a one-task SLURM job) is one process (review).
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: True)
  monkeypatch.setattr(jax, 'process_count', lambda: 1)
  assert not parallel.in_a_group()
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  assert parallel.in_a_group()
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  with pytest.raises(RuntimeError):  # one process: Python prints the traceback, exit handlers run
    with cli.user_errors_in_one_line():
      raise RuntimeError('a bug')


def _write_config(path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from salinet_jax import workdir  # pylint: disable=g-import-not-at-top
  workdir.write_config(os.path.dirname(path), ml_collections.ConfigDict({'batch_size': 8}))


def _write_predictions(path):
  from salinet_jax import predict  # pylint: disable=g-import-not-at-top
  predict.write_predictions(path, [])


def _write_results(path):
  from salinet_jax import reports  # pylint: disable=g-import-not-at-top
  reports.write_json(path, {'top1': 0.5})


def _eval_predictions():
  from salinet_jax import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.Predictions(scores=np.eye(3, dtype=np.float32), labels=np.arange(3),
                              filenames=['a.mp4', 'b.mp4', 'c.mp4'], classes=['x', 'y', 'z'])


def _write_eval_predictions(path):
  from salinet_jax import reports  # pylint: disable=g-import-not-at-top
  reports.write_predictions_csv(path, _eval_predictions())


def _write_per_class(path):
  from salinet_jax import reports  # pylint: disable=g-import-not-at-top
  reports.write_per_class_csv(path, _eval_predictions())


def _plot_confusion(path):
  from salinet_jax import reports  # pylint: disable=g-import-not-at-top
  reports.plot_confusion(np.eye(3), ['x', 'y', 'z'], path, title='a full disk')


@pytest.mark.parametrize('name, write', [('config.json', _write_config),
                                         ('predictions.csv', _write_predictions),
                                         ('eval_val.json', _write_results),
                                         ('eval_val_predictions.csv', _write_eval_predictions),
                                         ('eval_val_per_class.csv', _write_per_class),
                                         ('eval_val_confusion.png', _plot_confusion)])
def test_a_write_to_a_full_disk_ends_the_command_in_one_line(small_disk, capsys, name, write):
  """A full disk under config.json, predict's CSV or eval's results (and the other files the
  commands write through `data.errors`) ended a command in a traceback, as if it were a bug; now
  one line naming the file (the checkpoints have their own), and the copy an earlier run wrote
  there is kept: the CSVs and pictures were written in place, emptying it first. An OS error of
  a write no such site names, and any other OS error, keep their traceback."""
  from salinet_jax import cli  # pylint: disable=g-import-not-at-top
  (small_disk / name).write_text('an earlier run\'s copy\n')
  fill_disk(small_disk)
  with pytest.raises(SystemExit) as stopped:
    with cli.user_errors_in_one_line():
      write(str(small_disk / name))
  assert stopped.value.code == 1
  assert capsys.readouterr().err == (
      f'error: Cannot write {small_disk / name}: No space left on device; the command stopped '
      'there. Free some space, or write elsewhere, and run the command again.\n')
  assert not list(small_disk.glob('*.tmp'))  # an atomic writer's half-written copy is removed
  assert (small_disk / name).read_bytes() == b"an earlier run's copy\n"
  with pytest.raises(OSError, match='No space left'):
    with cli.user_errors_in_one_line():
      with open(small_disk / 'written_elsewhere.csv', 'w') as f:
        f.write('video,label\n' * 2000)
  with pytest.raises(FileNotFoundError):
    with cli.user_errors_in_one_line():
      open(small_disk / 'no' / 'such.csv', 'w')  # pylint: disable=consider-using-with


def test_a_user_error_ends_the_process_even_if_another_thread_never_finishes():
  """After a failed save orbax's threads wait for signals that never come: the process printed
  its error line and then never exited (a job holding its machine until the time limit)."""
  proc = subprocess.run([sys.executable, '-c', _USER_ERROR_BESIDE_A_HUNG_THREAD], cwd=REPO_ROOT,
                        env=subprocess_env(0), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: Saving checkpoint step 4 failed: Operation not permitted.')


_CTRL_C_IN_A_GC_CALLBACK = '''
import gc, signal, time
from salinet_jax import cli

armed = [True]
def callback(phase, info):  # stands for JAX's _xla_gc_callback, where a Ctrl-C was dropped
  if armed:
    armed.pop()
    signal.raise_signal(signal.SIGINT)  # Python raises the KeyboardInterrupt here and drops it
gc.callbacks.append(callback)
with cli.user_errors_in_one_line():
  gc.collect()
  time.sleep(60)
  print('ran to the end')
'''


def test_a_ctrl_c_that_python_drops_in_a_gc_callback_still_interrupts():
  """Python drops an exception raised in a gc callback, a __del__ or a weakref callback: a Ctrl-C
  that landed in JAX's gc callback while a run initialised was lost, and the run trained to its
  end (exit status 0)."""
  start = time.monotonic()
  proc = subprocess.run([sys.executable, '-c', _CTRL_C_IN_A_GC_CALLBACK], cwd=REPO_ROOT,
                        env=subprocess_env(0), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 130, proc.stdout + proc.stderr[-3000:]
  assert 'ran to the end' not in proc.stdout
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == 'Interrupted by Ctrl-C. Exit status 130.'
  assert time.monotonic() - start < 50


_CTRL_C_IN_AN_IMPORT = '''
import runpy, signal, sys, time

HOW = sys.argv[2]
FIRST_HEAVY_IMPORT = 'numpy'
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal


class Dropping:
  def __del__(self):
    raise KeyboardInterrupt  # Python drops it, as one in JAX's gc callback while it is imported


class Signalling:
  def __del__(self):
    signal.raise_signal(signal.SIGINT)  # as a Ctrl-C landing in JAX's gc callback


class CtrlC:
  """A Ctrl-C while a command imports its first heavy module (numpy, before TensorFlow and
  JAX): a real SIGINT in the import or in a destructor (as a KeyboardInterrupt, Python drops
  what a destructor raises); a real SIGINT at a later heavy import ('signal at jax'); or, in
  JAX's import, a KeyboardInterrupt it raises itself or drops."""

  def find_spec(self, name, path=None, target=None):
    if name == FIRST_HEAVY_IMPORT and HOW == 'signal':
      signal.raise_signal(signal.SIGINT)
      time.sleep(2)
    if name == FIRST_HEAVY_IMPORT and HOW == 'signal in a destructor':
      Signalling()
      time.sleep(2)
    if name == FIRST_HEAVY_IMPORT and HOW == 'signal in an extension':  # as numpy's C init does
      try:
        signal.raise_signal(signal.SIGINT)
        time.sleep(2)
      except KeyboardInterrupt:
        raise ImportError('Encountered an error while initializing the extension.')
    if HOW.startswith('signal at ') and name == HOW[len('signal at '):]:  # a later heavy import
      signal.raise_signal(signal.SIGINT)
      time.sleep(2)
    if name == 'flax' and HOW == 'signal while its flags are parsed':  # config fields checked
      signal.raise_signal(signal.SIGINT)
      time.sleep(2)
    if name == 'jax' and HOW == 'raised':
      raise KeyboardInterrupt
    if name == 'jax' and HOW == 'dropped':
      Dropping()
      time.sleep(2)  # the interrupt sent again lands here
    return None


sys.meta_path.insert(0, CtrlC())
COMMAND, ARGS = sys.argv[3], sys.argv[4:]
sys.argv = [COMMAND, *ARGS]
if COMMAND == 'main.py':
  runpy.run_path('main.py', run_name='__main__')
else:  # as `python -m COMMAND`: its packages are imported first, with sys.argv[0] '-m'
  sys.argv[0] = '-m'
  runpy.run_module(COMMAND, run_name='__main__', alter_sys=True)
'''


@pytest.mark.parametrize('command, how', [
    ('main.py', 'signal'), ('main.py', 'signal in a destructor'),
    ('main.py', 'signal in an extension'), ('salinet_jax.info', 'signal in an extension'),
    ('main.py', 'raised'),
    ('main.py', 'dropped'), ('salinet_jax.export', 'signal'),
    ('salinet_jax.export', 'signal in a destructor'), ('salinet_jax.convert', 'signal'),
    ('salinet_jax.convert', 'signal while its flags are parsed'),
    ('salinet_jax.bench', 'signal'), ('salinet_jax.info', 'signal'), ('data.report', 'signal'),
    ('data.convert', 'signal'), ('data.bench', 'signal'),
    ('main.py', 'signal at tensorflow'), ('main.py', 'signal at jax'),
    ('salinet_jax.export', 'signal at jax'), ('salinet_jax.info', 'signal at jax'),
    ('salinet_jax.bench', 'signal at jax'), ('salinet_jax.convert', 'signal at jax'),
    ('data.report', 'signal at tensorflow')])
def test_a_ctrl_c_while_a_command_starts_ends_in_one_line(tmp_path, command, how):
  """A Ctrl-C in a command's first seconds (importing TensorFlow and JAX) printed an import's
  KeyboardInterrupt traceback (README audit), or was lost where JAX's import dropped it (the
  command then ran to its end), or, landing in a C extension's initialisation (numpy's, at
  0.3 s), became an ImportError traceback; now the one line and status 130 it gives later. The
  commands run as `python -m` imported their heavy modules through their packages, before any
  guard. Subprocesses inherit the signal's disposition: the test's own, not Python's default,
  when pytest runs in the background, so it is set in the child."""
  workdir = str(tmp_path / 'w')
  args = {'main.py': ['--config=configs/demo.py', f'--workdir={workdir}', '--mode=eval'],
          'salinet_jax.export': [f'--workdir={workdir}', f'--output={tmp_path}/out'],
          'salinet_jax.convert': ['--source=pyslowfast', f'--checkpoint={tmp_path}/c.pkl',
                                  '--config=configs/demo.py', f'--output={workdir}'],
          'salinet_jax.bench': ['--config=configs/demo.py', f'--output={workdir}'],
          'salinet_jax.info': ['--config=configs/demo.py'],
          'data.report': [f'--records={tmp_path}', f'--output={workdir}'],
          'data.convert': ['--dataset=folder', f'--input={tmp_path}', f'--output={workdir}'],
          'data.bench': [f'--records={tmp_path}']}[command]
  proc = subprocess.run([sys.executable, '-c', _CTRL_C_IN_AN_IMPORT, '', how, command, *args],
                        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 130, proc.stderr[-3000:]
  assert proc.stderr == 'Interrupted by Ctrl-C while starting. Exit status 130.\n', proc.stderr
  assert not os.path.exists(workdir)


_CTRL_C_WHILE_ENDING = '''
import atexit, contextlib, io, os, runpy, signal, sys, threading, time
from data import errors as data_errors

WHEN = sys.argv[1]
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal


def ctrl_c():
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(2)


class Gone(io.StringIO):
  def flush(self):
    raise BrokenPipeError(32, 'Broken pipe')


class TornDown:
  def __del__(self):  # after the last atexit callback: freeing the modules
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)


if WHEN.startswith('python -m '):  # a command's own __main__ block, ending after --help
  threading._register_atexit(ctrl_c)  # the first moments of Python's shutdown
  guard = data_errors.sigterm_in_one_line

  def starting():
    frame = sys._getframe()
    while frame and frame.f_code.co_name != 'ctrl_c_while_starting':
      frame = frame.f_back
    return frame is not None

  @contextlib.contextmanager
  def said_guard():  # around the command's run, not its imports
    if not starting():
      print('SIGTERM in one line', flush=True)
    with guard():
      yield

  data_errors.sigterm_in_one_line = said_guard
  sys.argv = ['-m', '--help']
  runpy.run_module(WHEN[len('python -m '):], run_name='__main__', alter_sys=True)
with data_errors.ctrl_c_while_starting():
  pass
with data_errors.ctrl_c_while_ending():
  if WHEN == 'in an atexit callback':  # JAX's, orbax's, TensorFlow's clean-up
    atexit.register(ctrl_c)
  elif WHEN == 'while threads are joined':
    threading.Thread(target=lambda: (time.sleep(0.5), ctrl_c(), time.sleep(60))).start()
  elif WHEN == 'as it exits':
    threading._register_atexit(ctrl_c)
  elif WHEN == 'after its reader went':  # `| head`
    print('last line', flush=True)
    atexit.register(ctrl_c)
    sys.stdout = Gone()
  elif WHEN == 'while the interpreter frees its modules':
    torn_down = TornDown()
  if WHEN != 'after its reader went':
    print('last line', flush=True)
  if WHEN == 'as its run returns':  # past the command's own handling (absl's app.run)
    ctrl_c()
  sys.exit(3)
'''
_ENDING = ('Interrupted by Ctrl-C while ending, after its last line: its clean-up was cut short. '
           'Exit status 130.\n')


@pytest.mark.parametrize('when, status, stderr', [
    ('as its run returns', 130, 'Interrupted by Ctrl-C. Exit status 130.\n'),
    ('as it exits', 130, _ENDING), ('after its reader went', 130, _ENDING),
    ('in an atexit callback', 130, _ENDING),
    ('while threads are joined', 130, _ENDING), ('while the interpreter frees its modules', 3, '')])
def test_a_ctrl_c_while_a_command_ends_is_one_line_or_nothing(when, status, stderr):
  """A Ctrl-C in the second a command takes to end, after its last line, gave Python's
  "Exception ignored in atexit callback" traceback and the run's status, or (once Python gives
  SIGINT back to the system, before freeing its modules) killed the process with no line
  (audit: 0.0 s and 0.2-0.8 s after the last line of `main.py --mode=eval` on the demo). Now one
  line and status 130 while anything could still hang (threads joined, atexit callbacks);
  ignored once only memory is left to free, keeping the command's own status."""
  start = time.monotonic()
  proc = subprocess.run([sys.executable, '-c', _CTRL_C_WHILE_ENDING, when], cwd=REPO_ROOT,
                        env=subprocess_env(0), capture_output=True, text=True, timeout=120)
  assert (proc.returncode, proc.stdout, proc.stderr) == (status, 'last line\n', stderr)
  assert time.monotonic() - start < 30


@pytest.mark.parametrize('command', [
    'main', 'salinet_jax.bench', 'salinet_jax.info', 'salinet_jax.convert', 'salinet_jax.export',
    'data.report', 'data.bench', 'data.convert'])
def test_every_command_takes_a_ctrl_c_while_it_ends(command):
  """Each command's `__main__` block guards its ending: a Ctrl-C as Python starts to shut down
  after `--help` is the one line, not an "Exception ignored" traceback. It also ends a SIGTERM
  in one line around its run (`sigterm_in_one_line`), but for the converter, which keeps its
  finished shards, and main.py, which takes the guard once the process is set up (its training
  loop then takes SIGTERM over to save its step); all of them take it while they import."""
  proc = subprocess.run([sys.executable, '-c', _CTRL_C_WHILE_ENDING, f'python -m {command}'],
                        cwd=REPO_ROOT, env=subprocess_env(0), capture_output=True, text=True,
                        timeout=300)
  assert proc.stdout and (proc.returncode, proc.stderr[-len(_ENDING):]) == (130, _ENDING), (
      proc.stderr[-3000:])
  assert (proc.stdout.startswith('SIGTERM in one line\n')
          == (command not in ('main', 'data.convert'))), proc.stdout[:300]


@pytest.mark.parametrize('command', [['main.py'], ['-m', 'salinet_jax.bench']])
def test_a_sigterm_while_a_command_imports_ends_it_in_one_line(command):
  """A SIGTERM in the seconds a command imports JAX and TensorFlow (a scheduler preempting a job
  as it starts) killed it as Python's default does, without a line: 4 of 12 random SIGTERMs to
  `main.py --mode=eval` on the demo came there. Now the one line and status 143, as later on.
  Sent once JAX is imported (`-X importtime` says so), while the command imports the rest."""
  proc = subprocess.Popen([sys.executable, '-X', 'importtime', *command, '--help'],
                          cwd=REPO_ROOT, env=subprocess_env(0), text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    imported = []
    for line in proc.stderr:
      imported.append(line.rsplit('|', 1)[-1].strip())
      if imported[-1] == 'jax':
        break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
  finally:
    proc.kill()
  assert imported[-1] == 'jax', imported[-20:]
  assert proc.returncode == 143, rest[-3000:]
  assert rest.splitlines()[-1] == 'Stopped by SIGTERM. Exit status 143.', rest[-3000:]


def test_the_start_up_guard_takes_ctrl_c_only_where_a_command_starts(monkeypatch):
  """The guard takes the signal in the command's own module and while `python -m` imports its
  packages (sys.argv[0] '-m'); a library import, a thread, or a command started with Ctrl-C
  ignored (in the background) keep their handler, and it is given back when the guard ends."""
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from data import errors as data_errors  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(data_errors, '_ignores_ctrl_c_at_exit', True)  # not pytest's exit
  def handler_inside(module, argv0='main.py'):
    monkeypatch.setattr(sys, 'argv', [argv0])
    with data_errors.ctrl_c_while_starting(module):
      return signal.getsignal(signal.SIGINT)

  own = signal.getsignal(signal.SIGINT)
  assert handler_inside('__main__') is not own
  assert handler_inside('data.convert', argv0='-m') is not own
  assert handler_inside('data.convert') is own
  assert signal.getsignal(signal.SIGINT) is own
  in_thread = []
  thread = threading.Thread(target=lambda: in_thread.append(handler_inside('__main__')))
  thread.start()
  thread.join()
  assert in_thread == [own]
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    assert handler_inside('__main__') is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, own)


def test_a_ctrl_c_dropped_as_a_command_leaves_its_guard_still_interrupts(capsys):
  """A Ctrl-C dropped in the last moments of the guarded code (before it was sent again) was
  lost when the guard ended: the command ran on with no message (review)."""
  from data import errors as data_errors  # pylint: disable=g-import-not-at-top

  class Dropping:
    def __del__(self):
      raise KeyboardInterrupt  # Python drops it, as one in JAX's gc callback

  with pytest.raises(KeyboardInterrupt):
    with data_errors.ctrl_c_never_dropped():  # cli.user_errors_in_one_line's guard
      Dropping()
  time.sleep(0.2)  # no Ctrl-C is sent later either: the test would end in KeyboardInterrupt


# A command guarded by `sigterm_in_one_line`, stopped by the test's SIGTERM once it has printed
# 'ready': with an earlier result file and pictures folder it is replacing, inside Python (a
# sleep) or inside C code that does not return for a long while (a key derivation, which lets go
# of the GIL, as a compile or a collective does).
_SIGTERM_GUARDED = '''
import hashlib, multiprocessing, os, signal, sys, threading, time
from data import errors as data_errors

WHERE, OUT = sys.argv[1], sys.argv[2]
if WHERE == 'started with SIGTERM ignored':
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
if WHERE == 'in forked children':  # a child slow to start: signalled before the guard's reset
  os.register_at_fork(after_in_child=lambda: time.sleep(1))
with data_errors.sigterm_in_one_line():
  with data_errors.replacing(os.path.join(OUT, 'results.json')) as f:
    f.write('new')
    with data_errors.replacing_folder(os.path.join(OUT, 'pictures')) as pictures:
      open(os.path.join(pictures, '000.png'), 'w').close()
      if WHERE == 'in forked children':
        children = [multiprocessing.get_context('fork').Process(target=time.sleep, args=(60,))]
        forker = threading.Thread(target=children[0].start)  # a fork from another thread
        forker.start()
        forker.join()
        children.append(multiprocessing.get_context('fork').Process(target=time.sleep,
                                                                    args=(60,)))
        children[1].start()
        print('children', *(child.pid for child in children), file=sys.stderr)
      print('printed, not flushed')  # a file: block-buffered
      print('ready', file=sys.stderr, flush=True)
      if WHERE == 'inside C code':
        hashlib.pbkdf2_hmac('sha256', b'key', b'salt', 200_000_000)  # minutes
      elif WHERE == 'in forked children':
        for child in children:
          child.join()
        print('exit codes', *(child.exitcode for child in children), flush=True)
        time.sleep(2)  # longer than the watcher's grace
      else:
        time.sleep(2 if WHERE == 'started with SIGTERM ignored' else 60)
print('went on', signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN),
      signal.set_wakeup_fd(-1), flush=True)
'''


def _guarded_until_ready(where, folder):
  """The _SIGTERM_GUARDED process writing into `folder`/work, once it has said 'ready' on
  stderr, and a function giving its stdout and stderr after it ended."""
  (folder / 'work').mkdir(exist_ok=True)
  out, err = folder / 'stdout', folder / 'stderr'
  with open(out, 'w') as stdout, open(err, 'w') as stderr:
    proc = subprocess.Popen([sys.executable, '-c', _SIGTERM_GUARDED, where, str(folder / 'work')],
                            cwd=REPO_ROOT, env=subprocess_env(0), stdout=stdout, stderr=stderr)
  deadline = time.monotonic() + 60
  while 'ready\n' not in err.read_text():
    assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-3000:]
    time.sleep(0.05)

  def ended():
    proc.wait(timeout=60)
    return out.read_text(), err.read_text()

  return proc, ended


@pytest.mark.parametrize('where', ['in Python', 'inside C code', 'twice'])
def test_a_sigterm_ends_a_guarded_command_in_one_line_and_loses_nothing(tmp_path, where):
  """eval, predict, export, the data report and the other commands but training and the
  converter ended on a SIGTERM (a scheduler's time limit) with no line, leaving the new copies
  of the files they were replacing. Now: one line, status 143, the earlier files as they were,
  no new copy left; within about a second where the main thread is inside C code, where Python
  runs no handler (a handler that raised an exception instead was dropped in gc callbacks, and
  never ran inside C code: review of an earlier attempt)."""
  work = tmp_path / 'work'
  (work / 'pictures').mkdir(parents=True)
  (work / 'results.json').write_text('earlier')
  (work / 'pictures' / 'earlier.png').write_text('earlier')
  proc, ended = _guarded_until_ready(where, tmp_path)
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  if where == 'twice':
    proc.send_signal(signal.SIGTERM)
  out, err = ended()
  assert time.monotonic() - start < 10
  assert (proc.returncode, out, err) == (143, 'printed, not flushed\n',
                                         'ready\nStopped by SIGTERM. Exit status 143.\n')
  assert sorted(os.listdir(work)) == ['pictures', 'results.json']
  assert (work / 'results.json').read_text() == 'earlier'
  assert os.listdir(work / 'pictures') == ['earlier.png']


def test_a_sigterm_guard_leaves_forked_children_and_an_ignored_sigterm_as_they_were(tmp_path):
  """A pool's worker forked inside the guard (from the main thread or another) ends on SIGTERM as
  Python's default ends it, without the command's line and without waking the command's watcher
  through the wake-up descriptor it inherits (which then ended the command), also when the
  signal comes before the child has reset them (CI, under load: the command ended); a command
  started with SIGTERM ignored (in the background) ignores it still; the guard gives the handler
  and the descriptor back as it ends."""
  proc, ended = _guarded_until_ready('in forked children', tmp_path)
  for pid in (tmp_path / 'stderr').read_text().split('\n')[-3].split()[1:]:
    os.kill(int(pid), signal.SIGTERM)
  out, err = ended()
  assert (proc.returncode, out) == (
      0, 'printed, not flushed\nexit codes -15 -15\nwent on True -1\n'), err[-3000:]
  assert 'SIGTERM' not in err and (tmp_path / 'work' / 'results.json').read_text() == 'new'
  proc, ended = _guarded_until_ready('started with SIGTERM ignored', tmp_path)
  proc.send_signal(signal.SIGTERM)
  out, err = ended()
  assert (proc.returncode, out) == (0, 'printed, not flushed\nwent on True -1\n'), err[-3000:]


def _ended_by_a_sigterm_once_ready(code, *args, settle=0.0):
  """`python -c code *args`, sent a SIGTERM `settle` s after it printed 'ready', once it ended
  (its stderr unread until then)."""
  proc = subprocess.Popen([sys.executable, '-c', code, *args], cwd=REPO_ROOT,
                          env=subprocess_env(0), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  try:
    assert proc.stdout.readline() == 'ready\n', proc.stderr.read()
    time.sleep(settle)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
  finally:
    proc.kill()
    proc.wait()
  return proc


def test_a_sigterm_during_a_progress_bar_says_its_line_below_the_bar():
  """`--mode=features` (and windowed predict) draw a tqdm bar, whose line ends without a
  newline: a SIGTERM's line came glued to the bar's end (README review)."""
  code = '''
import time
from data import errors
from salinet_jax import console
with errors.sigterm_in_one_line(), console.progress_bar(total=10, desc='features') as bar:
  bar.update(1)
  bar.refresh()
  print('ready', flush=True)
  time.sleep(60)
'''
  proc = _ended_by_a_sigterm_once_ready(code)
  stderr = proc.stderr.read()
  assert proc.returncode == 143, stderr[-3000:]
  last = stderr.split('\n')
  assert last[-1] == '' and last[-2] == 'Stopped by SIGTERM. Exit status 143.', stderr[-3000:]
  assert 'features: ' in last[-3], stderr[-3000:]  # the bar stays, above the line


def test_a_sigterm_ends_a_guarded_command_whose_stderr_pipe_is_full():
  """A parent that does not read the command's stderr pipe (Popen and wait, no communicate)
  and sends SIGTERM on its own time-out: Python's default ended the command at once; the guard's
  line, written to a full pipe, must not keep it running (review: it hung until SIGKILL)."""
  code = '''
import sys
from data import errors
with errors.sigterm_in_one_line():
  print('ready', flush=True)
  while True:
    sys.stderr.write('a chatty log line ' * 4 + '\\n')
'''
  # A second on: the stderr pipe, never read, is full, and the command waits in a write.
  assert _ended_by_a_sigterm_once_ready(code, settle=1).returncode == 143


@pytest.mark.parametrize('second', ['SIGTERM', 'SIGINT'])
def test_a_second_signal_while_a_sigterm_ends_the_command_changes_nothing(second):
  """A second SIGTERM (a scheduler signals the process, then its group) while the first one's
  end waits on a flush ran the handler again inside that wait, which then waited for good for
  the end it had interrupted; a Ctrl-C there ended the command in a KeyboardInterrupt
  traceback."""
  code = '''
import sys, time
from data import errors
quietly = errors._quietly
def waiting(action, wait):  # a flush that takes its time
  time.sleep(0.5)
  quietly(action, wait)
errors._quietly = waiting
with errors.sigterm_in_one_line():
  print('ready', flush=True)
  time.sleep(60)
'''
  proc = subprocess.Popen([sys.executable, '-c', code], cwd=REPO_ROOT, env=subprocess_env(0),
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    assert proc.stdout.readline() == 'ready\n', proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(getattr(signal, second))
    proc.wait(timeout=30)
  finally:
    proc.kill()
    proc.wait()
  assert (proc.returncode, proc.stderr.read()) == (143, 'Stopped by SIGTERM. Exit status 143.\n')


def test_a_sigterm_between_a_folder_s_two_renames_leaves_a_folder_in_place(tmp_path):
  """`_folder_into_place` moves the earlier folder aside, then the new one in: a Ctrl-C between
  the two renames puts the earlier one back. The guard's end removed the new one and left the
  earlier one only as a hidden `.pictures.old-*` (review): `pictures` was gone."""
  code = '''
import os, sys, time
from data import errors
work = sys.argv[1]
rename = os.rename
def slow_rename(a, b):
  rename(a, b)
  if '.old-' in b:  # the earlier folder is aside, the new one not yet in place
    print('ready', flush=True)
    time.sleep(30)
errors.os.rename = slow_rename
with errors.sigterm_in_one_line():
  with errors.replacing_folder(os.path.join(work, 'pictures')) as new:
    open(os.path.join(new, 'new.png'), 'w').close()
'''
  (tmp_path / 'pictures').mkdir()
  (tmp_path / 'pictures' / 'earlier.png').write_text('earlier')
  assert _ended_by_a_sigterm_once_ready(code, str(tmp_path)).returncode == 143
  assert sorted(os.listdir(tmp_path)) == ['pictures'], os.listdir(tmp_path)
  assert os.listdir(tmp_path / 'pictures') == ['earlier.png']  # put back


@pytest.mark.parametrize('handler', ['kept', 'given back', 'given back as it takes it'])
def test_a_sigterm_a_handler_set_inside_the_guard_takes_is_left_to_it(handler):
  """A handler set inside the block (training's takes SIGTERM as a flag, and saves) took the
  SIGTERM: its clean-up, longer than SIGTERM_GRACE_S, is not cut short by the watcher with the
  guard's line and status, whether the handler stays set through it or, as training's, gives
  the guard's back first (its loop ends, then the run closes): the watcher cut that at 1 s, as
  the signal it woke for had been taken. Where the guard's is back before the watcher looks
  (a SIGTERM as the loop ends; review), only the handler's word (`sigterm_taken_inside`) tells."""
  code = '''
import signal, sys, time
from data import errors
taken = []

def take(signum, frame):
  taken.append(1)
  if sys.argv[1] == 'given back as it takes it':
    errors.sigterm_taken_inside()
    signal.signal(signal.SIGTERM, guards)

with errors.sigterm_in_one_line():
  guards = signal.signal(signal.SIGTERM, take)
  print('ready', flush=True)
  while not taken:
    time.sleep(0.01)
  if sys.argv[1] == 'given back':
    signal.signal(signal.SIGTERM, guards)
  time.sleep(2)  # its clean-up
  print('cleaned up', file=sys.stderr, flush=True)
  sys.exit(7)
'''
  proc = _ended_by_a_sigterm_once_ready(code, handler)
  assert (proc.returncode, proc.stderr.read()) == (7, 'cleaned up\n')
