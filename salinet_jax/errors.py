"""Errors a user can fix, reported as one line (plus a hint) instead of a traceback.

`main.py` prints a `UserError` (and the input side's `data.errors.DataError`) as
`error: <message>` and exits with status 1; any other exception keeps its full traceback,
because it is a bug to report, not an input to correct. A full disk is said the same way
(`writing`): it is not a bug either.
"""

import contextlib
import errno
from typing import Iterator, Optional

# The OS errors of a write refused for space: a full disk, an exceeded quota.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
  """Bad input or a state of the workdir the user can correct; the message says how."""

  # Whether the failure can leave library threads waiting forever (a failed checkpoint save):
  # the command line then ends the process without waiting for them.
  leaves_threads_hanging = False


class ConfigError(UserError, ValueError):
  """A config value that cannot work (batch not divisible by devices, unknown dtype, ...)."""


class ConversionError(UserError, ValueError):
  """A checkpoint that cannot be converted as asked: missing, unreadable, unsafe to unpickle, for
  another model than the config builds, or PyTorch missing to read it."""


class Interrupted(KeyboardInterrupt):
  """A Ctrl-C that ended a command before it finished, carrying what the user should know
  (what was saved, where the traceback of where it stopped went)."""


class NoSpaceError(UserError):
  """A write a full disk (or an exceeded quota) refused."""

  @classmethod
  def of(cls, path: Optional[str], error: OSError) -> 'NoSpaceError':
    written = f'Cannot write {path}' if path else 'A write failed'
    return cls(f'{written}: {error.strerror} (what it holds may be incomplete). Free some space, '
               'or write to another --workdir or --output_dir, and run the command again.')


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
  """Inside it, a write refused for space raises NoSpaceError naming `path` (Python's own error
  names no file when the refused write is the flush at a file's close)."""
  try:
    yield
  except OSError as e:
    if e.errno not in NO_SPACE:
      raise
    raise NoSpaceError.of(path, e) from e
