"""Real multi-process data parallelism and exact resume.

Two processes with two CPU devices each, joined through jax.distributed (gloo collectives),
must give the same losses as one process with four devices; a stopped and resumed run must give
the same loss curve as an uninterrupted one.
"""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from salinet_jax import train
from tests.conftest import REPO_ROOT
from tests.conftest import subprocess_env


WORKER = textwrap.dedent('''
    import sys
    from salinet_jax import parallel
    parallel.initialize_distributed()
    import jax, numpy as np
    from data import pipeline
    from salinet_jax import train
    from tests.conftest import tiny_config
    config = tiny_config(sys.argv[1])
    config.data.train_sharding = 'global_order'
    trainer = train.training_engine(config)
    assert jax.device_count() == 4, jax.devices()
    state = trainer.fresh_state()
    batches = pipeline.as_numpy(pipeline.train_dataset(config, seed=11))
    losses = []
    for _ in range(3):
      batch = parallel.to_global(next(batches), trainer.mesh)
      state, metrics = trainer.train_step(state, batch, jax.random.key(5))
      losses.append(float(metrics['loss']))
    if jax.process_index() == 0:
      np.save(sys.argv[3], np.array(losses))
''')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process_with_four_devices(tiny_data_dir, tmp_path):
  single_out = tmp_path / 'single.npy'
  proc = subprocess.run([sys.executable, '-c', WORKER, str(tiny_data_dir), str(tmp_path / 'a'),
                         str(single_out)], cwd=REPO_ROOT, env=subprocess_env(4), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]

  multi_out = tmp_path / 'multi.npy'
  address = f'127.0.0.1:{_free_port()}'
  procs = [subprocess.Popen(
      [sys.executable, '-c', WORKER, str(tiny_data_dir), str(tmp_path / f'b{i}'), str(multi_out)],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=subprocess_env(2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(i))) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  np.testing.assert_allclose(np.load(multi_out), np.load(single_out), rtol=1e-5, atol=1e-6)


def _scalars(workdir: str, tag: str):
  values = {}
  for name in os.listdir(workdir):
    if not name.startswith('events.out.tfevents'):
      continue
    for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def test_stopped_and_resumed_run_repeats_the_uninterrupted_loss_curve(config, tmp_path,
                                                                       monkeypatch):
  """Exact resume with precise BN on: the stop comes right after an evaluation (step 2) whose
  precise BN statistics were computed; they must not take batches from the training stream."""
  config.num_train_steps = 4
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 4
  config.precise_bn_batches = 2
  uninterrupted = str(tmp_path / 'uninterrupted')
  train.train_and_evaluate(config, uninterrupted)

  interrupted = str(tmp_path / 'interrupted')
  # A preemption after step 2 (what SIGTERM triggers): save, stop, then rerun the same config.
  monkeypatch.setattr(train.PreemptionWatcher, 'should_stop', lambda self, step: step == 2)
  assert train.train_and_evaluate(config, interrupted) == {'preempted_at_step': 2}
  monkeypatch.undo()
  train.train_and_evaluate(config, interrupted)

  expected = _scalars(uninterrupted, 'loss')
  got = _scalars(interrupted, 'loss')
  assert sorted(expected) == [1, 2, 3, 4] and sorted(got) == [1, 2, 3, 4]
  for step in (1, 2, 3, 4):  # bit-identical: same batches, dropout keys and optimizer state
    assert got[step] == expected[step], (step, got, expected)
