"""Predict mode on real files and folders: top-5, a CSV, bad files reported, names from the
checkpoint, no temporary records."""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from configs import demo
from configs import mini_kinetics_s2dnet
from data import pipeline
from data import records
from data import video_io
from salinet_jax import checkpoints
from salinet_jax import errors
from salinet_jax import evaluate
from salinet_jax import features
from salinet_jax import predict
from salinet_jax import timeline
from salinet_jax import train
from tests.conftest import REPO_ROOT
from tests.conftest import TESTDATA
from tests.conftest import subprocess_env
from tests.conftest import write_moving_bar_video

PANCAKE = TESTDATA / 'real_clips' / 'codec_fixtures' / 'flipping_a_pancake.mkv'
CLASSES = ['moving_right', 'moving_left', 'moving_down', 'moving_up']


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_data_dir):
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(tiny_data_dir)
  workdir = str(tmp_path_factory.mktemp('predict') / 'run')
  train.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_predict_a_folder_with_a_good_video_an_empty_file_and_a_text_file(trained, tmp_path,
                                                                         capsys, monkeypatch,
                                                                         caplog):
  config, workdir = trained
  folder = tmp_path / 'videos'
  (folder / 'nested').mkdir(parents=True)
  shutil.copy(PANCAKE, folder / 'nested' / 'pancake.mkv')
  (folder / 'empty.mp4').write_bytes(b'')
  (folder / 'notes.mp4').write_text('not a video, whatever the name says\n')
  (folder / 'readme.txt').write_text('skipped: no video extension\n')
  # Class names come from the checkpoint: the training records are not needed.
  monkeypatch.setattr(config.dataset, 'data_dir', str(tmp_path / 'records_are_gone'))

  def no_records(*args, **kwargs):
    raise AssertionError('predict must not write or read TFRecords')

  monkeypatch.setattr(records, 'ShardWriter', no_records)
  monkeypatch.setattr(records, 'parse_video', no_records)
  results = predict.predict(config, workdir, [str(folder)])
  by_name = {os.path.basename(r['video']): r for r in results}
  assert sorted(by_name) == ['empty.mp4', 'notes.mp4', 'pancake.mkv']
  good = by_name['pancake.mkv']
  assert good['ok'] and len(good['top5']) == 4  # the synthetic dataset has 4 classes
  probabilities = [p for _, p in good['top5']]
  assert probabilities == sorted(probabilities, reverse=True)
  assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
  assert {name for name, _ in good['top5']} == set(CLASSES)
  assert not by_name['empty.mp4']['ok'] and 'empty file' in by_name['empty.mp4']['error']
  assert not by_name['notes.mp4']['ok'] and 'cannot open video' in by_name['notes.mp4']['error']
  printed = capsys.readouterr().out
  assert 'pancake.mkv' in printed and good['top5'][0][0] in printed

  output = os.path.join(workdir, 'predictions')
  with open(os.path.join(output, predict.PREDICTIONS_FILE)) as f:
    rows = {os.path.basename(r['video']): r for r in csv.DictReader(f)}
  assert rows['pancake.mkv']['error'] == '' and rows['pancake.mkv']['top1'] == good['top5'][0][0]
  assert float(rows['pancake.mkv']['top1_probability']) == pytest.approx(
      good['top5'][0][1], abs=1e-6)
  assert 'empty file' in rows['empty.mp4']['error'] and rows['empty.mp4']['top1'] == ''
  # Its picture keeps its folder below the videos' common folder.
  assert sorted(os.listdir(os.path.join(output, 'nested'))) == ['000_pancake.mkv.png']
  # A second run replaces predictions.csv: said, not done silently. (absl's own level too: an
  # earlier test in the worker may have left it at WARNING.)
  caplog.set_level('INFO', logger='absl')
  # A file cut short (a partial download) is predicted as decoded, and said to be.
  whole = PANCAKE.read_bytes()
  (tmp_path / 'cut.mkv').write_bytes(whole[:len(whole) // 2])
  cut = predict.predict(config, workdir, [str(tmp_path / 'cut.mkv')],
                        output_dir=str(tmp_path / 'o'))
  assert cut[0]['ok'] and 'cut.mkv: decoded 5.' in caplog.text
  assert 's its container declares: the file may be truncated' in caplog.text
  assert 'Wrote ' in caplog.text and 'replaces the one an earlier run wrote' not in caplog.text
  predict.predict(config, workdir, [str(folder / 'empty.mp4')])
  assert ('predictions.csv: 0 predicted, 1 failed (it replaces the one an earlier run wrote '
          'there; --output_dir keeps both).') in caplog.text


def test_a_missing_path_fails_before_the_model_loads(trained, tmp_path, monkeypatch):
  config, workdir = trained

  def no_model(*args, **kwargs):
    raise AssertionError('the model must not load for a bad --video')

  monkeypatch.setattr(predict.engine, 'Engine', no_model)
  with pytest.raises(predict.PredictInputError, match='nope.mp4 does not exist'):
    predict.predict(config, workdir, [str(tmp_path / 'nope.mp4')])
  for window, stride in [(-2, 2), (4, 0)]:  # never silently whole videos or a window per frame
    bad = config.copy_and_resolve_references()
    bad.predict.window_seconds, bad.predict.stride_seconds = window, stride
    with pytest.raises(predict.errors.ConfigError, match='windows need both > 0'):
      predict.predict(bad, workdir, [str(tmp_path / 'nope.mp4')])
  (tmp_path / 'only_text').mkdir()
  (tmp_path / 'only_text' / 'a.txt').write_text('x')
  with pytest.raises(predict.PredictInputError, match='No video file'):
    predict.predict(config, workdir, [str(tmp_path / 'only_text')])
  (tmp_path / 'a.mp4').write_bytes(b'')
  for mode in (predict.predict, features.extract):  # a misspelt --workdir: named, not created
    with pytest.raises(checkpoints.NoCheckpointError, match='typo/checkpoints: train first'):
      mode(config, str(tmp_path / 'typo'), [str(tmp_path / 'a.mp4')])
    assert not (tmp_path / 'typo').exists()
    explicit = config.copy_and_resolve_references()  # a misspelt checkpoint path likewise
    explicit.eval.checkpoint = str(tmp_path / 'no_such_step')
    with pytest.raises(checkpoints.NoCheckpointError, match='no_such_step does not exist'):
      mode(explicit, str(tmp_path / 'typo'), [str(tmp_path / 'a.mp4')])
    assert not (tmp_path / 'typo').exists()


def test_clips_per_forward_that_does_not_split_a_predict_batch_fails_before_the_model_loads(
    trained, tmp_path, monkeypatch):
  """Eval checks config.eval.clips_per_device_forward against its batch of eval_batch_size
  videos; predict and features hold one video a device (windowed predict window_batch windows),
  and a value eval took (here 8: 4 videos x 2 views) failed there only after the model loaded,
  naming 'an eval batch', with no CSV (audit)."""
  config, workdir = trained
  (tmp_path / 'a.mp4').write_bytes(b'')

  def no_model(*args, **kwargs):
    raise AssertionError('the model must not load for a clips_per_device_forward that fails')

  monkeypatch.setattr(predict.engine, 'Engine', no_model)
  config = config.copy_and_resolve_references()
  config.eval.clips_per_device_forward = 8
  predict.engine.check_batch_sizes(config, 1)  # what eval takes
  for mode, holds in [(predict.predict, 'the 2 clips each device holds in a predict batch (1 '
                       'video a device x 2 views)'),
                      (features.extract, 'the 2 clips each device holds in a features batch (1 '
                       'video a device x 2 views)')]:
    with pytest.raises(errors.ConfigError, match=re.escape(
        f'config.eval.clips_per_device_forward=8 must divide {holds}')):
      mode(config, workdir, [str(tmp_path / 'a.mp4')])
  config.predict.update(window_seconds=1.0, stride_seconds=1.0, window_batch=3)
  with pytest.raises(errors.ConfigError, match=re.escape(
      'must divide the 6 clips each device holds in a windowed predict batch (3 windows a '
      'device x 2 views)')):
    predict.predict(config, workdir, [str(tmp_path / 'a.mp4')])


def test_no_video_is_said_for_the_mode_that_needs_one():
  """--mode=features without --video said '--mode=predict needs at least one --video' (audit)."""
  config = demo.get_config()
  with pytest.raises(predict.PredictInputError, match=r'^--mode=predict needs at least one'):
    predict.predict(config, '/no/workdir', [])
  with pytest.raises(predict.PredictInputError, match=r'^--mode=features needs at least one'):
    features.extract(config, '/no/workdir', [])


def test_a_video_named_twice_is_scored_once(tmp_path, caplog):
  """A folder and a file in it, the same path twice, or a link to a video beside it: each video
  was scored (and counted in the CSV) as often as it was named."""
  (tmp_path / 'videos' / 'sub').mkdir(parents=True)
  for name in ('a.mp4', 'sub/b.mp4'):
    (tmp_path / 'videos' / name).write_bytes(b'x')
  os.symlink('a.mp4', tmp_path / 'videos' / 'latest.mp4')
  folder = str(tmp_path / 'videos')
  found = predict.find_videos([folder, f'{folder}/sub/b.mp4', f'{folder}/./a.mp4'])
  assert found == [f'{folder}/a.mp4', f'{folder}/sub/b.mp4']
  assert ('3 of the --video files are a video found before (e.g. latest.mp4 is a.mp4): each video '
          'is scored once, under the first path that names it.') in caplog.text
  caplog.clear()
  assert predict.find_videos([folder + '/sub']) == [f'{folder}/sub/b.mp4']
  assert 'found before' not in caplog.text


def test_hidden_videos_of_a_folder_are_named_when_left_out(tmp_path, caplog):
  """A hidden video in a --video folder (a renamed clip, one in a hidden sub-folder) was left
  out of predict and features without a word."""
  (tmp_path / 'videos' / '.old').mkdir(parents=True)
  for name in ('a.mp4', '.b.mp4', '.old/c.mp4'):
    (tmp_path / 'videos' / name).write_bytes(b'x')
  (tmp_path / 'videos' / '.current').symlink_to('.', target_is_directory=True)  # no hidden video
  (tmp_path / 'videos' / '.old' / '.up').symlink_to('..', target_is_directory=True)
  (tmp_path / 'elsewhere').mkdir()  # a hidden link to a folder outside the tree (user audit)
  (tmp_path / 'elsewhere' / 'd.mp4').write_bytes(b'x')
  (tmp_path / 'videos' / '.more').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)
  folder = str(tmp_path / 'videos')
  assert predict.find_videos([folder]) == [f'{folder}/a.mp4']
  assert (f'{folder}: leaving out 3 hidden video file(s) (.b.mp4, .more/d.mp4, .old/c.mp4); '
          'rename any to include so that no part of its path starts with a dot.') in caplog.text


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_a_video_whose_name_is_not_utf8_is_refused_before_any_is_read(trained, tmp_path, caplog):
  """A latin-1 file name (from an old archive) ended predict in TensorFlow's traceback ('Unable
  to convert element to UTF-8') after the videos before it were scored, writing none."""
  config, workdir = trained
  folder = tmp_path / 'videos'
  folder.mkdir()
  shutil.copy(PANCAKE, folder / 'pancake.mkv')
  shutil.copy(PANCAKE, folder / os.fsdecode(b'cr\xeape.mkv'))
  (folder / os.fsdecode(b'notes \xe9t\xe9.txt')).write_text('no video extension\n')
  output = tmp_path / 'out'
  caplog.set_level('INFO', logger='absl')
  with pytest.raises(predict.PredictInputError, match=(
      r'^1 video path\(s\) are not UTF-8 text, which the outputs name videos in: '
      rf'{re.escape(str(folder))}/cr\\xeape\.mkv \(undecodable bytes shown escaped\)\. Rename')):
    predict.predict(config, workdir, [str(folder)], str(output))
  assert not output.exists()
  assert 'skipping 1 file(s) without a video extension (notes \\xe9t\\xe9.txt)' in caplog.text


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_a_relative_video_path_with_a_colon_is_predicted(trained, tmp_path, monkeypatch):
  """FFmpeg reads 'NAME:...' as a protocol: `--video='12:30 pancake.mkv'` from its folder failed
  as 'cannot open video (ProtocolNotFoundError ...)', a good video called unreadable."""
  config, workdir = trained
  shutil.copy(PANCAKE, tmp_path / '12:30 pancake.mkv')
  monkeypatch.chdir(tmp_path)
  results = predict.predict(config, workdir, ['12:30 pancake.mkv'], str(tmp_path / 'out'))
  assert [(r['video'], r['ok'], r['error']) for r in results] == [
      ('12:30 pancake.mkv', True, '')], results


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_the_outputs_of_a_video_whose_name_fills_the_file_name_limit_are_written(trained,
                                                                                 tmp_path):
  """Downloaders keep titles up to the 255-byte limit: predict's picture ('000_NAME.png', written
  as '.png.tmp') overran it and ended in 'File name too long' after scoring, writing no CSV;
  the timeline and the features file did too. Cut names stay apart by a hash of the name."""
  config, workdir = trained
  names = ['\u00e9' * 100 + 'v' * 46 + '.mkv', '\u00e9' * 100 + 'w' * 46 + '.mkv']  # 250 bytes
  folder = tmp_path / 'videos'
  folder.mkdir()
  for name in names:
    shutil.copy(PANCAKE, folder / name)
  windowed = config.copy_and_resolve_references()
  windowed.predict.update(window_seconds=1.0, stride_seconds=1.0, window_batch=3)
  for settings, run, suffixes in [(config, predict.predict, ('.png',)),
                                  (windowed, predict.predict, ('.timeline.json', '.timeline.png')),
                                  (config, features.extract, ('.npy',))]:
    output = tmp_path / 'out'
    shutil.rmtree(output, ignore_errors=True)
    assert [r['ok'] for r in run(settings, workdir, [str(folder)], str(output))] == [True, True]
    written = sorted(n for n in os.listdir(output) if n.endswith(suffixes))
    assert len(written) == 2 * len(suffixes), written
    for name in written:
      assert len(name.encode()) <= 255 - len('.tmp'), name
      assert re.fullmatch(r'(000_)?\u00e9{100}[vw]*~[0-9a-f]{8}(\.timeline)?\.(png|json|npy)',
                          name), name


def test_a_video_file_named_on_the_command_line_is_checked_for_utf8_too(tmp_path):
  """The check covers each --video given as a file, not only the videos found in a folder,
  and the file after a good one."""
  good, bad = tmp_path / 'pancake.mkv', tmp_path / os.fsdecode(b'cr\xeape.mkv')
  for path in (good, bad):
    path.write_bytes(b'')  # listed by name only
  with pytest.raises(predict.PredictInputError, match=(
      r'^1 video path\(s\) are not UTF-8 text, which the outputs name videos in: '
      rf'{re.escape(str(tmp_path))}/cr\\xeape\.mkv \(undecodable bytes shown escaped\)\.')):
    predict.find_videos([str(good), str(bad)])


def test_features_mode_refuses_an_export(trained, tmp_path):
  """--config.predict.exported was ignored by features mode, which read the workdir's checkpoint
  without a word."""
  config, workdir = trained
  exported = config.copy_and_resolve_references()
  exported.predict.exported = str(tmp_path / 'export' / 'stablehlo')
  with pytest.raises(predict.errors.ConfigError, match='config.predict.exported=.* is for '
                     'predict mode only'):
    features.extract(exported, workdir, [str(tmp_path / 'a.mp4')])


@pytest.mark.parametrize('exported', [False, True], ids=['checkpoint', 'export'])
def test_predict_in_a_process_group_is_refused_before_anything_is_read(exported, tiny_data_dir,
                                                                       tmp_path, monkeypatch):
  """Through an export, predict ran whole in every process of a group, each writing the same
  files (audit: one crashed on another's temporary file); through a checkpoint it was refused."""
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(tiny_data_dir)
  if exported:
    config.predict.exported = str(tmp_path / 'export' / 'stablehlo')
  monkeypatch.setattr(predict.jax, 'process_count', lambda: 2)
  with pytest.raises(predict.errors.ConfigError, match='Predict and features modes run in one '
                     'process; start them without JAX_COORDINATOR_ADDRESS'):
    predict.predict(config, str(tmp_path / 'no_run'), [str(tmp_path / 'a.mp4')])


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_features_under_remat_are_those_without(trained, tmp_path):
  """Features are read inside the forward, and under config.remat 'elementwise' or 'full' (the
  K400 SaliNet and R3D-18 recipes) they leaked out of jax.checkpoint: --mode=features failed
  with an UnexpectedTracerError (audit)."""
  config, workdir = trained
  folder = tmp_path / 'videos'
  folder.mkdir()
  shutil.copy(PANCAKE, folder / 'clip.mkv')
  rematted = config.copy_and_resolve_references()
  rematted.remat = 'elementwise'
  read = {}
  for name, settings in (('none', config), ('elementwise', rematted)):
    assert features.extract(settings, workdir, [str(folder)], str(tmp_path / name))[0]['ok']
    read[name] = np.load(tmp_path / name / 'clip.mkv.npy')
  np.testing.assert_allclose(read['elementwise'], read['none'], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
@pytest.mark.parametrize('mode', ['predict', 'features', 'windowed'])  # review: + windowed
def test_running_out_of_device_memory_says_which_setting_holds_fewer_clips(trained, tmp_path,
                                                                           monkeypatch, mode):
  """Predict and features ended on XLA's RESOURCE_EXHAUSTED, which names bytes, not the clips a
  device held in a forward pass nor config.eval.clips_per_device_forward. Here the model's
  pass needs a 16 TiB temporary, which XLA cannot allocate on any host."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config, workdir = trained
  folder = tmp_path / 'videos'
  folder.mkdir()
  shutil.copy(PANCAKE, folder / 'clip.mkv')
  if mode == 'windowed':
    config = config.copy_and_resolve_references()
    config.predict.update(window_seconds=1.0, stride_seconds=1.0, window_batch=3)
  module, name = (features, 'view_features') if mode == 'features' else (evaluate, 'eval_step')
  plain = getattr(module, name)

  def needs_16_tib(variables, batch, **kwargs):
    rows = jax.lax.broadcasted_iota(jnp.float32, (2**20, 2**22), 0)
    huge = jnp.sort(jnp.sin(rows * jnp.mean(batch['video'])), axis=0)[0, 0]
    return jax.tree.map(lambda x: x + huge.astype(x.dtype), plain(variables, batch, **kwargs))

  monkeypatch.setattr(module, name, needs_16_tib)
  run = features.extract if mode == 'features' else predict.predict
  with pytest.raises(MemoryError, match=r'^Out of device memory running the model on \d+ clips? '
                     r'a device in each forward pass .*config\.eval\.clips_per_device_forward'):
    run(config, workdir, [str(folder)], str(tmp_path / 'out'))


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_a_video_that_fails_now_keeps_no_outputs_of_an_earlier_run(trained, tmp_path, caplog):
  """Features (and a predict's timeline or picture) of a video an earlier run scored stayed
  beside an index saying that this run could not read it: a glob of *.npy read the old
  features."""
  config, workdir = trained
  folder, out = tmp_path / 'videos', tmp_path / 'out'
  folder.mkdir()
  shutil.copy(PANCAKE, folder / 'clip.mkv')
  assert features.extract(config, workdir, [str(folder)], str(out))[0]['ok']
  windowed = config.copy_and_resolve_references()
  windowed.predict.window_seconds = 4.0
  assert predict.predict(windowed, workdir, [str(folder)], str(out))[0]['ok']
  pictured = config.copy_and_resolve_references()
  pictured.eval.num_visualizations = 1
  assert predict.predict(pictured, workdir, [str(folder)], str(out))[0]['ok']
  written = ['clip.mkv.npy', 'clip.mkv.timeline.json', 'clip.mkv.timeline.png',
             '000_clip.mkv.png']
  assert all((out / name).exists() for name in written)
  (folder / 'clip.mkv').write_bytes(b'no longer a video')
  caplog.clear()
  assert not features.extract(config, workdir, [str(folder)], str(out))[0]['ok']
  assert not predict.predict(config, workdir, [str(folder)], str(out))[0]['ok']
  assert not any((out / name).exists() for name in written)
  for removed in (written[:1], written[1:]):
    assert (f'{folder / "clip.mkv"}: removed {", ".join(str(out / n) for n in removed)}, written '
            'for it by an earlier run.') in caplog.text


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_windows_further_apart_than_they_are_long_are_said_to_leave_gaps(trained, tmp_path,
                                                                         caplog):
  """A stride of 3 s with windows of 0.5 s scored a sixth of the video, and its top-5 (the mean
  over the windows) was given for the whole video without a word."""
  config, workdir = trained
  windowed = config.copy_and_resolve_references()
  windowed.predict.window_seconds, windowed.predict.stride_seconds = 0.5, 3.0
  assert predict.predict(windowed, workdir, [str(PANCAKE)], str(tmp_path / 'out'))[0]['ok']
  assert ('config.predict.stride_seconds=3 is longer than window_seconds=0.5: 2.5 s of every 3 s '
          'of each video are in no window (neither in its timeline nor in its top-5).'
          ) in caplog.text
  caplog.clear()
  windowed.predict.stride_seconds = 0.5
  assert predict.predict(windowed, workdir, [str(PANCAKE)], str(tmp_path / 'out'))[0]['ok']
  assert 'in no window' not in caplog.text


def test_a_checkpoint_without_class_names_is_refused_clearly(trained, tmp_path):
  config, workdir = trained
  copy = tmp_path / 'old_run'
  shutil.copytree(workdir, copy)
  step_dir = copy / 'checkpoints' / '2'
  import json  # pylint: disable=g-import-not-at-top
  meta_path = step_dir / '_CHECKPOINT_METADATA'
  meta = json.loads(meta_path.read_text())
  del meta['custom_metadata']['classes']
  meta_path.write_text(json.dumps(meta))
  (copy / 'video.mp4').write_bytes(b'x')
  with pytest.raises(checkpoints.CheckpointError, match='carries no class names'):
    predict.predict(config, str(copy), [str(copy / 'video.mp4')])


def test_the_predictor_holds_the_variables_not_the_optimizer_state(trained):
  """Only the variables stay in memory once a checkpoint is restored for prediction: SGD's
  momentum, as large as the parameters, was held throughout (about 140 MiB for SaliNet)."""
  import gc  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  config, workdir = trained

  def live_bytes():
    gc.collect()
    return sum(a.nbytes for a in jax.live_arrays())

  before = live_bytes()
  predictor = predict.Predictor(config, workdir)
  held = live_bytes() - before
  variables = sum(x.nbytes for x in jax.tree.leaves(predictor.variables))
  params = sum(x.nbytes for x in jax.tree.leaves(predictor.variables['params']))
  assert variables <= held < variables + params // 2, (held, variables, params)


def test_videos_are_decoded_as_the_records_were_converted(tmp_path):
  """Records converted at --fps=8 --max_frames=12 were scored by eval on those frames, while
  predict (and features, windowed predict, predict through an export) decoded every native
  frame of the same files: other clips, other scores, no word. Records stored at a short side
  other than the eval one (resized again by the eval ops) were likewise scored on other pixels
  than predict's, which resized each video straight to the eval short side."""
  from data import convert  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from tests.test_data_convert import FIGHT, _jpeg, _videos  # pylint: disable=g-import-not-at-top
  videos = tmp_path / 'videos'
  for label, clip in (('fight', 'fi001.mp4'), ('noFight', 'nofi001.mp4')):
    (videos / label).mkdir(parents=True)
    (videos / label / clip).symlink_to(FIGHT / label / clip)
  data_dir = tmp_path / 'records'
  assert convert.main(['--dataset=folder', f'--input={videos}', f'--output={data_dir}',
                       '--fps=8', '--max_frames=12', '--short_side=20', '--jpeg_quality=70',
                       '--interpolation=AREA', '--workers=1', '--quiet']) == 0
  config = tiny_config(str(data_dir))
  config.dataset.update(dict(name='folder', train_split='train', eval_split='train'))
  config.update(dict(batch_size=2, eval_batch_size=2))
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)

  predictor = predict.Predictor(config, workdir)
  assert config.data.eval_short_side == 16
  assert predictor.decoding == {'fps': 8.0, 'max_frames': 12, 'stream_clock': True,
                                'short_side': 20, 'jpeg_quality': 70, 'interpolation': 'AREA'}
  stored = _videos(data_dir, 'train')
  for label, clip in (('fight', 'fi001.mp4'), ('noFight', 'nofi001.mp4')):
    decoded = predictor.decode(str(videos / label / clip))
    _, _, fps, frames = stored[f'{label}/{clip}']
    assert decoded.fps == fps == 8 and len(decoded.jpegs) == len(frames) == 12
    for got, want in zip(decoded.jpegs, frames):
      np.testing.assert_array_equal(_jpeg(got), want)
    # and the eval ops then see the same clip as the evaluation of the records
    views = next(iter(predictor.batches(decoded.jpegs, decoded.fps, clip)))['video'][0]
    dataset, _, info = pipeline.eval_dataset(config, 'train')
    evaluated = [batch['video'][i] for batch in pipeline.as_numpy(dataset, info)
                 for i, name in enumerate(batch['filename']) if name.decode() == f'{label}/{clip}']
    assert len(evaluated) == 1
    np.testing.assert_array_equal(views, evaluated[0])
  # Windowed predict streams the video at the same rate, picking the same frames: 1-second
  # windows of 8 frames, and a window longer than the video holds what the converter stores.
  path = str(videos / 'fight' / 'fi001.mp4')
  options = pipeline.frame_options(config.data, predictor.decoding)
  window = next(timeline.windows(path, options, 1.0, 1.0, predictor.decoding['fps']))
  assert window[2] == 8 and len(window[3]) == 8
  whole = list(timeline.windows(path, options, 1e4, 1e4, predictor.decoding['fps']))
  assert whole[0][3] == video_io.decode_video(path, fps=8, **options).jpegs


def test_windowed_predict_warns_of_a_truncated_file_as_whole_video_predict_does(tmp_path,
                                                                                caplog):
  """Windowed predict streams its frames and never computed the decoder's warnings: a file cut
  to half its bytes was scored window by window without a word."""
  whole = PANCAKE.read_bytes()
  cut = tmp_path / 'cut.mkv'
  cut.write_bytes(whole[:len(whole) // 2])
  options = {'short_side': 16, 'frame_height': 0, 'jpeg_quality': 90,
             'interpolation': 'BILINEAR'}
  caplog.set_level('WARNING', logger='absl')
  windows = list(timeline.windows(str(cut), options, 2.0, 2.0))
  assert windows and windows[-1][1] == 150  # its 150 decodable frames
  assert f'{cut}: decoded 5.0 s of the 10.3 s its container declares' in caplog.text
  caplog.clear()
  starts = [window[0] for window in timeline.windows(str(PANCAKE), options, 4.0, 4.0)]
  assert 'container declares' not in caplog.text
  # Windows start at the first frame, every stride (mutation audit: the first window dropped
  # passed every test); the last one ends at the video's end.
  stride = timeline.window_frames(4.0, video_io.stream_timing(str(PANCAKE))[0])
  assert starts[:-1] == list(range(0, stride * (len(starts) - 1), stride)), starts


def test_decoding_that_cannot_be_matched_is_warned_about(trained, caplog):
  """A checkpoint (or export) from before the decoding was kept, or of frame folders of unknown
  rate, decodes at the native rate, and one from before the frames' size was kept resizes
  straight to the eval short side: said, not silent. Synthetic clips need no word."""
  config, workdir = trained
  with caplog.at_level('INFO', logger='absl'):
    assert predict.Predictor(config, workdir).decoding == {
        'fps': 0.0, 'max_frames': 0, 'short_side': config.dataset.synthetic.frame_size,
        'jpeg_quality': config.dataset.synthetic.jpeg_quality, 'interpolation': 'BILINEAR'}
    assert 'decoded' not in caplog.text and 'resized' not in caplog.text
    predict.say_decoding({}, 'Checkpoint c')
    predict.say_decoding({'fps': 0.0, 'max_frames': 0, 'rate_unknown': True}, 'checkpoint d')
    predict.say_decoding({'fps': 8.0, 'max_frames': 0}, 'Checkpoint e')
  # Audit: without any record the pixels change too (straight to the eval short side), and
  # that went unsaid.
  assert ('Checkpoint c does not record how its eval records decoded their videos (it predates '
          'that, or the records do not say): videos are decoded at their native frame rate and '
          'resized straight to the eval short side, so their clips differ from the '
          "evaluation's if the records were converted with --fps or --max_frames, and their "
          'pixels slightly where the records stored frames at another size.' in caplog.text)
  assert ('The eval records of checkpoint d are frame folders of unknown rate (converted '
          'without --frames_fps)' in caplog.text)
  assert ('Checkpoint e does not record the short side, JPEG quality and filter its eval records '
          'stored frames with (it predates that): videos are resized straight to the eval short '
          'side' in caplog.text)


def test_what_the_clips_of_a_whole_video_miss_is_said(trained, tmp_path, caplog):
  """A video shorter than a clip (its clips repeat frames) was predicted without a word, while
  windowed predict said so of its windows."""
  config, workdir = trained
  short = tmp_path / 'two_frames.avi'
  write_moving_bar_video(short, seconds=1, fps=2)
  caplog.set_level('WARNING', logger='absl')
  results = predict.predict(config, workdir, [str(short)], output_dir=str(tmp_path / 'out'))
  assert results[0]['ok']
  assert (f"{short}: it has 2 frames, fewer than a clip's 4 (temporal_sampling='dense'): its "
          'clips loop, repeat or squeeze frames.') in caplog.text, caplog.text


def test_clip_coverage_names_what_clips_miss():
  """S2DNet's all_frames clips take the first num_frames x frame_stride frames of a video: a
  longer video was scored on its start alone, without a word."""
  data = mini_kinetics_s2dnet.get_config('warmup').data
  assert (data.temporal_sampling, data.num_frames, data.frame_stride) == ('all_frames', 150, 2)
  assert predict.clip_coverage(data, 300, 30.0) == []
  assert predict.clip_coverage(data, 900, 30.0) == [
      "its clips take only its first 300 of 900 frames (10.0 s of 30.0 s; "
      "temporal_sampling='all_frames' takes at most num_frames x frame_stride = 150 x 2): the "
      'rest is not scored; windowed predict (config.predict.window_seconds at most 10.0 s) '
      'scores all of it.']
  assert predict.clip_coverage(data, 1, 30.0) == []  # all_frames takes the frames there are
  # A 10 s clip decoded to 301 frames misses one: not worth a line on every prediction.
  assert predict.clip_coverage(data, 301, 30.0) == []


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_s2dnet_predict_says_its_clips_take_the_start_of_long_videos_and_windows(
    s2dnet_stage_runs, tmp_path, caplog):
  """The tiny S2DNet takes 6 frames: predict of the 310-frame pancake, and its 4 s windows, were
  scored on their first 6 frames (0.2 s) alone, without a word."""
  config, workdir, _ = s2dnet_stage_runs['warmup']
  config = config.copy_and_resolve_references()
  caplog.set_level('WARNING', logger='absl')
  predict.predict(config, workdir, [str(PANCAKE)], output_dir=str(tmp_path / 'whole'))
  assert (f"{PANCAKE}: its clips take only its first 6 of 310 frames (0.2 s of 10.3 s; "
          "temporal_sampling='all_frames' takes at most num_frames x frame_stride = 6 x 1)"
          ) in caplog.text, caplog.text
  config.predict.window_seconds = config.predict.stride_seconds = 4.0
  caplog.clear()
  predict.predict(config, workdir, [str(PANCAKE)], output_dir=str(tmp_path / 'windows'))
  assert (f"{PANCAKE}: its windows hold 120 frames (4 s at 30 fps), but a clip takes only the "
          "first 6 of them (temporal_sampling='all_frames' takes at most num_frames x "
          'frame_stride = 6 x 1): windows of at most 0.20 s are scored whole.') in caplog.text, (
              caplog.text)


def test_a_video_shorter_than_a_window_is_one_window_of_all_its_frames(tmp_path):
  """20 frames under windows of 30 every 10: the last-window rule saw (20 - 30) % 10 == 0 as a
  window already taken (mutation audit: that passed every test). Window lengths round to the
  nearest frame: 2 s at 29.97 fps hold 60 frames, not 59."""
  path = tmp_path / 'short.mp4'
  write_moving_bar_video(path, seconds=2, fps=10)
  options = {'short_side': 16, 'frame_height': 0, 'jpeg_quality': 90,
             'interpolation': 'BILINEAR'}
  got = [(first, end, len(frames)) for first, end, _, frames
         in timeline.windows(str(path), options, 3.0, 1.0)]
  assert got == [(0, 20, 20)]
  assert timeline.window_frames(2.0, 29.97) == 60


def test_tied_probabilities_keep_the_class_order():
  """Classes of equal probability are listed in class order, as the evaluation's top-5 lists
  them (mutation audit: the reverse passed every test)."""
  ranked = predict.Predictor.top(types.SimpleNamespace(classes=list('abcdef')),
                                 np.array([0.1, 0.3, 0.1, 0.3, 0.1, 0.1]))
  assert [name for name, _ in ranked] == ['b', 'd', 'a', 'c', 'e']


@pytest.mark.parametrize('windows, name', [(1, 'a_rather_long_video_name_from_a_camera.mp4'),
                                           (3, 'a_rather_long_video_name_from_a_camera.mp4'),
                                           (400, 'a_rather_long_video_name_from_a_camera.mp4'),
                                           (1, 'cam' * 40 + '.mp4')])
def test_the_timeline_picture_shows_its_whole_title(windows, name, tmp_path, monkeypatch):
  """The PNG of a short video was cut at 'most probable in some wind' (audit): its width follows
  the window count, and the one-line title was wider than a few windows' figure. A video of one
  window drew no point at all (a line through one point)."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(figure.Figure, 'savefig', lambda fig, *a, **k: saved.append(fig))
  spans = [(2.0 * i, 2.0 * i + 4) for i in range(windows)]
  probs = np.random.default_rng(0).dirichlet(np.ones(4), size=windows)
  timeline._plot(str(tmp_path / 'a.png'), spans, probs, ['a', 'b', 'c', 'd'], 3, name)
  fig = saved[0]
  renderer = backend_agg.FigureCanvasAgg(fig).get_renderer()
  title = fig.axes[0].title.get_window_extent(renderer)
  assert fig.axes[0].get_title().endswith('\nthe 3 classes most probable in some window')
  assert name[:20] in fig.axes[0].get_title() and name[-20:] in fig.axes[0].get_title()
  assert 0 <= title.x0 and title.x1 <= fig.bbox.width, (title, fig.bbox)
  if windows == 1:
    assert all(line.get_marker() not in (None, '', 'None') for line in fig.axes[0].get_lines())


_TINY_CONFIG_FILE = '''
from tests.conftest import tiny_config


def get_config():
  return tiny_config({data_dir!r})
'''


@pytest.mark.parametrize('mode', ['features', 'windowed predict'])
def test_a_ctrl_c_during_a_progress_bar_says_its_line_below_the_bar(mode, trained, tiny_data_dir,
                                                                   tmp_path):
  """A Ctrl-C during features' bar (or windowed predict's) came glued to the bar's end, and the
  bar was drawn again below it as the interrupted loop was collected (README review)."""
  _, workdir = trained
  (tmp_path / 'tiny.py').write_text(_TINY_CONFIG_FILE.format(data_dir=str(tiny_data_dir)))
  videos = tmp_path / 'videos'
  videos.mkdir()
  if mode == 'features':  # enough videos for the bar to last past its first one
    write_moving_bar_video(videos / 'v00.mp4', seconds=2)
    for i in range(1, 40):
      shutil.copy(videos / 'v00.mp4', videos / f'v{i:02d}.mp4')
    args, first_step = ['--mode=features'], re.compile(r'features: +\d+%.*\| [1-9]\d*/40 ')
  else:  # one window a step
    write_moving_bar_video(videos / 'long.mp4', seconds=24)
    args = ['--mode=predict', '--config.predict.window_seconds=1',
            '--config.predict.stride_seconds=0.25', '--config.predict.window_batch=1']
    first_step = re.compile(r'long\.mp4: [1-9]\d*window ')
  proc = subprocess.Popen(
      [sys.executable, 'main.py', f'--config={tmp_path / "tiny.py"}', f'--workdir={workdir}',
       f'--video={videos}', f'--output_dir={tmp_path / "out"}', *args], cwd=REPO_ROOT,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env())
  stderr = []

  def read() -> None:  # the bar rewrites its line with '\r': read as it comes, not by lines
    while chunk := proc.stderr.read1(4096):
      stderr.append(chunk.decode())

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    deadline = time.monotonic() + 240
    while not first_step.search(''.join(stderr).rsplit('\r', 2)[-1]):
      assert time.monotonic() < deadline and proc.poll() is None, ''.join(stderr)[-3000:]
      time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
  finally:
    proc.kill()
    proc.wait()
  reader.join(timeout=10)
  text = ''.join(stderr)
  assert proc.returncode == 130, text[-3000:]
  lines = [_as_shown(line) for line in text.split('\n')]
  assert lines[-2:] == ['Interrupted by Ctrl-C. Exit status 130.', ''], text[-3000:]
  if mode == 'features':  # the bar stays, at the video it stopped in, above the line
    assert re.fullmatch(r'features: +\d+%.*/40 \[.*\]', lines[-3]), text[-3000:]
  else:  # the video's bar is wiped (as when the video ends), and the line written over it
    assert '\r' + ' ' * 20 in text.split('\n')[-2], text[-3000:]


def _as_shown(line: str) -> str:
  """A console line as a terminal shows it: each '\\r' returns to its start and writes over it."""
  shown = ''
  for part in line.split('\r'):
    shown = part + shown[len(part):]
  return shown.rstrip()


def _stopped_at_the_third_video(monkeypatch, module, name: str):
  """Has `module.name` (the work done for one video) raise a KeyboardInterrupt at its third
  call, as a Ctrl-C there; returns the list of the videos it was called for."""
  real, calls = getattr(module, name), []

  def counted(*args, **kwargs):
    calls.append(args)
    if len(calls) == 3 and stopping:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  stopping = [True]
  monkeypatch.setattr(module, name, counted)
  return calls, stopping


def test_features_stopped_part_way_go_on_where_they_stopped(trained, tmp_path, monkeypatch,
                                                            caplog):
  """A features run over a long list stopped part-way (Ctrl-C, SIGTERM) lost every video, as
  its index is written at the end: the same command did them all again (README review)."""
  config, workdir = trained
  videos = tmp_path / 'videos'
  videos.mkdir()
  for i in range(4):
    write_moving_bar_video(videos / f'v{i}.mp4', seconds=2 + i)
  whole = features.extract(config, workdir, [str(videos)], str(tmp_path / 'whole'))
  calls, stopping = _stopped_at_the_third_video(monkeypatch, features, '_one_video')
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt):
    features.extract(config, workdir, [str(videos)], str(out))
  assert not (out / features.INDEX_FILE).exists() and len(list(out.glob('.features_progress_*')))
  stopping.clear()
  caplog.set_level('INFO', logger='absl')
  del calls[:]
  again = features.extract(config, workdir, [str(videos)], str(out))
  assert [os.path.basename(args[2]) for args in calls] == ['v2.mp4', 'v3.mp4']
  assert (f'Going on from the run stopped in {out}: 2 of 4 video(s) done there, with the same '
          'weights and settings, are kept') in caplog.text
  assert [r['video'] for r in again] == [r['video'] for r in whole]
  for done, expected in zip(again, whole):
    np.testing.assert_array_equal(np.load(done['features']), np.load(expected['features']))
  assert ((out / features.INDEX_FILE).read_text()
          == (tmp_path / 'whole' / features.INDEX_FILE).read_text().replace(
              str(tmp_path / 'whole'), str(out)))
  assert not list(out.glob('.features_progress_*'))  # a finished run: the next starts over
  del calls[:]
  features.extract(config, workdir, [str(videos)], str(out))
  assert len(calls) == 4
  # Stopped again; then a video rewritten, and other settings: neither is kept.
  stopping.append(True)
  del calls[:]
  with pytest.raises(KeyboardInterrupt):
    features.extract(config, workdir, [str(videos)], str(out))
  stopping.clear()
  write_moving_bar_video(videos / 'v0.mp4', seconds=3)
  del calls[:]
  features.extract(config, workdir, [str(videos)], str(out))
  assert [os.path.basename(args[2]) for args in calls] == ['v0.mp4', 'v2.mp4', 'v3.mp4']
  stopping.append(True)
  del calls[:]
  with pytest.raises(KeyboardInterrupt):
    features.extract(config, workdir, [str(videos)], str(out))
  stopping.clear()
  per_view = config.copy_and_resolve_references()
  per_view.features.per_view = True
  del calls[:]
  caplog.clear()
  features.extract(per_view, workdir, [str(videos)], str(out))
  assert len(calls) == 4
  assert (f'1 stopped run(s) with other weights or settings left results in {out} '
          '(.features_progress_') in caplog.text
  assert ('they are not used, and this run does every video it has not done itself.'
          in caplog.text)


def test_windowed_predict_stopped_part_way_goes_on_where_it_stopped(trained, tmp_path,
                                                                   monkeypatch, caplog, capsys):
  """As features: a windowed predict over many videos stopped part-way lost them all. A kept
  video whose outputs (its timeline) are gone is done again."""
  config, workdir = trained
  windowed = config.copy_and_resolve_references()
  windowed.predict.update(window_seconds=1.0, stride_seconds=1.0, window_batch=3)
  videos = tmp_path / 'videos'
  videos.mkdir()
  for i in range(4):
    write_moving_bar_video(videos / f'v{i}.mp4', seconds=2 + i)
  predict.predict(windowed, workdir, [str(videos)], str(tmp_path / 'whole'))
  printed = capsys.readouterr().out
  calls, stopping = _stopped_at_the_third_video(monkeypatch, timeline, 'predict_windows')
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt):
    predict.predict(windowed, workdir, [str(videos)], str(out))
  stopping.clear()
  (out / 'v0.mp4.timeline.json').unlink()
  del calls[:]
  capsys.readouterr()
  predict.predict(windowed, workdir, [str(videos)], str(out))
  assert [os.path.basename(args[1]) for args in calls] == ['v0.mp4', 'v2.mp4', 'v3.mp4']
  assert capsys.readouterr().out == printed  # every video's top-5, kept or done now
  assert ((out / predict.PREDICTIONS_FILE).read_text()
          == (tmp_path / 'whole' / predict.PREDICTIONS_FILE).read_text())
  for name in os.listdir(tmp_path / 'whole'):
    if name.endswith('.timeline.json'):
      assert (out / name).read_text() == (tmp_path / 'whole' / name).read_text(), name


def test_a_kept_video_s_features_are_not_overwritten_by_another_video_of_the_run(
    trained, tmp_path, monkeypatch):
  """Review: features of `videos/sub` stopped after `a.mp4` (written as `out/a.mp4.npy`); run
  again with `videos/a.mp4` (another video) added, whose name below the common folder is now
  `a.mp4`: it is done into `out/a.mp4.npy`, over the kept one's features, and the index gives
  that one file for both videos, without a word."""
  config, workdir = trained
  sub = tmp_path / 'videos' / 'sub'
  sub.mkdir(parents=True)
  for i, name in enumerate(['a', 'b', 'c']):
    write_moving_bar_video(sub / f'{name}.mp4', seconds=2 + i)
  other = tmp_path / 'videos' / 'a.mp4'
  write_moving_bar_video(other, seconds=5)
  whole = features.extract(config, workdir, [str(sub), str(other)], str(tmp_path / 'whole'))
  _, _ = _stopped_at_the_third_video(monkeypatch, features, '_one_video')
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt):
    features.extract(config, workdir, [str(sub)], str(out))
  monkeypatch.undo()
  again = features.extract(config, workdir, [str(sub), str(other)], str(out))
  assert len({r['features'] for r in again}) == len(again), [r['features'] for r in again]
  for done, expected in zip(again, whole):
    assert done['video'] == expected['video']
    np.testing.assert_array_equal(np.load(done['features']), np.load(expected['features']),
                                  err_msg=done['video'])


def test_a_kept_video_s_features_overwritten_by_a_run_over_other_videos_are_not_kept(
    trained, tmp_path, monkeypatch):
  """Review: features of `X` stopped part-way; features of `Y` (same file names, other videos)
  into the same folder, stopped too (same settings: its results go on the same progress file);
  the first command run again keeps `X/v0.mp4`, whose `.npy` now holds `Y/v0.mp4`'s features."""
  config, workdir = trained
  for folder, extra in (('X', 0), ('Y', 3)):
    (tmp_path / folder).mkdir()
    for i in range(3):
      write_moving_bar_video(tmp_path / folder / f'v{i}.mp4', seconds=2 + i + extra)
  whole = features.extract(config, workdir, [str(tmp_path / 'X')], str(tmp_path / 'whole'))
  calls, stopping = _stopped_at_the_third_video(monkeypatch, features, '_one_video')
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt):
    features.extract(config, workdir, [str(tmp_path / 'X')], str(out))
  del calls[:]
  with pytest.raises(KeyboardInterrupt):
    features.extract(config, workdir, [str(tmp_path / 'Y')], str(out))
  stopping.clear()
  again = features.extract(config, workdir, [str(tmp_path / 'X')], str(out))
  for done, expected in zip(again, whole):
    np.testing.assert_array_equal(np.load(done['features']), np.load(expected['features']),
                                  err_msg=done['video'])


def test_the_reason_a_kept_video_failed_is_said_again(trained, tmp_path, monkeypatch, caplog):
  """Review: a video that could not be read in the stopped run is kept as failed without its
  reason on the console; with every video failed, main.py then ends with 'No video could be
  read (see the reasons above)', and the kept one's reason is not above."""
  config, workdir = trained
  videos = tmp_path / 'videos'
  videos.mkdir()
  for i in range(3):
    (videos / f'bad{i}.mp4').write_text('not a video')
  calls, stopping = _stopped_at_the_third_video(monkeypatch, features, '_one_video')
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt):
    features.extract(config, workdir, [str(videos)], str(out))
  stopping.clear()
  caplog.set_level('INFO', logger='absl')
  caplog.clear()
  results = features.extract(config, workdir, [str(videos)], str(out))
  assert not any(r['ok'] for r in results)
  for i in range(3):
    assert f'bad{i}.mp4: no features: ' in caplog.text, (i, caplog.text)
