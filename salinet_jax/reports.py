"""What an evaluation writes: results json, per-class and predictions CSVs, confusion PNG.

Every json written here is valid JSON (NaN and Inf become null). On an unlabelled split only
the json (counts, no accuracy) and the predictions CSV (top-5 classes with scores per video)
are written; on a partly labelled one the accuracies count the labelled videos.
"""

import csv
import json
import os
from typing import Any, Dict, List, Sequence

import jax
import numpy as np

from data import errors as data_errors
from salinet_jax import evaluate

TOP_PREDICTIONS = 5  # classes listed per video in the predictions CSV
MAX_NAMED_CLASSES = 60  # the confusion PNG names classes up to this many


def as_finite_json(value: Any) -> Any:
  """`value` with NaN/Inf floats replaced by None (and numpy scalars by Python ones)."""
  if isinstance(value, dict):
    return {str(k): as_finite_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [as_finite_json(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if np.isfinite(value) else None
  if isinstance(value, (np.integer, np.bool_)):
    return value.item()
  return value


def write_json(path: str, value: Any) -> str:
  """Writes `value` as strict JSON, atomically (process 0 only); returns the path."""
  if jax.process_index() == 0:
    with data_errors.replacing(path) as f:
      json.dump(as_finite_json(value), f, indent=2, allow_nan=False)
  return path


def write_outputs(output_dir: str, results: Dict[str, Any],
                  predictions: evaluate.Predictions) -> List[str]:
  """Writes eval_<split>.json, and (process 0) the predictions CSV and, where labels exist,
  the per-class CSV and the confusion PNG; returns the paths written. They replace an earlier
  evaluation's together (`data_errors.replacing_together`), eval_<split>.json last: only it
  says which step they are of."""
  split = results['split']
  json_path = os.path.join(output_dir, f'eval_{split}.json')
  if jax.process_index() != 0:
    return [write_json(json_path, results)]
  with data_errors.replacing_together():
    paths = [write_predictions_csv(os.path.join(output_dir, f'eval_{split}_predictions.csv'),
                                   predictions)]
    if results.get('num_labeled'):
      paths.append(write_per_class_csv(os.path.join(output_dir, f'eval_{split}_per_class.csv'),
                                       predictions))
      paths.append(plot_confusion(evaluate.confusion_matrix(predictions), predictions.classes,
                                  os.path.join(output_dir, f'eval_{split}_confusion.png'),
                                  title=f"{split}: top-1 {results['top1']:.4f} over "
                                  f"{results['num_labeled']} labelled videos"))
    return [write_json(json_path, results)] + paths


def write_per_class_csv(path: str, predictions: evaluate.Predictions) -> str:
  classes = list(predictions.classes)
  accuracy = evaluate.per_class_accuracy(predictions)
  counts = np.bincount(predictions.labels[predictions.labeled], minlength=len(classes))
  with data_errors.replacing(path, newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['class_index', 'class_name', 'num_videos', 'top1'])
    for index, name in enumerate(classes):
      writer.writerow([index, name, int(counts[index]),
                       '' if np.isnan(accuracy[index]) else f'{accuracy[index]:.6f}'])
  return path


def write_predictions_csv(path: str, predictions: evaluate.Predictions) -> str:
  """One row per video: its label (empty when unlabelled), whether top-1 is right, and the
  top-5 classes with their scores."""
  classes = list(predictions.classes)
  top = np.argsort(-predictions.scores, axis=-1, kind='stable')[:, :TOP_PREDICTIONS]
  with data_errors.replacing(path, newline='') as f:
    writer = csv.writer(f)
    header = ['video', 'label', 'label_name', 'correct']
    for k in range(top.shape[1]):
      header += [f'top{k + 1}', f'top{k + 1}_name', f'top{k + 1}_score']
    writer.writerow(header)
    for name, label, row, score in zip(predictions.filenames, predictions.labels, top,
                                       predictions.scores):
      if label >= 0:
        line = [name, int(label), classes[label], int(row[0] == label)]
      else:
        line = [name, '', '', '']
      for k in row:
        line += [int(k), classes[k], f'{score[k]:.6g}']
      writer.writerow(line)
  return path


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
  fig.colorbar(image, ax=ax, fraction=0.046, label='fraction of the true class')
  fig.tight_layout()
  with data_errors.replacing(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=100)
  plt.close(fig)
  return path
