"""Pooled features of videos, for linear probes, retrieval and temporal localisation.

  python main.py --config=CONFIG --workdir=DIR --mode=features --video=DIR_OR_FILE \\
      [--config.features.per_view=True] [--output_dir=OUT]

Each video goes through the evaluation's views (as in predict mode); the features are what the
model's final classifier reads (the input of its last `fc` layer: pooled backbone features;
where the classifier runs on every frame and averages, as in TSM and S2DNet, its input averaged
over the frames, which for S2DNet is the detail features, then its context features, then the
synopsis' top-k multi-hot vector over the classes), per view or averaged over the views
(`config.features.per_view`). One `.npy` per video (at its path below the videos' common
folder) plus `index.csv` (video, features file, shape, or the error of a video that could not be
read), in `<workdir>/features/` by default. A run stopped part-way goes on where it stopped when
run again (salinet_jax/resume.py).
"""

import csv
import functools
import os
from typing import Any, Dict, List, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from absl import logging

from data import video_io
from data import errors as data_errors
from salinet_jax import checkpoints
from salinet_jax import console
from salinet_jax import errors
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import inputs
from salinet_jax import parallel
from salinet_jax import predict as predict_lib
from salinet_jax import resume
from salinet_jax import workdir as workdir_lib
from salinet_jax.models import layers

INDEX_FILE = 'index.csv'


def view_features(variables, batch, *, model, data_config, clips_per_forward: int) -> jnp.ndarray:
  """(B, V, D) float32: the input of the model's last `fc` layer for every view of the batch
  (averaged over the frames where it runs per frame), `clips_per_forward` clips per forward
  pass as in evaluation (0: all at once)."""
  clips, batch_size, views = evaluate_lib.batch_clips(batch)

  def apply_fn(clip_batch):
    video, kwargs = inputs.model_inputs(clip_batch, data_config)
    captured = []

    def capture(next_fun, args, call_kwargs, context):
      if (isinstance(context.module, layers.Dense) and context.module.name == 'fc'
          and context.method_name == '__call__'):
        captured.append(args[0])
      return next_fun(*args, **call_kwargs)

    with nn.intercept_methods(capture):
      model.apply(variables, video, train=False, **kwargs)
    if not captured:
      raise ValueError(f'{type(model).__name__} has no final `fc` layer to read features from.')
    read = captured[-1].astype(jnp.float32)
    if read.shape[0] != video.shape[0]:
      # A classifier applied to every frame and averaged (TSM, S2DNet's detail network): it
      # reads, in effect, its input averaged over the frames (it is linear).
      read = jnp.mean(read.reshape((video.shape[0], -1, read.shape[-1])), axis=1)
    return read

  features = evaluate_lib.forward_in_chunks(apply_fn, clips, clips_per_forward)
  return features.reshape(batch_size, views, -1)


def _one_video(predictor, step, path: str, target: str, per_view: bool) -> Dict[str, Any]:
  """Writes the features of the video at `path` to `target` (.npy); returns its index row (a
  video that cannot be decoded is one with its error)."""
  result = {'video': path, 'ok': False, 'error': '', 'features': '', 'shape': ''}
  try:
    decoded = predictor.decode(path)
  except video_io.VideoError as e:
    result['error'] = str(e)
    _say_no_features(path, result['error'])
    predict_lib.remove_earlier_outputs(path, [target])
    return result
  batch = next(predictor.batches(decoded.jpegs, decoded.fps, os.path.basename(path),
                                 decoded.stream_clock))
  batch.pop('filename')
  mesh = predictor.engine.mesh
  features = np.asarray(step(predictor.variables, parallel.to_global(batch, mesh)))[0]
  if not np.all(np.isfinite(features)):
    raise predict_lib.evaluate_lib.NonFiniteScoresError(
        f'Checkpoint {predictor.source} gives NaN or Inf features for {path}.')
  if not per_view:
    features = features.mean(axis=0)
  with data_errors.replacing(target, 'wb') as f:
    np.save(f, features)
  result.update(ok=True, features=target, shape='x'.join(str(d) for d in features.shape))
  return result


def _say_no_features(path: str, error: str) -> None:
  logging.warning('%s: no features: %s', path, error)


def extract(config, workdir: str, video_paths: Sequence[str],
            output_dir: str = None) -> List[Dict[str, Any]]:
  """Writes the features of every video; returns one dict per video ('video', 'ok', 'error',
  'features' path, 'shape')."""
  if config.predict.exported:  # it would otherwise be the workdir's checkpoint, without a word
    raise errors.ConfigError(
        f'Features mode reads the checkpoint of the workdir; config.predict.exported='
        f'{config.predict.exported!r} (an export) is for predict mode only: unset it.')
  files = predict_lib.find_videos(video_paths, mode='features')
  checkpoints.require_checkpoint(workdir, config.eval.checkpoint)
  output_dir = workdir_lib.check_writable(
      output_dir or os.path.join(workdir, 'features'), 'features',
      'Pass --output_dir=DIR to write them elsewhere.')
  predict_lib.check_clips_per_forward(config, 'features')
  predictor = predict_lib.Predictor(config, workdir)
  logging.info('Features of %d video(s) with checkpoint %s.', len(files), predictor.source)
  mesh = predictor.engine.mesh
  step = evaluate_lib.EvalStep(
      functools.partial(view_features, model=predictor.engine.forward_model,
                        data_config=config.data,
                        clips_per_forward=config.eval.clips_per_device_forward * mesh.size),
      mesh, config.eval.clips_per_device_forward)
  progress = resume.Progress(output_dir, 'features', config, predictor)
  targets = [data_errors.fitted_path(os.path.join(output_dir, name), len('.npy')) + '.npy'
             for name in predict_lib.output_names(files)]
  kept = progress.kept((path, [target]) for path, target in zip(files, targets))
  results = []
  with console.progress_bar(list(zip(files, targets)), unit='video', desc='features') as videos:
    for path, target in videos:
      result = kept.get(path)
      if result is None:
        result = _one_video(predictor, step, path, target, config.features.per_view)
        progress.record(path, result, [target])
      elif not result['ok']:
        _say_no_features(path, result['error'])
      results.append(result)
  index = os.path.join(output_dir, INDEX_FILE)
  replaced = predict_lib.replaced_note(index)
  with data_errors.replacing(index, newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['video', 'features', 'shape', 'error'])
    writer.writeheader()
    for result in results:
      writer.writerow({key: result[key] for key in ('video', 'features', 'shape', 'error')})
  progress.finish()
  failed = sum(not r['ok'] for r in results)
  logging.info('Wrote %s: features of %d videos, %d failed%s.', index, len(results) - failed,
               failed, replaced)
  return results
