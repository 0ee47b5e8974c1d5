"""A console a person can read: short time-stamped lines, no library chatter, a copy in the workdir.

`setup()` (main.py calls it once, and `quiet_libraries()`, its first half, before JAX's backend
starts) gives absl's handler a compact `HH:MM:SS message` format
(warnings and errors say so), hides INFO lines of libraries that speak for themselves (orbax,
JAX's backend probing, clu's work-unit notes, TensorFlow Datasets) and keeps processes other than
0 to warnings. `log_to_file(workdir)` sends the same lines to `<workdir>/log.txt`, starting with
those logged since `setup()`.
"""

import contextlib
import logging as std_logging
import os
import sys
from typing import Any, Iterable, Iterator, Optional, TextIO

import jax
from absl import logging

from data import errors as data_errors

LOG_FILE = 'log.txt'
# Loggers whose INFO lines only repeat what the project logs itself, or that no user can act on.
_QUIET_LOGGERS = ('jax._src.xla_bridge', 'jax._src.distributed', 'tensorflow',
                  'orbax', 'absl.flags')
_NOISE = ('Setting work unit notes',  # clu's ReportProgress: the project's own line has it
          'Created artifact',  # clu's Profile ('value None'): the project says where traces go
          'Unable to initialize backend')
# Orbax warnings a user cannot act on: a read-only manager (eval), a best-metric policy before
# the first evaluation has given it a metric.
_ORBAX_NOISE = ('Given directory is read only', 'read_only=True', 'tracked_metric', 'metrics')


class _Format(std_logging.Formatter):
  def format(self, record: std_logging.LogRecord) -> str:
    stamp = self.formatTime(record, '%H:%M:%S')
    level = '' if record.levelno < std_logging.WARNING else f'{record.levelname.lower()}: '
    text = f'{stamp} {level}{record.getMessage()}'
    # Library threads (orbax's background save) log the traceback of an error the project
    # reports itself in one line; keep their first line only.
    if record.exc_info and '/orbax/' not in record.pathname:
      text += '\n' + self.formatException(record.exc_info)
    return text


class _DropNoise(std_logging.Filter):
  """Drops library INFO lines (orbax logs dozens per save, TensorFlow's SavedModel writer a
  few per export through absl) and the noise listed above."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    message = record.getMessage()
    if '/orbax/' in record.pathname:
      return (record.levelno >= std_logging.WARNING
              and not any(noise in message for noise in _ORBAX_NOISE))
    if record.levelno >= std_logging.WARNING:
      return True
    if record.name.startswith(_QUIET_LOGGERS) or '/tensorflow/' in record.pathname:
      return False
    return not any(noise in message for noise in _NOISE)


class _DropReportedLibraryErrors(std_logging.Filter):
  """Console only: orbax's own error lines (a failed save logs three or four from its threads)
  and clu's traceback of a failed TensorBoard write repeat what the project reports in one line
  (salinet_jax/train.py's event files); log.txt keeps them for diagnosis."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (record.levelno >= std_logging.ERROR
                and ('/orbax/' in record.pathname or record.pathname.endswith('/clu/asynclib.py')))


_FILTERS = (_DropNoise(),)
_CONSOLE_FILTERS = _FILTERS + (_DropReportedLibraryErrors(),)
_file_handler: Optional[std_logging.Handler] = None
_unwritable_logs = set()  # log.txt paths that could not be opened (said once already)


class _EarlyLines(std_logging.Handler):
  """The lines logged between `setup()` and the first log file (the process and device line,
  the compilation cache), which log.txt then starts with."""

  LIMIT = 200

  def __init__(self):
    super().__init__()
    self.records = []

  def emit(self, record: std_logging.LogRecord) -> None:
    if len(self.records) < self.LIMIT:
      self.records.append(record)


_early_lines: Optional[_EarlyLines] = None


def quiet_libraries() -> None:
  """Formats and filters the absl console handler without starting JAX: main.py calls it before
  the backend starts, so that JAX's probing of backends this machine lacks stays off the console
  (idempotent; `setup` calls it too)."""
  handler = logging.get_absl_handler()
  handler.python_handler.setFormatter(_Format())
  for log_filter in _CONSOLE_FILTERS:
    if log_filter not in handler.filters:
      handler.addFilter(log_filter)
  for name in _QUIET_LOGGERS:
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def setup() -> None:
  """The console of this process (idempotent): `quiet_libraries`, then INFO lines on process 0
  only, and the early lines kept for log.txt. Starts JAX's backend if nothing has."""
  quiet_libraries()
  logging.set_verbosity(logging.INFO if jax.process_index() == 0 else logging.WARNING)
  global _early_lines
  if _early_lines is None and _file_handler is None and jax.process_index() == 0:
    _early_lines = _EarlyLines()
    for log_filter in _FILTERS:
      _early_lines.addFilter(log_filter)
    logging.get_absl_logger().addHandler(_early_lines)


class _LogFile(std_logging.FileHandler):
  """log.txt: a mirror of the console. Writing it must never hide the error that ends a run (a
  full disk fails the checkpoint first), so a write failure is reported once in one line and
  the mirror stops; the console keeps every line."""

  failed = False

  def __init__(self, path: str):
    super().__init__(path, delay=True)
    try:  # a directory or a link into a folder that is gone: said like a failed write
      self.stream = self._open()
    except OSError:
      self.handleError(None)

  def handleError(self, record) -> None:
    if not self.failed:
      self.failed = True
      error = sys.exc_info()[1]
      print(f'Cannot write {self.baseFilename} ({error}): the console keeps logging, the file '
            'stops here.', file=sys.stderr)

  def emit(self, record) -> None:
    if not self.failed:
      super().emit(record)

  def close(self) -> None:
    try:
      super().close()
    except OSError:
      pass


def _log_file(path: str) -> _LogFile:
  """A log.txt handler: the console's format and filters."""
  handler = _LogFile(path)
  handler.setFormatter(_Format())
  for log_filter in _FILTERS:
    handler.addFilter(log_filter)
  return handler


def log_to_file(workdir: str) -> Optional[str]:
  """Also writes every console line of this process to `<workdir>/log.txt` (appending); returns
  its path, or None where it cannot be opened (said in one line)."""
  global _file_handler
  close_log_file()
  path = os.path.join(os.path.abspath(workdir), LOG_FILE)
  if jax.process_index() != 0:
    return path
  _file_handler = _log_file(path)
  data_errors.run_if_a_sigterm_ends(_sigterm_line_to_log_file)
  global _early_lines
  if _early_lines is not None:
    logging.get_absl_logger().removeHandler(_early_lines)
    for record in _early_lines.records:
      _file_handler.handle(record)
    _early_lines = None
  logging.get_absl_logger().addHandler(_file_handler)
  if _file_handler.failed:
    _unwritable_logs.add(path)
    return None
  return path


def line_after_run(workdir: str, text: str, warning: bool = False) -> None:
  """Prints `text` (main.py's closing summary), or logs it as a `warning` (why the run stopped
  unfinished), and appends it to the workdir's log.txt, which the run has closed by then, so
  that log.txt ends as the console does."""
  if warning:
    logging.warning('%s', text)
  else:
    print(text)
  path = os.path.join(os.path.abspath(workdir), LOG_FILE)
  if jax.process_index() != 0 or not os.path.isfile(path) or path in _unwritable_logs:
    return  # the run said why there is none
  handler = _log_file(path)
  handler.handle(logging.get_absl_logger().makeRecord(
      'absl', std_logging.WARNING if warning else std_logging.INFO, __file__, 0, text, None,
      None))
  handler.close()


@contextlib.contextmanager
def progress_bar(iterable: Optional[Iterable[Any]] = None, **options) -> Iterator[Any]:
  """A tqdm bar over `iterable` (tqdm's `options`), on stderr, closed as the block ends however
  it ends: left to the garbage collector after a Ctrl-C, tqdm drew it again below the Ctrl-C's
  line, which came glued to the bar's end. Log lines go above the bar while it lasts."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  with _progress_bar_stream() as stream, tqdm(iterable, file=stream, **options) as bar:
    yield bar


@contextlib.contextmanager
def _progress_bar_stream() -> Iterator[TextIO]:
  """The stream to draw a tqdm bar on (stderr), with the console's lines written above the bar
  while it lasts (tqdm.contrib's DummyTqdmFile): written as they come, they were glued to the
  end of the bar's text; a SIGTERM's line, which the guard writes itself, goes below it. Inside
  another such bar, the same stream."""
  from tqdm.contrib import DummyTqdmFile  # pylint: disable=g-import-not-at-top
  if isinstance(sys.stderr, DummyTqdmFile):
    yield sys.stderr._wrapped  # pylint: disable=protected-access
    return
  stderr, handler = sys.stderr, logging.get_absl_handler().python_handler
  above, previous = DummyTqdmFile(stderr), handler.stream

  def end_the_bar_line() -> None:  # the bar's line has no newline: a SIGTERM's line goes below
    stderr.write('\n')
    stderr.flush()

  sys.stderr = above
  if previous is stderr:
    handler.stream = above
  data_errors.run_if_a_sigterm_ends(end_the_bar_line)
  try:
    yield stderr
  finally:
    data_errors.no_longer_if_a_sigterm_ends(end_the_bar_line)
    sys.stderr = stderr
    if handler.stream is above:
      handler.stream = previous


def error_to_log_file(message: str) -> None:
  """Writes `message` as an error line to log.txt alone: the command line prints the error that
  ends a run on the console itself (salinet_jax/cli.py), and log.txt should end with it too."""
  _to_log_file(message, std_logging.ERROR)


def _to_log_file(message: str, level: int) -> None:
  if _file_handler is not None:
    _file_handler.handle(logging.get_absl_logger().makeRecord(
        'absl', level, __file__, 0, message, None, None))


def _sigterm_line_to_log_file() -> None:
  """log.txt ends as the console does where a SIGTERM ends the process (main.py's guard)."""
  _to_log_file(data_errors.SIGTERM_LINE, std_logging.INFO)


def close_log_file() -> None:
  global _file_handler
  data_errors.no_longer_if_a_sigterm_ends(_sigterm_line_to_log_file)
  if _file_handler is not None:
    logging.get_absl_logger().removeHandler(_file_handler)
    _file_handler.close()
    _file_handler = None
