"""configs/from_workdir.py: a workdir's config.json read back as the config its run trained
with, which eval, predict and a longer run then take without the training command's overrides."""

import json
import re
import shlex
import shutil

import jax
import numpy as np
import pytest

from configs import demo
from configs import from_workdir
from salinet_jax import checkpoints
from salinet_jax import cli
from salinet_jax import engine
from salinet_jax import optim
from salinet_jax import train
from salinet_jax import workdir as workdir_lib
from tests.conftest import tiny_config
from tests.test_recipes import load


def test_a_config_json_that_predates_a_setting_reads_back_with_its_default_said(tmp_path, capsys):
  """A workdir trained before a setting existed in configs/base.py: the setting takes its
  default, as a checkpoint that predates it is read, and the line names it."""
  config = demo.get_config()
  stored = json.loads(config.to_json_best_effort())
  del stored['remat'], stored['data']['device_prefetch']
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  read_back = from_workdir.get_config(str(tmp_path))
  assert read_back.to_dict() == config.to_dict()
  assert capsys.readouterr().err == (f'{tmp_path / "config.json"} predates '
                                     'config.data.device_prefetch, config.remat: their defaults '
                                     'are used.\n')


@pytest.mark.parametrize('content,reason', [
    (None, 'does not exist: '), (b'{"batch_size": 4', 'is not a config written by a training run'),
    (b'[1, 2]', 'is not a config written by a training run (it holds no object)'),
    (b'{"a": "\xff"}', 'is not a config written by a training run')])
def test_a_workdir_without_a_config_it_can_read_is_named_in_the_error(tmp_path, content, reason):
  if content is not None:
    (tmp_path / 'config.json').write_bytes(content)
  with pytest.raises(ValueError, match=re.escape(f'{tmp_path / "config.json"} {reason}')):
    from_workdir.get_config(str(tmp_path))
  with pytest.raises(ValueError, match=re.escape('--config=configs/from_workdir.py:DIR')):
    from_workdir.get_config()


def _config_json_of_a_start(workdir, config, train_videos):
  """config.json as a training run writes it as it starts (a run by epochs: with its steps)."""
  total = engine.num_train_steps(config, train_videos)
  workdir_lib.write_config(str(workdir), train.with_run_length(config, total))
  return total


def _learning_rates(config, train_videos, total):
  """The learning rate of every step, as a training run's Engine builds its schedule."""
  opt_config, steps_per_epoch = engine.resolved_optimizer(config, train_videos)
  schedule = optim.learning_rate_schedule(opt_config, total, config.batch_size, steps_per_epoch,
                                          engine.schedule_epochs(config, total, train_videos))
  return [float(schedule(step)) for step in range(total)]


@pytest.mark.parametrize('name', ['demo', 'mini_kinetics_s2dnet:warmup',
                                  'mini_kinetics_s2dnet:sampling', 'k400_s2dnet:warmup',
                                  'ssv2_s2dnet:sampling'])
def test_a_run_by_epochs_read_back_keeps_its_learning_rates(name, tmp_path):
  """config.json gives a run by epochs its steps (ceil(epochs x videos / batch)); read back, the
  epoch_cosine schedule spanned the epochs those steps make (2.25 of a run's 2), so a resumed
  run's learning rates changed without a word (review: 0.0587 where the run had 0.05)."""
  config = load(name)
  config.optimizer.schedule = 'epoch_cosine'
  config.num_train_steps, config.num_epochs = -1, config.num_epochs if name != 'demo' else 2.0
  train_videos = 10 * config.batch_size + 1  # epochs of no whole number of steps
  total = _config_json_of_a_start(tmp_path, config, train_videos)
  read_back = from_workdir.get_config(str(tmp_path))
  assert read_back.num_train_steps == total  # the run's length stays in config.json
  assert _learning_rates(read_back, train_videos, total) == _learning_rates(config, train_videos,
                                                                            total)
  assert engine.runs_by_epochs(read_back, train_videos)
  assert not engine.runs_by_epochs(read_back, train_videos + config.batch_size)  # other records


def test_a_num_epochs_override_where_num_train_steps_sets_the_run_is_refused(tmp_path):
  """config.json gives a run by epochs its steps, so --config.num_epochs=4 on top of from_workdir
  was not read: the run warned, trained nothing and ended with status 0. An override nothing
  reads is refused in one line; with --config.num_train_steps=-1 beside it, it is read."""
  config = demo.get_config()
  config.num_train_steps, config.num_epochs = -1, 2.0
  _config_json_of_a_start(tmp_path, config, train_videos=8)
  read_back = from_workdir.get_config(str(tmp_path))
  assert cli.unread_override(read_back, ['main.py', '--config.num_epochs=4.0'], 'train') == (
      f'--config.num_epochs is not read: config.num_train_steps={read_back.num_train_steps} sets '
      "the run's length (configs/from_workdir.py gives a run by epochs its steps): add "
      '--config.num_train_steps=-1 to train by epochs, or leave it out.')
  assert not cli.unread_override(read_back, ['main.py', '--config.num_epochs=4.0',
                                             '--config.num_train_steps=-1'], 'train')
  assert not cli.unread_override(config, ['main.py', '--config.num_epochs=4.0'], 'train')


def test_the_mismatch_advice_names_a_workdir_with_a_space_as_one_shell_argument(tmp_path):
  """'(--config=configs/from_workdir.py:/x/run 1)' pasted into a shell was two arguments."""
  workdir = tmp_path / 'run 1'
  item_dir = workdir / 'checkpoints' / '40' / checkpoints.ITEM_DIR
  item_dir.mkdir(parents=True)
  (workdir / 'config.json').write_text('{}')
  message = str(checkpoints._mismatch_error(  # pylint: disable=protected-access
      'Checkpoint', ['params/x: stored (4,), model (8,)'], None, None, str(item_dir)))
  advice = re.search(r'trained with \((.*)\), or another checkpoint\.$', message).group(1)
  assert shlex.split(advice) == [f'--config=configs/from_workdir.py:{workdir}']


def test_a_run_by_epochs_resumed_with_its_workdir_s_config_trains_as_it_would_have(
    tiny_data_dir, tmp_path, caplog):
  """The README's continuation: a run by epochs stopped after step 3 of 4, resumed with
  --config=configs/from_workdir.py:DIR, trains step 4 to the weights the whole run reached,
  and says nothing differs (it warned of num_train_steps and of num_epochs not being read)."""
  config = tiny_config(tiny_data_dir)
  config.optimizer.schedule = 'epoch_cosine'
  config.batch_size, config.num_train_steps, config.num_epochs = 3, -1, 1.25  # 8 videos: 4 steps
  config.checkpoint_every_steps = 1
  whole = tmp_path / 'whole'
  train.train_and_evaluate(config, str(whole))
  stopped = tmp_path / 'stopped'
  shutil.copytree(whole, stopped)
  shutil.rmtree(stopped / 'checkpoints' / '4')
  caplog.clear()
  # The absl logger's own level: a test before this one in the process may have left it at
  # WARNING (absl's flag parsing does), which drops the INFO line asserted below.
  caplog.set_level('INFO', logger='absl')
  read_back = from_workdir.get_config(str(stopped))
  assert read_back.num_train_steps == 4
  train.train_and_evaluate(read_back, str(stopped))
  assert 'Resumed from checkpoint step 3' in caplog.text
  assert 'differs' not in caplog.text and 'is not read' not in caplog.text, caplog.text
  trainer = train.training_engine(config)
  expected = trainer.restore_variables(str(whole), 'latest')[0]
  resumed = trainer.restore_variables(str(stopped), 'latest')[0]
  assert jax.tree.structure(resumed) == jax.tree.structure(expected)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(resumed),
                                                  jax.tree.leaves(expected)))
