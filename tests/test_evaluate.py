"""Eval metrics checked by hand: a fixed-logit model over real records, padded last batch."""

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from data import records
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import evaluate
from salinet_jax import parallel
from salinet_jax import reports
from salinet_jax import visualize
from tests.conftest import REPO_ROOT
from tests.conftest import subprocess_env
from tests.conftest import tiny_config

NUM_VIDEOS, NUM_FRAMES, NUM_CLASSES, CLIP_STARTS = 7, 6, 7, (0, 4)
RNG = np.random.default_rng(0)
TABLE = RNG.normal(size=(NUM_VIDEOS, len(CLIP_STARTS), NUM_CLASSES)).astype(np.float32)
LABELS = RNG.integers(0, NUM_CLASSES, NUM_VIDEOS)
MEAN, STD = 0.45, 0.225


def pixel_value(video: int, frame: int) -> int:
  return 10 + 20 * video + 3 * frame


def video_and_view(x):
  """(video, view) of each clip, read back from its constant pixel value."""
  pixel = (jnp.mean(x[:, 0], axis=(1, 2, 3)) * STD + MEAN) * 255.0 - 10.0
  video = jnp.floor((pixel + 3.0) / 20.0).astype(jnp.int32)
  start = jnp.round((pixel - 20.0 * video) / 3.0).astype(jnp.int32)
  return video, (start == CLIP_STARTS[1]).astype(jnp.int32)


class FixedLogitModel(nn.Module):
  """Reads (video, clip start) back from the constant pixel value and returns TABLE's row."""
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    logits = jnp.asarray(TABLE)[video_and_view(x)][:, :self.num_classes]
    return (logits, {}) if return_aux else logits


class FixedSaliencyModel(nn.Module):
  """FixedLogitModel plus a 2x2 saliency map [[0, s], [0, s]], s = v + c for video v and view
  c (spatial std (v + c) / 2): the views differ, so their reduction shows."""
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    video, view = video_and_view(x)
    column = jnp.stack([jnp.zeros_like(video), video + view], axis=-1).astype(jnp.float32)
    saliency = jnp.stack([column, column], axis=1)  # (clips, 2, 2)
    logits = jnp.asarray(TABLE)[video, view]
    return (logits, {'saliency_final': saliency}) if return_aux else logits


def write_fixed_records(directory, labels, split='val', names=None, num_classes=NUM_CLASSES):
  """The 7 constant-pixel videos as records of `split`, with `labels` (-1 = unlabelled) and
  `names` (default v0 ... v6)."""
  classes = [f'class{i}' for i in range(num_classes)]
  with records.ShardWriter(str(directory), 'fixed_logit_test', split, 2) as writer:
    for v in range(NUM_VIDEOS):
      frames = []
      for t in range(NUM_FRAMES):
        image = np.full((16, 16, 3), pixel_value(v, t), np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format='JPEG', quality=95)
        frames.append(buffer.getvalue())
      label = int(labels[v])
      writer.write(records.serialize_video(frames, label, classes[label] if label >= 0 else '',
                                           names[v] if names else f'v{v}'))
  records.write_metadata(str(directory), records.DatasetMetadata(
      'fixed_logit_test', classes, {split: NUM_VIDEOS}, {split: 2},
      shards={split: writer.shard_entries()}))
  return directory


@pytest.fixture(scope='module')
def fixed_records(tmp_path_factory):
  return write_fixed_records(tmp_path_factory.mktemp('fixed_logit_records'), LABELS)


def _evaluate(directory, model=None, split='val', clips_per_device_forward=0):
  config = tiny_config(directory)
  config.dataset.name = 'fixed_logit_test'
  config.data.update(dict(num_frames=2, eval_num_clips=2, eval_num_crops=1))
  config.eval.clips_per_device_forward = clips_per_device_forward
  mesh = parallel.create_mesh()
  step = evaluate.make_eval_step(model or FixedLogitModel(), config.eval, mesh, config.data)
  return evaluate.evaluate_split(config, {'params': {}}, split, mesh, step)


def expected_scores(reduction: str, scores: str):
  """Every video's views reduced by hand: (NUM_VIDEOS, NUM_CLASSES)."""
  values = TABLE
  if scores == 'softmax':
    values = np.exp(TABLE - TABLE.max(-1, keepdims=True))
    values = values / values.sum(-1, keepdims=True)
  return {'sum': values.sum(1), 'mean': values.mean(1), 'max': values.max(1)}[reduction]


def expected_metrics(reduction: str, scores: str):
  per_video = expected_scores(reduction, scores)
  ranking = np.argsort(-per_video, axis=-1)
  top1 = np.mean(ranking[:, 0] == LABELS)
  top5 = np.mean([label in row[:5] for label, row in zip(LABELS, ranking)])
  return top1, top5


@pytest.mark.parametrize('reduction,scores,clips_per_forward', [
    ('sum', 'logits', 0), ('mean', 'softmax', 0), ('max', 'logits', 0), ('max', 'softmax', 0),
    ('sum', 'logits', 2), ('mean', 'softmax', 4), ('max', 'logits', 1)])
def test_fixed_logit_metrics_by_hand(fixed_records, reduction, scores, clips_per_forward):
  """Every video's views reach its own score, whether a batch's 8 clips go through the model
  at once or `clips_per_forward` at a time. The scores themselves are checked too: TABLE gives
  the same top-1 for several reductions (a max of logits taken as their sum passed)."""
  config = tiny_config(fixed_records)
  config.dataset.name = 'fixed_logit_test'
  config.data.update(dict(num_frames=2, eval_num_clips=2, eval_num_crops=1))
  config.eval.view_reduction, config.eval.view_scores = reduction, scores
  config.eval.clips_per_device_forward = clips_per_forward
  config.eval_batch_size = 4  # 7 videos: the second batch holds 3 videos and 1 padding slot
  mesh = parallel.create_mesh()
  model = FixedLogitModel()
  step = evaluate.make_eval_step(model, config.eval, mesh, config.data)
  results, predictions = evaluate.evaluate_split(config, {'params': {}}, 'val', mesh, step)
  top1, top5 = expected_metrics(reduction, scores)
  assert sorted(predictions.filenames) == [f'v{v}' for v in range(NUM_VIDEOS)]
  videos = [int(name[1:]) for name in predictions.filenames]
  np.testing.assert_allclose(predictions.scores, expected_scores(reduction, scores)[videos],
                             rtol=1e-5, atol=1e-6)
  assert results['num_videos'] == NUM_VIDEOS and results['num_batches'] == 2
  assert results['top1'] == pytest.approx(top1)
  assert results['top5'] == pytest.approx(top5)
  assert 0 < top1 < 1 and top5 < 1  # the table makes the check non-trivial


@pytest.mark.parametrize('unlabelled', [(), (1, 4)])
def test_the_saliency_spread_is_the_mean_over_the_real_videos(fixed_records, tmp_path,
                                                              unlabelled):
  """Mutation audit: the padding slots of the last batch counted in SaliNet's mask spread
  (saliency_final_spatial_std) passed every test, and so did a mean over the labelled videos
  only (the mask needs no label). Each video's spread is the mean over its views."""
  directory = fixed_records
  if unlabelled:
    labels = LABELS.copy()
    labels[list(unlabelled)] = -1
    directory = write_fixed_records(tmp_path / 'records', labels)
  config = tiny_config(directory)
  config.dataset.name = 'fixed_logit_test'
  config.data.update(dict(num_frames=2, eval_num_clips=2, eval_num_crops=1))
  config.eval_batch_size = 4  # 7 videos: the second batch holds 3 videos and 1 padding slot
  mesh = parallel.create_mesh()
  step = evaluate.make_eval_step(FixedSaliencyModel(), config.eval, mesh, config.data)
  results, _ = evaluate.evaluate_split(config, {'params': {}}, 'val', mesh, step)
  assert results['num_batches'] == 2
  per_view = (np.arange(NUM_VIDEOS)[:, None] + np.arange(len(CLIP_STARTS))) / 2
  assert results['saliency_final_spatial_std'] == pytest.approx(np.mean(per_view.mean(1)))


@pytest.mark.parametrize('reduction', ['sum', 'mean', 'max'])
@pytest.mark.parametrize('scores', ['logits', 'softmax'])
def test_predicted_probabilities_follow_the_view_reduction(reduction, scores):
  """Mutation audit: predict's probabilities from summed logits not divided by the views (an
  overconfident softmax of 10 x 3 views' logits) passed every test. Probabilities: the softmax
  of the views' mean (or max) logits; the mean (or renormalised max) of the views' softmax."""
  views = TABLE[:, None].repeat(3, axis=1).reshape(NUM_VIDEOS, 6, NUM_CLASSES)  # 6 views
  views = views + np.linspace(-1, 1, 6)[None, :, None] * TABLE[:, :1, :]
  config = ml_collections.ConfigDict({'view_reduction': reduction, 'view_scores': scores})
  reduced = np.asarray(evaluate.reduce_views(jnp.asarray(views), reduction, scores))

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  for v in range(NUM_VIDEOS):
    got = evaluate.view_probabilities(reduced[v], config, num_views=6)
    if scores == 'logits':
      pooled = views[v].max(0) if reduction == 'max' else views[v].mean(0)
      expected = softmax(pooled)
    else:
      expected = softmax(views[v]).max(0) if reduction == 'max' else softmax(views[v]).mean(0)
      expected = expected / expected.sum()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_clips_per_device_forward_that_does_not_split_the_batch_fails_in_one_line(tmp_path):
  config = tiny_config(tmp_path)
  config.data.update(dict(eval_num_clips=2, eval_num_crops=1))
  config.eval_batch_size = 4
  config.eval.clips_per_device_forward = 3
  with pytest.raises(errors.ConfigError, match=r'config.eval.clips_per_device_forward=3 must '
                     r'divide the 8 clips each device holds'):
    engine.check_batch_sizes(config, 1)
  config.eval.clips_per_device_forward = 4
  engine.check_batch_sizes(config, 1)
  engine.check_batch_sizes(config, 2)  # 4 videos x 2 views over 2 devices: one pass each
  with pytest.raises(errors.ConfigError, match='divide the 2 clips each device holds'):
    engine.check_batch_sizes(config, 4)


def test_evaluation_on_devices_that_do_not_divide_the_train_batch_is_not_refused(tmp_path):
  """Audit: eval on 3 devices was refused because config.batch_size=4 does not divide over
  them, though evaluation never takes a train batch; training still is."""
  config = tiny_config(tmp_path)
  config.batch_size, config.eval_batch_size, config.bn_group_size = 4, 3, 4
  engine.check_config(config, training=False, devices=3)
  with pytest.raises(errors.ConfigError, match='config.batch_size=4 is not divisible by the 3'):
    engine.check_config(config, training=True, devices=3)


class HugeTemporaryModel(nn.Module):
  """FixedLogitModel whose forward pass sorts a 16 TiB temporary: XLA cannot allocate it."""
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    rows = jax.lax.broadcasted_iota(jnp.float32, (2**20, 2**22), 0)
    huge = jnp.sort(jnp.sin(rows * jnp.mean(x)), axis=0)
    logits = FixedLogitModel(self.num_classes)(x) + huge[0, 0]
    return (logits, {}) if return_aux else logits


@pytest.mark.parametrize('clips_per_device_forward,advice', [
    (0, "on 8 clips a device in each forward pass (a device's share of a batch: 4 of 2 views "
        'each). Set config.eval.clips_per_device_forward to fewer, a divisor of 8 (e.g. 4): '
        'activation memory scales with it.'),
    (1, "on 1 clip a device in each forward pass (a device's share of a batch: 4 of 2 views "
        'each). One clip a device at a time does not fit: hold fewer videos in a batch '
        '(config.eval_batch_size; windowed predict: config.predict.window_batch), or use a '
        'device with more memory.')])
def test_an_eval_step_out_of_device_memory_says_which_setting_holds_fewer_clips(
    fixed_records, clips_per_device_forward, advice):
  """XLA's RESOURCE_EXHAUSTED names bytes, not the clips a device held in one forward pass nor
  config.eval.clips_per_device_forward, which lowers them (training's advice had no eval
  counterpart)."""
  with pytest.raises(MemoryError) as raised:
    _evaluate(fixed_records, HugeTemporaryModel(),
              clips_per_device_forward=clips_per_device_forward)
  assert str(raised.value).startswith(
      f'Out of device memory running the model {advice} Original error: RESOURCE_EXHAUSTED'), (
          raised.value)


def test_reduce_views_rejects_unknown_modes():
  with pytest.raises(ValueError, match='view_reduction'):
    evaluate.reduce_views(jnp.zeros((1, 2, 3)), 'median', 'logits')
  with pytest.raises(ValueError, match='view_scores'):
    evaluate.reduce_views(jnp.zeros((1, 2, 3)), 'sum', 'probits')


def test_outputs_per_class_predictions_and_confusion(fixed_records, tmp_path):
  results, predictions = _evaluate(fixed_records)
  results['step'] = 0
  paths = reports.write_outputs(str(tmp_path), results, predictions)
  assert sorted(os.path.basename(p) for p in paths) == [
      'eval_val.json', 'eval_val_confusion.png', 'eval_val_per_class.csv',
      'eval_val_predictions.csv']

  per_video = TABLE.sum(1)  # the default reduction: sum of logits
  predicted = per_video.argmax(-1)
  by_class = {c: [predicted[v] == c for v in range(NUM_VIDEOS) if LABELS[v] == c]
              for c in set(LABELS.tolist())}
  expected_mean_class = np.mean([np.mean(hits) for hits in by_class.values()])
  assert results['mean_class_accuracy'] == pytest.approx(expected_mean_class)
  rows = list(csv.DictReader(open(tmp_path / 'eval_val_per_class.csv')))
  assert len(rows) == NUM_CLASSES
  for row in rows:
    c = int(row['class_index'])
    assert int(row['num_videos']) == len(by_class.get(c, []))
    if c in by_class:
      assert float(row['top1']) == pytest.approx(np.mean(by_class[c]))
    else:
      assert row['top1'] == ''
  rows = {r['video']: r for r in csv.DictReader(open(tmp_path / 'eval_val_predictions.csv'))}
  assert len(rows) == NUM_VIDEOS
  for v in range(NUM_VIDEOS):
    row = rows[f'v{v}']
    ranking = np.argsort(-per_video[v])
    assert [int(row[f'top{k + 1}']) for k in range(5)] == ranking[:5].tolist()
    assert float(row['top1_score']) == pytest.approx(per_video[v, ranking[0]], rel=1e-5)
    assert int(row['label']) == LABELS[v] and row['correct'] == str(int(ranking[0] == LABELS[v]))
  expected = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
  np.add.at(expected, (LABELS, predicted), 1)  # rows true classes, columns predicted
  assert not np.array_equal(expected, expected.T)  # the table makes the orientation show
  np.testing.assert_array_equal(evaluate.confusion_matrix(predictions), expected)
  assert os.path.getsize(tmp_path / 'eval_val_confusion.png') > 1000


def test_an_evaluation_stopped_while_its_files_are_written_leaves_the_earlier_ones_whole(
    fixed_records, tmp_path, monkeypatch):
  """Chaos audit: each output file was replaced whole, one after the other, so an eval killed
  between them left eval_val.json of the new evaluation beside the CSVs and PNG of the one
  before (none of them carries its step). The set now replaces the earlier one only once every
  file of it is written: stopped before, the earlier set is left as it was."""
  results, predictions = _evaluate(fixed_records)
  results['step'] = 35
  reports.write_outputs(str(tmp_path), results, predictions)
  earlier = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
  assert len(earlier) == 4, earlier.keys()
  results['step'] = 40
  predictions = dataclasses.replace(predictions, scores=predictions.scores[:, ::-1].copy())

  def killed(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(reports, 'plot_confusion', killed)  # after the CSVs, before the json
  with pytest.raises(KeyboardInterrupt):
    reports.write_outputs(str(tmp_path), results, predictions)
  assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == earlier
  monkeypatch.undo()
  reports.write_outputs(str(tmp_path), results, predictions)
  assert json.loads((tmp_path / 'eval_val.json').read_text())['step'] == 40
  assert (tmp_path / 'eval_val_predictions.csv').read_bytes() != earlier['eval_val_predictions.csv']


def test_top5_is_left_out_for_five_classes_or_fewer(tmp_path):
  """Mutation audit: top-5 reported for 5 classes (1.0 whatever the model) passed every test."""
  directory = write_fixed_records(tmp_path, LABELS % 5, num_classes=5)
  results, _ = _evaluate(directory, FixedLogitModel(num_classes=5))
  assert 'top1' in results and 'top5' not in results


def test_long_filenames_are_kept_whole(tmp_path):
  """Names were cut at 512 bytes: two videos deep in one folder came out as one name in the
  predictions CSV."""
  names = ['d' * 300 + '/' + 'e' * 300 + f'/clip_{v}.mp4' for v in range(NUM_VIDEOS)]
  _, predictions = _evaluate(write_fixed_records(tmp_path, LABELS, names=names))
  assert sorted(predictions.filenames) == sorted(names)


def test_filenames_of_several_processes_are_gathered_whole(monkeypatch):
  """Across processes the names travel as rows as wide as the longest name of any process (a
  fixed 512 bytes cut longer ones); two processes simulated, each allgather stacking both."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local = [[b'a' * 600, b'', b'short'], [b'b' * 700, b'x', b'']]
  calls = []

  def allgather(value):  # what each process gets: both processes' values, stacked
    calls.append(value)
    if np.asarray(value).ndim == 1:  # the widths
      return np.stack([np.asarray([600], np.int32), np.asarray([700], np.int32)])
    other = np.zeros_like(value)
    for i, name in enumerate(local[1]):
      other[i, :len(name)] = np.frombuffer(name, np.uint8)
    return np.stack([value, other])

  monkeypatch.setattr(evaluate.jax, 'process_count', lambda: 2)
  monkeypatch.setattr(multihost_utils, 'process_allgather', allgather)
  names = evaluate._gather_names(np.asarray(local[0], dtype=object))  # pylint: disable=protected-access
  assert names == [n.decode() for n in local[0] + local[1]]
  assert np.asarray(calls[1]).shape == (3, 700)


@dataclasses.dataclass(frozen=True)
class _Device:
  """What a mesh reads of a device of a process group."""
  id: int
  process_index: int
  platform: str = 'gpu'


def test_the_mesh_puts_each_process_s_devices_together(monkeypatch):
  """Eval gathers names and labels process by process but reads scores in the mesh's device
  order. Under `jax_sort_devices_by_process_index=False` JAX lists a group's devices by id
  alone, which can interleave the processes: scores then went to other videos' names."""
  interleaved = [_Device(0, 0), _Device(1, 1), _Device(2, 0), _Device(3, 1)]
  monkeypatch.setattr(parallel.jax, 'devices', lambda: interleaved)
  mesh = parallel.create_mesh()
  assert [(d.id, d.process_index) for d in mesh.devices.flat] == [(0, 0), (2, 0), (1, 1), (3, 1)]


def test_unlabelled_split_gets_predictions_and_counts_but_no_accuracy(tmp_path):
  directory = write_fixed_records(tmp_path / 'records', [-1] * NUM_VIDEOS, split='test')
  results, predictions = _evaluate(directory, split='test')
  assert results['num_videos'] == NUM_VIDEOS and results['num_labeled'] == 0
  assert not {'top1', 'top5', 'mean_class_accuracy'} & set(results)
  assert 'no labels' in evaluate.summary_line(results)
  results['step'] = 0
  paths = reports.write_outputs(str(tmp_path), results, predictions)
  assert sorted(os.path.basename(p) for p in paths) == ['eval_test.json',
                                                        'eval_test_predictions.csv']
  assert evaluate.confusion_matrix(predictions).sum() == 0  # -1 is never counted as a class
  rows = list(csv.DictReader(open(tmp_path / 'eval_test_predictions.csv')))
  assert len(rows) == NUM_VIDEOS and all(r['label'] == '' and r['correct'] == '' for r in rows)
  per_video = TABLE.sum(1)
  for row in rows:
    v = int(row['video'][1:])
    assert int(row['top1']) == int(per_video[v].argmax())


def test_partly_labelled_split_counts_labelled_videos_only(tmp_path):
  labels = LABELS.copy()
  labels[[1, 4]] = -1
  directory = write_fixed_records(tmp_path / 'records', labels)
  results, predictions = _evaluate(directory)
  keep = labels >= 0
  per_video = TABLE.sum(1)
  assert results['num_videos'] == NUM_VIDEOS and results['num_labeled'] == int(keep.sum())
  assert results['top1'] == pytest.approx(np.mean(per_video[keep].argmax(-1) == labels[keep]))
  assert evaluate.confusion_matrix(predictions).sum() == keep.sum()
  assert '5 labelled' in evaluate.summary_line(results)
  # UCF101's and HMDB51's papers often quote it: the console says it, not only the json.
  assert f"mean class {results['mean_class_accuracy']:.4f}" in evaluate.summary_line(results)


class NaNModel(FixedLogitModel):
  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    logits = super().__call__(x, train) * jnp.nan
    return (logits, {}) if return_aux else logits


def test_non_finite_scores_stop_the_evaluation_and_json_stays_valid(fixed_records, tmp_path):
  with pytest.raises(evaluate.NonFiniteScoresError, match='NaN or Inf scores for 7 of 7 videos'):
    _evaluate(fixed_records, NaNModel())
  path = reports.write_json(str(tmp_path / 'x.json'), {'top1': float('nan'), 'n': np.int64(3)})
  assert json.loads(open(path).read()) == {'top1': None, 'n': 3}  # strict JSON, no NaN token


_FOUR_DEVICE_EVAL = """
import json, sys
import jax
from salinet_jax import evaluate, parallel
from tests.test_evaluate import FixedLogitModel, tiny_config
config = tiny_config(sys.argv[1])
config.dataset.name = 'fixed_logit_test'
config.data.update(dict(num_frames=2, eval_num_clips=2, eval_num_crops=1))
config.eval_batch_size = 8  # 7 videos and 1 padding slot: 2 videos x 2 views on each device
config.eval.clips_per_device_forward = int(sys.argv[2])
mesh = parallel.create_mesh()
assert mesh.size == 4, jax.devices()
step = evaluate.make_eval_step(FixedLogitModel(), config.eval, mesh, config.data)
results, _ = evaluate.evaluate_split(config, {'params': {}}, 'val', mesh, step)
print(json.dumps(results))
"""


@pytest.mark.parametrize('clips_per_device_forward', [0, 2, 1])
def test_four_devices_score_every_video_in_chunks(fixed_records, clips_per_device_forward):
  """On a 4-device mesh each forward pass takes clips from every device's share: the scores
  are the ones computed by hand, however the passes split them."""
  out = subprocess.run(
      [sys.executable, '-c', _FOUR_DEVICE_EVAL, str(fixed_records), str(clips_per_device_forward)],
      env=subprocess_env(devices=4), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads(out.stdout.strip().splitlines()[-1])
  top1, top5 = expected_metrics('sum', 'logits')
  assert results['num_videos'] == NUM_VIDEOS
  assert results['top1'] == pytest.approx(top1) and results['top5'] == pytest.approx(top5)


_EVAL_COLLECTIVES = """
import json, re, sys
import jax, numpy as np
from salinet_jax import engine, parallel
from tests.conftest import tiny_config
config = tiny_config(sys.argv[1])
config.data.update(dict(eval_num_clips=2, eval_num_crops=1))
config.eval_batch_size = 4
counts = {}
for clips in (0, 1):
  config.eval.clips_per_device_forward = clips
  trainer = engine.Engine(config, ['a', 'b', 'c', 'd'])
  assert trainer.mesh.size == 4
  shard = parallel.batch_sharded(trainer.mesh)
  variables = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(trainer.mesh)),
      trainer.abstract_state().variables)
  frames, size = config.data.num_frames, config.data.eval_crop_size
  batch = {'video': jax.ShapeDtypeStruct((4, 2, frames, size, size, 3), np.uint8, sharding=shard),
           'label': jax.ShapeDtypeStruct((4,), np.int32, sharding=shard),
           'mask': jax.ShapeDtypeStruct((4,), bool, sharding=shard)}
  text = trainer.eval_step.lower(variables, batch).compile().as_text()
  counts[clips] = {op: len(re.findall(' ' + op + r'[-\\(]', text))
                   for op in ('all-gather', 'all-to-all', 'collective-permute', 'all-reduce')}
print(json.dumps(counts))
"""


def test_eval_passes_on_four_devices_move_no_clips_between_devices(tmp_path):
  """Each forward pass takes every device's own clips: chunking adds no collective to the step
  (passes of contiguous clips would gather them across devices)."""
  out = subprocess.run([sys.executable, '-c', _EVAL_COLLECTIVES, str(tmp_path)],
                       env=subprocess_env(devices=4), capture_output=True, text=True, timeout=600,
                       cwd=REPO_ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  counts = json.loads(out.stdout.strip().splitlines()[-1])
  assert counts['1'] == counts['0'], counts


def test_records_holding_another_number_of_videos_than_their_metadata_are_named(tmp_path):
  """Records whose shards hold one video more than metadata.json counts (written by other code,
  or an edited metadata.json) ended in a RuntimeError traceback blaming the eval pipeline
  (data audit)."""
  directory = write_fixed_records(tmp_path / 'records', LABELS)
  metadata = json.loads((directory / 'metadata.json').read_text())
  metadata['split_sizes']['val'] -= 1
  metadata['shards']['val'][0]['num_videos'] -= 1
  (directory / 'metadata.json').write_text(json.dumps(metadata))
  shard = metadata['shards']['val'][0]
  with pytest.raises(records.CorruptShardError, match=(
      rf"Split 'val' of 'fixed_logit_test' in {directory}: shard {shard['file']} holds "
      rf"{shard['num_videos'] + 1} videos, but metadata.json counts {shard['num_videos']} "
      r'\(7 in the split, 6 counted\)')):
    _evaluate(directory)


@pytest.mark.parametrize('seen', [4, 3])
def test_eval_pictures_of_a_process_group_say_whose_videos_they_show(seen, monkeypatch):
  """With 2 processes the pictures were of videos 0, 2, 4, 6 (process 0 reads one video in 2),
  though they read as the split's first ones (audit)."""
  pictures = visualize.EvalPictures(nn.Dense(1), {}, '/out/vis', 4, None, ('a', 'b'))
  pictures.paths, pictures.videos_seen = [f'p{i}' for i in range(min(seen, 4))], seen
  monkeypatch.setattr(visualize.jax, 'process_count', lambda: 2)
  share = ("of process 0's share of the split: with 2 processes each reads one video in 2 (the "
           "split's 1st, 3rd, 5th, ...)")
  assert pictures.summary(7) == (
      f'Wrote 4 pictures to /out/vis, {share}.' if seen == 4 else
      f'Wrote 3 pictures to /out/vis, {share} (config.eval.num_visualizations=4, but this '
      "process's share of the split holds 3 videos).")
  monkeypatch.setattr(visualize.jax, 'process_count', lambda: 1)
  pictures.paths, pictures.videos_seen = [f'p{i}' for i in range(4)], 7
  assert pictures.summary(7) == 'Wrote 4 pictures to /out/vis.'
