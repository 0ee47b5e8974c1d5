"""S2DNet's two training stages through train_and_evaluate on tiny real records."""

import os

import flax
import jax
import numpy as np

from configs import demo_s2dnet
from salinet_jax import checkpoints
from salinet_jax import train
from tests.conftest import shrink_to_seconds


def tiny_s2dnet_config(data_dir, stage: str):
  config = shrink_to_seconds(demo_s2dnet.get_config(stage), data_dir)
  config.data.num_frames = 6
  config.model.update(dict(synopsis_frames=4, synopsis_size=16, detail_frames=4, detail_size=12,
                           snet_last_channels=32, dnet_width=4, f_theta_mlp=(16, 8),
                           context_features=8))
  return config


def _restore(config, workdir):
  trainer = train.training_engine(config)
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  state = store.restore(store.latest_step(), trainer.abstract_state())
  store.close()
  return trainer, state


def _f_theta(params):
  return flax.traverse_util.flatten_dict(params['f_theta'], sep='/')


def test_warmup_freezes_f_theta_and_sampling_starts_from_warmup(tiny_data_dir, tmp_path):
  warmup_dir, sampling_dir = str(tmp_path / 'warmup'), str(tmp_path / 'sampling')
  config = tiny_s2dnet_config(tiny_data_dir, 'warmup')
  results = train.train_and_evaluate(config, warmup_dir)
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

  config = tiny_s2dnet_config(tiny_data_dir, 'sampling')
  config.init_from.checkpoint = warmup_dir  # 2 steps: the warm-up schedule's first LR is 0
  sampling = train.training_engine(config)
  start = train.initialize_from(sampling, sampling.fresh_state(), config.init_from)
  for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(warm.params)):
    np.testing.assert_array_equal(a, b)
  train.train_and_evaluate(config, sampling_dir)
  _, sampled = _restore(config, sampling_dir)
  changed = [not np.array_equal(v, _f_theta(warm.params)[k])
             for k, v in _f_theta(sampled.params).items()]
  assert any(changed)  # the sampling stage trains f_theta

  config.eval.checkpoint = 'latest'
  config.eval.num_visualizations = 2
  evaluated = train.evaluate(config, sampling_dir)
  assert evaluated['num_videos'] == 7 and 0 <= evaluated['snet_top1'] <= 1
  pictures = os.listdir(os.path.join(sampling_dir, 'visualizations_val'))
  assert len(pictures) == 2 and all(os.path.getsize(os.path.join(sampling_dir, 'visualizations_val',
                                                                 p)) > 1000 for p in pictures)
