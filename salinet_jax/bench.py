r"""Step benchmark on any backend: one train step or eval forward of a config's model.

  python -m salinet_jax.bench --config=CONFIG [--mode=train|eval|inputs] [--batch=N] [--steps=K]
      [--dtype=float32|bfloat16] [--compare=torch] [--config.remat=blocks] [--config.x.y=...]

Runs synthetic, device-resident batches of the config's shapes (random uint8 clips and labels,
plus the keys the config's pipeline adds: 'frame_mask' for all-frames sampling, 'crop_hw' and
'flip' for train crops resized on the accelerator), so it measures the jitted step (the project's
own Engine: `train_step` / `eval_step`, normalisation included), not the input pipeline;
--mode=inputs times only the train step's on-device input ops (what `python -m data.bench`
leaves out).
No dataset records are needed: the number of classes comes from --num_classes or the dataset
registry (data/datasets.py). The weights are a fresh initialisation, or with --checkpoint=DIR
(a workdir's latest step, or a step directory) restored as main.py restores them: the state for
--mode=train, the variables alone for --mode=eval, so the peak RSS is that of an eval process.

Prints one JSON line: backend and device kind, batch, input shape, step time (median, min and
max over K steps after warm-up), clips/s, lower and compile time, peak memory (host RSS of this
process: the whole process's peak, its peak up to the end of compilation, and the peak of the
steps alone (warm-up and timed), counted from the RSS they start from; on accelerators also the
device's peak bytes in use), the compiled step's memory analysis (arguments, outputs,
temporaries, and their total: what `config.remat` saves), FLOPs per step (every device's,
every micro-batch's) from XLA's cost analysis of the compiled step and from the traced step's
convolutions and matrix products (`model_flops_per_step`, which XLA's misses where it hands
them to cuDNN), MFU of the latter against the device's peak for the dtype the model computes
in (`unknown` on CPU), and the load average before and after.

--compare=torch runs the PyTorch counterpart of the same architecture (tests/torch_models.py:
R3D/Hara 3D ResNets, NL-I3D-R50, SaliNet, S2DNet with its TSM-MobileNetV2 and TSM-ResNet-50) on
the same shapes, its steps interleaved with JAX's (A/B pairs, so a load change on a shared
machine hits both), in a child process that imports neither JAX nor TensorFlow (so the frameworks'
thread pools never share a process, and the child's peak RSS is PyTorch's); the line then also
holds `torch` and the JAX/PyTorch ratios. PyTorch runs where JAX does: on the CPU in float32
(--dtype=float32), on a CUDA GPU in the JAX step's compute dtype through PyTorch AMP (autocast),
with TF32 as JAX's default precision has it, cuDNN's autotuner, and GPU peaks compared (JAX then
takes GPU memory as it needs it, not 75% up front). PyTorch is a
test/benchmark dependency only (requirements-test.txt).

Over 400 lines because the command, its workloads and the result record are one tool; the PyTorch
side lives in tests/torch_models.py.
"""

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from data import errors as data_errors

# pylint: disable=g-import-not-at-top,wrong-import-position
with data_errors.ctrl_c_while_starting(__name__):  # JAX's import, through cli
  from absl import app
  from absl import flags
  from ml_collections import config_flags

  from data import host_malloc
  from salinet_jax import cli
  from salinet_jax import errors
  from salinet_jax import workdir

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_MODELS = os.path.join(REPO_ROOT, 'tests', 'torch_models.py')

FLAGS = flags.FLAGS

# Dense peak FLOP/s per device kind and compute dtype, for MFU. float32 on NVIDIA GPUs: XLA's
# default precision runs float32 matmuls and convolutions as TF32 on tensor cores, so the TF32
# dense peak is the honest denominator. Unknown kinds (every CPU) report MFU as 'unknown'.
PEAK_FLOPS = {
    'A100': {'float32': 156e12, 'bfloat16': 312e12, 'float16': 312e12},
    'H100 PCIe': {'float32': 378e12, 'bfloat16': 756e12, 'float16': 756e12},
    'H100': {'float32': 494.7e12, 'bfloat16': 989.4e12, 'float16': 989.4e12},
    'H200': {'float32': 494.7e12, 'bfloat16': 989.4e12, 'float16': 989.4e12},
    'TPU v4': {'bfloat16': 275e12},
    'TPU v5e': {'bfloat16': 197e12},
}
# device_kind substrings -> PEAK_FLOPS key (first match wins). None: a kind whose peak differs
# from the part its name contains and is not in the table (the NVL cards run at lower clocks and
# power than the SXM parts): unknown, not another part's peak.
DEVICE_KINDS = (('H200 NVL', None), ('H100 NVL', None), ('H200', 'H200'),
                ('H100 PCIe', 'H100 PCIe'), ('H100', 'H100'),
                ('A100', 'A100'), ('TPU v4', 'TPU v4'), ('TPU v5 lite', 'TPU v5e'),
                ('TPU v5e', 'TPU v5e'))
MIB = 1024.0 * 1024.0
# config.model.name values with a PyTorch counterpart in tests/torch_models.py.
TORCH_ARCHS = ('hara_resnet3d', 'i3d_nl', 'salinet_i3d', 's2dnet')


def peak_flops(device_kind: str, dtype: str) -> Optional[float]:
  """The device's dense peak FLOP/s for the compute `dtype` (config.dtype as the model computes
  in it: models.compute_dtype), or None when unknown (CPUs)."""
  for pattern, key in DEVICE_KINDS:
    if pattern.lower() in device_kind.lower():
      return None if key is None else PEAK_FLOPS[key].get(dtype)
  return None


def load_average() -> List[float]:
  return [round(x, 2) for x in os.getloadavg()]


def registry_classes(config, num_classes: Optional[int]) -> Tuple[int, int]:
  """(number of classes, train-split size) without reading records: `num_classes`, else the
  demo data's or the registry's classes; the train-split size is the registry's (0 otherwise;
  only epoch-based schedules use it)."""
  from data import datasets  # pylint: disable=g-import-not-at-top
  from data import synthetic  # pylint: disable=g-import-not-at-top
  name = config.dataset.name
  if name == 'synthetic':
    return num_classes or len(synthetic.CLASSES), 0
  if name not in datasets.REGISTRY:
    if num_classes is None:
      raise errors.UserError(f'Dataset {name!r} is not in the registry (data/datasets.py): pass '
                             '--num_classes.')
    return num_classes, 0
  info = datasets.REGISTRY[name]
  return num_classes or info.num_classes, info.split_sizes.get(config.dataset.train_split, 0)


def synthetic_batch(config, mode: str, batch: int, frames: int, size: int, num_classes: int,
                    seed: int = 0) -> Dict[str, Any]:
  """Random uint8 clips and labels with the keys the config's pipeline gives the jitted step."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  views = (1,) if mode == 'eval' else ()
  out = {
      'video': rng.integers(0, 256, (batch,) + views + (frames, size, size, 3), dtype=np.uint8),
      'label': rng.integers(0, num_classes, (batch,), dtype=np.int32),
  }
  if config.data.temporal_sampling == 'all_frames':
    out['frame_mask'] = np.ones((batch, frames), bool)
  if mode == 'train' and config.data.train_resize_on_device:
    # Crop windows of 7/8 of the canvas: the resize-and-flip path runs as in training.
    out['crop_hw'] = np.full((batch, 2), max(1, size * 7 // 8), np.int32)
    out['flip'] = rng.integers(0, 2, (batch,)).astype(bool)
  if mode == 'eval':
    out['mask'] = np.ones((batch,), bool)
  return out


def checkpoint_selector(checkpoint: str) -> str:
  """`Engine.restore`'s `which` for --checkpoint: a workdir's latest step, or the step directory
  itself."""
  from salinet_jax import checkpoints  # pylint: disable=g-import-not-at-top
  return 'latest' if checkpoints.has_checkpoints(checkpoint) else checkpoint


def bench_config(config, mode: str, batch: int, frames: int, size: int):
  """A copy of `config` whose batch sizes and clip shape are the benchmark's."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  config.batch_size = config.eval_batch_size = batch
  config.data.num_frames = frames
  if mode == 'eval':  # a batch of `batch` single-view videos
    config.data.eval_crop_size = size
    config.data.eval_num_clips = config.data.eval_num_crops = 1
  else:
    config.data.crop_size = size
  return config


class JaxWorkload:
  """The compiled step of one config and its device-resident arguments; `step()` runs it.

  train and eval run the project's own Engine (salinet_jax/engine.py): the same jitted train
  step (state donated) and eval step as training and evaluation. inputs runs only what the train
  step does to a batch before the model (salinet_jax/inputs.py: resize and flip of unresized
  crops, normalisation), the accelerator part of the input pipeline.
  """

  def __init__(self, config, mode: str, batch: int, frames: int, size: int, num_classes: int,
               train_videos: int, compiler_options: Optional[Dict[str, Any]] = None,
               checkpoint: Optional[str] = None):
    import jax  # pylint: disable=g-import-not-at-top
    from data import host_malloc  # pylint: disable=g-import-not-at-top
    from salinet_jax import engine  # pylint: disable=g-import-not-at-top
    from salinet_jax import flops as flops_lib  # pylint: disable=g-import-not-at-top
    from salinet_jax import inputs  # pylint: disable=g-import-not-at-top
    from salinet_jax import parallel  # pylint: disable=g-import-not-at-top

    self.jax = jax
    self.mode = mode
    config = bench_config(config, mode, batch, frames, size)
    trainer = engine.Engine(config, [f'class_{k}' for k in range(num_classes)],
                            train_videos=max(train_videos, batch) if mode == 'train' else None)
    host_batch = synthetic_batch(config, 'eval' if mode == 'eval' else 'train', batch, frames,
                                 size, num_classes)
    self.batch = jax.device_put(host_batch, parallel.batch_sharded(trainer.mesh))
    if checkpoint and mode == 'eval':
      # Only the variables, as main.py's eval and predict modes restore them.
      variables = trainer.restore_variables(checkpoint, checkpoint_selector(checkpoint))[0]
    else:
      state = (trainer.restore(checkpoint, checkpoint_selector(checkpoint))[0] if checkpoint
               else trainer.fresh_state())
      variables = state.variables
    if mode == 'train':
      step = trainer.train_step
      self.args = [state, self.batch, jax.random.key(config.seed + 1)]
    elif mode == 'eval':
      step = trainer.eval_step
      self.args = [variables, self.batch]
    else:
      step = jax.jit(lambda batch: inputs.model_inputs(batch, config.data)[0])
      self.args = [self.batch]
    self.params = sum(int(x.size) for x in jax.tree.leaves(variables['params']))
    if mode != 'train':
      state = None  # evaluation keeps the variables only, as main.py's eval and predict modes do
      host_malloc.trim()  # and hands the dropped optimizer state back (a fresh init made one)
    # The malloc settings that training's and evaluation's input pipelines put in effect before
    # their first step compiles (data/pipeline.py): the step runs under them there.
    host_malloc.apply_settings(config.data)
    start = time.perf_counter()
    traced = step.trace(*self.args)
    lowered = traced.lower()
    self.lower_time_s = time.perf_counter() - start
    start = time.perf_counter()
    self.compiled = lowered.compile(compiler_options)
    self.compile_time_s = time.perf_counter() - start
    # The step's convolutions and matrix products as traced (every device's, every
    # micro-batch's; two FLOPs a multiply-add, as XLA counts): the FLOPs that MFU counts. The
    # compiled program's own count leaves out what XLA hands to libraries (cuDNN's convolutions
    # are custom calls on GPUs), and the lowered program's has no FLOPs there.
    macs = sum(flops_lib.jaxpr_macs(traced.jaxpr).values())
    self.model_flops = 2.0 * macs if macs else None

  def step(self) -> None:
    out = self.compiled(*self.args)
    if self.mode == 'train':
      self.args[0] = out[0]  # the old state was donated
    self.jax.block_until_ready(out)

  def cost(self) -> Dict[str, Any]:
    analysis = self.compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    flops = analysis.get('flops')
    return {'flops_per_device': float(flops) if flops is not None else None,
            'bytes_accessed_per_step': analysis.get('bytes accessed')}

  def loops(self) -> bool:
    """Whether the compiled step still holds a loop (XLA may unroll short ones), whose body its
    cost analysis counts once."""
    return ' while(' in self.compiled.as_text()

  def memory_analysis(self) -> Dict[str, Any]:
    stats = self.compiled.memory_analysis()
    if stats is None:
      return {}
    fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
              'temp_size_in_bytes', 'generated_code_size_in_bytes', 'peak_memory_in_bytes')
    out = {}
    for field in fields:
      value = getattr(stats, field, None)
      if value is not None:
        out[field.replace('_in_bytes', '_mib')] = round(value / MIB, 1)
    # XLA's peak_memory leaves the temporaries out on CPU: the step's own total, beside it.
    out['step_total_mib'] = round((stats.argument_size_in_bytes + stats.output_size_in_bytes
                                   - stats.alias_size_in_bytes + stats.temp_size_in_bytes) / MIB, 1)
    # XLA analyses one device's program: its share of the batch, not the whole step's (unlike
    # flops_per_step, which is scaled up to the whole step).
    out['scope'] = 'one device'
    return out


def time_steps(step: Callable[[], None], steps: int) -> List[Tuple[float, float, float]]:
  """(wall-clock seconds, CPU seconds, of which system) of this process's threads for each of
  `steps` steps. The system time is mostly page faults: on the CPU backend XLA maps its
  temporaries afresh each step."""
  times = []
  for _ in range(steps):
    start, cpu_start = time.perf_counter(), os.times()
    step()
    cpu_end = os.times()
    times.append((time.perf_counter() - start,
                  cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system,
                  cpu_end.system - cpu_start.system))
  return times


def summary(times: List[Tuple[float, float, float]], batch: int) -> Dict[str, Any]:
  """Wall-clock median, min, max and clips/s; the median CPU time per step beside it (the work
  done, which a busy machine inflates less than the wall-clock time) and its system part."""
  wall = [t for t, _, _ in times]
  median = statistics.median(wall)
  return {'step_time_median_s': round(median, 6), 'step_time_min_s': round(min(wall), 6),
          'step_time_max_s': round(max(wall), 6), 'clips_per_s': round(batch / median, 3),
          'step_times_s': [round(t, 6) for t in wall],
          'cpu_time_median_s': round(statistics.median([c for _, c, _ in times]), 4),
          'system_time_median_s': round(statistics.median([s for _, _, s in times]), 4)}


def torch_device_settings(backend: str, compute: str,
                          matmul_precision: Optional[str]) -> Dict[str, Any]:
  """Where and in what precision the PyTorch counterpart runs, for JAX on `backend` computing
  in `compute`: on the CPU in float32; on a GPU as PyTorch AMP in `compute` (plain float32
  otherwise), with TF32 unless JAX's `matmul_precision` (jax_default_matmul_precision) is
  'highest' or 'float32' (JAX's other settings are not matched more closely)."""
  if backend == 'cpu':
    if compute != 'float32':
      raise errors.UserError(f'--compare=torch runs PyTorch in float32 on the CPU: the JAX side '
                             f'would compute in {compute}; compare with --dtype=float32.')
    return {'device': 'cpu', 'autocast': None, 'tf32': False}
  if backend in ('gpu', 'cuda', 'rocm'):
    return {'device': 'cuda', 'autocast': None if compute == 'float32' else compute,
            'tf32': matmul_precision not in ('highest', 'float32')}
  raise errors.UserError(f'--compare=torch runs PyTorch on the CPU or a CUDA GPU, beside JAX on '
                         f'the same backend; this one is {backend}.')


def torch_spec(config, mode: str, batch: int, frames: int, size: int, num_classes: int,
               threads: Optional[int], warmup: int = 1,
               device: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """The JSON description of the PyTorch counterpart's workload (tests/torch_models.py);
  `device` is torch_device_settings' (the CPU in float32 when None)."""
  model = config.model.to_dict()
  opt = config.optimizer
  return {
      'arch': model.pop('name'), 'model': model, 'mode': mode, 'batch': batch,
      'frames': frames, 'size': size, 'num_classes': num_classes, 'seed': config.seed,
      'threads': threads or os.cpu_count(), 'warmup': warmup,
      'optimizer': {'lr': opt.base_learning_rate, 'momentum': opt.momentum,
                    'nesterov': opt.nesterov, 'weight_decay': opt.weight_decay},
      **(device or {'device': 'cpu', 'autocast': None, 'tf32': False}),
  }


class TorchChild:
  """The PyTorch counterpart in a child process (`tests/torch_models.py SPEC --serve`) that runs
  one step each time `step()` asks. Its steps interleave with JAX's while the two frameworks'
  thread pools and allocators stay in processes of their own; the child imports neither JAX nor
  TensorFlow, so its peak RSS is PyTorch's own."""

  def __init__(self, spec: Dict[str, Any]):
    import importlib.util  # pylint: disable=g-import-not-at-top
    if importlib.util.find_spec('torch') is None:
      raise errors.UserError('--compare=torch needs PyTorch: pip install -r '
                             'requirements-test.txt')
    import tempfile  # pylint: disable=g-import-not-at-top
    # A file, not a pipe: warnings the child writes as it runs could fill a pipe nobody reads.
    self.stderr = tempfile.TemporaryFile('w+')
    self.process = subprocess.Popen(
        [sys.executable, TORCH_MODELS, json.dumps(spec), '--serve'], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=self.stderr, text=True)
    self.ready = self._read()
    if 'error' in self.ready:
      self.process.wait()
      raise errors.UserError(f'--compare=torch: {self.ready["error"]}')

  def _read(self) -> Dict[str, Any]:
    line = self.process.stdout.readline()
    if not line.startswith('{'):
      self.process.kill()
      self.process.wait()
      self.stderr.seek(0)
      stderr = self.stderr.read().strip().splitlines()
      raise RuntimeError('the PyTorch child process stopped: ' +
                         (stderr[-1] if stderr else f'exit status {self.process.returncode}'))
    return json.loads(line)

  def step(self) -> float:
    """Runs one PyTorch step in the child; its time measured there, in seconds."""
    self.process.stdin.write('step\n')
    self.process.stdin.flush()
    return self._read()['step_s']

  def finish(self) -> Dict[str, Any]:
    """Ends the child; its version, threads, peak RSS and GPU peak (None on the CPU)."""
    self.process.stdin.close()
    final = self._read()
    self.process.wait()
    return {'version': self.ready['torch_version'], 'threads': self.ready['threads'],
            'peak_rss_mib': final['peak_rss_mib'],
            'device_peak_memory_mib': final['device_peak_memory_mib']}


def run(config, *, config_path: str, mode: str, batch: Optional[int], steps: int, warmup: int,
        dtype: Optional[str] = None, num_classes: Optional[int] = None,
        frames: Optional[int] = None, size: Optional[int] = None, compare: str = '',
        threads: Optional[int] = None, profile_dir: Optional[str] = None,
        cpu_kernels: bool = True, checkpoint: Optional[str] = None) -> Dict[str, Any]:
  """Runs the benchmark and returns the JSON-ready result (see the module docstring).
  `cpu_kernels=False` traces XLA's own convolutions and pooling instead of
  salinet_jax/models/fast_conv.py's (the A/B baseline)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from salinet_jax import models  # pylint: disable=g-import-not-at-top
  from salinet_jax.models import fast_conv  # pylint: disable=g-import-not-at-top
  load_start = load_average()
  if dtype:
    if dtype not in models.DTYPE_NAMES:  # config.dtype's message names a field never set
      raise errors.UserError(f'--dtype must be one of {models.DTYPE_NAMES}, got {dtype!r}.')
    with config.unlocked():
      config.dtype = dtype
  if batch is None:
    batch = config.batch_size if mode == 'train' else config.eval_batch_size
  frames = frames or config.data.num_frames
  size = size or (config.data.eval_crop_size if mode == 'eval' else config.data.crop_size)
  num_classes, train_videos = registry_classes(config, num_classes)
  if mode == 'inputs':  # its step has no model: these would change nothing, and be recorded
    given = [name for name, value in (('--dtype', dtype), ('--compare', compare),
                                      ('--nocpu_kernels', not cpu_kernels),
                                      ('--checkpoint', checkpoint)) if value]
    if given:
      raise errors.UserError(f'{", ".join(given)} applies to --mode=train and eval, not to '
                             '--mode=inputs (its step runs no model).')
  compute = np.dtype(models.compute_dtype(config.dtype)).name
  if compare == 'torch' and config.model.name not in TORCH_ARCHS:
    raise errors.UserError(f'--compare=torch: no PyTorch counterpart of model '
                           f'{config.model.name!r} (have {", ".join(TORCH_ARCHS)}).')
  torch_device = (torch_device_settings(jax.default_backend(), compute,
                                        jax.config.jax_default_matmul_precision)
                  if compare == 'torch' else None)

  if warmup < 1:
    raise ValueError('warmup must be >= 1: the peak RSS is read after the warm-up steps.')
  with contextlib.nullcontext() if cpu_kernels else fast_conv.disabled():
    workload = JaxWorkload(config, mode, batch, frames, size, num_classes, train_videos,
                           checkpoint=checkpoint)
  rss_compile = host_malloc.peak_rss_mib()
  resettable = host_malloc.reset_peak_rss()
  warmup_times = time_steps(workload.step, warmup)
  device = jax.devices()[0]
  result: Dict[str, Any] = {
      'bench': 'salinet_jax', 'config': config_path, 'model': config.model.name, 'mode': mode,
      'backend': jax.default_backend(), 'device_kind': device.device_kind,
      'num_devices': jax.device_count(), 'cpu_count': os.cpu_count(), 'dtype': config.dtype,
      'remat': config.get('remat', 'none'), 'batch': batch,
      'threads': threads or os.cpu_count(),
      'cores': (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                else os.cpu_count()),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      # glibc's malloc tunables change how XLA's per-step temporaries are faulted in (README).
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
      # A warm cache (JAX_COMPILATION_CACHE_DIR) turns compile_time_s into a load time.
      'compilation_cache_dir': os.environ.get('JAX_COMPILATION_CACHE_DIR', ''),
      # 'false' on a GPU: device memory taken as needed, leaving room for the PyTorch child.
      'xla_python_client_preallocate': os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE', ''),
      'input_shape': [batch, frames, size, size, 3], 'num_classes': num_classes,
      'params': workload.params, 'steps': steps, 'warmup': warmup,
      'cpu_kernels': bool(cpu_kernels and fast_conv.use_cpu_kernels()),
      'checkpoint': checkpoint or '',
  }
  if mode == 'eval':  # how many of the batch's clips each forward pass runs per device
    result['clips_per_device_forward'] = config.eval.clips_per_device_forward

  torch_child = None
  if compare == 'torch':
    spec = torch_spec(config, mode, batch, frames, size, num_classes, threads, warmup,
                      torch_device)
    torch_child = TorchChild(spec)

  if profile_dir:
    jax.profiler.start_trace(profile_dir)
  jax_times, torch_times = [], []
  for i in range(steps):
    pair = ['jax', 'torch'] if torch_child else ['jax']
    for name in pair if i % 2 == 0 else reversed(pair):
      if name == 'jax':
        jax_times.extend(time_steps(workload.step, 1))
      else:  # wall-clock time measured in the child, no CPU time of this process
        torch_times.append((torch_child.step(), 0.0, 0.0))
  rss_step = host_malloc.peak_rss_mib() if resettable else None  # warm-up and timed steps
  if profile_dir:  # after the reading: the profiler's buffers are not the steps'
    jax.profiler.stop_trace()
  rss_jax = max(rss_compile, rss_step or 0.0)

  result.update(summary(jax_times, batch))
  result['warmup_times_s'] = [round(t, 4) for t, _, _ in warmup_times]
  result['lower_time_s'] = round(workload.lower_time_s, 3)
  result['compile_time_s'] = round(workload.compile_time_s, 3)
  result['host_peak_rss_mib'] = round(rss_jax, 1)
  result['compile_peak_rss_mib'] = round(rss_compile, 1)
  result['step_peak_rss_mib'] = round(rss_step, 1) if rss_step is not None else None
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  result['device_peak_memory_mib'] = (round(stats['peak_bytes_in_use'] / MIB, 1)
                                      if stats and 'peak_bytes_in_use' in stats else None)
  result['memory_analysis'] = workload.memory_analysis()
  result.update(workload.cost())
  # XLA's cost analysis is of one device's program, and of a loop's body once: the step's FLOPs
  # are those of every device, and of every micro-batch (the update once per micro-batch then).
  accumulation = config.grad_accumulation_steps if mode == 'train' else 1
  if accumulation > 1 and not workload.loops():  # XLA unrolled it: counted whole already
    result['flops_counted'] = 'the whole step (XLA unrolled the micro-batch loop)'
    accumulation = 1
  elif accumulation > 1:
    result['flops_counted'] = (f'one micro-batch x grad_accumulation_steps={accumulation} (the '
                               'optimizer update counted once per micro-batch)')
  per_device = result.pop('flops_per_device')
  flops = per_device * jax.device_count() * accumulation if per_device is not None else None
  result['flops_per_step'] = flops
  result['flops_per_device_step'] = (per_device * accumulation if per_device is not None
                                     else None)
  model_flops = workload.model_flops
  result['model_flops_per_step'] = model_flops
  peak = peak_flops(device.device_kind, compute)
  result['peak_flops_per_s'] = peak
  result['mfu'] = (round(model_flops / result['step_time_median_s'] / peak / jax.device_count(),
                         4) if peak and model_flops else 'unknown')
  result['achieved_gflops_per_s'] = (round(model_flops / result['step_time_median_s'] / 1e9, 2)
                                     if model_flops else None)
  result['tensorflow_imported'] = 'tensorflow' in sys.modules
  if torch_child is not None:
    torch_result = torch_child.finish()
    torch_result.update(summary(torch_times, batch))
    for key in ('cpu_time_median_s', 'system_time_median_s'):  # the child reports wall-clock
      del torch_result[key]
    result['torch'] = {**torch_device, **torch_result}
    if torch_result['device_peak_memory_mib'] and result['device_peak_memory_mib']:
      result['ratio_device_peak_memory_jax_over_torch'] = round(
          result['device_peak_memory_mib'] / torch_result['device_peak_memory_mib'], 3)
    result['ratio_step_time_jax_over_torch'] = round(
        result['step_time_median_s'] / torch_result['step_time_median_s'], 3)
    if torch_result['peak_rss_mib']:
      result['ratio_peak_rss_jax_over_torch'] = round(
          result['host_peak_rss_mib'] / torch_result['peak_rss_mib'], 3)
      if rss_step is not None:
        result['ratio_step_peak_rss_jax_over_torch'] = round(
            rss_step / torch_result['peak_rss_mib'], 3)
  result['load_avg_start'] = load_start
  result['load_avg_end'] = load_average()
  result['jax_version'] = jax.__version__
  result['time'] = datetime.datetime.now().isoformat(timespec='seconds')
  return result


def define_flags() -> None:
  """The command line's flags (defined on demand, so that importing this module defines none)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'inputs'],
                    'train: one optimizer step (forward, backward, update); eval: one forward of '
                    'a batch of views; inputs: only the on-device input ops of the train step '
                    '(normalisation, resize and flip of unresized crops).')
  flags.DEFINE_integer('batch', None, 'Clips per step (default: config.batch_size in train mode, '
                       'config.eval_batch_size in eval mode).', lower_bound=1)
  flags.DEFINE_integer('steps', 5, 'Timed steps after the warm-up.', lower_bound=1)
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation (at least 1: the peak '
                       'RSS is read after them).', lower_bound=1)
  flags.DEFINE_string('dtype', None, 'Overrides config.dtype (float32 | bfloat16).')
  flags.DEFINE_integer('num_classes', None, 'Classes of the model (default: the dataset registry).',
                       lower_bound=1)
  flags.DEFINE_integer('frames', None, 'Frames per clip (default: config.data.num_frames).',
                       lower_bound=1)
  flags.DEFINE_integer('size', None, 'Crop size (default: config.data.crop_size, in eval mode '
                       'config.data.eval_crop_size).', lower_bound=1)
  flags.DEFINE_enum('compare', '', ['', 'torch'], 'Also run the PyTorch counterpart.')
  flags.DEFINE_enum('threads', 'all', ['all', '1'],
                    "'1': this process and the PyTorch child on one core (a comparison that a "
                    "busy machine distorts less; XLA keeps threads of its own, so they are held "
                    "to the core); 'all': every core (the default).")
  flags.DEFINE_bool('cpu_kernels', True, 'On the CPU backend, the convolution and pooling '
                    'kernels of salinet_jax/models/fast_conv.py (--nocpu_kernels: XLA\'s own, '
                    'for A/B runs).')
  flags.DEFINE_string('checkpoint', None, 'Restore the weights from this workdir (its latest '
                      'step) or step directory, as main.py does, instead of initialising them: '
                      'the state in train mode, the variables alone in eval mode.')
  flags.DEFINE_string('output', None, 'Also append the JSON line to this file.')
  flags.DEFINE_string('profile_dir', None, 'Write a profiler trace of the timed JAX steps here.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  with cli.user_errors_in_one_line():  # the flags training runs with; read when run() starts JAX
    parallel.set_cpu_xla_flags(FLAGS.config.xla_cpu_scheduler,
                               FLAGS.config.xla_cpu_convolutions,
                               FLAGS.config.xla_cpu_unroll_loops)
  parallel.trim_host_memory_after_compiles()
  if FLAGS.threads == '1':  # read when JAX starts its CPU backend, i.e. in run()
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_cpu_multi_thread_eigen=false').strip()
    # XLA runs threads of its own whatever the flag: one core holds them (and the PyTorch child,
    # which inherits it), or the JAX side would run on every core against PyTorch's one.
    if not hasattr(os, 'sched_setaffinity'):
      raise app.UsageError('--threads=1 holds the process to one core, which needs Linux.')
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  if FLAGS.compare == 'torch':  # JAX would take 75% of a GPU's memory up front, not its peak
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  from salinet_jax import console  # pylint: disable=g-import-not-at-top
  console.setup()  # main.py's console: no backend-probing chatter (starts JAX: flags set above)
  config_arg = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--config=')]
  with cli.user_errors_in_one_line():  # a bad config value or checkpoint, an unwritable output
    if FLAGS.output:  # before the run, not after it
      workdir.check_writable(os.path.dirname(os.path.abspath(FLAGS.output)), 'the JSON line')
    result = run(FLAGS.config, config_path=config_arg[0] if config_arg else '',
                 mode=FLAGS.mode, batch=FLAGS.batch, steps=FLAGS.steps, warmup=FLAGS.warmup,
                 dtype=FLAGS.dtype, num_classes=FLAGS.num_classes, frames=FLAGS.frames,
                 size=FLAGS.size, compare=FLAGS.compare,
                 threads=1 if FLAGS.threads == '1' else None,
                 profile_dir=FLAGS.profile_dir, cpu_kernels=FLAGS.cpu_kernels,
                 checkpoint=FLAGS.checkpoint)
  line = json.dumps(result)
  print(line, flush=True)
  if FLAGS.output:
    with open(FLAGS.output, 'a') as f:
      f.write(line + '\n')


if __name__ == '__main__':
  define_flags()
  with data_errors.ctrl_c_while_ending(), data_errors.sigterm_in_one_line():
    app.run(main, flags_parser=cli.parse_flags)
