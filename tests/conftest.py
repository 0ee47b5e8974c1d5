"""Shared fixtures and settings: tiny configs over real (tiny) TFRecords written once per test run,
the costliest trained runs shared, and the compile settings that keep the suite within minutes."""

import errno
import fcntl
import fractions
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Callable

import data

# Keep TensorFlow quiet and off any accelerator; tests run on the CPU.
data.quiet_tensorflow()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import demo  # noqa: E402

# Tiny models: compile time dominates, so compile with fewer XLA passes, and with XLA's older CPU
# fusion emitters, which compile these programs about 3x faster (the tiny SaliNet train step: 13 s
# to 4 s) than the default ones. Production keeps the defaults: with full optimisation they run
# the R3D-18 train step 12% faster. Set before JAX starts its CPU backend.
TEST_XLA_FLAGS = '--xla_cpu_use_fusion_emitters=false'
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
jax.config.update('jax_disable_most_optimizations', True)

XLA_CACHE_ENV = 'SALINET_TEST_XLA_CACHE'


def pytest_configure(config):
  """One XLA compilation cache per test run, shared by the xdist workers and the subprocesses
  tests start: dozens of tests compile the same tiny train and eval steps, and on 2 cores compiling
  is most of the suite's time. It starts empty, so every program is still compiled once per run."""
  if XLA_CACHE_ENV not in os.environ:  # the controller (or a run without xdist) makes it
    os.environ[XLA_CACHE_ENV] = tempfile.mkdtemp(prefix='salinet_jax_test_xla_cache_')
    config.stash[_OWNED_CACHE] = os.environ[XLA_CACHE_ENV]
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ[XLA_CACHE_ENV]  # for subprocesses
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  jax.config.update('jax_compilation_cache_dir', os.environ[XLA_CACHE_ENV])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_unconfigure(config):
  owned = config.stash.get(_OWNED_CACHE, None)
  if owned:
    shutil.rmtree(owned, ignore_errors=True)


_OWNED_CACHE = pytest.StashKey[str]()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTDATA = REPO_ROOT.parent / 'shared' / 'testdata'


def subprocess_env(devices: int = 0, **extra) -> dict:
  """The environment of a test's `main.py` or worker subprocess: CPU only, the tests' compile
  settings and XLA compilation cache, the repository importable, and `devices` forced CPU
  devices when given."""
  flags = TEST_XLA_FLAGS + (f' --xla_force_host_platform_device_count={devices}' if devices else '')
  return dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',
              PYTHONPATH=str(REPO_ROOT), XLA_FLAGS=flags, **{**data.TENSORFLOW_ENV, **extra})


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


def tiny_s2dnet_config(data_dir, stage: str):
  """The demo S2DNet of `stage` ('warmup' | 'sampling') shrunk to seconds, like `tiny_config`."""
  from configs import demo_s2dnet  # pylint: disable=g-import-not-at-top
  config = shrink_to_seconds(demo_s2dnet.get_config(stage), data_dir)
  config.data.num_frames = 6
  config.model.update(dict(synopsis_frames=4, synopsis_size=16, detail_frames=4, detail_size=12,
                           snet_last_channels=32, dnet_width=4, f_theta_mlp=(16, 8),
                           context_features=8))
  return config


def equations(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs nested in it (jit, remat, custom rules, loops)."""
  import jax.extend as jex  # pylint: disable=g-import-not-at-top
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jex.core.jaxprs_in_params(eqn.params):
      yield from equations(sub)


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


def write_moving_bar_video(path, seconds=24, fps=10, times=None):
  """A video of a bright bar moving right then left (so windows differ), seconds x fps frames,
  or one frame at each of `times` (seconds, in a millisecond time base: a variable rate)."""
  import av  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  count = len(times) if times is not None else seconds * fps
  with av.open(str(path), mode='w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    if times is not None:
      stream.time_base = stream.codec_context.time_base = fractions.Fraction(1, 1000)
    for i in range(count):
      frame = np.zeros((48, 64, 3), np.uint8)
      x = (i * 2) % 64 if i < count // 2 else 63 - (i * 2) % 64
      frame[:, max(0, x - 3):x + 3] = 255
      frame = av.VideoFrame.from_ndarray(frame, format='rgb24')
      if times is not None:
        frame.pts, frame.time_base = int(round(times[i] * 1000)), fractions.Fraction(1, 1000)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def scalar_points(workdir, tag: str) -> list:
  """[(step, value)] of every point of the TensorBoard scalar `tag` written into `workdir`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  points = []
  for name in sorted(os.listdir(workdir)):
    if name.startswith('events.out.tfevents'):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        for value in event.summary.value:
          if value.tag == tag:
            points.append((event.step, float(tf.make_ndarray(value.tensor))))
  return points


def scalars_written(workdir, tag: str) -> dict:
  """{step: value} of the TensorBoard scalar `tag` that a run wrote into `workdir`."""
  return dict(scalar_points(workdir, tag))


def once_per_run(tmp_path_factory, name: str, build: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """The folder `name`, filled by `build(folder)` once per test run: session fixtures are per
  xdist worker, so the first worker to ask builds it under a lock and the others wait for it and
  reuse it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the run's folder, shared by its workers
  folder = root / name
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (folder / BUILT_MARKER).exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      build(folder)
      (folder / BUILT_MARKER).touch()
  return folder


BUILT_MARKER = '.built'


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """Tiny synthetic records, generated once for the whole run."""
  from data import synthetic  # pylint: disable=g-import-not-at-top
  return once_per_run(tmp_path_factory, 'synthetic_records', lambda folder: synthetic.generate(
      str(folder), tiny_config(folder).dataset.synthetic))


@pytest.fixture(scope='session')
def s2dnet_stage_runs(tiny_data_dir, tmp_path_factory):
  """The tiny S2DNet trained through both stages, 2 steps each, the sampling stage initialised
  from the warm-up's checkpoint: {stage: (config, workdir, results)}. Training it is the costliest
  setup of the suite, so it runs once per test run."""
  from salinet_jax import train  # pylint: disable=g-import-not-at-top

  def stage_config(stage, folder):
    config = tiny_s2dnet_config(tiny_data_dir, stage)
    if stage == 'sampling':
      config.init_from.checkpoint = str(folder / 'warmup')
    return config

  def build(folder):
    results = {stage: train.train_and_evaluate(stage_config(stage, folder), str(folder / stage))
               for stage in STAGES}
    (folder / 'results.json').write_text(json.dumps(results))

  folder = once_per_run(tmp_path_factory, 's2dnet_stage_runs', build)
  results = json.loads((folder / 'results.json').read_text())
  return {stage: (stage_config(stage, folder), str(folder / stage), results[stage])
          for stage in STAGES}


STAGES = ('warmup', 'sampling')

# Three train steps of the tiny config on however many devices and processes the environment
# gives (jax.distributed joins when it names a coordinator), then an evaluation of the val split:
# the losses, every parameter and BN statistic after the steps (replicated: whole on every
# process), and the evaluation's files, scores, labels and metrics, saved to argv[3] by process 0.
MESH_WORKER = """
import sys
from salinet_jax import parallel
parallel.initialize_distributed()
import jax, numpy as np
from data import pipeline
from salinet_jax import train
from tests.conftest import tiny_config
config = tiny_config(sys.argv[1])
config.data.train_sharding = 'global_order'
trainer = train.training_engine(config)
assert jax.device_count() == int(sys.argv[2]), jax.devices()
state = trainer.fresh_state()
batches = pipeline.as_numpy(pipeline.train_dataset(config, seed=11))
losses = []
for _ in range(3):
  batch = parallel.to_global(next(batches), trainer.mesh)
  state, metrics = trainer.train_step(state, batch, jax.random.key(5))
  losses.append(float(metrics['loss']))
from salinet_jax import evaluate
results, predictions = evaluate.evaluate_split(config, state.variables, 'val', trainer.mesh,
                                               trainer.eval_step)
scored = dict(eval_files=np.array(predictions.filenames), eval_scores=predictions.scores,
              eval_labels=predictions.labels, eval_metrics=np.array(
                  [results[k] for k in ('num_videos', 'top1', 'mean_class_accuracy')]))
leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.batch_stats))]
if jax.process_index() == 0:
  np.savez(sys.argv[3], *leaves, losses=np.array(losses), **scored)
"""


def mesh_worker(data_dir, out: pathlib.Path, devices: int, processes: int = 1, **env):
  """Runs MESH_WORKER in `processes` processes of `devices // processes` CPU devices each (extra
  `env` for every one) and returns what it saved."""
  procs = [subprocess.Popen(
      [sys.executable, '-c', MESH_WORKER, str(data_dir), str(devices), str(out)], cwd=REPO_ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=subprocess_env(devices // processes,
                         **(dict(env, JAX_PROCESS_ID=str(i)) if processes > 1 else env)))
           for i in range(processes)]
  for proc in procs:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
  return np.load(out)


@pytest.fixture(scope='session')
def four_device_run(tiny_data_dir, tmp_path_factory):
  """MESH_WORKER on one process with four devices, once per test run: the reference of both the
  one-device and the two-process comparisons."""
  folder = once_per_run(tmp_path_factory, 'four_device_run',
                        lambda folder: mesh_worker(tiny_data_dir, folder / 'result.npz', 4))
  return np.load(folder / 'result.npz')


@pytest.fixture
def small_disk(tmp_path):
  """A directory on a real filesystem of 1 MiB and 2000 files or folders (a tmpfs), for tests
  of a full disk."""
  disk = tmp_path / 'small_disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m,nr_inodes=2000', 'tmpfs', str(disk)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a small tmpfs here (needs root): no real full disk to test on')
  yield disk
  subprocess.run(['umount', '--lazy', str(disk)], check=True)


def fill_disk(disk: pathlib.Path, inodes: bool = False) -> None:
  """Writes a file in `disk` until its filesystem has no space left; with `inodes`, then makes
  empty files in `disk/fillers` until it has room for no new file or folder either (as a full
  ext4 disk, where a folder needs a block of its own)."""
  filler = os.open(disk / 'filler', os.O_WRONLY | os.O_CREAT)
  try:
    while os.write(filler, bytes(4096)):
      pass
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
  finally:
    os.close(filler)
  if inodes:
    (disk / 'fillers').mkdir()
    try:
      for i in itertools.count():
        (disk / 'fillers' / str(i)).touch()
    except OSError as e:
      if e.errno != errno.ENOSPC:
        raise


@pytest.fixture
def config(tiny_data_dir):
  return tiny_config(tiny_data_dir)
