"""Errors a user can fix, reported as one line (plus a hint) instead of a traceback.

`main.py` prints a `UserError` (and the input side's `data.errors.DataError`) as
`error: <message>` and exits with status 1; any other exception keeps its full traceback,
because it is a bug to report, not an input to correct.
"""

import contextlib
from typing import Callable, Iterator


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


class StopRequested(Exception):
  """A SIGTERM or Ctrl-C that ended an evaluation inside training before its last batch: the
  loop saves the step without the evaluation and stops (train.PreemptionWatcher)."""


class Interrupted(KeyboardInterrupt):
  """A Ctrl-C that ended a command before it finished, carrying what the user should know
  (what was saved, where the traceback of where it stopped went)."""


def no_space_line(error: BaseException) -> str:
  """The line a write refused for space (data.errors.NoSpace) ends a command with."""
  return f'{error}. Free some space, or write elsewhere, and run the command again.'


@contextlib.contextmanager
def out_of_device_memory_told(advice: Callable[[BaseException], str]) -> Iterator[None]:
  """Inside it, XLA saying that the device ran out of memory raises a MemoryError whose message
  is `advice(error)` (what held the memory, what to change: XLA's own names neither); other
  errors pass unchanged."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e) and 'Out of memory' not in str(e):
      raise
    raise MemoryError(advice(e)) from e
