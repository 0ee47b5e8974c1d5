"""load_pretrained: fine-tuning with the head excluded, strictness, reports, checkpoint kinds."""

import os
import re
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import k400_i3d_nl
from configs import ucf101_salinet
from salinet_jax import checkpoints
from salinet_jax import errors
from salinet_jax import parallel
from salinet_jax import pretrained
from salinet_jax.convert import layout
from salinet_jax.models import build_model

TINY = dict(width=4, stage_blocks=(1, 1, 2, 1), nonlocal_blocks=((), (0,), (1,), ()))
CLIP = (1, 8, 32, 32, 3)


def tiny_model(config, num_classes):
  model_config = config.model
  model_config.update(TINY)
  return build_model(model_config, num_classes)


def init(model, seed):
  variables = model.init(jax.random.key(seed), jnp.zeros(CLIP), train=False)
  return variables['params'], variables['batch_stats']


def save(tmp_path, name, params, batch_stats):
  return pretrained.save_converted(str(tmp_path / name),
                                   {'params': params, 'batch_stats': batch_stats},
                                   {'source': 'test'})


def flat(tree):
  return {layout.path_str(k): np.asarray(v) for k, v in layout.flatten(tree).items()}


@pytest.fixture(scope='module')
def k400_salinet(tmp_path_factory):
  """A tiny 'K400' SaliNet (7 classes) with random weights, saved as a converted checkpoint."""
  config = ucf101_salinet.get_config('1')
  model = tiny_model(config, 7)
  params, batch_stats = init(model, seed=1)
  batch_stats = jax.tree.map(lambda x: x + 0.25, batch_stats)  # not the init values
  path = save(tmp_path_factory.mktemp('k400'), 'salinet', params, batch_stats)
  return path, params, batch_stats


def test_fine_tune_on_ucf101_with_the_head_excluded(k400_salinet):
  path, k400_params, k400_stats = k400_salinet
  config = ucf101_salinet.get_config('1')
  model = tiny_model(config, 3)
  fresh_params, fresh_stats = init(model, seed=2)
  exclude = config.init_from.exclude or '^head/'
  params, batch_stats, report = pretrained.load_pretrained(
      fresh_params, fresh_stats, {'checkpoint': path, 'exclude': exclude, 'strict': True})
  assert report.ok
  assert report.excluded == ['params:head/fc/bias', 'params:head/fc/kernel']
  assert len(report.loaded) == len(flat(fresh_params)) + len(flat(fresh_stats)) - 2
  got, want, fresh = flat(params), flat(k400_params), flat(fresh_params)
  for key, value in got.items():
    np.testing.assert_array_equal(value, fresh[key] if key.startswith('head/') else want[key],
                                  err_msg=key)
  np.testing.assert_array_equal(flat(batch_stats)['ssf/shared_bn/mean'],
                                flat(k400_stats)['ssf/shared_bn/mean'])
  assert got['head/fc/kernel'].shape == (TINY['width'] * 32, 3)
  logits = jax.jit(model.apply)({'params': params, 'batch_stats': batch_stats}, jnp.ones(CLIP))
  assert logits.shape == (1, 3) and np.all(np.isfinite(logits))


def test_an_exclude_pattern_that_matches_nothing_is_refused(k400_salinet, tmp_path):
  """A misspelt init_from.exclude ('^heads/') loaded the classifier it meant to keep fresh, with
  only 'kept fresh 0 excluded' in an info line (the optimizer's rules fail on such a pattern)."""
  path, k400_params, k400_stats = k400_salinet
  with pytest.raises(errors.ConfigError,
                     match=r"^config.init_from.exclude='\^heads/' matches no parameter of the "
                           r"model or the checkpoint, so it would keep nothing fresh; names look "
                           r"like "
                           r"'head/fc/bias', 'head/fc/kernel'"):
    pretrained.load_pretrained(k400_params, k400_stats,
                               {'checkpoint': path, 'exclude': '^heads/', 'strict': True})
  # A pattern that leaves out checkpoint tensors the model lacks (as the strict error advises)
  # matches something.
  extra = save(tmp_path, 'extra', {**k400_params, 'aux': {'kernel': np.zeros(3, np.float32)}},
               k400_stats)
  report = pretrained.load_pretrained(
      k400_params, k400_stats, {'checkpoint': extra, 'exclude': '^aux/', 'strict': True})[2]
  assert report.ok and report.excluded_unexpected == ['params:aux/kernel']


def test_a_mis_shaped_head_is_an_error_unless_excluded(k400_salinet):
  path = k400_salinet[0]
  model = tiny_model(ucf101_salinet.get_config('1'), 3)
  fresh_params, fresh_stats = init(model, seed=2)
  for strict in (True, False):
    # The hint names the mis-shaped modules (S2DNet's classifier is dnet/fc, not head/) and
    # not strict=False, which does not accept mis-shaped tensors.
    with pytest.raises(pretrained.PretrainedMismatchError, match=r"(?s)mis-shaped.*head/fc/kernel"
                       r".*checkpoint \(128, 7\), model \(128, 3\).*\nmis-shaped tensors must be "
                       r"excluded with init_from.exclude \(here '\^\(head/fc\)\(/\|\$\)'\), or the model "
                       r'config must match the checkpoint\.$'):
      pretrained.load_pretrained(fresh_params, fresh_stats,
                                 {'checkpoint': path, 'exclude': '', 'strict': strict})


def test_a_width_mismatch_names_the_model_fields_the_checkpoint_was_made_for(tmp_path):
  """A converted checkpoint records the model config it was converted for, a training checkpoint
  its run's config: a model of another width gets every tensor mis-shaped, and the error says
  which config field is why."""
  config = k400_i3d_nl.get_config()
  config.checkpoint.async_save = False
  model = tiny_model(config, 7)
  params, batch_stats = init(model, seed=3)
  converted = pretrained.save_converted(str(tmp_path / 'i3d'),
                                        {'params': params, 'batch_stats': batch_stats},
                                        {'source': 'test', 'model': config.model.to_dict()})
  store = checkpoints.CheckpointStore(str(tmp_path / 'run'), config.checkpoint)
  store.save(1, {'step': jnp.asarray(1), 'params': params, 'batch_stats': batch_stats},
             config=config)
  store.close()
  wider = k400_i3d_nl.get_config()
  wider.model.update(dict(TINY, width=8))
  fresh_params, fresh_stats = init(build_model(wider.model, 7), seed=4)
  for path in (converted, str(tmp_path / 'run')):
    with pytest.raises(pretrained.PretrainedMismatchError,
                       match=r'(?s)mis-shaped.*another model config than the given one:\n'
                             r'  model.width: stored 4, given 8$'):
      pretrained.load_pretrained(fresh_params, fresh_stats,
                                 {'checkpoint': path, 'which': 'latest'}, wider.model)


def test_weights_converted_for_another_model_of_the_same_shapes_are_said(tmp_path):
  """NL-I3D converted with pool1_temporal=1 (Slow R50's max-pool) loaded into the default
  pool1_temporal=2 without a word: every tensor fits, the model computes otherwise (0.0197 off
  on logits of scale 2.1 in the audit's forward against PyTorch)."""
  config = k400_i3d_nl.get_config()
  config.model.update(TINY)
  params, batch_stats = init(build_model(config.model, 7), seed=3)
  converted_for = dict(config.model.to_dict(), pool1_temporal=1)
  converted = pretrained.save_converted(str(tmp_path / 'slow'),
                                        {'params': params, 'batch_stats': batch_stats},
                                        {'source': 'test', 'model': converted_for})
  _, _, report = pretrained.load_pretrained(params, batch_stats, {'checkpoint': converted},
                                            config.model)
  assert report.converted_for['pool1_temporal'] == 1  # read back from conversion.json
  assert pretrained.converted_model_differences(report.converted_for, config.model) == [
      'model.pool1_temporal: converted with 1, given 2']
  config.model.pool1_temporal = 1
  assert pretrained.converted_model_differences(report.converted_for, config.model) == []


def test_strict_fails_on_missing_modules_and_non_strict_keeps_them_fresh(tmp_path):
  """A plain NL-I3D checkpoint into SaliNet: the SSF/TSFP/fusion modules are missing."""
  i3d = tiny_model(k400_i3d_nl.get_config(), 7)
  path = save(tmp_path, 'i3d', *init(i3d, seed=3))
  model = tiny_model(ucf101_salinet.get_config('1'), 7)
  fresh_params, fresh_stats = init(model, seed=4)
  with pytest.raises(pretrained.PretrainedMismatchError, match='missing'):
    pretrained.load_pretrained(fresh_params, fresh_stats, {'checkpoint': path, 'strict': True})
  _, _, report = pretrained.load_pretrained(fresh_params, fresh_stats,
                                            {'checkpoint': path, 'strict': False})
  assert report.missing and all(m.split(':')[1].split('/')[0] in ('ssf', 'tsfp', 'fusion')
                                for m in report.missing)
  # The K400 SaliNet recipe: backbone and head from NL-I3D, side modules fresh, strictly.
  params, _, report = pretrained.load_pretrained(
      fresh_params, fresh_stats,
      {'checkpoint': path, 'exclude': '^(ssf|tsfp|fusion)/', 'strict': True})
  assert report.ok and report.excluded
  np.testing.assert_array_equal(params['tsfp']['tsfp1']['gate1']['kernel'],
                                fresh_params['tsfp']['tsfp1']['gate1']['kernel'])


def test_unexpected_tensors_are_reported(k400_salinet):
  path = k400_salinet[0]
  model = tiny_model(k400_i3d_nl.get_config(), 7)
  fresh_params, fresh_stats = init(model, seed=5)
  with pytest.raises(pretrained.PretrainedMismatchError, match='unexpected'):
    pretrained.load_pretrained(fresh_params, fresh_stats, {'checkpoint': path})
  params, _, report = pretrained.load_pretrained(fresh_params, fresh_stats,
                                                 {'checkpoint': path, 'strict': False})
  assert report.unexpected and not report.missing
  assert 'params:ssf/ssf1/to_map/kernel' in report.unexpected
  np.testing.assert_array_equal(params['head']['fc']['kernel'],
                                k400_salinet[1]['head']['fc']['kernel'])


def _training_checkpoint(workdir, classes=None):
  """A tiny 4-class NL-I3D trained-run checkpoint (step 3) in `workdir`: (model, params)."""
  model = tiny_model(k400_i3d_nl.get_config(), 4)
  params, batch_stats = init(model, seed=6)
  config = k400_i3d_nl.get_config()
  config.checkpoint.async_save = False
  store = checkpoints.CheckpointStore(str(workdir), config.checkpoint)
  state = {'step': jnp.asarray(3), 'params': params, 'batch_stats': batch_stats,
           'opt_state': {'momentum': jax.tree.map(jnp.zeros_like, params)}}
  store.save(3, state, metrics={'val_top1': 0.5}, classes=classes)
  store.close()
  return model, params


def test_training_checkpoints_load_from_the_workdir_and_step_dir(tmp_path):
  model, params = _training_checkpoint(tmp_path)
  fresh_params, fresh_stats = init(model, seed=7)
  summaries = []
  for source in (str(tmp_path), str(tmp_path / 'checkpoints' / '3')):
    got, got_stats, report = pretrained.load_pretrained(
        fresh_params, fresh_stats, {'checkpoint': source, 'exclude': '', 'strict': True,
                                    'which': 'latest'})
    assert report.ok
    np.testing.assert_array_equal(got['head']['fc']['kernel'], params['head']['fc']['kernel'])
    summaries.append(report.summary())
  # The log line says which step a workdir gave; a step directory names itself.
  assert summaries[0].startswith(f'init_from {tmp_path} (its latest checkpoint, step 3): loaded')
  assert summaries[1].startswith(f'init_from {tmp_path}/checkpoints/3: loaded')


def test_a_step_its_run_removes_while_init_from_reads_it_is_said_and_chosen_again(
    tmp_path, caplog, monkeypatch):
  """A workdir still training as init_from: a step its run removed (keep_last) while the load,
  or the fit check before the compile, read it ended in orbax's traceback. It is said, and the
  workdir's step chosen again; a step directory given is not swapped."""
  model = tiny_model(k400_i3d_nl.get_config(), 4)
  config = k400_i3d_nl.get_config()
  config.checkpoint.async_save = False
  folder = tmp_path / 'checkpoints'
  kernels = {}

  def save(step, seed):
    params, batch_stats = init(model, seed)
    store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
    store.save(step, {'step': jnp.asarray(step), 'params': params, 'batch_stats': batch_stats,
                      'opt_state': {'momentum': jax.tree.map(jnp.zeros_like, params)}},
               metrics={'val_top1': 0.5})
    store.close()
    kernels[step] = np.asarray(params['head']['fc']['kernel'])

  def removed_once_as_it_is_read(module, name):
    real = getattr(module, name)

    def read(item):
      monkeypatch.setattr(module, name, real)
      shutil.rmtree(os.path.dirname(item))  # as the run drops it
      return real(item)

    monkeypatch.setattr(module, name, read)

  for step, seed in ((2, 6), (3, 8), (4, 9)):
    save(step, seed)
  fresh = init(model, seed=7)
  caplog.set_level('WARNING', logger='absl')
  removed_once_as_it_is_read(checkpoints, 'item_tree')
  report = pretrained.check_fit(*fresh, {'checkpoint': str(tmp_path), 'which': 'latest'})
  assert report.taken == 'its latest checkpoint, step 3'
  removed_once_as_it_is_read(pretrained, '_restore_raw')
  got, _, report = pretrained.load_pretrained(*fresh, {'checkpoint': str(tmp_path),
                                                       'which': 'latest'})
  assert report.taken == 'its latest checkpoint, step 2'
  np.testing.assert_array_equal(got['head']['fc']['kernel'], kernels[2])
  for step in (4, 3):
    assert (f'init_from checkpoint {folder / str(step)} was removed while it was read (a run '
            'training in its workdir drops its older steps as it saves new ones). Choosing the '
            'latest step again.') in caplog.text, caplog.text
  save(5, 10)
  removed_once_as_it_is_read(pretrained, '_restore_raw')
  with pytest.raises(checkpoints.RemovedCheckpointError, match=re.escape(
      f'init_from checkpoint {folder / "5"} was removed while it was read (a run training in its '
      'workdir drops its older steps as it saves new ones).') + '$'):
    pretrained.load_pretrained(*fresh, {'checkpoint': str(folder / '5')})


def test_check_fit_gives_the_loads_report_and_refusals_without_reading_a_weight(
    tmp_path, k400_salinet, monkeypatch):
  """check_fit, which a run calls before it compiles its model: load_pretrained's report, or its
  refusal, from the fresh variables' shapes and the checkpoint's metadata alone."""
  converted, _, _ = k400_salinet
  fresh = init(tiny_model(ucf101_salinet.get_config('1'), 3), seed=2)
  trained_fresh = init(_training_checkpoint(tmp_path)[0], seed=7)
  cases = [(fresh, {'checkpoint': converted, 'exclude': '^head/'}),  # fine-tuned
           (fresh, {'checkpoint': converted}),  # mis-shaped head
           (fresh, {'checkpoint': converted, 'exclude': '^heads/'}),  # matches nothing
           (fresh, {'checkpoint': converted, 'exclude': '.'}),  # loads nothing
           (trained_fresh, {'checkpoint': str(tmp_path), 'exclude': '/fc/', 'which': 'latest'}),
           (trained_fresh, {'checkpoint': str(tmp_path / 'checkpoints' / '3')})]

  def outcome(function, variables, init_from):
    try:
      report = function(*variables, init_from)
    except (errors.UserError, ValueError) as e:
      return f'{type(e).__name__}: {e}'
    return report[2] if isinstance(report, tuple) else report

  loads = [outcome(pretrained.load_pretrained, *case) for case in cases]
  assert sum(isinstance(load, str) for load in loads) == 3, loads  # three refusals

  def read(*args, **kwargs):
    raise AssertionError('weights were read')

  monkeypatch.setattr(pretrained, '_restore_raw', read)
  shapes = lambda tree: jax.tree.map(  # noqa: E731
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  for (variables, init_from), load in zip(cases, loads):
    assert outcome(pretrained.check_fit, shapes(variables), init_from) == load, init_from


def test_a_classifier_trained_on_other_classes_of_the_same_count_is_refused(tmp_path):
  """init_from a run on records with other classes (or the same ones in another order, e.g. a
  class folder renamed) loaded its classifier rows onto the wrong classes without a word; the
  shapes fit, so nothing else could see it."""
  model, params = _training_checkpoint(tmp_path, classes=['cat', 'dog', 'eel', 'fox'])
  fresh = init(model, seed=7)
  source = {'checkpoint': str(tmp_path), 'which': 'latest'}
  head = lambda: {'head/fc/kernel', 'head/fc/bias'}  # noqa: E731  (Engine.classifier_params)
  for classes, said in ((['cat', 'eel', 'dog', 'fox'], "the same classes in another order: "
                         "class 1 is 'dog' there, 'eel' here"),
                        (['cat', 'dog', 'eel', 'gnu'], "classes only there: fox; only here: gnu")):
    with pytest.raises(pretrained.PretrainedMismatchError) as refused:
      pretrained.load_pretrained(*fresh, source, classes=classes, classifier_params=head)
    message = str(refused.value)
    assert message.startswith(f'init_from {tmp_path} (its latest checkpoint, step 3) was trained '
                              f'on other classes than these records ({said})'), message
    assert "init_from.exclude='^(head/fc)(/|$)'" in message, message
  # Excluded, the classifier starts fresh; the same classes load it.
  got, _, report = pretrained.load_pretrained(*fresh, {**source, 'exclude': '^head/fc/'},
                                              classes=['cat', 'eel', 'dog', 'fox'],
                                              classifier_params=head)
  np.testing.assert_array_equal(got['head']['fc']['kernel'], fresh[0]['head']['fc']['kernel'])
  got, _, _ = pretrained.load_pretrained(*fresh, source, classes=['cat', 'dog', 'eel', 'fox'],
                                         classifier_params=head)
  np.testing.assert_array_equal(got['head']['fc']['kernel'], params['head']['fc']['kernel'])


def test_values_take_the_dtype_and_sharding_of_the_fresh_variables(k400_salinet):
  path, k400_params, _ = k400_salinet
  model = tiny_model(ucf101_salinet.get_config('1'), 7)
  fresh_params, fresh_stats = init(model, seed=8)
  mesh = parallel.create_mesh()
  fresh_params = parallel.replicate(fresh_params, mesh)
  params, _, _ = pretrained.load_pretrained(fresh_params, fresh_stats, {'checkpoint': path})
  leaf = params['backbone']['s1']['pathway0_stem']['conv']['kernel']
  fresh_leaf = fresh_params['backbone']['s1']['pathway0_stem']['conv']['kernel']
  assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32
  assert leaf.sharding == fresh_leaf.sharding
  np.testing.assert_array_equal(leaf, k400_params['backbone']['s1']['pathway0_stem']['conv'][
      'kernel'])


def test_no_checkpoint_is_a_no_op_and_an_empty_one_is_refused():
  params = {'a': {'kernel': jnp.ones(2)}}
  out, stats, report = pretrained.load_pretrained(params, {}, {'checkpoint': 'none'})
  assert out is params and stats == {} and report.ok and not report.loaded
  assert pretrained.load_pretrained(params, {}, {})[0] is params
  with pytest.raises(pretrained.InitCheckpointRequiredError, match='checkpoint is empty'):
    pretrained.load_pretrained(params, {}, {'checkpoint': ''})
  # A plain dict with a recipe's placeholder (an AttributeError before).
  for check in (pretrained.load_pretrained, pretrained.check_fit):
    with pytest.raises(pretrained.InitCheckpointRequiredError, match='must name what this '
                       'recipe starts from: a pretrained checkpoint'):
      check(params, {}, {'checkpoint': pretrained.REQUIRED})


def test_flax_frozen_dicts_are_accepted(k400_salinet):
  path, k400_params, _ = k400_salinet
  model = tiny_model(ucf101_salinet.get_config('1'), 7)
  fresh_params, fresh_stats = init(model, seed=9)
  params, _, report = pretrained.load_pretrained(flax.core.freeze(fresh_params),
                                                 flax.core.freeze(fresh_stats),
                                                 {'checkpoint': path})
  assert report.ok
  np.testing.assert_array_equal(params['fusion']['conv1']['kernel'],
                                k400_params['fusion']['conv1']['kernel'])


def test_a_checkpoint_that_loads_nothing_is_an_error_even_when_not_strict(k400_salinet):
  """init_from asked for weights: all of them excluded, or none matching, would train a random
  model without a word (strict=False printed 'loaded 0 tensors' and went on)."""
  path, _, _ = k400_salinet
  model = tiny_model(ucf101_salinet.get_config('1'), 7)
  fresh_params, fresh_stats = init(model, seed=2)
  with pytest.raises(pretrained.PretrainedMismatchError, match=f'^Nothing of {path} was loaded'):
    pretrained.load_pretrained(fresh_params, fresh_stats,
                               {'checkpoint': path, 'exclude': '.*', 'strict': False})


def test_a_workdir_without_checkpoints_is_named_as_the_init_checkpoint(tmp_path):
  (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(checkpoints.NoCheckpointError,
                     match=f'{tmp_path}/run is a workdir without checkpoints yet'):
    pretrained.load_variables(str(tmp_path / 'run'))


def test_a_file_instead_of_a_converted_directory_says_to_convert_it(tmp_path):
  raw = tmp_path / 'I3D_NLN_8x8_R50.pyth'
  raw.write_bytes(b'not converted')
  with pytest.raises(checkpoints.NoCheckpointError,
                     match=f'{raw} is a file, not a converted checkpoint directory: convert it'):
    pretrained.load_variables(str(raw))


@pytest.mark.parametrize('field,value,message', [
    ('checkpoint', '', 'config.init_from.checkpoint is empty'),
    ('checkpoint', '  ', 'config.init_from.checkpoint is empty'),
    ('which', 'bogus', "config.init_from.which must be one of \\('best', 'latest'\\), got 'bogus'"),
    ('exclude', '([', r"config.init_from.exclude is not a valid regex \('\(\['"),
])
def test_init_from_settings_that_cannot_work_fail_before_any_work(field, value, message):
  """An empty checkpoint (e.g. an unset shell variable) trained from scratch without a word; a
  bad `which` was blamed on config.eval.checkpoint, a bad `exclude` ended in re's traceback."""
  init_config = k400_i3d_nl.get_config().init_from
  init_config.checkpoint = '/ckpt/converted'
  init_config[field] = value
  with pytest.raises(errors.UserError, match=message):
    pretrained.check_init_from(init_config)
  init_config.checkpoint = 'none'
  if field == 'checkpoint':
    pretrained.check_init_from(init_config)  # from scratch, said so explicitly


def test_an_unfinished_run_as_init_from_is_a_warning(tmp_path, caplog):
  """A warm-up preempted at step 5 of 10 and never resumed: the sampling stage started from its
  half-trained weights with an INFO line only."""
  model = tiny_model(k400_i3d_nl.get_config(), 4)
  params, batch_stats = init(model, seed=6)
  config = k400_i3d_nl.get_config()
  config.checkpoint.async_save = False
  state = {'step': jnp.asarray(5), 'params': params, 'batch_stats': batch_stats}
  store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
  store.save(5, state, total_steps=10)
  store.close()
  init_config = {'checkpoint': str(tmp_path), 'which': 'latest'}
  with caplog.at_level('WARNING'):
    report = pretrained.load_pretrained(*init(model, seed=7), init_config)[2]
  assert report.unfinished == (5, 10)  # which the run's checkpoints keep for its resumes
  assert [r.getMessage() for r in caplog.records if r.getMessage().startswith('init_from')] == [
      f'init_from {tmp_path}/checkpoints/5 is from a run that stopped at step 5 of its 10 '
      'steps, unfinished: resume that run first if the next stage should start from its end.']
  caplog.clear()
  store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
  store.save(10, dict(state, step=jnp.asarray(10)), total_steps=10)
  store.close()
  # The run finished: neither its last step nor an earlier one (its best, or named) is warned of.
  for source in (init_config, {'checkpoint': f'{tmp_path}/checkpoints/5'}):
    with caplog.at_level('WARNING'):
      pretrained.load_pretrained(*init(model, seed=7), source)
    assert not [r for r in caplog.records if r.getMessage().startswith('init_from')]


def test_the_checkpoint_taken_from_a_run_never_evaluated_is_not_called_its_best(tmp_path):
  """init_from.which='best' on a run with no evaluation falls back to its newest step, and the
  report called that 'its best checkpoint'."""
  model = tiny_model(k400_i3d_nl.get_config(), 4)
  params, batch_stats = init(model, seed=6)
  config = k400_i3d_nl.get_config()
  config.checkpoint.async_save = False
  store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
  for step in (1, 2):
    store.save(step, {'step': jnp.asarray(step), 'params': params, 'batch_stats': batch_stats},
               metrics={'val_top1': 0.5, 'val_mean_class_accuracy': 0.5} if step == 1 else None)
  store.close()
  report = pretrained.load_pretrained(*init(model, seed=7),
                                      {'checkpoint': str(tmp_path), 'which': 'best'})[2]
  assert report.taken == 'its best checkpoint, step 1'
  shutil.rmtree(tmp_path / 'checkpoints' / '1')
  report = pretrained.load_pretrained(*init(model, seed=7),
                                      {'checkpoint': str(tmp_path), 'which': 'best'})[2]
  assert report.taken == 'its latest checkpoint, step 2: none was evaluated, so none is best'


def test_a_converted_classifier_is_checked_by_its_recorded_classes_or_said_unchecked(tmp_path,
                                                                                    caplog):
  """A converted reference checkpoint recorded no class names: its classifier rows were read as
  the records' classes in their order, unchecked and without a word."""
  model = tiny_model(k400_i3d_nl.get_config(), 4)
  params, batch_stats = init(model, seed=6)
  fresh = init(model, seed=7)
  head = lambda: {'head/fc/kernel', 'head/fc/bias'}  # noqa: E731  (Engine.classifier_params)
  named = pretrained.save_converted(str(tmp_path / 'named'),
                                    {'params': params, 'batch_stats': batch_stats},
                                    {'source': 'test', 'classes': ['cat', 'dog', 'eel', 'fox']})
  with pytest.raises(pretrained.PretrainedMismatchError, match=re.escape(
      f'init_from {named} was trained on other classes than these records (the same classes in '
      "another order: class 1 is 'dog' there, 'eel' here)")):
    pretrained.load_pretrained(*fresh, {'checkpoint': named}, classes=['cat', 'eel', 'dog', 'fox'],
                               classifier_params=head)
  caplog.set_level('WARNING', logger='absl')
  got, _, _ = pretrained.load_pretrained(*fresh, {'checkpoint': named},
                                         classes=['cat', 'dog', 'eel', 'fox'],
                                         classifier_params=head)
  np.testing.assert_array_equal(got['head']['fc']['kernel'], params['head']['fc']['kernel'])
  assert 'records no class names' not in caplog.text

  unnamed = save(tmp_path, 'unnamed', params, batch_stats)
  pretrained.load_pretrained(*fresh, {'checkpoint': unnamed}, classes=['cat', 'eel', 'dog', 'fox'],
                             classifier_params=head)
  assert (f'init_from {unnamed} records no class names: its layers with a row per class (head/fc) '
          "are read as these records' 4 classes in their order (cat, eel, dog, ... (4 in all)), "
          "unchecked. "
          "Convert it again with --classes=FILE (the names in its classifier's row order) to "
          "have them checked; or exclude them with init_from.exclude='^(head/fc)(/|$)' to train "
          'them afresh.') in caplog.text, caplog.text
  caplog.clear()
  pretrained.load_pretrained(*fresh, {'checkpoint': unnamed, 'exclude': '^head/fc/'},
                             classes=['cat', 'eel', 'dog', 'fox'], classifier_params=head)
  assert 'records no class names' not in caplog.text


def test_converted_weights_trained_on_otherwise_normalised_pixels_are_said(config, tmp_path,
                                                                           caplog):
  """ImageNet weights (--source=torchvision or tsm) fine-tuned on the default 'kinetics'
  normalisation (or Kinetics weights on 'imagenet') loaded without a word: the first layer saw
  pixels normalised otherwise than in training. A run's own checkpoints were compared (its
  config records data.normalization); converted ones record their source's convention, and
  conversions written before that are read by their source."""
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  trainer = train.training_engine(config)
  state = trainer.fresh_state()
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  model = config.model.to_dict()
  older = pretrained.save_converted(str(tmp_path / 'older'), variables,
                                    {'source': 'torchvision', 'model': model})
  recorded = pretrained.save_converted(str(tmp_path / 'recorded'), variables,
                                       {'source': 'torchvision', 'model': model,
                                        'normalization': 'kinetics'})
  unknown = save(tmp_path, 'unknown', state.params, state.batch_stats)  # source 'test'
  assert config.data.normalization == 'kinetics'
  caplog.set_level('INFO', logger='absl')
  for path, said in ((older, True), (recorded, False), (unknown, False)):
    caplog.clear()
    config.init_from.checkpoint = path
    train.initialize_from(trainer, state, config.init_from)
    assert 'Initialised from' in caplog.text
    assert (f"init_from {path} holds weights trained on pixels normalised as 'imagenet' (mean "
            "(0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)), but this run normalises them as "
            "'kinetics' (mean (0.45, 0.45, 0.45), std (0.225, 0.225, 0.225)): set "
            '--config.data.normalization=imagenet to give them the inputs they were trained on '
            '(weights trained otherwise than their source: convert them again with '
            '--normalization=kinetics to record it).' in caplog.text) == said, caplog.text
  config.data.normalization = 'imagenet'
  config.init_from.checkpoint = older
  caplog.clear()
  train.initialize_from(train.training_engine(config), state, config.init_from)
  assert 'normalised as' not in caplog.text


def test_a_conversion_record_of_unknown_or_unreadable_normalisation(config, tmp_path, caplog):
  """Weights whose normalisation the converter could not know (inflated 2D weights of
  --source=pyslowfast) record null and are not compared; a hand-edited conversion.json with a
  value that is no preset, or a source that is no name, is one line naming the file and field
  (it gave a hint naming a preset that does not exist, or a TypeError)."""
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  trainer = train.training_engine(config)
  state = trainer.fresh_state()
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  model = config.model.to_dict()
  config.data.normalization = 'imagenet'
  caplog.set_level('INFO', logger='absl')
  config.init_from.checkpoint = pretrained.save_converted(
      str(tmp_path / 'inflated'), variables,
      {'source': 'pyslowfast', 'model': model, 'normalization': None})
  train.initialize_from(trainer, state, config.init_from)
  assert 'Initialised from' in caplog.text and 'normalised as' not in caplog.text
  for name, info, field in [
      ('edited', {'source': 'torchvision', 'normalization': 'ImageNet'},
       "normalization 'ImageNet'"),
      ('listed', {'source': ['torchvision'], 'normalization': 'imagenet'},
       "source ['torchvision']"),
      ('mapping', {'source': {'a': 1}}, "source {'a': 1}"), ('no_source', {}, 'source None')]:
    config.init_from.checkpoint = pretrained.save_converted(
        str(tmp_path / name), variables, {**info, 'model': model})
    with pytest.raises(errors.UserError) as raised:
      train.initialize_from(trainer, state, config.init_from)
    report = os.path.join(config.init_from.checkpoint, pretrained.REPORT_FILE)
    assert str(raised.value).startswith(f'{report}: {field} is not'), str(raised.value)
    assert '\n' not in str(raised.value)
  for damaged in (b'{"source": "torch', b'\xff\xfe{"a": 1}'):  # cut short; not UTF-8
    with open(report, 'wb') as f:
      f.write(damaged)
    with pytest.raises(errors.UserError, match=f'^{report} is not valid JSON'):
      train.initialize_from(trainer, state, config.init_from)


def _hparams_written(workdir) -> bool:
  """Whether `workdir`'s TensorBoard event files hold hyperparameters."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return any(value.metadata.plugin_data.plugin_name == 'hparams'
             for name in os.listdir(workdir) if name.startswith('events.out.tfevents')
             for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name))
             for value in event.summary.value)


def test_frozen_parameters_left_at_their_random_initialisation_are_refused(config, tmp_path):
  """config.optimizer.frozen over parameters that keep their random initialisation (no
  init_from, or one that excludes or lacks them) trained everything else around random weights
  that never moved, without a word (audit)."""
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  config.optimizer.frozen = '/fc/'
  with pytest.raises(errors.ConfigError, match=re.escape(
      "config.optimizer.frozen='/fc/' freezes 2 parameters that keep their random "
      'initialisation (head/fc/bias, head/fc/kernel; no config.init_from): they would never '
      'train.')):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  trainer = train.training_engine(config)
  state = trainer.fresh_state()
  config.init_from.checkpoint = save(tmp_path, 'weights', state.params, state.batch_stats)
  config.init_from.exclude = '/fc/'
  refusal = re.escape(f"(head/fc/bias, head/fc/kernel; config.init_from.checkpoint="
                      f"'{config.init_from.checkpoint}' does not give them (excluded or missing))")
  with pytest.raises(errors.ConfigError, match=refusal):
    train.train_and_evaluate(config, str(tmp_path / 'fine_tune'))
  # The refused run wrote no TensorBoard hyperparameters (it did, before loading the weights).
  assert not _hparams_written(tmp_path / 'fine_tune')
  writer = train._metric_writer(str(tmp_path / 'started'))
  writer.write_hparams({'seed': 0})
  writer.close()
  assert _hparams_written(tmp_path / 'started')
  loaded = train.initialize_from(trainer, state, config.init_from)[2]
  with pytest.raises(errors.ConfigError, match=refusal):
    train._refuse_frozen_random_parameters(config, state.params, loaded)
  config.init_from.exclude = ''
  loaded = train.initialize_from(trainer, state, config.init_from)[2]
  train._refuse_frozen_random_parameters(config, state.params, loaded)  # given: trains on


def test_a_fine_tune_that_cannot_start_is_refused_before_the_model_compiles_or_loads(
    config, tmp_path, monkeypatch):
  """A fine-tune whose init_from does not fit the model, or leaves frozen parameters random
  (excluded, or missing where strict=False lets that be), was refused after an event file, the
  init compile (11 s for SaliNet K400) and the load of every weight; now before any of them,
  from the model's shapes and the checkpoint's metadata."""
  from salinet_jax import engine  # pylint: disable=g-import-not-at-top
  from salinet_jax import train  # pylint: disable=g-import-not-at-top
  state = train.training_engine(config).fresh_state()
  whole = save(tmp_path, 'whole', state.params, state.batch_stats)
  headless = save(tmp_path, 'headless', {**state.params, 'head': {}}, state.batch_stats)
  kernel = state.params['head']['fc']['kernel']
  other_classes = save(tmp_path, 'other_classes', {**state.params, 'head': {'fc': {
      'kernel': np.zeros((kernel.shape[0], 9), np.float32), 'bias': np.zeros(9, np.float32)}}},
                       state.batch_stats)

  def initialised(*args, **kwargs):
    raise AssertionError('the model was initialised')

  def read(*args, **kwargs):
    raise AssertionError('the weights were read')

  monkeypatch.setattr(engine.Engine, 'fresh_state', initialised)
  monkeypatch.setattr(pretrained, '_variables_of', read)
  frozen_random = ("freezes 2 parameters that keep their random initialisation (head/fc/bias, "
                   "head/fc/kernel; config.init_from.checkpoint='{}' does not give them")
  for run, frozen, checkpoint, exclude, strict, refusal in (
      ('excluded', '/fc/', whole, '/fc/', True, frozen_random.format(whole)),
      ('missing', '/fc/', headless, '', False, frozen_random.format(headless)),
      ('mis_shaped', '', other_classes, '', True, 'mis-shaped 2')):
    config.optimizer.frozen = frozen
    config.init_from.update(checkpoint=checkpoint, exclude=exclude, strict=strict)
    with pytest.raises(errors.UserError, match=re.escape(refusal)):
      train.train_and_evaluate(config, str(tmp_path / run))
    assert not [name for name in os.listdir(tmp_path / run) if name.startswith('events.')], run
  config.optimizer.frozen = '/fc/'
  config.init_from.update(checkpoint=whole, exclude='', strict=True)  # gives them: starts
  with pytest.raises(AssertionError, match='the model was initialised'):
    train.train_and_evaluate(config, str(tmp_path / 'given'))
