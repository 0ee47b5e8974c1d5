"""Data parallelism with `jax.jit` on a device mesh (one CPU, many GPUs, a TPU pod).

The batch is sharded along the mesh's 'data' axis; parameters and optimizer state are replicated.
Under jit, reductions over the batch (BatchNorm statistics, the mean loss) are global. Also the
process's setup before JAX starts its backends: XLA CPU flags, the persistent compilation cache,
host memory handed back after compilations, the multi-process join.
"""

import collections
import functools
import itertools
import os
import re
from typing import Any, Dict, Iterator, List, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data import errors as data_errors
from data import host_malloc
from salinet_jax import errors

DATA_AXIS = 'data'


def create_mesh() -> Mesh:
  """A 1D mesh over every device of every process, process by process (each process's devices
  in JAX's order): a process's local batch rows then fill one contiguous block of each global
  batch, the block `evaluate._gather_rows` puts its rows, names and labels in. JAX orders
  `jax.devices()` so by default, not under `jax_sort_devices_by_process_index=False`."""
  return Mesh(np.asarray(sorted(jax.devices(), key=lambda d: d.process_index)), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Shards the leading (batch) axis over all devices."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch: int, devices: int, what: str) -> None:
  """Fails before any work when a batch cannot be split evenly over `devices` devices."""
  if global_batch % devices:
    raise errors.ConfigError(f'{what}={global_batch} is not divisible by the {devices} devices: use a '
                     f'multiple of {devices} (e.g. {max(devices, global_batch // devices * devices)}).')


def micro_batches(batch: Any, k: int) -> Any:
  """The `k` micro-batches of gradient accumulation, stacked on a new leading axis: rows i,
  i+k, i+2k, ... form micro-batch i, so each stays sharded over the devices."""
  return jax.tree.map(
      lambda x: x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1), batch)


def each_micro_batch(batch: Any, k: int) -> List[Any]:
  """`micro_batches` as a list of `k` batches, for forwards that run them one by one."""
  stacked = micro_batches(batch, k)
  return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(k)]


def to_global(batch: Dict[str, np.ndarray], mesh: Mesh) -> Dict[str, jax.Array]:
  """Assembles process-local numpy batches into global arrays sharded along 'data'."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def prefetch_to_mesh(batches: Iterator[Dict[str, np.ndarray]], mesh: Mesh,
                     size: int) -> Iterator[Dict[str, jax.Array]]:
  """Global arrays of `batches`, `size` of them already on their way to the devices.

  Transfers are asynchronous, so while the step runs on batch k the copies of batches k+1..k+size
  proceed (flax's prefetch_to_device, for a sharded mesh). size 0 transfers on demand.
  """
  queue = collections.deque()

  def fill(count: int) -> None:
    for batch in itertools.islice(batches, count):
      queue.append(to_global(batch, mesh))

  fill(size + 1)
  while queue:
    yield queue.popleft()
    fill(1)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree of host values on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


# What jax.monitoring calls the end of an XLA compilation (jax/_src/dispatch.py).
BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
# XLA_FLAGS of each `config.xla_cpu_scheduler`, set by main.py and the bench. XLA's CPU backend
# reads the scheduler choice only from XLA_FLAGS (a per-jit compiler option is accepted but
# ignored), and XLA's concurrency-optimised scheduler is its default.
CPU_SCHEDULER_FLAGS = {
    'concurrency': {},
    'memory': {'xla_cpu_enable_concurrency_optimized_scheduler': 'false'},
}
# XLA_FLAGS of each `config.xla_cpu_convolutions`: jax 0.10's XLA hands convolutions to YNNPACK
# by default; taking them out of its fusions leaves them to XLA's Eigen convolution kernels.
YNN_FUSION_TYPE = 'xla_cpu_experimental_ynn_fusion_type'
YNN_CONVOLUTION_FUSION = 'individual_convolution'
CPU_CONVOLUTION_FLAGS = {
    'ynnpack': {},
    'eigen': {YNN_FUSION_TYPE: '-' + YNN_CONVOLUTION_FUSION},
}

# XLA_FLAGS of `config.xla_cpu_unroll_loops`: whether LLVM unrolls the loops of XLA's CPU kernels.
# An option of XLA's CPU backend that only XLA_FLAGS reaches (not a per-jit compiler option).
BACKEND_OPTIONS = 'xla_backend_extra_options'
CPU_LOOP_UNROLLING_FLAGS = {
    True: {},
    False: {BACKEND_OPTIONS: 'xla_cpu_disable_loop_unrolling'},
}


def set_cpu_xla_flags(scheduler: str, convolutions: str, unroll_loops: bool) -> str:
  """Adds the flags of `scheduler`, `convolutions` and `unroll_loops` (config.xla_cpu_scheduler,
  config.xla_cpu_convolutions, config.xla_cpu_unroll_loops) to XLA_FLAGS, except those the
  environment sets itself; returns the result. Call before JAX starts a backend (XLA reads its
  flags once). The backend's extra options are a list: ours join the user's own."""
  flags = os.environ.get('XLA_FLAGS', '')
  for field, value, choices in (('xla_cpu_scheduler', scheduler, CPU_SCHEDULER_FLAGS),
                                ('xla_cpu_convolutions', convolutions, CPU_CONVOLUTION_FLAGS),
                                ('xla_cpu_unroll_loops', unroll_loops, CPU_LOOP_UNROLLING_FLAGS)):
    if value not in choices:
      raise errors.ConfigError(f'config.{field} must be one of {sorted(choices)}, got {value!r}.')
    for name, flag_value in choices[value].items():
      users = re.search(rf'--{name}=(\S*)', flags)
      if users is None:
        flags = f'{flags} --{name}={flag_value}'.strip()
      elif name == BACKEND_OPTIONS and flag_value not in users.group(1).split(','):
        flags = (flags[:users.end(1)] + (',' if users.group(1) else '') + flag_value
                 + flags[users.end(1):])
  os.environ['XLA_FLAGS'] = flags
  return flags


def cpu_convolutions_are_eigens() -> bool:
  """Whether XLA's CPU backend runs convolutions with its Eigen kernels rather than YNNPACK's,
  as XLA_FLAGS tells it (XLA reads them once, when the backend starts): YNNPACK's fusion types
  edited with '-'/'+' items, or overwritten by a list without the convolutions."""
  flags = os.environ.get('XLA_FLAGS', '')
  prefix = f'--{YNN_FUSION_TYPE}='
  if prefix not in flags:
    return False  # XLA's default list, which holds the convolutions
  value = (flags.rpartition(prefix)[2].split() or [''])[0].strip('"\'').lower()
  items = [item for item in value.split(',') if item]
  if items and all(item[0] in '+-' for item in items):
    return '-' + YNN_CONVOLUTION_FUSION in items
  return YNN_CONVOLUTION_FUSION not in items


@functools.cache
def trim_host_memory_after_compiles() -> None:
  """After every XLA compilation in this process, hands the compiler's freed host memory back to
  the kernel (data/host_malloc.py `trim`). Without it, SaliNet's K400 train step (batch 2 x 8 x
  224^2, CPU) peaks at about 5.0 GiB of RSS; with it, 3.8 GiB. Registered once."""
  jax.monitoring.register_event_duration_secs_listener(_trim_after_compile)


def _trim_after_compile(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == BACKEND_COMPILE_EVENT:
    host_malloc.trim()


def enable_compilation_cache(directory: str) -> str:
  """Points JAX's persistent compilation cache at `directory` (user paths expanded) and returns
  the folder in use: JAX_COMPILATION_CACHE_DIR when the environment sets it (JAX reads it
  itself), '' when both are empty (off). Call before the first compilation."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  if not directory:
    return ''
  directory = os.path.expanduser(directory)
  jax.config.update('jax_compilation_cache_dir', directory)
  return directory


def start_backend() -> None:
  """Starts JAX's backend; where JAX_PLATFORMS names one this machine cannot start, a UserError
  naming it (JAX raises a RuntimeError, or for 'cuda' without CUDA a bare AssertionError). So is
  a process of several that did not join through jax.distributed (optional on TPU pods), which
  the run would take for a single process in places."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  try:
    jax.devices()
  except (RuntimeError, AssertionError) as e:
    if not platforms:
      raise
    raise errors.UserError(f'JAX_PLATFORMS={platforms} names a backend this machine cannot start'
                           + (f' ({e})' if str(e) else '') + ': unset it to use what there is.'
                           ) from None
  refuse_an_unjoined_group()


def refuse_an_unjoined_group() -> None:
  """Refuses a process that JAX runs as one of several without jax.distributed (optional on TPU
  pods): the run would take it for a single process where it asks jax.distributed."""
  if jax.process_count() > 1 and not jax.distributed.is_initialized():
    raise errors.UserError(
        f'JAX runs this process as one of {jax.process_count()} (a TPU pod), not joined through '
        'jax.distributed: a SIGTERM would stop every process without saving, and each would '
        "write JAX's compilation cache as process 0. Set SALINET_JAX_DISTRIBUTED=1 on every host "
        'to train or evaluate (JAX detects the pod and joins it); predict, features, export and '
        'weight conversion run in one process, not on a pod.')


# How the runtime reports, on a process of a group, that the others did not answer in a
# collective (one stopped, or is stuck) or left it (Gloo's connection to one closed or reset).
LOST_THE_GROUP = re.compile(r'heartbeat timeout|Barrier failed|Gloo context initialization '
                            r'failed|collective mismatch|'
                            r'Gloo [\w-]+ failed.*Connection (?:closed|reset) by peer')


def in_a_group() -> bool:
  """Whether this process is one of several joined through `jax.distributed` (a group of one,
  or a process that never joined, is not; JAX's backend is started only where it joined)."""
  if not jax.distributed.is_initialized():
    return False
  try:
    return jax.process_count() > 1
  except RuntimeError:  # the backend failed to start after joining: still a group's process
    return True


def check_preemption_service() -> None:
  """Refuses training in a group that joined jax.distributed without JAX's preemption service:
  the loop asks it after every step where every process stops (train.PreemptionWatcher), and
  without it JAX would raise a RuntimeError there, after the first step."""
  refuse_an_unjoined_group()
  if not in_a_group():
    return
  if not preemption_service_runs():
    raise errors.ConfigError(
        f'This process is one of {jax.process_count()} joined through jax.distributed without '
        "JAX's preemption service, which training needs to stop every process at the same step "
        'on a SIGTERM: join with salinet_jax.parallel.initialize_distributed() (main.py does), '
        "or set jax.config.update('jax_enable_preemption_service', True) before "
        'jax.distributed.initialize().')


def preemption_service_runs() -> bool:
  """Whether this process joined jax.distributed with JAX's preemption service, whose handler,
  set in C, takes SIGTERM (a group of one too: SALINET_JAX_DISTRIBUTED=1 on a one-task job)."""
  if not jax.distributed.is_initialized():
    return False
  # Private: JAX has no public way to ask whether the service runs.
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.preemption_sync_manager is not None


def _this_process() -> str:
  try:
    return f'process {jax.process_index()} of {jax.process_count()}'
  except RuntimeError:  # the backend failed to start
    return 'this process'


def ending_line(error: BaseException) -> Optional[str]:
  """The line after the traceback of `error` where it ends a process of a group, None elsewhere.

  A collective's failure that says the others are gone or stuck is named as such; any other
  error ends this process alone, and the others at their next collective. The pattern is matched
  before anything asks for the process count: a plain ValueError (a config file's) must not
  start JAX's backend."""
  lost = (isinstance(error, (jax.errors.JaxRuntimeError, ValueError))
          and LOST_THE_GROUP.search(str(error)))
  if lost and jax.process_count() > 1:
    return (f'{_this_process()} lost the other processes of its group in a collective '
            f'({str(error).splitlines()[0][:300]}): one of them stopped or is stuck: its own '
            'output (process 0 writes log.txt) says why, or ends without a word where it was '
            'killed (out of memory, a scheduler).')
  if not in_a_group():
    return None
  return (f'{_this_process()} stopped at this {type(error).__name__}: the other processes of its '
          'group end at their next collective; if one of them stopped first, its output says '
          'why.')


# The environment of an explicitly configured multi-process run.
_JOIN_VARIABLES = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


def refuse_a_process_group(command: str) -> None:
  """A one-process command (export, weight conversion) started by a multi-process launcher, the
  join variables of `initialize_distributed` set, would run whole in every process, each writing
  the same files: refused in one line."""
  count = os.environ.get('JAX_NUM_PROCESSES', '1')
  if os.environ.get('SALINET_JAX_DISTRIBUTED') != '1' and (not count.isdigit() or int(count) < 2):
    return
  started = (f"process {os.environ.get('JAX_PROCESS_ID', '?')} of {count}"
             if os.environ.get('JAX_COORDINATOR_ADDRESS') else 'one process of a cluster')
  raise errors.ConfigError(f'{command} runs in one process (this one was started as {started}, '
                           'and each would write the same files): start it without '
                           'JAX_COORDINATOR_ADDRESS / SALINET_JAX_DISTRIBUTED.')


def initialize_distributed(preemption: bool = True) -> None:
  """Joins a multi-process run through `jax.distributed` when the environment asks for one.

  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID select it explicitly; on TPU
  pods and SLURM, JAX detects the cluster itself when SALINET_JAX_DISTRIBUTED=1. With
  `preemption`, JAX's preemption service takes SIGTERM, for the training loop to stop every
  process at one step; without it (eval: nothing to save), a SIGTERM ends its process as it
  ends a single one, and the others stop on the lost collective, where the service kept them
  running to the end without a word.
  """
  given = [name for name in _JOIN_VARIABLES if os.environ.get(name)]
  if given and len(given) < len(_JOIN_VARIABLES):
    # Part of the set ran one process alone (or failed on a bare KeyError).
    raise errors.ConfigError(
        f'{", ".join(given)} set without {", ".join(n for n in _JOIN_VARIABLES if n not in given)}'
        ': a multi-process run configured by hand needs all three'
        + ('' if os.environ.get('SALINET_JAX_DISTRIBUTED') == '1' else
           ' (or SALINET_JAX_DISTRIBUTED=1 where JAX detects the cluster)') + '.')
  detect = os.environ.get('SALINET_JAX_DISTRIBUTED', '0')
  if detect not in ('0', '1'):
    raise errors.ConfigError(f'SALINET_JAX_DISTRIBUTED must be 1 (join the cluster JAX detects) or '
                             f'0, got {detect!r}.')
  address = os.environ.get('JAX_COORDINATOR_ADDRESS')
  if (address or os.environ.get('SALINET_JAX_DISTRIBUTED') == '1') and \
      os.environ.get('JAX_PLATFORMS', '') == 'cpu':
    # CPU-only multi-process runs (tests, CPU clusters) need a CPU collectives backend.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.config.update('jax_enable_preemption_service', preemption)
  with data_errors.ctrl_c_ends_this_wait():  # the join waits for every process, in C code
    if address:
      jax.distributed.initialize(
          coordinator_address=address,
          num_processes=int(os.environ['JAX_NUM_PROCESSES']),
          process_id=int(os.environ['JAX_PROCESS_ID']))
    elif os.environ.get('SALINET_JAX_DISTRIBUTED') == '1':
      jax.distributed.initialize()
