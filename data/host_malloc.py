"""glibc malloc settings for the input pipeline's host process, handing freed memory back, and
the process's peak resident memory (what the benchmarks report).

Every train clip reads its whole video record (megabytes of JPEGs) into fresh buffers. glibc
serves blocks above a dynamic threshold with a new mmap and unmaps them on free, so each record's
pages are faulted in and zeroed by the kernel again: about a tenth of the pipeline's CPU time on
the fight_surv records (python -m data.bench). Keeping blocks up to `mmap_threshold_mib` in the
heap lets the pipeline reuse those pages. Process-wide, set once (by the input pipeline, or
earlier by a restore of eval, predict or export); a no-op off glibc. A checkpoint's reads are
made with glibc's initial thresholds instead (`frees_handed_back`).
"""

import contextlib
import ctypes
import ctypes.util
import functools
import resource

from absl import logging

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_THRESHOLDS = 128 << 10  # glibc's initial M_MMAP_THRESHOLD and M_TRIM_THRESHOLD


@functools.cache
def _libc():
  """glibc, or None where there is none (then every function here is a no-op)."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  except OSError:
    return None
  return libc if hasattr(libc, 'mallopt') and hasattr(libc, 'malloc_trim') else None


def trim() -> bool:
  """Returns the heap's free pages to the kernel (glibc's malloc_trim(0)); whether any were.

  glibc keeps what a process frees in its heaps, and large blocks (an XLA executable's temporary
  buffer) are new mmaps that cannot reuse it: after XLA compiles a big step, over a GiB of the
  compiler's freed memory stays resident under the step's own.
  """
  libc = _libc()
  return bool(libc.malloc_trim(0)) if libc is not None else False


@contextlib.contextmanager
def frees_handed_back():
  """Within it, blocks above glibc's initial 128 KiB are mapped on their own (unmapped when
  freed) and heaps shrink beyond that; afterwards `keep_buffers_in_heap`'s settings return. A
  no-op unless they are in effect.

  For reads other threads make (TensorStore's, restoring a checkpoint): with blocks up to 32 MiB
  kept in their heaps, restoring 58 MiB of variables left 154-188 MiB resident, and freeing them
  kept 90-118 MiB that `trim` did not hand back; within it, 93-98 and 24. Fixed thresholds are
  not glibc's adaptive ones, and a block that free heap space can hold still comes from there.
  """
  libc = _libc()
  if libc is None or _thresholds_in_effect is None:
    yield
    return
  libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_THRESHOLDS)
  libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_THRESHOLDS)
  try:
    yield
  finally:
    _set_thresholds(libc, *_thresholds_in_effect)


# The (mmap_threshold_mib, trim_threshold_mib) keep_buffers_in_heap put in effect (None: none).
_thresholds_in_effect = None


def _set_thresholds(libc, mmap_threshold_mib: int, trim_threshold_mib: int) -> bool:
  return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold_mib << 20) and
              libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold_mib << 20))


def keep_buffers_in_heap(mmap_threshold_mib: int, trim_threshold_mib: int) -> bool:
  """Serves blocks up to `mmap_threshold_mib` MiB from the heap (0: glibc defaults), and hands a
  heap's free top back to the kernel beyond `trim_threshold_mib` MiB.

  Every thread that allocates gets a heap of its own (glibc's arenas: up to 8 per core), so
  what the trim threshold keeps is kept per heap. Measured on 2 cores with the 32 MiB mmap
  threshold (2026-12-05), trim threshold: SaliNet K400's eval step at batch 1, peak RSS; the
  fight_surv train pipeline (python -m data.bench), clips/s and peak RSS:
    64 (twice the mmap threshold, as before): 889-900 MiB; 409-430 clips/s, 958-975 MiB
    32: 872-881 MiB; 406-408 clips/s, 939 MiB
    16: -; 374-389 clips/s, 914-918 MiB
     8: 838-842 MiB; 369-390 clips/s, 854-865 MiB
  Returns whether the settings are in effect.
  """
  global _thresholds_in_effect
  if mmap_threshold_mib <= 0:
    return False
  if _thresholds_in_effect == (mmap_threshold_mib, trim_threshold_mib):
    return True
  libc = _libc()
  if libc is None:
    logging.info('No glibc mallopt here: malloc settings left as they are.')
    return False
  applied = _set_thresholds(libc, mmap_threshold_mib, trim_threshold_mib)
  if not applied:
    logging.warning('glibc refused mallopt(M_MMAP_THRESHOLD=%d MiB, M_TRIM_THRESHOLD=%d MiB): '
                    'malloc settings unchanged.', mmap_threshold_mib, trim_threshold_mib)
  else:
    _thresholds_in_effect = (mmap_threshold_mib, trim_threshold_mib)
  return applied


def apply_settings(data) -> bool:
  """`keep_buffers_in_heap` with the thresholds of `data` (config.data); whether in effect."""
  return keep_buffers_in_heap(data.malloc_mmap_threshold_mib, data.malloc_trim_threshold_mib)


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far: Linux's VmHWM. Not ru_maxrss, which in a
  child process starts at its parent's peak (it survives the exec), so a small child of a large
  process would report that process's memory; ru_maxrss only where /proc is missing."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
  """Restarts this process's VmHWM from its current RSS (Linux's /proc/self/clear_refs, value 5),
  so a later `peak_rss_mib` is the peak of what ran since; False where that is unavailable. The
  benchmark uses it to tell the compiler's transient peak from the step's own."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False
