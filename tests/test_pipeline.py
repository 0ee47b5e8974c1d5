"""The tf.data pipeline on real tiny TFRecords: sampling, views, sharding, exact eval coverage."""

import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import augment
from data import errors
from data import pipeline
from data import records
from data import sampling
from tests.conftest import REPO_ROOT


def test_dense_clip_indices_loop_short_videos():
  indices = sampling.dense_clip_indices(tf.constant(5), num_frames=4, stride=2, start=tf.constant(0))
  np.testing.assert_array_equal(indices.numpy(), [0, 2, 4, 1])


def test_uniform_test_clips_span_the_video():
  features = {'frames_jpeg': tf.constant([str(i).encode() for i in range(20)])}
  out = sampling.sample_uniform_clips(features, num_frames=4, stride=2, num_clips=3)
  starts = [int(row[0]) for row in out['frames_jpeg'].numpy()]
  assert starts == [0, 6, 13]  # max start = 20 - 7 = 13, evenly spaced
  np.testing.assert_array_equal(out['frames_jpeg'].numpy()[1].astype(int), [6, 8, 10, 12])
  # Starts are rounded to the nearest frame: 14 * (0, 1/3, 2/3, 1) = (0, 4.7, 9.3, 14) (mutation
  # audit: starts rounded down passed every test, whose starts 0, 6.5, 13 round alike).
  features = {'frames_jpeg': tf.constant([str(i).encode() for i in range(21)])}
  out = sampling.sample_uniform_clips(features, num_frames=4, stride=2, num_clips=4)
  assert [int(row[0]) for row in out['frames_jpeg'].numpy()] == [0, 5, 9, 14]


def test_three_test_crops_run_along_the_long_side():
  video = tf.reshape(tf.range(2 * 1 * 4 * 8 * 3, dtype=tf.float32), [2, 1, 4, 8, 3])
  out = augment.spatial_test_crops({'video': video}, short_side=4, crop_size=4, num_crops=3,
                                     rounding='pyslowfast', resize_filter='bilinear')
  assert out['video'].shape == (6, 1, 4, 4, 3)
  crops = out['video'].numpy()
  np.testing.assert_array_equal(crops[0], video.numpy()[0, :, :, 0:4])
  np.testing.assert_array_equal(crops[1], video.numpy()[0, :, :, 2:6])
  np.testing.assert_array_equal(crops[2], video.numpy()[0, :, :, 4:8])
  np.testing.assert_array_equal(crops[3], video.numpy()[1, :, :, 0:4])


def test_train_batches_are_pixel_clips_and_deterministic(config):
  first = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=3)))
  again = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=3)))
  other = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=4)))
  assert first['video'].shape == (4, 4, 16, 16, 3)
  assert first['video'].dtype == np.uint8
  assert first['label'].dtype == np.int32 and set(first['label']) <= {0, 1, 2, 3}
  np.testing.assert_array_equal(first['video'], again['video'])
  assert not np.array_equal(first['video'], other['video'])


def test_device_resize_gives_the_host_pipelines_model_inputs(config):
  from salinet_jax import inputs  # pylint: disable=g-import-not-at-top
  # Short side 16..28 of the 20 px frames: windows of 11..20 px around the 16 px crop.
  config.data.update(dict(train_min_scale=16, train_max_scale=28,
                          train_augmentations=('random_flip',)))
  on_device = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=5)))
  config.data.train_resize_on_device = False
  on_host = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=5)))
  assert on_device['crop_hw'].shape == (4, 2) and on_device['crop_hw'].dtype == np.int32
  assert on_device['flip'].shape == (4,) and on_device['flip'].dtype == bool
  assert 'crop_hw' not in on_host and 'flip' not in on_host
  assert (on_device['crop_hw'] < 16).any()  # some crops reach the step unresized
  assert 0 < on_device['flip'].sum() < 4
  np.testing.assert_array_equal(on_device['label'], on_host['label'])
  video, _ = inputs.model_inputs(on_device, config.data)
  expected, _ = inputs.model_inputs(on_host, config.data)
  # One uint8 step in normalised units (the two paths round differently).
  np.testing.assert_allclose(np.asarray(video), np.asarray(expected), atol=1 / 255 / 0.225 + 1e-5)


def test_train_batch_must_divide_over_processes(config):
  config.batch_size = 5
  with pytest.raises(ValueError, match='config.batch_size 5 is not divisible by the 2 processes'):
    pipeline.train_dataset(config, seed=0, process_index=0, process_count=2)


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_eval_covers_every_video_exactly_once(config, process_count):
  config.eval_batch_size = 2 * process_count
  seen, batches_per_process = [], []
  for index in range(process_count):
    ds, num_batches, info = pipeline.eval_dataset(config, 'val', process_index=index,
                                                  process_count=process_count)
    batches = list(pipeline.as_numpy(ds))
    batches_per_process.append(len(batches))
    assert len(batches) == num_batches
    for batch in batches:
      assert batch['video'].shape == (2, 2, 4, 16, 16, 3)  # 2 videos x 2 clips x 1 crop
      seen += [name for name, real in zip(batch['filename'], batch['mask']) if real]
      assert all(name == b'' for name, real in zip(batch['filename'], batch['mask']) if not real)
  assert info.num_videos == 7
  assert len(set(batches_per_process)) == 1
  assert sorted(seen) == sorted(set(seen)) and len(seen) == 7


def test_a_files_mode_stream_resumed_at_a_step_does_not_replay_the_first_batches(config):
  """Mutation audit: a resume in 'files' mode (which cannot resume exactly) replaying the run's
  first shuffle and draws, so the resumed steps trained again on the first steps' clips, passed
  every test."""
  def first_batch(start_step):
    ds = pipeline.train_dataset(config, seed=5, start_step=start_step, sharding='files')
    return next(pipeline.as_numpy(ds))['video']

  assert np.array_equal(first_batch(0), first_batch(0))  # seeded
  assert not np.array_equal(first_batch(0), first_batch(3))


def test_unknown_split_and_missing_records_are_clear_errors(config, tmp_path):
  with pytest.raises(records.MissingRecordsError, match="Split 'test' is not in the records"):
    pipeline.split_info(config.dataset, 'test')
  config.dataset.data_dir = str(tmp_path)
  config.dataset.name = 'ucf101'
  with pytest.raises(FileNotFoundError, match='metadata.json'):
    pipeline.split_info(config.dataset, 'train1')


def test_global_order_stream_resumes_exactly_at_a_step(config):
  config.dataset.synthetic.num_train = 8
  stream = pipeline.as_numpy(pipeline.train_dataset(config, seed=5))
  uninterrupted = [next(stream) for _ in range(5)]  # crosses two epoch boundaries (8 videos)
  resumed = pipeline.as_numpy(pipeline.train_dataset(config, seed=5, start_step=3))
  for expected in uninterrupted[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['video'], expected['video'])
    np.testing.assert_array_equal(got['label'], expected['label'])
  # Each epoch visits every video once: labels of 2 batches of 4 = one epoch, balanced.
  assert sorted(np.concatenate([b['label'] for b in uninterrupted[:2]]).tolist()) == \
      [0, 0, 1, 1, 2, 2, 3, 3]


def test_global_batches_do_not_depend_on_the_process_count(config):
  config.data.train_sharding = 'global_order'
  single = pipeline.as_numpy(pipeline.train_dataset(config, seed=2, process_count=1,
                                                    process_index=0))
  halves = [pipeline.as_numpy(pipeline.train_dataset(config, seed=2, process_count=2,
                                                     process_index=i)) for i in range(2)]
  for _ in range(3):
    whole = next(single)
    parts = [next(h) for h in halves]
    assert all(len(p['label']) == 2 for p in parts)
    # Process p holds rows [2p, 2p + 2) of the global batch: same clips in the same order.
    for key in ('video', 'label'):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_file_sharding_gives_processes_disjoint_files(config):
  config.data.train_sharding = 'files'
  labels = []
  for index in range(2):
    batch = next(pipeline.as_numpy(pipeline.train_dataset(config, seed=0, process_count=2,
                                                          process_index=index)))
    labels.append(batch['label'])
  # Round-robin shards: shard 0 holds videos 0, 2, 4, 6 (labels 0, 2, 0, 2), shard 1 the others.
  assert set(labels[0]) <= {0, 2} and set(labels[1]) <= {1, 3}


def test_processes_reading_fewer_files_than_they_are_read_disjoint_videos(config, tmp_path):
  """Each process shuffled the file order with its own seed before keeping every n-th record:
  3 processes over 2 files each read 8 of 12 videos, overlapping."""
  config.dataset.data_dir = str(tmp_path)
  config.dataset.synthetic.num_train = 12
  config.dataset.synthetic.num_shards = 2
  info = pipeline.split_info(config.dataset, 'train')
  seen = []
  for index in range(3):
    ds = pipeline.read(info, shuffle=True, seed=100 + index, process_index=index,
                       process_count=3).map(records.parse_video)
    seen.append([f['filename'] for f in pipeline.as_numpy(ds)])
  assert sorted(sum(seen, [])) == sorted(set(sum(seen, []))) and len(sum(seen, [])) == 12
  assert [len(names) for names in seen] == [4, 4, 4]


def test_file_sharding_is_chosen_only_where_it_draws_every_video_alike(config, caplog):
  """With 3 shard files of 3, 3 and 2 videos over 2 processes, 'auto' read by file: the
  videos of process 1's one file were drawn 1.65x as often, without a word; 1 video over 2
  processes ended process 1 in a bare StopIteration."""
  info = lambda videos, shards: pipeline.SplitInfo('d', 'x', 'train', videos, ('a',),  # noqa
                                                   (), shards)
  data = config.data
  assert pipeline.train_sharding(data, 2, info(8, (4, 4))) == 'files'
  assert pipeline.train_sharding(data, 2, info(8, (3, 3, 2))) == 'global_order'
  # Real datasets: shards a video apart, a few failures; within 2 % the bias is negligible.
  assert pipeline.train_sharding(data, 2, info(399, (100, 100, 100, 99))) == 'files'
  assert pipeline.train_sharding(data, 2, info(400, (200, 0, 200, 0))) == 'global_order'
  assert pipeline.train_sharding(data, 3, info(6, (3, 3))) == 'global_order'  # files < processes
  assert pipeline.train_sharding(data, 2, info(8, ())) == 'global_order'  # counts unknown
  assert pipeline.train_sharding(data, 1, info(8, (3, 3, 2))) == 'global_order'
  data.train_sharding = 'files'
  caplog.set_level('WARNING')
  assert pipeline.train_sharding(data, 2, info(8, (3, 3, 2))) == 'files'
  assert ("the 3 shard files of split 'train' give the 2 processes [5, 3] train videos, so the "
          'videos of the smallest share are drawn 1.7x as often') in caplog.text
  with pytest.raises(errors.DataError, match=r"^Split 'train' holds 1 video\(s\) for 2 processes"):
    pipeline.train_sharding(data, 2, info(1, (1,)))
  with pytest.raises(errors.DataError, match=r'give process 1 of 2 no video \(its files are empty'):
    pipeline.train_sharding(data, 2, info(4, (4, 0)))


def test_records_of_a_standard_dataset_are_checked_against_the_official_facts():
  from data import datasets  # pylint: disable=g-import-not-at-top
  k400_val = records.DatasetMetadata('kinetics400', [f'c{i}' for i in range(400)],
                                     {'val': 19_100}, {'val': 10})
  warnings = datasets.check_records(k400_val, 'val')
  assert warnings == [
      "Records of 'kinetics400' name or order their 400 classes otherwise than the official list: "
      'a classifier trained on that list (a reference checkpoint) would read its rows as other '
      'classes. Convert with --dataset=kinetics400 from the official annotation files.',
      "Split 'val' of 'kinetics400' holds 19,100 of the official 19,906 videos (806 missing, "
      '4.0%); accuracy is not comparable with published figures.']
  wrong_classes = records.DatasetMetadata('ucf101', ['a', 'b'], {'test1': 3783}, {'test1': 1})
  assert datasets.check_records(wrong_classes, 'test1') == [
      "Records of 'ucf101' have 2 classes; the official dataset has 101: was another class list "
      'used?']
  own = records.DatasetMetadata('my_clips', ['a', 'b'], {'train': 3}, {'train': 1})
  assert datasets.check_records(own, 'train') == []  # not a registered dataset: nothing to check
  own.extra['videos_per_class'] = {'train': [3, 0], 'test': [0, 0]}  # test: unlabelled
  assert datasets.check_records(own, 'train') == [
      "Split 'train' of 'my_clips' holds no video of 1 of its 2 classes: ['b']; trained on, the "
      'model never sees them; evaluated on, its accuracy covers the other classes only.']
  assert datasets.check_records(own, 'test') == []


LABEL_MAPS = REPO_ROOT.parent / 'shared' / 'testdata' / 'annotations' / 'label_maps'


@pytest.mark.parametrize('name, label_map', [
    ('kinetics400', 'kinetics_label_map_k400.txt'), ('kinetics600', 'kinetics_label_map_k600.txt'),
    ('ucf101', 'ucf101_label_map.txt'), ('hmdb51', 'hmdb51_label_map.txt'),
    ('ssv2', 'sthv2_label_map.txt')])
def test_the_official_class_lists_are_known_in_order(name, label_map):
  """The registry checked the class count only: records of a standard dataset with its classes
  in another order (or renamed, e.g. Kinetics folders with '_' for ' ') were not told apart,
  and a reference checkpoint's classifier read them as other classes. mmaction2's label maps
  are an independent copy of the official lists."""
  from data import datasets  # pylint: disable=g-import-not-at-top
  if not LABEL_MAPS.is_dir():
    pytest.skip(f'Real test data not found at {LABEL_MAPS}: the label maps are read from it.')
  names = [line.strip() for line in (LABEL_MAPS / label_map).read_text().splitlines()
           if line.strip()]
  info = datasets.get(name)
  assert datasets.official_classes(info, names)
  assert not datasets.official_classes(info, names[1:] + names[:1])
  renamed = [n.replace(' ', '_') for n in names]
  if renamed != names:
    assert not datasets.official_classes(info, renamed)


def test_dataset_name_is_optional_but_must_agree_with_the_records(config):
  config.dataset.name = ''
  assert pipeline.split_info(config.dataset, 'val').dataset == 'synthetic'
  config.dataset.name = 'kinetics400'
  with pytest.raises(records.MissingRecordsError,
                     match="config.dataset.name is 'kinetics400' but the records in .* hold "
                     "dataset 'synthetic'"):
    pipeline.split_info(config.dataset, 'val')


def test_the_decode_ceilings_first_round_waits_for_every_worker():
  """The workers import TensorFlow before their first round (seconds): round 1 of
  `python -m data.bench` was timed before they had started and read 0.0 clips/s, and one
  round ended in a ZeroDivisionError."""
  from data import bench as data_bench  # pylint: disable=g-import-not-at-top
  frame = io.BytesIO()
  Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(frame, format='JPEG')
  ceiling = data_bench.Ceiling({0: [frame.getvalue()] * 4}, processes=2)
  try:
    assert ceiling.run(0.3, 2) > 0
  finally:
    ceiling.close()


def _jpeg(level: int, size: int = 20) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.full((size, size, 3), level, np.uint8)).save(buffer, format='JPEG')
  return buffer.getvalue()


def _write_records(directory, train_labels, classes, frames=None, name='synthetic'):
  """Records of a train split with `train_labels` (6 frames per video; `frames` replaces the
  first video's) and a val split of one video per class, under the synthetic data's name."""
  sizes, shards, num_shards = {}, {}, {}
  for split, labels in (('train', train_labels), ('val', list(range(len(classes))))):
    num_shards[split] = max(1, min(2, len(labels)))
    with records.ShardWriter(str(directory), name, split, num_shards[split]) as writer:
      for index, label in enumerate(labels):
        video = [_jpeg(10 * t) for t in range(6)] if frames is None or index else frames
        writer.write(records.serialize_video(video, label, classes[label] if label >= 0 else '',
                                             f'{split}/{index}.mp4', fps=25.0))
    sizes[split], shards[split] = len(labels), writer.shard_entries()
  records.write_metadata(str(directory), records.DatasetMetadata(
      name, list(classes), sizes, num_shards, shards=shards))
  return str(directory)


def test_a_warning_about_the_whole_records_is_said_once_for_all_their_splits(config, tmp_path,
                                                                            caplog):
  """Records of a standard dataset with another class count were warned about once per split
  read (train, then val): the same line twice in every run (README review)."""
  config.dataset.data_dir = _write_records(tmp_path / 'ucf', [0, 1], ['a', 'b'], name='ucf101')
  config.dataset.name = ''
  caplog.set_level('WARNING')
  for split in ('train', 'val', 'train'):
    pipeline.split_info(config.dataset, split)
  assert caplog.text.count("Records of 'ucf101' have 2 classes; the official dataset has 101") == 1


def test_as_many_shard_files_as_processes_are_read_one_file_per_process(tmp_path):
  """Files of 5 and 2 videos (the others of one failed to convert) over 2 processes: each reads
  its own file, as the per-process video counts assume (mutation audit: reading every n-th
  element there, which mixes the files, passed every test)."""
  for shard, names in enumerate((['a0', 'a1', 'a2', 'a3', 'a4'], ['b0', 'b1'])):
    with tf.io.TFRecordWriter(str(tmp_path / f'd-train.tfrecord-{shard:05d}-of-00002')) as f:
      for name in names:
        f.write(name.encode())
  info = pipeline.SplitInfo(str(tmp_path), 'd', 'train', 7, ('a', 'b'), shard_videos=(5, 2))
  read = [[x.decode() for x in pipeline.read(info, shuffle=False, seed=0, process_index=p,
                                             process_count=2).as_numpy_iterator()]
          for p in (0, 1)]
  assert read == [['a0', 'a1', 'a2', 'a3', 'a4'], ['b0', 'b1']]


def test_a_train_split_without_videos_or_of_one_class_is_refused(config, tmp_path):
  """A train split whose videos all failed to convert hung training (it waited for a batch that
  never came, deaf to SIGTERM); a dataset of one class trained to loss 0 and top-1 1.0, without
  a word (data audit)."""
  config.dataset.data_dir = _write_records(tmp_path / 'empty', [], ['a', 'b'])
  with pytest.raises(errors.DataError, match=r"Split 'train' of 'synthetic' in .*empty holds no "
                     r'video: nothing to train on \(see the conversion\'s failures'):
    pipeline.train_split_info(config.dataset)
  config.dataset.data_dir = _write_records(tmp_path / 'one', [0, 0, 0], ['only'])
  with pytest.raises(errors.DataError, match=r"The records of 'synthetic' in .*one hold 1 class "
                     r"\('only'\): a classifier needs two or more"):
    pipeline.train_split_info(config.dataset)


def test_the_train_stream_names_unlabelled_videos_damaged_frames_and_deleted_shards(config,
                                                                                     tmp_path):
  """Label -1 in a train split its metadata counts as labelled trained as no class at all (and
  -3 ended in a NaN loss blamed on the learning rate); a frame whose JPEG header is damaged and
  a shard deleted while training were tracebacks (data audit)."""
  def first_batch(directory):
    config.dataset.data_dir = directory
    info = pipeline.train_split_info(config.dataset)
    return next(pipeline.as_numpy(pipeline.train_dataset(config, seed=0), info, training=True))

  for label in (-1, -3):
    with pytest.raises(records.CorruptShardError, match=rf"split 'train' of 'synthetic' in .* "
                       rf'hold label {label}, though a train split needs a class for every video'):
      first_batch(_write_records(tmp_path / f'label{label}', [0, 1, label, 0], ['a', 'b']))
  cut = _jpeg(30)[:300]  # its header cut short
  with pytest.raises(records.CorruptShardError, match=r'cannot be decoded as an image \(Invalid '
                     r'JPEG data, size 300\): the records hold a damaged frame'):
    first_batch(_write_records(tmp_path / 'cut', [0, 1, 0, 1], ['a', 'b'], frames=[cut] * 6))
  directory = _write_records(tmp_path / 'deleted', [0, 1, 0, 1], ['a', 'b'])
  config.dataset.data_dir = directory
  info = pipeline.train_split_info(config.dataset)
  stream = pipeline.as_numpy(pipeline.train_dataset(config, seed=0), info, training=True)
  shard = records.shard_files(directory, 'synthetic', 'train')[1]
  os.remove(shard)
  with pytest.raises(records.MissingRecordsError, match=rf'{shard}.*was removed while it was '
                     r'read'):
    for _ in range(20):
      next(stream)


def test_a_split_a_conversion_writes_is_named_as_such_by_the_readers(config, tmp_path):
  """A split converted for the first time read as 'not in the records (it has [...])', and a
  shard a conversion replaced under a running stream as 'removed while it was read: convert the
  split again', while the conversion that was doing it still ran."""
  directory = _write_records(tmp_path / 'records', [0, 1, 0, 1], ['a', 'b'])
  config.dataset.data_dir = directory
  info = pipeline.train_split_info(config.dataset)
  stream = pipeline.as_numpy(pipeline.train_dataset(config, seed=0), info, training=True)
  with records.sole_writer(directory, ['train', 'test']):
    busy = (r" of the records in .* is being written now by data.convert \(pid "
            rf"{os.getpid()} on host .*\): wait for it to end, then run this again\.")
    with pytest.raises(records.RecordsBusyError, match="Split 'test'" + busy):
      pipeline.split_info(config.dataset, 'test')
    os.remove(sorted(glob.glob(f'{directory}/synthetic-train.tfrecord-*'))[1])
    with pytest.raises(records.RecordsBusyError, match="Split 'train'" + busy):
      for _ in range(20):
        next(stream)


@pytest.mark.parametrize('sampler', ['dense', 'tsn', 'all_frames'])
def test_a_video_record_without_frames_is_named(config, tmp_path, sampler, capsys):
  """A record holding no frame (written by other code: the converter fails such a video) was a
  TensorFlow traceback from inside the sampler's gather ('indices[0] = 0 is not in [0, 0)'), and
  a ZeroDivisionError in data.bench."""
  config.data.temporal_sampling = sampler
  if sampler == 'all_frames':
    config.data.eval_num_clips = 1
  config.dataset.data_dir = _write_records(tmp_path / 'records', [0, 1, 0, 1], ['a', 'b'],
                                           frames=[])
  said = (r"The records of split 'train' of 'synthetic' in .*records hold a video without "
          r"frames \(train/0.mp4\): records written by other code\? Convert the split again.")
  info = pipeline.train_split_info(config.dataset)
  with pytest.raises(records.CorruptShardError, match=said):
    next(pipeline.as_numpy(pipeline.train_dataset(config, seed=0), info, training=True))
  dataset, _, info = pipeline.eval_dataset(config, 'train')
  with pytest.raises(records.CorruptShardError, match=said):
    next(pipeline.as_numpy(dataset, info))
  if sampler == 'dense':  # data.bench samples its own dense clips
    from data import bench  # pylint: disable=g-import-not-at-top
    directory = config.dataset.data_dir
    assert bench.main([f'--records={directory}', f'--videos={tmp_path}', '--seconds=1']) == 1
    shard = records.shard_files(directory, 'synthetic', 'train')[0]
    assert capsys.readouterr().err.endswith(
        f"error: {shard} holds a video without frames (train/0.mp4): records written by other "
        'code? Convert the split again.\n')
    # The data card showed them as 'stored frames per video: 0-...' and exited 0.
    from data import report  # pylint: disable=g-import-not-at-top
    assert report.main([f'--records={directory}', f'--output={tmp_path / "card"}']) == 1
    assert ('    DAMAGED: 1 of its 4 videos has no frames (train/0.mp4): records written by '
            'other code? Training and evaluation refuse such a split; convert it again.'
            ) in capsys.readouterr().out


def test_records_whose_classes_contradict_metadata_json_are_refused(config, tmp_path):
  """metadata.json's class list reversed (edited by hand, or written by other code) trained and
  evaluated with every class named as the other, without a word (data audit)."""
  import json  # pylint: disable=g-import-not-at-top
  directory = _write_records(tmp_path / 'records', [0, 1, 0, 1], ['fight', 'noFight'])
  metadata = json.loads((tmp_path / 'records' / 'metadata.json').read_text())
  metadata['classes'] = ['noFight', 'fight']
  (tmp_path / 'records' / 'metadata.json').write_text(json.dumps(metadata))
  config.dataset.data_dir = directory
  with pytest.raises(errors.DataError, match=(
      r"The records of split 'train' of 'synthetic' in .* label their first video 'fight' "
      r"\(index 0\), but metadata.json's classes name index 0 'noFight'")):
    pipeline.train_split_info(config.dataset)
  # A damaged first record is the shard's own one-line error, not a DataLossError (review).
  config.dataset.data_dir = _write_records(tmp_path / 'damaged', [0, 1, 0, 1], ['a', 'b'])
  shard = records.shard_files(config.dataset.data_dir, 'synthetic', 'train')[0]
  with open(shard, 'r+b') as f:
    f.seek(200)
    f.write(b'\xff' * 16)
  with pytest.raises(records.CorruptShardError, match=rf'{shard} is corrupt after record 0'):
    pipeline.train_split_info(config.dataset)
