"""Entry point: train (with periodic evaluation) or evaluate a config in a workdir.

  python main.py --config=configs/demo.py --workdir=/tmp/demo               # train, resumes
  python main.py --config=configs/demo.py --workdir=/tmp/demo --mode=eval   # evaluate a split
  python main.py --config=configs/demo.py --config.batch_size=16 ...        # override any field
  python main.py --config=configs/demo.py --workdir=/tmp/demo --mode=predict --video=clip.mp4
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

from salinet_jax import checkpoints
from salinet_jax import parallel
from salinet_jax import predict
from salinet_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and eval results go.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'],
                  'train (with periodic eval), eval (a whole split) or predict (video files).')
flags.DEFINE_string('split', None, 'Eval mode: the split to evaluate (default: the config\'s).')
flags.DEFINE_multi_string('video', [], 'Predict mode: a video file to classify (repeatable).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # TensorFlow only feeds data: keep it off the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  checkpoints.quiet_orbax_logs()
  parallel.initialize_distributed()
  logging.info('JAX process %d/%d, %d local / %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  config = FLAGS.config
  if FLAGS.mode == 'predict':
    predict.predict(config, FLAGS.workdir, FLAGS.video)
    return
  if FLAGS.mode == 'train':
    results = train.train_and_evaluate(config, FLAGS.workdir)
  else:
    results = train.evaluate(config, FLAGS.workdir, FLAGS.split)
  if 'preempted_at_step' in results:
    logging.warning('Stopped by SIGTERM after saving step %d.', results['preempted_at_step'])
  elif results and jax.process_index() == 0:
    print(f"Validation top-1: {results['top1']:.4f} (top-5 {results['top5']:.4f}, "
          f"{results['num_videos']} videos of split {results['split']!r}, step {results['step']})")


if __name__ == '__main__':
  app.run(main)
