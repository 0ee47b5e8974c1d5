"""Checkpoint retention (last k + best), metadata, and robustness to an interrupted save."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from salinet_jax import checkpoints


def _state(value: float):
  return {'params': {'w': jnp.full((3,), value)}, 'step': jnp.asarray(int(value))}


@pytest.fixture
def ckpt_config():
  config = base.get_base_config().checkpoint
  config.keep_last = 2
  config.async_save = False
  return config


def test_keeps_last_k_plus_best_and_selects_best(tmp_path, ckpt_config):
  config = base.get_base_config()
  manager = checkpoints.create_manager(str(tmp_path), ckpt_config)
  for step, top1 in [(1, 0.3), (2, 0.9), (3, 0.5), (4, 0.4), (5, 0.6)]:
    checkpoints.save(manager, step, _state(step), metrics={'val_top1': top1}, config=config)
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 4, 5]  # the last two, plus the best (0.9 at step 2)
  assert checkpoints.select_step(manager, 'best') == 2
  assert checkpoints.select_step(manager, 'latest') == 5
  restored = checkpoints.restore(manager, 2, _state(0))
  np.testing.assert_array_equal(restored['params']['w'], [2, 2, 2])
  meta = checkpoints.metadata(manager, 2)
  assert meta['step'] == 2 and meta['metrics'] == {'val_top1': 0.9}
  assert '"batch_size"' in meta['config']
  with pytest.raises(ValueError, match="'best', 'latest' or a checkpoint path"):
    checkpoints.select_step(manager, 'newest')
  manager.close()


def test_explicit_path_and_missing_checkpoints(tmp_path, ckpt_config):
  manager = checkpoints.create_manager(str(tmp_path), ckpt_config)
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    checkpoints.select_step(manager, 'best')
  checkpoints.save(manager, 7, _state(7))
  manager.wait_until_finished()
  manager.close()
  path = os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '7')
  restored = checkpoints.restore_from_path(path, _state(0))
  assert int(restored['step']) == 7
  with pytest.raises(FileNotFoundError, match='does not exist'):
    checkpoints.restore_from_path(str(tmp_path / 'nope'), _state(0))


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path, ckpt_config):
  manager = checkpoints.create_manager(str(tmp_path), ckpt_config)
  checkpoints.save(manager, 1, _state(1))
  manager.wait_until_finished()
  manager.close()
  # What a crash mid-save leaves behind: a temporary directory with partial content.
  partial = os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '2.orbax-checkpoint-tmp-123')
  os.makedirs(os.path.join(partial, 'default'))
  with open(os.path.join(partial, 'default', 'garbage'), 'w') as f:
    f.write('half a checkpoint')
  manager = checkpoints.create_manager(str(tmp_path), ckpt_config)
  assert manager.latest_step() == 1
  restored = checkpoints.restore(manager, 1, _state(0))
  np.testing.assert_array_equal(restored['params']['w'], [1, 1, 1])
  manager.close()
