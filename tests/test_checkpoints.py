"""Checkpoints a run can trust: retention, metadata, checksums, finite states, clear failures."""

import errno
import gc
import hashlib
import json
import os
import pathlib
import re
import shutil
import sys
import threading
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from salinet_jax import checkpoints
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import workdir
from tests.conftest import fill_disk


def _state(value: float, width: int = 3):
  return {'params': {'w': jnp.full((width,), value)}, 'batch_stats': {},
          'opt_state': {'m': jnp.zeros((width,))}, 'step': jnp.asarray(int(value))}


def _random_state(value: float, width: int = 4096):
  """A state whose arrays do not compress away, so they live in orbax's data files."""
  state = _state(value, width)
  state['params']['w'] = state['params']['w'] + np.random.default_rng(0).normal(size=width)
  return state


# How the test steps' evaluations were made (what 'best' compares across steps).
VAL_EVALUATION = {'split': 'val', 'num_videos': 4, 'num_labeled': 4, 'views_per_video': 2,
                  'view_reduction': 'sum of logits'}


@pytest.fixture
def ckpt_config():
  config = base.get_base_config().checkpoint
  config.keep_last = 2
  config.async_save = False
  return config


def _largest_array_file(step_dir):
  files = [os.path.join(parent, name) for parent, _, names in
           os.walk(os.path.join(step_dir, checkpoints.ITEM_DIR)) for name in names]
  return max(files, key=os.path.getsize)


def _disk_full(names_the_file=True):
  """A stand-in for `checkpoints.write_checksums` that fails as a full disk does, with or
  without the path in the OS error."""
  def write_checksums(step_dir):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([step_dir] if names_the_file else []))
  return write_checksums


def _corrupt(path, offset=0):
  """Writes 64 random bytes into `path` (what a bad disk or a half-copied file leaves)."""
  with open(path, 'r+b') as f:
    f.seek(offset)
    f.write(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes())


def test_keeps_last_k_plus_best_and_selects_best(tmp_path, ckpt_config):
  config = base.get_base_config()
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step, top1 in [(1, 0.3), (2, 0.9), (3, 0.5), (4, 0.4), (5, 0.6)]:
    store.save(step, _state(step), metrics={'val_top1': top1}, config=config,
               classes=['a', 'b'])
  assert store.steps() == [2, 4, 5]  # the last two, plus the best (0.9 at step 2)
  assert store.select_step('best') == 2
  assert store.select_step('latest') == 5
  restored = store.restore(2, _state(0))
  np.testing.assert_array_equal(restored['params']['w'], [2, 2, 2])
  # What evaluation reads: the step and the variables, the optimizer state left out.
  restored = store.restore(2, checkpoints.without_optimizer_state(engine.TrainState(**_state(0))))
  np.testing.assert_array_equal(restored.params['w'], [2, 2, 2])
  assert int(restored.step) == 2 and restored.opt_state == {'m': checkpoints.ocp.PLACEHOLDER}
  meta = store.metadata(2)
  assert meta['step'] == 2 and meta['metrics'] == {'val_top1': 0.9}
  assert '"batch_size"' in meta['config'] and meta['classes'] == ['a', 'b']
  with pytest.raises(ValueError, match="'best', 'latest' or a checkpoint path"):
    store.select_step('newest')
  store.close()


def test_steps_saved_without_an_evaluation_follow_keep_last(tmp_path, ckpt_config):
  """Only evaluated steps compete for the best: unevaluated ones kept for it would pile up
  (every save between evaluations, forever)."""
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step in (1, 2, 3, 4):
    store.save(step, _state(step))
  assert store.steps() == [3, 4]
  store.save(5, _state(5), metrics={'val_top1': 0.5})
  for step in (6, 7):
    store.save(step, _state(step))
  assert store.steps() == [5, 6, 7]
  store.close()


@pytest.mark.parametrize('field,value,said', [
    ('keep_last', 0, 'keep_last must be at least 1, got 0: a run resumes from its newest '
                     'checkpoint, which would be deleted'),
    ('best_metric', 'val_top5', "best_metric must be one of ('val_top1',)"),
    ('best_mode', 'min', "best_mode must be 'max' (the best metric is an accuracy: 'min' "
                         'would keep the worst step)')])
def test_checkpoint_settings_that_would_lose_or_misjudge_steps_are_refused(
    tmp_path, ckpt_config, field, value, said):
  """keep_last=0 deleted every step but the best (a preempted run said 'saved checkpoint step 11'
  of a step already gone); best_metric='val_top5' trained until the second save and failed there
  with a KeyError; best_mode='min' kept the worst step."""
  ckpt_config[field] = value
  with pytest.raises(errors.ConfigError, match=re.escape(f'config.checkpoint.{said}')):
    checkpoints.CheckpointStore(str(tmp_path), ckpt_config)


def test_every_committed_step_carries_checksums_of_its_array_files(tmp_path, ckpt_config):
  """Two asynchronous saves in a row each record their own step's checksums, of every file in
  the item's subfolders too, where orbax puts the array data (mutation audit: checksumming the
  top folder only, or a second save started before the first's callback, passed)."""
  ckpt_config.async_save = True  # recorded by orbax's callback before the step is committed
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _random_state(1))
  store.save(2, _random_state(2))
  store.wait()
  for step in (1, 2):
    step_dir = store.step_dir(step)
    item = os.path.join(step_dir, checkpoints.ITEM_DIR)
    with open(os.path.join(step_dir, checkpoints.CHECKSUMS_FILE)) as f:
      recorded = json.load(f)['files']
    assert recorded == checkpoints.file_checksums(item)
    assert set(recorded) == {os.path.relpath(os.path.join(parent, name), item)
                             for parent, _, names in os.walk(item) for name in names}
    assert os.path.relpath(_largest_array_file(step_dir), item) in recorded
    assert checkpoints.verify_step_dir(step_dir) == (True, '')
  assert any(os.sep in name for name in recorded)
  store.close()
  # A file the checkpoint never wrote (mutation audit: its check could go unnoticed).
  stray = os.path.join(step_dir, checkpoints.ITEM_DIR, 'stray')
  with open(stray, 'wb') as f:
    f.write(b'0')
  assert checkpoints.verify_step_dir(step_dir) == (False, f'{stray} was not part of the '
                                                   'checkpoint')


def test_checksums_cover_every_byte_of_a_file_larger_than_one_read(tmp_path):
  """Array files are read in chunks: a byte changed past the first chunk changes the checksum
  (mutation audit: hashing the first chunk only passed; the test checkpoints are small)."""
  data = tmp_path / 'item' / 'ocdbt.process_0' / 'd'
  data.mkdir(parents=True)
  content = bytearray(np.random.default_rng(0).integers(0, 256, (1 << 22) + 100, dtype=np.uint8))
  (data / 'array').write_bytes(bytes(content))
  name = os.path.join('ocdbt.process_0', 'd', 'array')
  before = checkpoints.file_checksums(str(tmp_path / 'item'))
  assert before == {name: hashlib.sha256(content).hexdigest()}
  content[-1] ^= 1
  (data / 'array').write_bytes(bytes(content))
  assert checkpoints.file_checksums(str(tmp_path / 'item'))[name] != before[name]


def test_corrupt_checkpoint_fails_restore_and_resume_falls_back_to_an_intact_one(
    tmp_path, ckpt_config, caplog):
  """Array data garbled in the two newest of three steps: each is named corrupt with the file's
  path, only the step that verifies is offered instead, and resume takes it and says so (mutation
  audit: listing the other steps unverified, a silent fallback and a file named without its
  folder passed; the one file garbled here was orbax's JSON metadata, not an array's data)."""
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step in (1, 2, 3):
    store.save(step, _random_state(step))
  assert store.newest_intact_step() == 3
  damaged = {}
  for step in (3, 2):
    damaged[step] = _largest_array_file(store.step_dir(step))
    assert os.path.basename(os.path.dirname(damaged[step])) == 'd'  # an array's data file
    _corrupt(damaged[step], offset=100)
    assert store.newest_intact_step() == step - 1  # what a NaN stop or a failed save names
  assert store.verify(3) == (False, f'{damaged[3]} does not match its checksum')
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=rf'^Checkpoint step 3 in .* is corrupt: {re.escape(damaged[3])} does '
                     r'not match its checksum\. Intact steps: \[1\]; pass one'):
    store.restore(3, _random_state(0))
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'is corrupt: {re.escape(damaged[2])} does not match'):
    checkpoints.restore_from_path(store.step_dir(2), _random_state(0))

  caplog.set_level('WARNING', logger='absl')
  state, step = store.restore_for_resume(_random_state(0))
  assert step == 1
  np.testing.assert_array_equal(state['params']['w'], _random_state(1)['params']['w'])
  assert (f'Resuming from step 1, the newest intact checkpoint (corrupt steps [3, 2] moved to '
          f'{tmp_path / checkpoints.QUARANTINE_DIR}).') in caplog.text, caplog.text
  assert store.steps() == [1]  # the corrupt steps were moved out of the way ...
  moved = sorted(os.listdir(tmp_path / checkpoints.QUARANTINE_DIR))
  assert len(moved) == 2 and moved[0].startswith('2-') and moved[1].startswith('3-')  # ... kept
  store.save(2, _random_state(2))  # so training can save those step numbers again
  assert store.steps() == [1, 2]
  store.close()


def test_a_step_missing_an_array_file_or_with_unreadable_checksums_is_corrupt(tmp_path,
                                                                            ckpt_config):
  """An array file deleted, or checksums.json garbled, is damage named by its path: not a step
  that verifies, nor one 'written before checksums existed' (mutation audit: skipping missing
  files, or taking unreadable checksums as absent ones, passed)."""
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step in (1, 2, 3):
    store.save(step, _random_state(step))
  store.close()
  missing = _largest_array_file(store.step_dir(3))
  os.remove(missing)
  assert store.verify(3) == (False, f'{missing} is missing')
  garbled = os.path.join(store.step_dir(2), checkpoints.CHECKSUMS_FILE)
  _corrupt(garbled)
  intact, problem = store.verify(2)
  assert not intact and problem.startswith(f'{garbled} is unreadable ('), problem
  assert store.newest_intact_step() == 1
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  state, step = store.restore_for_resume(_random_state(0))
  assert step == 1 and store.steps() == [1]
  np.testing.assert_array_equal(state['params']['w'], _random_state(1)['params']['w'])
  store.close()


def test_a_workdir_whose_only_checkpoint_is_corrupt_says_training_starts_again(
    tmp_path, ckpt_config, caplog):
  """It said only that the step was skipped, then 'Initialising the model': not that the run
  starts again from step 0, nor where the corrupt step went."""
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(2, _state(2, width=4096))
  _corrupt(_largest_array_file(store.step_dir(2)), offset=100)
  caplog.set_level('WARNING', logger='absl')
  assert store.restore_for_resume(_state(0, width=4096)) == (None, None)
  assert (f'No intact checkpoint is left in {store.directory}: training starts again from step 0 '
          f'(corrupt steps [2] moved to {tmp_path / checkpoints.QUARANTINE_DIR}).') in caplog.text
  # As said (mutation audit: the step left in place passed): the next save of step 2 needs room.
  assert store.steps() == [] and not os.path.exists(store.step_dir(2))
  moved = os.listdir(tmp_path / checkpoints.QUARANTINE_DIR)
  assert len(moved) == 1 and moved[0].startswith('2-')
  store.close()


def test_the_folder_of_a_save_that_never_finished_is_removed_by_the_next_writer(
    tmp_path, ckpt_config, caplog):
  """A save that failed (a full disk) or was cut short (a kill) left its
  `N.orbax-checkpoint-tmp` folder in checkpoints/ for good, holding the disk space it took;
  the next run that writes there removes it and says so; evaluation only reads."""
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1))
  store.close()
  unfinished = pathlib.Path(store.directory) / f'2{checkpoints.TMP_SUFFIX}'
  (unfinished / 'default').mkdir(parents=True)
  (unfinished / 'default' / 'part').write_bytes(b'\0' * 1000)
  checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True).close()
  assert unfinished.exists()
  caplog.set_level('INFO', logger='absl')
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  assert not unfinished.exists() and store.steps() == [1]
  assert (f'Removed the folder of an unfinished save of step 2 in {store.directory} (a save '
          'that failed or was cut short).') in caplog.text, caplog.text
  store.close()


def test_a_step_whose_metadata_is_not_json_is_corrupt(tmp_path, ckpt_config):
  """Its config and class names are lost: not a checkpoint 'written before they were saved'."""
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1))
  store.save(2, _state(2))
  (pathlib.Path(store.step_dir(2)) / checkpoints.STEP_METADATA_FILE).write_text('')
  intact, problem = store.verify(2)
  metadata_file = os.path.join(store.step_dir(2), checkpoints.STEP_METADATA_FILE)
  assert not intact and problem.startswith(f'{metadata_file} is unreadable ('), problem
  with pytest.raises(checkpoints.CorruptCheckpointError, match='is unreadable'):
    checkpoints.restore_from_path(store.step_dir(2), _state(0))
  # Evaluating it ('latest', whose metadata eval reads first) named no intact step, as a
  # corrupt array file does (README audit).
  from salinet_jax import engine  # pylint: disable=g-import-not-at-top
  config = base.get_base_config()
  config.checkpoint = ckpt_config
  config.eval.checkpoint = 'latest'
  with pytest.raises(checkpoints.CorruptCheckpointError) as raised:
    engine.checkpoint_metadata(str(tmp_path), config)
  assert str(raised.value).startswith(f'Checkpoint {store.step_dir(2)} is corrupt: ')
  assert 'Intact steps: [1]; pass one as a path' in str(raised.value), str(raised.value)
  state, step = store.restore_for_resume(_state(0))
  assert step == 1 and int(state['step']) == 1
  store.close()


def _saved_without_checksums(directory, ckpt_config):
  """Steps 1 and 2, as a version without checksums wrote them (nothing to verify)."""
  store = checkpoints.CheckpointStore(directory, ckpt_config)
  store.save(1, _random_state(1))
  store.save(2, _random_state(2))
  for step in (1, 2):
    os.remove(os.path.join(store.step_dir(step), checkpoints.CHECKSUMS_FILE))
  return store


def test_restoring_a_step_without_checksums_says_it_is_unverified(tmp_path, ckpt_config,
                                                                    caplog):
  """A step written before checksums existed is restored, but never as if it had been verified
  (mutation audit: dropping the warning of eval's or resume's restore passed)."""
  store = _saved_without_checksums(str(tmp_path), ckpt_config)
  caplog.set_level('WARNING', logger='absl')
  unverified = f'unverified: {checkpoints.CHECKSUMS_FILE} is missing (written by an older version)'
  restored = store.restore(2, _random_state(0))
  np.testing.assert_array_equal(restored['params']['w'], _random_state(2)['params']['w'])
  assert f'Checkpoint step 2 in {store.directory}: {unverified}.' in caplog.text, caplog.text
  caplog.clear()
  checkpoints.restore_from_path(store.step_dir(1), _random_state(0))
  assert f'Checkpoint {store.step_dir(1)}: {unverified}.' in caplog.text, caplog.text
  caplog.clear()
  assert store.restore_for_resume(_random_state(0))[1] == 2
  assert (f'Checkpoint step 2: {unverified}; restoring it without verification.'
          in caplog.text), caplog.text
  store.close()


def _wait_for_abandoned_reads():
  """Lets orbax's reads abandoned by a failed restore end (and report) before the test ends."""
  time.sleep(1)
  gc.collect()


@pytest.mark.parametrize('damage', ['truncated_array_file', 'truncated_manifest',
                                    'truncated_orbax_metadata', 'garbled_orbax_metadata'])
def test_an_unverified_step_that_cannot_be_read_is_corrupt(damage, tmp_path, ckpt_config,
                                                           monkeypatch, caplog):
  """A step written before checksums existed (nothing to verify) whose files were cut short or
  garbled: a one-line corrupt-step error naming the step (eval), skipped and moved away
  (resume); the reports orbax's abandoned reads leave behind are dropped, other unraisable
  errors are not."""
  reported = []
  monkeypatch.setattr(sys, 'unraisablehook', reported.append)
  store = _saved_without_checksums(str(tmp_path), ckpt_config)
  item = os.path.join(store.step_dir(2), checkpoints.ITEM_DIR)
  if damage == 'truncated_array_file':
    os.truncate(_largest_array_file(store.step_dir(2)), 100)
    cause = r'OUT_OF_RANGE: Error reading "params\.w/0"'
  elif damage == 'truncated_manifest':
    manifest = os.path.join(item, 'manifest.ocdbt')
    os.truncate(manifest, os.path.getsize(manifest) // 2)
    cause = 'DATA_LOSS: Error opening'
  else:
    if damage == 'truncated_orbax_metadata':
      os.truncate(os.path.join(item, '_METADATA'), 90)
    else:
      _corrupt(os.path.join(item, '_METADATA'))
    cause = f'orbax metadata in {item} is not JSON'
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=rf'^Checkpoint step 2 in .* is corrupt: {cause}.*Intact steps: \[1\]'):
    store.restore(2, _random_state(0))
  with pytest.raises(checkpoints.CorruptCheckpointError, match=rf'/2 is corrupt: {cause}'):
    checkpoints.restore_from_path(store.step_dir(2), _random_state(0))

  state, step = store.restore_for_resume(_random_state(0))
  assert step == 1 and int(state['step']) == 1
  assert 'Checkpoint step 2 in' in caplog.text and 'Skipping it.' in caplog.text
  assert store.steps() == [1]
  moved = os.listdir(tmp_path / checkpoints.QUARANTINE_DIR)
  assert len(moved) == 1 and moved[0].startswith('2-')
  store.close()
  _wait_for_abandoned_reads()

  class Unraisable:  # what CPython hands sys.unraisablehook
    def __init__(self, error):
      self.exc_type, self.exc_value, self.exc_traceback = type(error), error, None
      self.err_msg = self.object = None

  sys.unraisablehook(Unraisable(RuntimeError('Event loop is closed')))
  sys.unraisablehook(Unraisable(ValueError('something else')))
  assert [str(u.exc_value) for u in reported] == ['something else']


def test_an_unverified_step_whose_compressed_array_is_garbled_is_corrupt(tmp_path, ckpt_config):
  """Garbled bytes inside a compressed array (a step without checksums to verify): TensorStore's
  'ZSTD_decompressStream() failed: ...' reached the user as a 160-line traceback (orbax re-raises
  it while handling it) instead of a corrupt step."""
  state = _state(1.0, 262144)  # compresses (unlike noise) into one data file of about 5 KB
  state['params']['w'] = jnp.tile(jnp.arange(4096.0) % 97, 64) + jnp.repeat(jnp.arange(64.0), 4096)
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, state)
  os.remove(os.path.join(store.step_dir(1), checkpoints.CHECKSUMS_FILE))
  data = os.path.join(store.step_dir(1), checkpoints.ITEM_DIR, 'ocdbt.process_0', 'd')
  for name in os.listdir(data):
    _corrupt(os.path.join(data, name), offset=os.path.getsize(os.path.join(data, name)) // 2)
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=r'/1 is corrupt: FAILED_PRECONDITION: Error reading "params\.w/0".*'
                           r'ZSTD_decompressStream\(\) failed'):
    checkpoints.restore_from_path(store.step_dir(1), _state(0.0, 262144))
  store.close()
  _wait_for_abandoned_reads()


def test_a_read_error_that_is_not_damage_keeps_its_traceback(tmp_path, ckpt_config,
                                                             monkeypatch):
  """A denied permission (or a full disk, a timeout) says nothing about the step: no 'corrupt',
  and resume moves nothing away."""
  store = _saved_without_checksums(str(tmp_path), ckpt_config)
  denied = ValueError(f'PERMISSION_DENIED: Error reading "params.w/0" in OCDBT database at '
                      f'local file "{store.step_dir(2)}/default/": Permission denied')

  def restore(*args, **kwargs):
    raise Exception('Encountered error while reading array index') from denied

  monkeypatch.setattr(checkpoints, '_read_item', restore)
  with pytest.raises(Exception, match='Encountered error') as raised:
    store.restore_for_resume(_random_state(0))
  assert not isinstance(raised.value, checkpoints.CheckpointError)
  assert store.steps() == [1, 2] and not (tmp_path / checkpoints.QUARANTINE_DIR).exists()
  store.close()


def _remove_file_by_file(step_dir, pause_s=0.05):
  """Removes a step as orbax does, its files (here one at a time) and then its folders."""
  for parent, _, names in list(os.walk(step_dir)):
    for name in names:
      os.remove(os.path.join(parent, name))
      time.sleep(pause_s)
  shutil.rmtree(step_dir)


def _removed_as_it_is_read(monkeypatch, step_dirs):
  """Makes the first read of each of `step_dirs` meet a run training in the workdir removing
  it: its largest array file goes at once, the rest in a thread. Returns the threads."""
  left = set(map(str, step_dirs))
  removers = []
  plain = checkpoints._restore_item

  def restore_item(item_dir, *args):
    step_dir = os.path.dirname(item_dir)
    if step_dir in left:
      left.discard(step_dir)
      os.remove(_largest_array_file(step_dir))
      remover = threading.Thread(target=_remove_file_by_file, args=(step_dir,))
      remover.start()
      removers.append(remover)
    return plain(item_dir, *args)

  monkeypatch.setattr(checkpoints, '_restore_item', restore_item)
  return removers


def test_a_step_removed_while_it_was_read_is_said_so_and_not_called_corrupt(
    tmp_path, ckpt_config, monkeypatch):
  """A run training in the workdir drops its older steps as it saves (keep_last): an evaluation,
  prediction or export reading such a step as it went called it corrupt, naming a missing file
  (and TensorStore's whole spec), or ended in orbax's FileNotFoundError traceback where its
  folder was already gone."""
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step in (1, 2, 3):
    store.save(step, _random_state(step))
  removers = _removed_as_it_is_read(monkeypatch, [store.step_dir(3), store.step_dir(2)])
  with pytest.raises(checkpoints.RemovedCheckpointError,
                     match=rf'^Checkpoint step 3 in {store.directory} was removed while it was '
                     r'read \(a run training in its workdir drops its older steps as it saves '
                     r'new ones\)\.$'):
    store.restore(3, _random_state(0))
  with pytest.raises(checkpoints.RemovedCheckpointError,
                     match=rf'^Checkpoint {store.step_dir(2)} was removed while it was read'):
    checkpoints.restore_from_path(store.step_dir(2), _random_state(0))
  gone = os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '1')
  shutil.rmtree(gone)  # before the read began
  with pytest.raises(checkpoints.RemovedCheckpointError, match='step 1 .* was removed'):
    store.restore(1, _random_state(0))
  for remover in removers:
    remover.join()
  store.close()


def test_best_or_latest_is_chosen_again_where_the_chosen_step_was_removed_while_read(
    tmp_path, ckpt_config, monkeypatch, caplog):
  """What eval, predict and export read for 'best' or 'latest': the step chosen next, said in a
  line, where a run training in the workdir removed the one chosen; an explicit step directory
  is not swapped for another."""
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step in (1, 2, 3):
    store.save(step, _random_state(step))
  store.close()
  removers = _removed_as_it_is_read(monkeypatch, [store.step_dir(3), store.step_dir(2)])

  def read_latest():
    reader = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
    try:
      return reader.restore(reader.select_step('latest'), _random_state(0))
    finally:
      reader.close()

  caplog.set_level('WARNING')
  state = checkpoints.chosen_again_if_removed('latest', read_latest)
  assert int(state['step']) == 1
  np.testing.assert_array_equal(state['params']['w'], _random_state(1)['params']['w'])
  said = [r.getMessage() for r in caplog.records if 'was removed while it was read' in
          r.getMessage()]
  assert len(said) == 2 and all(line.endswith('Choosing the latest step again.')
                                for line in said), said
  for remover in removers:
    remover.join()
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step in (4, 5):
    store.save(step, _random_state(step))
  store.close()
  removers = _removed_as_it_is_read(monkeypatch, [store.step_dir(5)])
  with pytest.raises(checkpoints.RemovedCheckpointError):
    checkpoints.chosen_again_if_removed(
        store.step_dir(5), lambda: checkpoints.restore_from_path(store.step_dir(5),
                                                                 _random_state(0)))
  for remover in removers:
    remover.join()
  # A run saving faster than the steps are read: the line after the last try says what to do.
  removers = _removed_as_it_is_read(monkeypatch, [store.step_dir(4), store.step_dir(1)])
  shutil.copytree(store.step_dir(4), store.step_dir(6))
  removers += _removed_as_it_is_read(monkeypatch, [store.step_dir(6)])
  with pytest.raises(checkpoints.RemovedCheckpointError,
                     match=r'step 1 .* was removed while it was read .*\. The latest step was '
                     r'removed as it was read 3 times in a row .*: read it once the run ends, or '
                     r'train with a larger config\.checkpoint\.keep_last\.$'):
    checkpoints.chosen_again_if_removed('latest', read_latest)
  for remover in removers:
    remover.join()


@pytest.mark.parametrize('missing', ['', '_CHECKPOINT_METADATA'])
def test_a_reader_opening_the_store_as_a_step_is_removed_lists_the_steps_again(
    tmp_path, ckpt_config, monkeypatch, missing):
  """orbax lists the steps, then looks at each (its folder, its metadata file): a step removed
  in between (a run training in the workdir) ended an evaluation in orbax's FileNotFoundError
  traceback before it chose a step (seen on a real run saving every step beside evaluations of
  'latest')."""
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  for step in (1, 2, 3):
    store.save(step, _state(step))
  store.close()
  opened = checkpoints._CheckpointManager
  removed = []

  def manager(directory, **kwargs):
    if not removed:  # as orbax looks at the step it listed, the run removes it
      removed.append(os.path.join(directory, '1'))
      shutil.rmtree(removed[0])
      raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT),
                              os.path.join(removed[0], missing).rstrip(os.sep))
    return opened(directory, **kwargs)

  monkeypatch.setattr(checkpoints, '_CheckpointManager', manager)
  reader = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  assert reader.steps() == [2, 3] and reader.select_step('latest') == 3
  reader.close()


def test_using_a_checkpoint_with_other_clip_settings_is_said(tmp_path, ckpt_config, caplog):
  """Eval or predict with other model or clip settings than training: allowed, with a warning;
  another number of eval views is a plain eval choice and says nothing."""
  config = base.get_base_config()
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1), config=config)
  store.close()
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  views = base.get_base_config()
  views.data.eval_num_clips += 1
  store.restore(1, _state(0), views)
  assert 'other model or clip settings' not in caplog.text
  longer = base.get_base_config()
  longer.data.num_frames += 2
  for restore in (lambda: store.restore(1, _state(0), longer),
                  lambda: checkpoints.restore_from_path(store.step_dir(1), _state(0), longer)):
    caplog.clear()
    restore()
    assert (f'data.num_frames: stored {config.data.num_frames}, given '
            f'{config.data.num_frames + 2}') in caplog.text
    assert 'trained with other model or clip settings; using the given ones' in caplog.text
  store.close()


def test_non_finite_states_are_never_saved(tmp_path, ckpt_config):
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1))
  bad = _state(2)
  bad['opt_state']['m'] = jnp.array([0.0, np.nan, 0.0])
  with pytest.raises(checkpoints.NonFiniteStateError,
                     match=r'step 2: its opt_state hold NaN or Inf.*last good checkpoint is '
                     r'step 1'):
    store.save(2, bad, metrics={'val_top1': 1.0})
  bad = _state(3)
  bad['params']['w'] = jnp.array([np.inf, 0.0, 0.0])
  with pytest.raises(checkpoints.NonFiniteStateError, match='params'):
    store.save(3, bad)
  # What training saves, a TrainState: its BatchNorm statistics are checked too, each of them
  # (mutation audit: a TrainState's batch_stats left out passed; the states above are dicts).
  bad = _state(4)
  bad['batch_stats'] = {'mean': jnp.zeros((3,)), 'var': jnp.array([1.0, np.nan, 1.0])}
  with pytest.raises(checkpoints.NonFiniteStateError, match=r'step 4: its batch_stats hold NaN'):
    store.save(4, engine.TrainState(**bad))
  assert store.steps() == [1] and store.select_step('best') == 1
  store.close()


def test_restoring_into_another_model_names_parameters_and_config_fields(tmp_path, ckpt_config):
  config = base.get_base_config()
  config.model.width = 16
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1, width=3), config=config)
  config.model.width = 8
  # Fields that sort before 'model.' and push it past the twelve listed (a user who repeats
  # few of the training overrides): the model's fields still come first.
  config.batch_size += 1
  config.checkpoint_every_steps += 1
  for field in ('num_frames', 'crop_size', 'eval_crop_size', 'eval_short_side', 'frame_stride',
                'train_min_scale', 'train_max_scale', 'eval_num_clips', 'eval_num_crops',
                'shuffle_buffer'):
    config.data[field] += 1
  with pytest.raises(checkpoints.CheckpointMismatchError) as raised:
    store.restore(1, _state(0, width=5), config)
  message = str(raised.value)
  assert 'params/w: stored (3,), model (5,)' in message
  differences = message.split('differs from the given one:\n  ')[1].splitlines()
  assert differences[0].strip() == 'model.width: stored 16, given 8'
  assert differences[-2].strip().startswith('... and ')
  store.close()


@pytest.mark.parametrize('error_names_its_file', [True, False])
def test_a_failed_save_names_the_cause_and_the_newest_intact_step(error_names_its_file, tmp_path,
                                                                   ckpt_config, monkeypatch):
  """The path is in the message also when the OS error carries none (a full disk hit by a
  `write()` call, as in orbax's metadata writer): then the step directory being written. The
  step named to resume from is the newest that verifies, not a newer corrupt one (mutation
  audit: naming the newest step passed)."""
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _random_state(1))
  store.save(2, _random_state(2))
  _corrupt(_largest_array_file(store.step_dir(2)), offset=100)

  monkeypatch.setattr(checkpoints, 'write_checksums', _disk_full(error_names_its_file))
  with pytest.raises(checkpoints.CheckpointSaveError,
                     match=r'step 3 failed: No space left on device at .*3\.orbax-checkpoint-tmp'
                     r'.*Newest intact checkpoint: step 1 in '):
    store.save(3, _random_state(3))
    store.wait()
  assert store.newest_intact_step() == 1


def test_closing_a_store_after_a_failed_save_raises_nothing_more(small_disk, ckpt_config):
  """A CI run of the disk-full test ended in a traceback, not in its one line: the training
  loop's failed save was said, then closing the store in its `finally` met orbax's own report
  of the same failed write (orbax raises a failed background write once to each thread that
  waits for it) and that replaced the line. Closing also finishes: no orbax thread is left."""
  fill_disk(small_disk)
  ckpt_config.async_save = True
  threads_before = set(threading.enumerate())
  store = checkpoints.CheckpointStore(str(small_disk / 'run'), ckpt_config)
  with pytest.raises(checkpoints.CheckpointSaveError, match='step 1 failed: No space left'):
    store.save(1, _state(1))
    store.wait()
  store.close()
  assert [thread.name for thread in set(threading.enumerate()) - threads_before] == []


def test_a_save_that_fails_in_the_background_is_said_when_the_store_closes(small_disk,
                                                                            ckpt_config):
  """Arrays larger than the disk: the save returns, its background write fails, and closing the
  store is the first to hear of it (orbax raised its own error there, a traceback)."""
  ckpt_config.async_save = True
  store = checkpoints.CheckpointStore(str(small_disk / 'run'), ckpt_config)
  noise = np.random.default_rng(0).random(2**19, np.float32)  # 2 MiB that do not compress
  store.save(1, {'params': {'w': jnp.asarray(noise)}, 'step': jnp.asarray(1)})
  with pytest.raises(checkpoints.CheckpointSaveError,
                     match=r'^Saving checkpoint step 1 failed: No space left on device at '
                     rf'{small_disk}/run/.*Newest intact checkpoint: none\.$'):
    store.close()


def test_a_save_that_fails_in_the_background_is_said_at_the_next_check(tmp_path, ckpt_config,
                                                                       monkeypatch):
  """The train loop checks the store after every step. Orbax logs a failed background save and
  forgets it there, so the check raised nothing and the run went on to its next save (audit);
  meanwhile the failed step was listed, and a NaN named it the last good checkpoint."""
  ckpt_config.async_save = True
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1.0))
  store.wait()

  monkeypatch.setattr(checkpoints, 'write_checksums', _disk_full())
  store.save(2, _state(2.0))
  deadline = time.monotonic() + 20
  with pytest.raises(checkpoints.CheckpointSaveError, match=re.escape(
      f'Saving checkpoint step 2 failed: No space left on device at {tmp_path}/checkpoints/'
      f'2{checkpoints.TMP_SUFFIX}. Newest intact checkpoint: step 1 in {tmp_path}/checkpoints.')):
    while time.monotonic() < deadline:
      store.check_for_errors()
      time.sleep(0.05)
  assert store.newest_intact_step() == 1
  store.close()  # said once: closing adds nothing


def test_a_non_finite_state_names_the_newest_intact_step_as_the_last_good_one(tmp_path,
                                                                                ckpt_config):
  """It named the latest step, though that one was corrupt (audit)."""
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _random_state(1.0))
  store.save(2, _random_state(2.0))
  _corrupt(_largest_array_file(store.step_dir(2)), offset=100)
  bad = _state(3.0)
  bad['params']['w'] = jnp.array([np.nan, 0.0, 0.0])
  with pytest.raises(checkpoints.NonFiniteStateError, match=re.escape(
      f'The last good checkpoint is step 1 in {tmp_path}/checkpoints;')):
    store.save(3, bad)
  store.close()


def test_explicit_path_and_missing_checkpoints(tmp_path, ckpt_config):
  with pytest.raises(checkpoints.NoCheckpointError, match='No checkpoint'):
    checkpoints.CheckpointStore(str(tmp_path / 'empty'), ckpt_config, read_only=True)
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  with pytest.raises(checkpoints.NoCheckpointError, match='No checkpoint'):
    store.select_step('best')
  store.save(7, _state(7))
  store.close()
  restored = checkpoints.restore_from_path(os.path.join(checkpoints.checkpoint_dir(
      str(tmp_path)), '7'), _state(0))
  assert int(restored['step']) == 7
  with pytest.raises(checkpoints.NoCheckpointError, match='does not exist'):
    checkpoints.restore_from_path(str(tmp_path / 'nope'), _state(0))
  step_dir = os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '7')
  assert int(checkpoints.restore_from_path(os.path.join(step_dir, checkpoints.ITEM_DIR),
                                           _state(0))['step']) == 7
  # A workdir or its checkpoints folder is not a step: the message names one there is.
  for folder in (str(tmp_path), checkpoints.checkpoint_dir(str(tmp_path))):
    with pytest.raises(checkpoints.NoCheckpointError,
                       match=rf'{folder} is not a checkpoint step directory .* such as '
                       rf'{step_dir}, or best / latest'):
      checkpoints.restore_from_path(folder, _state(0))
  # A misspelt 'best' or a bare step number was taken for a relative path that does not exist.
  for which in ('bset', '7'):
    with pytest.raises(errors.ConfigError,
                       match=rf"^config.eval.checkpoint must be 'best', 'latest' or the path of a "
                       rf"checkpoint step directory \(e.g. {step_dir}\), got '{which}'. Steps in "
                       rf'.*: \[7\].$'):
      checkpoints.require_checkpoint(str(tmp_path), which)


def test_restoring_another_optimizer_state_names_the_config_fields(tmp_path, ckpt_config):
  """Same parameters, another optimizer state structure: the mismatch error, not orbax's."""
  config = base.get_base_config()
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1), config=config)
  store.close()
  other = base.get_base_config()
  other.optimizer.name = 'adamw'
  # Fields that come before 'name' alphabetically but leave the state's structure as it is: the
  # first line names the optimizer (it named these three).
  other.optimizer.update(adam_b2=0.9, base_batch_size=7, base_learning_rate=0.5)
  target = {**_state(0), 'opt_state': {'m': jnp.zeros((3,)), 'v': jnp.zeros((3,))}}
  # An evaluation reads the variables only, but still refuses a stored optimizer state whose
  # structure the config does not build (another S2DNet stage, whose forward differs).
  variables_only = checkpoints.without_optimizer_state(engine.TrainState(**target))
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  for restore in (lambda: store.restore_for_resume(target, other),
                  lambda: checkpoints.restore_from_path(store.step_dir(1), target, other),
                  lambda: store.restore(1, variables_only, other),
                  lambda: checkpoints.restore_from_path(store.step_dir(1), variables_only, other)):
    with pytest.raises(checkpoints.CheckpointMismatchError) as refused:
      restore()
    assert str(refused.value).splitlines()[0].endswith(
        "does not fit the optimizer of the given config: its optimizer state has another "
        "structure (optimizer.name: stored 'sgd', given 'adamw').")
  store.close()


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path, ckpt_config):
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(1, _state(1))
  store.close()
  # What a crash mid-save leaves behind: a temporary directory with partial content.
  partial = os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '2.orbax-checkpoint-tmp-123')
  os.makedirs(os.path.join(partial, 'default'))
  with open(os.path.join(partial, 'default', 'garbage'), 'w') as f:
    f.write('half a checkpoint')
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  state, step = store.restore_for_resume(_state(0))
  assert step == 1
  np.testing.assert_array_equal(state['params']['w'], [1, 1, 1])
  store.close()


def test_best_says_when_the_runs_best_evaluation_is_no_longer_kept(tmp_path, ckpt_config, caplog):
  """With keep_best off, 'best' gave the best of the steps left on disk (step 5 here) as if it
  were the best the run's evaluations scored (step 2), without a word."""
  caplog.set_level('WARNING', logger='absl')

  def run(name, scores, keep_best):
    ckpt_config.keep_best = keep_best
    store = checkpoints.CheckpointStore(str(tmp_path / name), ckpt_config)
    for step, top1 in scores:
      store.save(step, _state(step), metrics=None if top1 is None else {'val_top1': top1})
    store.close()
    return checkpoints.CheckpointStore(str(tmp_path / name), ckpt_config, read_only=True)

  reader = run('off', [(1, 0.3), (2, 0.9), (3, 0.5), (4, None), (5, 0.6)], keep_best=False)
  assert checkpoints.read_step_metadata(str(tmp_path / 'off' / 'checkpoints' / '5'))[
      'best_seen'] == {'step': 2, 'val_top1': 0.9}
  assert reader.steps() == [4, 5] and reader.select_step('best') == 5
  assert (f"'best' of {tmp_path / 'off' / 'checkpoints'} is step 5 (val_top1 0.6), the best of "
          'the steps kept; the best evaluation of the run, step 2 (val_top1 0.9), was deleted '
          '(config.checkpoint.keep_best was off).') in caplog.text, caplog.text
  caplog.clear()

  # No kept step evaluated: 'best' falls back to the newest, and says what was lost.
  reader = run('none_kept', [(1, 0.9), (2, None), (3, None)], keep_best=False)
  assert reader.steps() == [2, 3] and reader.select_step('best') == 3
  assert (f"'best' of {tmp_path / 'none_kept' / 'checkpoints'} is the newest step, 3, as no step "
          'kept was evaluated; the best evaluation of the run, step 1 (val_top1 0.9), was '
          'deleted') in caplog.text, caplog.text
  caplog.clear()

  # Kept: nothing to say.
  assert run('on', [(1, 0.3), (2, 0.9), (3, 0.5), (4, 0.4)], keep_best=True
             ).select_step('best') == 2
  # A tie goes to the newest step, in the kept best and the run's best alike (mutation audit:
  # the older one as the run's best called the kept best a deleted step's stand-in).
  assert run('tie', [(1, 0.3), (2, 0.9), (3, 0.9)], keep_best=True).select_step('best') == 3
  assert checkpoints.read_step_metadata(str(tmp_path / 'tie' / 'checkpoints' / '3'))[
      'best_seen'] == {'step': 3, 'val_top1': 0.9}
  assert 'was deleted' not in caplog.text, caplog.text
  # Checkpoints saved before best_seen existed, resumed: it starts afresh from the resumed
  # evaluations, and a kept step that scored above them is no loss.
  run('older', [(1, 0.9), (2, 0.5), (3, 0.4)], keep_best=True)
  for step in (1, 2, 3):
    metadata_file = tmp_path / 'older' / 'checkpoints' / str(step) / '_CHECKPOINT_METADATA'
    metadata = json.loads(metadata_file.read_text())
    del metadata['custom_metadata']['best_seen']
    metadata_file.write_text(json.dumps(metadata))
  reader = run('older', [(4, 0.3), (5, 0.2), (6, 0.1)], keep_best=True)
  assert reader.steps() == [1, 5, 6] and reader.select_step('best') == 1
  assert 'was deleted' not in caplog.text, caplog.text


def test_best_says_when_the_steps_it_compares_were_evaluated_differently(tmp_path, ckpt_config,
                                                                         caplog):
  """A run resumed with another eval split saved train-split accuracies as val_top1 beside the
  val ones, and 'best' took the highest of them without a word."""
  caplog.set_level('WARNING', logger='absl')
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  val = {'split': 'val', 'num_videos': 7, 'num_labeled': 7, 'views_per_video': 2,
         'view_reduction': 'sum of logits'}
  for step, top1, evaluation in ((2, 0.14, val), (4, 0.25, dict(val, split='train')),
                                 (6, 0.5, dict(val, split='train'))):
    store.save(step, _state(step), metrics={'val_top1': top1}, evaluation=evaluation)
  store.close()
  reader = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  assert reader.select_step('best') == 6
  assert (f"'best' of {reader.directory} compares val_top1 scored by different evaluations, "
          "which do not compare (step(s) 2: split val; step(s) 4, 6: split train): pass a "
          "step's path to choose one.") in caplog.text, caplog.text
  caplog.clear()
  assert reader.select_step('latest') == 6 and not caplog.text
  reader.close()
  # A step saved before evaluations were recorded, and without a config, is not compared.
  store = checkpoints.CheckpointStore(str(tmp_path / 'upgraded'), ckpt_config)
  store.save(2, _state(2), metrics={'val_top1': 0.1})
  store.save(4, _state(4), metrics={'val_top1': 0.2}, evaluation=val)
  store.close()
  reader = checkpoints.CheckpointStore(str(tmp_path / 'upgraded'), ckpt_config, read_only=True)
  assert reader.select_step('best') == 4 and 'different evaluations' not in caplog.text


def test_best_says_when_the_steps_it_compares_were_evaluated_with_other_clip_settings(
    tmp_path, ckpt_config, caplog):
  """A run resumed with another eval crop, short side and frame stride scored its later step on
  other clips of the same videos and views, and 'best' compared it with the earlier ones
  without a word (train/eval audit). The fields come from each step's stored config; a step
  saved without one is not compared, nor are fields no evaluation reads (the learning rate, the
  all_frames trim, another sampler's target fps). A step saved before evaluations were recorded
  (step 2 here) is still compared by its stored config (audit: it was left out)."""
  caplog.set_level('WARNING', logger='absl')
  ckpt_config.keep_last = 4
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  first, resumed = base.get_base_config(), base.get_base_config()
  first.data.update(dict(eval_crop_size=48, eval_short_side=64, frame_stride=4))
  resumed.data.update(dict(eval_crop_size=24, eval_short_side=32, frame_stride=1))
  resumed.optimizer.base_learning_rate = 0.5
  # Read by no evaluation of these steps: pyslowfast's rate beside dense sampling, and the
  # all_frames trim, which only training clips take.
  resumed.data.target_fps, resumed.data.all_frames_trim_fraction = 10.0, 0.25
  for step, top1, config in ((2, 0.3, first), (4, 0.5, first), (6, 0.4, None), (8, 0.4, resumed)):
    store.save(step, _state(step), metrics={'val_top1': top1},
               evaluation=VAL_EVALUATION if step > 2 else None, config=config)
  store.close()
  reader = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  assert reader.select_step('best') == 4
  assert (f"'best' of {reader.directory} compares val_top1 scored by different evaluations, "
          "which do not compare (step(s) 2, 4: config.data.eval_crop_size 48, "
          "config.data.eval_short_side 64, config.data.frame_stride 4; step(s) 8: "
          "config.data.eval_crop_size 24, config.data.eval_short_side 32, "
          "config.data.frame_stride 1): pass a step's path to choose one.") in caplog.text, (
              caplog.text)
  reader.close()


def test_best_compares_only_the_steps_it_chooses_among(tmp_path, ckpt_config, caplog):
  """A step saved between evaluations (no val_top1) is never 'best', so its clip settings
  compare with nothing: no warning for a run whose evaluated steps agree (mutation audit:
  comparing unevaluated steps too passed)."""
  caplog.set_level('WARNING', logger='absl')
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  first, other = base.get_base_config(), base.get_base_config()
  other.data.eval_crop_size = first.data.eval_crop_size // 2
  store.save(2, _state(2), metrics={'val_top1': 0.3}, evaluation=VAL_EVALUATION, config=first)
  store.save(4, _state(4), metrics={'val_top1': 0.5}, evaluation=VAL_EVALUATION, config=first)
  store.save(6, _state(6), config=other)
  store.close()
  reader = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  assert reader.steps() == [2, 4, 6] and reader.select_step('best') == 4
  assert 'different evaluations' not in caplog.text, caplog.text
  reader.close()


def _steps_evaluated_on(directory, ckpt_config, records_of_steps):
  """A read-only store of steps that one eval config scored (val_top1 rising with the step), on
  records described by `records_of_steps` ({step: the checkpoint's `records` metadata})."""
  ckpt_config.keep_last = len(records_of_steps)
  store = checkpoints.CheckpointStore(directory, ckpt_config)
  for step, records in records_of_steps.items():
    store.save(step, _state(step), metrics={'val_top1': step / 10}, evaluation=VAL_EVALUATION,
               records=records)
  store.close()
  return checkpoints.CheckpointStore(directory, ckpt_config, read_only=True)


def test_best_says_when_the_steps_it_compares_were_evaluated_on_other_videos(tmp_path,
                                                                           ckpt_config, caplog):
  """A run resumed on records split anew scored its later steps on another val split of the same
  size (README audit: one group it had trained on), and 'best' compared them without a word.
  The records' digest of the evaluated split's video names tells them apart; a step whose
  records do not know it is not compared, nor are the train split's."""
  caplog.set_level('WARNING', logger='absl')
  reader = _steps_evaluated_on(str(tmp_path), ckpt_config, {
      step: {'val': {'split': 'val', 'videos': 4, 'names_digest': digest},
             'train': {'split': 'train', 'videos': 8, 'names_digest': f'train{step}'}}
      for step, digest in ((2, 'aaaa'), (4, None), (6, 'bbbb'))})
  assert reader.select_step('best') == 6
  assert (f"'best' of {reader.directory} compares val_top1 scored by different evaluations, "
          "which do not compare (step(s) 2: video names digest aaaa; step(s) 6: video names "
          "digest bbbb): pass a step's path to choose one.") in caplog.text, caplog.text
  reader.close()


def test_best_says_when_the_steps_it_compares_were_evaluated_on_videos_converted_anew(
    tmp_path, ckpt_config, caplog):
  """The same val videos converted again at another short side keep their names digest, but
  the frames a step was scored on differ (the last note's open item: 'best' compared them without
  a word). Each conversion setting of the evaluated split is compared; a step whose records do
  not know the settings is not, and a setting that is None is a value like any other. The
  order of the videos in the shards (shuffle_seed) changes no score, and is not compared."""
  caplog.set_level('WARNING', logger='absl')
  reader = _steps_evaluated_on(str(tmp_path), ckpt_config, {
      step: {'val': {'split': 'val', 'videos': 4, 'names_digest': 'aaaa', 'settings': settings}}
      for step, settings in ((2, {'short_side': 64, 'fps': None, 'shuffle_seed': 0}),
                             (4, None), (6, {'short_side': 64, 'fps': None, 'shuffle_seed': 1}),
                             (8, {'short_side': 128, 'fps': None, 'shuffle_seed': 0}))})
  assert reader.select_step('best') == 8
  assert (f"'best' of {reader.directory} compares val_top1 scored by different evaluations, "
          "which do not compare (step(s) 2, 6: converted with short_side 64; step(s) 8: "
          "converted with short_side 128): pass a step's path to choose one.") in caplog.text, (
              caplog.text)
  # A command selects 'best' more than once (eval reads the classes, then the weights; export
  # three times): the warning is said once.
  again = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  assert again.select_step('best') == 8
  again.close()
  assert caplog.text.count('different evaluations') == 1, caplog.text
  caplog.clear()
  for step in (2, 6):  # the same conversion for every step that knows it: no warning
    shutil.rmtree(reader.step_dir(step))
  reader.close()
  reader = checkpoints.CheckpointStore(str(tmp_path), ckpt_config, read_only=True)
  assert reader.select_step('best') == 8
  assert 'different evaluations' not in caplog.text, caplog.text
  reader.close()


def test_a_run_resumed_with_more_steps_is_unfinished_until_its_new_length(tmp_path,
                                                                            ckpt_config):
  """An earlier step records the run's length when it was saved; a resume may lengthen the run,
  and the newest step says by how much (mutation audit: reading the earlier step's length
  passed every test)."""
  ckpt_config.keep_last = 3
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(2, _state(2), total_steps=4)
  store.save(4, _state(4), total_steps=8)  # resumed with num_train_steps 8, stopped at 4
  assert checkpoints.unfinished_run(store.step_dir(2)) == (4, 8)
  store.save(8, _state(8), total_steps=8)
  assert checkpoints.unfinished_run(store.step_dir(2)) is None
  store.close()


def test_a_run_lengthened_and_stopped_before_its_first_new_save_is_unfinished(tmp_path,
                                                                              ckpt_config):
  """A finished run of 20 steps relaunched with num_train_steps 40 and killed before its next
  save: eval of the workdir scored step 20 without the 'stopped at step 20 of its 40 steps'
  line a stopped run gets (resume audit), since the newest step recorded the old length. The
  workdir's config.json, which the relaunch rewrote, has the new one."""
  store = checkpoints.CheckpointStore(str(tmp_path), ckpt_config)
  store.save(20, _state(20), total_steps=20)
  assert checkpoints.unfinished_run(store.step_dir(20)) is None
  workdir.write_config(str(tmp_path), ml_collections.ConfigDict({'num_train_steps': 40}))
  assert checkpoints.unfinished_run(store.step_dir(20)) == (20, 40)
  workdir.write_config(str(tmp_path), ml_collections.ConfigDict({'num_train_steps': 20}))
  assert checkpoints.unfinished_run(store.step_dir(20)) is None
  store.close()
