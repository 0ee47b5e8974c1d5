"""Full-split, multi-view evaluation with exact counts, on labelled and unlabelled splits.

Every video of the split is scored once: its views (temporal clips x spatial crops) are reduced
to one score vector (sum | mean | max of logits or softmax probabilities), then top-1/top-5 are
accumulated as (sum, count) under the padding mask, so the padded tail of the last batch never
counts and nothing is dropped. Videos without a label (label -1: the Kinetics and SSv2 test
sets, predictions) are scored but left out of the accuracies, which say over how many labelled
videos they were taken; a split with no label gets no accuracy at all. Scores that are not
finite stop the evaluation: a NaN model must not be reported as an accuracy.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from salinet_jax import errors
from salinet_jax import inputs
from salinet_jax import parallel

VIEW_REDUCTIONS = ('sum', 'mean', 'max')
VIEW_SCORES = ('logits', 'softmax')
# Model-specific figures reported beside top-1/top-5 when a model provides them.
EXTRA_METRICS = ('saliency_final_spatial_std', 'snet_top1', 'snet_top5')
# The results that say how an evaluation was made: scores of evaluations that differ in them
# do not compare (checkpoints record them beside the best metric).
EVALUATION_SETTINGS = ('split', 'num_videos', 'num_labeled', 'views_per_video', 'view_reduction')
# The results that are scalar metrics (what training writes to TensorBoard after each evaluation).
SCALAR_METRICS = ('top1', 'top5', 'mean_class_accuracy') + EXTRA_METRICS


class NonFiniteScoresError(errors.UserError):
  """The model produced NaN or Inf scores: no accuracy is reported."""


class VideoCountError(RuntimeError):
  """An evaluation scored another number of videos than its split holds."""


def reduce_views(logits: jnp.ndarray, reduction: str, scores: str) -> jnp.ndarray:
  """(B, V, K) per-view logits -> (B, K) per-video scores."""
  if reduction not in VIEW_REDUCTIONS:
    raise errors.ConfigError(f'config.eval.view_reduction must be one of {VIEW_REDUCTIONS}, '
                             f'got {reduction!r}.')
  if scores not in VIEW_SCORES:
    raise errors.ConfigError(f'config.eval.view_scores must be one of {VIEW_SCORES}, got '
                             f'{scores!r}.')
  values = jax.nn.softmax(logits, axis=-1) if scores == 'softmax' else logits
  return {'sum': jnp.sum, 'mean': jnp.mean, 'max': jnp.max}[reduction](values, axis=1)


def topk_correct(scores: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
  """Whether each label is among the k highest scores (ties broken by lower class index)."""
  k = min(k, scores.shape[-1])
  _, top = jax.lax.top_k(scores, k)
  return jnp.any(top == labels[:, None], axis=-1)


def batch_metric_sums(scores, labels, mask) -> Dict[str, jnp.ndarray]:
  """Masked sums for one batch: real videos, labelled videos, correct top-1 and top-5 among
  the labelled ones, and videos whose scores are not all finite.

  Plain sums rather than clu.metrics.Average: the counts themselves are reported and checked
  (every video scored exactly once, how many are labelled), which an average hides.
  """
  real = mask.astype(jnp.float32)
  labelled = (mask & (labels >= 0)).astype(jnp.float32)
  return {
      'top1': jnp.sum(topk_correct(scores, labels, 1) * labelled),
      'top5': jnp.sum(topk_correct(scores, labels, 5) * labelled),
      'count': jnp.sum(real),
      'labeled': jnp.sum(labelled),
      'non_finite': jnp.sum(jnp.logical_not(jnp.all(jnp.isfinite(scores), axis=-1)) * real),
  }


# The model's auxiliary outputs the eval step reads; the others are not kept.
EVAL_AUX = ('snet_logits', 'saliency_final')


def check_clips_per_device_forward(
    clips_per_device: int, device_clips: int,
    batch: str = 'an eval batch (config.eval_batch_size / devices x views per video)') -> None:
  """Fails in one line unless `config.eval.clips_per_device_forward` (0: all) divides the
  `device_clips` clips (videos x views) that each device holds in `batch`, what is said of it."""
  if clips_per_device < 0 or (clips_per_device and device_clips % clips_per_device):
    raise errors.ConfigError(
        f'config.eval.clips_per_device_forward={clips_per_device} must divide the '
        f'{device_clips} clips each device holds in {batch}; 0 runs them all in one forward '
        'pass.')


def batch_clips(batch) -> Tuple[Dict[str, jnp.ndarray], int, int]:
  """(clips, B, V): a (B, V, ...) eval batch's B x V clips as per-clip arrays ('video', and
  'frame_mask' for variable-length videos: every view has its video's valid frames)."""
  batch_size, views = batch['video'].shape[:2]
  clips = {'video': batch['video'].reshape((batch_size * views,) + batch['video'].shape[2:])}
  if 'frame_mask' in batch:
    clips['frame_mask'] = jnp.repeat(batch['frame_mask'], views, axis=0)
  return clips, batch_size, views


def forward_in_chunks(apply_fn, clips: Dict[str, jnp.ndarray], clips_per_forward: int):
  """`apply_fn(clips)` over a dict of (N, ...) per-clip arrays, `clips_per_forward` clips at a
  time (0: all at once), results in the clips' order. Pass j takes clips j, j + N/c, j + 2N/c,
  ...: with the clips sharded in contiguous blocks over the devices, every pass stays sharded
  the same way. Activation memory then scales with c instead of N."""
  count = clips['video'].shape[0]
  if clips_per_forward and count % clips_per_forward:
    raise errors.ConfigError(f'{clips_per_forward} clips per forward pass do not divide the '
                             f'{count} clips of an eval batch.')
  if not clips_per_forward or clips_per_forward >= count:
    return apply_fn(clips)
  passes = count // clips_per_forward

  def split(x):
    return jnp.swapaxes(x.reshape((clips_per_forward, passes) + x.shape[1:]), 0, 1)

  def join(y):
    return jnp.swapaxes(y, 0, 1).reshape((count,) + y.shape[2:])

  return jax.tree.map(join, jax.lax.map(apply_fn, jax.tree.map(split, clips)))


def eval_step(variables, batch, *, model, reduction: str, scores: str, data_config,
              clips_per_forward: int):
  """Scores one multi-view batch: masked metric sums plus per-video scores for the outputs.

  The batch's clips (videos x views) go through the model `clips_per_forward` at a time (over
  all devices; 0: all in one pass). For models with a saliency mask (SaliNet), also sums the
  spatial standard deviation of S_final per video (0 would mean a constant, uninformative mask).
  """
  clips, batch_size, views = batch_clips(batch)

  def apply_fn(clip_batch):  # normalised here, so only the pass's own clips are ever float
    video, kwargs = inputs.model_inputs(clip_batch, data_config)
    logits, aux = model.apply(variables, video, train=False, return_aux=True, **kwargs)
    return logits, {name: aux[name] for name in EVAL_AUX if name in aux}

  logits, aux = forward_in_chunks(apply_fn, clips, clips_per_forward)
  per_video = reduce_views(logits.reshape(batch_size, views, -1), reduction, scores)
  sums = batch_metric_sums(per_video, batch['label'], batch['mask'])
  labelled = (batch['mask'] & (batch['label'] >= 0)).astype(jnp.float32)
  if 'snet_logits' in aux:  # S2DNet also reports its synopsis network's own accuracy
    snet = reduce_views(aux['snet_logits'].reshape(batch_size, views, -1), reduction, scores)
    sums['snet_top1'] = jnp.sum(topk_correct(snet, batch['label'], 1) * labelled)
    sums['snet_top5'] = jnp.sum(topk_correct(snet, batch['label'], 5) * labelled)
  if 'saliency_final' in aux:
    saliency = aux['saliency_final'].reshape(batch_size, views, -1)
    spatial_std = jnp.mean(jnp.std(saliency, axis=-1), axis=1)
    sums['saliency_spatial_std'] = jnp.sum(spatial_std * batch['mask'])
  return {'sums': sums, 'scores': per_video.astype(jnp.float32)}


def make_eval_step(model, eval_config, mesh, data_config):
  """The jitted eval step: batch sharded over the mesh, variables and outputs replicated."""
  reduce_views(jnp.zeros((1, 1, 1)), eval_config.view_reduction, eval_config.view_scores)
  step = functools.partial(eval_step, model=model, reduction=eval_config.view_reduction,
                           scores=eval_config.view_scores, data_config=data_config,
                           clips_per_forward=eval_config.clips_per_device_forward * mesh.size)
  return EvalStep(step, mesh, eval_config.clips_per_device_forward)


class EvalStep:
  """`step(variables, batch)` over (videos, views, ...) batches (`make_eval_step`'s, features'),
  jitted with the batch sharded over `mesh`, variables and outputs replicated. Running out of
  device memory while it compiles or runs raises a MemoryError that says how many clips a
  device held in one forward pass and which setting holds fewer; its results are ready when it
  returns. Every other attribute (`lower`, `trace`) is the jitted function's."""

  def __init__(self, step, mesh, clips_per_device_forward: int):
    self._jitted = jax.jit(step, in_shardings=(parallel.replicated(mesh),
                                               parallel.batch_sharded(mesh)),
                           out_shardings=parallel.replicated(mesh))
    self._clips_per_device_forward = clips_per_device_forward
    self._devices = mesh.size

  def __call__(self, variables, batch):
    jax.block_until_ready(variables)  # a failure of what computed them is not this step's
    with errors.out_of_device_memory_told(
        lambda e: self._memory_advice(batch['video'].shape[:2], e)):
      return jax.block_until_ready(self._jitted(variables, batch))

  def _memory_advice(self, rows_and_views, error) -> str:
    rows, views = rows_and_views
    clips = rows * views // self._devices
    forward = min(self._clips_per_device_forward or clips, clips)
    clip_s = 'clip' if forward == 1 else 'clips'
    held = (f'Out of device memory running the model on {forward} {clip_s} a device in each '
            f'forward pass (a device\'s share of a batch: {rows // self._devices} of {views} '
            'views each).')
    if forward == 1:
      change = (' One clip a device at a time does not fit: hold fewer videos in a batch '
                '(config.eval_batch_size; windowed predict: config.predict.window_batch), or '
                'use a device with more memory.')
    else:
      fewer = max(d for d in range(1, forward) if clips % d == 0)
      change = (f' Set config.eval.clips_per_device_forward to fewer, a divisor of {clips} '
                f'(e.g. {fewer}): activation memory scales with it.')
    return f'{held}{change} Original error: {str(error)[:2000]}'

  def __getattr__(self, name):
    if name == '_jitted':  # not set yet (a copy being made): not the jitted function's either
      raise AttributeError(name)
    return getattr(self._jitted, name)


@dataclasses.dataclass
class Predictions:
  """Per-video results of one split: reduced scores (N, K), labels (N,; -1 = unlabelled),
  filenames (N,)."""
  scores: np.ndarray
  labels: np.ndarray
  filenames: List[str]
  classes: Sequence[str]

  @property
  def labeled(self) -> np.ndarray:
    return self.labels >= 0


def _gather_rows(local: np.ndarray) -> np.ndarray:
  """Concatenates every process's local batch rows in the global arrays' (process-major) order."""
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = np.asarray(multihost_utils.process_allgather(local))
  return gathered.reshape((-1,) + local.shape[1:])


def _gather_names(names: np.ndarray) -> List[str]:
  """Every process's bytes filenames, whole, in `_gather_rows` order: across processes they
  travel as uint8 rows as wide as the longest name of any process."""
  if jax.process_count() == 1:
    return [bytes(name).decode('utf-8', 'replace') for name in names]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  longest = max((len(name) for name in names), default=0)
  width = int(np.max(multihost_utils.process_allgather(np.asarray([longest], np.int32))))
  encoded = np.zeros((len(names), max(width, 1)), np.uint8)
  for i, name in enumerate(names):
    encoded[i, :len(name)] = np.frombuffer(bytes(name), np.uint8)
  return [bytes(row).rstrip(b'\0').decode('utf-8', 'replace') for row in _gather_rows(encoded)]


# Per-class accuracy and the confusion matrix are a bincount each in numpy: scikit-learn would be
# a new dependency for two lines.
def per_class_accuracy(predictions: Predictions) -> np.ndarray:
  """Top-1 accuracy of each class over its labelled videos (NaN for classes without any)."""
  num_classes = len(predictions.classes)
  labels = predictions.labels[predictions.labeled]
  predicted = np.argmax(predictions.scores[predictions.labeled], axis=-1)
  correct = np.bincount(labels, weights=predicted == labels, minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)


def confusion_matrix(predictions: Predictions) -> np.ndarray:
  """(K, K) counts over the labelled videos: rows are true classes, columns predicted ones."""
  num_classes = len(predictions.classes)
  predicted = np.argmax(predictions.scores[predictions.labeled], axis=-1)
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (predictions.labels[predictions.labeled], predicted), 1)
  return matrix


def evaluate_batches(batches, num_videos: int, variables, mesh, jitted_step, classes,
                     visualize: Optional[Callable[[Dict[str, np.ndarray]], bool]] = None,
                     stop_requested: Optional[Callable[[], bool]] = None
                     ) -> Tuple[Dict[str, float], Predictions]:
  """Runs `jitted_step` over eval batches (host numpy, the pipeline's eval layout) holding
  `num_videos` real videos; returns (metric totals, per-video predictions). `visualize` is
  called with each local batch while it returns True (it wants more). `stop_requested` is asked
  before each batch; when it says True, errors.StopRequested ends the evaluation."""
  totals = None
  scores, labels, filenames, positions = [], [], [], []
  for index, batch in enumerate(batches):
    if stop_requested is not None and stop_requested():
      raise errors.StopRequested(f'stopped after {index} eval batches')
    if visualize is not None and not visualize(dict(batch)):
      visualize = None
    names = _gather_names(batch.pop('filename'))
    mask = _gather_rows(batch['mask'])
    positions.append(_split_positions(index, len(batch['mask']))[mask])
    outputs = jitted_step(variables, parallel.to_global(batch, mesh))
    sums = outputs['sums']
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    scores.append(np.asarray(outputs['scores'])[mask])
    labels.append(_gather_rows(batch['label'])[mask])
    filenames += [n for n, real in zip(names, mask) if real]
  totals = jax.tree.map(lambda x: float(np.asarray(x)), totals)
  if int(round(totals['count'])) != num_videos:
    raise VideoCountError(f'Evaluated {totals["count"]} videos but there are {num_videos}: the '
                          'eval pipeline lost or repeated videos.')
  order = np.argsort(np.concatenate(positions), kind='stable')  # the split's own order
  return totals, Predictions(np.concatenate(scores)[order],
                             np.concatenate(labels).astype(np.int64)[order],
                             [filenames[i] for i in order], tuple(classes))


def _split_positions(index: int, local_batch: int) -> np.ndarray:
  """The split positions of the `_gather_rows` rows of the `index`-th eval batch: with several
  processes the rows come process by process, each holding every n-th video of the split."""
  local = index * local_batch + np.arange(local_batch)
  if jax.process_count() == 1:
    return local
  from data import pipeline  # pylint: disable=g-import-not-at-top
  return np.concatenate([pipeline.split_position(local, p, jax.process_count())
                         for p in range(jax.process_count())])


def evaluate_split(config, variables, split: str, mesh, jitted_step,
                   visualize: Optional[Callable[[Dict[str, np.ndarray]], bool]] = None,
                   what: str = 'the model',
                   stop_requested: Optional[Callable[[], bool]] = None
                   ) -> Tuple[Dict[str, Any], Predictions]:
  """Evaluates `variables` on every video of `split` with `make_eval_step`'s step.

  `visualize`, if given, is called with the local batches (host numpy arrays) from the first
  on, while it returns True (visualize.EvalPictures); `stop_requested` as in `evaluate_batches`.
  Returns (results, per-video predictions). Results always hold split, num_videos,
  num_labeled, views_per_video, view_reduction, eval_seconds, num_batches; top1, top5 and
  mean_class_accuracy (and the model's EXTRA_METRICS) only when some video is labelled, and
  top5 (snet_top5) only with more than 5 classes.
  Raises NonFiniteScoresError when any video's scores are NaN or Inf.
  """
  # Imported here: the eval step (engine, bench, export) must not load TensorFlow, only this.
  from data import pipeline  # pylint: disable=g-import-not-at-top
  parallel.check_batch_size(config.eval_batch_size, mesh.size, 'config.eval_batch_size')
  ds, num_batches, info = pipeline.eval_dataset(config, split)
  start = time.time()
  try:
    totals, predictions = evaluate_batches(pipeline.as_numpy(ds, info), info.num_videos,
                                           variables, mesh, jitted_step, info.classes, visualize,
                                           stop_requested)
  except VideoCountError:
    pipeline.check_video_counts(info)  # records that hold another count than metadata.json's
    raise
  if totals['non_finite']:
    raise NonFiniteScoresError(
        f'{what} gives NaN or Inf scores for {int(totals["non_finite"])} of {info.num_videos} '
        f'videos of split {split!r}: no accuracy is reported. Its weights are not usable; '
        'evaluate an earlier checkpoint.')
  views = config.data.eval_num_clips * config.data.eval_num_crops
  results = {
      'split': split,
      'num_videos': int(round(totals['count'])),
      'num_labeled': int(round(totals['labeled'])),
      'views_per_video': views,
      'view_reduction': f'{config.eval.view_reduction} of {config.eval.view_scores}',
      'eval_seconds': time.time() - start,
      'num_batches': num_batches,
  }
  labelled = totals['labeled']
  # With 5 classes or fewer every video is in its top 5: top-5 would read 1.0 whatever the model.
  top5 = len(info.classes) > 5
  if labelled:
    results['top1'] = totals['top1'] / labelled
    if top5:
      results['top5'] = totals['top5'] / labelled
    present = per_class_accuracy(predictions)
    present = present[~np.isnan(present)]
    results['mean_class_accuracy'] = float(np.mean(present))
    if 'snet_top1' in totals:
      results['snet_top1'] = totals['snet_top1'] / labelled
      if top5:
        results['snet_top5'] = totals['snet_top5'] / labelled
  if 'saliency_spatial_std' in totals:
    results['saliency_final_spatial_std'] = totals['saliency_spatial_std'] / totals['count']
  return results, predictions


def view_probabilities(scores: np.ndarray, eval_config, num_views: int) -> np.ndarray:
  """Per-video class probabilities from the view-reduced scores of the evaluation."""
  if eval_config.view_scores == 'softmax':
    if eval_config.view_reduction == 'max':
      return scores / np.sum(scores)
    return scores / (num_views if eval_config.view_reduction == 'sum' else 1.0)
  logits = scores / (num_views if eval_config.view_reduction == 'sum' else 1.0)
  exp = np.exp(logits - np.max(logits))
  return exp / np.sum(exp)


def summary_line(results: Dict[str, Any]) -> str:
  """One readable line of eval results: accuracies (over labelled videos), counts, time."""
  count, labelled = results['num_videos'], results['num_labeled']
  parts = []
  if 'top1' in results:
    parts.append(f"top-1 {results['top1']:.4f}"
                 + (f"  top-5 {results['top5']:.4f}" if 'top5' in results else '')
                 + f"  mean class {results['mean_class_accuracy']:.4f}")
    parts += [f"{key.replace('_', ' ')} {results[key]:.4f}" for key in EXTRA_METRICS
              if key in results and key != 'saliency_final_spatial_std']
  else:
    parts.append('no labels: predictions only')
  videos = f'{count} videos' + (f', {labelled} labelled' if 0 < labelled < count else '')
  parts.append(f"({videos}, {results['views_per_video']} views each, "
               f"{results['eval_seconds']:.1f} s)")
  return '  '.join(parts)
