"""glibc malloc settings for this project's processes, and handing freed memory back.

Every train clip reads its whole video record (megabytes of JPEGs) into fresh buffers. glibc
serves blocks above a dynamic threshold with a new mmap and unmaps them on free, so each record's
pages are faulted in and zeroed by the kernel again: about a tenth of the pipeline's CPU time on
the fight_surv records (python -m data.bench). Keeping blocks up to `mmap_threshold_mib` in the
heap lets the pipeline reuse those pages. Process-wide, set once; a no-op off glibc.

XLA's CPU backend allocates each step's temporaries as one block (0.85 GiB for R3D-18's train
step, 2.6 GiB for SaliNet's), which glibc maps afresh every step: 217,000 page faults and 0.7 s
of kernel time per R3D-18 step. `restart_with_huge_pages` has glibc ask for transparent huge
pages on such blocks instead.
"""

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Dict, Mapping, Optional

from absl import logging

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


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


@functools.cache
def keep_buffers_in_heap(mmap_threshold_mib: int) -> bool:
  """Serves blocks up to `mmap_threshold_mib` MiB from the heap (0: glibc defaults).

  The heap's free top is returned to the kernel only beyond twice that size. Returns whether
  the settings are in effect.
  """
  if mmap_threshold_mib <= 0:
    return False
  libc = _libc()
  if libc is None:
    logging.info('No glibc mallopt here: malloc settings left as they are.')
    return False
  mallopt = libc.mallopt
  threshold = mmap_threshold_mib << 20
  applied = bool(mallopt(_M_MMAP_THRESHOLD, threshold) and
                 mallopt(_M_TRIM_THRESHOLD, 2 * threshold))
  if not applied:
    logging.warning('glibc refused mallopt(M_MMAP_THRESHOLD=%d MiB): malloc settings unchanged.',
                    mmap_threshold_mib)
  return applied


HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'


def glibc_version() -> Optional[tuple]:
  """(major, minor) of the C library when it is glibc, else None."""
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()
  except (ValueError, OSError, AttributeError):
    return None
  return tuple(int(x) for x in version.split('.')[:2]) if name == 'glibc' else None


def transparent_huge_pages_mode(path: str = THP_MODE_FILE) -> Optional[str]:
  """The kernel's transparent huge page mode ('always' | 'madvise' | 'never'), None if unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  chosen = [word[1:-1] for word in text.split() if word.startswith('[')]
  return chosen[0] if chosen else None


def huge_pages_environment(environ: Mapping[str, str], libc_version: Optional[tuple],
                           thp_mode: Optional[str]) -> Optional[Dict[str, str]]:
  """`environ` with glibc's `glibc.malloc.hugetlb=1` tunable added to GLIBC_TUNABLES, or None
  when a restart would change nothing: glibc older than 2.35 (no such tunable) or absent,
  huge pages off ('never') or unknown, or GLIBC_TUNABLES already setting the tunable (set it
  to 0 there to opt out)."""
  tunables = environ.get('GLIBC_TUNABLES', '')
  if (libc_version is None or libc_version < (2, 35) or thp_mode not in ('always', 'madvise') or
      HUGE_PAGES_TUNABLE + '=' in tunables):
    return None
  env = dict(environ)
  env['GLIBC_TUNABLES'] = ':'.join(t for t in (tunables, HUGE_PAGES_TUNABLE + '=1') if t)
  return env


def restart_with_huge_pages() -> None:
  """Runs this command again (same interpreter and arguments) with glibc asking for transparent
  huge pages on the blocks it maps, where that changes something (`huge_pages_environment`):
  glibc reads its tunables only when a process starts. R3D-18's CPU train step: 1.3-1.7 s ->
  1.0-1.2 s, page faults 217,000 -> about 1,000 per step. Call it first thing in a command's
  entry point, never from a library function (it replaces the process)."""
  env = huge_pages_environment(os.environ, glibc_version(), transparent_huge_pages_mode())
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
