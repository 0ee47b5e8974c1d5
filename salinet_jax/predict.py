"""Predict the classes of raw video files with a trained checkpoint.

  python main.py --config=CONFIG --workdir=DIR --mode=predict --video=a.mp4 --video=b.mkv

Each file is decoded with PyAV (upright, presentation order; data/video_io.py), written as a
one-video record in the training schema, and read back through the evaluation pipeline, so the
preprocessing (views, crops, normalisation) is exactly the evaluation's. Prints the top-5 class
names with probabilities; for models with a saliency mask (SaliNet) or a detail sampler (S2DNet)
also saves a PNG of what the model looked at in `<workdir>/predictions/`.
"""

import os
import tempfile
from typing import Any, Dict, List, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from data import annotations
from data import records
from data import video_io
from salinet_jax import train

TOP_K = 5
PREDICT_SPLIT = 'predict'


def probabilities(scores: np.ndarray, eval_config, num_views: int) -> np.ndarray:
  """Per-video class probabilities from the view-reduced scores of the evaluation."""
  if eval_config.view_scores == 'softmax':
    if eval_config.view_reduction == 'max':
      return scores / np.sum(scores)
    return scores / (num_views if eval_config.view_reduction == 'sum' else 1.0)
  logits = scores / (num_views if eval_config.view_reduction == 'sum' else 1.0)
  exp = np.exp(logits - np.max(logits))
  return exp / np.sum(exp)


def _write_one_video_records(directory: str, config, path: str, classes: Sequence[str]) -> None:
  decoded = video_io.decode_video(path, short_side=config.data.eval_short_side)
  with records.ShardWriter(directory, config.dataset.name, PREDICT_SPLIT, 1) as writer:
    writer.write(records.serialize_video(decoded.jpegs, annotations.UNLABELED, '', os.path.basename(path),
                                         decoded.fps))
  records.write_metadata(directory, records.DatasetMetadata(
      config.dataset.name, list(classes), {PREDICT_SPLIT: 1}, {PREDICT_SPLIT: 1}))


def predict(config: ml_collections.ConfigDict, workdir: str,
            video_paths: Sequence[str]) -> List[Dict[str, Any]]:
  """Top-5 predictions for each video file (and a PNG per video where the model has one)."""
  if not video_paths:
    raise ValueError('--mode=predict needs at least one --video=PATH.')
  missing = [p for p in video_paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f'Video file(s) not found: {missing}')
  trainer = train.Trainer(config, workdir)
  classes = trainer.classes
  state, source = train.restore_for_eval(trainer, workdir)
  output_dir = os.path.join(workdir, 'predictions')
  views = config.data.eval_num_clips * config.data.eval_num_crops
  results = []
  for path in video_paths:
    with tempfile.TemporaryDirectory() as directory:
      _write_one_video_records(directory, config, path, classes)
      video_config = ml_collections.ConfigDict(config.to_dict())
      video_config.dataset.data_dir = directory
      video_config.eval_batch_size = trainer.mesh.size
      video_config.eval.num_visualizations = 1
      _, predictions = trainer.evaluate(state, PREDICT_SPLIT, visualize_dir=output_dir,
                                        data_config=video_config)
    probs = probabilities(predictions.scores[0], config.eval, views)
    top = np.argsort(-probs, kind='stable')[:TOP_K]
    results.append({'video': path, 'checkpoint': source,
                    'top5': [(classes[k], float(probs[k])) for k in top]})
    if jax.process_index() == 0:
      print(f'{path}:')
      for rank, k in enumerate(top, 1):
        print(f'  {rank}. {classes[k]:<32s} {probs[k]:.4f}')
  pictures = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
  if pictures:
    logging.info('Wrote %d picture(s) of what the model looked at to %s', len(pictures),
                 output_dir)
  return results
