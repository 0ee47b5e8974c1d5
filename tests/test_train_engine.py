"""Engine features: gradient accumulation, bfloat16 steps, SIGTERM save-and-exit."""

import functools
import json
import re
import shutil
import signal
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data import errors as data_errors
from data import pipeline
from salinet_jax import checkpoints
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import inputs
from salinet_jax import losses
from salinet_jax import optim
from salinet_jax import train
from salinet_jax.bench import synthetic_batch
from salinet_jax.models import layers
from tests.conftest import REPO_ROOT
from tests.conftest import equations
from tests.conftest import tiny_config
from tests.conftest import tiny_s2dnet_config
from tests.conftest import subprocess_env
from tests.test_main import _tiny_overrides


class NormFreeModel(nn.Module):
  """Conv -> ReLU -> pool -> dense, no BatchNorm: accumulation must equal one big batch."""
  num_classes: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    x = nn.relu(layers.Conv3D(6, 3, 1, 1, use_bias=True)(x))
    logits = nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2, 3)))
    return (logits, {}) if return_aux else logits


def test_gradient_accumulation_equals_one_big_batch(config):
  model = NormFreeModel()
  tx = optax.sgd(0.1, momentum=0.9)
  schedule = optax.constant_schedule(0.1)
  rng = np.random.default_rng(0)
  batch = {'video': jnp.asarray(rng.normal(size=(8, 2, 6, 6, 3)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
  state = engine.create_train_state(model, tx, jax.random.key(0), (1, 2, 6, 6, 3))
  step = functools.partial(engine.train_step, model=model, tx=tx, loss_config=config.loss,
                           schedule=schedule, data_config=config.data)
  config.loss.name = 'cross_entropy'
  assert not losses.needs_aux(config.loss)
  whole, whole_metrics = jax.jit(functools.partial(step, accumulation_steps=1))(
      state, batch, jax.random.key(1))
  accumulated, acc_metrics = jax.jit(functools.partial(step, accumulation_steps=2))(
      state, batch, jax.random.key(1))
  np.testing.assert_allclose(acc_metrics['loss'], whole_metrics['loss'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(whole.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert int(accumulated.step) == 1


class GroupNormedModel(nn.Module):
  """The project's BatchNorm on the input -> ReLU -> pool -> dense."""
  num_classes: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    x = nn.relu(layers.BatchNorm(use_running_average=not train, name='bn')(x))
    logits = nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2, 3)))
    return (logits, {}) if return_aux else logits


def test_accumulation_updates_batch_norm_statistics_per_micro_batch_in_its_groups(config):
  """Mutation audit: the accumulation test's model has no BatchNorm, so a step that updated the
  running statistics from the last micro-batch alone (each one starting from the state's), or
  that normalised over whole micro-batches whatever bn_group_size said, passed every test. Each
  clip has its own mean, so groups of 2 clips have other variances than their micro-batch."""
  config.loss.name = 'cross_entropy'
  model = GroupNormedModel()
  tx = optax.sgd(1.0)  # new params = params - gradient
  rng = np.random.default_rng(0)
  offsets = 3.0 * np.arange(8).reshape(8, 1, 1, 1, 1)
  batch = {'video': jnp.asarray(rng.normal(size=(8, 2, 4, 4, 3)) + offsets, jnp.float32),
           'label': jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
  state = engine.create_train_state(model, tx, jax.random.key(0), (1, 2, 4, 4, 3))
  step = functools.partial(engine.train_step, model=model, tx=tx, loss_config=config.loss,
                           schedule=optax.constant_schedule(1.0), data_config=config.data,
                           bn_group_size=2)
  accumulated, _ = jax.jit(functools.partial(step, accumulation_steps=2))(
      state, batch, jax.random.key(1))

  # By hand: micro-batch i holds rows i, i + 2, ...; each of its groups of 2 clips gives a mean
  # and an unbiased variance, averaged over the groups, and the running averages take them in
  # turn (momentum d).
  video, _ = inputs.model_inputs(batch, config.data)
  d = layers.BN_MOMENTUM
  mean, var = np.zeros(3), np.ones(3)
  for rows in (slice(0, 8, 2), slice(1, 8, 2)):
    groups = np.asarray(video[rows]).reshape(2, -1, 3)
    mean = d * mean + (1 - d) * groups.mean(1).mean(0)
    var = d * var + (1 - d) * groups.var(1, ddof=1).mean(0)
  whole_micro_batch_var = np.asarray(video[1::2]).reshape(-1, 3).var(0, ddof=1)
  assert not np.allclose(groups.var(1, ddof=1).mean(0), whole_micro_batch_var, rtol=0.1)
  np.testing.assert_allclose(accumulated.batch_stats['bn']['mean'], mean, rtol=1e-5)
  np.testing.assert_allclose(accumulated.batch_stats['bn']['var'], var, rtol=1e-5)
  # The parameters take the mean of the micro-batches' gradients, each micro-batch normalised
  # on its own (a one-micro-batch step on each gives its gradient).
  single = jax.jit(step)
  micro_params = [single(state, jax.tree.map(lambda x, r=rows: x[r], batch),
                         jax.random.key(1))[0].params
                  for rows in (slice(0, 8, 2), slice(1, 8, 2))]
  for got, first, second in zip(*(jax.tree.leaves(tree) for tree in
                                  (accumulated.params, *micro_params))):
    np.testing.assert_allclose(got, (first + second) / 2, rtol=1e-5, atol=1e-6)
  assert not np.allclose(*(p['Dense_0']['kernel'] for p in micro_params))


def test_frozen_parameters_count_in_neither_the_clipping_norm_nor_grad_norm(config):
  """Frozen parameters' gradients entered the global norm that clips the others' (PyTorch's
  clip_grad_norm_ skips parameters without gradients): the trainable ones were clipped harder,
  and the logged grad_norm counted them too (audit)."""
  config.loss.name = 'cross_entropy'
  model = NormFreeModel()
  rng = np.random.default_rng(0)
  batch = {'video': jnp.asarray(rng.normal(size=(8, 2, 6, 6, 3)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
  config.optimizer.update(dict(name='sgd', schedule='constant', base_learning_rate=0.5,
                               momentum=0.0, weight_decay=0.0, warmup_steps=0,
                               weight_decay_rules=()))

  def step(opt_config, frozen=None):
    init = engine.create_train_state(model, optax.identity(), jax.random.key(0),
                                     (1, 2, 6, 6, 3))
    tx, schedule = optim.create_optimizer(opt_config, init.params, 10, 8)
    state = engine.create_train_state(model, tx, jax.random.key(0), (1, 2, 6, 6, 3))
    new, metrics = jax.jit(functools.partial(
        engine.train_step, model=model, tx=tx, loss_config=config.loss, schedule=schedule,
        data_config=config.data, frozen=frozen))(state, batch, jax.random.key(1))
    return state.params, new.params, float(metrics['grad_norm'])

  before, plain, _ = step(config.optimizer)
  dense_grads = jax.tree.map(lambda old, new: (old - new) / 0.5, before['Dense_0'],
                             plain['Dense_0'])
  dense_norm = float(optax.global_norm(dense_grads))
  config.optimizer.update(dict(grad_clip_norm=1e-3, frozen='Conv3D'))
  _, after, grad_norm = step(config.optimizer, optim.frozen_mask(before, 'Conv3D'))
  assert grad_norm == pytest.approx(dense_norm, rel=1e-5)
  for old, new, grad in zip(*(jax.tree.leaves(tree) for tree in
                              (before['Dense_0'], after['Dense_0'], dense_grads))):
    np.testing.assert_allclose(new, old - 0.5 * grad * 1e-3 / dense_norm, rtol=1e-5, atol=1e-7)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before['Conv3D_0']),
                                                   jax.tree.leaves(after['Conv3D_0'])))
  config.optimizer.frozen = '/fc/'  # the Engine's train step takes the config's frozen mask
  passed = engine.Engine(config, ['a', 'b', 'c'], train_videos=8).train_step.__wrapped__.keywords
  assert jax.tree.leaves(passed['frozen']).count(True) == 2  # fc's kernel and bias


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_frozen_parameters_keep_their_optimizer_state_and_cost_no_gradient(config, name):
  """Frozen parameters' gradients reached the optimizer's moments every step (PyTorch's
  optimizers skip parameters without gradients, whose state a later unfreezing starts from),
  and so were computed: freezing a layer saved none of its backward pass."""
  config.loss.name = 'cross_entropy'
  model = NormFreeModel()
  rng = np.random.default_rng(0)
  batch = {'video': jnp.asarray(rng.normal(size=(8, 4, 12, 12, 3)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
  config.optimizer.update(dict(name=name, schedule='constant', base_learning_rate=0.1,
                               momentum=0.9, weight_decay=1e-2, warmup_steps=0,
                               weight_decay_rules=()))

  shape = (1,) + batch['video'].shape[1:]

  def two_steps(pattern, moved_moments=False):
    """(the state the steps start from, the state after them, the step's FLOPs); with
    `moved_moments` the convolution's optimizer state starts at 0.01, as a trained run's."""
    config.optimizer.frozen = pattern
    params = engine.create_train_state(model, optax.identity(), jax.random.key(0), shape).params
    tx, schedule = optim.create_optimizer(config.optimizer, params, 10, 8)
    state = engine.create_train_state(model, tx, jax.random.key(0), shape)
    step = jax.jit(functools.partial(
        engine.train_step, model=model, tx=tx, loss_config=config.loss, schedule=schedule,
        data_config=config.data,
        frozen=optim.frozen_mask(params, pattern) if pattern else None))
    flops = step.lower(state, batch, jax.random.key(1)).compile().cost_analysis()['flops']
    if moved_moments:
      state = state.replace(opt_state=jax.tree_util.tree_map_with_path(
          lambda path, leaf: leaf + 0.01 if 'Conv3D_0' in jax.tree_util.keystr(path) else leaf,
          state.opt_state))
    first = state
    for i in range(2):
      state, _ = step(state, batch, jax.random.key(i))
    return first, state, flops

  first, trained, all_flops = two_steps('')
  first, frozen, frozen_flops = two_steps('Conv3D')
  def moments(state, layer):  # the optimizer state's leaves of one layer
    return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
            if layer in jax.tree_util.keystr(path)]

  conv = functools.partial(moments, layer='Conv3D_0')
  dense = functools.partial(moments, layer='Dense_0')
  assert conv(first) and all(not np.any(leaf) for leaf in conv(first))
  assert all(np.array_equal(a, b) for a, b in zip(conv(first), conv(frozen)))
  assert all(np.any(leaf) for leaf in conv(trained))
  assert all(np.any(leaf) for leaf in dense(frozen))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first.params['Conv3D_0']),
                                                   jax.tree.leaves(frozen.params['Conv3D_0'])))
  # The convolution's weight gradient (its input needs none) is all of its backward pass.
  assert frozen_flops < 0.7 * all_flops, (frozen_flops, all_flops)
  # From zero, AdamW's frozen moments stay zero even when they are updated (zero gradients,
  # decay after the moments): only moments a trained run left behind tell them apart.
  moved, resumed, _ = two_steps('Conv3D', moved_moments=True)
  assert conv(moved) and all(np.all(leaf == 0.01) for leaf in conv(moved))
  assert all(np.array_equal(a, b) for a, b in zip(conv(moved), conv(resumed)))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(moved.params['Conv3D_0']),
                                                   jax.tree.leaves(resumed.params['Conv3D_0'])))

  # The optimizer above drops frozen gradients itself (their state kept, their update zero), so
  # jit removed them as dead code with or without the train step's stop_gradient (the same
  # FLOPs). An optimizer that reads every gradient must get zeros too, computed at no cost.
  plain_sgd = optax.sgd(0.1)

  def plain_sgd_step(frozen_mask):
    state = engine.create_train_state(model, plain_sgd, jax.random.key(0), shape)
    step = jax.jit(functools.partial(
        engine.train_step, model=model, tx=plain_sgd, loss_config=config.loss,
        schedule=optax.constant_schedule(0.1), data_config=config.data, frozen=frozen_mask))
    flops = step.lower(state, batch, jax.random.key(1)).compile().cost_analysis()['flops']
    return state, step(state, batch, jax.random.key(1))[0], flops

  _, _, plain_flops = plain_sgd_step(None)
  before, after, plain_frozen_flops = plain_sgd_step(
      optim.frozen_mask(first.params, 'Conv3D'))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.params['Conv3D_0']),
                                                   jax.tree.leaves(after.params['Conv3D_0'])))
  assert not np.array_equal(before.params['Dense_0']['kernel'], after.params['Dense_0']['kernel'])
  assert plain_frozen_flops < 0.7 * plain_flops, (plain_frozen_flops, plain_flops)


def test_out_of_memory_advice_names_the_micro_batch(config):
  """The advice quoted the per-device batch, though each forward holds one micro-batch of it
  (audit)."""
  config.batch_size, config.grad_accumulation_steps = 8, 2
  error = train._memory_advice(config, RuntimeError('RESOURCE_EXHAUSTED: 3 GiB'))
  per_device = 8 // jax.device_count()
  assert str(error).startswith(
      f'Out of device memory with a per-device batch of {per_device} clips ({per_device // 2} in '
      'each of its 2 micro-batches). Lower config.batch_size, raise '
      'config.grad_accumulation_steps (same effective batch, 2 now)')
  assert "or use config.dtype='bfloat16'." in str(error)
  config.dtype = 'bfloat16'  # accelerator audit: it was advised to a run computing in bfloat16
  error = train._memory_advice(config, RuntimeError('RESOURCE_EXHAUSTED: 3 GiB'))
  assert '(same effective batch, 2 now). Original error: RESOURCE_EXHAUSTED' in str(error), error


class DropoutModel(nn.Module):
  """NormFreeModel with dropout before its classifier."""
  num_classes: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    x = nn.relu(layers.Conv3D(6, 3, 1, 1, use_bias=True)(x))
    x = nn.Dropout(0.5, deterministic=not train)(jnp.mean(x, axis=(1, 2, 3)))
    logits = nn.Dense(self.num_classes)(x)
    return (logits, {}) if return_aux else logits


def test_each_step_draws_its_own_dropout_masks(config):
  """Mutation audit: the same dropout mask at every step (the run's key not folded with the
  step) passed every test. The train loop passes one key to every step."""
  config.loss.name = 'cross_entropy'
  model = DropoutModel()
  tx = optax.sgd(0.0)  # the weights stay: the losses differ by their masks only
  rng = np.random.default_rng(0)
  batch = {'video': jnp.asarray(rng.normal(size=(4, 2, 6, 6, 3)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, 4, 4), jnp.int32)}
  state = engine.create_train_state(model, tx, jax.random.key(0), (1, 2, 6, 6, 3))
  step = jax.jit(functools.partial(engine.train_step, model=model, tx=tx,
                                   loss_config=config.loss, schedule=optax.constant_schedule(0.0),
                                   data_config=config.data))
  losses_seen = []
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.key(1))
    losses_seen.append(float(metrics['loss']))
  assert len(set(losses_seen)) == 3, losses_seen
  # The same step with the same key repeats its masks (a resumed step trains as the first did).
  _, again = step(state.replace(step=state.step - 1), batch, jax.random.key(1))
  assert float(again['loss']) == losses_seen[-1]


def test_each_micro_batch_draws_its_own_dropout_masks(config):
  """Mutation audit: every micro-batch of a step drawing the same dropout masks passed every
  test. Two micro-batches of the same clip then give the loss of that clip alone."""
  config.loss.name = 'cross_entropy'
  model = DropoutModel()
  tx = optax.sgd(0.0)
  rng = np.random.default_rng(0)
  clip = {'video': jnp.asarray(rng.normal(size=(1, 2, 6, 6, 3)), jnp.float32),
          'label': jnp.asarray([1], jnp.int32)}
  twice = jax.tree.map(lambda x: jnp.concatenate([x, x]), clip)
  state = engine.create_train_state(model, tx, jax.random.key(0), (1, 2, 6, 6, 3))
  step = functools.partial(engine.train_step, model=model, tx=tx, loss_config=config.loss,
                           schedule=optax.constant_schedule(0.0), data_config=config.data)
  alone = jax.jit(step)(state, clip, jax.random.key(1))[1]['loss']
  accumulated = jax.jit(functools.partial(step, accumulation_steps=2))(
      state, twice, jax.random.key(1))[1]['loss']
  assert float(accumulated) != pytest.approx(float(alone), rel=1e-4), (accumulated, alone)


def test_epochs_and_warm_up_epochs_round_up_to_whole_steps(config):
  """Mutation audit: epochs floored to steps (the last partial batch of an epoch dropped from the
  run) and warm-up epochs taken as steps passed every test. 10 videos in batches of 4: an epoch
  is 2.5 steps."""
  config.batch_size, config.num_train_steps, config.num_epochs = 4, -1, 1.5
  assert engine.num_train_steps(config, train_videos=10) == 4  # 3.75 steps
  config.optimizer.warmup_epochs = 2.5
  opt_config, steps_per_epoch = engine.resolved_optimizer(config, train_videos=10)
  assert steps_per_epoch == 2.5 and opt_config.warmup_steps == 7  # 6.25 steps


def test_bfloat16_step_runs_and_keeps_float32_state(config, tmp_path):
  config.dtype = 'bfloat16'
  trainer = train.training_engine(config)
  state = trainer.fresh_state()
  from data import pipeline  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  batch = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=0)))
  new_state, metrics = trainer.train_step(state, parallel.to_global(batch, trainer.mesh),
                                          jax.random.key(0))
  assert np.isfinite(float(metrics['loss']))
  for tree in (new_state.params, new_state.batch_stats, new_state.opt_state):
    floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_state.params),
                                                      jax.tree.leaves(state.params))]
  assert any(changed)


def _bfloat16_sums(jaxpr) -> list:
  """(elements summed, where) of every reduce_sum of bfloat16 values in `jaxpr`, nested
  computations included."""
  found = []
  for eqn in equations(jaxpr):
    if eqn.primitive.name == 'reduce_sum' and eqn.invars[0].aval.dtype == jnp.bfloat16:
      shape = eqn.invars[0].aval.shape
      count = int(np.prod([shape[axis] for axis in eqn.params['axes']]))
      if count > 1:
        found.append((count, str(eqn.source_info.name_stack)[-80:]))
  return found


@pytest.mark.parametrize('model', ['salinet_hara', 'salinet_i3d', 's2dnet_warmup',
                                   's2dnet_sampling'])
def test_a_bfloat16_train_step_sums_its_gradients_in_float32(model, tiny_data_dir):
  """Accelerator audit: autodiff's transpose of a broadcast sums in the broadcast value's dtype,
  so under config.dtype='bfloat16' (what 'bfloat16_on_accelerators' is on GPUs and TPUs) the
  gradient of SaliNet's mask S_final (8,192 products a pixel at K400 shapes), of the non-local
  blocks' conv biases (25,088 values a channel at batch 8), of S2DNet's tiled context and of
  every classifier's bias was summed in bfloat16; on the CPU 8,192 x bfloat16(0.01) summed to
  80.5, not 82.0. PyTorch AMP sums them in float32. XLA's own convolutions ('native', what
  'auto' is on GPUs and TPUs) for the 3D ones; on this CPU, S2DNet's depthwise convolutions
  are shifted multiply-adds (models/fast_conv.py), whose weight gradient was such a sum too."""
  if model.startswith('s2dnet'):
    config = tiny_s2dnet_config(tiny_data_dir, model.split('_')[1])
  else:
    config = tiny_config(tiny_data_dir)
    config.model.conv_impl = 'native'
  if model == 'salinet_i3d':
    config.model = dict(name='salinet_i3d', width=4, stage_blocks=(1, 2, 2, 1),
                        nonlocal_blocks=((), (1,), (1,), ()), conv_impl='native')
    config.data.crop_size = 32
  config.dtype = 'bfloat16'
  trainer = engine.Engine(config, [str(k) for k in range(4)], train_videos=8)
  batch = synthetic_batch(config, 'train', 2, config.data.num_frames, config.data.crop_size, 4)
  traced = jax.make_jaxpr(trainer.train_step)(trainer.abstract_state(), batch, jax.random.key(0))
  sums = _bfloat16_sums(traced.jaxpr)
  assert not sums, f'{len(sums)} sums of bfloat16 values: {sorted(set(sums))}'


def test_fresh_state_drops_its_compiled_initialisation(config):
  """A process initialises once, so the compiled initialisation is not kept beside training
  (about 120 MiB of a SaliNet process's RSS); initialising again gives the same state."""
  trainer = train.training_engine(config)
  first = trainer.fresh_state()
  assert trainer._init_state._cache_size() == 0  # pylint: disable=protected-access
  second = trainer.fresh_state()
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(trainer.abstract_state()) == jax.tree.structure(first)


@pytest.mark.parametrize('signum, status, said', [
    (signal.SIGTERM, 143, 'Stopped by SIGTERM after saving step'),
    (signal.SIGINT, 130, 'Stopped by SIGINT (Ctrl-C) after saving step')])
def test_sigterm_or_ctrl_c_saves_current_step_and_exits_as_unfinished(tiny_data_dir, tmp_path,
                                                                     signum, status, said):
  """SIGTERM saves the step and exits with status 143, not 0: a script (`train && eval`) or a
  scheduler that reruns failed jobs must not take the stopped run for a finished one. A Ctrl-C
  printed a 60-line KeyboardInterrupt traceback and saved nothing; now it stops as SIGTERM does
  (status 130)."""
  workdir = tmp_path / 'run'
  env = subprocess_env()
  args = [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={workdir}',
          *_tiny_overrides(tiny_data_dir), '--config.num_train_steps=100000',
          '--config.eval_every_steps=100000', '--config.checkpoint_every_steps=100000']
  proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  log = []
  for line in proc.stderr:
    log.append(line)
    if 'step 3/100000' in line:
      proc.send_signal(signum)
      break
  _, rest = proc.communicate(timeout=300)
  log.append(rest)
  assert proc.returncode == status, ''.join(log)[-4000:]
  assert said in ''.join(log) and 'Traceback' not in ''.join(log), ''.join(log)[-4000:]
  store = checkpoints.CheckpointStore(str(workdir), train_config_for(tiny_data_dir).checkpoint,
                                     read_only=True)
  steps = store.steps()
  store.close()
  assert len(steps) == 1 and 3 <= steps[0] < 100000, steps
  assert 'Preempted: saved checkpoint step' in ''.join(log)
  # log.txt ends as the console does (it ended one line before, at 'Preempted: ...').
  assert re.fullmatch(rf'\d\d:\d\d:\d\d warning: {re.escape(said)} {steps[0]}; exit status '
                      rf'{status} \(unfinished run\)\.',
                      (workdir / 'log.txt').read_text().splitlines()[-1])

  resumed = subprocess.run(args[:-3] + [f'--config.num_train_steps={steps[0] + 1}'],
                           cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-4000:]
  assert f'Resumed from checkpoint step {steps[0]}' in resumed.stderr


def train_config_for(data_dir):
  return tiny_config(data_dir)


def test_an_epoch_schedule_needs_no_train_split_outside_training(config):
  """Eval, predict and export build the Engine without the train split's size: an epoch-based
  schedule (S2DNet's recipes) must not stop them (it did: the S2DNet sampling recipe could not
  be evaluated or benchmarked)."""
  config.optimizer.schedule = 'epoch_cosine'
  config.num_epochs = 3.0
  trainer = engine.Engine(config, ['a', 'b', 'c', 'd'])
  assert jax.tree.structure(trainer.abstract_state()) == jax.tree.structure(
      engine.Engine(config, ['a', 'b', 'c', 'd'], train_videos=64).abstract_state())


def test_an_epoch_schedule_spans_the_steps_the_run_is_given(config):
  """schedule='epoch_cosine' spanned config.num_epochs (20 in base.py) whatever
  num_train_steps said: a 6-step run ended at the peak LR, and past num_epochs the cosine rose
  again."""
  config.optimizer.update(dict(schedule='epoch_cosine', warmup_epochs=0.0,
                               final_lr_fraction=0.01))
  config.update(dict(num_train_steps=6, num_epochs=20.0, batch_size=4))
  trainer = engine.Engine(config, ['a', 'b', 'c', 'd'], train_videos=8)  # 2 steps an epoch
  lrs = [float(trainer.schedule(step)) for step in range(7)]
  peak = lrs[0]
  expected = [0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (step // 2) / 3)) for step in range(7)]
  np.testing.assert_allclose(np.array(lrs) / peak, expected, rtol=1e-5)
  assert lrs[6] == pytest.approx(0.01 * peak, rel=1e-5)
  assert float(trainer.schedule(40)) == pytest.approx(0.01 * peak, rel=1e-5)  # stays at the floor
  # The recipe card shows the same curve, and evaluation builds without an epoch count.
  from salinet_jax import recipe  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(recipe.learning_rate_per_epoch(config, 8), lrs[0:6:2], rtol=1e-6)
  config.num_epochs = -1.0
  engine.Engine(config, ['a', 'b', 'c', 'd'], train_videos=8)
  engine.Engine(config, ['a', 'b', 'c', 'd'])


# A process restores a checkpoint's variables (Engine.restore_variables, as eval and predict do)
# and reports how far the restore raised its resident memory and its peak.
_RESTORE_MEMORY = r"""
import gc, json, sys
import jax
from configs import demo
from data import host_malloc
from salinet_jax import checkpoints, engine

def status_mib(field):
  with open('/proc/self/status') as f:
    return next(int(l.split()[1]) / 1024 for l in f if l.startswith(field))

config = demo.get_config()
config.model.update(dict(name='salinet_hara', depth=10, width=64))
config.data.update(dict(num_frames=4, crop_size=16, eval_crop_size=16))
config.checkpoint.async_save = False
trainer = engine.Engine(config, ['a', 'b', 'c', 'd'], train_videos=8)
workdir = sys.argv[1]
if sys.argv[2] == 'save':
  store = checkpoints.CheckpointStore(workdir, config.checkpoint)
  store.save(1, trainer.fresh_state(), config=config, classes=list(trainer.classes))
  store.close()
  sys.exit()
optimizer = jax.tree.leaves(trainer.abstract_state().opt_state)
before = status_mib('VmRSS')
variables = trainer.restore_variables(workdir, 'latest')[0]
resident_rise_mib = status_mib('VmRSS') - before
variables_mib = sum(x.nbytes for x in jax.tree.leaves(variables)) / 2**20
del variables
gc.collect()
host_malloc.trim()
print(json.dumps({'resident_rise_mib': resident_rise_mib,
                  'left_after_freeing_mib': status_mib('VmRSS') - before,
                  'peak_rise_mib': status_mib('VmHWM') - before,
                  'variables_mib': variables_mib,
                  'optimizer_mib': sum(x.size * x.dtype.itemsize for x in optimizer) / 2**20}))
"""


def test_restoring_the_variables_reads_no_optimizer_state_and_leaves_no_heap_behind(tmp_path):
  """Eval, predict and export use the variables only. Reading the optimizer state too (SGD's
  momentum, as large as the parameters) set the peak of an eval process's restore, and the
  blocks TensorStore's threads read into stayed resident in their heaps. For these 58 MiB of
  variables the restore raised the peak by 194-199 MiB and left 109-137 MiB resident. Without
  the optimizer state, read with the pipeline's malloc thresholds in effect (32 MiB mmap, 64
  MiB trim): 146-193 resident while the variables are held and 88-117 once they are freed and
  the heap trimmed; with glibc's initial thresholds (host_malloc.frees_handed_back), 82-106
  and 21-25. The
  resident figure with the variables held varies by tens of MiB from run to run, so the bounds
  sit midway between the two regimes."""
  def run(what):
    return subprocess.run([sys.executable, '-c', _RESTORE_MEMORY, str(tmp_path), what],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600,
                          check=True, cwd=REPO_ROOT).stdout

  run('save')
  result = json.loads(run('restore').strip().splitlines()[-1])
  assert result['optimizer_mib'] > 0.9 * result['variables_mib'] > 40, result
  # A read peaks near twice what it reads (orbax's buffers, then the arrays); reading the
  # optimizer state too passes this bound by half its size.
  assert result['peak_rise_mib'] < 2 * result['variables_mib'] + 0.5 * result['optimizer_mib'], (
      result)
  assert result['resident_rise_mib'] < 2.2 * result['variables_mib'], result
  assert result['left_after_freeing_mib'] < 0.75 * result['variables_mib'], result


@pytest.mark.parametrize('field, value, message', [
    ('batch_size', 0, 'config.batch_size must be positive, got 0.'),
    ('batch_size', -8, 'config.batch_size must be positive, got -8.'),
    ('eval_batch_size', 0, 'config.eval_batch_size must be positive, got 0.'),
    ('log_every_steps', 0, 'config.log_every_steps must be positive, got 0.'),
    ('checkpoint_every_steps', 0, 'config.checkpoint_every_steps must be positive, got 0.'),
    ('data.num_frames', 0, 'config.data.num_frames must be positive, got 0.'),
    ('data.crop_size', 0, 'config.data.crop_size must be positive, got 0.'),
    ('data.eval_num_clips', 0, 'config.data.eval_num_clips must be positive, got 0.'),
    ('model.width', 0, 'config.model.width must be positive, got 0.'),
    ('optimizer.base_learning_rate', -0.1,
     'config.optimizer.base_learning_rate must be at least 0.0, got -0.1.'),
    # Each of these trained otherwise without a word (config audit): reversed gradients, an
    # ascending schedule, all-zero activations, negative targets, reversed momentum.
    ('optimizer.grad_clip_norm', -1.0, 'config.optimizer.grad_clip_norm must be at least 0.0, '
     'got -1.0.'),
    ('optimizer.final_lr_fraction', 2.0, 'config.optimizer.final_lr_fraction must be from 0.0 '
     'to 1.0, got 2.0.'),
    ('optimizer.momentum', -0.9, 'config.optimizer.momentum must be from 0.0 to 1.0 (not '
     'included), got -0.9.'),
    ('optimizer.warmup_steps', -3, 'config.optimizer.warmup_steps must be at least 0, got -3.'),
    ('model.dropout_rate', 1.5, 'config.model.dropout_rate must be from 0.0 to 1.0 (not '
     'included), got 1.5.'),
    ('loss.label_smoothing', 1.5, 'config.loss.label_smoothing must be from 0.0 to 1.0 (not '
     'included), got 1.5.'),
    ('loss.reference_per_device_batch', 0, 'config.loss.reference_per_device_batch must be at '
     'least 1, got 0.'),
    ('data.shuffle_buffer', 0, 'config.data.shuffle_buffer must be at least 1, got 0.'),
    ('precise_bn_batches', -1, 'config.precise_bn_batches must be at least 0, got -1.'),
    ('predict.window_batch', 0, 'config.predict.window_batch must be at least 1, got 0.'),
    # A negative count still traced 10 steps in (engine audit); zero micro-batches said 'use a
    # multiple of 0'.
    ('profile_num_steps', -1, 'config.profile_num_steps must be at least 0, got -1.'),
    ('profile_first_step', -1, 'config.profile_first_step must be at least 0, got -1.'),
    ('grad_accumulation_steps', 0, 'config.grad_accumulation_steps must be at least 1, got 0.'),
    # glibc reads the malloc thresholds as a C int of bytes: 4096 MiB wrapped around to 0.
    ('data.malloc_trim_threshold_mib', -1, 'config.data.malloc_trim_threshold_mib must be from 0 '
     'to 2047, got -1.'),
    ('data.malloc_trim_threshold_mib', 4096, 'config.data.malloc_trim_threshold_mib must be from '
     '0 to 2047, got 4096.'),
    ('data.malloc_mmap_threshold_mib', 4096, 'config.data.malloc_mmap_threshold_mib must be from '
     '0 to 2047, got 4096.'),
])
def test_counts_below_one_and_values_out_of_range_are_config_errors(tiny_data_dir, field, value,
                                                                    message):
  """Each of these ended in a ZeroDivisionError or an XLA shape error deep in the run (a zero
  eval batch after all the training steps), or trained otherwise without a word (a negative
  learning rate trained uphill)."""
  config = tiny_config(str(tiny_data_dir))
  node = config
  *parents, leaf = field.split('.')
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    train.training_engine(config)


def test_malloc_thresholds_out_of_range_are_refused_in_eval_predict_and_export_too(
    tiny_data_dir):
  """Evaluation, prediction and export put the malloc settings in effect too (their restore),
  and the range was checked for training only (review): -1 reached glibc as never trimming."""
  config = tiny_config(str(tiny_data_dir))
  config.data.malloc_trim_threshold_mib = -1
  with pytest.raises(errors.ConfigError, match=re.escape(
      'config.data.malloc_trim_threshold_mib must be from 0 to 2047, got -1.')):
    engine.Engine(config, ['a', 'b'])


@pytest.mark.parametrize('fields, message', [
    ({'eval_crop_size': 20},
     'config.data.eval_crop_size=20 is larger than config.data.eval_short_side=16'),
    ({'train_min_scale': 12},
     'config.data.train_min_scale=12 is smaller than config.data.crop_size=16'),
    ({'train_min_scale': 24, 'train_max_scale': 20},
     'config.data.train_max_scale=20 is smaller than config.data.train_min_scale=24'),
    ({'temporal_sampling': 'pyslowfast', 'target_fps': 0.0},
     "config.data.target_fps must be positive for temporal_sampling='pyslowfast', got 0.0."),
    # A reversed area range trained on crops no range gives (val top-1 0), without a word.
    ({'train_crop': 'inception', 'inception_area_range': (1.0, 0.08)},
     'config.data.inception_area_range=(1.0, 0.08) must be (low, high) with 0 < low <= high <= 1'),
    ({'train_crop': 'inception', 'inception_aspect_range': (-1.0, 2.0)},
     'config.data.inception_aspect_range=(-1.0, 2.0) must be (low, high) with 0 < low <= high'),
])
def test_crops_larger_than_their_frames_are_refused_before_any_work(tiny_data_dir, fields,
                                                                    message):
  """An eval crop larger than the eval short side cut 4x40-pixel strips (tf slices from a
  negative start) and eval still reported a top-1; a train scale below the crop squashed every
  frame to a square with no jitter; target_fps 0 failed in a bare GatherV2 error."""
  config = tiny_config(str(tiny_data_dir))
  config.data.update(fields)
  with pytest.raises(data_errors.SettingError, match=re.escape(message)):
    train.training_engine(config)
  if 'eval_crop_size' in fields:  # eval and predict cut their views through the same check
    with pytest.raises(data_errors.SettingError, match=re.escape(message)):
      pipeline.video_eval_batches(config.data, [b''], 'a.mp4', 25.0, 1)


def test_best_of_a_workdir_where_no_step_was_evaluated_says_it_is_the_latest(tiny_data_dir,
                                                                            tmp_path):
  """A run stopped before its first evaluation: eval reported 'best (step 11)', a step that was
  never compared with any other."""
  config = tiny_config(str(tiny_data_dir))
  trainer = train.training_engine(config)
  store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
  store.save(1, trainer.fresh_state())
  store.wait()
  assert trainer.restore(str(tmp_path), 'best')[1] == 'best: none evaluated, so the latest (step 1)'
  store.save(2, trainer.fresh_state(), metrics={'val_top1': 0.5})
  store.close()
  assert trainer.restore(str(tmp_path), 'best')[1] == 'best (step 2)'


def test_evaluating_a_run_that_has_not_finished_is_a_warning(tiny_data_dir, tmp_path, caplog):
  """With 'latest' the default, eval, predict and export of a run stopped at step 1 of 2 (and
  never resumed) scored it as the run's result without a word."""
  config = tiny_config(str(tiny_data_dir))
  trainer = train.training_engine(config)
  store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
  state = trainer.fresh_state()
  store.save(1, state.replace(step=state.step + 1), total_steps=2)
  store.close()
  trainer.restore_variables(str(tmp_path), 'latest')
  assert ('Checkpoint latest (step 1) is from a run that stopped at step 1 of its 2 steps, '
          'unfinished: rerun its training command to finish it.') in caplog.text
  caplog.clear()
  # A step copied out of its run's checkpoints folder: whether the run finished cannot be seen.
  shutil.copytree(tmp_path / 'checkpoints' / '1', tmp_path / 'kept' / '1')
  trainer.restore_variables(str(tmp_path), str(tmp_path / 'kept' / '1'))
  assert 'unfinished' not in caplog.text
  store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
  store.save(2, state.replace(step=state.step + 2), total_steps=2)
  store.close()
  trainer.restore_variables(str(tmp_path), str(tmp_path / 'checkpoints' / '1'))  # finished run
  assert 'unfinished' not in caplog.text
  # Whether the run finished is its newest step's to say (audit): a run resumed with a shorter
  # length finished though its step 1 recorded a longer one, and one resumed with a longer
  # length and stopped has not though its step 1 recorded a shorter one.
  for first, last, said in ((400, 3, ''), (1, 9, 'stopped at step 3 of its 9 steps')):
    run = tmp_path / f'resumed_{first}_{last}'
    store = checkpoints.CheckpointStore(str(run), config.checkpoint)
    store.save(1, state.replace(step=state.step + 1), total_steps=first)
    store.save(3, state.replace(step=state.step + 3), total_steps=last)
    store.close()
    caplog.clear()
    trainer.restore_variables(str(run), str(run / 'checkpoints' / '1'))
    assert (said in caplog.text) if said else ('unfinished' not in caplog.text), (first, last)


def test_ctrl_c_is_taken_over_only_where_python_handles_it():
  """A background job of a script starts with SIGINT ignored: a Ctrl-C aimed at the script must
  not stop it (the watcher replaced the ignored handler with its own)."""
  before = signal.getsignal(signal.SIGINT)
  try:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watcher = train.PreemptionWatcher()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    watcher.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = train.PreemptionWatcher()
    assert signal.getsignal(signal.SIGINT) == watcher._on_signal  # pylint: disable=protected-access
    watcher.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_before_the_training_loop_ends_in_one_line(tiny_data_dir, tmp_path):
  """A Ctrl-C while the model is initialised (before the loop takes Ctrl-C over to save) printed
  a KeyboardInterrupt traceback; now one line on the console, the traceback in log.txt."""
  workdir = tmp_path / 'run'
  proc = subprocess.Popen(
      [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={workdir}',
       *_tiny_overrides(tiny_data_dir)], cwd=REPO_ROOT, env=subprocess_env(),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  log = []
  for line in proc.stderr:
    log.append(line)
    if 'Initialising the model' in line:
      proc.send_signal(signal.SIGINT)
      break
  _, rest = proc.communicate(timeout=300)
  console = ''.join(log) + rest
  assert proc.returncode == 130, console[-4000:]
  assert 'Traceback' not in console, console[-4000:]
  assert console.strip().splitlines()[-1] == (
      'Interrupted by Ctrl-C: the run stopped unfinished; the same command resumes from its '
      f'newest checkpoint, if any (the traceback of where it stopped is in {workdir}/log.txt). '
      'Exit status 130.')
  assert 'KeyboardInterrupt' in (workdir / 'log.txt').read_text()
  assert not list((workdir / 'checkpoints').glob('[0-9]*'))


@pytest.mark.parametrize('field, value, said', [
    ('eval_num_crops', 2, 'config.data.eval_num_crops must be 1 or 3, got 2.'),
    ('temporal_sampling', 'all_frames', 'set config.data.eval_num_clips=1 (got 2)')])
def test_eval_view_settings_that_cannot_work_fail_before_training(config, field, value, said):
  """They failed at the first evaluation, after the steps before it, whose checkpoint was then
  never written (the save follows the evaluation)."""
  config.data[field] = value
  with pytest.raises(data_errors.DataError, match=re.escape(said)):
    train.training_engine(config)


def test_the_parameters_that_follow_the_classes_are_found_by_their_shapes(tmp_path):
  """init_from refuses a checkpoint of other classes while these load. The first heuristic (2-D
  kernels with a column per class) took S2DNet's f_theta/fc2, spatial_offset and spatial_stride
  (8 wide here) for classifiers on 8 classes, and missed f_theta/conv, which reads class
  scores."""
  from tests.conftest import tiny_s2dnet_config  # pylint: disable=g-import-not-at-top
  classes = [f'c{i}' for i in range(8)]
  assert engine.Engine(tiny_config(str(tmp_path)), classes).classifier_params() == {
      'head/fc/kernel', 'head/fc/bias'}
  s2dnet = tiny_s2dnet_config(str(tmp_path), 'sampling')
  assert engine.Engine(s2dnet, classes).classifier_params() == {
      'snet/fc/kernel', 'snet/fc/bias', 'dnet/fc/kernel', 'dnet/fc/bias', 'f_m/kernel',
      'f_theta/conv/kernel'}


def test_padded_clips_are_refused_for_a_model_that_cannot_read_their_frame_counts(tiny_data_dir):
  """SaliNet with all_frames clips failed in the first step with a TypeError traceback (an
  unexpected keyword argument 'num_valid')."""
  config = tiny_config(str(tiny_data_dir))
  config.data.update(dict(temporal_sampling='all_frames', eval_num_clips=1))
  with pytest.raises(errors.ConfigError, match=re.escape(
      "config.data.temporal_sampling='all_frames' pads each clip to num_frames and gives the "
      "model the count of its real frames, which model 'salinet_hara' does not take")):
    train.training_engine(config)


def test_weights_whose_evaluation_forward_is_nan_are_not_finite(tiny_data_dir):
  """Running variances below zero (finite numbers) leave training's forward finite and make the
  evaluation forward NaN: the check before each save must see that state as broken (mutation
  audit: a check of the training forward alone passed every test)."""
  config = tiny_config(str(tiny_data_dir))
  trainer = engine.Engine(config, ['a', 'b', 'c'], train_videos=8)
  state = trainer.fresh_state()
  batch = synthetic_batch(config, 'train', 4, config.data.num_frames, config.data.crop_size, 3)
  assert bool(trainer.outputs_finite(state, batch))
  broken = jax.tree_util.tree_map_with_path(
      lambda path, x: -jnp.ones_like(x) if path[-1].key == 'var' else x,
      state.variables['batch_stats'])
  state = state.replace(batch_stats=broken)
  assert not bool(trainer.outputs_finite(state, batch))


def test_a_micro_batch_whose_training_forward_is_nan_makes_the_outputs_not_finite(config):
  """With gradient accumulation the check runs each micro-batch's training forward on its own.
  Mutation audit: it was only ever seen returning True under accumulation, so a check of the
  first (or last) micro-batch alone, of any finite logit instead of all, or of one forward over
  the whole batch passed every test. Huge but finite clips overflow their BatchNorm group's mean
  in training (NaN logits), while large running variances keep the evaluation forward finite, so
  only the micro-batch forwards can see them."""
  model = GroupNormedModel()
  state = engine.create_train_state(model, optax.sgd(0.1), jax.random.key(0), (1, 2, 8, 8, 3))
  state = state.replace(batch_stats={'bn': {'mean': jnp.zeros(3), 'var': jnp.full(3, 1e30)}})
  rng = np.random.default_rng(0)
  clean = jnp.asarray(rng.uniform(0, 255, (4, 2, 8, 8, 3)), jnp.float32)
  huge = np.finfo(np.float32).max

  def check(video, group_size):
    batch = {'video': video, 'label': jnp.zeros(4, jnp.int32)}
    assert bool(jnp.all(jnp.isfinite(video)))
    normalised, _ = inputs.model_inputs(batch, config.data)
    assert bool(jnp.all(jnp.isfinite(model.apply(state.variables, normalised, train=False))))
    finite = jax.jit(functools.partial(  # as the Engine compiles it
        engine.outputs_finite, model=model, data_config=config.data, bn_group_size=group_size,
        accumulation_steps=2))(state, batch)
    return bool(finite), normalised

  def training_logits_finite(normalised, rows, group_size):
    with layers.batch_norm_groups(group_size):
      logits, _ = model.apply(state.variables, normalised[rows], train=True,
                              mutable=['batch_stats'])
    return np.isfinite(logits).all(axis=1).tolist()

  assert check(clean, 1)[0] and check(clean, 0)[0]
  # bn_group_size 1, one huge clip: in its micro-batch's training forward only its logits are
  # NaN. Micro-batch 0 holds rows 0 and 2, micro-batch 1 rows 1 and 3.
  for row in range(4):
    finite, normalised = check(clean.at[row].set(huge), 1)
    assert training_logits_finite(normalised, slice(row % 2, 4, 2), 1) == [row > 1, row < 2]
    assert not finite, row
  # bn_group_size 0 (a micro-batch is one group): each clip's normalised values sum to +-0.7 of
  # float32's range per channel, rows 1 and 3 up, rows 0 and 2 down. Each micro-batch's mean
  # overflows; one forward over the whole batch is finite.
  scale = 1.0 / (255.0 * np.asarray(inputs.normalization(config.data)[1]))
  pixel = 0.7 * huge / (2 * 8 * 8 * scale)
  signs = np.array([-1.0, 1.0, -1.0, 1.0]).reshape(4, 1, 1, 1, 1)
  finite, normalised = check(jnp.asarray(np.broadcast_to(signs * pixel, clean.shape),
                                         jnp.float32), 0)
  assert training_logits_finite(normalised, slice(0, 4), 0) == [True] * 4
  assert training_logits_finite(normalised, slice(1, 4, 2), 0) == [False] * 2
  assert not finite


@pytest.mark.parametrize('size', [0, 1, 2])
def test_batches_reach_the_devices_in_order_whatever_the_prefetch(size):
  """device_prefetch=0 (transfers on demand) is a documented value (mutation audit: it yielding
  no batch at all passed every test)."""
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  batches = [{'video': np.full((2, 3), float(k), np.float32)} for k in range(3)]
  got = list(parallel.prefetch_to_mesh(iter(batches), parallel.create_mesh(), size))
  assert [float(batch['video'][0, 0]) for batch in got] == [0.0, 1.0, 2.0]


def test_the_logged_learning_rate_is_the_one_the_step_trained_with(tiny_data_dir):
  """Mutation audit: logging the next step's learning rate passed every test."""
  config = tiny_config(str(tiny_data_dir))  # a cosine over 2 steps
  trainer = engine.Engine(config, ['a', 'b', 'c'], train_videos=8)
  state = trainer.fresh_state()
  batch = synthetic_batch(config, 'train', 4, config.data.num_frames, config.data.crop_size, 3)
  rates = []
  for _ in range(2):
    state, metrics = trainer.train_step(state, batch, jax.random.key(0))
    rates.append(float(metrics['learning_rate']))
  expected = [float(trainer.schedule(0)), float(trainer.schedule(1))]
  assert expected[0] != expected[1] and rates == pytest.approx(expected)
