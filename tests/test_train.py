"""train_and_evaluate / evaluate end to end on tiny real records: checkpoints, resume, DP mesh."""

import glob
import json
import os
import re
import shutil
import signal

import jax
import numpy as np
import pytest

from data import errors as data_errors
from salinet_jax import checkpoints
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import reports
from salinet_jax import train
from salinet_jax import workdir as workdir_lib
from tests.conftest import mesh_worker
from tests.conftest import scalar_points, scalars_written


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _bytes(path):
  with open(path, 'rb') as f:
    return f.read()


def _restore(config, workdir, step):
  trainer = train.training_engine(config)
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  state = store.restore(step, trainer.abstract_state())
  store.close()
  return trainer, state


def test_train_then_evaluate_writes_checkpoints_metrics_and_json(config, tmp_path, caplog,
                                                               monkeypatch):
  workdir = str(tmp_path / 'run')
  # More precise-BN batches than the split holds: one pass, said (clips were counted twice).
  config.precise_bn_batches = 50
  caplog.set_level('INFO', logger='absl')
  real_precise_bn, precise = train._precise_bn_stats, []  # pylint: disable=protected-access

  def recorded_precise_bn(trainer, state, *args):
    precise.append((state.batch_stats, real_precise_bn(trainer, state, *args)))
    return precise[-1][1]

  monkeypatch.setattr(train, '_precise_bn_stats', recorded_precise_bn)
  handlers = [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)]
  results = train.train_and_evaluate(config, workdir)
  # A Ctrl-C or SIGTERM after training (during the evaluation below) is Python's again, not
  # swallowed by the run's watcher (mutation audit: leaving it installed went unnoticed).
  assert [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)] == handlers
  # The precise statistics are what step 2 saved (and evaluated): mutation audit, computing and
  # then dropping them went unnoticed.
  assert len(precise) == 1
  saved = _restore(config, workdir, 2)[1].batch_stats
  running, recomputed = _leaves(precise[0][0]), _leaves(precise[0][1])
  assert all(np.array_equal(a, b) for a, b in zip(_leaves(saved), recomputed))
  assert any(not np.allclose(a, b) for a, b in zip(running, recomputed))
  assert (f'Precise BN: config.precise_bn_batches=50, but the 8 train videos make 2 batch(es) '
          f'of {config.batch_size}: using 2.') in caplog.text
  assert results['step'] == 2 and results['num_videos'] == results['num_labeled'] == 7
  # Accuracies are counts of the 7 labelled videos.
  assert results['top1'] * 7 == pytest.approx(round(results['top1'] * 7))
  # At 16 px S_final is a single position, so its spatial spread is exactly zero.
  assert results['saliency_final_spatial_std'] == 0.0
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '2'))
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))
  for tag in ('val/top1', 'val/mean_class_accuracy', 'val/saliency_final_spatial_std'):
    assert list(scalars_written(workdir, tag)) == [2], tag
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  assert store.metadata(2)['classes'] == ['moving_right', 'moving_left', 'moving_down',
                                          'moving_up']
  # The score 'best' ranks the step by: the evaluation's top-1 (mutation audit: a step saved
  # without it, or with another accuracy as val_top1, went unnoticed).
  assert store.metadata(2)['metrics'] == {'val_top1': pytest.approx(results['top1'])}
  # How the evaluation was made, which 'best' compares across steps.
  assert store.metadata(2)['evaluation'] == {
      'split': 'val', 'num_videos': 7, 'num_labeled': 7, 'views_per_video': 2,
      'view_reduction': 'sum of logits'}
  store.close()

  config.eval.checkpoint = 'latest'
  evaluated = train.evaluate(config, workdir)
  with open(os.path.join(workdir, 'eval_val.json')) as f:
    written = json.load(f)
  for key in ('top1', 'num_videos', 'step'):
    assert written[key] == evaluated[key]
  assert 'top5' not in written  # 4 classes: every video is in its top 5
  assert written['num_videos'] == 7 and written['step'] == 2
  assert written['top1'] == pytest.approx(results['top1'])
  # The dtype it computed in (audit: a bfloat16 and a float32 eval wrote the same keys).
  assert written['dtype'] == 'float32'
  pictures = sorted(os.listdir(os.path.join(workdir, 'visualizations_val')))
  assert len(pictures) == 4 and all(p.endswith('.png') for p in pictures)  # S_final overlays
  # More pictures than an eval batch holds (4): they were cut to the first batch without a word.
  # Fewer than the evaluation before drew: its extra pictures, of another evaluation, were left
  # beside the new ones without a word.
  for asked, drawn in ((6, 6), (10, 7), (2, 2)):
    config.eval.num_visualizations = asked
    caplog.clear()
    train.evaluate(config, workdir)
    pictures = sorted(os.listdir(os.path.join(workdir, 'visualizations_val')))
    assert [p[:4] for p in pictures] == [f'{i:03d}_' for i in range(drawn)], pictures
    assert (f"Wrote {drawn} pictures to {os.path.join(workdir, 'visualizations_val')}"
            + (' (config.eval.num_visualizations=10, but the split holds 7 videos).'
               if drawn < asked else '.')) in caplog.text, caplog.text
  # An evaluation stopped as it writes its outputs leaves the earlier one's pictures and results
  # as they were: new pictures beside the earlier results said another step drew them.
  vis = os.path.join(workdir, 'visualizations_val')
  earlier = {name: _bytes(os.path.join(vis, name)) for name in os.listdir(vis)}
  earlier_json = _bytes(os.path.join(workdir, 'eval_val.json'))
  real_write_outputs = reports.write_outputs

  def stopped_while_writing(*args):
    real_write_outputs(*args)
    raise KeyboardInterrupt

  monkeypatch.setattr(reports, 'write_outputs', stopped_while_writing)
  config.eval.num_visualizations = 5
  with pytest.raises(KeyboardInterrupt):
    train.evaluate(config, workdir)
  assert {name: _bytes(os.path.join(vis, name)) for name in os.listdir(vis)} == earlier
  assert _bytes(os.path.join(workdir, 'eval_val.json')) == earlier_json
  assert not [name for name in os.listdir(workdir)  # no new copy left behind
              if name.startswith('.visualizations') or name.endswith(data_errors.PARTIAL_SUFFIX)]


def test_resume_continues_from_saved_step_without_initialising_again(config, tmp_path,
                                                                     monkeypatch):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)  # stops at num_train_steps = 2, checkpoint at 2
  trainer, saved = _restore(config, workdir, 2)
  assert int(saved.step) == 2
  fresh = trainer.fresh_state()
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(saved.opt_state),
                                                       _leaves(fresh.opt_state)))

  def no_init(self):
    raise AssertionError('a resumed run must not initialise (and compile) a fresh state')

  monkeypatch.setattr(engine.Engine, 'fresh_state', no_init)
  config.num_train_steps = 4
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  _, resumed = _restore(config, workdir, 4)
  assert int(resumed.step) == 4
  # The optax schedule counter went on from 2 to 4: the run resumed, it did not restart.
  counts = [int(x) for x in jax.tree.leaves(resumed.opt_state) if np.ndim(x) == 0]
  assert counts and all(c == 4 for c in counts)


def test_nonfinite_loss_stops_training_and_keeps_last_good_checkpoint(config, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  config.num_train_steps = 6
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1
  config.optimizer.base_learning_rate = 1e38
  config.optimizer.schedule = 'constant'
  with pytest.raises((train.NonFiniteLossError, checkpoints.NonFiniteStateError),
                     match='last good checkpoint is step 2'):
    train.train_and_evaluate(config, workdir)
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  assert store.steps() == [2]
  store.close()


def test_a_non_finite_loss_is_said_at_the_step_that_had_it(config, tmp_path):
  """Between log lines the loss of step s is read while step s + 1 runs: the stop names step s
  (mutation audit: naming the step running then passed every test, which saved every step)."""
  config.num_train_steps = 6
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 100
  config.precise_bn_batches = 0
  config.optimizer.base_learning_rate = 1e38  # step 1 trains from finite weights, step 2 not
  config.optimizer.schedule = 'constant'
  with pytest.raises(train.NonFiniteLossError,
                     match=r'^Loss is (nan|inf) at step 2: stopping. No intact checkpoint was '
                     r'saved'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))


def test_huge_learning_rate_never_leaves_a_non_finite_checkpoint(config, tmp_path):
  """lr 1e6, a checkpoint every step: whatever step goes bad, no saved state holds NaN/Inf,
  and the best checkpoint is one of them."""
  workdir = str(tmp_path / 'run')
  config.num_train_steps = 6
  config.log_every_steps = 100
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 1
  config.optimizer.base_learning_rate = 1e6
  config.optimizer.schedule = 'constant'
  with pytest.raises((train.NonFiniteLossError, checkpoints.NonFiniteStateError)):
    train.train_and_evaluate(config, workdir)
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  trainer = train.training_engine(config)
  for step in store.steps():
    state = store.restore(step, trainer.abstract_state())
    assert checkpoints.non_finite_parts(state) == [], step
  store.close()


def test_batch_that_does_not_divide_over_devices_fails_with_advice():
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.ConfigError,
                     match=r'config.batch_size=6 is not divisible by the 4 devices'):
    parallel.check_batch_size(6, 4, 'config.batch_size')
  parallel.check_batch_size(8, 4, 'config.batch_size')


def test_four_device_mesh_matches_one_device(tiny_data_dir, tmp_path, four_device_run):
  one = mesh_worker(tiny_data_dir, tmp_path / 'one.npz', 1)
  four = four_device_run
  np.testing.assert_allclose(one['losses'], four['losses'], atol=1e-5, rtol=1e-5)
  keys = [k for k in one.files if k not in ('losses', 'eval_files')]
  assert len(keys) > 20 and list(one['eval_files']) == list(four['eval_files'])
  for key in keys:
    np.testing.assert_allclose(one[key], four[key], atol=1e-5, rtol=1e-5, err_msg=key)


def test_evaluate_needs_only_the_split_it_reads(config, tmp_path):
  """A held-out set converted on its own (records holding only a 'test' split) evaluates."""
  from data import records  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  trained = train.train_and_evaluate(config, workdir)
  source, held_out = config.dataset.data_dir, tmp_path / 'held_out'
  held_out.mkdir()
  metadata = records.read_metadata(source)
  shards = []
  for shard in metadata.shards['val']:
    name = shard['file'].replace('-val.', '-test.')
    shutil.copy(os.path.join(source, shard['file']), held_out / name)
    shards.append(dict(shard, file=name))
  records.write_metadata(str(held_out), records.DatasetMetadata(
      metadata.name, metadata.classes, {'test': metadata.split_sizes['val']},
      {'test': len(shards)}, shards={'test': shards}))
  config.dataset.data_dir = str(held_out)
  results = train.evaluate(config, workdir, split='test')
  assert results['split'] == 'test' and results['num_videos'] == 7
  assert os.path.exists(os.path.join(workdir, 'eval_test.json'))
  assert results['top1'] == trained['top1']  # the same videos under another split name
  # The same classes in another order would score every label as another class (mutation audit:
  # comparing the class lists as sets went unnoticed).
  records.write_metadata(str(held_out), records.DatasetMetadata(
      metadata.name, metadata.classes[::-1], {'test': metadata.split_sizes['val']},
      {'test': len(shards)}, shards={'test': shards}))
  with pytest.raises(records.MissingRecordsError,
                     match=r"^The checkpoint was trained on 4 classes \(moving_right, .*\) but "
                     r"split 'test' in \S+ has 4 \(moving_up, "):
    train.evaluate(config, workdir, split='test')


def test_training_on_records_without_the_eval_split_fails_before_the_first_step(config,
                                                                                 tmp_path):
  """Records converted without a val split (e.g. a folder tree without --split_by_group): the
  missing eval split is named at once, not after the train steps have run."""
  from data import records  # pylint: disable=g-import-not-at-top
  source, train_only = config.dataset.data_dir, tmp_path / 'train_only'
  train_only.mkdir()
  metadata = records.read_metadata(source)
  for shard in metadata.shards['train']:
    shutil.copy(os.path.join(source, shard['file']), train_only / shard['file'])
  records.write_metadata(str(train_only), records.DatasetMetadata(
      metadata.name, metadata.classes, {'train': metadata.split_sizes['train']},
      {'train': metadata.num_shards['train']}, shards={'train': metadata.shards['train']}))
  config.dataset.data_dir = str(train_only)
  workdir = tmp_path / 'run'
  with pytest.raises(records.MissingRecordsError, match=r"^Split 'val' is not in the records"):
    train.train_and_evaluate(config, str(workdir))
  assert not (workdir / 'checkpoints').exists() or not os.listdir(workdir / 'checkpoints')


@pytest.mark.parametrize('field, value, message', [
    ('optimizer.base_learning_rate', -1.0, 'base_learning_rate must be at least 0.0'),
    ('dtype', 'float16', 'needs loss scaling'),
    ('data.eval_crop_size', 20, 'is larger than config.data.eval_short_side'),
    ('grad_accumulation_steps', 3, 'micro-batches'),
    ('bn_group_size', 3, 'must divide the 4 clips'),
])
def test_a_config_error_leaves_a_new_workdir_unmade(config, tmp_path, field, value, message):
  """A mistyped value fails before the workdir is touched: it left a workdir holding a lock
  guard, an empty checkpoints folder and a log of the one error (after generating the demo's
  videos), which the corrected command then resumed into."""
  node = config
  *parents, leaf = field.split('.')
  for part in parents:
    node = node[part]
  node[leaf] = value
  workdir = tmp_path / 'run'
  with pytest.raises((errors.ConfigError, data_errors.SettingError), match=re.escape(message)):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists(), sorted(p.name for p in workdir.iterdir())


def test_float64_runs_through_the_normal_path_only_with_64_bit_jax(config):
  from salinet_jax import models  # pylint: disable=g-import-not-at-top
  config.dtype = 'float64'
  with pytest.raises(errors.ConfigError, match='JAX_ENABLE_X64=1'):
    train.training_engine(config)
  with jax.enable_x64(True):
    trainer = train.training_engine(config)
    variables = models.init_variables(trainer.model, jax.random.key(0), trainer.input_shape)
    logits = trainer.model.apply(variables, np.zeros(trainer.input_shape), train=False)
    assert logits.dtype == np.float64


def test_a_warm_up_as_long_as_the_run_or_one_not_read_is_warned_about(config, caplog):
  """warmup_steps=20 in a run of 2 steps trained at a fraction of the peak LR (a one-step run
  at LR 0) without a word. Beside warmup_epochs, warmup_steps was not read, also without a word
  (engine audit; only base.py's comment said so), nor by epoch_cosine (review)."""
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 1
  caplog.set_level('WARNING')
  train.training_engine(config)
  assert 'warm-up' not in caplog.text and 'warmup_' not in caplog.text
  config.optimizer.warmup_steps = 20
  train.training_engine(config)
  assert ('The warm-up (20 steps) is not shorter than this run of 2: its learning rate never '
          'reaches the peak 0.1 (the last step trains at 0.005); shorten ') in caplog.text
  config.optimizer.warmup_steps = 1
  config.optimizer.warmup_epochs = 0.25
  train.training_engine(config)
  assert ('config.optimizer.warmup_epochs=0.25 sets the warm-up (1 step(s) here): '
          'config.optimizer.warmup_steps=1 is not read (set warmup_epochs=0 to warm up by '
          'steps).') in caplog.text, caplog.text
  config.optimizer.schedule = 'epoch_cosine'
  train.training_engine(config)
  assert ("config.optimizer.warmup_steps=1 is not read by schedule='epoch_cosine', whose "
          'warm-up counts epochs (config.optimizer.warmup_epochs=0.25).') in caplog.text


def test_the_profiler_traces_the_steps_asked_for_or_says_why_none(config, tmp_path, caplog):
  """profile_num_steps traced from step profile_first_step (10 by default, which the README did
  not say): a shorter run, or a resume past it, wrote no trace without a word (engine audit)."""
  config.profile_num_steps = 1
  caplog.set_level('WARNING')
  train.train_and_evaluate(config, str(tmp_path / 'short'))
  assert ('config.profile_num_steps=1 traces the 1 step(s) after step 10 '
          '(config.profile_first_step), outside this run (steps 1 to 2): no trace is written; set '
          '--config.profile_first_step to a step from 1 to 1.') in caplog.text, caplog.text
  assert not (tmp_path / 'short' / 'plugins').exists()
  config.profile_first_step = 1
  train.train_and_evaluate(config, str(tmp_path / 'traced'))
  assert glob.glob(str(tmp_path / 'traced' / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  caplog.clear()  # a resume past the steps it traced has nothing to say (review)
  config.num_train_steps = 4
  train.train_and_evaluate(config, str(tmp_path / 'traced'))
  assert 'no trace is written' not in caplog.text, caplog.text


def test_the_logged_loss_and_top1_are_means_over_the_log_window(tiny_data_dir, tmp_path):
  """With log_every_steps=2 the line of step 2 showed step 2's batch alone under 'loss' and
  'train top-1' (and TensorBoard the same), as if it described the window; PySlowFast and Scenic
  log the window's median or mean. The learning rate stays the last step's."""
  import re  # pylint: disable=g-import-not-at-top
  from tests.test_main import _main, _tiny_overrides  # pylint: disable=g-import-not-at-top

  def logged(every: int, name: str):
    proc = _main('--config=configs/demo.py', f'--workdir={tmp_path / name}',
                 *_tiny_overrides(tiny_data_dir), '--config.num_train_steps=4',
                 '--config.eval_every_steps=4', f'--config.log_every_steps={every}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {int(m[1]): (float(m[2]), float(m[3]), float(m[4])) for m in re.finditer(
        r'step (\d)/4  loss ([\d.]+)  lr (\S+)  train top-1 ([\d.]+)', proc.stderr)}

  each, window = logged(1, 'every_step'), logged(2, 'every_2')
  assert sorted(each) == [1, 2, 3, 4] and sorted(window) == [2, 4]
  for step in (2, 4):
    assert window[step][0] == pytest.approx((each[step - 1][0] + each[step][0]) / 2, abs=1e-4)
    assert window[step][2] == pytest.approx((each[step - 1][2] + each[step][2]) / 2, abs=1e-3)
    assert window[step][1] == each[step][1]
  assert abs(window[2][0] - each[2][0]) > 1e-3  # the two steps' losses differ: not trivial


def test_a_resume_says_when_its_batches_or_random_draws_leave_the_uninterrupted_run(
    config, tmp_path, caplog, monkeypatch):
  """'files' sharding reshuffles the train stream at the resumed step, 'auto' turns from
  'global_order' to 'files' when a run resumes on several processes, and other library versions
  or RNG settings draw other dropout: each changed a resumed run's batches or draws silently."""
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)  # 2 steps; each rerun below resumes with nothing to do
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  environment = store.metadata(2)['environment']
  store.close()
  assert (environment['train_sharding'], environment['processes']) == ('global_order', 1)
  assert environment['versions']['jax'] == jax.__version__
  caplog.set_level('WARNING', logger='absl')
  train.train_and_evaluate(config, workdir)
  assert 'Resuming at step' not in caplog.text

  real = train._run_environment  # pylint: disable=protected-access
  monkeypatch.setattr(train, '_run_environment', lambda c: dict(
      real(c), versions=dict(real(c)['versions'], jax='0.0.1'),
      jax_threefry_partitionable=not real(c)['jax_threefry_partitionable']))
  config.data.train_sharding = 'files'
  train.train_and_evaluate(config, workdir)
  assert ("Resuming at step 2: the run so far read its train stream in 'global_order' on 1 "
          "process(es); config.data.train_sharding reads 'files' on 1 process(es), so the "
          'batches from here on are not those an uninterrupted run would have seen (set '
          "config.data.train_sharding='global_order' to keep them).") in caplog.text
  assert (f'Resuming at step 2 with other libraries or random-number settings than it was '
          f'trained with (jax {jax.__version__} -> 0.0.1, jax_threefry_partitionable '
          f'{environment["jax_threefry_partitionable"]} -> '
          f'{not environment["jax_threefry_partitionable"]}): its random draws (dropout, '
          "augmentation) may differ from an uninterrupted run's.") in caplog.text

  caplog.clear()
  train._say_how_the_environment_changed(  # pylint: disable=protected-access
      dict(environment, train_sharding='files'), dict(environment, train_sharding='files'), 7)
  assert ("Resuming at step 7: config.data.train_sharding reads 'files' on 1 process(es), which "
          'reshuffles the train stream at the resumed step') in caplog.text


def test_a_stop_between_log_lines_logs_the_steps_since_the_last_one(config, tmp_path,
                                                                    monkeypatch, caplog):
  """A stop at step 2 of windows of 3 steps: the loss and top-1 of steps 1-2 were logged
  nowhere, neither on the console nor in TensorBoard. The resumed run logs, evaluates and saves
  at the run's steps 3 and 4, not at steps counted from the resume (mutation audit: counting
  them from there went unnoticed)."""
  config.num_train_steps = 4
  config.log_every_steps = 3
  config.eval_every_steps = config.checkpoint_every_steps = 3
  workdir = str(tmp_path / 'run')
  monkeypatch.setattr(train.PreemptionWatcher, 'should_stop', lambda self, step: step == 2)
  caplog.set_level('INFO', logger='absl')
  assert train.train_and_evaluate(config, workdir)['preempted_at_step'] == 2
  assert sorted(scalars_written(workdir, 'loss')) == [2]
  assert re.search(r'step 2/4  loss [\d.]+', caplog.text), caplog.text
  monkeypatch.undo()
  train.train_and_evaluate(config, workdir)
  assert sorted(scalars_written(workdir, 'loss')) == [2, 3, 4]
  assert sorted(scalars_written(workdir, 'val/top1')) == [3, 4]
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  assert store.steps() == [2, 3, 4]
  store.close()


def test_a_window_cut_short_by_a_stop_is_timed_by_its_own_steps(monkeypatch):
  """The line logged at a stop between log lines repeated the window before's clips/s and ETA
  (clu's ReportProgress measures whole windows only), as if measured anew (audit). Time paused
  for an evaluation is no training time, and the data wait is the window's own."""
  now = [0.0]
  monkeypatch.setattr(train.time, 'monotonic', lambda: now[0])

  class Writer:
    def write_scalars(self, step, scalars):
      pass

  progress = train._Progress(total_steps=20, every_steps=5, batch_size=4, writer=Writer())
  for step, t in zip(range(1, 6), (10.0, 11.0, 12.0, 13.0, 14.0)):  # 1 step/s after compiling
    now[0] = t
    progress.waited_for_data(0.5)
    progress.step_done(step)
  assert progress.window(5)['clips_per_sec'] == pytest.approx(4.0)
  for step, t in ((6, 16.0), (7, 28.0)):  # 0.5 steps/s, stopped at step 7
    now[0] = t
    progress.step_done(step)
    if step == 6:  # an evaluation of 10 s (mutation audit: counting it as training went unnoticed)
      progress.pause(10.0)
      progress.waited_for_data(1.0)
  cut = progress.window(7)
  assert cut['clips_per_sec'] == pytest.approx(2.0)
  # The data wait of this window alone, over its 4 s of training (mutation audit: adding in the
  # waits of the windows before went unnoticed).
  assert cut['data_wait_fraction'] == pytest.approx(0.25)
  assert cut['eta_minutes'] == pytest.approx(13 / 0.5 / 60)
  first = train._Progress(total_steps=20, every_steps=5, batch_size=4, writer=Writer())
  now[0] = 30.0
  first.step_done(1)
  assert 'clips_per_sec' not in first.window(1)  # its time is mostly compiling: not a rate


@pytest.mark.parametrize('finishing', [False, True])
def test_a_second_ctrl_c_interrupts_at_once(finishing, monkeypatch):
  """The first Ctrl-C asks for a save at the end of the step; the second interrupts at once, as
  the warning says (mutation audit: a watcher that kept the signal, swallowing every Ctrl-C,
  went unnoticed). In the run's last step the warning says the run finishes it instead (it
  said it would save and exit, then evaluated on)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  lines = []
  monkeypatch.setattr(logging, 'warning', lambda message, *args: lines.append(message % args))
  before = signal.getsignal(signal.SIGINT)
  signal.signal(signal.SIGINT, signal.default_int_handler)
  watcher = train.PreemptionWatcher()
  watcher.finishing = finishing
  try:
    signal.raise_signal(signal.SIGINT)
    assert watcher.should_stop(1) and watcher.received == 'SIGINT'
    assert lines == ['Ctrl-C received' + (
        " during the run's last step: finishing it and its evaluation (a rerun would evaluate "
        'nothing), then the run ends' if finishing else
        ': saving a checkpoint at the end of this step and exiting') + ' (Ctrl-C again stops at '
        'once, without saving).'], lines
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  finally:
    watcher.close()
    signal.signal(signal.SIGINT, before)


def test_tensorboard_points_of_steps_no_checkpoint_kept_are_set_aside_at_a_resume(
    config, tmp_path, caplog):
  """After a crash (SIGKILL, out of memory) the steps past the last checkpoint are trained
  again, and TensorBoard showed both their points: the plots zig-zagged back over steps whose
  weights were lost, without a word (audit)."""
  config.num_train_steps = 4
  config.log_every_steps = 1
  config.eval_every_steps = config.checkpoint_every_steps = 2
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  first = scalars_written(workdir, 'loss')
  assert sorted(first) == [1, 2, 3, 4]
  shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(workdir), '4'))  # lost in the crash
  events = [name for name in os.listdir(workdir) if name.startswith('events.out.tfevents.')]
  with open(os.path.join(workdir, events[0]), 'rb+') as f:
    head = f.read(20)
    f.seek(0, os.SEEK_END)
    f.write(head)  # a record the kill cut short: its length and checksum, part of its data
  config.optimizer.base_learning_rate /= 2  # the resumed steps log other values
  train.train_and_evaluate(config, workdir)
  aside = os.path.join(workdir, 'discarded', 'after_step_2')
  assert ('TensorBoard: the points of steps 3-4 in the event files were logged by weights no '
          f'checkpoint kept; moved to {aside} (a run of its own in TensorBoard).') in caplog.text
  resumed = scalars_written(workdir, 'loss')
  assert sorted(resumed) == [1, 2, 3, 4]
  assert resumed[4] != first[4] and resumed[2] == first[2]
  assert scalars_written(aside, 'loss') == {3: first[3], 4: first[4]}
  assert sorted(scalars_written(aside, 'val/top1')) == [4]
  caplog.clear()
  train.train_and_evaluate(config, workdir)  # nothing to train, nothing to set aside
  assert 'TensorBoard: the points' not in caplog.text
  # The model's size is a point of the run, not of each start: a resume wrote it again at step 0.
  assert [step for step, _ in scalar_points(workdir, 'model/params_millions')] == [0]
  # A resume with nothing to train left config.json saying settings no step trained with
  # (train/eval audit: num_train_steps 3 and the new learning rate beside step 4's weights).
  with open(os.path.join(workdir, 'config.json')) as f:
    kept = f.read()
  config.num_train_steps, config.optimizer.base_learning_rate = 3, 0.5
  caplog.set_level('INFO', logger='absl')
  caplog.clear()
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == kept
  assert (f'Checkpoint step 4 >= num_train_steps 3: nothing to train; '
          f'{os.path.join(workdir, "config.json")} keeps the config its steps trained with.'
          ) in caplog.text
  # A relaunch lengthening the run to 8 steps, killed before its first save, leaves config.json
  # at 8 (so eval says the run stopped at step 4 of 8); a relaunch at the run's own length finds
  # nothing to train, and config.json says its steps' length again (review: the run read as
  # unfinished for ever, and rerunning its command did nothing).
  lengthened = config.copy_and_resolve_references()
  lengthened.num_train_steps = 8
  workdir_lib.write_config(workdir, lengthened)
  step_dir = os.path.join(checkpoints.checkpoint_dir(workdir), '4')
  assert checkpoints.unfinished_run(step_dir) == (4, 8)
  config.num_train_steps = 4
  train.train_and_evaluate(config, workdir)
  assert checkpoints.unfinished_run(step_dir) is None
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['num_train_steps'] == 4


def test_a_run_started_from_an_unfinished_one_says_so_at_every_resume(config, tmp_path, caplog,
                                                                      monkeypatch):
  """A stage started from a run stopped at step 2 of 4 was warned about once; its resumes kept
  those weights without a word, even after the source run had been finished. The checkpoints a
  resumed run saves keep saying so (mutation audit: steps saved after a resume lost it)."""
  source = str(tmp_path / 'source')
  config.num_train_steps = 4
  with monkeypatch.context() as patch:
    patch.setattr(train.PreemptionWatcher, 'should_stop', lambda self, step: step == 2)
    train.train_and_evaluate(config, source)
  config.num_train_steps = 2
  config.init_from.checkpoint, config.init_from.which = source, 'latest'
  workdir = str(tmp_path / 'next_stage')
  train.train_and_evaluate(config, workdir)
  config.num_train_steps = 3
  train.train_and_evaluate(config, workdir)  # resumes, trains and saves step 3
  caplog.set_level('WARNING', logger='absl')
  caplog.clear()
  train.train_and_evaluate(config, workdir)  # resumes at its end (step 3): nothing to train
  assert (f'This run started from init_from {source} (its latest checkpoint, step 2) when its run '
          'had reached step 2 of 4: resuming keeps that start. To start from the finished run, '
          'train this one again in a new --workdir.') in caplog.text, caplog.text


def test_a_run_length_in_epochs_beside_one_in_steps_is_said_to_be_unread(config, caplog):
  """--config.num_epochs=5 on a config of num_train_steps trained the steps without a word."""
  config.num_epochs = 5.0
  caplog.set_level('WARNING', logger='absl')
  train.training_engine(config)
  assert ("config.num_train_steps=2 sets the run's length: config.num_epochs=5 is not read (set "
          'num_train_steps=-1 to train by epochs).') in caplog.text


def test_a_run_by_epochs_writes_its_step_count_to_config_json(config, tmp_path):
  """config.json, the run's resolved config, kept num_train_steps=-1 for a run by epochs: how
  long it trained was not in it (README audit)."""
  config.num_train_steps, config.num_epochs = -1, 1.0  # 8 train videos, batches of 4
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  written = json.loads((workdir / 'config.json').read_text())
  assert written['num_train_steps'] == 2 and written['num_epochs'] == 1.0


def test_a_run_stopped_in_its_last_step_ends_with_its_final_evaluation(config, tmp_path,
                                                                        monkeypatch):
  """The last step is evaluated and saved whatever eval_every_steps divides, and a SIGTERM that
  arrives during it leaves a finished run, not a preempted one (mutation audit: both passed
  every test)."""
  config.num_train_steps = 3
  config.eval_every_steps = config.checkpoint_every_steps = 2
  monkeypatch.setattr(train.PreemptionWatcher, 'should_stop', lambda self, step: step == 3)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'preempted_at_step' not in results and results['step'] == 3 and 'top1' in results


def test_the_eta_is_rounded_to_the_second():
  """Mutation audit: an ETA cut to the second below passed every test."""
  format_minutes = train._format_minutes  # pylint: disable=protected-access
  assert [format_minutes(s / 60) for s in (59.6, 90.4, 3599.6, 5400.0)] == [
      '1m00s', '1m30s', '1h00m', '1h30m']


def test_steps_a_kill_left_undeleted_after_the_last_save_are_removed_by_the_rerun(
    config, tmp_path, monkeypatch):
  """A SIGKILL in the few milliseconds between orbax committing the run's last step and deleting
  the steps its policy no longer keeps (chaos audit: kill 0-5 ms after checkpoints/40 appeared)
  leaves those steps on disk, one of them half deleted; the rerun finds nothing to train and
  saved nothing, so nothing ever removed them: the workdir kept more than the last K plus
  'best', for good, and every later command warned of the half-deleted step's missing metadata.
  The kill is stood in for here by skipping that one deletion, the state it leaves on disk."""
  from orbax.checkpoint._src.path import deleter  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  config.checkpoint_every_steps = 1
  config.checkpoint.keep_last = 1
  last_step_dir = os.path.join(workdir, 'checkpoints', str(config.num_train_steps))
  delete = deleter.StandardCheckpointDeleter.delete

  def killed_before_deleting_after_the_last_commit(self, step):
    if not os.path.isdir(last_step_dir):
      delete(self, step)

  monkeypatch.setattr(deleter.StandardCheckpointDeleter, 'delete',
                      killed_before_deleting_after_the_last_commit)
  train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  assert store.steps() == [1, 2]  # the state the kill leaves: step 1 not yet deleted
  store.close()
  train.train_and_evaluate(config, workdir)  # the rerun: nothing to train
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  steps = store.steps()
  store.close()
  # keep_last 1 plus 'best' (step 2, the only evaluated one): step 1 is not kept.
  assert steps == [2], sorted(os.listdir(os.path.join(workdir, 'checkpoints')))


def test_tensorboard_points_of_a_run_killed_before_its_first_save_are_set_aside_at_the_rerun(
    config, tmp_path):
  """A run killed before its first checkpoint was committed (chaos audit: SIGKILL 0.0 s after
  'step 3/40', the first save at step 5) is rerun from scratch, and nothing set its points aside:
  TensorBoard showed steps 1-2 twice (two event files, two HParams sessions), which a resume from
  a checkpoint moves to discarded/. The kill is stood in for by removing the run's only
  checkpoint, as the resume test above removes its last one. The killed run's hyperparameters
  (logged at step 0) go with its points (review: they stayed beside the new run's)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def hparams_sessions(folder):
    return sum(value.tag == '_hparams_/session_start_info'
               for name in os.listdir(folder) if name.startswith('events.out.tfevents.')
               for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name))
               for value in event.summary.value)

  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  assert sorted(scalars_written(workdir, 'loss')) == [1, 2]
  shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(workdir), '2'))  # never committed
  config.optimizer.base_learning_rate /= 2  # the rerun logs other values
  train.train_and_evaluate(config, workdir)
  assert [step for step, _ in scalar_points(workdir, 'loss')] == [1, 2]
  aside = os.path.join(workdir, 'discarded', 'after_step_0')
  assert [step for step, _ in scalar_points(aside, 'loss')] == [1, 2]
  assert hparams_sessions(workdir) == hparams_sessions(aside) == 1
