"""Entry point: train (with periodic evaluation), evaluate, or predict with a config in a workdir.

  python main.py --config=configs/demo.py --workdir=/tmp/demo               # train, resumes
  python main.py --config=configs/demo.py --workdir=/tmp/demo --mode=eval   # evaluate a split
  python main.py --config=configs/demo.py --config.batch_size=16 ...        # override any field
  python main.py --config=configs/demo.py --workdir=/tmp/demo --mode=predict --video=DIR_OR_FILE
  python main.py --config=configs/demo.py --workdir=/tmp/demo --mode=features --video=DIR_OR_FILE

Mistakes a user can fix (a misspelt model name, a missing path, a busy or corrupt workdir)
end with one `error:` line and exit status 1 (2 for bad flags, a misspelt --config. field
among them); anything unexpected keeps its traceback. A run stopped by SIGTERM saves its
step and exits with status 143 (128 + SIGTERM, what a shell reports for a process the signal
killed), so that no script or scheduler takes an unfinished run for a finished one; before its
first step, and in the other modes, a SIGTERM ends the command at once, in one line, with status
143 too.
"""

import signal
import sys

import data
from data import errors as data_errors

data.quiet_tensorflow()  # before TensorFlow is imported

# pylint: disable=g-import-not-at-top,wrong-import-position
with data_errors.ctrl_c_while_starting():
  from absl import app
  from absl import flags
  from absl import logging
  import jax
  from ml_collections import config_flags
  import tensorflow as tf

  from salinet_jax import cli
  from salinet_jax import console
  from salinet_jax import errors
  from salinet_jax import features
  from salinet_jax import parallel
  from salinet_jax import predict
  from salinet_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and eval results go.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict', 'features'],
                  'train (with periodic eval), eval (a whole split), predict (video files) or '
                  'features (pooled features of video files).')
flags.DEFINE_string('split', None, 'Eval mode: the split to evaluate (default: the config\'s).')
flags.DEFINE_string('output_dir', None, 'Eval, predict and features modes: where outputs go '
                    '(default: the workdir, <workdir>/predictions or <workdir>/features).')
flags.DEFINE_multi_string('video', [], 'Predict and features modes: a video file or a directory '
                          'of videos (searched recursively; repeatable).')
flags.mark_flags_as_required(['config', 'workdir'])
# An empty --workdir (an unset shell variable) would train in the current directory.
flags.register_validator('workdir', lambda value: value is None or bool(value.strip()),
                         '--workdir must name a directory (it is empty).')
# The modes each flag above means something in: given to another it would be ignored (a
# forgotten --mode=predict trains, or resumes training, in the workdir).
MODES_OF_FLAGS = {'split': ('eval',), 'output_dir': ('eval', 'predict', 'features'),
                  'video': ('predict', 'features')}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  with cli.user_errors_in_one_line():
    unread = cli.unread_override(config, sys.argv, FLAGS.mode)
    if unread:
      raise errors.UserError(unread)
    for name, modes in MODES_OF_FLAGS.items():
      if FLAGS[name].present and FLAGS.mode not in modes:
        default = '' if FLAGS['mode'].present else ' (the default)'
        raise errors.UserError(f'--{name} applies to --mode={" or ".join(modes)} only, not to '
                               f'--mode={FLAGS.mode}{default}: add the mode it was meant for, '
                               'or leave it out.')
    # From here a SIGTERM ends the command in one line, also while it waits for its group to
    # join or for the backend to start. Training's loop takes it over while it runs (it saves
    # the step), and in a training group JAX's preemption service from the join on.
    with data_errors.sigterm_in_one_line():
      setup_process(config)
      run(config)


def setup_process(config) -> None:
  """XLA flags and host-memory handling, the console, TensorFlow off the accelerators, the
  multi-process join and the compilation cache: all before JAX starts its backends."""
  parallel.set_cpu_xla_flags(config.xla_cpu_scheduler, config.xla_cpu_convolutions,
                             config.xla_cpu_unroll_loops)
  parallel.trim_host_memory_after_compiles()
  # TensorFlow only feeds data: keep it off the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  # Joining jax.distributed must come before anything starts JAX's backend (the console asks
  # for the process index).
  parallel.initialize_distributed(preemption=FLAGS.mode == 'train')
  console.quiet_libraries()
  parallel.start_backend()
  console.setup()
  cache = parallel.enable_compilation_cache(config.compilation_cache_dir)
  logging.info('JAX process %d/%d, %d local / %d global %s devices; XLA compilation cache: %s.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.default_backend(), cache or 'off')


def run(config) -> None:
  if FLAGS.mode in ('predict', 'features'):
    mode = predict.predict if FLAGS.mode == 'predict' else features.extract
    results = mode(config, FLAGS.workdir, FLAGS.video, FLAGS.output_dir)
    if not any(r['ok'] for r in results):
      raise errors.UserError(f'No video could be read for {FLAGS.mode} (see the reasons above).')
    return
  if FLAGS.mode == 'train':
    results = train.train_and_evaluate(config, FLAGS.workdir)
  else:
    results = train.evaluate(config, FLAGS.workdir, FLAGS.split, FLAGS.output_dir)
  if 'preempted_at_step' in results:
    # 128 + the signal, as a shell reports a process the signal killed: never 0.
    stopped_by = results['stopped_by']
    status = 128 + signal.Signals[stopped_by]
    console.line_after_run(
        FLAGS.workdir, f"Stopped by {stopped_by}{' (Ctrl-C)' if stopped_by == 'SIGINT' else ''} "
        f"after saving step {results['preempted_at_step']}; exit status {status} "
        '(unfinished run).', warning=True)
    sys.exit(status)
  if results and jax.process_index() == 0:
    split, step = results['split'], results['step']
    if 'top1' in results:
      top5 = f"top-5 {results['top5']:.4f}, " if 'top5' in results else ''
      summary = (f"{split} top-1: {results['top1']:.4f} ({top5}{results['num_labeled']} "
                 f"labelled of {results['num_videos']} videos, step {step})")
    else:
      summary = (f"{split}: {results['num_videos']} unlabelled videos predicted (step {step}); "
                 'no accuracy without labels.')
    if FLAGS.mode == 'train':
      console.line_after_run(FLAGS.workdir, summary)
    else:
      print(summary)


if __name__ == '__main__':
  with data_errors.ctrl_c_while_ending():
    app.run(main, flags_parser=cli.parse_flags)
