"""The progress file of a stopped predict or features run (salinet_jax/resume.py): what it keeps
and what it must not (an adversarial review's cases)."""

import os
import types

import ml_collections
import numpy as np
import pytest

from salinet_jax import resume


class _Weights:
  variables = {'w': np.zeros(3, np.float32)}


def _config(per_view):
  config = ml_collections.ConfigDict()
  config.features = ml_collections.ConfigDict({'per_view': per_view})
  return config


def _video_and_output(tmp_path, content=b'x'):
  """A video file `v0.mp4` holding `content`, and an empty output folder."""
  video = tmp_path / 'v0.mp4'
  video.write_bytes(content)
  out = tmp_path / 'out'
  out.mkdir()
  return video, out


def test_a_run_with_other_settings_started_beside_one_does_not_file_its_results_under_its_header(
    tmp_path):
  """Two features runs into one folder, started together with other settings (per_view off and
  on), both stopped: the second's results went under the first one's header, so the first
  command run again kept them as its own (other shapes, other values), without a word."""
  videos = [tmp_path / f'v{i}.mp4' for i in range(2)]
  for video in videos:
    video.write_bytes(b'x')
  out = tmp_path / 'out'
  out.mkdir()
  first = resume.Progress(str(out), 'features', _config(False), _Weights())
  second = resume.Progress(str(out), 'features', _config(True), _Weights())
  first.record(str(videos[0]), {'video': str(videos[0]), 'shape': '8'}, [])
  second.record(str(videos[1]), {'video': str(videos[1]), 'shape': '2x8'}, [])
  again = resume.Progress(str(out), 'features', _config(False), _Weights())
  assert again.result(str(videos[0]), []) == {'video': str(videos[0]), 'shape': '8'}
  assert again.result(str(videos[1]), []) is None  # per_view's result, not this command's


@pytest.mark.parametrize('line', [b'{"mode": "features"}\n', b'[]\n', b'"x"\n',
                                  b'\xff\xfe\x80garbage'],
                         ids=['a second header', 'a list', 'a string', 'not utf-8'])
def test_a_damaged_progress_line_is_skipped_not_a_traceback(tmp_path, line):
  """A second header (two runs that started the file at once), a line edited by hand, or bytes
  that are not UTF-8 (a crash of the machine): a KeyError, TypeError or UnicodeDecodeError
  traceback on every later run into the folder, until the hidden file was found and removed."""
  video, out = _video_and_output(tmp_path)
  first = resume.Progress(str(out), 'features', _config(False), _Weights())
  first.record(str(video), {'video': str(video)}, [])
  with open(first.path, 'ab') as f:
    f.write(line)
  again = resume.Progress(str(out), 'features', _config(False), _Weights())
  assert again.result(str(video), []) == {'video': str(video)}


def test_a_video_replaced_by_one_of_its_size_with_its_time_kept_is_done_again(tmp_path):
  """A video replaced by another of the same size whose modification time was kept (cp -p,
  rsync -a, tar x: raw/fixed-size formats have equal sizes) keeps the old video's result:
  (size, mtime_ns) is all that is compared; the inode or st_ctime_ns would tell."""
  video, out = _video_and_output(tmp_path, b'first video')
  first = resume.Progress(str(out), 'features', _config(False), _Weights())
  first.record(str(video), {'video': str(video), 'shape': 'old'}, [])
  stat = video.stat()
  replacement = tmp_path / 'other.mp4'
  replacement.write_bytes(b'other video')
  os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  os.replace(replacement, video)
  again = resume.Progress(str(out), 'features', _config(False), _Weights())
  assert again.result(str(video), []) is None


def test_an_export_s_metadata_is_part_of_its_identity(tmp_path):
  """`weights_identity` of an export hashes its format folder (`predictor.model.directory`);
  its export.json (classes, views, decoding: what predict reads beside the model) is in the
  folder above, so editing it (e.g. renaming a class) keeps the old top-5 names."""
  export = tmp_path / 'export'
  (export / 'stablehlo').mkdir(parents=True)
  (export / 'stablehlo' / 'model.bin').write_bytes(b'weights')
  (export / 'export.json').write_text('{"classes": ["a", "b"]}')
  predictor = types.SimpleNamespace(model=types.SimpleNamespace(
      directory=str(export / 'stablehlo')))
  before = resume.weights_identity(predictor)
  (export / 'export.json').write_text('{"classes": ["b", "a"]}')
  assert resume.weights_identity(predictor) != before


def test_a_progress_file_whose_header_is_another_run_s_keeps_nothing(tmp_path):
  """The file's name holds a hash of its header; one copied or renamed by hand under this run's
  name (its header another run's) kept that run's results as this one's."""
  video, out = _video_and_output(tmp_path)
  other = resume.Progress(str(out), 'features', _config(True), _Weights())
  other.record(str(video), {'video': str(video), 'shape': '2x8'}, [])
  this = resume.Progress(str(out), 'features', _config(False), _Weights())
  os.replace(other.path, this.path)
  again = resume.Progress(str(out), 'features', _config(False), _Weights())
  assert again.result(str(video), []) is None
  # ... and the file starts anew under this run's header, whose results a later run keeps.
  again.record(str(video), {'video': str(video), 'shape': '8'}, [])
  later = resume.Progress(str(out), 'features', _config(False), _Weights())
  assert later.result(str(video), []) == {'video': str(video), 'shape': '8'}
