"""S2DNet's two training stages through train_and_evaluate on tiny real records."""

import flax
import jax
import ml_collections
import numpy as np
import pytest

from salinet_jax import checkpoints
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import pretrained
from salinet_jax import train


def _restore(config, workdir):
  trainer = train.training_engine(config)
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  state = store.restore(store.latest_step(), trainer.abstract_state())
  store.close()
  return trainer, state


def _f_theta(params):
  return flax.traverse_util.flatten_dict(params['f_theta'], sep='/')


def _assert_trained_from_zero(start, trained, keys):
  """`keys` of the flat `trained` params, zero in `start`, moved: weight decay, which shrinks
  every other parameter even where no gradient reaches it, leaves a zero at zero."""
  for key in keys:
    assert not np.any(start[key]), f'{key} is no longer zero-initialised: choose another'
    assert np.any(trained[key]), f'{key} got no gradient'


def test_warmup_freezes_f_theta_and_sampling_starts_from_warmup(s2dnet_stage_runs, tmp_path):
  config, warmup_dir, results = s2dnet_stage_runs['warmup']
  assert results['num_videos'] == 7 and 'snet_top1' in results
  trainer, warm = _restore(config, warmup_dir)
  fresh = trainer.fresh_state()
  for key, value in _f_theta(warm.params).items():
    np.testing.assert_array_equal(value, _f_theta(fresh.params)[key], err_msg=key)
  f_theta_stats = flax.traverse_util.flatten_dict(warm.batch_stats['f_theta'], sep='/')
  fresh_stats = flax.traverse_util.flatten_dict(fresh.batch_stats['f_theta'], sep='/')
  for key, value in f_theta_stats.items():  # f_theta's BatchNorm statistics are frozen too
    np.testing.assert_array_equal(value, fresh_stats[key], err_msg=key)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(warm.params['dnet']),
                                                       jax.tree.leaves(fresh.params['dnet'])))
  _assert_trained_from_zero(  # the warm-up trains the detail net
      flax.traverse_util.flatten_dict(fresh.params['dnet'], sep='/'),
      flax.traverse_util.flatten_dict(warm.params['dnet'], sep='/'),
      ('backbone/bn1/bias', 'backbone/layer4_0/bn2/bias'))

  config, sampling_dir, _ = s2dnet_stage_runs['sampling']
  assert config.init_from.checkpoint == warmup_dir  # 2 steps: the warm-up schedule's first LR is 0
  sampling = train.training_engine(config)
  start, _, loaded = train.initialize_from(sampling, sampling.fresh_state(), config.init_from)
  for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(warm.params)):
    np.testing.assert_array_equal(a, b)
  # What a run checks frozen parameters against before it compiles: the same, from metadata.
  abstract = sampling.abstract_state()
  checked = pretrained.check_fit(abstract.params, abstract.batch_stats, config.init_from,
                                 config.model, sampling.classes, sampling.classifier_params)
  assert checked.loaded == loaded
  _, sampled = _restore(config, sampling_dir)
  changed = [not np.array_equal(v, _f_theta(warm.params)[k])
             for k, v in _f_theta(sampled.params).items()]
  assert any(changed)  # the sampling stage trains f_theta
  _assert_trained_from_zero(_f_theta(warm.params), _f_theta(sampled.params),
                            ('conv/bias', 'conv_bn/bias'))

  config = ml_collections.ConfigDict(config.to_dict())  # the shared run's config stays as is
  config.eval.checkpoint = 'latest'
  config.eval.num_visualizations = 2
  out = tmp_path / 'eval'  # the shared workdir stays as training left it
  evaluated = train.evaluate(config, sampling_dir, output_dir=str(out))
  assert evaluated['num_videos'] == 7 and 0 <= evaluated['snet_top1'] <= 1
  pictures = list((out / 'visualizations_val').iterdir())
  assert len(pictures) == 2 and all(p.stat().st_size > 1000 for p in pictures)


def test_a_stage_with_the_other_stages_recipe_is_refused(s2dnet_stage_runs):
  """--config.model.stage=sampling on the warm-up's config file trained everything but the
  sampler, whose weights stayed at their initialisation, without a word (and the reverse)."""
  for recipe, stage, problem in (('warmup', 'sampling', 'freezes the sampler f_theta'),
                                 ('sampling', 'warmup', 'leaves the sampler f_theta trainable')):
    config = ml_collections.ConfigDict(s2dnet_stage_runs[recipe][0].to_dict())
    config.model.stage = stage
    with pytest.raises(errors.ConfigError, match=rf"config.model.stage='{stage}' but "
                       rf'config.optimizer.frozen=.* {problem}.*--config=FILE.py:STAGE'):
      train.training_engine(config)
    # Evaluating never steps the optimizer: no objection.
    engine.Engine(config, ['a', 'b', 'c', 'd'])


def test_evaluating_a_stage_with_the_other_stages_config_names_the_stage(s2dnet_stage_runs,
                                                                         tmp_path):
  """The warm-up's config on the sampling stage's workdir is refused (the forward differs by
  stage); the first line said only that the optimizer state has another structure."""
  config = ml_collections.ConfigDict(s2dnet_stage_runs['warmup'][0].to_dict())
  config.eval.checkpoint = 'latest'
  with pytest.raises(checkpoints.CheckpointMismatchError) as refused:
    train.evaluate(config, s2dnet_stage_runs['sampling'][1], output_dir=str(tmp_path / 'eval'))
  first_line = str(refused.value).splitlines()[0]
  assert "(model.stage: stored 'sampling', given 'warmup'; optimizer.frozen: stored " in first_line
  assert not (tmp_path / 'eval' / 'eval_val.json').exists()


def test_a_sampling_stage_started_from_other_weights_than_its_warm_up_is_said(
    s2dnet_stage_runs, caplog):
  """The sampling stage initialised from a sampling-stage run, or from a warm-up trained with
  another top-k and input normalisation, said only 'Initialised from ...'. Its own start from
  the warm-up (whose recipe differs only in the stage and in f_theta's initialisation, which
  loaded weights replace) needs no word."""
  config, sampling_dir, _ = s2dnet_stage_runs['sampling']
  warmup_dir = s2dnet_stage_runs['warmup'][1]
  trainer = train.training_engine(config)
  with caplog.at_level('INFO', logger='absl'):
    train.initialize_from(trainer, trainer.fresh_state(), config.init_from)
  assert 'Initialised from' in caplog.text
  assert 'other model or clip settings' not in caplog.text
  assert 'sampling stage starts from' not in caplog.text
  caplog.clear()
  config = ml_collections.ConfigDict(config.to_dict())
  config.init_from.checkpoint = sampling_dir
  train.initialize_from(trainer, trainer.fresh_state(), config.init_from)
  assert ("S2DNet's sampling stage starts from its warm-up stage, but init_from "
          f"{sampling_dir} (its latest checkpoint, step 2) is a 'sampling'-stage run."
          in caplog.text)
  caplog.clear()
  config.init_from.checkpoint = warmup_dir
  config.model.topk = config.model.topk + 1
  config.data.normalization = 'imagenet'
  trainer = train.training_engine(config)
  train.initialize_from(trainer, trainer.fresh_state(), config.init_from)
  assert (f'init_from {warmup_dir} (its latest checkpoint, step 2) was trained with other model '
          'or clip settings than this run: model.topk: stored' in caplog.text)
  assert "data.normalization: stored 'kinetics', given 'imagenet'" in caplog.text
  assert 'sampling stage starts from' not in caplog.text
