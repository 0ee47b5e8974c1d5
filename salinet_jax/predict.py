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
(or `output_dir`). A run stopped part-way goes on where it stopped when run again
(salinet_jax/resume.py).
"""

import csv
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging

from data import pipeline
from data import sampling
from data import video_io
from data import errors as data_errors
from salinet_jax import checkpoints
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import resume
from salinet_jax import timeline
from salinet_jax import visualize
from salinet_jax import workdir as workdir_lib

TOP_K = 5
PREDICTIONS_FILE = 'predictions.csv'


class PredictInputError(errors.UserError):
  """A --video path that does not exist or is not UTF-8 text, or no video at all."""


def find_videos(paths: Sequence[str], mode: str = 'predict') -> List[str]:
  """The video files named by `paths` (files as given, directories searched recursively).

  Raises PredictInputError naming the first missing path, the paths that are not UTF-8 text, or
  when nothing is left (naming --mode=`mode`, the mode that needs them).
  """
  if not paths:
    raise PredictInputError(f'--mode={mode} needs at least one --video=PATH (a file or a '
                            'directory of videos).')
  files = []
  for path in paths:
    if not os.path.exists(path):
      raise PredictInputError(f'--video path {path} does not exist.')
    found, others, hidden = video_io.list_videos(path)
    if others:
      logging.info('%s: skipping %d file(s) without a video extension (%s).', path, len(others),
                   data_errors.first_few([data_errors.printable(os.path.basename(o))
                                          for o in others]))
    if hidden:
      logging.warning('%s: leaving out %d hidden video file(s) (%s); rename any to include so '
                      'that no part of its path starts with a dot.', path, len(hidden),
                      data_errors.first_few([data_errors.printable(os.path.relpath(h, path))
                                             for h in hidden]))
    if not found:
      raise PredictInputError(f'No video file (extensions {", ".join(video_io.VIDEO_EXTENSIONS)}) '
                              f'under {path}.')
    files += found
  bad = data_errors.not_utf8(files)
  if bad:  # TensorFlow and the CSV refused them mid-run, after the videos before them
    raise PredictInputError(
        f'{len(bad)} video path(s) are not UTF-8 text, which the outputs name videos in: '
        f'{data_errors.first_few(bad)} (undecodable bytes shown escaped). Rename them (e.g. '
        'convmv -f latin1 -t utf8 --notest FILE) and run again.')
  return _each_video_once(files)


def _each_video_once(files: Sequence[str]) -> List[str]:
  """`files` without those naming a file named before (the same path twice, a folder and a file
  in it, a link): each video is scored, and counted in the CSV, once, under its first path."""
  first: Dict[str, str] = {}
  repeats = []
  for path in files:
    real = os.path.realpath(path)
    if real in first:
      repeats.append((path, first[real]))
    else:
      first[real] = path
  if repeats:
    same = lambda a, b: os.path.abspath(a) == os.path.abspath(b)  # noqa: E731
    path, earlier = next(((p, e) for p, e in repeats if not same(p, e)), repeats[0])
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in (path, earlier)])
    example = (f'{os.path.relpath(os.path.abspath(path), root)} is '
               f'{os.path.relpath(os.path.abspath(earlier), root)}' if not same(path, earlier)
               else f'{path} twice')
    logging.warning('%d of the --video files are a video found before (e.g. %s): each video is '
                    'scored once, under the first path that names it.', len(repeats), example)
  return list(first.values())


def output_names(files: Sequence[str]) -> List[str]:
  """Where each video's own output files go, relative to the output folder: its path below the
  videos' common folder (`a/x.mp4` and `b/x.mp4` keep their folders), so distinct videos never
  share a name; one file or a flat folder gives the bare file names."""
  root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
  return [os.path.relpath(os.path.abspath(f), root) for f in files]


def refuse_a_process_group() -> None:
  """Predict and features score every video in one process: each process of a group would
  score them all and write the same files."""
  if jax.process_count() > 1:
    raise errors.ConfigError('Predict and features modes run in one process; start them '
                             'without JAX_COORDINATOR_ADDRESS / SALINET_JAX_DISTRIBUTED.')


class Predictor:
  """A workdir's checkpoint (`config.eval.checkpoint`), restored to score videos held in memory
  through the evaluation's views and step. One process only."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    refuse_a_process_group()
    self.config = config
    metadata = engine.checkpoint_metadata(workdir, config)
    self.classes = tuple(metadata['classes'])
    self.engine = engine.Engine(config, self.classes)
    self.variables, _, self.source = self.engine.restore_variables(workdir,
                                                                   config.eval.checkpoint)
    self.decoding = say_decoding(metadata.get('decoding') or {}, f'Checkpoint {self.source}')
    self.num_views = config.data.eval_num_clips * config.data.eval_num_crops

  def decode(self, path: str) -> video_io.DecodedVideo:
    """The video as its eval records hold videos (raises video_io.VideoError)."""
    return decode_like_records(path, self.config.data, self.decoding)

  def batches(self, jpegs: Sequence[bytes], fps: float, name: str, stream_clock: Any = None):
    """The eval batch (numpy) of one video: its views, padded to the mesh."""
    return pipeline.as_numpy(pipeline.video_eval_batches(
        self.config.data, jpegs, name, fps, self.engine.mesh.size, stream_clock))

  def probabilities(self, jpegs: Sequence[bytes], fps: float, name: str,
                    pictures_dir: Optional[str] = None, stream_clock: Any = None) -> np.ndarray:
    """Class probabilities of one video (its views reduced as the evaluation does); with
    `pictures_dir`, its picture (visualize.EvalPictures) is drawn there."""
    pictures = None
    if pictures_dir is not None:
      pictures = visualize.EvalPictures(self.engine.model, self.variables, pictures_dir, 1,
                                        self.config.data, self.classes)
    _, predictions = evaluate_lib.evaluate_batches(
        self.batches(jpegs, fps, name, stream_clock), 1, self.variables, self.engine.mesh,
        self.engine.eval_step, self.classes, pictures)
    scores = predictions.scores[0]
    if not np.all(np.isfinite(scores)):
      raise evaluate_lib.NonFiniteScoresError(
          f'Checkpoint {self.source} gives NaN or Inf scores for {name}: its weights are not '
          'usable.')
    return evaluate_lib.view_probabilities(scores, self.config.eval, self.num_views)

  def top(self, probs: np.ndarray) -> List[Tuple[str, float]]:
    order = np.argsort(-probs, kind='stable')[:TOP_K]
    return [(self.classes[k], float(probs[k])) for k in order]


def decode_like_records(path: str, data_config, decoding: Dict[str, Any]
                        ) -> video_io.DecodedVideo:
  """data/pipeline's decode_like_records, logging what the converter would have warned about
  the video (a truncated file, uncertain timing)."""
  video = pipeline.decode_like_records(path, data_config, decoding)
  for line in video.warnings + clip_coverage(data_config, len(video.jpegs), video.fps):
    logging.warning('%s: %s', path, line)
  return video


def clip_coverage(data_config, frames: int, fps: float) -> List[str]:
  """What the test clips of a whole video of `frames` frames at `fps` miss: frames they repeat
  (a video shorter than a clip spans, data.sampling.clip_span) or the frames after those they
  take from its start (all_frames, data.sampling.clip_reach)."""
  span, reach = sampling.clip_span(data_config, fps), sampling.clip_reach(data_config)
  how = f'temporal_sampling={data_config.temporal_sampling!r}'
  if span is not None and frames < span:
    return [f"it has {frames} frame{'s' * (frames != 1)}, fewer than a clip's {span} ({how}): "
            'its clips loop, repeat or squeeze frames.']
  if sampling.misses_frames(data_config, frames):
    rate = fps if fps > 0 else video_io.ASSUMED_FPS
    return [f'its clips take only its first {reach} of {frames} frames ({reach / rate:.1f} s of '
            f'{frames / rate:.1f} s; {how} takes at most num_frames x frame_stride = '
            f'{data_config.num_frames} x {data_config.frame_stride}): the rest is not scored; '
            f'windowed predict (config.predict.window_seconds at most {reach / rate:.1f} s) '
            'scores all of it.']
  return []


def say_decoding(decoding: Dict[str, Any], source: str) -> Dict[str, Any]:
  """Logs how videos will be decoded when the records were not every native frame, and warns
  where that cannot be matched; returns `decoding` (data/pipeline.split_decoding's dict, {}
  for a checkpoint or export `source` that predates it)."""
  if not decoding:
    logging.warning('%s does not record how its eval records decoded their videos (it predates '
                    'that, or the records do not say): videos are decoded at their native frame '
                    'rate and resized straight to the eval short side, so their clips differ '
                    'from the evaluation\'s if the records were converted with --fps or '
                    '--max_frames, and their pixels slightly where the records stored frames at '
                    'another size.', source)
  elif 'short_side' not in decoding:
    logging.warning('%s does not record the short side, JPEG quality and filter its eval records '
                    'stored frames with (it predates that): videos are resized straight to the '
                    'eval short side, so their pixels may differ slightly from the evaluation\'s '
                    'where the records were stored at another size.', source)
  if decoding.get('rate_unknown'):
    logging.warning('The eval records of %s are frame folders of unknown rate (converted '
                    'without --frames_fps): videos are decoded at their native frame rate, which '
                    'may not be the folders\'.', source)
  elif decoding.get('fps') or decoding.get('max_frames'):
    logging.info('Videos are decoded as the eval records the checkpoint was trained with were '
                 'converted: %s.', ', '.join(
                     ([f"resampled to {decoding['fps']:g} fps"] if decoding.get('fps') else [])
                     + ([f"the first {decoding['max_frames']} frames"]
                        if decoding.get('max_frames') else [])))
  return decoding


def check_clips_per_forward(config, mode: str, windows_per_device: int = 0) -> None:
  """config.eval.clips_per_device_forward against the batches `mode` scores, before the model
  loads: one video a device (padded), or windowed predict's `windows_per_device`."""
  views = config.data.eval_num_clips * config.data.eval_num_crops
  held = (f'{windows_per_device} windows a device' if windows_per_device else '1 video a device')
  evaluate_lib.check_clips_per_device_forward(
      config.eval.clips_per_device_forward, max(windows_per_device, 1) * views,
      f'a {mode} batch ({held} x {views} views)')


def predict(config: ml_collections.ConfigDict, workdir: str, video_paths: Sequence[str],
            output_dir: str = None) -> List[Dict[str, Any]]:
  """Top-5 predictions for each video; returns one dict per video: 'video', 'ok', 'error',
  'top5' [(class, probability)], 'checkpoint'. With `config.predict.window_seconds` > 0 each
  video is scored window by window instead (salinet_jax/timeline.py): its timeline json and
  PNG are written and 'top5' ranks the mean of the windows' probabilities."""
  refuse_a_process_group()  # also through an export, which reads no checkpoint
  window, stride = config.predict.window_seconds, config.predict.stride_seconds
  if window < 0 or (window > 0 and stride <= 0):
    raise errors.ConfigError(
        f'config.predict.window_seconds={window:g} and stride_seconds={stride:g}: windows need '
        'both > 0 (window_seconds=0 scores whole videos).')
  files = find_videos(video_paths)
  if not config.predict.exported:
    checkpoints.require_checkpoint(workdir, config.eval.checkpoint)
  output_dir = workdir_lib.check_writable(
      output_dir or os.path.join(workdir, 'predictions'), 'predictions',
      'Pass --output_dir=DIR to write them elsewhere.')
  windowed = config.predict.window_seconds > 0
  if config.predict.exported:  # an export (python -m salinet_jax.export) instead of the checkpoint
    from salinet_jax import export  # pylint: disable=g-import-not-at-top
    predictor = export.ExportedPredictor(config)
  else:
    check_clips_per_forward(config, 'windowed predict' if windowed else 'predict',
                            timeline.window_batch_size(config, jax.device_count())
                            // jax.device_count() if windowed else 0)
    predictor = Predictor(config, workdir)
  if windowed and stride > window:
    logging.warning('config.predict.stride_seconds=%g is longer than window_seconds=%g: %g s of '
                    'every %g s of each video are in no window (neither in its timeline nor in '
                    'its top-5).', stride, window, stride - window, stride)
  if windowed and config.eval.num_visualizations:  # the demo configs ask for pictures: info
    logging.info('config.eval.num_visualizations=%d: windowed predict draws its timelines, '
                 'not pictures of what the model looked at (predict whole videos for those).',
                 config.eval.num_visualizations)
  logging.info('Predicting %d video(s) with checkpoint %s%s.', len(files), predictor.source,
               f', in windows of {config.predict.window_seconds:g} s (a video\'s top-5 is the '
               'mean over its windows)' if windowed else '')
  if windowed and predictor.decoding.get('max_frames'):
    logging.info('Windows cover each whole video: the records\' cap of the first %d frames '
                 'applies to whole-video predict only.', predictor.decoding['max_frames'])
  progress = resume.Progress(output_dir, 'predict', config, predictor)
  names = output_names(files)
  videos = [(path, _outputs(output_dir, name)) for path, name in zip(files, names)]
  kept = progress.kept(videos)
  results = []
  for (path, outputs), name in zip(videos, names):
    result = kept.get(path)
    if result is None:
      result = _predict_one(config, predictor, path, name, output_dir)
      progress.record(path, result, outputs)
    elif not result['ok']:
      _say_cannot_predict(path, result['error'])
    results.append(result)
    if result['ok']:
      print(f'{path}:' + (' (mean over its windows)' if windowed else ''))
      for rank, (label, probability) in enumerate(result['top5'], 1):
        print(f'  {rank}. {label:<32s} {probability:.4f}')
  csv_path = os.path.join(output_dir, PREDICTIONS_FILE)
  replaced = replaced_note(csv_path)
  write_predictions(csv_path, results)
  progress.finish()
  failed = sum(not r['ok'] for r in results)
  logging.info('Wrote %s: %d predicted, %d failed%s.', csv_path, len(results) - failed, failed,
               replaced)
  return results


def _predict_one(config, predictor, path: str, name: str, output_dir: str) -> Dict[str, Any]:
  """`predict`'s result for the video at `path`, its outputs (timeline, or picture) written as
  `name` in `output_dir`; a video that cannot be decoded is one with its error, and the outputs
  an earlier run wrote for it are removed."""
  result = {'video': path, 'checkpoint': predictor.source, 'ok': False, 'error': '',
            'top5': []}
  try:
    if config.predict.window_seconds > 0:
      probs = timeline.predict_windows(predictor, path, os.path.join(output_dir, name))
    else:
      decoded = predictor.decode(path)
      pictures_dir = (os.path.join(output_dir, os.path.dirname(name))
                      if config.eval.num_visualizations else None)
      probs = predictor.probabilities(decoded.jpegs, decoded.fps, name, pictures_dir,
                                      decoded.stream_clock)
  except video_io.VideoError as e:
    result['error'] = str(e)
    _say_cannot_predict(path, result['error'])
    remove_earlier_outputs(path, _outputs(output_dir, name))
    return result
  result.update(ok=True, top5=predictor.top(probs))
  return result


def _say_cannot_predict(path: str, error: str) -> None:
  logging.warning('%s: cannot be predicted: %s', path, error)


def _outputs(output_dir: str, name: str) -> List[str]:
  """The files predict may write for the video named `name`: its timeline, or its picture."""
  return timeline.output_files(os.path.join(output_dir, name)) + [
      visualize.picture_path(os.path.join(output_dir, os.path.dirname(name)), 0, name)]


def remove_earlier_outputs(video: str, paths: Sequence[str]) -> None:
  """Removes those of `paths` (a video's own output files) that an earlier run wrote, saying
  so: this run could not score the video, and its index says that beside them."""
  earlier = [path for path in paths if os.path.isfile(path)]
  for path in earlier:
    os.remove(path)
  if earlier:
    logging.warning('%s: removed %s, written for it by an earlier run.', video,
                    ', '.join(earlier))


def replaced_note(path: str) -> str:
  """What the 'Wrote' line of an index file adds where an earlier run's is replaced."""
  return (' (it replaces the one an earlier run wrote there; --output_dir keeps both)'
          if os.path.exists(path) else '')


def write_predictions(path: str, results: Sequence[Dict[str, Any]]) -> str:
  """predictions.csv: video, error, then top-k class and probability pairs."""
  with data_errors.replacing(path, newline='') as f:
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
