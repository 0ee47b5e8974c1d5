"""Shared fixtures: tiny configs over real (tiny) TFRecords, written once per test session."""

import os
import pathlib

# Keep TensorFlow quiet and off any accelerator; tests run on the CPU.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import pytest  # noqa: E402

from configs import demo  # noqa: E402

# Tiny models: compile time dominates, so compile with fewer XLA passes.
jax.config.update('jax_disable_most_optimizations', True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTDATA = REPO_ROOT.parent / 'shared' / 'testdata'


def tiny_config(data_dir: str):
  """The demo config shrunk to seconds: 6x16x16 clips, width-4 ResNet-10, 2 train steps.

  The val split has 7 videos, not a multiple of the eval batch (4), so padding is exercised.
  """
  config = shrink_to_seconds(demo.get_config(), data_dir)
  config.data.update(dict(num_frames=4, frame_stride=1, eval_num_clips=2, eval_num_crops=1))
  config.model.update(dict(depth=10, width=4))
  return config


def shrink_to_seconds(config, data_dir):
  """Points a demo-style config at the tiny records and makes its loop 2 steps long."""
  config.dataset.data_dir = str(data_dir)
  config.dataset.synthetic.update(dict(num_train=8, num_val=7, num_frames=6, frame_size=20,
                                       object_size=6, num_shards=2))
  config.data.update(dict(crop_size=16, train_min_scale=16, train_max_scale=20,
                          eval_short_side=16, eval_crop_size=16, shuffle_buffer=8))
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.checkpoint.async_save = False
  return config


def random_variables(module, *args, seed=0, **kwargs):
  """Variables of `module` for `args`, drawn with numpy (no XLA compile, unlike `init`): kernels
  He normal (fan_out), BatchNorm scales and variances 1, everything else 0."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  abstract = jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a, **kwargs), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_out = int(np.prod(leaf.shape[:-2])) * leaf.shape[-1]
      return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_out), leaf.shape), leaf.dtype)
    value = 1.0 if name.endswith("['scale']") or name.endswith("['var']") else 0.0
    return jnp.full(leaf.shape, value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """Tiny synthetic records, generated once for the whole session."""
  from data import synthetic  # pylint: disable=g-import-not-at-top
  directory = tmp_path_factory.mktemp('synthetic_records')
  synthetic.generate(str(directory), tiny_config(directory).dataset.synthetic)
  return directory


@pytest.fixture
def config(tiny_data_dir):
  return tiny_config(tiny_data_dir)
