"""Errors in the input data a user can fix (missing records, corrupt shards, bad videos), and
`writing`, which names the file of a write a full disk refused.

Kept apart from `salinet_jax.errors` because `data/` never imports the model package; the
command line reports both kinds, and a full disk, as one line without a traceback.
"""

import contextlib
import errno
import os
from typing import Iterator

# The OS errors of a write refused for space (a full disk, an exceeded quota), which every
# command reports in one line: not a bug, and nothing the traceback would help with.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
  """Inside it, a write refused for space raises an OSError of that errno naming `path`, for the
  command line to name: Python's own names no file when the refused write is the flush at a
  file's close, and TensorFlow's writers raise a ResourceExhaustedError ('PATH; REASON')."""
  try:
    yield
  except OSError as e:
    if e.errno not in NO_SPACE or e.filename:
      raise
    raise OSError(e.errno, e.strerror, path) from e
  except Exception as e:  # pylint: disable=broad-except
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    reasons = {os.strerror(code): code for code in NO_SPACE}
    first_line = (e.message.strip().splitlines() or [''])[0] if hasattr(e, 'message') else ''
    reason = first_line.rpartition('; ')[2]
    if not isinstance(e, tf.errors.ResourceExhaustedError) or reason not in reasons:
      raise
    raise OSError(reasons[reason], reason, path) from e


class DataError(Exception):
  """Input data that cannot be read as asked; the message names the file, field or value."""


class SettingError(DataError, ValueError):
  """A `config.data` value the input pipeline cannot work with (the message names the field)."""
