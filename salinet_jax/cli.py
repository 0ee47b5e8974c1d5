"""Command-line plumbing shared by `main.py`, `salinet_jax.bench` and `salinet_jax.info`.

A mistake the user can fix ends in one `error:` line: a misspelt `--config` field, a config file
that does not exist or refuses a value (exit status 2, as absl does for bad flags), and a
`UserError` or `DataError` raised while running, or a write a full disk refused (exit status
1). Anything else keeps its traceback, because it is a bug to report. A Ctrl-C ends in one line
too (status 130), even one that Python itself would drop.
"""

import contextlib
import os
import re
import sys
import threading
import time
import traceback
from typing import Any, Iterator, List

from absl import flags
from absl import logging

from data import errors as data_errors
from salinet_jax import errors
from salinet_jax import parallel


def parse_flags(argv: List[str]) -> List[str]:
  """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`), with a misspelt or
  mistyped --config field, a missing config file and a config's own ValueError (e.g. an unknown
  recipe stage) reported as one line. It loads the config file and imports Flax to check its
  fields (seconds, before anything is written): a Ctrl-C meanwhile ends the command as one
  while it imports."""
  with data_errors.ctrl_c_while_starting():
    return _parse_flags(argv)


def _parse_flags(argv: List[str]) -> List[str]:
  values = flags.FLAGS
  try:
    argv = argv[:1] + [_config_path(argument) for argument in argv[1:]]
  except data_errors.SettingError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  try:
    remaining = values(argv)
    if 'config' in values and values.config is not None:
      # A config file that failed to load stands in as an object that raises on any attribute.
      values.config.to_dict  # pylint: disable=pointless-statement
      unknown = fields_nothing_reads(values.config)
      if unknown:
        print(f'error: {_unread_field_line(values["config"].config_filename, unknown)}',
              file=sys.stderr)
        sys.exit(2)
    _check_paths(values)
    return remaining
  except flags.Error as e:
    lines = str(e).strip().splitlines()
    if 'Traceback (most recent call last)' in str(e):
      # The config file's get_config failed: the flag and its exception, not the traceback.
      last = lines[-1]
      if last.startswith('ValueError: '):
        last = last[len('ValueError: '):]  # the config refused a value itself
      elif last.startswith('TypeError: get_config() takes'):
        last += " (this config file takes no ':ARG')"
      lines = [lines[0].split('Traceback (most recent call last)')[0].strip(), last]
    print(f'error: {" ".join(lines)}\nPass --helpshort or --helpfull to see help on flags.',
          file=sys.stderr)
    sys.exit(2)
  except SyntaxError as e:  # the config file itself
    print(f'error: --config: {e.filename}:{e.lineno}: {e.msg}.', file=sys.stderr)
    sys.exit(2)
  except ImportError as e:  # what the config file imports; the project's own keep a traceback
    if (e.name or '').split('.')[0] in ('salinet_jax', 'data', 'configs'):
      raise
    print(f'error: --config: the config file\'s import failed: {e}.', file=sys.stderr)
    sys.exit(2)
  except OSError as e:  # ml_collections: the config file could not be read
    reason = ' '.join(str(e).split()).split('earlier failure to load: ')[-1]
    print(f'error: --config: {reason}', file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:  # ml_collections: no such field in the config
    if isinstance(e, AttributeError) and "has no attribute 'get_config'" in str(e):
      print('error: --config: the config file defines no get_config().', file=sys.stderr)
    else:
      print(f'error: {_unknown_field(str(e.args[0] if e.args else e), argv)}', file=sys.stderr)
    sys.exit(2)


# The config groups, GROUP.FIELDs and top-level fields only some modes read (training evaluates
# the weights it trains, so it restores no eval.checkpoint; features average a video's views and
# draw no pictures; only training starts from init_from), and the predict settings only windows
# read.
MODES_OF_CONFIG_FIELDS = {'predict': ('predict',), 'features': ('features',),
                          'init_from': ('train',), 'precise_bn_batches': ('train',),
                          'eval.checkpoint': ('eval', 'predict', 'features'),
                          'eval.view_reduction': ('train', 'eval', 'predict'),
                          'eval.view_scores': ('train', 'eval', 'predict'),
                          'eval.num_visualizations': ('eval', 'predict')}
WINDOW_SETTINGS = ('stride_seconds', 'window_batch', 'timeline_classes')


# The flags (of any command that defines them) and config fields that name files or folders.
PATH_FLAGS = ('workdir', 'output_dir', 'video', 'output', 'checkpoint', 'classes', 'profile_dir')
PATH_FIELDS = ('dataset.data_dir', 'init_from.checkpoint', 'eval.checkpoint', 'predict.exported')


def _config_path(argument: str) -> str:
  """`--config=FILE[:ARG]` with FILE as `_check_paths` gives a path flag; any other argument as
  it is."""
  prefix = '--config='
  if not argument.startswith(prefix):
    return argument
  return prefix + data_errors.local_path(argument[len(prefix):], '--config')


def _check_paths(values: flags.FlagValues) -> None:
  """The path flags and fields as a shell would give them, or the command ends in one line.

  A URL or a path that is not UTF-8 text ends it (status 2) before any file is written (a URL
  would become a local folder: `data.errors.path_refusal`). A leading `~` is expanded: shells
  leave `--workdir=~/run` as it is, and the run would go to a folder named '~' in the current
  directory. `--config` is read while the flags are parsed, so `_config_path` sees it before.
  """
  holders = [(f'--{name}', values[name], 'value') for name in PATH_FLAGS if name in values]
  if 'config' in values and values.config is not None:
    for field in PATH_FIELDS:
      group, name = field.split('.')
      if name in values.config.get(group, {}):
        holders.append((f'config.{field}', values.config[group], name))
  for setting, holder, attribute in holders:
    value = getattr(holder, attribute)
    try:
      paths = [data_errors.local_path(path, setting)
               for path in (value if isinstance(value, list) else [value])]
    except data_errors.SettingError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    setattr(holder, attribute, paths if isinstance(value, list) else paths[0])


def unread_override(config, argv: List[str], mode: str) -> str:
  """The first `--config.GROUP.FIELD` override in `argv` that nothing reads, said as the error to
  print; '' if none: a loss or optimizer field the config's loss, optimizer or schedule does not
  read (l1_weight with cross_entropy, adam_b1 with sgd, step_boundaries with a cosine), a
  `predict` or `features` field in another `mode`, `eval.checkpoint` in training or predict
  through an export, a `data` field the config's temporal sampler or train crop does not read
  (target_fps with dense sampling), `init_from` or `precise_bn_batches` outside training (eval
  scored the workdir's checkpoint, not init_from's), view settings or pictures in features, a
  window setting without a window, or num_epochs where the config's num_train_steps sets the
  run. Each changed nothing, without a word (num_epochs: a warning as the run started)."""
  from data import ops  # pylint: disable=g-import-not-at-top
  from salinet_jax import losses  # pylint: disable=g-import-not-at-top
  from salinet_jax import optim  # pylint: disable=g-import-not-at-top
  opt = config.optimizer
  for arg in argv:
    match = re.match(r'--?config\.(\w+)(?:\.(\w+))?(=|$)', arg)
    if not match:
      continue
    group, field = match.group(1), match.group(2)
    name = f'{group}.{field}' if field else group
    modes = MODES_OF_CONFIG_FIELDS.get(name, MODES_OF_CONFIG_FIELDS.get(group))
    if modes and mode not in modes:
      return (f'--config.{name} is read by --mode={", ".join(modes[:-1])}'
              f'{" or " if len(modes) > 1 else ""}{modes[-1]} only, not by --mode={mode}: add '
              'the mode it was meant for, or leave it out.')
    if (name, mode) == ('num_epochs', 'train') and config.num_train_steps > 0 and not any(
        re.match(r'--?config\.num_train_steps(=|$)', other) for other in argv):
      return (f'--config.num_epochs is not read: config.num_train_steps={config.num_train_steps} '
              "sets the run's length (configs/from_workdir.py gives a run by epochs its steps): "
              'add --config.num_train_steps=-1 to train by epochs, or leave it out.')
    if field is None:
      continue
    if group == 'eval' and field == 'checkpoint' and mode == 'predict' and \
        config.predict.exported:
      return ('--config.eval.checkpoint is not read by predict through an export '
              f'(config.predict.exported={config.predict.exported!r}): it predicts with the '
              'weights exported; leave one of them out.')
    if (group, field, mode) == ('eval', 'num_visualizations', 'predict') and \
        config.predict.window_seconds > 0:
      return ('--config.eval.num_visualizations is not read by windowed predict '
              f'(config.predict.window_seconds={config.predict.window_seconds:g}), which draws '
              'timelines: predict whole videos for pictures, or leave it out.')
    if group == 'predict':
      if field in WINDOW_SETTINGS and not config.predict.window_seconds > 0:
        return (f'--config.predict.{field} is read by windowed predict only '
                f'(config.predict.window_seconds > 0, here {config.predict.window_seconds:g}): '
                'set --config.predict.window_seconds too, or leave it out.')
    elif group == 'loss' and field != 'name':
      reads = losses.LOSS_FIELDS.get(config.loss.name)
      if reads is not None and field not in reads:
        return (f"--config.loss.{field} is not read by loss {config.loss.name!r} (it reads "
                f"{', '.join(reads)}): set --config.loss.name too, or leave it out.")
    else:
      # (what chooses, its field, the choice, what each choice reads): a field of other choices.
      choosers = {'optimizer': (('optimizer', 'name', opt.name, optim.OPTIMIZER_FIELDS),
                                ('schedule', 'schedule', opt.schedule, optim.SCHEDULE_FIELDS)),
                  'data': (('temporal_sampling', 'temporal_sampling',
                            config.data.temporal_sampling, ops.SAMPLER_FIELDS),
                           ('train_crop', 'train_crop', config.data.train_crop,
                            ops.CROP_FIELDS))}.get(group, ())
      for what, selector, choice, table in choosers:
        owners = [key for key, fields in table.items() if field in fields]
        if owners and choice in table and choice not in owners:
          return (f'--config.{group}.{field} is read by {what} '
                  f'{" or ".join(map(repr, owners))} only, not by {choice!r}: set '
                  f'--config.{group}.{selector} too, or leave it out.')
  return ''


# Config fields whose names vary with the model they configure, so base.py defines none of them
# (models.build_model checks them).
_FREE_FORM_FIELDS = ('model.',)


def fields_nothing_reads(config) -> str:
  """'config.FIELD, a field configs/base.py does not define (did you mean "NAME"?) ...' for the
  first field a config file sets that base.py lacks (a typo in the file: locking catches those
  of the command line only), '' when there is none. The demo data generator's settings are
  checked against those data/synthetic.py reads."""
  import difflib  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top
  from data import synthetic  # pylint: disable=g-import-not-at-top
  known = set(flax.traverse_util.flatten_dict(base.get_base_config().to_dict(), sep='.'))
  known.update(f'dataset.synthetic.{name}' for name in synthetic.SETTINGS)
  for field in sorted(flax.traverse_util.flatten_dict(config.to_dict(), sep='.')):
    if field in known or field.startswith(_FREE_FORM_FIELDS):
      continue
    parent, _, name = field.rpartition('.')
    siblings = [k.rpartition('.')[2] for k in known if k.rpartition('.')[0] == parent]
    close = difflib.get_close_matches(name, siblings, n=1)
    generator = parent == 'dataset.synthetic'
    definer = 'data/synthetic.py does not read' if generator else 'configs/base.py does not define'
    return (f'config.{field}, a field {definer}'
            + (f' (did you mean "{close[0]}"?)' if close else '') + ': nothing reads it'
            + ('' if generator else ' (a new field that new code reads gets its default there)'))
  return ''


def _unread_field_line(config_file: str, unknown: str) -> str:
  """The error for a field `fields_nothing_reads` found: a typo in a config file, or, in a
  workdir's config.json read back, a setting the code that trained the run had and this one
  lacks (no file to fix: the run cannot be reproduced here as it was)."""
  path, has_workdir, workdir = config_file.partition(':')
  if not (has_workdir and os.path.basename(path) == 'from_workdir.py'):
    return f'--config={config_file} sets {unknown}.'
  from configs import from_workdir  # pylint: disable=g-import-not-at-top
  field = unknown.split(',', 1)[0]
  return (f'{os.path.join(os.path.expanduser(workdir), from_workdir.CONFIG_FILE)} holds {field}, '
          'a setting this version of the code does not have: nothing here would read it, so '
          'the run cannot go on as it was trained. Use the version the run was trained with, '
          'or delete the setting from that file to go on without it.')


def _unknown_field(message: str, argv: List[str]) -> str:
  """'unknown config field --config.data.numframes in the command line (did you mean
  "num_frames"?).' from ml_collections' message, which names only the component it missed (the
  override naming it is the flag, when one alone does) or the whole lookup path."""
  message = ' '.join(message.replace('\\n', ' ').replace("\\'", "'").split()).strip('\'"')
  lookup = re.search(r'Attempting to lookup: (\S+)', message)
  name = re.match(r"""[\s'"]*(\w+)""", message)
  overrides = [arg.split('=', 1)[0] for arg in argv if arg.startswith('--config.')]
  naming = [flag for flag in overrides
            if name and name.group(1) in flag[len('--config.'):].split('.')]
  field = (f'--config.{lookup.group(1)}' if lookup else
           naming[0] if len(naming) == 1 else None)
  if field is None:
    return f'unknown config field in the command line: {message}'
  suggestion = re.search(r'Did you mean "([^"]+)"', message)
  return (f'unknown config field {field} in the command line'
          + (f' (did you mean "{suggestion.group(1)}"?)' if suggestion else '') + '.')


@contextlib.contextmanager
def user_errors_in_one_line() -> Iterator[None]:
  """Inside it, a UserError or DataError, or a write refused for space, ends the process with
  `error: <message>` (status 1), after the log lines written before it, and a Ctrl-C that
  reaches it with one line (status 130, 128 + SIGINT); on a process of a group, a collective
  that times out waiting for the others, or that one of them left, ends it with its traceback
  and a line saying so (status 1). In a group every such ending, and any other error (after
  its traceback and a line), skips JAX's shutdown barrier (`end_without_the_group`)."""
  try:
    with data_errors.ctrl_c_never_dropped():
      yield
  except (errors.UserError, data_errors.DataError) as e:
    _end_with_one_line(e)
  except data_errors.NoSpace as e:
    _end_with_one_line(errors.no_space_line(e))
  except Exception as e:  # pylint: disable=broad-except
    # Another process of the group stopped (its own output says why) or is stuck; this one
    # then fails in its next collective, with a runtime traceback that names neither the other
    # process nor its reason. The traceback stays (the cause may be another), the line after it
    # says what it most likely is. Any other error keeps its traceback, and in a group ends
    # this process without JAX's shutdown barrier too.
    line = parallel.ending_line(e)
    if line is None:
      raise
    logging.get_absl_handler().flush()
    traceback.print_exc()
    print(f'error: {line}', file=sys.stderr)
    end_without_the_group(1)
  except KeyboardInterrupt as e:  # asked for, not a bug: one line, and the status a shell gives
    logging.get_absl_handler().flush()
    print(f'Interrupted by Ctrl-C{": " + str(e) if str(e) else "."} Exit status 130.',
          file=sys.stderr)
    _exit(130)


def _exit(status: int) -> None:
  """sys.exit(status); in a process group, without JAX's shutdown barrier, where the others,
  waiting for this process in a collective, would never arrive (`end_without_the_group`)."""
  if parallel.in_a_group():
    end_without_the_group(status)
  sys.exit(status)


def _end_with_one_line(error: Any) -> None:
  """`error: <message>` after the log lines written before it, and exit status 1."""
  logging.get_absl_handler().flush()
  print(f'error: {error}', file=sys.stderr)
  if getattr(error, 'leaves_threads_hanging', False) and not parallel.in_a_group():
    exit_even_if_threads_hang(1)
  _exit(1)


# How long an ending process waits for its other threads before leaving them behind.
THREAD_GRACE_S = 5.0


def end_without_the_group(status: int) -> None:
  """Ends a process of a group that stops alone (an error) or lost the others, with `status`,
  skipping the exit handlers: JAX's would wait at a shutdown barrier for processes that never
  come, then abort every process with a fatal error (after 300 s where they wait for this one
  in a collective; after the 100 s heartbeat timeout where they are gone)."""
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
      stream.flush()
  os._exit(status)  # pylint: disable=protected-access


def exit_even_if_threads_hang(status: int) -> None:
  """sys.exit(status), unless threads that will never finish would keep the process alive: after
  a failed checkpoint save, orbax's save threads wait for signals that never come, and a job
  whose error line is printed would hold its machine until the scheduler's time limit. Other
  threads get `THREAD_GRACE_S` to finish; then the process ends without waiting for them (and
  without atexit handlers). Only for errors that say they leave such threads: idle
  non-daemon pool workers end only at interpreter shutdown."""
  deadline = time.monotonic() + THREAD_GRACE_S
  others = [t for t in threading.enumerate()
            if t is not threading.current_thread() and not t.daemon]
  for thread in others:
    thread.join(max(0.0, deadline - time.monotonic()))
  if any(thread.is_alive() for thread in others):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)
