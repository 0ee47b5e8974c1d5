"""train_and_evaluate / evaluate end to end on tiny real records: checkpoints, resume, DP mesh."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from salinet_jax import checkpoints
from salinet_jax import train

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_train_then_evaluate_writes_checkpoints_metrics_and_json(config, tmp_path):
  workdir = str(tmp_path / 'run')
  config.precise_bn_batches = 1
  results = train.train_and_evaluate(config, workdir)
  assert results['step'] == 2 and results['num_videos'] == 7
  assert 0.0 <= results['top1'] <= results['top5'] <= 1.0
  # Logged for SaliNet models; at this 16 px size S_final is a single position, so only >= 0.
  assert results['saliency_final_spatial_std'] >= 0
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '2'))
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))

  config.eval.checkpoint = 'latest'
  evaluated = train.evaluate(config, workdir)
  with open(os.path.join(workdir, 'eval_val.json')) as f:
    written = json.load(f)
  for key in ('top1', 'top5', 'num_videos', 'step'):
    assert written[key] == evaluated[key]
  assert written['num_videos'] == 7 and written['step'] == 2
  assert written['top1'] == pytest.approx(results['top1'])
  pictures = sorted(os.listdir(os.path.join(workdir, 'visualizations_val')))
  assert len(pictures) == 4 and all(p.endswith('.png') for p in pictures)  # S_final overlays


def test_resume_continues_from_saved_step_with_identical_optimizer_state(config, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)  # stops at num_train_steps = 2, checkpoint at 2

  trainer = train.Trainer(config, workdir)
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  saved = checkpoints.restore(manager, 2, trainer.abstract_state())
  manager.close()
  assert int(saved.step) == 2
  fresh = trainer.fresh_state()
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(saved.opt_state),
                                                       _leaves(fresh.opt_state)))

  config.num_train_steps = 4
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  train.train_and_evaluate(config, workdir)
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  assert manager.all_steps() == [2, 4]
  resumed = checkpoints.restore(manager, 4, trainer.abstract_state())
  manager.close()
  assert int(resumed.step) == 4
  # The optax schedule counter went on from 2 to 4: the run resumed, it did not restart.
  counts = [int(x) for x in jax.tree.leaves(resumed.opt_state) if np.ndim(x) == 0]
  assert counts and all(c == 4 for c in counts)


def test_nonfinite_loss_stops_training_and_keeps_last_good_checkpoint(config, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  config.num_train_steps = 6
  config.log_every_steps = 1
  config.optimizer.base_learning_rate = 1e38
  config.optimizer.schedule = 'constant'
  with pytest.raises(train.NonFiniteLossError, match='last good checkpoint'):
    train.train_and_evaluate(config, workdir)
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  assert manager.all_steps() == [2]
  manager.close()


def test_batch_that_does_not_divide_over_devices_fails_with_advice():
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r'config.batch_size=6 is not divisible by the 4 devices'):
    parallel.check_batch_size(6, 4, 'config.batch_size')
  parallel.check_batch_size(8, 4, 'config.batch_size')


WORKER = textwrap.dedent('''
    import sys
    import jax, numpy as np
    from data import pipeline
    from salinet_jax import parallel, train
    from tests.conftest import tiny_config
    config = tiny_config(sys.argv[1])
    trainer = train.Trainer(config, sys.argv[2])
    assert jax.device_count() == int(sys.argv[3]), jax.devices()
    state = trainer.fresh_state()
    batches = pipeline.as_numpy(pipeline.train_dataset(config, seed=11))
    rng = jax.random.key(5)
    losses = []
    for _ in range(2):
      state, metrics = trainer.train_step(state, parallel.to_global(next(batches), trainer.mesh), rng)
      losses.append(float(metrics['loss']))
    leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]
    np.savez(sys.argv[4], losses=np.array(losses), *leaves)
''')


def _run_worker(data_dir, tmp_path, devices: int):
  out = tmp_path / f'result_{devices}.npz'
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             PYTHONPATH=str(REPO_ROOT))
  proc = subprocess.run(
      [sys.executable, '-c', WORKER, str(data_dir), str(tmp_path / f'w{devices}'), str(devices),
       str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return np.load(out)


def test_four_device_mesh_matches_one_device(tiny_data_dir, tmp_path):
  one = _run_worker(tiny_data_dir, tmp_path, 1)
  four = _run_worker(tiny_data_dir, tmp_path, 4)
  np.testing.assert_allclose(one['losses'], four['losses'], atol=1e-5, rtol=1e-5)
  keys = [k for k in one.files if k != 'losses']
  assert len(keys) > 20
  for key in keys:
    np.testing.assert_allclose(one[key], four[key], atol=1e-5, rtol=1e-5, err_msg=key)
