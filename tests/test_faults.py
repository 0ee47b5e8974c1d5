"""Faults a user meets, each ending in one clear line (no traceback) or handled promptly:
known user errors, corrupt TFRecords, a resume with another model, a read-only workdir, SIGTERM
at the next step."""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import pytest

from configs import demo
from data import errors as data_errors
from data import pipeline
from data import records
from salinet_jax import checkpoints
from salinet_jax import cli
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import pretrained
from salinet_jax import train
from salinet_jax import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.conftest import subprocess_env
from tests.conftest import tiny_config
from tests.test_main import _main
from tests.test_main import _tiny_overrides


def _one_error_line(proc, code=1):
  """The single `error:` line of a failed run (and no traceback)."""
  assert proc.returncode == code, proc.stderr[-4000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-4000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, proc.stderr[-4000:]
  return errors[0]


@pytest.mark.parametrize('command, code, expected', [
    (('salinet_jax.bench', '--config=configs/demo.py', '--config.model.wdth=8'), 2,
     'unknown config field --config.model.wdth in the command line (did you mean "width"?).'),
    (('salinet_jax.bench', '--config=configs/dmeo.py'), 2,
     "--config: Failed loading config file"),
    (('salinet_jax.info', '--config=configs/dmeo.py'), 2,
     "No such file or directory: 'configs/dmeo.py'"),
    (('salinet_jax.info', '--config=configs/demo.py', '--config.model.name=salinet_har'), 1,
     "config.model.name 'salinet_har' is not one of"),
    (('salinet_jax.info', '--config=configs/demo.py', '--config.model.depth=11'), 1,
     'config.model.depth must be one of [10, 18, 34, 50, 101], got 11.'),
    (('salinet_jax.info', '--config=configs/demo_s2dnet.py:warmup', '--config.model.topk=4'), 1,
     'config.model.topk must be from 1 to 3 (fewer than the 4 classes), got 4.'),
    (('salinet_jax.convert', '--source=pyslowfast', '--checkpoint=missing.pyth',
      '--config=configs/k400_i3d_nl.py', '--output=/tmp/unused', '--target=dnet'), 1,
     "--target picks the S2DNet network a 2D checkpoint (--source=torchvision or tsm) "
     "initialises; it is not read for --source=pyslowfast into 'i3d_nl'."),
    (('salinet_jax.convert', '--source=tsm', '--checkpoint=missing.pth',
      '--config=configs/mini_kinetics_s2dnet.py:warmup', '--output=/tmp/unused',
      '--inflate=centre'), 1,
     "--inflate turns 2D kernels into the 3D kernels of an I3D (i3d_nl, salinet_i3d); it is not "
     "read for model 's2dnet'."),
    # PySlowFast's C2D / Caffe2 R-50 weights inflate into an I3D (README): not refused.
    (('salinet_jax.convert', '--source=pyslowfast', '--checkpoint=missing.pkl',
      '--config=configs/k400_i3d_nl.py', '--output=/tmp/unused', '--inflate=repeat'), 1,
     'missing.pkl'),
    (('salinet_jax.info', '--config=configs/demo.py', '--video_frames=300'), 1,
     '--video_frames applies to --recipe only (it is not read without it): add --recipe, or '
     'leave it out.'),
    (('salinet_jax.info', '--config=configs/demo.py', '--recipe', '--params'), 1,
     '--params applies to the model report only (it is not read with --recipe): leave it or '
     '--recipe out.'),
    (('salinet_jax.bench', '--config=configs/demo.py', '--steps=0'), 2,
     'flag --steps=0: 0 is not a positive integer'),
    (('data.bench', '--records=/no/such'), 1, "records directory '/no/such' (the directory"),
    (('data.report', '--records=/no/such'), 1, "records directory '/no/such' (the directory"),
], ids=['bench_misspelt_field', 'bench_missing_config', 'info_missing_config',
        'info_misspelt_model_name', 'info_model_depth', 'info_s2dnet_topk',
        'convert_target_unread', 'convert_inflate_unread', 'convert_inflate_pyslowfast',
        'info_video_without_recipe', 'info_params_with_recipe', 'bench_no_steps',
        'data_bench_missing_records', 'data_report_missing_records'])
def test_the_other_commands_end_user_errors_in_one_line(command, code, expected):
  """The benchmark, info and the data tools report config and records mistakes as main.py
  does: one `error:` line, no traceback (and no TensorFlow start-up notices before it)."""
  proc = subprocess.run([sys.executable, '-m', *command], cwd=REPO_ROOT, env=subprocess_env(),
                        capture_output=True, text=True, timeout=300)
  assert expected in _one_error_line(proc, code)
  assert proc.stderr.splitlines()[-1].startswith(('error:', 'Pass --helpshort'))
  if command[0].startswith('data.'):
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, tiny_data_dir):
  workdir = tmp_path_factory.mktemp('faults') / 'run'
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}',
               *_tiny_overrides(tiny_data_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


@pytest.mark.parametrize('case', ['misspelt_field', 'misspelt_field_in_the_file',
                                  'empty_workdir', 'misspelt_model_name', 'missing_config_file',
                                  'workdir_without_config', 'config_json_of_an_older_version',
                                  'unknown_recipe_stage',
                                  'batch_not_divisible', 'no_checkpoint', 'missing_records'])
def test_known_user_errors_end_in_one_line(case, tiny_data_dir, tmp_path):
  overrides = _tiny_overrides(tiny_data_dir)
  workdir = f'--workdir={tmp_path / "run"}'
  if case == 'misspelt_field':
    line = _one_error_line(_main('--config=configs/demo.py', workdir, '--config.batch_sise=8'), 2)
    assert line == ('error: unknown config field --config.batch_sise in the command line (did '
                    'you mean "batch_size"?).')
  elif case == 'misspelt_field_in_the_file':
    # A config file's own typo added a field nothing reads, and trained with the default.
    config_file = tmp_path / 'typo.py'
    config_file.write_text('from configs import demo\n\n\ndef get_config():\n'
                           '  config = demo.get_config()\n  config.data.numframes = 3\n'
                           '  return config\n')
    line = _one_error_line(_main(f'--config={config_file}', workdir, *overrides), 2)
    assert line == (f'error: --config={config_file} sets config.data.numframes, a field '
                    'configs/base.py does not define (did you mean "num_frames"?): nothing reads '
                    'it (a new field that new code reads gets its default there).')
  elif case == 'empty_workdir':
    # It trained in the current directory (here tmp_path, not the repository).
    line = _one_error_line(subprocess.run(
        [sys.executable, str(REPO_ROOT / 'main.py'), f'--config={REPO_ROOT}/configs/demo.py',
         '--workdir=',
         *overrides], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
        timeout=600), 2)
    assert 'flag --workdir=: --workdir must name a directory' in line
    assert not os.listdir(tmp_path)
  elif case == 'misspelt_model_name':
    line = _one_error_line(_main('--config=configs/demo.py', workdir, *overrides,
                                 '--config.model.name=salinet_har'))
    assert "config.model.name 'salinet_har' is not one of" in line
  elif case == 'missing_config_file':
    line = _one_error_line(_main('--config=configs/dmeo.py', workdir), 2)
    assert "No such file or directory: 'configs/dmeo.py'" in line
  elif case == 'workdir_without_config':  # a workdir no training run wrote
    (tmp_path / 'run').mkdir()
    line = _one_error_line(_main(f'--config=configs/from_workdir.py:{tmp_path / "run"}', workdir,
                                 '--mode=eval'), 2)
    assert f'{tmp_path / "run" / "config.json"} does not exist: ' in line
    assert 'is not the workdir of a training run' in line
  elif case == 'config_json_of_an_older_version':  # a setting since removed from base.py
    (tmp_path / 'old').mkdir()
    stored = json.loads(demo.get_config().to_json_best_effort())
    stored['data']['random_flip'] = True
    (tmp_path / 'old' / 'config.json').write_text(json.dumps(stored))
    line = _one_error_line(_main(f'--config=configs/from_workdir.py:{tmp_path / "old"}',
                                 workdir, '--mode=eval'), 2)
    assert line == (f'error: {tmp_path / "old" / "config.json"} holds config.data.random_flip, a '
                    'setting this version of the code does not have: nothing here would read '
                    'it, so the run cannot go on as it was trained. Use the version the run was '
                    'trained with, or delete the setting from that file to go on without it.')
  elif case == 'unknown_recipe_stage':
    line = _one_error_line(_main('--config=configs/demo_s2dnet.py:samplng', workdir), 2)
    assert "S2DNet stage must be one of ('warmup', 'sampling'), got 'samplng'" in line
    assert '--config=FILE.py:warmup' in line
  elif case == 'batch_not_divisible':
    line = _one_error_line(_main('--config=configs/demo.py', workdir, *overrides,
                                 '--config.batch_size=6', devices=4))
    assert 'config.batch_size=6 is not divisible by the 4 devices' in line
  elif case == 'no_checkpoint':
    line = _one_error_line(_main('--config=configs/demo.py', workdir, *overrides, '--mode=eval'))
    assert 'No checkpoint in' in line and 'train first' in line
    assert not (tmp_path / 'run').exists()  # a misspelt --workdir is not created
  else:
    line = _one_error_line(_main('--config=configs/demo.py', workdir, *overrides,
                                 "--config.dataset.name=", '--config.dataset.data_dir=/no/such'))
    assert '/no/such' in line and 'does not exist' in line


def test_resume_with_another_model_names_parameters_and_config_fields(trained_workdir,
                                                                       tiny_data_dir, tmp_path):
  proc = _main('--config=configs/demo.py', f'--workdir={trained_workdir}',
               *_tiny_overrides(tiny_data_dir), '--config.model.width=8',
               '--config.num_train_steps=4')
  line = _one_error_line(proc)
  assert 'does not fit the model of the given config' in line
  assert re.search(r'params/\S+/kernel: stored \([\d, ]*4\), model \([\d, ]*8\)', proc.stderr)
  assert 'model.width: stored 4, given 8' in proc.stderr
  advice = ('\nUse the config the checkpoint was trained with (--config=configs/from_workdir.py:'
            f'{trained_workdir}), or another checkpoint.\n')
  assert proc.stderr.endswith(advice)
  # ... which it is, with none of the training command's overrides repeated.
  proc = _main(advice.split('(')[1].split(')')[0], f'--workdir={trained_workdir}', '--mode=eval',
               f'--output_dir={tmp_path / "eval"}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'differs' not in proc.stderr and 'val top-1: ' in proc.stdout


def test_resume_with_changed_settings_names_them(trained_workdir, tiny_data_dir, tmp_path):
  """Resuming with another learning rate or length is allowed (a longer run, a lower rate) but
  never silent: the schedule then follows the given config. XLA's CPU flags only change how the
  step compiles, so they are not named; another init_from is said to be unused, and config.json
  keeps the one the run started from."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_workdir, workdir)
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(tiny_data_dir),
               '--config.num_train_steps=3', '--config.optimizer.base_learning_rate=0.7',
               '--config.xla_cpu_unroll_loops=True', f'--config.init_from.checkpoint={tmp_path}')
  assert proc.returncode == 0, proc.stderr[-4000:]
  warning = [line for line in proc.stderr.splitlines() if 'differs from the one it was' in line]
  assert len(warning) == 1, proc.stderr[-4000:]
  assert 'optimizer.base_learning_rate: stored 0.1, given 0.7' in warning[0]
  # The HParams dashboard shows the run under the values it started with (audit).
  assert "TensorBoard's HParams keep the values the run started with" in warning[0]
  assert 'num_train_steps: stored 2, given 3' in warning[0]
  assert 'xla_cpu_' not in warning[0], warning[0]
  assert ('Checkpoint step 2 belongs to a run of 2 steps; this run has 3 (num_train_steps '
          'changed): the rest of its learning-rate schedule follows the new length.'
          in proc.stderr)
  assert ("config.init_from only starts a run: the resumed weights are checkpoint step 2's, not "
          'those of the given init_from.') in proc.stderr
  # config.json records the run as it ran: the given schedule, the init_from it started from.
  written = json.loads((workdir / 'config.json').read_text())
  assert written['optimizer']['base_learning_rate'] == 0.7
  assert written['init_from']['checkpoint'] == 'none', written['init_from']
  # and so does the checkpoint the resumed run saves.
  saved = json.loads(checkpoints.read_step_metadata(str(workdir / 'checkpoints' / '3'))['config'])
  assert saved['init_from']['checkpoint'] == 'none', saved['init_from']


def test_resume_with_another_batch_size_is_refused(trained_workdir, tiny_data_dir, tmp_path):
  """Resuming at another batch size counted the checkpoint's steps in clips of the new batch:
  an epoch-based run resumed at batch 8 after 8 steps of 4 took itself for finished after half
  an epoch (exit 0), and the data stream skipped clips never seen."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_workdir, workdir)
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(tiny_data_dir),
               '--config.batch_size=8', '--config.num_train_steps=3')
  line = _one_error_line(proc)
  assert re.fullmatch(r'error: Checkpoint step 2 in \S+ was trained with batch_size 4, this config '
                      r'has 8: a resumed run counts where its data stream and learning-rate '
                      r'schedule stand in steps of its batch, .* Resume with '
                      r'--config.batch_size=4, or start another --workdir from this one '
                      r'\(config.init_from\).', line), line
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2']  # nothing trained


def test_a_run_length_other_than_the_checkpoints_is_said_with_its_cause(caplog):
  """Train records of another size (re-converted in place) changed an epoch-based run's length
  and learning-rate schedule on resume without a word: the LR rose again after the resume."""
  config = ml_collections.ConfigDict({'batch_size': 4, 'num_train_steps': -1, 'num_epochs': 0.5})
  stored = {'config': config.to_json(), 'total_steps': 8}
  train._check_run_length(stored, 4, '/w/checkpoints', config, 16, 128)
  assert ('Checkpoint step 4 belongs to a run of 8 steps; this run has 16 (the train split now '
          'holds 128 videos): the rest of its learning-rate schedule follows the new length.'
          in caplog.text)
  caplog.clear()
  train._check_run_length(stored, 4, '/w/checkpoints', config, 8, 64)
  assert not caplog.text


def _rename_the_records_classes(directory, metadata, prefix):
  """Rewrites every record's class name with `prefix`, and the shard sizes in `metadata`: the
  records of another dataset with as many classes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for split, shards in metadata['shards'].items():
    for shard in shards:
      path = os.path.join(directory, shard['file'])
      videos = [tf.train.SequenceExample.FromString(raw.numpy())
                for raw in tf.data.TFRecordDataset(path)]
      with tf.io.TFRecordWriter(path) as writer:
        for video in videos:
          text = video.context.feature[records.LABEL_TEXT_KEY].bytes_list.value
          text[0] = prefix.encode() + text[0]
          writer.write(video.SerializeToString())
      shard['num_bytes'] = os.path.getsize(path)


def test_resume_on_records_of_other_classes_is_refused(trained_workdir, tiny_data_dir, tmp_path):
  """Same number of classes, other names: the model would fit, and the workdir would silently
  hold checkpoints of two datasets (and pick its best across them)."""
  workdir, data = tmp_path / 'run', tmp_path / 'other_records'
  shutil.copytree(trained_workdir, workdir)
  shutil.copytree(tiny_data_dir, data)
  metadata = json.loads((data / 'metadata.json').read_text())
  metadata['classes'] = [f'other_{name}' for name in metadata['classes']]
  _rename_the_records_classes(data, metadata, 'other_')
  (data / 'metadata.json').write_text(json.dumps(metadata))
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(data),
               '--config.num_train_steps=3')
  line = _one_error_line(proc)
  assert re.search(r'Checkpoint step 2 in \S+ was trained on 4 classes \(moving_right, .*\) but '
                   rf"split 'train' in {data} has 4 \(other_moving_right, ", line), line
  assert 'Resuming checkpoint step' not in proc.stderr  # refused before a word on resuming it
  # log.txt ends with the error too (it ended with the line before it).
  last = (workdir / 'log.txt').read_text().strip().splitlines()[-1]
  assert re.fullmatch(r'\d\d:\d\d:\d\d error: ' + re.escape(line[len('error: '):]), last), last


def test_resume_with_another_optimizer_names_the_config_fields(trained_workdir, tiny_data_dir,
                                                               tmp_path):
  """Same parameters, another optimizer state: one line and the differing fields, not orbax's
  tree-structure traceback."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_workdir, workdir)
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(tiny_data_dir),
               '--config.optimizer.name=adamw', '--config.num_train_steps=3')
  line = _one_error_line(proc)
  assert 'does not fit the optimizer of the given config: its optimizer state has another' in line
  assert "optimizer.name: stored 'sgd', given 'adamw'" in proc.stderr
  # The workdir's config.json still describes its checkpoints, not the refused config.
  assert json.loads((workdir / 'config.json').read_text())['optimizer']['name'] == 'sgd'


def _make_read_only(path):
  """Makes a directory refuse new files (chmod for users, the immutable flag for root)."""
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    return lambda: os.chmod(path, 0o755)
  if shutil.which('chattr') is None:
    pytest.skip('running as root without chattr: cannot make a directory read-only here')
  if subprocess.run(['chattr', '+i', str(path)], capture_output=True).returncode:
    pytest.skip('chattr +i is not permitted on this filesystem: no read-only directory here')
  return lambda: subprocess.run(['chattr', '-i', str(path)], check=True)


def test_read_only_workdir_evaluates_into_output_dir_or_says_so(trained_workdir, tiny_data_dir,
                                                                tmp_path):
  workdir = tmp_path / 'read_only_run'
  shutil.copytree(trained_workdir, workdir)
  undo = _make_read_only(workdir)
  try:
    args = ['--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(tiny_data_dir),
            '--mode=eval']
    line = _one_error_line(_main(*args))
    assert f'Cannot write eval outputs to {workdir}' in line and '--output_dir' in line
    out = tmp_path / 'eval_out'
    proc = _main(*args, f'--output_dir={out}')
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / 'eval_val.json').exists() and not (workdir / 'eval_val.json').exists()
    line = _one_error_line(_main(*args[:-1], '--config.num_train_steps=4'))
    assert f'Cannot write checkpoints and logs to {workdir}' in line
  finally:
    undo()


def test_unwritable_checkpoints_folder_or_a_file_as_workdir_fail_before_training(
    tiny_data_dir, tmp_path):
  """A checkpoints folder that refuses files trained until the first save, whose failure then
  left orbax's threads waiting forever (the process never exited); a file as --workdir got
  'File exists'."""
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints').mkdir(parents=True)
  undo = _make_read_only(workdir / 'checkpoints')
  try:
    start = time.monotonic()
    line = _one_error_line(_main('--config=configs/demo.py', f'--workdir={workdir}',
                                 *_tiny_overrides(tiny_data_dir), '--config.num_train_steps=4'))
    assert f'Cannot write checkpoints to {workdir}/checkpoints' in line, line
    assert time.monotonic() - start < 120
  finally:
    undo()
  afile = tmp_path / 'afile'
  afile.write_text('not a workdir')
  line = _one_error_line(_main('--config=configs/demo.py', f'--workdir={afile}',
                               *_tiny_overrides(tiny_data_dir), '--config.num_train_steps=4'))
  assert f'Cannot write checkpoints and logs to {afile}: it is a file, not a directory.' in line


def test_eval_of_a_step_with_unreadable_metadata_says_only_that_it_is_corrupt(
    trained_workdir, tiny_data_dir, tmp_path):
  """A truncated _CHECKPOINT_METADATA first drew 'carries no class names (it was written before
  they were saved) ... using the class names of the records', a wrong explanation."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_workdir, workdir)
  (workdir / 'checkpoints' / '2' / checkpoints.STEP_METADATA_FILE).write_text('{"step": 2, "cu')
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(tiny_data_dir),
               '--mode=eval', '--config.eval.checkpoint=latest')
  line = _one_error_line(proc)
  assert 'checkpoints/2 is corrupt: ' in line and 'is unreadable' in line, line
  assert 'class names' not in proc.stderr, proc.stderr[-3000:]


def test_a_missing_init_from_checkpoint_fails_before_the_workdir_is_made(tiny_data_dir,
                                                                        tmp_path):
  """It failed after the workdir, its lock, log, TensorBoard hparams and a fresh model were made,
  leaving a workdir behind for a run that could not start."""
  workdir, missing = tmp_path / 'run', tmp_path / 'no_such_warmup'
  line = _one_error_line(_main('--config=configs/demo.py', f'--workdir={workdir}',
                               *_tiny_overrides(tiny_data_dir),
                               f'--config.init_from.checkpoint={missing}'))
  assert line == f'error: Pretrained checkpoint {missing} does not exist.'
  assert not workdir.exists()


def _corrupt_shard(directory, pattern, truncate):
  """Damages the split's last shard: a search that reads only the first one must not find it
  (audit: one that did passed)."""
  shard = sorted(p for p in os.listdir(directory) if pattern in p)[-1]
  path = os.path.join(directory, shard)
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    if truncate:
      f.truncate(size - 100)
    else:
      f.seek(size // 2)
      f.write(b'\xff' * 64)
  return path


def test_a_train_shard_cut_while_training_stops_the_run_at_its_next_checkpoint(
    config, tiny_data_dir, tmp_path, monkeypatch):
  """Shards are checked when the stream starts, but each epoch opens them again: one cut to its
  first record at step 1 (at a record boundary, so it reads cleanly) trained the rest of the run
  on the videos left, without a word (data audit)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  copy = tmp_path / 'records'
  shutil.copytree(tiny_data_dir, copy)
  config.dataset.data_dir = str(copy)
  config.num_train_steps = 6
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 6
  shard = records.shard_files(str(copy), 'synthetic', 'train')[0]

  def cut_at_step_1(self, step):
    if step == 1:
      first = next(iter(tf.data.TFRecordDataset(shard))).numpy()
      with tf.io.TFRecordWriter(shard) as writer:
        writer.write(first)
    return False

  monkeypatch.setattr(train.PreemptionWatcher, 'should_stop', cut_at_step_1)
  with pytest.raises(records.CorruptShardError, match=rf'{shard} is \d+ bytes but \d+ were '
                     'written by the converter: the file is truncated or replaced'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert checkpoints.CheckpointStore(str(tmp_path / 'run'), config.checkpoint,
                                     read_only=True).steps() == []


def test_a_train_shard_grown_by_a_whole_record_is_refused_as_changed(tiny_data_dir, tmp_path):
  """A shard another conversion or a copy made longer reads cleanly (here its first video
  twice): only its size recorded at conversion tells (audit: a check that refused only shorter
  shards passed every test)."""
  copy = tmp_path / 'records'
  shutil.copytree(tiny_data_dir, copy)
  files = records.shard_files(str(copy), 'synthetic', 'train')
  recorded = records.recorded_shard_bytes(records.read_metadata(str(copy)), 'train')
  records.check_shards(files, recorded)
  with open(files[0], 'rb') as f:
    whole = f.read()
  first = 16 + int.from_bytes(whole[:8], 'little')  # length, its CRC, data, the data's CRC
  with open(files[0], 'ab') as f:
    f.write(whole[:first])
  assert records.verify_records(files[0]) >= 2
  with pytest.raises(records.CorruptShardError, match=rf'{files[0]} is {len(whole) + first} '
                     rf'bytes but {len(whole)} were written by the converter: the file is changed'):
    records.check_shards(files, recorded)


@pytest.mark.parametrize('truncate', [True, False], ids=['truncated', 'corrupt_bytes'])
@pytest.mark.parametrize('split', ['train', 'val'])
def test_bad_tfrecord_names_the_file(split, truncate, config, tiny_data_dir, tmp_path):
  copy = tmp_path / 'records'
  shutil.copytree(tiny_data_dir, copy)
  config.dataset.data_dir = str(copy)
  path = _corrupt_shard(str(copy), f'-{split}.tfrecord-', truncate)
  expected = 'truncated' if truncate else 'corrupt after record'
  with pytest.raises(records.CorruptShardError, match=rf'{path}.*{expected}') as raised:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  # TensorFlow's reason, without the graph function or op that read it ({{function_node ...}},
  # "' failed with ... [Op:IteratorGetNext] name:": data audit).
  assert '{{' not in str(raised.value) and '[Op:' not in str(raised.value), raised.value
  assert "' failed with" not in str(raised.value), raised.value
  assert truncate or ': corrupted record starting at byte ' in str(raised.value), raised.value


@pytest.mark.parametrize('log_every', [1, 100])  # review: 100 reads the loss of step 1 first
def test_a_train_step_out_of_device_memory_says_which_settings_hold_fewer_clips(
    config, tmp_path, monkeypatch, log_every):
  """Running out of device memory is told as the per-device batch and the settings that lower
  it. On the CPU XLA says so where the step's results are first read, not at its dispatch (the
  only place training caught it): the log's window means, or (log_every 100) the loss of the
  step before. The step here needs a 16 TiB temporary, which XLA cannot allocate on any host."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  plain_step = engine.train_step

  def huge_step(state, batch, rng, **kwargs):
    new_state, metrics = plain_step(state, batch, rng, **kwargs)
    rows = jax.lax.broadcasted_iota(jnp.float32, (2**20, 2**22), 0)
    huge = jnp.sort(jnp.sin(rows * metrics['loss']), axis=0)
    return new_state, {**metrics, 'loss': metrics['loss'] + huge[0, 0]}

  monkeypatch.setattr(engine, 'train_step', huge_step)
  config.log_every_steps = log_every
  with pytest.raises(MemoryError) as raised:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  per_device = config.batch_size // jax.device_count()
  assert str(raised.value).startswith(
      f'Out of device memory with a per-device batch of {per_device} clips. Lower '
      'config.batch_size, raise config.grad_accumulation_steps'), raised.value
  assert 'Original error: RESOURCE_EXHAUSTED' in str(raised.value), raised.value


def test_a_precise_bn_out_of_device_memory_is_not_told_as_the_eval_step_s(
    config, tmp_path, monkeypatch):
  """Review: precise BN's moments step never reads its results on the host, so on the CPU its
  runtime OOM surfaced in the first eval step, whose EvalStep advice names
  config.eval.clips_per_device_forward: a setting precise BN's train batches do not read. It is
  told as precise BN's, with the train batch's advice."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from salinet_jax import precise_bn  # pylint: disable=g-import-not-at-top
  plain = precise_bn.batch_moments

  def huge_moments(model, variables, video, kwargs, bn_group_size=0):
    moments = plain(model, variables, video, kwargs, bn_group_size)
    rows = jax.lax.broadcasted_iota(jnp.float32, (2**20, 2**22), 0)
    huge = jnp.sort(jnp.sin(rows * jnp.mean(video)), axis=0)[0, 0]
    return jax.tree.map(lambda x: x + huge.astype(x.dtype), moments)

  monkeypatch.setattr(precise_bn, 'batch_moments', huge_moments)
  config.precise_bn_batches = 1
  with pytest.raises(MemoryError) as raised:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  per_device = config.batch_size // jax.device_count()
  assert str(raised.value).startswith(
      "Out of device memory in precise BN's pass over train batches with a per-device batch of "
      f'{per_device} clips. Lower config.batch_size'), raised.value
  assert 'clips_per_device_forward' not in str(raised.value), raised.value


def test_a_sigterm_ends_an_evaluation_in_one_line_and_keeps_the_earlier_results(
    trained_workdir, tiny_data_dir, tmp_path):
  """`main.py --mode=eval` (a scheduler's evaluation job) ended on a SIGTERM with no line and
  left the new pictures folder it was drawing beside the earlier one. Now one line and status
  143, as training's, and the earlier results as they were."""
  out = tmp_path / 'eval'
  (out / 'visualizations_val').mkdir(parents=True)
  (out / 'eval_val.json').write_text('earlier')
  (out / 'visualizations_val' / 'earlier.png').write_text('earlier')
  log = tmp_path / 'stderr'
  with open(log, 'w') as stderr:
    proc = subprocess.Popen(
        [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={trained_workdir}',
         '--mode=eval', f'--output_dir={out}', *_tiny_overrides(tiny_data_dir)],
        cwd=REPO_ROOT, env=subprocess_env(0), stdout=subprocess.DEVNULL, stderr=stderr)
  try:
    deadline = time.monotonic() + 300
    while not [name for name in os.listdir(out) if '.partial-' in name]:  # it evaluates
      assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
      time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 143, log.read_text()[-3000:]
  assert log.read_text().splitlines()[-1] == 'Stopped by SIGTERM. Exit status 143.'
  assert sorted(os.listdir(out)) == ['eval_val.json', 'visualizations_val']
  assert (out / 'eval_val.json').read_text() == 'earlier'
  assert os.listdir(out / 'visualizations_val') == ['earlier.png']


# main.py as a scheduler runs it, whose training start (before its first step: a restore, an
# init_from, the compile) takes a minute: it says 'ready' there and waits.
_TRAINING_THAT_STARTS_SLOWLY = '''
import os, runpy, sys, time
from salinet_jax import train

def slow_start(trainer):
  print('ready', flush=True)
  time.sleep(float(os.environ.get('STARTS_IN_S', 120)))

train._refuse_a_start_that_cannot_work = slow_start
sys.argv = ['main.py'] + sys.argv[1:]
runpy.run_path('main.py', run_name='__main__')
'''


def _training_signalled_once_ready(wrapper, workdir, data_dir, *flags, signal_after=0.0,
                                   timeout=60, **env):
  """main.py training through `wrapper`, which prints 'ready' where it holds the run, sent a
  SIGTERM `signal_after` s later (None: not sent); once it ended, its (status, stderr)."""
  proc = subprocess.Popen(
      [sys.executable, '-c', wrapper, '--config=configs/demo.py', f'--workdir={workdir}',
       *_tiny_overrides(data_dir), *flags],
      cwd=REPO_ROOT, env=subprocess_env(0, **env), text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE)
  try:
    assert proc.stdout.readline() == 'ready\n', proc.stderr.read()[-3000:]
    if signal_after is not None:
      time.sleep(signal_after)
      proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=timeout)
  finally:
    proc.kill()
    proc.wait()
  return proc.returncode, proc.stderr.read()


def test_a_sigterm_as_training_starts_ends_it_in_one_line_and_gives_the_workdir_back(
    tiny_data_dir, tmp_path):
  """A SIGTERM before training's first step (a scheduler preempting a run as it restores or
  compiles) killed it as Python's default does: no line on the console or in log.txt, and its
  trainer.lock left behind, so that the job requeued on another machine was refused ("in use by
  another trainer"). Now one line, status 143, log.txt ending with it, and the lock given back."""
  workdir = tmp_path / 'run'
  status, stderr = _training_signalled_once_ready(_TRAINING_THAT_STARTS_SLOWLY, workdir,
                                                  tiny_data_dir)
  assert status == 143, stderr[-3000:]
  assert stderr.splitlines()[-1] == data_errors.SIGTERM_LINE, stderr[-3000:]
  # As the console's line, after the time: not an error's.
  assert re.fullmatch(r'\d\d:\d\d:\d\d ' + re.escape(data_errors.SIGTERM_LINE),
                      (workdir / 'log.txt').read_text().splitlines()[-1])
  assert not (workdir / workdir_lib.LOCK_FILE).exists()


# main.py whose final save is slow (a big model's takes minutes): orbax's finalisation of the
# step says 'ready' there and waits. With KILL_AT_CLOSE, the process also sends itself a SIGTERM
# as training's loop gives SIGTERM back to main.py's guard (a signal arriving as the loop ends),
# and the run then closes for longer than the guard's watcher waits.
_TRAINING_WHOSE_FINAL_SAVE_IS_SLOW = """
import os, runpy, signal, sys, time
from salinet_jax import checkpoints
from salinet_jax import train

plain_checksums, plain_close = checkpoints.write_checksums, train.PreemptionWatcher.close

def slow_checksums(step_dir):
  print('ready', flush=True)
  time.sleep(3)
  plain_checksums(step_dir)

def close(self):
  if self.finishing and os.environ.get('KILL_AT_CLOSE'):
    os.kill(os.getpid(), signal.SIGTERM)
  plain_close(self)

plain_store_close = checkpoints.CheckpointStore.close

def slow_store_close(self):  # the run closes for longer than the guard's watcher waits
  plain_store_close(self)
  time.sleep(1.5)

checkpoints.write_checksums = slow_checksums
train.PreemptionWatcher.close = close
checkpoints.CheckpointStore.close = slow_store_close
sys.argv = ['main.py'] + sys.argv[1:]
runpy.run_path('main.py', run_name='__main__')
"""


@pytest.mark.parametrize('when', ['sent during the final save', 'taken as the loop ends'])
def test_a_sigterm_after_the_last_step_lets_the_final_save_finish(when, tiny_data_dir,
                                                                  tmp_path):
  """Review (7db05c4): a SIGTERM during the run's last step is answered 'finishing it and its
  evaluation, then the run ends', but the save of that step is waited for after the loop has
  given SIGTERM back to main.py's guard: a SIGTERM there (or one the loop took just as it ended,
  which the guard's watcher then acts on 1 s later) ended the finished run at once with the
  guard's line and status 143, its last step's save cut (a `N.orbax-checkpoint-tmp` folder left;
  the rerun trains the last steps again)."""
  workdir = tmp_path / 'run'
  if when == 'sent during the final save':
    status, stderr = _training_signalled_once_ready(
        _TRAINING_WHOSE_FINAL_SAVE_IS_SLOW, workdir, tiny_data_dir, signal_after=0.5, timeout=120)
  else:
    status, stderr = _training_signalled_once_ready(
        _TRAINING_WHOSE_FINAL_SAVE_IS_SLOW, workdir, tiny_data_dir, signal_after=None,
        timeout=120, KILL_AT_CLOSE='1')
  assert status == 0, stderr[-3000:]
  assert os.listdir(workdir / 'checkpoints') == ['2']
  assert checkpoints.verify_step_dir(str(workdir / 'checkpoints' / '2')) == (True, '')


def test_a_sigterm_as_a_one_process_jax_distributed_training_starts_stops_it_at_a_step(
    tiny_data_dir, tmp_path):
  """Review (7db05c4): joined through jax.distributed as a group of one (JAX_NUM_PROCESSES=1, or
  SALINET_JAX_DISTRIBUTED=1 on a one-task SLURM job), JAX's preemption service holds SIGTERM in
  C, so main.py's guard steps aside (`takes_sigterm`), while the loop, on one process, set its
  own handler over JAX's: a SIGTERM before the first step was swallowed by a service nobody
  asked, and the run trained to its end with status 0. Now the loop asks the service, as on a
  group of several: it stops at the first step, saved."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  workdir = tmp_path / 'run'
  status, stderr = _training_signalled_once_ready(
      _TRAINING_THAT_STARTS_SLOWLY, workdir, tiny_data_dir, '--config.num_train_steps=4',
      timeout=240, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='1',
      JAX_PROCESS_ID='0', STARTS_IN_S='2')
  assert status == 143, stderr[-3000:]
  assert 'Stopped by SIGTERM after saving step 1; exit status 143' in stderr, stderr[-3000:]
  assert os.listdir(workdir / 'checkpoints') == ['1']
  assert not (workdir / workdir_lib.LOCK_FILE).exists()


def test_a_sigterm_just_as_the_workdir_lock_is_taken_gives_it_back(tmp_path):
  """Review (7db05c4): the lock file is linked into place a few bytecodes before its release is
  registered with main.py's guard (`run_if_a_sigterm_ends`): a SIGTERM landing there (forced
  here) ended the process with the lock left, which a requeue on another host is refused by."""
  code = """
import os, signal, sys
from data import errors
from salinet_jax import workdir
plain_create = workdir.WorkdirLock._create
def create(self):
  made = plain_create(self)
  os.kill(os.getpid(), signal.SIGTERM)
  return made
workdir.WorkdirLock._create = create
with errors.sigterm_in_one_line():
  with workdir.WorkdirLock(sys.argv[1]):
    pass
"""
  proc = subprocess.run([sys.executable, '-c', code, str(tmp_path)], cwd=REPO_ROOT,
                        env=subprocess_env(0), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 143, proc.stderr[-3000:]
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


def test_sigterm_is_acted_on_at_the_next_step(config, tmp_path, monkeypatch):
  """The loop never runs ahead of the device: a SIGTERM that arrives as step 3 ends on the
  device saves step 5 at the latest, not the step the host had queued up to. The device is
  slowed by work in the step, not by a host callback: on the CPU a step with a callback runs
  synchronously, and the host could not run ahead whatever the loop did (audit: dropping its
  wait passed). The step it stops at is the one saved (audit: a stop that saved nothing
  passed), and the run gives SIGTERM back."""
  import threading  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  plain_step, plain_engine = engine.train_step, train.training_engine

  def slow_step(state, batch, rng, **kwargs):  # a slow accelerator: a few tenths of a second
    new_state, metrics = plain_step(state, batch, rng, **kwargs)
    work = jax.lax.fori_loop(0, 120, lambda i, x: jnp.tanh(x @ x),
                             jnp.full((500, 500), 1e-3) * new_state.step)
    return new_state, {**metrics, 'loss': metrics['loss'] + 0 * work[0, 0]}

  losses, signalled = [], []

  def sigterm_once_done(loss):
    loss.block_until_ready()
    signalled.append(len(losses))  # the steps the host had dispatched by then
    os.kill(os.getpid(), signal.SIGTERM)

  def observed_engine(config):
    trainer = plain_engine(config)
    jitted = trainer.train_step

    def dispatch(state, batch, rng):
      new_state, metrics = jitted(state, batch, rng)
      losses.append(metrics['loss'])
      if len(losses) == 3:
        threading.Thread(target=sigterm_once_done, args=(metrics['loss'],)).start()
      return new_state, metrics

    trainer.train_step = dispatch
    return trainer

  monkeypatch.setattr(engine, 'train_step', slow_step)
  monkeypatch.setattr(train, 'training_engine', observed_engine)
  config.num_train_steps = 30
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 30
  handler = signal.getsignal(signal.SIGTERM)
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result.get('preempted_at_step', 30) <= 5, (result, signalled)
  store = checkpoints.CheckpointStore(str(tmp_path / 'run'), config.checkpoint, read_only=True)
  steps = store.steps()
  store.close()
  assert steps == [result['preempted_at_step']], steps
  assert signal.getsignal(signal.SIGTERM) is handler  # a later SIGTERM is not swallowed


@pytest.mark.parametrize('during', ['train_step', 'evaluation', 'precise_bn', 'save', 'last_step',
                                    'last_evaluation'])
@pytest.mark.parametrize('group', [False, True], ids=['one_process', 'group'])
def test_a_sigterm_during_an_evaluation_or_save_stops_at_that_step(during, group, config,
                                                                   tmp_path, monkeypatch):
  """A SIGTERM while training evaluates step N (its precise BN or its eval batches) ends the
  evaluation at the next batch and saves step N without it; one during a save stops at the step
  saved. Before, the run finished the evaluation, then trained and saved step N+1 first:
  an evaluation of Kinetics-400 takes hours, longer than a scheduler's grace period, so the
  rerun lost every step since the checkpoint before (SaliNet K400: up to 10,000). One during
  the train step of step N skips its evaluation (it built the evaluation's pipelines, then
  stopped 'after 0 precise-BN batches'). The run's last step and evaluation are not stopped (a
  rerun would evaluate nothing), and the line says so (it said 'saving ... and exiting', then
  evaluated on; on a group it said so too, or nothing).

  On a group SIGTERM comes through JAX's preemption service, played here in one process: each
  process reports its count of questions and all stop when they ask once more (the count last
  asked plus one, as JAX computes it). The group asked after train steps only (so evaluations
  ran to their end and one more step was saved), and orbax asked too, with step numbers."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  plain_engine, lines, asked, stop_at = train.training_engine, [], [], []
  calls, per_step = collections.Counter(), collections.Counter()  # per_step: by (name, step)
  kind = {'last_evaluation': 'evaluation', 'train_step': 'train', 'last_step': 'train'}.get(
      during, during)
  at_step = 6 if during.startswith('last') else 2

  def saved_steps_and_best():
    store = checkpoints.CheckpointStore(str(tmp_path / 'run'), config.checkpoint,
                                        read_only=True)
    try:
      return store.steps(), store.manager.best_step()
    finally:
      store.close()

  class GroupWatcher(train.PreemptionWatcher):  # as on a process of a group
    def __init__(self):
      super().__init__()
      self._group = True

  def reached(count):
    asked.append(count)
    return bool(stop_at) and count == stop_at[0]

  def counted(name, step_fn):
    def step(*args):
      calls[name] += 1
      per_step[name, calls['train']] += 1
      if name == kind and calls['train'] == at_step and per_step[name, at_step] == 1:
        if group:  # the service's stop point
          stop_at.append(asked[-1] + 1)
        else:
          os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(*args)
    return step

  def observed_engine(config):
    trainer = plain_engine(config)
    trainer.train_step = counted('train', trainer.train_step)
    trainer.eval_step = counted('evaluation', trainer.eval_step)
    trainer.moments_step = counted('precise_bn', trainer.moments_step)
    return trainer

  save = checkpoints.CheckpointStore.save
  monkeypatch.setattr(checkpoints.CheckpointStore, 'save', lambda self, step, state, **kwargs: (
      counted('save', lambda: save(self, step, state, **kwargs))()))
  monkeypatch.setattr(train, 'training_engine', observed_engine)
  if group:
    monkeypatch.setattr(train, 'PreemptionWatcher', GroupWatcher)
    monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point', reached)
  monkeypatch.setattr(logging, 'warning', lambda message, *args: lines.append(message % args))
  config.num_train_steps, config.precise_bn_batches = 6, 2
  config.eval_every_steps, config.checkpoint_every_steps = (100, 2) if during == 'save' else (2, 6)
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert asked == list(range(1, len(asked) + 1)), asked  # one count, the same on every process
  steps, best = saved_steps_and_best()
  heard = 'SIGTERM reached a process of this group' if group else 'SIGTERM received'
  if during.startswith('last'):  # the run finished: nothing to stop, but it is said
    assert result['step'] == 6 and 'top1' in result and steps == [2, 4, 6], (result, steps)
    assert per_step['evaluation', 6] == per_step['evaluation', 2] > 1, per_step  # not stopped
    assert per_step['precise_bn', 6] == 2, per_step
    if group and during == 'last_evaluation':  # said once the run is finished
      said = f'{heard} during its last step or evaluation: the run had finished'
    else:
      said = f"{heard} during the run's last step: " + (
          'every process finishes it' if group else 'finishing it')
    assert any(line.startswith(said) for line in lines), lines
    return
  assert result == {'preempted_at_step': 2, 'stopped_by': 'SIGTERM'}, (result, lines)
  assert steps == [2] and best is None, (steps, best)  # saved, with no evaluation
  if during == 'train_step':  # no evaluation is begun
    assert calls['precise_bn'] == calls['evaluation'] == 0, calls
    assert any(line.startswith('Not evaluating step 2 (stopping): `--mode=eval '
                               '--config.eval.checkpoint=') for line in lines), lines
  elif during == 'save':
    assert any(line.startswith(f'{heard} while step 2 was saved' if group else
                               f'{heard}: saving a checkpoint') for line in lines), lines
  else:  # 2 batches of precise BN and of evaluation, stopped at the next one
    assert calls['precise_bn'] == (1 if during == 'precise_bn' else 2), calls
    assert calls['evaluation'] == (0 if during == 'precise_bn' else 1), calls
    assert any(line.startswith(f'{heard} during the evaluation of step 2: saving step 2 without '
                               'it') for line in lines), lines
  if during == 'evaluation' and not group:  # the rerun resumes there and finishes
    monkeypatch.setattr(train, 'training_engine', plain_engine)
    assert train.train_and_evaluate(config, str(tmp_path / 'run'))['step'] == 6
    steps, best = saved_steps_and_best()
    assert steps == [2, 4, 6] and best in (4, 6), (steps, best)


def test_training_a_group_without_the_preemption_service_is_refused_at_once(config, tmp_path,
                                                                           monkeypatch):
  """`train_and_evaluate` called in a group that joined jax.distributed with JAX's preemption
  service off (a user's own launcher; main.py turns it on) trained its first step and then
  crashed with JAX's RuntimeError when the loop asked the service whether to stop. It is
  refused before anything is compiled or written, naming the setting."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(parallel, 'in_a_group', lambda: True)
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: True)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(train, 'training_engine', lambda config: pytest.fail('an Engine was built'))
  assert distributed.global_state.preemption_sync_manager is None  # never joined here
  with pytest.raises(errors.ConfigError, match=r"^This process is one of 2 .* without JAX's "
                     r"preemption service, .*'jax_enable_preemption_service', True\) before "
                     r'jax\.distributed\.initialize\(\)\.$'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  # With the service on, the same start goes on to build the Engine.
  monkeypatch.setattr(distributed.global_state, 'preemption_sync_manager', object())
  with pytest.raises(pytest.fail.Exception, match='an Engine was built'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))


@pytest.mark.parametrize('case', ['a_bug', 'a_bug_in_a_group', 'a_lost_group', 'no_space',
                                  'ctrl_c'])
def test_log_txt_ends_with_the_error_that_stopped_the_run(case, config, tmp_path, monkeypatch):
  """An unexpected error, or a collective failing after another process of the group left,
  printed its traceback (and the line after it) on the console only: log.txt, what the user
  of a batch job reads afterwards, stopped at the line before, as if the run were still going
  (multi-process audit). A full disk ends it with the console's line (review), a Ctrl-C with
  where it stopped (audit: a log.txt without it passed)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  left = ('UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:547] '
          'Connection closed by peer [127.0.0.1]:11184')
  full = data_errors.NoSpace(28, 'No space left on device', str(tmp_path / 'ckpt'))
  raised = {'a_lost_group': ValueError(left), 'no_space': full, 'ctrl_c': KeyboardInterrupt()}.get(
      case, RuntimeError('a bug in the loop'))

  def stopped(config, workdir):
    del config, workdir
    logging.warning('step 1 of 6: loss 1.2')
    if case in ('a_lost_group', 'a_bug_in_a_group'):  # process 0 of two
      monkeypatch.setattr(jax, 'process_count', lambda: 2)
      monkeypatch.setattr(parallel, 'in_a_group', lambda: True)
    raise raised

  monkeypatch.setattr(train, '_train', stopped)
  with pytest.raises(errors.Interrupted if case == 'ctrl_c' else type(raised)) as ended:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  logged = (tmp_path / 'run' / 'log.txt').read_text().rstrip()
  assert 'step 1 of 6: loss 1.2' in logged, logged
  if case == 'ctrl_c':  # where it stopped, in the log.txt the error names
    assert str(tmp_path / 'run' / 'log.txt') in str(ended.value), ended.value
    assert re.search(r'\d\d:\d\d:\d\d error: Interrupted by Ctrl-C at:\nTraceback', logged), logged
    assert logged.endswith('\nKeyboardInterrupt'), logged[-1000:]
    return
  if case == 'no_space':  # the console's line, no traceback
    assert logged.splitlines()[-1].endswith(f'error: {errors.no_space_line(full)}'), logged
    assert 'Traceback' not in logged and 'Free some space' in logged, logged
    return
  assert re.search(r'\d\d:\d\d:\d\d error: The run stopped at this error:\nTraceback', logged)
  expected = {
      'a_bug': 'RuntimeError: a bug in the loop',
      'a_bug_in_a_group': (
          'RuntimeError: a bug in the loop\nprocess 0 of 2 stopped at this RuntimeError: the '
          'other processes of its group end at their next collective; if one of them stopped '
          'first, its output says why.'),
      'a_lost_group': (
          f'ValueError: {left}\nprocess 0 of 2 lost the other processes of its group in a '
          f'collective ({left}): one of them stopped or is stuck: its own output (process 0 '
          'writes log.txt) says why, or ends without a word where it was killed (out of memory, '
          'a scheduler).')}[case]
  assert logged.endswith(expected), logged[-1000:]


_AFTER_A_FAILED_SAVE = '''
import sys
from salinet_jax import checkpoints
from salinet_jax import cli
from tests.conftest import tiny_config
store = checkpoints.CheckpointStore(sys.argv[1], tiny_config(sys.argv[1]).checkpoint)
print(store._save_error(3, OSError(28, 'No space left on device')))
async def write_left_by_orbax():
  pass
write_left_by_orbax()  # collected, never awaited
'''


def test_a_failed_save_leaves_no_never_awaited_warnings_after_its_error(tmp_path):
  """Orbax leaves a failed step's other writes as coroutines it never awaits; Python's warning
  about one of them came after the run's one error line in a CI run of the disk-full test."""
  proc = subprocess.run([sys.executable, '-c', _AFTER_A_FAILED_SAVE, str(tmp_path)],
                        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Saving checkpoint step 3 failed: No space left on device' in proc.stdout
  assert 'never awaited' not in proc.stderr, proc.stderr[-3000:]


def test_disk_full_during_a_save_ends_the_run_naming_the_cause(tiny_data_dir, tmp_path):
  """A real full disk (a small tmpfs), through main.py: the run stops with one line naming the
  OS reason, the path and the newest intact step, instead of a hang or a buried traceback.
  Orbax closes its event loop on the first failed write while the step's other writes are in
  their threads; their reports (hundreds of tracebacks before this test) must not reach the
  console."""
  small = tmp_path / 'small_disk'
  small.mkdir()
  # Step 1's checkpoint takes about 3 MiB of the 5, so it fits and step 2's does not. On a 3 MiB
  # disk the run's files after step 1 took 3068 of the 3072 KiB, and step 1 failed in one run
  # of three.
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=5m', 'tmpfs', str(small)],
                           capture_output=True)
  if mounted.returncode:
    pytest.skip('cannot mount a small tmpfs here (needs root): no real full disk to test on')
  try:
    start = time.time()
    proc = _main('--config=configs/demo.py', f'--workdir={small}/run',
                 *_tiny_overrides(tiny_data_dir), '--config.model.width=8',
                 '--config.num_train_steps=400', '--config.checkpoint_every_steps=1',
                 '--config.checkpoint.keep_last=1000', '--config.log_every_steps=1000',
                 '--config.eval_every_steps=1000')
    assert time.time() - start < 240
    kept = os.listdir(small / 'run' / 'checkpoints')
  finally:
    subprocess.run(['umount', '--lazy', str(small)], check=True)
  assert proc.returncode == 1, proc.stderr[-3000:]
  lines = proc.stderr.splitlines()
  said = re.fullmatch(rf'error: Saving checkpoint step (\d+) failed: No space left on device '
                      rf'at {small}/run/.*Newest intact checkpoint: step (\d+) in '
                      rf'{small}/run/\S+', lines[-1])
  assert said, lines[-1]
  # The step named intact is an earlier, finished one (audit: naming the failed step passed).
  failed, intact = int(said.group(1)), int(said.group(2))
  assert intact < failed and str(intact) in kept and str(failed) not in kept, (lines[-1], kept)
  assert 'Traceback' not in proc.stderr and len(lines) < 25, proc.stderr[-3000:]
  # That line alone: orbax's three or four error lines about the same failure went first.
  assert [line for line in lines if 'error' in line.lower()] == [lines[-1]], proc.stderr[-3000:]


_EVENTS_ON_A_FULL_DISK = '''
import pathlib
import sys
from absl import app
from salinet_jax import console
from salinet_jax import train
from tests.conftest import fill_disk


def main(argv):
  console.setup()
  disk = pathlib.Path(argv[1])
  writer = train._metric_writer(str(disk / 'run'))
  writer.write_scalars(0, {'loss': 1.0})
  writer.flush()
  fill_disk(disk)
  for step in range(1, 3000):  # about 200 KB of events, more than the 4 KiB page they can end
    writer.write_scalars(step, {'loss': 1.0, 'val/top1': 0.5})
  writer.flush()
  writer.close()
  print('closed')


app.run(main)
'''


def test_tensorboard_events_that_cannot_be_written_are_said_once_and_training_goes_on(
    small_disk):
  """A full disk met by the TensorBoard writer (its file grows between checkpoints) ended a run
  in clu's AsyncError traceback, mid-training or after a failed save's one line (closing the
  writer flushes it). Now, as for log.txt: one warning line on the console, and the writer
  stops writing."""
  proc = subprocess.run([sys.executable, '-c', _EVENTS_ON_A_FULL_DISK, str(small_disk)],
                        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and proc.stdout == 'closed\n', proc.stderr[-3000:]
  said = proc.stderr.splitlines()
  assert len(said) == 1, proc.stderr[-3000:]
  assert re.fullmatch(rf'\d\d:\d\d:\d\d warning: Cannot write TensorBoard events to '
                      rf'{small_disk}/run/events\.out\.tfevents\.\S+: No space left on device\. '
                      r'Training goes on; the points from here on are in the console only\.',
                      said[0]), said[0]


def _resource_exhausted(message):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.errors.ResourceExhaustedError(None, None, message)


def _raised_while_handling(error, handled):
  """`error` as Python has it when raised, with no `from`, in an `except` handling `handled`."""
  error.__context__ = handled
  return error


def _raised_from(error, cause):
  error.__cause__ = cause
  return error


_NO_SPACE = OSError(28, 'No space left on device')


@pytest.mark.parametrize('make_error, kept', [
    # TensorFlow's ResourceExhaustedError also means out of memory: that keeps its traceback.
    (lambda: _resource_exhausted('OOM when allocating tensor'), 'OOM'),
    (lambda: _resource_exhausted('/tmp/x.incomplete; No space left on device\n\tFailed to flush'),
     None),
    # An eager op's error ends with the op (TensorFlow's SavedModel writer: review).
    (lambda: _resource_exhausted('{{function_node __wrapped__SaveV2}} /x/part-0; No space left '
                                 'on device [Op:SaveV2]'), None),
    (lambda: _resource_exhausted('/x/part-0; No space left on device [Op:SaveV2] name: '), None),
    # TensorStore's (orbax's) errors give the OS error as a code in their text.
    (lambda: ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/.zarray": Failed to write '
                        "180 bytes to file 9: No space left on device [os_error_code='28']"),
     None),
    (lambda: ValueError("PERMISSION_DENIED: Error writing: denied [os_error_code='13']"),
     'denied'),
    (lambda: RuntimeError("a value os_error_code='28' quoted"), 'quoted'),  # not TensorStore's
    (lambda: _raised_from(RuntimeError('wrapped'), _NO_SPACE), None),
    # A bug while a refusal is handled (e.g. in a writer's close after a failed save) is a bug.
    (lambda: _raised_while_handling(KeyError('a bug'), _NO_SPACE), 'a bug'),
], ids=['tf_out_of_memory', 'tf_no_space', 'tf_graph_op', 'tf_eager_op', 'tensorstore_28',
        'tensorstore_13', 'quoted_code', 'raised_from_a_refusal', 'bug_while_handling_one'])
def test_only_a_write_refused_for_space_becomes_no_space(make_error, kept):
  """A write refused for space becomes NoSpace naming the file; any other error is raised as
  it was, with its traceback."""
  error = make_error()
  with pytest.raises(Exception) as raised:
    with data_errors.writing('/any/file'):
      raise error
  if kept is None:
    assert isinstance(raised.value, data_errors.NoSpace), repr(raised.value)
    assert str(raised.value).startswith('Cannot write /any/file: No space left'), raised.value
  else:
    assert raised.value is error and kept in str(error)


def test_a_file_written_anew_keeps_the_earlier_copy_when_the_write_fails(tmp_path):
  """Eval's CSVs were written in place: an error half-way (here a label no class has) left a
  file with a header and a row, the earlier run's copy gone. Now the earlier copy stays, no
  half-written one is left, and the error keeps its traceback; a whole write replaces it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from salinet_jax import evaluate  # pylint: disable=g-import-not-at-top
  from salinet_jax import reports  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'eval_val_predictions.csv'
  path.write_text('the earlier run\'s copy\n')
  bad = evaluate.Predictions(scores=np.eye(2, 3, dtype=np.float32), labels=np.array([0, 7]),
                             filenames=['a.mp4', 'b.mp4'], classes=['x', 'y', 'z'])
  with pytest.raises(IndexError):
    reports.write_predictions_csv(str(path), bad)
  assert path.read_text() == 'the earlier run\'s copy\n'
  assert os.listdir(tmp_path) == ['eval_val_predictions.csv']
  reports.write_predictions_csv(str(path), evaluate.Predictions(
      scores=bad.scores, labels=np.array([0, 1]), filenames=bad.filenames, classes=bad.classes))
  assert path.read_text().splitlines()[1].startswith('a.mp4,0,x,1,0,x,1,')
  assert os.listdir(tmp_path) == ['eval_val_predictions.csv']


def test_a_file_written_anew_keeps_its_link_and_permissions(tmp_path):
  """Written in place, an output that is a symlink (e.g. into shared storage) stayed one, and
  its permissions stayed; the first version of the atomic writer replaced the link by a file,
  leaving the file it pointed to stale without a word, and reset the mode (review)."""
  shared = tmp_path / 'shared' / 'predictions.csv'
  shared.parent.mkdir()
  shared.write_text('earlier\n')
  shared.chmod(0o640)
  link = tmp_path / 'run' / 'predictions.csv'
  link.parent.mkdir()
  link.symlink_to(shared)
  with data_errors.replacing(str(link)) as f:
    f.write('new\n')
  assert link.is_symlink() and shared.read_text() == 'new\n'
  assert shared.stat().st_mode & 0o777 == 0o640
  assert sorted(os.listdir(shared.parent)) == ['predictions.csv']
  with data_errors.replacing(str(tmp_path / 'a' / 'new' / 'folder' / 'x.json')) as f:
    f.write('{}')
  assert (tmp_path / 'a' / 'new' / 'folder' / 'x.json').read_text() == '{}'


def test_files_replaced_together_stay_one_set(tmp_path, monkeypatch):
  """Review of `replacing_together`: a block inside another replaced its files at once (after
  the outer one failed, half of the set was new); a file written twice failed at the end with
  a bare FileNotFoundError after moving its first copy in; a rename that failed left the other
  new copies beside the files."""
  def write(name, text):
    with data_errors.replacing(str(tmp_path / name)) as f:
      f.write(text)

  for name in 'abc':
    write(name, 'old')
  with pytest.raises(RuntimeError):
    with data_errors.replacing_together():
      write('a', 'new')
      with data_errors.replacing_together():
        write('b', 'new')
      raise RuntimeError('stopped before c')
  assert [(tmp_path / n).read_text() for n in 'abc'] == ['old'] * 3
  assert sorted(os.listdir(tmp_path)) == ['a', 'b', 'c']
  with data_errors.replacing_together():
    write('a', 'first')
    write('b', 'new')
    write('a', 'last')
  assert [(tmp_path / n).read_text() for n in 'ab'] == ['last', 'new']
  replace = os.replace

  def fails_for_b(source, target):
    if target.endswith('/b'):
      raise OSError(5, 'Input/output error')
    replace(source, target)

  monkeypatch.setattr(os, 'replace', fails_for_b)
  with pytest.raises(OSError):
    with data_errors.replacing_together():
      for name in 'abc':
        write(name, 'newer')
  assert sorted(os.listdir(tmp_path)) == ['a', 'b', 'c']  # no new copy left behind


def test_a_folder_replaced_whole_leaves_no_earlier_file_and_a_stop_loses_nothing(tmp_path,
                                                                                 monkeypatch):
  """`replacing_folder`: the new folder replaces the earlier one whole (an evaluation's pictures
  of fewer videos than the one before were left beside its extra ones, of another step); an
  error keeps the earlier one; inside `replacing_together` it goes with that block's files; a
  Ctrl-C between the two renames of the move (an export's --overwrite) left neither."""
  out = tmp_path / 'out'

  def fill(names, text, then=None):
    with data_errors.replacing_folder(str(out)) as new:
      assert os.listdir(new) == []
      for name in names:
        with open(os.path.join(new, name), 'w') as f:
          f.write(text)
      if then:
        then()

  def contents():
    return {p.name: p.read_text() for p in out.iterdir()}

  fill(['a', 'b', 'c'], 'first')
  fill(['a'], 'second')
  assert contents() == {'a': 'second'} and os.listdir(tmp_path) == ['out']
  assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # as a new folder, not mkdtemp's 0700

  def fails():
    raise RuntimeError('a bug')

  with pytest.raises(RuntimeError):
    fill(['b'], 'third', then=fails)
  assert contents() == {'a': 'second'} and os.listdir(tmp_path) == ['out']
  with pytest.raises(RuntimeError):
    with data_errors.replacing_together():
      fill(['b'], 'third')
      with data_errors.replacing(str(tmp_path / 'results.json')) as f:
        f.write('{}')
      fails()
  assert contents() == {'a': 'second'} and os.listdir(tmp_path) == ['out']
  with data_errors.replacing_together():
    fill(['b'], 'third')
    assert contents() == {'a': 'second'}  # not before the block ends
  assert contents() == {'b': 'third'} and os.listdir(tmp_path) == ['out']
  fill([], 'nothing')  # nothing to replace the earlier folder with
  assert contents() == {'b': 'third'} and os.listdir(tmp_path) == ['out']
  rename = os.rename

  def interrupted_at_the_second(source, target):
    if os.path.basename(source).startswith('.out.partial-'):
      raise KeyboardInterrupt
    rename(source, target)

  monkeypatch.setattr(os, 'rename', interrupted_at_the_second)
  with pytest.raises(KeyboardInterrupt):
    fill(['c'], 'fourth')
  assert contents() == {'b': 'third'} and os.listdir(tmp_path) == ['out']


def _umask():
  umask = os.umask(0)
  os.umask(umask)
  return umask


def test_a_converted_checkpoint_on_a_full_disk_ends_in_one_line_and_leaves_nothing(small_disk):
  """`python -m salinet_jax.convert` onto a full disk ended in TensorStore's traceback and left
  orbax's unfinished save folder holding space (review)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from salinet_jax import pretrained  # pylint: disable=g-import-not-at-top
  from tests.conftest import fill_disk  # pylint: disable=g-import-not-at-top
  fill_disk(small_disk)
  target = small_disk / 'converted'
  with pytest.raises(data_errors.NoSpace, match=f'^Cannot write {target}/variables: No space '
                     'left on device; the command stopped there$'):
    pretrained.save_converted(str(target), {'params': {'w': np.zeros(1000, np.float32)}},
                              {'source': 'a PyTorch checkpoint'})
  assert os.listdir(target) == []


def test_an_event_write_that_fails_for_another_reason_keeps_its_traceback(tmp_path):
  """Only a write refused for space is said in a warning: a value TensorBoard cannot take is a
  bug, and was once swallowed with the rest (review)."""
  writer = train._metric_writer(str(tmp_path))
  with pytest.raises(Exception, match='Cast string to float'):
    writer.write_scalars(0, {'loss': 'not a number'})
    writer.flush()
  assert not writer.failed


def test_a_save_failure_heard_while_another_error_ends_the_run_replaces_neither(
    small_disk, caplog):
  """A pending save failing in the background is first heard when the run's error closes the
  store; its one line replaced the error, a bug's traceback or a Ctrl-C's status (review)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  store = checkpoints.CheckpointStore(str(small_disk / 'run'), config.checkpoint)
  writer = train._metric_writer(str(small_disk / 'run'))
  noise = np.random.default_rng(0).random(2**19, np.float32)  # 2 MiB that do not compress
  store.save(1, {'params': {'w': jnp.asarray(noise)}, 'step': jnp.asarray(1)})
  with pytest.raises(KeyboardInterrupt):
    try:
      raise KeyboardInterrupt
    except BaseException:  # pylint: disable=broad-except
      train._close_while_failing(store, writer)
      raise
  assert re.search(r'Saving checkpoint step 1 failed: No space left on device', caplog.text)


def test_the_training_run_closes_its_store_while_failing_without_replacing_the_error(
    config, tmp_path, monkeypatch, caplog):
  """The run wires the above in: its error stays the error when the store's close reports a
  save that failed in the background (a `finally: store.close()` replaced it)."""
  def failing_close(self):
    del self
    raise checkpoints.CheckpointSaveError('Saving checkpoint step 2 failed: No space left.')

  def a_bug(*args):
    del args
    raise RuntimeError('a bug in the training loop')

  monkeypatch.setattr(checkpoints.CheckpointStore, 'close', failing_close)
  monkeypatch.setattr(train, '_train_loop', a_bug)
  with pytest.raises(RuntimeError, match='^a bug in the training loop$'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'Saving checkpoint step 2 failed: No space left.' in caplog.text


def test_setting_aside_tensorboard_points_on_a_full_disk_leaves_the_files_as_they_were(
    small_disk):
  """A resume after a full disk (what the one-line error advises) set the points of unsaved steps
  aside through TensorFlow's writer: its traceback, and half-written copies (review)."""
  from salinet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from tests.conftest import fill_disk  # pylint: disable=g-import-not-at-top
  run = small_disk / 'run'
  writer = train._metric_writer(str(run))
  for step in range(1, 500):
    writer.write_scalars(step, {'loss': 1.0})
  writer.close()
  before = {path.name: path.read_bytes() for path in run.iterdir()}
  fill_disk(small_disk)
  with pytest.raises(data_errors.NoSpace, match=rf'^Cannot write {run}/events\.out\.tfevents'):
    workdir_lib.set_aside_events_after(str(run), 10)
  assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
  assert not list((run / 'discarded').rglob('events*'))


def test_a_data_report_stopped_as_it_draws_leaves_no_card_without_its_picture(
    tiny_data_dir, tmp_path, monkeypatch, capsys):
  """report.json was written before report.png was drawn: a Ctrl-C between them left a card
  beside the picture of an earlier report, or none (review)."""
  from data import report  # pylint: disable=g-import-not-at-top

  def stopped(card, path):
    raise KeyboardInterrupt

  output = tmp_path / 'card'
  monkeypatch.setattr(report, 'plot', stopped)
  assert report.main([f'--records={tiny_data_dir}', f'--output={output}']) == 130
  assert capsys.readouterr().err.endswith(
      'Interrupted by Ctrl-C: the report is incomplete. Exit status 130.\n')
  assert not output.exists() or os.listdir(output) == []
  monkeypatch.undo()
  assert report.main([f'--records={tiny_data_dir}', f'--output={output}']) == 0
  assert sorted(os.listdir(output)) == ['report.json', 'report.png']


def test_the_data_card_and_the_demo_records_on_a_full_disk_end_in_one_line(tiny_data_dir,
                                                                           small_disk, capsys):
  """Both ended in a traceback: Python's OSError naming no file for the card, TensorFlow's
  ResourceExhaustedError for the demo's synthetic records (what main.py writes first)."""
  from data import report  # pylint: disable=g-import-not-at-top
  from data import synthetic  # pylint: disable=g-import-not-at-top
  from tests.conftest import fill_disk, tiny_config  # pylint: disable=g-import-not-at-top
  fill_disk(small_disk)
  assert report.main([f'--records={tiny_data_dir}', f'--output={small_disk}']) == 1
  assert capsys.readouterr().err == (f'error: Cannot write the data card to {small_disk}: No '
                                     'space left on device. Free some space, or pass another '
                                     '--output.\n')
  with pytest.raises(SystemExit) as stopped:
    with cli.user_errors_in_one_line():
      synthetic.generate(str(small_disk / 'demo'), tiny_config(small_disk).dataset.synthetic)
  assert stopped.value.code == 1
  assert re.fullmatch(rf'error: Cannot write {small_disk}/demo/synthetic-train\.tfrecord-\d+-of-'
                      r'\d+: No space left on device; the command stopped there\. Free some '
                      r'space, or write elsewhere, and run the command again\.\n',
                      capsys.readouterr().err)


def test_ctrl_c_in_the_data_report_and_bench_commands_ends_in_one_line(monkeypatch, capsys):
  """Both printed a KeyboardInterrupt traceback (the README says every command ends in one
  line on a Ctrl-C)."""
  from data import bench as data_bench  # pylint: disable=g-import-not-at-top
  from data import report  # pylint: disable=g-import-not-at-top

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(report, 'build', interrupted)
  monkeypatch.setattr(data_bench, '_measure', interrupted)
  assert report.main(['--records=/any']) == 130
  assert capsys.readouterr().err == ('Interrupted by Ctrl-C: the report is incomplete. Exit status '
                                     '130.\n')
  assert data_bench.main(['--records=/any']) == 130
  assert capsys.readouterr().err == 'Interrupted by Ctrl-C. Exit status 130.\n'


@pytest.mark.parametrize('flag', ['--seconds=0', '--seconds=nan', '--seconds=inf', '--rounds=0',
                                  '--batch_size=0', '--num_clips=-1'])
def test_data_bench_numbers_out_of_range_are_refused_before_anything_runs(flag, monkeypatch,
                                                                          capsys):
  """Each ran into a traceback (an empty max(), a division by zero) after the measurements had
  started (config audit)."""
  from data import bench as data_bench  # pylint: disable=g-import-not-at-top

  def never(*args, **kwargs):
    raise AssertionError('nothing may be measured')

  monkeypatch.setattr(data_bench, '_measure', never)
  with pytest.raises(SystemExit) as e:
    data_bench.main(['--records=/any', flag])
  assert e.value.code == 2
  assert f'argument {flag.split("=")[0]}: must be ' in capsys.readouterr().err


def test_data_bench_says_when_its_ratios_do_not_compare_with_their_targets():
  """Records at short side 64 read (a)/(c) = 11.9x against a 5x target, as if the pipeline
  were twice as fast as at 256 (data audit)."""
  from data import bench as data_bench  # pylint: disable=g-import-not-at-top
  assert data_bench.short_side_warning(256) == ''
  assert data_bench.short_side_warning(64).startswith(
      'the records store frames at short side 64, not short side 256: (a) and (b) decode those')
  assert data_bench.short_side_warning(0).startswith(
      'the records store frames at their original size, not short side 256')


def test_data_bench_on_a_split_the_records_lack_or_without_the_sources_is_one_line(
    tiny_data_dir, tmp_path, capsys):
  """--split=test was a KeyError, an empty split hung, and source videos not found a
  FileNotFoundError traceback (data audit)."""
  from data import bench as data_bench  # pylint: disable=g-import-not-at-top
  assert data_bench.main([f'--records={tiny_data_dir}', '--split=test', '--seconds=1']) == 1
  assert capsys.readouterr().err == (
      f"error: The records in {tiny_data_dir} hold no video of split 'test' (their splits: "
      "train 8, val 7): pass --split=NAME.\n")
  assert data_bench.main([f'--records={tiny_data_dir}', f'--videos={tmp_path}',
                          '--seconds=1']) == 1
  assert capsys.readouterr().err.startswith(
      f'error: 8 source videos of the sampled clips are not under {tmp_path} (e.g. ')


@pytest.mark.parametrize('damage', ['deleted', 'truncated', 'truncated_unrecorded'])
def test_the_data_report_of_damaged_records_says_so(damage, tiny_data_dir, tmp_path, capsys):
  """A deleted val shard and a train shard cut short printed a clean card ('val: 7 videos, 0
  failed', exit 0), and records whose metadata keeps no shard sizes a DataLossError traceback
  (data audit)."""
  from data import report  # pylint: disable=g-import-not-at-top
  copy = tmp_path / 'records'
  shutil.copytree(tiny_data_dir, copy)
  split = 'val' if damage == 'deleted' else 'train'
  shard = records.shard_files(str(copy), 'synthetic', split)[0]
  if damage == 'deleted':
    os.remove(shard)
  else:
    with open(shard, 'r+b') as f:
      f.truncate(1000)
  if damage == 'truncated_unrecorded':
    metadata = json.loads((copy / 'metadata.json').read_text())
    metadata['shards'] = {}
    (copy / 'metadata.json').write_text(json.dumps(metadata))
  assert report.main([f'--records={copy}', f'--output={tmp_path / "card"}']) == 1
  out, err = capsys.readouterr()
  damaged = [line for line in out.splitlines() if line.startswith('    DAMAGED: ')]
  assert len(damaged) == 1 and os.path.basename(shard) in damaged[0], out
  assert err == (f'error: the records of split {split!r} in {copy} are damaged (the DAMAGED line '
                 'above): convert the split again.\n')


def test_the_data_report_says_which_figures_are_of_the_stored_frames(tiny_data_dir):
  """After --fps=10 --max_frames=40 the card gave the sources' 25-30 fps beside the stored
  frames' durations and counts, without saying either (data audit)."""
  from data import report  # pylint: disable=g-import-not-at-top
  card = report.build(str(tiny_data_dir))
  card['splits']['train'].update(stored_fps=10.0, stored_max_frames=40)
  text = report.summary(card)
  assert ('    stored resampled to 10 fps, at most 40 frames: durations and frames are of the '
          'stored frames') in text
  assert '    stored duration seconds: ' in text and '    stored frames per video: ' in text
  assert '    stored fps: ' in text  # synthetic records keep no source rate


def test_the_data_report_gives_the_short_side_the_frames_were_stored_at(tmp_path):
  """The card gave the sources' short sides alone: the short side the converter stored the
  frames at (--short_side), which the eval short side is checked against, was nowhere on it."""
  from data import report  # pylint: disable=g-import-not-at-top
  copy = tmp_path / 'records'
  shutil.copytree(REPO_ROOT / 'tests' / 'fixtures' / 'records_schema1', copy)
  metadata = json.loads((copy / 'metadata.json').read_text())
  metadata['extra']['conversion']['train']['settings']['short_side'] = 24
  (copy / 'metadata.json').write_text(json.dumps(metadata))
  card = report.build(str(copy))
  assert (card['splits']['train']['stored_short_side'],
          card['splits']['val']['stored_short_side']) == (24, 0)
  text = report.summary(card).split('\n  val: ')
  assert '\n    stored at short side 24 px\n' in text[0], text[0]
  assert 'stored at short side' not in text[1], text[1]


@pytest.mark.parametrize('env, expected', [
    ({'JAX_NUM_PROCESSES': '2'}, 'JAX_NUM_PROCESSES set without JAX_COORDINATOR_ADDRESS, '
     'JAX_PROCESS_ID: a multi-process run configured by hand needs all three (or '
     'SALINET_JAX_DISTRIBUTED=1 where JAX detects the cluster).'),
    ({'JAX_COORDINATOR_ADDRESS': 'localhost:12355'}, 'JAX_COORDINATOR_ADDRESS set without '
     'JAX_NUM_PROCESSES, JAX_PROCESS_ID'),
    ({'SALINET_JAX_DISTRIBUTED': 'yes'}, "SALINET_JAX_DISTRIBUTED must be 1 (join the cluster JAX "
     "detects) or 0, got 'yes'."),
])
def test_a_partial_multi_process_environment_is_refused(env, expected, tiny_data_dir, tmp_path):
  """JAX_NUM_PROCESSES=2 alone, or SALINET_JAX_DISTRIBUTED=yes, trained as one process without a
  word; the coordinator's address alone ended in a bare KeyError traceback."""
  proc = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={tmp_path / "run"}',
       *_tiny_overrides(tiny_data_dir)], cwd=REPO_ROOT, env=subprocess_env(**env),
      capture_output=True, text=True, timeout=600)
  assert expected in _one_error_line(proc)


@pytest.mark.parametrize('command', [
    ('salinet_jax.export', '--workdir=/tmp/unused', '--output=/tmp/unused_export'),
    ('salinet_jax.convert', '--source=pyslowfast', '--checkpoint=missing.pkl',
     '--config=configs/k400_i3d_nl.py', '--output=/tmp/unused')], ids=['export', 'convert'])
def test_one_process_commands_started_in_a_process_group_are_refused(command):
  """An export started by a multi-process launcher ran whole in every process, each writing the
  same folder (audit: the second overwrote the first without --overwrite)."""
  env = subprocess_env(JAX_COORDINATOR_ADDRESS='localhost:12355', JAX_NUM_PROCESSES='2',
                       JAX_PROCESS_ID='1')
  proc = subprocess.run([sys.executable, '-m', *command], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert (f'python -m {command[0]} runs in one process (this one was started as process 1 of '
          '2, and each would write the same files): start it without JAX_COORDINATOR_ADDRESS '
          '/ SALINET_JAX_DISTRIBUTED.') in _one_error_line(proc, 1)


@pytest.mark.parametrize('text, argument, expected', [
    ('def get_config(:\n  pass\n', '', '--config: {file}:1: invalid syntax.'),
    ('import no_such_module\n', '', "--config: the config file's import failed: No module named "
     "'no_such_module'."),
    ('x = 1\n', '', '--config: the config file defines no get_config().'),
    ('from configs import demo\nget_config = demo.get_config\n', ':foo',
     "get_config() takes 0 positional arguments but 1 was given (this config file takes no "
     "':ARG')"),
], ids=['syntax_error', 'failed_import', 'no_get_config', 'unwanted_argument'])
def test_a_config_file_that_cannot_load_is_one_line(text, argument, expected, tmp_path):
  """A syntax error or a failed import in the config file was a 30-line traceback, a file
  without get_config was called an unknown config field, and an unwanted ':ARG' printed the
  traceback folded into the error line."""
  config_file = tmp_path / 'my_config.py'
  config_file.write_text(text)
  proc = subprocess.run([sys.executable, '-m', 'salinet_jax.info', f'--config={config_file}'
                         f'{argument}'], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                        text=True, timeout=300)
  line = _one_error_line(proc, 2)
  assert expected.format(file=config_file) in line and 'File "' not in line, line


def test_a_backend_this_machine_cannot_start_is_one_line(tmp_path):
  """JAX_PLATFORMS naming a backend that is not there ended in a RuntimeError traceback (for
  'cuda' on a CPU machine, a bare AssertionError with no message at all)."""
  env = dict(subprocess_env(), JAX_PLATFORMS='bogus')
  proc = subprocess.run([sys.executable, 'main.py', '--config=configs/demo.py',
                         f'--workdir={tmp_path / "run"}'], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert _one_error_line(proc).startswith(
      'error: JAX_PLATFORMS=bogus names a backend this machine cannot start')
  assert not (tmp_path / 'run').exists()


def test_an_override_the_configs_loss_optimizer_or_schedule_does_not_read_is_refused(
    tiny_data_dir, tmp_path):
  """--config.loss.l1_weight with the cross-entropy loss, adam_b1 with SGD, step_boundaries with
  a cosine: each trained exactly as without it, without a word (config audit)."""
  config = demo.get_config()
  config.loss.name = 'cross_entropy'
  assert cli.unread_override(config, ['--config.loss.l1_weight=0.5'], 'train') == (
      "--config.loss.l1_weight is not read by loss 'cross_entropy' (it reads label_smoothing): "
      'set --config.loss.name too, or leave it out.')
  assert cli.unread_override(config, ['--config.optimizer.step_boundaries=(0.3,0.6)'],
                             'train') == (
      "--config.optimizer.step_boundaries is read by schedule 'steps' only, not by 'cosine': "
      'set --config.optimizer.schedule too, or leave it out.')
  assert cli.unread_override(config, ['--config.optimizer.adam_b1', '0.5'], 'train').startswith(
      '--config.optimizer.adam_b1 is read by')  # absl's space-separated form
  # A floor under a schedule that has none, a warm-up in steps for the one counted in epochs
  # (engine audit: both trained as without them).
  config.optimizer.schedule = 'pyslowfast_cosine'
  assert cli.unread_override(config, ['--config.optimizer.final_lr_fraction=0.5'], 'train') == (
      "--config.optimizer.final_lr_fraction is read by schedule 'cosine' or 'warmup_cosine' or "
      "'epoch_cosine' only, not by 'pyslowfast_cosine': set --config.optimizer.schedule too, or "
      'leave it out.')
  config.optimizer.schedule = 'epoch_cosine'
  assert cli.unread_override(config, ['--config.optimizer.warmup_steps=3'], 'train').startswith(
      "--config.optimizer.warmup_steps is read by schedule 'steps' or 'warmup_cosine' or "
      "'constant' or 'pyslowfast_cosine' only, not by 'epoch_cosine'")
  assert cli.unread_override(config, ['--config.optimizer.final_lr_fraction=0.5',
                                      '--config.optimizer.warmup_epochs=2'], 'train') == ''
  config.optimizer.schedule = 'cosine'
  assert cli.unread_override(config, ['--config.loss.label_smoothing=0.1',
                                      '--config.optimizer.momentum=0.8'], 'train') == ''
  line = _one_error_line(_main('--config=configs/demo.py', f'--workdir={tmp_path / "run"}',
                               *_tiny_overrides(tiny_data_dir), '--config.optimizer.adam_b1=0.5'))
  assert line == ("error: --config.optimizer.adam_b1 is read by optimizer 'adamw' only, not by "
                  "'sgd': set --config.optimizer.name too, or leave it out.")


@pytest.mark.parametrize('override, expected', [
    ('--config.remat=bogus', "error: config.remat must be one of ('none', 'elementwise', "
     "'blocks', 'full'), got 'bogus'."),
    ('--config.optimizer.schedule=foo', 'error: config.optimizer.schedule must be one of '),
    ('--config.optimizer.warmup_epochs=1', "error: config.optimizer.warmup_epochs needs a "
     "schedule with a warm-up ('warmup_cosine', 'steps', 'constant' or 'pyslowfast_cosine'), "
     "not 'cosine'."),
])
def test_a_mistyped_remat_or_schedule_leaves_no_workdir_behind(tiny_data_dir, tmp_path, override,
                                                                expected):
  """These failed after the workdir, its checkpoints/ folder and log.txt were made (engine
  audit), against the promise that a mistyped value leaves nothing behind."""
  line = _one_error_line(_main('--config=configs/demo.py', f'--workdir={tmp_path / "run"}',
                               *_tiny_overrides(tiny_data_dir), override))
  assert line.startswith(expected), line
  assert not (tmp_path / 'run').exists()


def test_an_override_of_another_modes_settings_is_refused(tiny_data_dir, tmp_path):
  """--config.predict.* in eval or features, --config.features.* in predict, and a window's
  stride without a window changed nothing, without a word (config audit)."""
  config = demo.get_config()
  assert cli.unread_override(config, ['--config.predict.window_seconds=4'], 'eval') == (
      '--config.predict.window_seconds is read by --mode=predict only, not by --mode=eval: add '
      'the mode it was meant for, or leave it out.')
  assert cli.unread_override(config, ['--config.features.per_view=True'], 'predict').startswith(
      '--config.features.per_view is read by --mode=features only, not by --mode=predict')
  for field in ('stride_seconds=2', 'window_batch=4', 'timeline_classes=3'):
    assert cli.unread_override(config, [f'--config.predict.{field}'], 'predict') == (
        f'--config.predict.{field.split("=")[0]} is read by windowed predict only '
        '(config.predict.window_seconds > 0, here 0): set --config.predict.window_seconds too, '
        'or leave it out.')
  # Training evaluates the weights it trains: which checkpoint to restore is for the other modes
  # (the README's own example trained with it, unread: README audit).
  assert cli.unread_override(config, ['--config.eval.checkpoint=best'], 'train') == (
      '--config.eval.checkpoint is read by --mode=eval, predict or features only, not by '
      '--mode=train: add the mode it was meant for, or leave it out.')
  for mode in ('eval', 'predict', 'features'):
    assert cli.unread_override(config, ['--config.eval.checkpoint=best'], mode) == ''
  assert cli.unread_override(config, ['--config.eval.view_reduction=mean'], 'train') == ''
  # Features average a video's views and draw no pictures; predict through an export restores
  # no checkpoint (audit: each was accepted and changed nothing).
  for field in ('view_reduction=max', 'view_scores=softmax', 'num_visualizations=3'):
    assert cli.unread_override(config, [f'--config.eval.{field}'], 'features').startswith(
        f'--config.eval.{field.split("=")[0]} is read by --mode=')
  assert cli.unread_override(config, ['--config.eval.num_visualizations=3'], 'train') != ''
  assert cli.unread_override(config, ['--config.eval.num_visualizations=3'], 'predict') == ''
  config.predict.window_seconds = 2.0
  assert cli.unread_override(config, ['--config.eval.num_visualizations=3'], 'predict') == (
      '--config.eval.num_visualizations is not read by windowed predict '
      '(config.predict.window_seconds=2), which draws timelines: predict whole videos for '
      'pictures, or leave it out.')
  config.predict.window_seconds = 0.0
  # Eval scored the workdir's checkpoint, not init_from's weights, and recomputed no BatchNorm
  # statistics (train/eval audit: another checkpoint's top-1 was reported without a word).
  for mode in ('eval', 'predict', 'features'):
    assert cli.unread_override(config, ['--config.init_from.checkpoint=/other/run'], mode) == (
        f'--config.init_from.checkpoint is read by --mode=train only, not by --mode={mode}: '
        'add the mode it was meant for, or leave it out.')
    assert cli.unread_override(config, ['--config.precise_bn_batches=5'], mode).startswith(
        '--config.precise_bn_batches is read by --mode=train only')
  assert cli.unread_override(config, ['--config.init_from.checkpoint=/other/run',
                                      '--config.precise_bn_batches=5'], 'train') == ''
  # Settings of another temporal sampler or train crop (pipeline audit: eval batches were
  # byte-identical for target_fps 30 and 10 under dense sampling, and for strides 4 and 16
  # under tsn).
  assert cli.unread_override(config, ['--config.data.target_fps=10'], 'train') == (
      "--config.data.target_fps is read by temporal_sampling 'pyslowfast' only, not by 'dense': "
      'set --config.data.temporal_sampling too, or leave it out.')
  config.data.temporal_sampling = 'tsn'
  assert cli.unread_override(config, ['--config.data.frame_stride=16'], 'eval').startswith(
      "--config.data.frame_stride is read by temporal_sampling 'dense' or 'pyslowfast' or "
      "'all_frames' only, not by 'tsn'")
  config.data.temporal_sampling, config.data.train_crop = 'pyslowfast', 'inception'
  assert cli.unread_override(config, ['--config.data.target_fps=10',
                                      '--config.data.inception_area_range=(0.2,1.0)'],
                             'train') == ''
  assert cli.unread_override(config, ['--config.data.train_min_scale=200'], 'train') == (
      "--config.data.train_min_scale is read by train_crop 'short_side_jitter' only, not by "
      "'inception': set --config.data.train_crop too, or leave it out.")
  config.data.temporal_sampling, config.data.train_crop = 'dense', 'short_side_jitter'
  config.predict.exported = '/exports/stablehlo'
  assert cli.unread_override(config, ['--config.eval.checkpoint=best'], 'predict') == (
      "--config.eval.checkpoint is not read by predict through an export "
      "(config.predict.exported='/exports/stablehlo'): it predicts with the weights exported; "
      'leave one of them out.')
  config.predict.exported = ''
  config.predict.window_seconds = 4.0
  assert cli.unread_override(config, ['--config.predict.stride_seconds=2'], 'predict') == ''
  assert cli.unread_override(config, ['--config.predict.exported=x'], 'predict') == ''
  assert cli.unread_override(config, ['--config.features.per_view=True'], 'features') == ''
  line = _one_error_line(_main('--config=configs/demo.py', f'--workdir={tmp_path / "run"}',
                               *_tiny_overrides(tiny_data_dir), '--mode=eval',
                               '--config.predict.window_seconds=4'))
  assert line.startswith('error: --config.predict.window_seconds is read by --mode=predict only')
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('command, url', [
    (('main.py', '--config=CONFIGS/demo.py', '--workdir=gs://bucket/run'), '--workdir=gs://'),
    (('main.py', '--config=CONFIGS/demo.py', '--workdir=run', '--mode=eval',
      '--output_dir=gs://bucket/eval'), '--output_dir=gs://'),
    (('main.py', '--config=CONFIGS/demo.py', '--workdir=run',
      '--config.dataset.data_dir=s3://bucket/records'), 'config.dataset.data_dir=s3://'),
    (('-m', 'salinet_jax.export', '--workdir=run', '--output=gs://bucket/export'),
     '--output=gs://'),
    (('-m', 'salinet_jax.convert', '--source=pyslowfast', '--checkpoint=I3D_NLN_8x8_R50.pkl',
      '--config=CONFIGS/k400_i3d_nl.py', '--output=gs://bucket/i3d'), '--output=gs://'),
    # Every value of a repeated flag, not only the first.
    (('main.py', '--config=CONFIGS/demo.py', '--workdir=run', '--mode=predict', '--video=a.mp4',
      '--video=gs://bucket/b.mp4'), '--video=gs://'),
    (('-m', 'salinet_jax.export', '--workdir=run', '--output=out', '--video=a.mp4',
      '--video=s3://bucket/b.mp4'), '--video=s3://'),
    # The config fields that name a checkpoint or an export, and the flags of bench and convert.
    (('main.py', '--config=CONFIGS/demo.py', '--workdir=run', '--mode=eval',
      '--config.eval.checkpoint=gs://bucket/run/checkpoints/2'), 'config.eval.checkpoint=gs://'),
    (('main.py', '--config=CONFIGS/demo.py', '--workdir=run', '--mode=predict', '--video=a.mp4',
      '--config.predict.exported=gs://bucket/export/onnx'), 'config.predict.exported=gs://'),
    (('-m', 'salinet_jax.bench', '--config=CONFIGS/demo.py', '--profile_dir=gs://bucket/trace'),
     '--profile_dir=gs://'),
    (('-m', 'salinet_jax.convert', '--source=pyslowfast', '--checkpoint=I3D_NLN_8x8_R50.pkl',
      '--config=CONFIGS/k400_i3d_nl.py', '--output=i3d', '--classes=https://example.org/k400.txt'),
     '--classes=https://'),
], ids=['train_workdir', 'eval_output_dir', 'records', 'export_output', 'convert_output',
        'predict_second_video', 'export_second_video', 'eval_checkpoint', 'predict_exported',
        'bench_profile_dir', 'convert_classes'])
def test_a_url_for_a_path_ends_the_command_in_one_line_writing_nothing(command, url, tmp_path):
  """The commands open files by filesystem path: a gs:// workdir became a folder 'gs:' in the
  current directory, holding the run's lock, log and checkpoints on this machine's disk."""
  command = [part.replace('CONFIGS', str(REPO_ROOT / 'configs')) for part in command]
  if command[0] == 'main.py':
    command[0] = str(REPO_ROOT / 'main.py')
  proc = subprocess.run([sys.executable, *command], cwd=tmp_path, env=subprocess_env(),
                        capture_output=True, text=True, timeout=300)
  line = _one_error_line(proc, 2)
  assert line.startswith(f'error: {url}'), line
  assert 'is a URL, and this project opens files by filesystem path only (it would be a local ' \
      'folder named' in line, line
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('flags, expected', [
    (('--workdir=~/run', '--mode=eval'), 'error: No checkpoint in HOME/run/checkpoints: '),
    (('--workdir=run', '--config.init_from.checkpoint=~/i3d'),
     'error: Pretrained checkpoint HOME/i3d does not exist.'),
    # Every --video, not only the first (HOME/a.mp4 exists, HOME/b.mp4 does not).
    (('--workdir=run', '--mode=predict', '--video=~/a.mp4', '--video=~/b.mp4'),
     'error: --video path HOME/b.mp4 does not exist.'),
], ids=['workdir', 'init_from', 'second_video'])
def test_a_leading_tilde_in_a_path_is_the_home_folder(flags, expected, tmp_path):
  """Shells leave `--workdir=~/run` as it is: the run went to a folder '~' of the current
  directory, and a later run started elsewhere did not find its checkpoints."""
  home, cwd = tmp_path / 'home', tmp_path / 'cwd'
  home.mkdir()
  cwd.mkdir()
  (home / 'a.mp4').write_bytes(b'')  # listed by name only: the run ends before reading it
  proc = subprocess.run([sys.executable, str(REPO_ROOT / 'main.py'),
                         f'--config={REPO_ROOT / "configs" / "demo.py"}', *flags], cwd=cwd,
                        env=dict(subprocess_env(), HOME=str(home)), capture_output=True,
                        text=True, timeout=300)
  assert _one_error_line(proc).startswith(expected.replace('HOME', str(home)))
  assert not os.listdir(cwd)


def test_a_config_file_given_with_a_tilde_is_read_and_a_url_refused(tmp_path):
  """`--config=~/mine.py` (which shells leave as it is) was looked for in a folder '~' of the
  current directory; `--config=gs://...` failed on 'No such file or directory: gs'."""
  home, cwd = tmp_path / 'home', tmp_path / 'cwd'
  home.mkdir()
  cwd.mkdir()
  (home / 'mine.py').write_text('from configs.demo import get_config\n')
  env = dict(subprocess_env(), HOME=str(home))
  run = lambda config: subprocess.run(  # pylint: disable=g-long-lambda
      [sys.executable, '-m', 'salinet_jax.info', f'--config={config}'], cwd=cwd, env=env,
      capture_output=True, text=True, timeout=300)
  read = run('~/mine.py')
  assert read.returncode == 0, read.stderr[-3000:]
  assert read.stdout.startswith('salinet_hara on synthetic (4 classes)'), read.stdout
  line = _one_error_line(run('gs://bucket/mine.py'), 2)
  assert line.startswith('error: --config=gs://bucket/mine.py is a URL, and this project opens '
                         'files by filesystem path only'), line
  assert not os.listdir(cwd)


def test_a_path_that_is_not_utf8_text_ends_the_command_in_one_line(tmp_path):
  """TensorFlow takes paths as UTF-8: records in a latin-1 named folder ended eval in a
  TypeError traceback from tf.io.gfile."""
  records = os.fsdecode(os.fsencode(str(tmp_path)) + b'/r\xe9cords')
  proc = subprocess.run([sys.executable, str(REPO_ROOT / 'main.py'),
                         f'--config={REPO_ROOT / "configs" / "demo.py"}', '--workdir=run',
                         '--mode=eval', f'--config.dataset.data_dir={records}'], cwd=tmp_path,
                        env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert _one_error_line(proc, 2) == (
      f'error: config.dataset.data_dir={tmp_path}/r\\xe9cords is not UTF-8 text (undecodable '
      'bytes shown escaped), which TensorFlow and the records take paths as. Rename it (e.g. '
      'convmv -f latin1 -t utf8 --notest PATH).')
  assert not os.listdir(tmp_path)


def test_a_folder_whose_path_holds_brackets_is_refused_where_its_writer_globs_it(
    tiny_data_dir, tmp_path):
  """orbax merges a saved step's files after a glob over its path, where `[1]` is a pattern: a
  run in `runs/i3d[1]` trained, saved and reported success, and its step was 'corrupt' when
  evaluated (NOT_FOUND: ... .zarray does not exist). An export's SavedModel failed its reload
  there the same way ('Failed to find any matching files for .../variables/variables')."""
  from salinet_jax.export import exporter  # pylint: disable=g-import-not-at-top
  config = tiny_config(tiny_data_dir)
  workdir = tmp_path / 'runs' / 'i3d[1]'
  with pytest.raises(data_errors.SettingError, match=(
      rf"^--workdir={re.escape(str(workdir))}: its path holds '\[' or '\]', which orbax's "
      'checkpoint writer takes for a glob pattern')):
    train.train_and_evaluate(config, str(workdir))
  with pytest.raises(data_errors.SettingError, match=r"^--output=.*/\[k400\]/i3d: its path"):
    pretrained.save_converted(str(tmp_path / '[k400]' / 'i3d'), {'params': {}}, {})
  with pytest.raises(data_errors.SettingError, match=(
      r"^--output=.*/exports\[1\]: .* which TensorFlow's SavedModel reader takes for a glob")):
    exporter.export(str(tmp_path / 'run'), str(tmp_path / 'exports[1]'), ['savedmodel'])
  assert not os.listdir(tmp_path)


def test_the_python_api_refuses_a_url_for_a_path(tiny_data_dir, tmp_path, monkeypatch):
  """train_and_evaluate, the records, init_from and the converters' writers refuse a URL in one
  line naming the setting, before anything is written in the current directory."""
  monkeypatch.chdir(tmp_path)
  config = tiny_config(tiny_data_dir)
  with pytest.raises(workdir_lib.NotWritableError, match=(
      r'^Cannot write checkpoints and logs to gs://bucket/run: it is a URL, .* local folder '
      r'named "gs:"\)\. Pass a filesystem path instead\.')):
    train.train_and_evaluate(config, 'gs://bucket/run')
  config.dataset.data_dir = 'gs://bucket/records'
  with pytest.raises(data_errors.SettingError,
                     match=r'^config\.dataset\.data_dir=gs://bucket/records is a URL'):
    pipeline.records_directory(config.dataset)
  config.dataset.data_dir = ''  # the demo records' cache folder
  monkeypatch.setenv('SALINET_JAX_CACHE', 's3://bucket/cache')
  with pytest.raises(data_errors.SettingError, match=r'^SALINET_JAX_CACHE=s3://bucket/cache is a'):
    pipeline.records_directory(config.dataset)
  config.init_from.checkpoint = 'https://example.org/i3d'
  with pytest.raises(data_errors.SettingError,
                     match=r'^config\.init_from\.checkpoint=https://example\.org/i3d is a URL'):
    pretrained.check_init_from(config.init_from)
  with pytest.raises(data_errors.SettingError, match=r'^--output=gs://bucket/i3d is a URL'):
    pretrained.save_converted('gs://bucket/i3d', {'params': {}}, {})
  from salinet_jax.export import exporter  # pylint: disable=g-import-not-at-top
  with pytest.raises(data_errors.SettingError, match=r'^--output=gs://bucket/export is a URL'):
    exporter.export(str(tmp_path / 'run'), 'gs://bucket/export', ['stablehlo'])
  assert not os.listdir(tmp_path)
