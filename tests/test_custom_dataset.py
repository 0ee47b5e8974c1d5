"""Your own videos end to end, with no code edit and no registry entry: a class-per-folder tree of
the shared fight clips under an unknown name is converted, trained with configs/custom.py,
evaluated, predicted on (files, folders, windows along a long video) and turned into features."""

import csv
import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from configs import custom
from configs import k400_i3d_nl
from data import augment
from data import convert
from data import datasets
from data import pipeline
from data import records
from data import report
from salinet_jax import features
from salinet_jax import predict
from salinet_jax import recipe
from salinet_jax import train
from tests.conftest import write_moving_bar_video

TESTDATA = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'testdata'
FIGHT = TESTDATA / 'real_clips' / 'fight_surv'
NAME = 'my_own_clips'

if not FIGHT.is_dir():
  pytest.skip(f'Real test data not found at {FIGHT} (the shared testdata folder next to the '
              'repository); these tests convert real videos.', allow_module_level=True)


@pytest.fixture(scope='module')
def own_records(tmp_path_factory):
  """<class>/<source video>/<clip>: up to 2 clips of each class from 6 source videos of the
  fight clips that show both classes, converted."""
  with open(FIGHT / 'clips.csv') as f:
    rows = list(csv.DictReader(f))
  by_group = {}
  for row in rows:
    by_group.setdefault(row['source_group'], {}).setdefault(row['label'], []).append(row)
  groups = sorted(g for g, labels in by_group.items() if len(labels) == 2)[:6]
  chosen = [r for g in groups for clips in by_group[g].values() for r in clips[:2]]
  work = tmp_path_factory.mktemp('own')
  tree = work / 'videos'
  for row in chosen:
    group = hashlib.sha1(row['source_group'].encode()).hexdigest()[:8]
    target = tree / row['label'] / group / os.path.basename(row['path'])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(FIGHT / row['path'])
  out = work / 'records'
  assert NAME not in datasets.REGISTRY
  status = convert.main(['--dataset=folder', f'--input={tree}', '--split_by_group=subfolder',
                         '--val_fraction=0.3', '--short_side=48', f'--name={NAME}',
                         f'--output={out}', '--workers=1', '--quiet'])
  assert status == 0
  return tree, out


def _config(records):
  config = custom.get_config()
  config.dataset.data_dir = str(records)
  config.data.update(dict(num_frames=4, frame_stride=2, crop_size=32, train_min_scale=40,
                          train_max_scale=48, eval_short_side=32, eval_crop_size=32,
                          eval_num_clips=2, eval_num_crops=1, shuffle_buffer=8))
  config.model.width = 4
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_train_steps = 2
  config.optimizer.warmup_steps = 0
  config.optimizer.schedule = 'cosine'
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  config.checkpoint.async_save = False
  return config


def test_own_folder_converts_trains_evaluates_predicts_and_extracts(own_records, tmp_path,
                                                                    caplog):
  tree, records_dir = own_records
  config = _config(records_dir)
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  metadata = json.loads((records_dir / 'metadata.json').read_text())
  assert metadata['name'] == NAME and metadata['classes'] == ['fight', 'noFight']
  assert results['num_videos'] == metadata['split_sizes']['val'] > 0
  groups = metadata['extra']['groups']
  assert not set(groups['train']) & set(groups['val'])  # whole source videos on one side

  evaluated = train.evaluate(config, workdir)
  assert evaluated['num_videos'] == results['num_videos']

  predicted = predict.predict(config, workdir, [str(tree / 'fight')])
  assert predicted and all(r['ok'] for r in predicted)
  assert {name for name, _ in predicted[0]['top5']} == {'fight', 'noFight'}

  extracted = features.extract(config, workdir, [str(tree)])
  assert len(extracted) == sum(metadata['split_sizes'].values()) and all(r['ok'] for r in extracted)
  first = np.load(extracted[0]['features'])
  assert first.shape == (32,) and np.all(np.isfinite(first))  # ResNet-10 of width 4: 4 x 8 last
  config.features.per_view = True
  per_view = features.extract(config, workdir, [extracted[0]['video']],
                              output_dir=str(tmp_path / 'per_view'))
  views = np.load(per_view[0]['features'])
  assert views.shape == (2, 32)  # eval_num_clips x crops views
  np.testing.assert_allclose(views.mean(axis=0), first, rtol=1e-5, atol=1e-6)
  config.eval.clips_per_device_forward = 1  # one view per forward pass: the same features
  one_at_a_time = features.extract(config, workdir, [extracted[0]['video']],
                                   output_dir=str(tmp_path / 'one_view_per_pass'))
  # A second run into one folder replaces its index.csv: said (it was replaced silently).
  caplog.set_level('INFO', logger='absl')
  features.extract(config, workdir, [extracted[0]['video']],
                   output_dir=str(tmp_path / 'one_view_per_pass'))
  assert 'it replaces the one an earlier run wrote there' in caplog.text
  np.testing.assert_allclose(np.load(one_at_a_time[0]['features']), views, rtol=1e-5, atol=1e-6)
  with open(os.path.join(workdir, 'features', features.INDEX_FILE)) as f:
    assert len(list(csv.DictReader(f))) == len(extracted)
  # Videos whose flattened paths would coincide keep their own files (sub/v.mp4, sub__v.mp4).
  config.features.per_view = False
  config.eval.clips_per_device_forward = 0
  clash = tmp_path / 'clash'
  (clash / 'sub').mkdir(parents=True)
  (clash / 'sub' / 'v.mp4').symlink_to(extracted[0]['video'])
  (clash / 'sub__v.mp4').symlink_to(extracted[1]['video'])
  clashing = features.extract(config, workdir, [str(clash)], output_dir=str(tmp_path / 'f'))
  assert len({r['features'] for r in clashing}) == 2
  for result in clashing:
    source = extracted[0] if result['video'].endswith('sub/v.mp4') else extracted[1]
    np.testing.assert_allclose(np.load(result['features']), np.load(source['features']),
                               rtol=1e-5, atol=1e-6)

  card = report.build(str(records_dir))
  assert card['dataset'] == NAME and 'official_videos' not in card['splits']['train']
  assert card['splits']['train']['videos'] + card['splits']['val']['videos'] == len(extracted)
  assert card['splits']['train']['short_side_pixels']['min'] >= 240  # the sources' size
  assert '    source short side pixels: ' in report.summary(card)  # not the stored 48 px
  assert os.path.getsize(report.plot(card, str(tmp_path / 'card.png'))) > 10_000


def _records_by_video(tree, records_dir):
  """{video's path below `tree`: [split, ...]} of the records, each checked to carry the class
  of its folder (index into metadata.json's classes, and text) and its group's split."""
  metadata = json.loads((records_dir / 'metadata.json').read_text())
  groups = metadata['extra'].get('groups')
  seen = {}
  for split in metadata['split_sizes']:
    for video in records.tfds_video_dataset(str(records_dir), split,
                                            decode_frames=False).as_numpy_iterator():
      filename = video['filename'].decode()
      folder, group = pathlib.PurePosixPath(filename).parts[:2]
      assert (video['label_text'].decode() == folder
              == metadata['classes'][int(video['label'])]), filename
      assert groups is None or group in groups[split], (filename, split)
      seen.setdefault(filename, []).append(split)
  assert len(seen) == sum(metadata['split_sizes'].values())
  assert sorted(seen) == sorted(str(p.relative_to(tree)) for p in tree.rglob('*.*'))
  return seen


def test_every_video_of_the_tree_is_in_one_split_once_with_the_class_of_its_folder(own_records):
  """What training reads, record by record: each video of the tree once, in the split its group
  went to, labelled with its class folder (index and text); the end-to-end run only checked
  counts and class names, so labels of the other class or a val video also in train passed."""
  seen = _records_by_video(*own_records)
  assert all(len(splits) == 1 for splits in seen.values()), seen
  assert {s for splits in seen.values() for s in splits} == {'train', 'val'}


def test_a_class_list_in_another_order_than_the_folders_orders_the_labels(own_records,
                                                                          tmp_path):
  """--class_list fixes the model's class order (a third class without videos included): each
  video's label indexes that list, not the folders' sorted order, which the first test's
  sorted classes cannot tell apart."""
  tree, _ = own_records
  classes = tmp_path / 'classes.txt'
  classes.write_text('noFight\nwalking\nfight\n')
  out = tmp_path / 'records'
  assert convert.main(['--dataset=folder', f'--input={tree}', f'--class_list={classes}',
                       '--short_side=32', '--max_frames=2', f'--output={out}', '--workers=1',
                       '--quiet']) == 0
  metadata = json.loads((out / 'metadata.json').read_text())
  assert metadata['classes'] == ['noFight', 'walking', 'fight']
  assert set(_records_by_video(tree, out)) == {str(p.relative_to(tree)) for p in tree.rglob('*.*')}


def test_val_fraction_sizes_the_val_split_of_a_folder_tree(own_records, tmp_path, capsys):
  """--val_fraction of a tree split by subfolder: 0.3 and 0.6 of its 23 videos, whole groups of
  4 on one side; the fixture's 0.3 gives the same split as 0.2 (a fraction not passed on to
  the split went unseen)."""
  tree, _ = own_records
  sizes = {}
  for fraction in (0.3, 0.6):
    assert convert.main(['--dataset=folder', f'--input={tree}', '--split_by_group=subfolder',
                         f'--val_fraction={fraction}', f'--output={tmp_path / "out"}',
                         '--dry_run', '--quiet']) == 0
    sizes[fraction] = capsys.readouterr().err
  assert "videos per split {'train': 19, 'val': 4}" in sizes[0.3], sizes
  assert "videos per split {'train': 11, 'val': 12}" in sizes[0.6], sizes


def test_the_i3d_variant_fine_tunes_at_the_clips_its_kinetics_weights_were_trained_on():
  """configs/custom.py:i3d promises the NL-I3D-R50's 8 frames 8 apart, 224 crops of short side
  256-320 and its classifier left out: a field not taken from the recipe (e.g. the stride
  left at custom's 4) was loaded, built and carded without a word."""
  config, kinetics = custom.get_config('i3d'), k400_i3d_nl.get_config()
  clip = ('num_frames', 'frame_stride', 'crop_size', 'train_min_scale', 'train_max_scale',
          'eval_short_side', 'eval_crop_size')
  assert {f: config.data[f] for f in clip} == {f: kinetics.data[f] for f in clip} == dict(
      num_frames=8, frame_stride=8, crop_size=224, train_min_scale=256, train_max_scale=320,
      eval_short_side=256, eval_crop_size=256)
  assert config.model.to_dict() == kinetics.model.to_dict() and config.remat == kinetics.remat
  assert (config.init_from.checkpoint, config.init_from.exclude) == ('REQUIRED', '^head/')
  assert (config.optimizer.base_learning_rate, config.batch_size) == (0.01, 8)
  assert (config.dataset.train_split, config.dataset.eval_split) == ('train', 'val')


def test_the_recipe_card_of_own_records_counts_epochs_over_their_train_split(own_records):
  """configs/custom.py registers nothing: the card takes the dataset's name and the videos an
  epoch holds from the records' train split (19 here, against 4 in val: an epoch counted over
  another split carded other epochs and learning rates without a word)."""
  _, records_dir = own_records
  sizes = json.loads((records_dir / 'metadata.json').read_text())['split_sizes']
  config = _config(records_dir)
  config.num_train_steps = 12
  card = recipe.card(config)
  assert sizes['train'] != sizes['val'], sizes
  assert (card['dataset'], card['train_videos'], card['steps']) == (NAME, sizes['train'], 12)
  assert card['steps_per_epoch'] == sizes['train'] / config.batch_size
  starts = range(0, 12, -(-sizes['train'] // config.batch_size))  # an epoch's first step
  assert len(card['learning_rate_per_epoch']) == len(starts), card['learning_rate_per_epoch']
  assert card['test']['views'] == 2 and card['frames']['num_frames'] == 4


def test_a_checkpoint_evaluated_or_resumed_on_records_converted_anew_is_told_so(own_records,
                                                                                tmp_path, caplog):
  """Records split anew into another --output (--group_seed) were evaluated without a word
  while every val video had been trained on; records re-converted with another --fps were
  evaluated and resumed on without a word (and predict, decoding as the checkpoint's records
  were, no longer matched eval)."""
  tree, records_dir = own_records
  config = _config(records_dir)
  config.num_train_steps = 1
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  trained = json.loads((records_dir / 'metadata.json').read_text())['extra']['groups']
  caplog.set_level('WARNING')
  train.evaluate(config, workdir)
  assert 'another conversion' not in caplog.text and 'trained on' not in caplog.text

  def converted(name, *flags):
    out = tmp_path / name
    assert convert.main(['--dataset=folder', f'--input={tree}', '--split_by_group=subfolder',
                         '--val_fraction=0.3', '--short_side=48', f'--name={NAME}',
                         f'--output={out}', '--workers=1', '--quiet', *flags]) == 0
    return out, json.loads((out / 'metadata.json').read_text())['extra']['groups']

  seed = next(seed for seed in range(1, 20)
              if set(converted(f'seed{seed}', f'--group_seed={seed}')[1]['val'])
              & set(trained['train']))
  config.dataset.data_dir = str(tmp_path / f'seed{seed}')
  caplog.clear()
  train.evaluate(config, workdir)
  resplit = json.loads((tmp_path / f'seed{seed}' / 'metadata.json').read_text())['extra']['groups']
  shared = sorted(set(resplit['val']) & set(trained['train']))
  assert (f"The checkpoint trained on {len(shared)} of the groups split 'val' of "
          f"{tmp_path / f'seed{seed}'} holds now ({', '.join(shared[:4])}") in caplog.text
  assert ("The checkpoint was evaluated while training on another conversion of split 'val' "
          'than ') in caplog.text
  # Resumed on the records split anew: said, and still said when its later steps are evaluated
  # there, though they recorded the new split's groups (each was silent; data audit).
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  config.num_train_steps = 2
  caplog.clear()
  train.train_and_evaluate(config, resumed)
  assert (f'Checkpoint step 1 in {resumed}/checkpoints trained on {len(shared)} of the groups '
          f"split 'val' of {tmp_path / f'seed{seed}'} holds now") in caplog.text
  caplog.clear()
  train.evaluate(config, resumed)
  assert (f"The checkpoint trained on {len(shared)} of the groups split 'val' of "
          f"{tmp_path / f'seed{seed}'} holds now ({', '.join(shared[:4])}") in caplog.text
  config.num_train_steps = 1

  resampled, _ = converted('fps5', '--fps=5')
  config.dataset.data_dir = str(resampled)
  caplog.clear()
  train.evaluate(config, workdir)
  assert ("The checkpoint was evaluated while training on another conversion of split 'val' "
          f'than {resampled} holds now: converted with fps 0.0 then, 5.0 now.') in caplog.text
  assert 'of the groups' not in caplog.text
  config.num_train_steps = 2
  caplog.clear()
  train.train_and_evaluate(config, workdir)
  assert (f"was trained on another conversion of split 'train' than {resampled} holds now: "
          'converted with fps 0.0 then, 5.0 now.') in caplog.text


def test_a_checkpoint_that_does_not_record_its_records_says_they_cannot_be_checked(own_records,
                                                                                   caplog):
  """Audit: a checkpoint saved before the conversion it saw was recorded was evaluated and
  resumed on records converted anew (scores changed) without a word, where one that records it
  is told so: that the check cannot be made is said instead."""
  _, records_dir = own_records
  config = _config(records_dir)
  caplog.set_level('WARNING')
  assert train._say_records_changes(None, config.dataset, 'Checkpoint step 4') == set()
  assert (f'Checkpoint step 4 does not record which conversion of its records it saw (it '
          f'predates that): whether {records_dir} holds the videos, sizes and frame rates it '
          'was trained and evaluated on cannot be checked.') in caplog.text, caplog.text


def test_records_smaller_than_the_clips_they_are_resized_to_are_warned_about(own_records,
                                                                            caplog):
  """Records stored at short side 48 were enlarged to a 96-112 px jitter (and a 64 px eval
  short side) without a word."""
  _, records_dir = own_records
  config = _config(records_dir)
  caplog.set_level('WARNING')
  train.training_engine(config)
  assert 'enlarges' not in caplog.text
  config.data.update(dict(train_min_scale=96, train_max_scale=112, crop_size=64,
                          eval_short_side=64, eval_crop_size=64))
  train.training_engine(config)
  assert (f"split 'train' of {records_dir} stores frames at short side 48 px and "
          'config.data.train_min_scale=96 enlarges every one (2x): convert with '
          '--short_side=96 or more, or lower config.data.train_min_scale.') in caplog.text
  assert "split 'val' of " in caplog.text and 'config.data.eval_short_side=64 enlarges' in caplog.text


def test_videos_shorter_than_a_clip_or_longer_than_its_reach_are_counted_at_the_start(
    own_records, caplog):
  """Videos shorter than a clip spans were trained and scored without a word, though their
  clips loop and their temporal views are one clip (fight_surv's 12 fps clips of 23-26 frames
  against its 29-frame span: audit); all_frames left the end of longer videos unread. The
  converter keeps each split's lengths, so the counts need no read of the records."""
  _, records_dir = own_records
  config = _config(records_dir)
  config.data.update(dict(num_frames=8, frame_stride=8))  # a 57-frame span
  stored = {split: sorted(int(v['num_frames']) for v in records.tfds_video_dataset(
      str(records_dir), split, decode_frames=False).as_numpy_iterator())
            for split in ('train', 'val')}
  kept = json.loads((records_dir / 'metadata.json').read_text())['extra']['lengths']
  assert {split: sorted(int(frames) for frames, _, count in lengths for _ in range(count))
          for split, lengths in kept.items()} == stored
  caplog.set_level('WARNING')
  train.training_engine(config)
  for split, use in (('train', ''), ('val', ', and the 2 temporal views of each take the same '
                                            'frames')):
    short = [frames for frames in stored[split] if frames < 57]
    assert short, stored  # the chosen clips are 33-142 frames long
    assert (f'{len(short)} of {len(stored[split])} videos of split {split!r} of {records_dir} '
            "hold fewer frames than a clip of temporal_sampling='dense' spans (57 frames; the "
            f'shortest holds {short[0]}): their clips wrap around to their first frames{use}. '
            'Where that matters, lower config.data.num_frames or frame_stride, or convert at a '
            'higher --fps.') in caplog.text, caplog.text
  # Dense clips of videos at 12 and 30 fps span other lengths of time (audit: fight_surv's 29
  # frames are 2.4 s of one and 0.97 s of the other).
  spread = {split: max(fps for _, fps, _ in lengths) > 1.25 * min(fps for _, fps, _ in lengths)
            for split, lengths in kept.items()}
  assert any(spread.values()), kept  # the chosen clips are stored at 12 to 30 fps
  for split, lengths in kept.items():
    rates = [fps for _, fps, _ in lengths]
    line = (f"the videos of split {split!r} of {records_dir} are stored at {min(rates):g}-"
            f"{max(rates):g} fps (")
    assert (line in caplog.text) == spread[split], (line, caplog.text)
    assert (f"fps): a clip of temporal_sampling='dense' spans 57 frames, {57 / max(rates):.1f}-"
            f"{57 / min(rates):.1f} s of them." in caplog.text) == spread[split], caplog.text
  config.data.update(dict(num_frames=4, frame_stride=2))  # every chosen clip is longer than 8
  caplog.clear()
  train.training_engine(config)
  assert 'hold fewer frames' not in caplog.text
  config.data.temporal_sampling = 'all_frames'
  config.data.update(dict(num_frames=16, frame_stride=2))
  lines = pipeline.clip_coverage_warnings(config.dataset, config.data, eval_split='val')
  assert lines == [f"{len(stored['val'])} of {len(stored['val'])} videos of split 'val' of "
                   f"{records_dir} hold more frames than the 32 a clip of "
                   "temporal_sampling='all_frames' takes from a video's start (num_frames x "
                   f"frame_stride; the longest holds {stored['val'][-1]}): the rest of each is "
                   'never scored.']


def test_a_split_both_trained_on_and_scored_has_its_clip_lines_said_once(own_records, caplog):
  """A config that evaluates on its train split (a small dataset with one split) had each line
  about that split's clips said twice as training started (README walkthrough)."""
  _, records_dir = own_records
  config = _config(records_dir)
  config.dataset.train_split = 'val'
  config.data.update(dict(num_frames=8, frame_stride=8))  # a 57-frame span
  scored = pipeline.clip_coverage_warnings(config.dataset, config.data, eval_split='val')
  assert any('hold fewer frames' in line for line in scored), scored
  assert pipeline.clip_coverage_warnings(config.dataset, config.data, 'val', 'val') == scored
  caplog.set_level('WARNING')
  train.training_engine(config)
  assert [caplog.text.count(line) for line in scored] == [1] * len(scored), caplog.text
  config.data.update(dict(temporal_sampling='all_frames', num_frames=16, frame_stride=2))
  [line] = pipeline.clip_coverage_warnings(config.dataset, config.data, 'val', 'val')
  assert line.endswith(": the rest of each is trained on only as far as the random trim of a "
                       "clip's start (config.data.all_frames_trim_fraction) shifts it, and "
                       'never scored.'), line


def test_records_converted_before_stream_clocks_are_said_to_take_the_decode_all_frames(
    own_records, tmp_path):
  """pyslowfast clips of MP4 records converted before the records stored their stream clock
  are PySlowFast's decode-all path's, one frame off its selective decoding in most clips: said
  for such a split, not for one converted now, nor for other samplers."""
  _, records_dir = own_records
  config = _config(records_dir)
  config.data.update(dict(temporal_sampling='pyslowfast', num_frames=8, frame_stride=2))
  metadata = json.loads((records_dir / 'metadata.json').read_text())
  assert metadata['extra']['stream_clocks'] == {
      split: metadata['split_sizes'][split] for split in ('train', 'val')}  # MP4s: all timed
  assert not any('stream' in line or 'timestamp' in line for line in
                 pipeline.clip_coverage_warnings(config.dataset, config.data, 'train', 'val'))
  del metadata['extra']['stream_clocks']
  (tmp_path / 'metadata.json').write_text(json.dumps(metadata))
  config.dataset.data_dir = str(tmp_path)
  lines = pipeline.clip_coverage_warnings(config.dataset, config.data, 'train', 'val')
  for split in ('train', 'val'):
    assert (f"split {split!r} of {tmp_path} was converted before records stored each frame's "
            "timestamp: its MP4 and AVI videos take the frames of PySlowFast's decode-all path, "
            'one frame off its selective decoding of those files in most clips '
            "(data/sampling.py). Convert it again to take PySlowFast's frames.") in lines
  # Records from before metadata.json kept each split's timing stored no clock either (review).
  del metadata['extra']['timing']
  (tmp_path / 'metadata.json').write_text(json.dumps(metadata))
  assert lines == pipeline.clip_coverage_warnings(config.dataset, config.data, 'train', 'val')
  config.data.temporal_sampling = 'dense'
  assert not any('timestamp' in line for line in
                 pipeline.clip_coverage_warnings(config.dataset, config.data, 'train', 'val'))


@pytest.mark.parametrize('lengths, counted', [
    ([[300, 30.0, 80], [300, 29.97, 6], [300, 12.0, 1]], '86 of 87 within 1.25x of 30 fps'),
    ([[300, 60.0, 1], [300, 29.97, 6], [300, 25.0, 80]], '86 of 87 within 1.25x of 25 fps'),
    # Rates kept to 4 decimals: each phone or NTSC video may have one of its own (review).
    ([[300, 12.0, 1]] + [[300, 29.9 + i / 1000, 1] for i in range(86)],
     '86 of 87 within 1.25x of 29.9 fps'),
    ([[300, 0.0, 3], [300, 30.0, 80], [300, 12.0, 7]],
     '80 of 87 with a known rate within 1.25x of 30 fps')])
def test_the_frame_rate_line_counts_the_videos_near_the_usual_rate(own_records, tmp_path,
                                                                   lengths, counted):
  """One video at 12 fps among 86 at 30 fps brought the same line as a split spread evenly over
  12-30 fps (audit): the line now says how many lie near the rate most of them are near."""
  _, records_dir = own_records
  metadata = json.loads((records_dir / 'metadata.json').read_text())
  metadata['extra']['lengths'] = {'train': lengths}
  (tmp_path / 'metadata.json').write_text(json.dumps(metadata))
  config = _config(tmp_path)
  config.data.update(dict(num_frames=8, frame_stride=8))
  rates = [fps for _, fps, _ in lengths if fps > 0]
  assert pipeline.clip_coverage_warnings(config.dataset, config.data, train_split='train') == [
      f"the videos of split 'train' of {tmp_path} are stored at {min(rates):g}-{max(rates):g} "
      f"fps ({counted}): a clip of temporal_sampling='dense' spans 57 frames, "
      f"{57 / max(rates):.1f}-{57 / min(rates):.1f} s of them. Clips of one length in time "
      "come from temporal_sampling='pyslowfast' (at config.data.target_fps) or from converting "
      "at one --fps."]


def test_batch_norm_over_micro_batches_is_said_as_training_starts(own_records, caplog):
  """bn_group_size=0 reads as the whole global batch, but with gradient accumulation BatchNorm
  normalises each micro-batch: training said nothing (audit)."""
  _, records_dir = own_records
  config = _config(records_dir)
  config.grad_accumulation_steps = 2
  caplog.set_level('WARNING')
  train.training_engine(config)
  assert ('config.grad_accumulation_steps=2 with config.bn_group_size=0: BatchNorm normalises '
          'each micro-batch of 2 clips on its own, not the global batch of 4') in caplog.text
  caplog.clear()
  config.bn_group_size = 2
  train.training_engine(config)
  assert 'BatchNorm normalises' not in caplog.text


def test_random_flip_beside_classes_that_name_a_direction_is_said(own_records, caplog):
  """Clips of 'Swiping Left' mirrored by the default random_flip kept their label without a
  word (audit): configs/custom.py, the path for a user's own videos, flips by default."""
  _, records_dir = own_records
  config = _config(records_dir)
  assert augment.mirrored_directions_warning(['fight', 'noFight'], config.data) is None
  classes = ['Swiping Left', 'swipe_right', 'TurnLeft', 'counter-clockwise', 'Upright',
             'copyright_notice', 'Shaking']
  assert augment.mirrored_directions_warning(classes, config.data) == (
      "config.data.train_augmentations holds 'random_flip', which mirrors half the clips left "
      "to right, and 4 of the 7 classes name a direction ('Swiping Left', 'swipe_right', "
      "'TurnLeft', 'counter-clockwise'): a mirrored clip keeps its label though it shows the other "
      'direction. Where these classes are told apart by direction, train with '
      '--config.data.train_augmentations="()".')
  config.data.train_augmentations = ()
  assert augment.mirrored_directions_warning(classes, config.data) is None


def test_windowed_predict_writes_a_timeline_over_the_whole_video(own_records, tmp_path, caplog,
                                                                 capsys):
  _, records_dir = own_records
  config = _config(records_dir)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  video = tmp_path / 'long.avi'
  write_moving_bar_video(video)
  # Windows hold whole frames: at 10 fps 4.04 s is 40 frames and 2.96 s 30. The timeline
  # recorded the seconds asked for as the windows' (README audit), not those used.
  config.predict.window_seconds = 4.04
  config.predict.stride_seconds = 2.96
  config.predict.window_batch = 4
  results = predict.predict(config, workdir, [str(video)], output_dir=str(tmp_path / 'out'))
  assert results[0]['ok'] and len(results[0]['top5']) == 2
  timeline = json.loads((tmp_path / 'out' / 'long.avi.timeline.json').read_text())
  assert {k: timeline[k] for k in ('frame_rate', 'window_frames', 'stride_frames',
                                   'window_seconds', 'stride_seconds', 'asked')} == {
      'frame_rate': 10.0, 'window_frames': 40, 'stride_frames': 30, 'window_seconds': 4.0,
      'stride_seconds': 3.0, 'asked': {'window_seconds': 4.04, 'stride_seconds': 2.96}}
  spans = [(w['start_seconds'], w['end_seconds']) for w in timeline['windows']]
  # Windows start every 3 s (0, 3, ..., 18 s, each 4 s long) and the last one ends at 24 s.
  assert spans == [(float(s), float(s + 4)) for s in range(0, 19, 3)] + [(20.0, 24.0)]
  assert all(abs(sum(p for _, p in w['top5']) - 1.0) < 1e-4 for w in timeline['windows'])
  assert os.path.getsize(tmp_path / 'out' / 'long.avi.timeline.png') > 5000
  # The video's top-5 is the mean over its windows, and the console says so (it printed the
  # same lines as a whole-video prediction).
  assert f'{video}: (mean over its windows)' in capsys.readouterr().out

  # A video shorter than a window: its one window is scored exactly as predict scores the
  # whole video, and the timeline gives the frames it holds (it gave the 40 asked for).
  short = tmp_path / 'short.avi'
  write_moving_bar_video(short, seconds=3)
  windowed = predict.predict(config, workdir, [str(short)], output_dir=str(tmp_path / 'w'))
  one = json.loads((tmp_path / 'w' / 'short.avi.timeline.json').read_text())
  assert (one['window_frames'], one['window_seconds']) == (30, 3.0)
  config.predict.window_seconds = 0.0
  whole = predict.predict(config, workdir, [str(short)], output_dir=str(tmp_path / 'v'))
  assert [n for n, _ in windowed[0]['top5']] == [n for n, _ in whole[0]['top5']]
  np.testing.assert_allclose([p for _, p in windowed[0]['top5']],
                             [p for _, p in whole[0]['top5']], rtol=1e-5, atol=1e-6)

  # Two videos of one name in different folders: a timeline each, in its folder.
  config.predict.window_seconds = 4.0
  for folder, source in (('a', video), ('b', short)):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / 'clip.avi').symlink_to(source)
  predict.predict(config, workdir, [str(tmp_path / 'a'), str(tmp_path / 'b')],
                  output_dir=str(tmp_path / 'same_names'))
  for folder, windows in (('a', 8), ('b', 1)):
    kept = json.loads((tmp_path / 'same_names' / folder / 'clip.avi.timeline.json').read_text())
    assert kept['video'].endswith(f'{folder}/clip.avi') and len(kept['windows']) == windows

  # Pictures of what the model looked at are for whole videos: asked for here, said so.
  config.eval.num_visualizations = 1
  caplog.set_level('INFO', logger='absl')
  predict.predict(config, workdir, [str(short)], output_dir=str(tmp_path / 'pictures'))
  assert ('config.eval.num_visualizations=1: windowed predict draws its timelines, not pictures'
          in caplog.text)

  # Windows shorter than a clip's 7 frames (4 x stride 2), and a video shorter than a clip: each
  # clip loops over its frames, which went without a word.
  config.eval.num_visualizations = 0
  config.predict.window_seconds = config.predict.stride_seconds = 0.5
  caplog.clear()
  predict.predict(config, workdir, [str(short)], output_dir=str(tmp_path / 'narrow'))
  assert (f"{short}: its windows hold 5 frames (0.5 s at 10 fps), fewer than a clip's 7 "
          "(temporal_sampling='dense'): their clips loop, repeat or squeeze frames; windows of "
          'at least 0.70 s hold whole clips.') in caplog.text, caplog.text
  tiny = tmp_path / 'tiny.avi'
  write_moving_bar_video(tiny, seconds=4, fps=1)
  config.predict.window_seconds = 8.0
  caplog.clear()
  predict.predict(config, workdir, [str(tiny)], output_dir=str(tmp_path / 'tiny'))
  assert (f"{tiny}: its one window holds all its 4 frames, fewer than a clip's 7 "
          "(temporal_sampling='dense'): its clips loop, repeat or squeeze frames."
          in caplog.text), caplog.text

  # A variable frame rate (2 s at 10 fps, then 6 s at 2.5 fps) at the records' native rate:
  # windows hold a fixed count of frames, and were timed by that count at the average rate
  # (35 frames in 8 s): the first "4 s" window held 1.5 s of video, without a word.
  vfr = tmp_path / 'vfr.mp4'
  times = [i / 10 for i in range(20)] + [2 + i / 2.5 for i in range(15)]
  write_moving_bar_video(vfr, fps=10, times=times)
  config.predict.window_seconds, config.predict.stride_seconds = 4.0, 2.0
  caplog.clear()
  predict.predict(config, workdir, [str(vfr)], output_dir=str(tmp_path / 'vfr'))
  windows = json.loads((tmp_path / 'vfr' / 'vfr.mp4.timeline.json').read_text())['windows']
  rate = 35 / 8  # frames per window and per stride at the average rate: 18 and 9
  assert [(w['start_seconds'], w['end_seconds']) for w in windows] == [
      (0.0, times[18]), (times[9], times[27]), (times[17], 8.0)], (rate, windows)
  assert (f'{vfr}: its frame rate varies (its frames are 100 to 400 ms apart): windows of 18 '
          'frames at its native rate span 1.80 to 6.30 s of it (the timeline gives their real '
          'times); records converted at a fixed rate (data.convert --fps) make windows of 4 s.'
          ) in caplog.text, caplog.text

  # A video whose first frame is at 2 s of its container's time (an MP4 edit list, a cut
  # stream): the windows count from its first frame, which the json and the log line place
  # (audit: the timeline read 2 s early against the container's time, without a word).
  late = tmp_path / 'late.mp4'
  write_moving_bar_video(late, fps=10, times=[2 + i / 10 for i in range(40)])
  caplog.clear()
  predict.predict(config, workdir, [str(late)], output_dir=str(tmp_path / 'late'))
  timeline = json.loads((tmp_path / 'late' / 'late.mp4.timeline.json').read_text())
  assert timeline['first_frame_seconds'] == 2.0
  assert [(w['start_seconds'], w['end_seconds']) for w in timeline['windows']] == [
      (0.0, 4.0)], timeline['windows']
  assert (f"{late}: 1 windows, timeline in {tmp_path / 'late' / 'late.mp4.timeline'}.json and "
          ".png (its times count from its first frame, at 2.000 s of the container's time: add "
          'that to find them in a player showing that time)') in caplog.text, caplog.text
  predict.predict(config, workdir, [str(vfr)], output_dir=str(tmp_path / 'vfr'))
  assert json.loads((tmp_path / 'vfr' / 'vfr.mp4.timeline.json').read_text())[
      'first_frame_seconds'] == 0.0
