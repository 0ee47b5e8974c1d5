"""Records written by earlier code stay readable: a fixture of record schema 1 read by today's code.

tests/fixtures/records_schema1/ is what `python -m data.convert` of commit 7008138 (before the
`video/timing` context key) wrote for five 4-frame 16x16 JPEG frame folders:
  --dataset=frames --name=schema1 --short_side=0 --frames_fps=8 --num_shards=2
  --annotations=train=train.txt,val=val.txt  (train.txt also lists `calm_missing`, absent)
Frame i of video v is the solid colour (40 v + 20, 50 i + 30, 200 - 40 v), stored byte for byte.
"""

import fcntl
import io
import json
import os
import pathlib
import re
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import errors as data_errors
from data import records

FIXTURE = pathlib.Path(__file__).resolve().parent / 'fixtures' / 'records_schema1'

# split -> {video/filename: (v, label text)}, v as in the module docstring.
VIDEOS = {'train': {'fight_a': (0, 'fight'), 'fight_b': (1, 'fight'), 'calm_a': (2, 'calm')},
          'val': {'fight_c': (3, 'fight'), 'calm_b': (4, 'calm')}}


def _colour(v, i):
  return (40 * v + 20, 50 * i + 30, 200 - 40 * v)


def test_schema1_metadata_reads_with_its_shards_and_failures():
  metadata = records.read_metadata(str(FIXTURE))
  assert metadata.name == 'schema1' and metadata.schema_version == 1
  assert metadata.classes == ['calm', 'fight']
  assert metadata.split_sizes == {'train': 3, 'val': 2}
  assert metadata.num_shards == {'train': 2, 'val': 2}
  assert [(f['split'], f['file']) for f in metadata.failures] == [('train', 'calm_missing')]
  assert 'timing' not in metadata.extra  # per-split timing counts came later
  for split in ('train', 'val'):
    files = records.shard_files(str(FIXTURE), metadata.name, split)
    assert [pathlib.Path(f).name for f in files] == [s['file'] for s in metadata.shards[split]]
    records.check_shards(files, {s['file']: s['num_bytes'] for s in metadata.shards[split]})
    assert [records.verify_records(f) for f in files] == \
        [s['num_videos'] for s in metadata.shards[split]]


def test_schema1_records_parse_with_frames_labels_fps_and_empty_timing():
  metadata = records.read_metadata(str(FIXTURE))
  for split, expected in VIDEOS.items():
    seen = {}
    for path in records.shard_files(str(FIXTURE), metadata.name, split):
      for serialized in tf.data.TFRecordDataset(path):
        f = records.parse_video_with_context(serialized)
        name = f['filename'].numpy().decode()
        frames = [np.asarray(Image.open(io.BytesIO(b)).convert('RGB'))
                  for b in f['frames_jpeg'].numpy()]
        seen[name] = (int(f['label']), f['label_text'].numpy().decode(), float(f['fps']),
                      int(f['num_frames']), f['timing'].numpy().decode())
        v = expected[name][0]
        assert len(frames) == 4
        for i, frame in enumerate(frames):
          assert frame.shape == (16, 16, 3)
          np.testing.assert_allclose(frame.reshape(-1, 3).mean(0), _colour(v, i), atol=3)
    assert seen == {name: (metadata.classes.index(text), text, 8.0, 4, '')
                    for name, (_, text) in expected.items()}


def test_schema1_opens_with_tfds_builder_from_directory():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(str(FIXTURE))
  assert builder.info.name == 'schema1'
  assert {s: builder.info.splits[s].num_examples for s in ('train', 'val')} == \
      {'train': 3, 'val': 2}
  assert builder.info.splits['train'].shard_lengths == [1, 2]
  label = builder.info.features['clip']['label']['index']
  assert label.names == ['calm', 'fight']
  examples = list(tfds.as_numpy(builder.as_dataset('val')))
  assert sorted(e['video']['filename'].decode() for e in examples) == sorted(VIDEOS['val'])
  assert all(label.names[e['clip']['label']['index']] == e['clip']['label']['text'].decode()
             for e in examples)
  full = list(records.tfds_video_dataset(str(FIXTURE), 'val').as_numpy_iterator())
  assert [e['video'].shape for e in full] == [(4, 16, 16, 3)] * 2
  # Each frame's colour encodes its video and index: frames reversed or decoded as BGR show.
  for example in full:
    v = VIDEOS['val'][example['filename'].decode()][0]
    np.testing.assert_allclose(example['video'].reshape(4, -1, 3).mean(1),
                               [_colour(v, i) for i in range(4)], atol=3)


def test_records_whose_first_conversion_still_runs_name_the_conversion(tmp_path):
  """main.py started on the output of a conversion still writing it for the first time said
  'No metadata.json ...: convert the dataset first (python -m data.convert ...)': a second
  conversion would be refused, and the running one went unnamed (README review)."""
  out = tmp_path / 'records'
  out.mkdir()
  with records.sole_writer(str(out), ['train', 'val']):
    with pytest.raises(records.RecordsBusyError) as raised:
      records.read_metadata(str(out))
  message = str(raised.value)
  assert f'Records folder {out} is being written now by data.convert (pid {os.getpid()}' in message
  assert 'convert the dataset first' not in message, message
  with pytest.raises(records.MissingRecordsError, match='convert the dataset first'):
    records.read_metadata(str(out))  # the conversion gone without its metadata: as before


def test_metadata_whose_sizes_contradict_its_shards_is_refused(tmp_path):
  """split_sizes edited by hand (27 for 28 records) was found after a whole evaluation, as a
  RuntimeError traceback about the pipeline losing videos."""
  copy = tmp_path / 'records'
  shutil.copytree(FIXTURE, copy)
  fields = json.loads((copy / records.METADATA_FILE).read_text())
  fields['split_sizes']['val'] = 3
  (copy / records.METADATA_FILE).write_text(json.dumps(fields))
  with pytest.raises(records.CorruptShardError, match=(
      r"metadata.json contradicts itself: split_sizes gives split 'val' 3 videos, its shards "
      r'list 2 \(edited by hand')):
    records.read_metadata(str(copy))


def test_a_shard_left_from_another_conversion_is_refused(tmp_path):
  """A shard file metadata.json does not list (an earlier conversion into the same folder with
  more shards) would be read as part of the split."""
  copy = tmp_path / 'records'
  shutil.copytree(FIXTURE, copy)
  metadata = records.read_metadata(str(copy))
  recorded = records.recorded_shard_bytes(metadata, 'train')
  records.check_shards(records.shard_files(str(copy), 'schema1', 'train'), recorded)
  shutil.copy(copy / 'schema1-train.tfrecord-00000-of-00002',
              copy / 'schema1-train.tfrecord-00000-of-00003')
  with pytest.raises(records.CorruptShardError, match=re.escape(
      "TFRecord shard(s) ['schema1-train.tfrecord-00000-of-00003'] in ")):
    records.check_shards(records.shard_files(str(copy), 'schema1', 'train'), recorded)


def test_messages_name_the_first_five_and_how_many_in_all():
  assert data_errors.first_few(['a', 'b']) == 'a, b'
  assert data_errors.first_few(list('abcdefg')) == 'a, b, c, d, e, ... (7 in all)'
  then, now = {'groups': list('abcdefg')}, {'groups': ['a']}
  assert records.split_changes(then, now) == ['groups a, b, c, d, e, ... (7 in all) then, a now']


@pytest.mark.parametrize('then, now, said', [
    ({'groups': ['g1', 'g2', 'g3']}, {'groups': ['g3', 'g1', 'g2']}, []),
    ({'groups': ['g1', 'g2']}, {'groups': ['g1', 'g3']}, ['groups g1, g2 then, g1, g3 now']),
    ({'settings': {'short_side': 256}}, {'settings': {'short_side': 256, 'fps': 15}},
     ['converted with fps None then, 15 now']),
    ({'settings': {'short_side': 256, 'fps': 15}}, {'settings': {'short_side': 256}},
     ['converted with fps 15 then, None now']),
    ({'groups': None, 'settings': None}, {'groups': ['g1'], 'settings': {'fps': 15}}, []),
])
def test_split_changes_name_what_differs_between_two_conversions(then, now, said):
  """Groups are a set (listed in another order they are the same split); a setting only one
  conversion has is a change; what one side does not know is not compared."""
  assert records.split_changes(then, now) == said


def test_a_reader_looking_at_the_lock_as_a_writer_takes_it_does_not_make_the_writer_refuse(
    tmp_path):
  """Readers look with a shared flock: a writer arriving meanwhile retries (for 2 s) rather than
  refusing as if another writer held the folder."""
  fd = os.open(tmp_path / records.WRITER_LOCK, os.O_RDONLY | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_SH)
  release = threading.Timer(0.5, fcntl.flock, (fd, fcntl.LOCK_UN))
  release.start()
  try:
    with records.sole_writer(str(tmp_path), ['val', 'train']) as writing:
      assert writing.needed and writing.guarded
      assert records.writer_of(str(tmp_path))['splits'] == ['train', 'val']
  finally:
    release.join()
    os.close(fd)
  assert records.writer_of(str(tmp_path)) is None


def test_the_description_left_by_a_killed_writer_blocks_no_one(tmp_path):
  """A writer killed with SIGKILL leaves its description in the lock file, but not its flock:
  readers and the next writer go on."""
  (tmp_path / records.WRITER_LOCK).write_text(json.dumps(
      {'by': 'data.convert', 'pid': 1, 'host': 'h', 'started': 's', 'splits': ['train']}))
  assert records.writer_of(str(tmp_path)) is None
  records.check_not_being_written(str(tmp_path), 'train')
  records.check_not_being_written(str(tmp_path))
  with records.sole_writer(str(tmp_path), ['train'], wait=False) as writing:
    assert writing.needed and writing.guarded


def test_a_writer_that_may_not_write_the_lock_file_still_waits_for_the_one_writing(
    tmp_path, monkeypatch):
  """The lock file is created 0644 by the first user to write the folder: another user of a
  group-writable folder (or an immutable lock file) cannot open it read-write. flock needs no
  write access, so the second writer must still be refused, not go unguarded."""
  with records.sole_writer(str(tmp_path), ['train']) as writing:
    assert writing.needed and writing.guarded
    real_open = os.open

    def open_as_another_user(path, flags, *args, **kwargs):
      if str(path).endswith(records.WRITER_LOCK) and flags & (os.O_RDWR | os.O_WRONLY):
        raise PermissionError(13, 'Permission denied', str(path))
      return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, 'open', open_as_another_user)
    assert records.writer_of(str(tmp_path))['splits'] == ['train']
    with pytest.raises(records.RecordsBusyError, match='is being written by data.convert'):
      with records.sole_writer(str(tmp_path), ['val']):
        pass
