"""Predict the classes of video files with a trained checkpoint.

  python main.py --config=CONFIG --workdir=DIR --mode=predict --video=a.mp4 --video=folder/

Every path is checked before the model loads (a missing one fails at once, naming it); a
directory stands for every video below it. Each file is decoded in memory with PyAV (upright,
presentation order; data/video_io.py) and its eval views go through the evaluation's own ops
(data/pipeline.py `video_eval_batches`), so the preprocessing is exactly the evaluation's. A file
that cannot be decoded is reported with its reason and the others go on. The class names come
from the checkpoint, so only the workdir is needed. Writes `predictions.csv` (file, top-5 classes
and probabilities, or the error) and, for models with a saliency mask (SaliNet) or a detail
sampler (S2DNet), a PNG per video of what the model looked at, into `<workdir>/predictions/`
(or `output_dir`).
"""

import csv
import os
from typing import Any, Dict, List, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from data import pipeline
from data import video_io
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import visualize
from salinet_jax import workdir as workdir_lib

TOP_K = 5
PREDICTIONS_FILE = 'predictions.csv'


class PredictInputError(errors.UserError):
  """A --video path that does not exist, or no video at all."""


def probabilities(scores: np.ndarray, eval_config, num_views: int) -> np.ndarray:
  """Per-video class probabilities from the view-reduced scores of the evaluation."""
  if eval_config.view_scores == 'softmax':
    if eval_config.view_reduction == 'max':
      return scores / np.sum(scores)
    return scores / (num_views if eval_config.view_reduction == 'sum' else 1.0)
  logits = scores / (num_views if eval_config.view_reduction == 'sum' else 1.0)
  exp = np.exp(logits - np.max(logits))
  return exp / np.sum(exp)


def find_videos(paths: Sequence[str]) -> List[str]:
  """The video files named by `paths` (files as given, directories searched recursively).

  Raises PredictInputError naming the first missing path, or when nothing is left.
  """
  if not paths:
    raise PredictInputError('--mode=predict needs at least one --video=PATH (a file or a '
                            'directory of videos).')
  files = []
  for path in paths:
    if not os.path.exists(path):
      raise PredictInputError(f'--video path {path} does not exist.')
    found, others = video_io.list_videos(path)
    if others:
      logging.info('%s: skipping %d file(s) without a video extension (%s).', path, len(others),
                   ', '.join(os.path.basename(o) for o in others[:5])
                   + (', ...' if len(others) > 5 else ''))
    if not found:
      raise PredictInputError(f'No video file (extensions {", ".join(video_io.VIDEO_EXTENSIONS)}) '
                              f'under {path}.')
    files += found
  return files


def predict(config: ml_collections.ConfigDict, workdir: str, video_paths: Sequence[str],
            output_dir: str = None) -> List[Dict[str, Any]]:
  """Top-5 predictions for each video; returns one dict per video: 'video', 'ok', 'error',
  'top5' [(class, probability)], 'checkpoint'."""
  files = find_videos(video_paths)
  if jax.process_count() > 1:
    raise errors.ConfigError('Predict mode runs in one process; start it without '
                             'JAX_COORDINATOR_ADDRESS / SALINET_JAX_DISTRIBUTED.')
  output_dir = workdir_lib.check_writable(
      output_dir or os.path.join(workdir, 'predictions'), 'predictions',
      'Pass --output_dir=DIR to write them elsewhere.')
  classes = engine.checkpoint_classes(workdir, config)
  model_engine = engine.Engine(config, classes)
  state, source = model_engine.restore(workdir, config.eval.checkpoint)
  logging.info('Predicting %d video(s) with checkpoint %s.', len(files), source)
  views = config.data.eval_num_clips * config.data.eval_num_crops
  results = []
  for path in files:
    result = {'video': path, 'checkpoint': source, 'ok': False, 'error': '', 'top5': []}
    try:
      decoded = video_io.decode_video(path, short_side=config.data.eval_short_side)
    except video_io.VideoError as e:
      result['error'] = str(e)
      logging.warning('%s: cannot be predicted: %s', path, e)
      results.append(result)
      continue
    batches = pipeline.as_numpy(pipeline.video_eval_batches(
        config.data, decoded.jpegs, os.path.basename(path), decoded.fps, model_engine.mesh.size))
    draw = None
    if config.eval.num_visualizations:
      draw = lambda batch: visualize.write_visualizations(  # noqa: E731
          model_engine.model, state.variables, batch, output_dir, 1, config.data, classes)
    _, predictions = evaluate_lib.evaluate_batches(batches, 1, state.variables, model_engine.mesh,
                                                   model_engine.eval_step, classes, draw)
    scores = predictions.scores[0]
    if not np.all(np.isfinite(scores)):
      raise evaluate_lib.NonFiniteScoresError(
          f'Checkpoint {source} gives NaN or Inf scores for {path}: its weights are not usable.')
    probs = probabilities(scores, config.eval, views)
    top = np.argsort(-probs, kind='stable')[:TOP_K]
    result.update(ok=True, top5=[(classes[k], float(probs[k])) for k in top])
    results.append(result)
    print(f'{path}:')
    for rank, k in enumerate(top, 1):
      print(f'  {rank}. {classes[k]:<32s} {probs[k]:.4f}')
  csv_path = write_predictions(os.path.join(output_dir, PREDICTIONS_FILE), results)
  failed = sum(not r['ok'] for r in results)
  logging.info('Wrote %s: %d predicted, %d failed.', csv_path, len(results) - failed, failed)
  return results


def write_predictions(path: str, results: Sequence[Dict[str, Any]]) -> str:
  """predictions.csv: video, error, then top-k class and probability pairs."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    header = ['video', 'error']
    for k in range(1, TOP_K + 1):
      header += [f'top{k}', f'top{k}_probability']
    writer.writerow(header)
    for result in results:
      row = [result['video'], result['error']]
      for name, probability in result['top5']:
        row += [name, f'{probability:.6f}']
      writer.writerow(row + [''] * (len(header) - len(row)))
  return path
