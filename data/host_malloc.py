"""glibc malloc settings for the input pipeline's host process.

Every train clip reads its whole video record (megabytes of JPEGs) into fresh buffers. glibc
serves blocks above a dynamic threshold with a new mmap and unmaps them on free, so each record's
pages are faulted in and zeroed by the kernel again: about a tenth of the pipeline's CPU time on
the fight_surv records (python -m data.bench). Keeping blocks up to `mmap_threshold_mib` in the
heap lets the pipeline reuse those pages. Process-wide, set once; a no-op off glibc.
"""

import ctypes
import ctypes.util
import functools

from absl import logging

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_buffers_in_heap(mmap_threshold_mib: int) -> bool:
  """Serves blocks up to `mmap_threshold_mib` MiB from the heap (0: glibc defaults).

  The heap's free top is returned to the kernel only beyond twice that size. Returns whether
  the settings are in effect.
  """
  if mmap_threshold_mib <= 0:
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    logging.info('No glibc mallopt here: malloc settings left as they are.')
    return False
  threshold = mmap_threshold_mib << 20
  applied = bool(mallopt(_M_MMAP_THRESHOLD, threshold) and
                 mallopt(_M_TRIM_THRESHOLD, 2 * threshold))
  if not applied:
    logging.warning('glibc refused mallopt(M_MMAP_THRESHOLD=%d MiB): malloc settings unchanged.',
                    mmap_threshold_mib)
  return applied
