"""Full-split, multi-view evaluation with exact counts.

Every video of the split is scored once: its views (temporal clips x spatial crops) are reduced
to one score vector (sum | mean | max of logits or softmax probabilities), then top-1/top-5 are
accumulated as (sum, count) under the padding mask, so the padded tail of the last batch never
counts and nothing is dropped.
"""

import functools
import json
import os
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from data import pipeline
from salinet_jax import parallel

VIEW_REDUCTIONS = ('sum', 'mean', 'max')
VIEW_SCORES = ('logits', 'softmax')


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


def eval_step(variables, batch, *, model, reduction: str, scores: str):
  """Scores one multi-view batch; returns masked metric sums.

  For models with a saliency mask (SaliNet), also sums the spatial standard deviation of S_final
  per video (0 would mean a constant, uninformative mask).
  """
  video = batch['video']
  batch_size, views = video.shape[:2]
  logits, aux = model.apply(variables, video.reshape((batch_size * views,) + video.shape[2:]),
                            train=False, return_aux=True)
  per_video = reduce_views(logits.reshape(batch_size, views, -1), reduction, scores)
  sums = batch_metric_sums(per_video, batch['label'], batch['mask'])
  if 'saliency_final' in aux:
    saliency = aux['saliency_final'].reshape(batch_size, views, -1)
    spatial_std = jnp.mean(jnp.std(saliency, axis=-1), axis=1)
    sums['saliency_spatial_std'] = jnp.sum(spatial_std * batch['mask'])
  return sums


def make_eval_step(model, eval_config, mesh):
  """The jitted eval step: batch sharded over the mesh, variables and sums replicated."""
  step = functools.partial(eval_step, model=model, reduction=eval_config.view_reduction,
                           scores=eval_config.view_scores)
  return jax.jit(step, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))


def evaluate_split(config, variables, split: str, mesh, jitted_step) -> Dict[str, Any]:
  """Evaluates `variables` on every video of `split` with `make_eval_step`'s step.

  Returns top1, top5, num_videos and bookkeeping fields.
  """
  parallel.check_batch_size(config.eval_batch_size, mesh.size, 'config.eval_batch_size')
  ds, num_batches, info = pipeline.eval_dataset(config, split)
  start = time.time()
  totals = None
  for batch in pipeline.as_numpy(ds):
    batch.pop('filename')
    sums = jitted_step(variables, parallel.to_global(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.tree.map(lambda x: float(np.asarray(x)), totals)
  count = totals['count']
  if int(round(count)) != info.num_videos:
    raise RuntimeError(f'Evaluated {count} videos of split {split!r} but it has '
                       f'{info.num_videos}: the eval pipeline lost or repeated videos.')
  views = config.data.eval_num_clips * config.data.eval_num_crops
  results = {
      'split': split,
      'top1': totals['top1'] / count,
      'top5': totals['top5'] / count,
      'num_videos': int(round(count)),
      'views_per_video': views,
      'view_reduction': f'{config.eval.view_reduction} of {config.eval.view_scores}',
      'eval_seconds': time.time() - start,
      'num_batches': num_batches,
  }
  if 'saliency_spatial_std' in totals:
    results['saliency_final_spatial_std'] = totals['saliency_spatial_std'] / count
  logging.info('Eval on %s: top1 %.4f top5 %.4f over %d videos (%d views each) in %.1fs%s',
               split, results['top1'], results['top5'], results['num_videos'], views,
               results['eval_seconds'],
               f", S_final spatial std {results['saliency_final_spatial_std']:.4f}"
               if 'saliency_final_spatial_std' in results else '')
  return results


def write_results(workdir: str, results: Dict[str, Any]) -> str:
  """Writes `<workdir>/eval_<split>.json` (process 0 only) and returns its path."""
  path = os.path.join(workdir, f"eval_{results['split']}.json")
  if jax.process_index() == 0:
    with open(path + '.tmp', 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(path + '.tmp', path)
  return path
