"""Full-split, multi-view evaluation with exact counts.

Every video of the split is scored once: its views (temporal clips x spatial crops) are reduced
to one score vector (sum | mean | max of logits or softmax probabilities), then top-1/top-5 are
accumulated as (sum, count) under the padding mask, so the padded tail of the last batch never
counts and nothing is dropped.
"""

import csv
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from data import pipeline
from salinet_jax import inputs
from salinet_jax import parallel

VIEW_REDUCTIONS = ('sum', 'mean', 'max')
VIEW_SCORES = ('logits', 'softmax')
TOP_PREDICTIONS = 5  # classes listed per video in the predictions CSV
MAX_NAMED_CLASSES = 60  # the confusion PNG names classes up to this many
FILENAME_BYTES = 512
# Model-specific figures logged beside top-1/top-5 when a model provides them.
EXTRA_METRICS = ('saliency_final_spatial_std', 'snet_top1', 'snet_top5')  # longest video filename gathered across processes


def reduce_views(logits: jnp.ndarray, reduction: str, scores: str) -> jnp.ndarray:
  """(B, V, K) per-view logits -> (B, K) per-video scores."""
  if reduction not in VIEW_REDUCTIONS:
    raise ValueError(f'config.eval.view_reduction must be one of {VIEW_REDUCTIONS}, '
                     f'got {reduction!r}.')
  if scores not in VIEW_SCORES:
    raise ValueError(f'config.eval.view_scores must be one of {VIEW_SCORES}, got {scores!r}.')
  values = jax.nn.softmax(logits, axis=-1) if scores == 'softmax' else logits
  return {'sum': jnp.sum, 'mean': jnp.mean, 'max': jnp.max}[reduction](values, axis=1)


def topk_correct(scores: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
  """Whether each label is among the k highest scores (ties broken by lower class index)."""
  k = min(k, scores.shape[-1])
  _, top = jax.lax.top_k(scores, k)
  return jnp.any(top == labels[:, None], axis=-1)


def batch_metric_sums(scores, labels, mask) -> Dict[str, jnp.ndarray]:
  """Masked sums for one batch: correct top-1, correct top-5, number of real videos."""
  weights = mask.astype(jnp.float32)
  return {
      'top1': jnp.sum(topk_correct(scores, labels, 1) * weights),
      'top5': jnp.sum(topk_correct(scores, labels, 5) * weights),
      'count': jnp.sum(weights),
  }


def eval_step(variables, batch, *, model, reduction: str, scores: str, data_config):
  """Scores one multi-view batch: masked metric sums plus per-video scores for the outputs.

  For models with a saliency mask (SaliNet), also sums the spatial standard deviation of S_final
  per video (0 would mean a constant, uninformative mask).
  """
  video, kwargs = inputs.model_inputs(batch, data_config)
  batch_size, views = video.shape[:2]
  if 'num_valid' in kwargs:  # variable-length videos: every view has the video's valid count
    kwargs['num_valid'] = jnp.repeat(kwargs['num_valid'], views)
  logits, aux = model.apply(variables, video.reshape((batch_size * views,) + video.shape[2:]),
                            train=False, return_aux=True, **kwargs)
  per_video = reduce_views(logits.reshape(batch_size, views, -1), reduction, scores)
  sums = batch_metric_sums(per_video, batch['label'], batch['mask'])
  if 'snet_logits' in aux:  # S2DNet also reports its synopsis network's own accuracy
    snet = reduce_views(aux['snet_logits'].reshape(batch_size, views, -1), reduction, scores)
    snet_sums = batch_metric_sums(snet, batch['label'], batch['mask'])
    sums['snet_top1'], sums['snet_top5'] = snet_sums['top1'], snet_sums['top5']
  if 'saliency_final' in aux:
    saliency = aux['saliency_final'].reshape(batch_size, views, -1)
    spatial_std = jnp.mean(jnp.std(saliency, axis=-1), axis=1)
    sums['saliency_spatial_std'] = jnp.sum(spatial_std * batch['mask'])
  return {'sums': sums, 'scores': per_video.astype(jnp.float32)}


def make_eval_step(model, eval_config, mesh, data_config):
  """The jitted eval step: batch sharded over the mesh, variables and outputs replicated."""
  step = functools.partial(eval_step, model=model, reduction=eval_config.view_reduction,
                           scores=eval_config.view_scores, data_config=data_config)
  return jax.jit(step, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))


@dataclasses.dataclass
class Predictions:
  """Per-video results of one split: reduced scores (N, K), labels (N,), filenames (N,)."""
  scores: np.ndarray
  labels: np.ndarray
  filenames: List[str]
  classes: Sequence[str]


def _gather_rows(local: np.ndarray) -> np.ndarray:
  """Concatenates every process's local batch rows in the global arrays' (process-major) order."""
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = np.asarray(multihost_utils.process_allgather(local))
  return gathered.reshape((-1,) + local.shape[1:])


def _encode_names(names: np.ndarray) -> np.ndarray:
  """bytes filenames -> fixed-width uint8 rows, so they can be gathered across processes."""
  encoded = np.zeros((len(names), FILENAME_BYTES), np.uint8)
  for i, name in enumerate(names):
    raw = name[:FILENAME_BYTES]
    encoded[i, :len(raw)] = np.frombuffer(raw, np.uint8)
  return encoded


def _decode_names(encoded: np.ndarray) -> List[str]:
  return [bytes(row).rstrip(b'\0').decode('utf-8', 'replace') for row in encoded]


def per_class_accuracy(predictions: Predictions) -> np.ndarray:
  """Top-1 accuracy of each class (NaN for classes without videos in the split)."""
  num_classes = len(predictions.classes)
  labeled = predictions.labels >= 0  # unlabeled videos (label -1, e.g. predict mode) are skipped
  labels = predictions.labels[labeled]
  predicted = np.argmax(predictions.scores[labeled], axis=-1)
  correct = np.bincount(labels, weights=predicted == labels, minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)


def _mean_of_present(values: np.ndarray) -> float:
  """Mean over the classes that have videos (NaN when none has, e.g. unlabeled predictions)."""
  present = values[~np.isnan(values)]
  return float(np.mean(present)) if present.size else float('nan')


def confusion_matrix(predictions: Predictions) -> np.ndarray:
  """(K, K) counts: rows are true classes, columns predicted classes."""
  num_classes = len(predictions.classes)
  predicted = np.argmax(predictions.scores, axis=-1)
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (predictions.labels, predicted), 1)
  return matrix


def evaluate_split(config, variables, split: str, mesh, jitted_step,
                   visualize: Optional[Callable[[Dict[str, np.ndarray]], None]] = None
                   ) -> Tuple[Dict[str, Any], Predictions]:
  """Evaluates `variables` on every video of `split` with `make_eval_step`'s step.

  `visualize`, if given, is called once with the first local batch (host numpy arrays).
  Returns (results: top1, top5, mean_class_accuracy, num_videos, ..., per-video predictions).
  """
  parallel.check_batch_size(config.eval_batch_size, mesh.size, 'config.eval_batch_size')
  ds, num_batches, info = pipeline.eval_dataset(config, split)
  start = time.time()
  totals = None
  scores, labels, filenames = [], [], []
  for batch in pipeline.as_numpy(ds):
    if visualize is not None:
      visualize(dict(batch))
      visualize = None
    names = _decode_names(_gather_rows(_encode_names(batch.pop('filename'))))
    mask = _gather_rows(batch['mask'])
    outputs = jitted_step(variables, parallel.to_global(batch, mesh))
    sums = outputs['sums']
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    scores.append(np.asarray(outputs['scores'])[mask])
    labels.append(_gather_rows(batch['label'])[mask])
    filenames += [n for n, real in zip(names, mask) if real]
  totals = jax.tree.map(lambda x: float(np.asarray(x)), totals)
  count = totals['count']
  if int(round(count)) != info.num_videos:
    raise RuntimeError(f'Evaluated {count} videos of split {split!r} but it has '
                       f'{info.num_videos}: the eval pipeline lost or repeated videos.')
  predictions = Predictions(np.concatenate(scores), np.concatenate(labels).astype(np.int64),
                            filenames, info.classes)
  views = config.data.eval_num_clips * config.data.eval_num_crops
  results = {
      'split': split,
      'top1': totals['top1'] / count,
      'top5': totals['top5'] / count,
      'mean_class_accuracy': _mean_of_present(per_class_accuracy(predictions)),
      'num_videos': int(round(count)),
      'views_per_video': views,
      'view_reduction': f'{config.eval.view_reduction} of {config.eval.view_scores}',
      'eval_seconds': time.time() - start,
      'num_batches': num_batches,
  }
  if 'saliency_spatial_std' in totals:
    results['saliency_final_spatial_std'] = totals['saliency_spatial_std'] / count
  if 'snet_top1' in totals:
    results['snet_top1'] = totals['snet_top1'] / count
    results['snet_top5'] = totals['snet_top5'] / count
  logging.info('Eval on %s: top1 %.4f top5 %.4f over %d videos (%d views each) in %.1fs%s',
               split, results['top1'], results['top5'], results['num_videos'], views,
               results['eval_seconds'],
               ''.join(f', {key} {results[key]:.4f}' for key in EXTRA_METRICS if key in results))
  return results, predictions


def write_outputs(workdir: str, results: Dict[str, Any], predictions: Predictions) -> List[str]:
  """Writes the eval json, per-class and predictions CSVs and a confusion-matrix PNG.

  Files: eval_<split>.json, eval_<split>_per_class.csv, eval_<split>_predictions.csv,
  eval_<split>_confusion.png (process 0 only). Returns their paths.
  """
  split = results['split']
  paths = [write_results(workdir, results)]
  if jax.process_index() != 0:
    return paths
  classes = list(predictions.classes)
  accuracy = per_class_accuracy(predictions)
  counts = np.bincount(predictions.labels, minlength=len(classes))
  path = os.path.join(workdir, f'eval_{split}_per_class.csv')
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['class_index', 'class_name', 'num_videos', 'top1'])
    for index, name in enumerate(classes):
      writer.writerow([index, name, int(counts[index]),
                       '' if np.isnan(accuracy[index]) else f'{accuracy[index]:.6f}'])
  paths.append(path)
  path = os.path.join(workdir, f'eval_{split}_predictions.csv')
  top = np.argsort(-predictions.scores, axis=-1, kind='stable')[:, :TOP_PREDICTIONS]
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    header = ['video', 'label', 'label_name', 'correct']
    for k in range(top.shape[1]):
      header += [f'top{k + 1}', f'top{k + 1}_name', f'top{k + 1}_score']
    writer.writerow(header)
    for name, label, row, score in zip(predictions.filenames, predictions.labels, top,
                                       predictions.scores):
      line = [name, int(label), classes[label], int(row[0] == label)]
      for k in row:
        line += [int(k), classes[k], f'{score[k]:.6g}']
      writer.writerow(line)
  paths.append(path)
  paths.append(plot_confusion(confusion_matrix(predictions), classes,
                              os.path.join(workdir, f'eval_{split}_confusion.png'),
                              title=f"{split}: top-1 {results['top1']:.4f}"))
  return paths


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str, title: str) -> str:
  """Row-normalised confusion matrix as a PNG (class names shown when there are few)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = matrix.sum(axis=1, keepdims=True)
  normalised = matrix / np.maximum(rows, 1)
  size = min(4 + 0.25 * len(classes), 40)
  fig, ax = plt.subplots(figsize=(size, size))
  image = ax.imshow(normalised, cmap='viridis', vmin=0, vmax=1)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  if len(classes) <= MAX_NAMED_CLASSES:
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
  fig.colorbar(image, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_visualizations(model, variables, batch: Dict[str, np.ndarray], directory: str,
                         count: int, data_config) -> List[str]:
  """PNGs of what the model looked at for the first `count` videos of `batch` (first view).

  S2DNet: sampled detail windows and detail frames; SaliNet: the S_final mask over the clip.
  Other models have nothing to draw and write nothing.
  """
  from salinet_jax import visualize  # pylint: disable=g-import-not-at-top
  mean, std = pipeline.normalization(data_config)
  count = min(count, int(np.sum(batch['mask'])))
  first_views = {key: batch[key][:count] for key in ('video', 'frame_mask') if key in batch}
  first_views['video'] = first_views['video'][:, 0]
  video, kwargs = inputs.model_inputs(first_views, data_config)
  video = np.asarray(video)
  logits, aux = jax.jit(
      lambda v, x, kw: model.apply(v, x, train=False, return_aux=True, **kw))(
          variables, video, kwargs)
  aux = jax.tree.map(np.asarray, aux)
  predicted = np.argmax(np.asarray(logits), axis=-1)
  os.makedirs(directory, exist_ok=True)
  paths = []
  for i in range(count):
    name = os.path.basename(batch['filename'][i].decode('utf-8', 'replace')) or f'video{i}'
    path = os.path.join(directory, f'{i:03d}_{name}.png')
    label = int(batch['label'][i])
    title = f'{name}: predicted {predicted[i]}' + (f', label {label}' if label >= 0 else '')
    if 'detail_frames' in aux:
      paths.append(visualize.s2dnet_figure(
          video[i], {k: v[i] for k, v in aux.items()}, path, mean=mean, std=std, title=title))
    elif 'saliency_final' in aux:
      paths.append(visualize.saliency_figure(
          video[i], aux['saliency_final'][i], path, mean=mean, std=std, title=title))
  return paths


def write_results(workdir: str, results: Dict[str, Any]) -> str:
  """Writes `<workdir>/eval_<split>.json` (process 0 only) and returns its path."""
  path = os.path.join(workdir, f"eval_{results['split']}.json")
  if jax.process_index() == 0:
    with open(path + '.tmp', 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(path + '.tmp', path)
  return path
