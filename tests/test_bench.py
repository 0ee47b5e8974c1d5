"""The step benchmark (salinet_jax/bench.py) on tiny configs, and config.remat's exactness."""

import collections
import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import demo
from data import host_malloc
from salinet_jax import bench
from salinet_jax import checkpoints
from salinet_jax import optim
from salinet_jax import engine
from salinet_jax import flops as flops_lib
from salinet_jax.models import build_model
from salinet_jax.models import fast_conv
from salinet_jax.models import init_variables
from salinet_jax.models import layers

from conftest import REPO_ROOT
from conftest import subprocess_env

# Every figure the module docstring promises (mutation audit: a dropped 'lower_time_s' or
# 'model_flops_per_step' passed every test).
RESULT_KEYS = {
    'backend', 'device_kind', 'num_devices', 'dtype', 'params', 'batch', 'input_shape',
    'num_classes', 'steps', 'warmup', 'step_times_s', 'warmup_times_s', 'step_time_median_s',
    'step_time_min_s', 'step_time_max_s', 'clips_per_s', 'cpu_time_median_s',
    'system_time_median_s', 'lower_time_s', 'compile_time_s', 'host_peak_rss_mib',
    'compile_peak_rss_mib', 'step_peak_rss_mib', 'device_peak_memory_mib', 'memory_analysis',
    'flops_per_step', 'flops_per_device_step', 'bytes_accessed_per_step', 'model_flops_per_step',
    'peak_flops_per_s', 'mfu', 'achieved_gflops_per_s', 'remat', 'load_avg_start',
    'load_avg_end', 'tensorflow_imported', 'jax_version'}


def tiny_bench_config(name='salinet_hara'):
  config = demo.get_config()
  config.model.update(dict(name=name, depth=10, width=4))
  if name == 'hara_resnet3d':
    config.model = ml_collections.ConfigDict({
        k: v for k, v in config.model.items() if k not in ('ssf', 'tsfp', 'shared_saliency_bn')})
    config.loss.name = 'cross_entropy'
  config.data.update(dict(num_frames=4, crop_size=16, eval_crop_size=16))
  return config


@pytest.mark.parametrize('mode', ['train', 'eval', 'inputs'])
def test_bench_reports_every_key(mode):
  result = bench.run(tiny_bench_config(), config_path='demo', mode=mode, batch=2, steps=2,
                     warmup=1)
  assert RESULT_KEYS <= set(result)
  assert result['backend'] == jax.default_backend()
  assert result['input_shape'] == [2, 4, 16, 16, 3]
  assert len(result['step_times_s']) == 2 and result['step_time_median_s'] > 0
  assert result['flops_per_step'] > 0
  assert result['memory_analysis']['temp_size_mib'] >= 0
  # One device's program, unlike flops_per_step (engine audit: unlabelled, it read as the step's).
  assert result['memory_analysis']['scope'] == 'one device'
  if jax.default_backend() == 'cpu':
    assert result['mfu'] == 'unknown'
  assert ('clips_per_device_forward' in result) == (mode == 'eval')
  json.dumps(result)  # one JSON line


def test_peak_flops_table():
  assert bench.peak_flops('NVIDIA H200', 'bfloat16') == bench.PEAK_FLOPS['H200']['bfloat16']
  assert bench.peak_flops('NVIDIA A100-SXM4-80GB', 'float32') == bench.PEAK_FLOPS['A100']['float32']
  assert bench.peak_flops('TPU v5 lite', 'bfloat16') == bench.PEAK_FLOPS['TPU v5e']['bfloat16']
  assert bench.peak_flops('cpu', 'float32') is None
  # A PCIe H100 was given the SXM part's peaks (MFU a quarter low; audit).
  assert bench.peak_flops('NVIDIA H100 PCIe', 'bfloat16') == 756e12
  assert bench.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4e12
  # The NVL cards: unknown, not the peaks of the SXM parts their names contain (MFU too low).
  assert bench.peak_flops('NVIDIA H100 NVL', 'bfloat16') is None
  assert bench.peak_flops('NVIDIA H200 NVL', 'float32') is None


def _clock_of_events(monkeypatch, lower_s, compile_s, step_s, log=None):
  """bench's clock, advanced only by the events timed: lowering takes `lower_s`, compiling
  `compile_s`, and the JAX steps (warm-up, then timed) the durations in `step_s`, in order; each
  step appends 'jax' to `log`. Every time reported can then be derived exactly."""
  now = [0.0]
  durations = iter(step_s)
  monkeypatch.setattr(bench, 'time', types.SimpleNamespace(perf_counter=lambda: now[0]))

  def taking(method, seconds):
    def timed(self, *args, **kwargs):
      out = method(self, *args, **kwargs)
      now[0] += seconds
      return out
    return timed

  monkeypatch.setattr(jax.stages.Traced, 'lower', taking(jax.stages.Traced.lower, lower_s))
  monkeypatch.setattr(jax.stages.Lowered, 'compile', taking(jax.stages.Lowered.compile,
                                                            compile_s))
  step = bench.JaxWorkload.step

  def timed_step(self):
    step(self)
    now[0] += next(durations)
    if log is not None:
      log.append('jax')

  monkeypatch.setattr(bench.JaxWorkload, 'step', timed_step)


# Two warm-up steps, then five timed ones: median 4, mean 4.2, min 1, max 9; with the warm-up
# counted the median would be 5.
WARMUP_S, STEP_S = [40.0, 50.0], [5.0, 1.0, 2.0, 9.0, 4.0]


def test_times_flops_and_mfu_come_from_the_timed_steps_alone(monkeypatch):
  """The step time is the median (not the mean or min) of the timed steps, the warm-up left out;
  the compile time is the compilation's alone (not lowering's, not the first step's); model FLOPs
  are two per multiply-add of every clip (flops.model_info's count, independent of the step);
  MFU divides by the peak of the dtype the model computes in ('bfloat16_on_accelerators' is
  float32 on a CPU). Mutation audit: each of these passed every test."""
  config = tiny_bench_config()
  config.dtype = 'bfloat16_on_accelerators'
  asked = []
  monkeypatch.setattr(bench, 'peak_flops', lambda kind, dtype: asked.append((kind, dtype)) or 1e6)
  _clock_of_events(monkeypatch, 3.0, 7.0, WARMUP_S + STEP_S)
  result = bench.run(config, config_path='demo', mode='eval', batch=2, steps=5, warmup=2,
                     cpu_kernels=False)  # XLA's convolutions: the textbook taps model_info counts
  assert result['warmup_times_s'] == WARMUP_S and result['step_times_s'] == STEP_S
  assert (result['step_time_median_s'], result['step_time_min_s'],
          result['step_time_max_s']) == (4.0, 1.0, 9.0)
  assert result['clips_per_s'] == 2 / 4.0
  assert (result['lower_time_s'], result['compile_time_s']) == (3.0, 7.0)

  model = build_model(config.model, result['num_classes'], config.dtype)
  macs_per_clip = flops_lib.model_info(model, (4, 16, 16, 3))['gflops'] * 1e9
  assert result['model_flops_per_step'] == pytest.approx(2 * 2 * macs_per_clip, rel=1e-6)
  assert asked == [(jax.devices()[0].device_kind, 'float32')]
  assert result['peak_flops_per_s'] == 1e6
  assert result['mfu'] == pytest.approx(2 * 2 * macs_per_clip / 4.0 / 1e6, abs=1e-4)
  assert result['achieved_gflops_per_s'] == pytest.approx(2 * 2 * macs_per_clip / 4.0 / 1e9,
                                                          abs=0.01)
  # XLA's count: two FLOPs a multiply-add too, less the taps on padding (a third of a 16 px
  # clip's), plus elementwise work (measured: 0.70 of the model FLOPs; halved or doubled it is out).
  assert 0.55 < result['flops_per_step'] / result['model_flops_per_step'] < 1.25
  assert result['flops_per_device_step'] == result['flops_per_step']  # one device


def test_memory_analysis_is_in_mib_and_totals_the_step():
  """XLA's byte counts in MiB (not MB), and the step's total: arguments and outputs, less the
  donated buffers they share, plus temporaries. A stand-in compiled step gives known counts."""
  stats = types.SimpleNamespace(
      argument_size_in_bytes=3 * 2**20, output_size_in_bytes=2 * 2**20,
      alias_size_in_bytes=3 * 2**19, temp_size_in_bytes=4 * 2**20,
      generated_code_size_in_bytes=2**19, peak_memory_in_bytes=5 * 2**20)
  workload = bench.JaxWorkload.__new__(bench.JaxWorkload)  # no model: only the analysis
  workload.compiled = types.SimpleNamespace(memory_analysis=lambda: stats)
  assert workload.memory_analysis() == {
      'argument_size_mib': 3.0, 'output_size_mib': 2.0, 'alias_size_mib': 1.5,
      'temp_size_mib': 4.0, 'generated_code_size_mib': 0.5, 'peak_memory_mib': 5.0,
      'step_total_mib': 3.0 + 2.0 - 1.5 + 4.0, 'scope': 'one device'}


def test_compare_runs_the_same_workload_in_pairs_and_divides_jax_by_torch(monkeypatch):
  """The PyTorch child is given the JAX side's mode, batch, clip shape (here --frames and --size,
  not the config's), classes and device; the steps alternate in A/B pairs; the ratios are JAX's
  figures over PyTorch's, its step time a median too. A stand-in child with known step times and
  peak RSS, and a clock only the JAX steps advance, make every figure exact."""
  log, specs = [], []

  class StandInChild:

    def __init__(self, spec):
      specs.append(spec)
      log.append('start')
      self.times = iter([2.0, 8.0, 1.0, 3.0, 6.0])  # median 3, mean 4, min 1

    def step(self):
      log.append('torch')
      return next(self.times)

    def finish(self):
      return {'version': 'stand-in', 'threads': 1, 'peak_rss_mib': 100.0,
              'device_peak_memory_mib': None}

  monkeypatch.setattr(bench, 'TorchChild', StandInChild)
  _clock_of_events(monkeypatch, 0.0, 0.0, WARMUP_S + STEP_S, log)
  config = tiny_bench_config('hara_resnet3d')  # 4 frames of 16 px
  result = bench.run(config, config_path='demo', mode='eval', batch=2, steps=5, warmup=2,
                     compare='torch', num_classes=4, frames=6, size=24)
  assert result['input_shape'] == [2, 6, 24, 24, 3]
  (spec,) = specs
  model = config.model.to_dict()
  assert spec == {**spec, 'arch': model.pop('name'), 'model': model, 'mode': 'eval', 'batch': 2,
                  'frames': 6, 'size': 24, 'num_classes': 4, 'warmup': 2, 'device': 'cpu',
                  'autocast': None, 'tf32': False}
  assert log == ['jax', 'jax', 'start'] + ['jax', 'torch', 'torch', 'jax'] * 2 + ['jax', 'torch']
  torch_result = result['torch']
  assert torch_result['step_times_s'] == [2.0, 8.0, 1.0, 3.0, 6.0]
  assert torch_result['step_time_median_s'] == 3.0
  assert torch_result['clips_per_s'] == round(2 / 3.0, 3)
  assert result['ratio_step_time_jax_over_torch'] == round(4.0 / 3.0, 3)
  assert result['ratio_peak_rss_jax_over_torch'] == round(result['host_peak_rss_mib'] / 100, 3)
  if result['step_peak_rss_mib'] is not None:
    assert result['ratio_step_peak_rss_jax_over_torch'] == pytest.approx(
        result['step_peak_rss_mib'] / 100, abs=1.5e-3)
  assert 'ratio_device_peak_memory_jax_over_torch' not in result  # no device peaks on a CPU


def test_flops_count_every_micro_batch_and_memory_totals_count_temporaries():
  """With gradient accumulation XLA counts the loop's body once: flops_per_step was one
  micro-batch's. XLA's peak_memory leaves the temporaries out on CPU (audit)."""
  config = tiny_bench_config()
  whole = bench.run(config, config_path='demo', mode='train', batch=4, steps=1, warmup=1)
  config.grad_accumulation_steps = 2
  halves = bench.run(config, config_path='demo', mode='train', batch=4, steps=1, warmup=1)
  assert halves['flops_per_step'] == pytest.approx(whole['flops_per_step'], rel=0.1)
  assert halves['flops_counted'].startswith('one micro-batch x grad_accumulation_steps=2')
  # MFU's numerator counts the step's convolutions and matrix products as traced: on a GPU the
  # compiled program's count leaves out the convolutions cuDNN runs (SaliNet K400 b8 on an
  # H200: 68 GFLOPs a step, MFU 0.0018). Every micro-batch counts, and the backward pass (about
  # twice the forward's).
  assert halves['model_flops_per_step'] == pytest.approx(whole['model_flops_per_step'], rel=0.01)
  forward = bench.run(config, config_path='demo', mode='eval', batch=4, steps=1, warmup=1)
  assert 2.5 < whole['model_flops_per_step'] / forward['model_flops_per_step'] < 3.3
  memory = whole['memory_analysis']
  assert memory['step_total_mib'] == pytest.approx(
      memory['argument_size_mib'] + memory['output_size_mib'] - memory['alias_size_mib']
      + memory['temp_size_mib'], abs=0.2)


def test_an_unknown_dtype_is_named_as_the_flag_given():
  """--dtype=bf16 said 'config.dtype must be one of ...', a field the user never set (engine
  audit)."""
  with pytest.raises(bench.errors.UserError, match=re.escape(
      "--dtype must be one of ['bfloat16', 'float16', 'float32', 'float64', "
      "'bfloat16_on_accelerators'], got 'bf16'.")):
    bench.run(tiny_bench_config(), config_path='demo', mode='train', batch=2, steps=1, warmup=1,
              dtype='bf16')


def test_flags_the_workload_does_not_read_are_refused():
  """--mode=inputs recorded --dtype, --nocpu_kernels and --checkpoint though its step runs no
  model; --compare=torch set a bfloat16 JAX step against PyTorch's float32 one (audit)."""
  with pytest.raises(bench.errors.UserError, match=r'--dtype, --nocpu_kernels applies to '
                     r'--mode=train and eval, not to --mode=inputs'):
    bench.run(tiny_bench_config(), config_path='demo', mode='inputs', batch=2, steps=1, warmup=1,
              dtype='bfloat16', cpu_kernels=False)
  with pytest.raises(bench.errors.UserError, match=r'--compare=torch runs PyTorch in float32 on '
                     r'the CPU: the JAX side would compute in bfloat16'):
    bench.run(tiny_bench_config('hara_resnet3d'), config_path='demo', mode='train', batch=2,
              steps=1, warmup=1, dtype='bfloat16', compare='torch')


def test_flops_per_step_counts_every_device_and_one_thread_is_one_core(tmp_path):
  """On two devices flops_per_step was one device's, and MFU half what it is; --threads=1 left
  XLA's threads on every core (audit). An unwritable --output failed after the whole run."""
  command = [sys.executable, '-m', 'salinet_jax.bench', '--config=configs/demo.py', '--mode=eval',
             '--batch=2', '--steps=1', '--warmup=1', '--config.model.width=4',
             '--config.data.num_frames=4', '--size=16']
  lines = []
  for devices, extra in ((0, ['--threads=1']), (2, [])):
    process = subprocess.run(command + extra, cwd=REPO_ROOT, env=subprocess_env(devices),
                             capture_output=True, text=True, check=False, timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    lines.append(json.loads(process.stdout.strip().splitlines()[-1]))
  one, two = lines
  assert (one['num_devices'], two['num_devices'], one['cores']) == (1, 2, 1)
  assert two['flops_per_step'] == pytest.approx(one['flops_per_step'], rel=0.02)
  assert two['flops_per_device_step'] == pytest.approx(one['flops_per_step'] / 2, rel=0.02)
  assert two['model_flops_per_step'] == pytest.approx(one['model_flops_per_step'], rel=0.02)
  (tmp_path / 'a_file').write_text('')
  process = subprocess.run(command + [f'--output={tmp_path}/a_file/line.json'], cwd=REPO_ROOT,
                           env=subprocess_env(), capture_output=True, text=True, check=False,
                           timeout=300)
  assert process.returncode == 1 and not process.stdout.strip(), process.stderr[-2000:]
  assert process.stderr.strip().splitlines()[-1].startswith(
      f'error: Cannot write the JSON line to {tmp_path}/a_file')


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='needs PyTorch')
def test_bench_compares_with_torch():
  """PyTorch's steps interleave with JAX's from a child process: this one never imports it."""
  torch_here = 'torch' in sys.modules  # other tests in this worker may have imported it
  result = bench.run(tiny_bench_config('hara_resnet3d'), config_path='demo', mode='train',
                     batch=2, steps=2, warmup=1, compare='torch', num_classes=4)
  assert torch_here or 'torch' not in sys.modules
  torch_result = result['torch']
  assert len(torch_result['step_times_s']) == 2
  assert torch_result['peak_rss_mib'] > 0, torch_result
  assert result['ratio_step_time_jax_over_torch'] > 0
  assert result['ratio_peak_rss_jax_over_torch'] > 0


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='needs PyTorch')
def test_torch_child_reports_its_own_peak_rss_not_the_benchmarks():
  """The PyTorch counterpart runs and is measured in a child process; a child's ru_maxrss starts
  at its parent's peak, so a large benchmark once passed its own memory off as PyTorch's."""
  ballast = np.ones(1536 * 2**20 // 8)  # 1.5 GiB touched: the parent's peak is above it
  spec = bench.torch_spec(tiny_bench_config('hara_resnet3d'), 'train', 2, 4, 16, 4, threads=1)
  child = bench.TorchChild(spec)
  assert child.step() > 0
  final = child.finish()
  parent = host_malloc.peak_rss_mib()
  del ballast
  assert child.process.returncode == 0
  assert parent > 1536
  assert 0 < final['peak_rss_mib'] < parent - 1024, (final, parent)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='needs PyTorch')
def test_torch_child_that_cannot_build_the_model_fails_in_one_line():
  spec = bench.torch_spec(tiny_bench_config('hara_resnet3d'), 'train', 2, 4, 16, 4, threads=1)
  spec['arch'] = 'no_such_arch'
  with pytest.raises(bench.errors.UserError, match='--compare=torch: No PyTorch counterpart'):
    bench.TorchChild(spec)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='needs PyTorch')
def test_torch_child_that_stops_is_named_by_its_last_error_line():
  """The child's stderr goes to a file, not a pipe no one reads while it runs (a pipe it fills
  would stall it); when it stops, its last line is the message."""
  spec = bench.torch_spec(tiny_bench_config('hara_resnet3d'), 'train', 2, 4, 16, 4, threads=1)
  spec['num_classes'] = 0  # no label can be drawn: PyTorch raises inside the child
  with pytest.raises(RuntimeError, match=r"^the PyTorch child process stopped: RuntimeError: "
                     r"random_ expects 'from' to be less than 'to'"):
    bench.TorchChild(spec)


def test_compare_runs_pytorch_where_jax_runs_with_its_precision():
  """On a GPU the comparison ran PyTorch on the CPU, and refused bfloat16, so the GPU figures
  against PyTorch AMP came from a scratch script. PyTorch now runs on the backend JAX runs on:
  AMP in the compute dtype, TF32 where JAX's default precision computes float32 as TF32."""
  settings = bench.torch_device_settings
  assert settings('cpu', 'float32', None) == {'device': 'cpu', 'autocast': None, 'tf32': False}
  assert settings('gpu', 'bfloat16', None) == {'device': 'cuda', 'autocast': 'bfloat16',
                                               'tf32': True}
  assert settings('gpu', 'float32', None) == {'device': 'cuda', 'autocast': None, 'tf32': True}
  assert settings('gpu', 'float32', 'highest')['tf32'] is False
  with pytest.raises(bench.errors.UserError, match=r'--compare=torch runs PyTorch in float32 on '
                     r'the CPU: the JAX side would compute in bfloat16'):
    settings('cpu', 'bfloat16', None)
  with pytest.raises(bench.errors.UserError, match=r'--compare=torch runs PyTorch on the CPU or '
                     r'a CUDA GPU, beside JAX on the same backend; this one is tpu'):
    settings('tpu', 'bfloat16', None)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='needs PyTorch')
def test_torch_child_without_the_device_asked_for_fails_in_one_line():
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    pytest.skip('this PyTorch sees a CUDA device: the line for its absence cannot be shown')
  spec = bench.torch_spec(tiny_bench_config('hara_resnet3d'), 'train', 2, 4, 16, 4, threads=1,
                          device=bench.torch_device_settings('gpu', 'bfloat16', None))
  with pytest.raises(bench.errors.UserError, match=r'--compare=torch: PyTorch \S+ here sees no '
                     r'CUDA device'):
    bench.TorchChild(spec)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='needs PyTorch')
@pytest.mark.parametrize('arch,mode', [('hara_resnet3d', 'train'), ('salinet_i3d', 'eval'),
                                       ('s2dnet', 'eval'), ('s2dnet', 'train')])
def test_torch_counterparts_make_their_tensors_on_their_inputs_device(arch, mode):
  """The S2DNet counterpart made tensors on the CPU inside its forward pass, so it failed on a
  GPU ('Expected all tensors to be on the same device'). PyTorch's meta device, which computes
  shapes only, stands in for a GPU here: a tensor made on the CPU meets a meta one and fails."""
  sys.path.insert(0, os.path.join(REPO_ROOT, 'tests'))
  import torch_models  # pylint: disable=g-import-not-at-top
  spec = {'arch': arch, 'mode': mode, 'batch': 2, 'frames': 8, 'size': 32, 'num_classes': 6,
          'threads': 1, 'device': 'meta',
          'model': {'hara_resnet3d': {'depth': 10, 'width': 4},
                    'salinet_i3d': {'width': 4, 'stage_blocks': (1, 1, 1, 1)},
                    's2dnet': {'synopsis_frames': 4, 'synopsis_size': 32, 'detail_frames': 4,
                               'detail_size': 16, 'dnet_width': 4, 'f_theta_mlp': (8, 4),
                               'context_features': 4}}[arch]}
  workload = torch_models.Workload(spec)
  workload.step()
  assert {p.device.type for p in workload.model.parameters()} == {'meta'}


def test_step_peak_rss_leaves_out_memory_freed_before_the_steps():
  """The peak up to the end of compilation and the steps' own peak are told apart: VmHWM is
  reset after compiling, so memory freed before the steps is not counted in their peak."""
  ballast = np.ones(512 * 2**20 // 8)  # 512 MiB touched, then freed, like the compiler's memory
  del ballast
  before = host_malloc.peak_rss_mib()
  if not host_malloc.reset_peak_rss():
    pytest.skip('this kernel has no writable /proc/self/clear_refs to reset VmHWM')
  after = host_malloc.peak_rss_mib()
  assert after < before - 400, (before, after)
  result = bench.run(tiny_bench_config(), config_path='demo', mode='train', batch=2, steps=1,
                     warmup=1)
  assert 0 < result['step_peak_rss_mib'] <= result['host_peak_rss_mib']
  assert result['host_peak_rss_mib'] == max(result['compile_peak_rss_mib'],
                                            result['step_peak_rss_mib'])


def test_bench_restores_the_checkpoint_it_is_given(tmp_path):
  """--checkpoint: the weights main.py would restore (the whole state in train mode, only the
  variables in eval mode), not a fresh initialisation."""
  config = tiny_bench_config()
  config.checkpoint.async_save = False
  trainer = engine.Engine(bench.bench_config(config, 'train', 2, 4, 16), ['a', 'b', 'c', 'd'],
                          train_videos=8)
  state = trainer.fresh_state()
  saved = state.replace(step=state.step + 3, params=jax.tree.map(lambda x: x + 0.5, state.params))
  store = checkpoints.CheckpointStore(str(tmp_path), config.checkpoint)
  store.save(3, saved, config=config, classes=list(trainer.classes))
  store.close()

  train = bench.JaxWorkload(config, 'train', 2, 4, 16, 4, 8, checkpoint=str(tmp_path))
  assert int(train.args[0].step) == 3
  jax.tree.map(np.testing.assert_array_equal, train.args[0].params, saved.params)
  step_dir = checkpoints.checkpoint_dir(str(tmp_path)) + '/3'
  evaluation = bench.JaxWorkload(config, 'eval', 2, 4, 16, 4, 8, checkpoint=step_dir)
  assert set(evaluation.args[0]) == {'params', 'batch_stats'}
  jax.tree.map(np.testing.assert_array_equal, evaluation.args[0]['params'], saved.params)
  result = bench.run(config, config_path='demo', mode='eval', batch=2, steps=1, warmup=1,
                     num_classes=4, checkpoint=str(tmp_path))
  assert result['checkpoint'] == str(tmp_path)


def test_bench_command_runs_the_step_as_training_does():
  """The step benchmark runs synthetic batches: TensorFlow (about 460 MiB of RSS) must not be
  imported, or its memory would be counted in the step's peak RSS; and it runs with the XLA CPU
  flags of the config's scheduler, convolution kernels and loop unrolling, as main.py does. The
  line records glibc's tunables and the steps' system time (page faults of XLA's temporaries)."""
  env = subprocess_env()
  process = subprocess.run(
      [sys.executable, '-m', 'salinet_jax.bench', '--config=configs/demo.py', '--batch=2',
       '--steps=1', '--warmup=1', '--config.model.depth=10', '--config.model.width=4',
       '--config.data.num_frames=4', '--config.data.crop_size=16',
       '--config.xla_cpu_scheduler=memory'],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
      timeout=300)
  assert process.returncode == 0, process.stderr[-2000:]
  result = json.loads(process.stdout.strip().splitlines()[-1])
  assert result['input_shape'] == [2, 4, 16, 16, 3]
  assert result['tensorflow_imported'] is False
  assert '--xla_cpu_enable_concurrency_optimized_scheduler=false' in result['xla_flags'].split()
  assert ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
          in result['xla_flags'].split())
  assert ('--xla_backend_extra_options=xla_cpu_disable_loop_unrolling'
          in result['xla_flags'].split())
  assert result['glibc_tunables'] == env.get('GLIBC_TUNABLES', '')
  assert 0 <= result['system_time_median_s'] <= result['cpu_time_median_s']


def test_bench_command_line_without_counterpart_fails_in_one_line():
  process = subprocess.run(
      [sys.executable, '-m', 'salinet_jax.bench', '--config=configs/demo.py', '--compare=torch',
       '--steps=1'], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120)
  assert process.returncode != 0
  assert 'no PyTorch counterpart' in process.stderr.strip().splitlines()[-1]


def test_bench_command_line_with_a_missing_checkpoint_fails_in_one_line(tmp_path):
  """Without JAX_PLATFORMS, as a user runs it: JAX's backend probing ("Unable to initialize
  backend 'tpu'") stays off the console, as in main.py."""
  env = subprocess_env()
  env.pop('JAX_PLATFORMS')
  process = subprocess.run(
      [sys.executable, '-m', 'salinet_jax.bench', '--config=configs/demo.py', '--mode=eval',
       f'--checkpoint={tmp_path}/nope', '--steps=1'], cwd=REPO_ROOT, capture_output=True,
      text=True, check=False, timeout=300, env=env)
  assert process.returncode != 0
  last = process.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and f'{tmp_path}/nope' in last, process.stderr[-2000:]
  assert 'Traceback' not in process.stderr
  assert 'Unable to initialize backend' not in process.stderr, process.stderr[-2000:]


def _one_step(config, remat, state=None):
  """(state after one train step, metrics, the initial state) with `config.remat = remat`."""
  model = build_model(config.model, 4, config.dtype, remat)
  shape = (2, config.data.num_frames, config.data.crop_size, config.data.crop_size, 3)
  abstract = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(0)},
      jnp.zeros((1,) + shape[1:]), train=False))
  tx, schedule = optim.create_optimizer(config.optimizer, abstract['params'], 10, 2)
  if state is None:
    state = jax.jit(functools.partial(engine.create_train_state, model, tx,
                                      shape=(1,) + shape[1:]))(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {'video': rng.integers(0, 256, shape, dtype=np.uint8),
           'label': np.arange(2, dtype=np.int32)}
  step = jax.jit(functools.partial(engine.train_step, model=model, tx=tx, loss_config=config.loss,
                                   schedule=schedule, data_config=config.data),
                 compiler_options=engine.remat_compiler_options(remat))
  return step(state, batch, jax.random.key(1)) + (state,)


@pytest.mark.parametrize('name,modes', [('hara_resnet3d', ('elementwise', 'blocks', 'full')),
                                        ('i3d_nl', ('elementwise', 'blocks'))])
def test_remat_gives_the_same_loss_and_update(name, modes):
  config = tiny_bench_config(name)
  if name == 'i3d_nl':
    config.model = ml_collections.ConfigDict(dict(
        name='i3d_nl', width=4, stage_blocks=(1, 1, 1, 1),
        nonlocal_blocks=((), (0,), (), ()), dropout_rate=0.0))
    config.loss.name = 'cross_entropy'
    config.data.update(dict(num_frames=4, crop_size=32))
  ref_state, ref_metrics, init_state = _one_step(config, 'none')
  for remat in modes:
    state, metrics, _ = _one_step(config, remat, init_state)
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)
    np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-6)
    np.testing.assert_allclose(metrics['grad_norm'], ref_metrics['grad_norm'], rtol=1e-5)
    for new, ref in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
      np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)
    for new, ref in zip(jax.tree.leaves(state.batch_stats),
                        jax.tree.leaves(ref_state.batch_stats)):
      np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)


def _train_step_temporaries(config, remat):
  """(temporary MiB, optimized HLO) of the Engine's compiled train step with `config.remat`."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.remat = remat
  trainer = engine.Engine(config, [f'class_{k}' for k in range(4)], train_videos=8)
  batch = bench.synthetic_batch(config, 'train', 2, config.data.num_frames,
                                config.data.crop_size, 4)
  compiled = trainer.train_step.lower(trainer.abstract_state(), batch,
                                      jax.random.key(0)).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20, compiled.as_text()


def test_remat_saves_temporaries_in_the_compiled_train_step():
  """XLA's CPU compiler drops jax.checkpoint's optimisation barriers unless told not to
  (engine.KEEP_REMAT_ON_CPU); then common-subexpression elimination undoes every remat mode."""
  config = tiny_bench_config('hara_resnet3d')
  config.model.width = 16
  config.data.update(dict(num_frames=8, crop_size=32))
  none, _ = _train_step_temporaries(config, 'none')
  # Measured on this model: 17.2 MiB without remat, 15.1 elementwise, 9.9 blocks; 17.2 for
  # each mode with the barriers dropped.
  for remat, most in (('elementwise', 0.95), ('blocks', 0.8)):
    temporaries, hlo = _train_step_temporaries(config, remat)
    assert 'opt-barrier' in hlo or jax.default_backend() != 'cpu'
    assert temporaries < most * none, (remat, temporaries, none)


def test_remat_keeps_float32_activations_without_copying_them():
  """jax.checkpoint rounds every saved activation to its own dtype (reduce_precision), a no-op
  for float32 that XLA's CPU compiler keeps as a copy of each one (SaliNet K400: 630 MiB per
  step); the Engine's step saves them as they are (engine.round_narrow_residuals_only). The
  rounding stays for bfloat16, where XLA may hold more precision than the saved value."""
  config = tiny_bench_config('hara_resnet3d')
  config.data.update(dict(num_frames=4, crop_size=32))
  for remat in ('elementwise', 'blocks'):
    _, hlo = _train_step_temporaries(config, remat)
    assert 'opt-barrier' in hlo or jax.default_backend() != 'cpu'  # remat is on
    assert 'reduce-precision' not in hlo, remat
  saving = jax.checkpoint(lambda y: jnp.sin(y * y) * y,
                          policy=jax.checkpoint_policies.everything_saveable)
  for dtype, rounded in ((jnp.float32, False), (jnp.bfloat16, True)):
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: jnp.sum(saving(x))))(jnp.ones(4, dtype))
    assert ('reduce_precision' in str(jaxpr)) == rounded, dtype


def test_elementwise_remat_saves_conv_outputs_and_batch_norm_statistics_only():
  """Activations saved for the backward pass are the convolutions' outputs; with them, each
  BatchNorm's mean and 1 / std, so the backward pass does not reduce the activations again."""
  config = tiny_bench_config('hara_resnet3d')
  model = build_model(config.model, 4, remat='elementwise')
  variables = init_variables(model, jax.random.key(0), (2, 4, 16, 16, 3))
  clip = jnp.ones((2, 4, 16, 16, 3))

  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, clip,
                            True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(1)})
    return jnp.sum(logits)

  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    jax.ad_checkpoint.print_saved_residuals(loss, variables['params'])
  saved = [line for line in printed.getvalue().splitlines()
           if 'from the argument' not in line and 'from a constant' not in line
           and 'random_seed' not in line]
  names = collections.Counter(re.search(r"named '(\w+)'", line).group(1) for line in saved)
  norms = len(jax.tree.leaves(variables['batch_stats'])) // 2  # mean and var per BatchNorm
  assert names == {fast_conv.CONV_OUTPUT: norms, layers.BN_STATISTICS: 2 * norms}, saved


def test_remat_modes_are_checked():
  config = tiny_bench_config()
  with pytest.raises(ValueError, match='config.remat'):
    build_model(config.model, 4, remat='everything')
  s2d = ml_collections.ConfigDict(dict(name='s2dnet'))
  with pytest.raises(ValueError, match="'blocks' is not available"):
    build_model(s2d, 4, remat='blocks')
  assert jnp.float32 == build_model(config.model, 4, remat='full').dtype
