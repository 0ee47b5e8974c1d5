"""Errors in the input data a user can fix (missing records, corrupt shards, bad videos),
`writing`, which names the file of a write a full disk refused, `replacing` and
`replacing_folder`, which write a whole file or folder so that a failed write loses nothing,
`unwritable`, which proves a folder can be written, the Ctrl-C handling every command shares,
the SIGTERM handling of the commands but training (`sigterm_in_one_line`) and of the converter
(`sigterm_raises`), and the converter's worker processes.

Kept apart from `salinet_jax.errors` because `data/` never imports the model package; the
command line reports both kinds, and a full disk, as one line without a traceback.
"""

import argparse
import atexit
import contextlib
import contextvars
import ctypes
import errno
import hashlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

# The OS errors of a write refused for space (a full disk, an exceeded quota), which every
# command reports in one line: not a bug, and nothing the traceback would help with.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# How TensorStore (orbax's writer) gives the OS error behind the text of its own errors.
OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
# A URL's scheme at the start of a path (gs://, s3://, https://).
_URL_SCHEME = re.compile(r'\s*([A-Za-z][A-Za-z0-9+.-]*)://')


class NoSpace(OSError):
  """A write refused for space, naming the file: what the command lines report in one line."""

  def __str__(self) -> str:
    return f'Cannot write {self.filename}: {self.strerror}; the command stopped there'


def refused_for_space(error: BaseException) -> Optional[OSError]:
  """The OSError of a write refused for space in `error` or what it was raised from: Python's,
  TensorFlow's ResourceExhaustedError ('PATH; REASON' on its first line), as an OSError
  naming that PATH, or TensorStore's (an os_error_code in its text); None for any other error.

  Only an explicit cause (`raise ... from`) is followed: an error raised while a refusal was
  being handled (a bug in a writer's close, say) is a bug of its own and keeps its traceback."""
  reasons = {os.strerror(code): code for code in NO_SPACE}
  tf = sys.modules.get('tensorflow')  # not loaded: no TensorFlow error to find
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in NO_SPACE:
      return error
    if tf is not None and isinstance(error, tf.errors.ResourceExhaustedError):
      first_line = (error.message.strip().splitlines() or [''])[0]
      first_line = re.sub(r'^\{\{.*?\}\}\s*|\s*\[Op:[^\]]*\](\s*name:.*)?$', '',
                          first_line)  # the graph function's or eager op's name
      path, _, reason = first_line.rpartition('; ')
      if reason in reasons:
        return OSError(reasons[reason], reason, path or None)
    code = (OS_ERROR_CODE.search(str(error))
            if str(error).startswith('RESOURCE_EXHAUSTED') else None)  # TensorStore's status
    if code and int(code.group(1)) in NO_SPACE:
      return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    error = error.__cause__
  return None


@contextlib.contextmanager
def writing(path: str, *partial: str) -> Iterator[None]:
  """Inside it, a write refused for space raises NoSpace naming `path` (Python's own error names
  no file when the refused write is the flush at a file's close; TensorFlow's is no OSError),
  after removing the `partial` files or folders being written: they would hold the space a
  re-run needs."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    refused = refused_for_space(e)
    if refused is None:
      raise
    for leftover in partial:
      if os.path.isdir(leftover):
        shutil.rmtree(leftover, ignore_errors=True)
      elif os.path.exists(leftover):
        os.remove(leftover)
    if isinstance(e, NoSpace):
      raise
    raise NoSpace(refused.errno, refused.strerror, path) from e


# The longest file name, in bytes, of the usual filesystems (ext4, XFS, btrfs, APFS).
NAME_MAX = 255
# What `replacing` appends to the name of the copy it writes first.
PARTIAL_SUFFIX = '.tmp'


def fitted_path(path: str, room: int) -> str:
  """`path` with its file name cut, where needed, so that `room` more bytes (the suffix the
  caller adds) and `replacing`'s PARTIAL_SUFFIX fit NAME_MAX; 8 hex digits of a hash of the
  whole name keep cut names apart ('a long title~1b2c3d4e'). Outputs named after a video (a
  downloader keeps titles up to the limit) failed with 'File name too long'."""
  folder, name = os.path.split(path)
  limit = NAME_MAX - room - len(PARTIAL_SUFFIX)
  encoded = name.encode('utf-8', 'surrogateescape')
  if len(encoded) <= limit:
    return path
  digest = hashlib.sha1(encoded).hexdigest()[:8]
  head = encoded[:limit - len(digest) - 1].decode('utf-8', 'ignore')
  return os.path.join(folder, f'{head}~{digest}')


@contextlib.contextmanager
def replacing(path: str, mode: str = 'w', **open_args: Any) -> Iterator[IO[Any]]:
  """The open file of a new copy of `path`, which replaces the old one only once it is whole: a
  full disk, a Ctrl-C or a bug while writing leaves an earlier run's copy as it was, and no
  half-written one (a write refused for space raises NoSpace naming `path`, as `writing`).

  Its folder is made if missing. A symlinked `path` keeps its link (the file it points to is
  replaced) and the replaced file's permissions carry over, as when it was written in place.
  """
  target = os.path.realpath(path)
  partial = target + PARTIAL_SUFFIX
  together = _REPLACED_TOGETHER.get()
  with writing(path):
    _UNFINISHED.add(partial)
    try:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with open(partial, mode, **open_args) as f:
        yield f
      if os.path.exists(target):
        shutil.copymode(target, partial)
      if together is None:
        os.replace(partial, target)
      elif (partial, target) not in together:  # written twice: its last copy
        together.append((partial, target))
    except BaseException:
      if os.path.exists(partial):
        os.remove(partial)
      raise
    finally:
      if together is None or (partial, target) not in together:  # else the block's to the end
        _UNFINISHED.discard(partial)


@contextlib.contextmanager
def replacing_folder(path: str) -> Iterator[str]:
  """A new empty folder beside `path`, to fill inside the block; once the block ends, it
  replaces `path` whole (no file of the earlier folder is left beside the new ones), or, inside
  `replacing_together`, with that block's files. An error, a full disk or a Ctrl-C before then
  leaves the earlier folder as it was, and removes the new one; so does a block that leaves the
  new folder empty (nothing was made to replace the earlier one with)."""
  target = os.path.abspath(path)
  together = _REPLACED_TOGETHER.get()
  with writing(path):
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    new = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.partial-', dir=parent)
    _UNFINISHED.add(new)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(new, 0o777 & ~umask)  # mkdtemp's 0700 would hide it from other users
  try:
    with writing(path, new):
      yield new
    if not os.listdir(new):
      os.rmdir(new)
    elif together is None:
      _folder_into_place(new, target)
    else:
      together.append((new, target))
  except BaseException:
    shutil.rmtree(new, ignore_errors=True)
    raise
  finally:
    if together is None or (new, target) not in together:  # else the block's to the end
      _UNFINISHED.discard(new)


def _folder_into_place(new: str, target: str) -> None:
  """Replaces the folder `target` by `new`: the earlier one is moved aside, then removed once
  the new one is in place, and put back where the move is cut short (a Ctrl-C between the two
  renames would leave neither)."""
  old = None
  try:
    if os.path.exists(target):
      old = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.old-',
                             dir=os.path.dirname(target))
      os.rmdir(old)
      _ASIDE[old] = target
      os.rename(target, old)
    os.rename(new, target)
  except BaseException:
    if old and os.path.exists(old) and not os.path.exists(target):
      os.rename(old, target)
    raise
  finally:
    _ASIDE.pop(old, None)
  if old:
    shutil.rmtree(old, ignore_errors=True)


# The (new copy, file or folder) pairs a `replacing_together` block has written, not yet moved
# in place.
_REPLACED_TOGETHER: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar(
    'replaced_together', default=None)


@contextlib.contextmanager
def replacing_together() -> Iterator[None]:
  """Inside it, the files `replacing` writes in this thread (and the folders of
  `replacing_folder`) replace their earlier copies together, once every one is whole, in the
  order they were first written: files that belong together (one evaluation's results) are
  never left half of one set and half of the earlier one by an error, a Ctrl-C or a kill while
  they are written, but for the moment the renames take. A block inside another joins it."""
  if _REPLACED_TOGETHER.get() is not None:
    yield
    return
  written: list = []
  token = _REPLACED_TOGETHER.set(written)
  try:
    yield
    for index, (partial, target) in enumerate(written):
      if os.path.isdir(partial):
        _folder_into_place(partial, target)
      else:
        os.replace(partial, target)
      written[index] = (None, target)
      _UNFINISHED.discard(partial)
  except BaseException:
    for partial, _ in written:
      if partial is not None and os.path.isdir(partial):
        shutil.rmtree(partial, ignore_errors=True)
      elif partial is not None and os.path.exists(partial):
        os.remove(partial)
      _UNFINISHED.discard(partial)
    raise
  finally:
    _REPLACED_TOGETHER.reset(token)


class Terminated(KeyboardInterrupt):
  """A SIGTERM (a scheduler's time limit, `kill`) where `sigterm_raises` takes it: a
  KeyboardInterrupt, so whatever cleans up after a Ctrl-C cleans up after it too."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
  """Inside it, a SIGTERM raises Terminated in the main thread instead of ending the process
  where it stands (no clean-up, no line). Elsewhere than in the main thread, nothing changes."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def stop(signum, frame) -> None:
    del signum, frame
    raise Terminated

  previous = signal.signal(signal.SIGTERM, stop)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


# The line and status of a command a SIGTERM ends (`sigterm_in_one_line`): 128 + SIGTERM, what a
# shell reports for a process the signal killed.
SIGTERM_LINE = 'Stopped by SIGTERM. Exit status 143.'
SIGTERM_STATUS = 143
# How long the main thread has to take a SIGTERM itself (flushing the command's printed output)
# before the watcher thread ends the process without it: inside C code that does not return for
# long (a compile, a collective), Python runs no handler.
SIGTERM_GRACE_S = 1.0
# How long a SIGTERM's end waits for the command's printed output to be flushed, then for its
# line to be written.
_SAY_WAIT_S = 0.5
# The new copies `replacing` and `replacing_folder` are writing, or a `replacing_together` block
# holds, which a SIGTERM's end removes: the files they would replace stay as they were.
_UNFINISHED: set = set()
# The earlier folders `replacing_folder` has moved aside, not yet replaced: their targets.
_ASIDE: Dict[str, str] = {}
# What a SIGTERM's end also does, newest first (`run_if_a_sigterm_ends`).
_AT_END: List[Callable[[], Any]] = []
_sigterm_owner: Optional[int] = None  # the process whose `sigterm_in_one_line` is active
_sigterms_taken_inside = 0  # by handlers set inside the guard (`sigterm_taken_inside`)
_waits_a_ctrl_c_ends = 0  # the `ctrl_c_ends_this_wait` blocks the main thread is inside
_resets_sigterm_in_children = False
# The signal mask a thread forking inside `sigterm_in_one_line` had: SIGTERM is blocked across
# the fork, so that the child takes none before it is reset (`_sigterm_as_default_in_a_child`).
_FORKING = threading.local()


def _sigterm_held_across_a_fork() -> None:
  """Before a fork inside `sigterm_in_one_line`: blocks SIGTERM in the forking thread, which the
  child inherits. A child's SIGTERM before its reset ran the parent's handler there and woke the
  parent's watcher through the inherited wake-up descriptor: the parent ended (seen under load,
  a pool's worker signalled as it started)."""
  if _sigterm_owner == os.getpid():
    _FORKING.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _sigterm_released_after_a_fork() -> None:
  """After the fork, in the parent: the forking thread's mask as it was."""
  mask = getattr(_FORKING, 'mask', None)
  if mask is not None:
    _FORKING.mask = None
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _sigterm_as_default_in_a_child() -> None:
  """In a process forked from one inside `sigterm_in_one_line` (a pool's worker): SIGTERM ends
  it as Python's default does, without the parent's line, and no longer wakes the parent's
  watcher (the signal wake-up descriptor is inherited); then the SIGTERM held across the fork
  is released."""
  global _sigterm_owner
  if _sigterm_owner is not None and _sigterm_owner != os.getpid():
    _sigterm_owner = None
    with contextlib.suppress(ValueError, OSError):
      signal.set_wakeup_fd(-1)
    with contextlib.suppress(ValueError, OSError):
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
  _sigterm_released_after_a_fork()


def _quietly(action: Callable[[], Any], wait: float) -> None:
  """`action()` in a thread given `wait` seconds, its errors ignored: a write the signal
  interrupted holds its stream's lock, and a pipe nobody reads (a parent that waits for the
  command without reading its output) blocks a write for good."""
  def run() -> None:
    with contextlib.suppress(Exception):  # a reader gone, a stream closed
      action()

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(wait)


def sigterm_taken_inside() -> None:
  """Said by a SIGTERM handler set inside `sigterm_in_one_line` as it takes a SIGTERM (training's
  loop, which then saves its step): the guard's watcher leaves that one to it, also where the
  guard's handler is set again by the time the watcher looks."""
  global _sigterms_taken_inside
  _sigterms_taken_inside += 1


def run_if_a_sigterm_ends(action: Callable[[], Any]) -> None:
  """From now until `no_longer_if_a_sigterm_ends(action)`: where `sigterm_in_one_line` ends the
  process, `action()` runs first (given _SAY_WAIT_S, its errors ignored), after the actions
  registered later. For what a process holds that outlives it: a workdir's lock file (another
  machine cannot tell it is stale), the last line of a log file, a progress bar's unfinished
  line."""
  _AT_END.append(action)


def no_longer_if_a_sigterm_ends(action: Callable[[], Any]) -> None:
  with contextlib.suppress(ValueError):
    _AT_END.remove(action)


def _remove_unfinished() -> None:
  """Puts back an earlier folder a replacement had moved aside (`_ASIDE`) where the new one is
  not in place yet, then removes the new copies unfinished writes left (`_UNFINISHED`), quietly:
  the process ends."""
  for old, target in list(_ASIDE.items()):
    with contextlib.suppress(OSError):
      if os.path.exists(target):
        shutil.rmtree(old, ignore_errors=True)
      else:
        os.rename(old, target)
  for path in list(_UNFINISHED):
    with contextlib.suppress(OSError):
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        os.remove(path)


def takes_sigterm(pid: int) -> bool:
  """Whether process `pid` has a handler of its own for SIGTERM (Linux: /proc's SigCgt mask;
  False where unknown). It also sees one set in C, which Python's `signal.getsignal` does not:
  JAX's preemption service, which a handler set by Python would replace."""
  try:
    with open(f'/proc/{pid}/status') as f:
      caught = next(line for line in f if line.startswith('SigCgt:')).split()[1]
  except (OSError, StopIteration, IndexError):
    return False
  return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def _sigterm_handler_in_c() -> Optional[int]:
  """The address of the C library's handler for SIGTERM (0: the default), or None where ctypes
  cannot ask. C code (JAX's preemption service, set as a group joins) replaces Python's handler
  there without Python's signal module knowing."""
  try:
    action = ctypes.create_string_buffer(1024)  # a struct sigaction: its handler comes first
    if ctypes.CDLL(None).sigaction(signal.SIGTERM, None, action) != 0:
      return None
  except (OSError, AttributeError):
    return None
  return ctypes.c_void_p.from_buffer(action).value or 0


@contextlib.contextmanager
def ctrl_c_ends_this_wait() -> Iterator[None]:
  """Around a wait inside C code that a Ctrl-C does not end (jax.distributed's join: up to its
  5-minute time-out, then an abort with a stack dump), inside `sigterm_in_one_line`: a Ctrl-C
  the main thread has not taken SIGTERM_GRACE_S later ends the process with the Ctrl-C line
  and status 130, as the command's own Ctrl-C handling would."""
  global _waits_a_ctrl_c_ends
  _waits_a_ctrl_c_ends += 1
  try:
    yield
  finally:
    _waits_a_ctrl_c_ends -= 1


@contextlib.contextmanager
def sigterm_in_one_line() -> Iterator[None]:
  """Inside it, a SIGTERM (a scheduler's time limit, `kill`) ends the command at once with
  SIGTERM_LINE and status 143, after removing the new copies its unfinished writes had begun
  (`replacing`, `replacing_folder`: the files they replace stay as they were). Python's
  default ended it there without a line.

  The handler ends the process itself and raises nothing: an exception can be dropped (in a gc
  callback: the command ran on) or turned into another (in TensorFlow's C++ code). Where the
  main thread is inside C code that does not return but lets go of the GIL (a compile, a
  collective), a watcher thread woken by the signal (`signal.set_wakeup_fd`) ends it after
  SIGTERM_GRACE_S. A forked child takes SIGTERM as Python's default. A SIGTERM already ignored
  or handled where it starts (a caller's handler, JAX's preemption service) is left to that, as
  it is outside the main thread, and so is one a handler set inside it takes (training's loop,
  which says so: `sigterm_taken_inside`). A handler C code sets inside it (JAX's preemption
  service, as a training group joins) keeps SIGTERM after it. `run_if_a_sigterm_ends` adds to
  what the end does.
  """
  global _sigterm_owner, _resets_sigterm_in_children
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL or takes_sigterm(os.getpid())):
    yield
    return
  ending = threading.Lock()  # the handler or the watcher ends the process, never both
  ender = []  # the thread ending it

  def end(line: str = SIGTERM_LINE, status: int = SIGTERM_STATUS) -> None:
    if not ending.acquire(blocking=False):
      return
    ender.append(threading.get_ident())
    try:
      with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C meanwhile: this end goes on
        _remove_unfinished()
        for action in reversed(_AT_END[:]):
          _quietly(action, _SAY_WAIT_S)
        _quietly(sys.stdout.flush, _SAY_WAIT_S)  # the output printed so far
      with contextlib.suppress(KeyboardInterrupt):
        _quietly(lambda: os.write(2, f'{line}\n'.encode()), _SAY_WAIT_S)
    finally:
      os._exit(status)  # pylint: disable=protected-access

  def on_sigterm(signum, frame) -> None:
    del frame
    if os.getpid() != owner:  # a child forked past the reset: as Python's default
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    end()
    # The watcher ends the process: the main thread waits. A second SIGTERM inside the main
    # thread's own end returns to it.
    while ender[:1] != [threading.get_ident()]:
      time.sleep(1)

  owner = os.getpid()
  reader, writer = os.pipe()
  os.set_blocking(writer, False)
  finished = threading.Event()

  taken_before = _sigterms_taken_inside

  def watch() -> None:
    seen = 0  # the SIGTERMs the wake-up descriptor has told of
    while not finished.is_set():
      try:
        received = os.read(reader, 64)
      except OSError:
        return
      seen += received.count(signal.SIGTERM)
      # Not one a handler set inside took (training's loop), also where that handler gives
      # this one back before the watcher looks (as the loop ends).
      if (signal.SIGTERM in received and signal.getsignal(signal.SIGTERM) is on_sigterm
          and not finished.wait(SIGTERM_GRACE_S)
          and signal.getsignal(signal.SIGTERM) is on_sigterm
          and _sigterms_taken_inside - taken_before < seen):
        end()
      # A Ctrl-C the main thread cannot take inside a wait in C code (`ctrl_c_ends_this_wait`).
      if (signal.SIGINT in received and _waits_a_ctrl_c_ends
          and not finished.wait(SIGTERM_GRACE_S) and _waits_a_ctrl_c_ends):
        end(_INTERRUPTED, 130)

  if not _resets_sigterm_in_children:
    os.register_at_fork(before=_sigterm_held_across_a_fork,
                        after_in_parent=_sigterm_released_after_a_fork,
                        after_in_child=_sigterm_as_default_in_a_child)
    _resets_sigterm_in_children = True
  previous_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
  watcher = None
  if previous_fd == -1:  # another's wake-up descriptor (an event loop's) is left to it
    watcher = threading.Thread(target=watch, name='sigterm-watcher', daemon=True)
    watcher.start()
  else:
    signal.set_wakeup_fd(previous_fd)
  _sigterm_owner = owner
  signal.signal(signal.SIGTERM, on_sigterm)
  ours = _sigterm_handler_in_c()
  try:
    yield
  finally:
    if ours is None or _sigterm_handler_in_c() == ours:  # not one C code set inside (a join's)
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_owner = None
    finished.set()
    if watcher is not None:
      signal.set_wakeup_fd(-1)
      with contextlib.suppress(OSError):
        os.write(writer, b'\0')  # wakes the watcher, which then ends
      watcher.join()
    os.close(writer)
    os.close(reader)


# How often a worker process looks whether the process that started it is still there.
_PARENT_POLL_S = 1.0


def end_with_parent(parent: int) -> None:
  """In a worker process (a pool's initializer): ends it once `parent`, the process that
  started it, is gone. A pool's idle workers wait on a pipe their siblings also hold open, so
  a parent killed outright (SIGKILL, the OOM killer) left them waiting for good, holding their
  memory and the console's pipes."""

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(_PARENT_POLL_S)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name='end-with-parent', daemon=True).start()


# How long the main thread gets to leave the code that dropped a Ctrl-C before it is sent again.
REDELIVERY_DELAY_S = 0.05


@contextlib.contextmanager
def ctrl_c_never_dropped() -> Iterator[None]:
  """Inside it, a Ctrl-C that Python drops is sent to the main thread again.

  Python drops an exception raised where no caller can catch it (a gc callback, a `__del__`, a
  weakref callback) and hands it to `sys.unraisablehook`. A Ctrl-C whose KeyboardInterrupt
  landed there, e.g. in JAX's `_xla_gc_callback` while a run initialised, was lost, and the run
  trained to its end. The hook cannot raise it again (that is dropped too), so a thread sends
  SIGINT to the main thread once the dropping code has had `REDELIVERY_DELAY_S` to return; one
  dropped too late for that is raised as the guarded code ends.
  """
  previous = sys.unraisablehook
  main = threading.main_thread()
  dropped = threading.Event()  # a drop the sender has not acted on
  finished = threading.Event()
  lock = threading.Lock()  # the sender sends, or the main thread raises, never both

  def send_again() -> None:
    while True:
      dropped.wait()
      if finished.wait(REDELIVERY_DELAY_S):
        return
      with lock:
        if finished.is_set():
          return
        dropped.clear()
        signal.pthread_kill(main.ident, signal.SIGINT)

  def hook(unraisable) -> None:
    if (issubclass(unraisable.exc_type, KeyboardInterrupt)
        and threading.current_thread() is main):
      dropped.set()
    else:
      previous(unraisable)

  sender = threading.Thread(target=send_again, name='ctrl-c-sender', daemon=True)
  sender.start()
  sys.unraisablehook = hook
  try:
    yield
  finally:
    sys.unraisablehook = previous
    finished.set()
    with lock:  # once the sender has sent a drop, or will not
      unsent = dropped.is_set()
    dropped.set()  # wakes the sender, which then ends
  if unsent:
    raise KeyboardInterrupt


_STARTING = 'Interrupted by Ctrl-C while starting. Exit status 130.'
_INTERRUPTED = 'Interrupted by Ctrl-C. Exit status 130.'
_ENDING = ('Interrupted by Ctrl-C while ending, after its last line: its clean-up was cut short. '
           'Exit status 130.')
_ignores_ctrl_c_at_exit = False


def _ignore_ctrl_c_once_only_memory_is_left() -> None:
  """Once per process, as a command starts: its last atexit callback ignores Ctrl-C. Python then
  gives SIGINT back to the system and frees its modules, where a Ctrl-C killed the process
  without a line, its outputs all written. Registered before the heavy imports register their
  callbacks, it runs after them (atexit runs the first registered last)."""
  global _ignores_ctrl_c_at_exit
  if _ignores_ctrl_c_at_exit:
    return
  _ignores_ctrl_c_at_exit = True
  atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)


def _ending_at_once(line: str):
  """A SIGINT handler that prints `line` and ends the process with status 130, as no exception
  does: an import mangles or drops one, and Python's shutdown reports it as ignored."""

  def stop(signum, frame) -> None:
    del signum, frame
    try:
      with contextlib.suppress(OSError, ValueError):  # a reader gone (`| head`), a stream closed
        sys.stdout.flush()
      with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)
    finally:
      os._exit(130)  # pylint: disable=protected-access

  return stop


def _takes_ctrl_c_here() -> bool:
  """Whether a handler set here takes Ctrl-C: in the main thread (Python's only place for one),
  and not where the command was started with it ignored (in the background)."""
  return (threading.current_thread() is threading.main_thread()
          and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)


@contextlib.contextmanager
def ctrl_c_while_ending() -> Iterator[None]:
  """Around a command's run, in its `__main__` block: once the run returns or exits (after its
  last line), a Ctrl-C ends the process at once with one line and status 130. Python's shutdown
  joins threads and runs the atexit callbacks of concurrent.futures, JAX, orbax and TensorFlow,
  where it was an "Exception ignored" traceback and the run's own status. It is not ignored
  there: a wait in Python (a thread joined) ends at once; one inside C code (jax.distributed's
  shutdown barrier) ends when that returns. A Ctrl-C that nothing in the run caught is one line
  too; an unexpected error keeps Python's handling."""

  def take_ctrl_c() -> None:
    if _takes_ctrl_c_here():
      signal.signal(signal.SIGINT, _ending_at_once(_ENDING))

  try:
    try:
      yield
    except SystemExit:
      take_ctrl_c()
      raise
    take_ctrl_c()
  except KeyboardInterrupt:  # in the run outside its own handling, or before the handler was set
    _ending_at_once(_INTERRUPTED)(signal.SIGINT, None)


@contextlib.contextmanager
def ctrl_c_while_starting(module: str = '__main__') -> Iterator[None]:
  """Around a command's imports (TensorFlow's and JAX's take seconds): a Ctrl-C there ends the
  command at once with one line and status 130, as it does once the command runs, instead of an
  import's traceback, and a SIGTERM with its one line and status 143 (`sigterm_in_one_line`),
  where Python's default ended it without one. Nothing has been written yet, so nothing is lost.

  A handler of its own takes the signal: as a KeyboardInterrupt it came out as an ImportError
  traceback where it landed in a C extension's initialisation (numpy's, while JAX is imported),
  or was dropped in JAX's gc callback and the command ran on. A module that is also imported as
  a library passes its `__name__`: guarded only when it runs as the command, or when it is
  imported while `python -m` locates the command's module (a package's `__init__`, imported
  before its `__main__`; Python sets `sys.argv[0]` to '-m' for that time). A guarded command
  also ignores a Ctrl-C in its very last moments (`_ignore_ctrl_c_once_only_memory_is_left`);
  `ctrl_c_while_ending` takes the moments before them.
  """
  starting = module == '__main__' or getattr(sys, 'argv', [])[:1] == ['-m']
  if not starting:
    yield  # imported as a library
    return
  with sigterm_in_one_line():
    if not _takes_ctrl_c_here():
      yield  # run in a thread, or started with Ctrl-C ignored (in the background)
      return
    _ignore_ctrl_c_once_only_memory_is_left()
    previous = signal.signal(signal.SIGINT, _ending_at_once(_STARTING))
    try:
      with ctrl_c_never_dropped():  # a KeyboardInterrupt some code raises itself and Python drops
        yield
    except KeyboardInterrupt:
      print(_STARTING, file=sys.stderr)
      sys.exit(130)
    finally:
      signal.signal(signal.SIGINT, previous)


def first_few(names: Sequence[str], count: int = 5) -> str:
  """The first `count` of `names` comma-separated, for a message; with how many there are in all
  where there are more."""
  return ', '.join(names[:count]) + (f', ... ({len(names)} in all)' if len(names) > count else '')


class DataError(Exception):
  """Input data that cannot be read as asked; the message names the file, field or value."""


class SettingError(DataError, ValueError):
  """A setting (a `config` field or a path flag) the input side cannot work with; the message
  names it."""


def printable(path: str) -> str:
  """`path` as text any output can hold: bytes of a name that are not UTF-8 (which Python keeps
  as lone surrogates, and which records, CSV files and TensorFlow refuse) shown escaped, as in
  'caf\\xe9.mp4'."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')


def not_utf8(paths: Iterable[str]) -> List[str]:
  """The paths among `paths` that are not UTF-8 text, each `printable`."""
  return [printable(path) for path in paths if printable(path) != path]


def unwritable(directory: str) -> Optional[str]:
  """Why no file can be written in `directory`, which it creates where missing ('it is a file,
  not a directory', an OS error's text), None where one can. A probe file is written and
  removed: only that proves it (permissions, a read-only mount, an immutable folder, quotas)."""
  if os.path.exists(directory) and not os.path.isdir(directory):
    return 'it is a file, not a directory'
  probe = os.path.join(directory, f'.write_test_{socket.gethostname()}_{uuid.uuid4().hex}')
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    return e.strerror or str(e)
  return None


def path_refusal(path: Any) -> Optional[str]:
  """Why `path` cannot be used, as the words that follow it ('is a URL, ...'); None for a path
  that can.

  A URL (gs://, s3://, https://): the commands open files through the operating system, which
  takes 'gs://bucket/run' for a folder named 'gs:' in the current directory (a run's checkpoints
  and log on this machine's disk, a trainer lock that stops no trainer on another host,
  converted records that never reach the bucket). A path that is not UTF-8 text: TensorFlow's
  file functions and the records take paths as UTF-8, and refused it with a traceback.
  """
  if not isinstance(path, str):
    return None
  match = _URL_SCHEME.match(path)
  if match:
    return (f'is a URL, and this project opens files by filesystem path only (it would be a '
            f'local folder named "{match.group(1)}:"). Pass a filesystem path instead.')
  if printable(path) != path:
    return ('is not UTF-8 text (undecodable bytes shown escaped), which TensorFlow and the '
            'records take paths as. Rename it (e.g. convmv -f latin1 -t utf8 --notest PATH).')
  return None


def refuse_path(path: Any, setting: str) -> None:
  """A SettingError `<setting>=<path> ...` naming what `path_refusal` finds in `path`."""
  reason = path_refusal(path)
  if reason:
    raise SettingError(f'{setting}={printable(path)} {reason}')


def local_path(path: Any, setting: str) -> Any:
  """A path setting as a shell would have given it, a leading `~` expanded (shells leave
  `--output=~/x` as it is), once `refuse_path` accepts it; anything not a string as it is."""
  refuse_path(path, setting)
  return os.path.expanduser(path) if isinstance(path, str) else path


def refuse_brackets(path: str, setting: str, writer: str) -> None:
  """A SettingError when `path`, made absolute, holds '[' or ']', which `writer` (a library)
  takes for a glob pattern, so that what it writes there cannot be read back."""
  full = os.path.abspath(path)
  if '[' in full or ']' in full:
    raise SettingError(f"{setting}={path}: its path holds '[' or ']', which {writer} takes for a "
                       'glob pattern: what it wrote there could not be read back. Use a path '
                       'without brackets.')


def path_argument(text: str) -> str:
  """An argparse type for a path flag, as `local_path` gives it: a refused path ends the
  command in one usage line."""
  reason = path_refusal(text)
  if reason:
    raise argparse.ArgumentTypeError(f'{printable(text)} {reason}')
  return os.path.expanduser(text)
