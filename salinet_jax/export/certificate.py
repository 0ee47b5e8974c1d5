"""The parity certificate: each format, reloaded from disk, against the jitted model on real clips.

The clips are the eval pipeline's views of the first videos of the eval split (or of `--video`
files, decoded in memory through the same ops). Each output's max abs difference must stay
within tolerance x max(1, the output's largest magnitude): 1e-4 for float32, i.e. 1e-4 absolute
on probabilities; bfloat16 runs get 1e-2. The top-1 agreement per view and per video (views
reduced as the eval reduces them) is recorded beside it.
"""

import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import ml_collections
import numpy as np

from data import errors as data_errors
from data import pipeline
from data import video_io
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import predict as predict_lib
from salinet_jax.export.errors import ExportError

# By the dtype the export computes in (config.dtype resolved on the export host).
TOLERANCES = {'float32': 1e-4, 'bfloat16': 1e-2, 'float16': 1e-2}
RULE = 'max abs diff <= tolerance * max(1, max abs of the reference output)'


@dataclasses.dataclass
class Clips:
  """Views to certify on: uint8 rows (N, T, H, W, 3), their `num_valid` (N,) or None, and which
  video each row belongs to."""
  video: np.ndarray
  num_valid: Optional[np.ndarray]
  filenames: List[str]
  views_per_video: int
  source: str

  def args(self, rows=slice(None)) -> List[np.ndarray]:
    return [self.video[rows]] + ([] if self.num_valid is None else [self.num_valid[rows]])


def _real_videos(batches, limit: int):
  """(views, frame mask or None, filename) of the unpadded videos of eval batches."""
  for batch in batches:
    for i in np.flatnonzero(batch['mask']):
      yield (batch['video'][i], batch['frame_mask'][i] if 'frame_mask' in batch else None,
             batch['filename'][i].decode('utf-8', 'replace'))
      limit -= 1
      if not limit:
        return


def _split_videos(config, split: str, num_videos: int):
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval_batch_size = min(num_videos, 8)
  try:
    ds, _, info = pipeline.eval_dataset(config, split, process_index=0, process_count=1)
    return list(_real_videos(pipeline.as_numpy(ds, info), num_videos))
  except (data_errors.DataError, FileNotFoundError) as e:
    raise ExportError(f'Cannot read the eval split {split!r} for the parity clips '
                      f'({str(e).splitlines()[0]}); pass --video=PATH instead.') from e


def _file_videos(config, paths: Sequence[str], decoding: Dict[str, Any]):
  """The views of video files, decoded as predict decodes them (as the run's eval records
  were: `decoding`), so the certificate sees what serving through predict does."""
  for path in paths:  # before any is decoded: TensorFlow refuses a path not UTF-8 mid-way
    reason = data_errors.path_refusal(path)
    if reason:
      raise ExportError(f'--video {data_errors.printable(path)} {reason}')
  videos = []
  for path in paths:
    try:
      decoded = predict_lib.decode_like_records(path, config.data, decoding)
    except video_io.VideoError as e:
      raise ExportError(f'--video {path} cannot be used for the parity clips: {e}') from e
    batches = pipeline.as_numpy(pipeline.video_eval_batches(
        config.data, decoded.jpegs, os.path.basename(path), decoded.fps, 1, decoded.stream_clock))
    videos += _real_videos(batches, 1)
  return videos


# Eval-split videos whose views certify an export where no video files are given.
DEFAULT_NUM_VIDEOS = 8


def parity_clips(config, videos: Sequence[str] = (), num_videos: Optional[int] = None,
                 split: Optional[str] = None, decoding: Optional[Dict[str, Any]] = None
                 ) -> Clips:
  """The eval views of `videos` files (decoded as the records were: `decoding`), or of the
  first `num_videos` (default DEFAULT_NUM_VIDEOS) videos of `split` (default: the eval
  split)."""
  if videos:
    found = _file_videos(config, videos, decoding or {})
    source = f'--video: {len(videos)} file(s)'
  else:
    split = split or config.dataset.eval_split
    found = _split_videos(config, split, num_videos or DEFAULT_NUM_VIDEOS)
    source = f'eval split {split!r}: first {len(found)} video(s)'
  if not found:
    raise ExportError(f'No clips for the parity check: split {split!r} is empty; pass --video.')
  views = found[0][0].shape[0]
  num_valid = None
  if found[0][1] is not None:
    num_valid = np.repeat(np.asarray([mask.sum() for _, mask, _ in found], np.int32), views)
  return Clips(video=np.concatenate([v for v, _, _ in found]).astype(np.uint8),
               num_valid=num_valid, filenames=[name for _, _, name in found],
               views_per_video=views, source=source)


def run_in_chunks(run: Callable[..., Dict[str, np.ndarray]], clips: Clips, chunk: int
                  ) -> Dict[str, np.ndarray]:
  parts = [run(*clips.args(slice(s, s + chunk))) for s in range(0, len(clips.video), chunk)]
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def clips_per_second(run, clips: Clips, chunk: int, repeats: int) -> float:
  start = time.perf_counter()
  for _ in range(repeats):
    run_in_chunks(run, clips, chunk)
  return repeats * len(clips.video) / max(time.perf_counter() - start, 1e-9)


def _max_abs_diff(reference: np.ndarray, value: np.ndarray) -> float:
  """Largest difference; a NaN where the reference has none (or a shape change) is infinite."""
  reference = np.asarray(reference, np.float64)
  value = np.asarray(value, np.float64)
  if reference.shape != value.shape:
    return float('inf')
  diff = np.where(np.isnan(reference) & np.isnan(value), 0.0, np.abs(reference - value))
  return float('inf') if np.isnan(diff).any() else float(diff.max(initial=0.0))


def _top1_per_video(outputs: Dict[str, np.ndarray], clips: Clips, eval_config) -> np.ndarray:
  logits = outputs['logits'].reshape(-1, clips.views_per_video, outputs['logits'].shape[-1])
  scores = evaluate_lib.reduce_views(logits, eval_config.view_reduction, eval_config.view_scores)
  return np.argmax(np.asarray(scores), -1)


def certify(reference: Dict[str, np.ndarray], outputs: Dict[str, np.ndarray], clips: Clips,
            eval_config, tolerance: float) -> Dict[str, Any]:
  """A format's differences from the jitted model's outputs, and whether they pass."""
  missing = sorted(set(reference) - set(outputs))
  diffs = {k: _max_abs_diff(reference[k], outputs[k]) for k in sorted(reference) if k in outputs}
  limits = {k: tolerance * max(1.0, float(np.max(np.abs(reference[k]), initial=0.0)))
            for k in diffs}
  exceeded = {k: diffs[k] for k in diffs if not diffs[k] <= limits[k]}
  complete = not missing
  views = (float(np.mean(np.argmax(outputs['probabilities'], -1)
                         == np.argmax(reference['probabilities'], -1))) if complete else 0.0)
  videos = (float(np.mean(_top1_per_video(outputs, clips, eval_config)
                          == _top1_per_video(reference, clips, eval_config))) if complete else 0.0)
  return {'passed': complete and not exceeded, 'max_abs_diff': diffs,
          'allowed_abs_diff': limits, 'exceeded': exceeded, 'missing_outputs': missing,
          'top1_agreement_views': views, 'top1_agreement_videos': videos}


def refusal(fmt: str, certificate: Dict[str, Any], tolerance: float) -> str:
  """Why `certificate` failed, in one clause naming the worst output and by how much."""
  if certificate['missing_outputs']:
    return f'{fmt} lacks outputs {certificate["missing_outputs"]}'
  exceeded, allowed = certificate['exceeded'], certificate['allowed_abs_diff']
  def over(k):  # (share of the allowed difference, difference); a NaN is the worst, and at
    # tolerance 0 every difference is infinitely over
    diff = math.inf if math.isnan(exceeded[k]) else exceeded[k]
    return (diff / allowed[k] if allowed[k] else math.inf), diff
  worst = max(exceeded, key=over)
  return (f'{fmt} {worst} differ from the jitted model by {exceeded[worst]:.3g} (allowed '
          f'{allowed[worst]:.3g}, tolerance {tolerance:g}; top-1 agreement '
          f'{certificate["top1_agreement_views"]:.3f})')
