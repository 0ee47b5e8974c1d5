"""The built-in demo data: deterministic, motion-only, written in the DMVR record schema."""

import glob
import logging
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from configs import demo
from data import records
from data import synthetic
from tests.conftest import subprocess_env
from tests.conftest import tiny_config


def _generator_config(tmp_path):
  return tiny_config(tmp_path).dataset.synthetic


def test_single_frame_carries_no_class_information(tmp_path):
  cfg = _generator_config(tmp_path)
  first_frames = []
  for label in range(len(synthetic.CLASSES)):
    video = synthetic.render_video(np.random.default_rng(123), label, cfg)
    first_frames.append(video[0])
  # Same random draws, different class: frame 0 is identical, so it cannot tell the class.
  for frame in first_frames[1:]:
    np.testing.assert_array_equal(frame, first_frames[0])
  moving = [synthetic.render_video(np.random.default_rng(123), label, cfg)[1]
            for label in range(len(synthetic.CLASSES))]
  assert len({m.tobytes() for m in moving}) == len(synthetic.CLASSES)


# The square's shift per frame (rows down, columns right) that each class name promises.
_SHIFTS = {'moving_right': (0, 1), 'moving_left': (0, -1), 'moving_down': (1, 0),
           'moving_up': (-1, 0)}


def _direction_shown(frames: np.ndarray, speed: float) -> str:
  """The class name whose shift of the square best explains the decoded frames: over the pixels
  that change from a frame to the next (a still background: the square's old and new places),
  the mean difference between the next frame and the frame shifted that way."""
  frames = frames.astype(np.float32)
  errors = {}
  for name, (dy, dx) in _SHIFTS.items():
    step = []
    for now, after in zip(frames[:-1], frames[1:]):
      changed = np.abs(after - now).max(-1) > 40
      moved = np.roll(now, (round(dy * speed), round(dx * speed)), axis=(0, 1))
      step.append(np.abs(after - moved).max(-1)[changed].mean())
    errors[name] = np.mean(step)
  return min(errors, key=errors.get)


def test_each_record_shows_the_motion_its_label_names(tmp_path):
  """The label written with a video is the direction its square moves in, read back from the
  decoded frames (still background, so the motion is the square's). Mutation audit: videos
  rendered apart from their labels (every one moving right) passed every test, balanced labels
  and all, and left the model nothing to learn."""
  cfg = _generator_config(tmp_path)
  cfg.background_speed = 0.0
  synthetic.generate(str(tmp_path / 'still'), cfg)
  shown = []
  for split in synthetic.SPLITS:
    for raw in tf.data.TFRecordDataset(records.shard_files(str(tmp_path / 'still'), 'synthetic',
                                                           split)):
      example = tf.train.SequenceExample.FromString(raw.numpy())
      label = example.context.feature['clip/label/index'].int64_list.value[0]
      frames = np.stack([tf.io.decode_jpeg(f.bytes_list.value[0]).numpy() for f in
                         example.feature_lists.feature_list['image/encoded'].feature])
      shown.append((synthetic.CLASSES[label], _direction_shown(frames, cfg.speed)))
  assert len(shown) == 15 and len({label for label, _ in shown}) == 4, shown
  assert all(label == seen for label, seen in shown), shown


def test_labels_are_balanced(tiny_data_dir):
  labels = [int(tf.train.SequenceExample.FromString(raw.numpy())
                .context.feature['clip/label/index'].int64_list.value[0])
            for raw in tf.data.TFRecordDataset(
                records.shard_files(str(tiny_data_dir), 'synthetic', 'train'))]
  assert sorted(labels) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_generation_is_deterministic(tmp_path):
  cfg = _generator_config(tmp_path)
  a = synthetic.generate(str(tmp_path / 'a'), cfg)
  b = synthetic.generate(str(tmp_path / 'b'), cfg)
  assert a == b
  for split in synthetic.SPLITS:
    files_a = records.shard_files(str(tmp_path / 'a'), 'synthetic', split)
    files_b = records.shard_files(str(tmp_path / 'b'), 'synthetic', split)
    for fa, fb in zip(files_a, files_b):
      assert open(fa, 'rb').read() == open(fb, 'rb').read()


def test_records_follow_the_dmvr_schema(tiny_data_dir):
  metadata = records.read_metadata(str(tiny_data_dir))
  assert metadata.classes == list(synthetic.CLASSES)
  assert metadata.split_sizes == {'train': 8, 'val': 7}
  files = records.shard_files(str(tiny_data_dir), 'synthetic', 'val')
  assert len(files) == 2
  seen = 0
  for raw in tf.data.TFRecordDataset(files):
    example = tf.train.SequenceExample.FromString(raw.numpy())
    context = example.context.feature
    label = context['clip/label/index'].int64_list.value[0]
    assert context['clip/label/text'].bytes_list.value[0].decode() == synthetic.CLASSES[label]
    assert context['video/filename'].bytes_list.value[0].startswith(b'val/')
    frames = example.feature_lists.feature_list['image/encoded'].feature
    assert len(frames) == 6
    image = tf.io.decode_jpeg(frames[0].bytes_list.value[0])
    assert image.shape == (20, 20, 3)
    seen += 1
  assert seen == 7


def test_metadata_errors_name_the_file(tmp_path):
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match='metadata.json'):
    records.read_metadata(str(tmp_path))
  (tmp_path / 'metadata.json').write_text('{not json')
  with pytest.raises(ValueError, match=str(tmp_path / 'metadata.json')):
    records.read_metadata(str(tmp_path))


def test_existing_records_from_other_settings_are_refused(tiny_data_dir):
  """An explicit data_dir holding records of other generator settings is not reused silently."""
  cfg = tiny_config(tiny_data_dir).dataset.synthetic
  assert synthetic.ensure_generated(str(tiny_data_dir), cfg).split_sizes['train'] == 8
  cfg.num_frames += 2
  with pytest.raises(records.MissingRecordsError,
                     match=rf'generated with other settings \(num_frames: stored '
                     rf'{cfg.num_frames - 2}, given {cfg.num_frames}\): remove'):
    synthetic.ensure_generated(str(tiny_data_dir), cfg)


def test_generator_settings_that_nothing_reads_or_that_are_missing_are_named(tmp_path):
  """A typo among a config file's generator settings was ignored (and a missing one raised an
  AttributeError deep in the renderer)."""
  from data import errors  # pylint: disable=g-import-not-at-top
  from salinet_jax import cli  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path)
  config.dataset.synthetic.num_trian = 8
  assert cli.fields_nothing_reads(config) == (
      'config.dataset.synthetic.num_trian, a field data/synthetic.py does not read (did you '
      'mean "num_train"?): nothing reads it')
  with pytest.raises(errors.SettingError, match=r'config.dataset.synthetic sets num_trian, '
                     r'which the generator does not read \(it reads background_cell, .*\)\.'):
    synthetic.generate(str(tmp_path / 'typo'), config.dataset.synthetic)
  del config.dataset.synthetic['num_trian']
  del config.dataset.synthetic['jpeg_quality']
  with pytest.raises(errors.SettingError, match=r'config.dataset.synthetic lacks jpeg_quality'):
    synthetic.generate(str(tmp_path / 'missing'), config.dataset.synthetic)
  assert not (tmp_path / 'typo').exists() and not (tmp_path / 'missing').exists()


def _racing_config():
  cfg = demo.get_config().dataset.synthetic
  cfg.num_train, cfg.num_val = 512, 64
  return cfg


def _verified(directory, metadata):
  """'split count' per split, every shard checked against its recorded size and read through."""
  counts = []
  for split in synthetic.SPLITS:
    files = records.shard_files(directory, 'synthetic', split)
    records.check_shards(files, records.recorded_shard_bytes(metadata, split))
    counts += [split, str(sum(records.verify_records(f) for f in files))]
  return counts


_GENERATE_AND_VERIFY = '''
import sys
from data import synthetic
from tests import test_synthetic
metadata = synthetic.ensure_generated(sys.argv[1], test_synthetic._racing_config())
print(*test_synthetic._verified(sys.argv[1], metadata))
'''


def test_two_runs_generating_the_data_at_once_write_it_once(tmp_path, caplog):
  """Two demo runs started together on first use both generated the data into one folder, each
  truncating the shards the other was writing: the first to finish read a shard 'corrupt after
  record 109'. The second now waits for the first and reuses its records."""
  directory = str(tmp_path / 'synthetic')
  first = subprocess.Popen([sys.executable, '-c', _GENERATE_AND_VERIFY, directory],
                           env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  deadline = time.monotonic() + 120
  while not glob.glob(f'{directory}/*.tfrecord-*') and time.monotonic() < deadline:
    time.sleep(0.01)
  assert first.poll() is None, first.communicate()
  with caplog.at_level(logging.INFO, logger='absl'):
    second = _verified(directory, synthetic.ensure_generated(directory, _racing_config()))
  out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  assert out.split() == second == ['train', '512', 'val', '64']
  assert 'Generating' not in caplog.text
  assert f'Waiting for the synthetic data generator (pid {first.pid} on host ' in caplog.text
