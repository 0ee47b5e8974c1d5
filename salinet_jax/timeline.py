"""Predictions along a long video: a window slides over it and each position is classified.

  python main.py --config=CONFIG --workdir=DIR --mode=predict --video=long.mp4 \\
      --config.predict.window_seconds=4 --config.predict.stride_seconds=2

The video is decoded once, frame by frame (data/video_io.py), and only the frames of the current
window are held (JPEG-encoded, as records hold them), so memory stays flat however long the video
is. Frames are resampled to the rate the checkpoint's eval records were converted at, if they
were. Each window goes through the evaluation's own views and step, `config.predict.window_batch`
windows per step; the last window ends at the video's end. Windows hold a fixed number of
frames; their times are the frames' own: the container's timestamps at the native rate (a
variable frame rate gives windows of unequal length, which is said), the ticks when resampled,
counted from the first frame, whose own time (not 0 after an MP4 edit list or in a cut stream)
the json gives and the log line says.
Writes `<name>.timeline.json` (per window: start, end, top-5 with probabilities) and
`<name>.timeline.png` (the probability of the top classes over time) into the output directory.
"""

import collections
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from absl import logging

from data import errors as data_errors
from data import pipeline
from data import sampling
from data import video_io
from salinet_jax import console
from salinet_jax import evaluate as evaluate_lib
from salinet_jax import parallel

TIMELINE_SUFFIX = '.timeline'


def window_frames(seconds: float, rate: float) -> int:
  """How many frames `seconds` of a video at `rate` hold, for a window or a stride (at least 1)."""
  return max(1, int(round(seconds * rate)))


def _say_what_windows_miss(path: str, frames: int, rate: float, config) -> None:
  """A warning when the windows of `path` hold fewer frames than a clip spans (each window's
  clips then take frames as from a video that short: looped, repeated or squeezed), or more
  than the clip takes from a window's start (all_frames: the rest of each window is unseen)."""
  data = config.data
  span, reach = sampling.clip_span(data, rate), sampling.clip_reach(data)
  if sampling.misses_frames(data, frames):
    logging.warning("%s: its windows hold %d frames (%g s at %g fps), but a clip takes only the "
                    "first %d of them (temporal_sampling=%r takes at most num_frames x "
                    'frame_stride = %d x %d): windows of at most %.2f s are scored whole.', path,
                    frames, config.predict.window_seconds, rate, reach, data.temporal_sampling,
                    data.num_frames, data.frame_stride, reach / rate)
    return
  if span is None or frames >= span:
    return
  short = f"fewer than a clip's {span} (temporal_sampling={data.temporal_sampling!r})"
  if frames < window_frames(config.predict.window_seconds, rate):
    logging.warning('%s: its one window holds all its %d frames, %s: its clips loop, repeat or '
                    'squeeze frames.', path, frames, short)
  else:
    logging.warning('%s: its windows hold %d frames (%g s at %g fps), %s: their clips loop, '
                    'repeat or squeeze frames; windows of at least %.2f s hold whole clips.',
                    path, frames, config.predict.window_seconds, rate, short, span / rate)


def windows(path: str, frame_options: Dict[str, Any], window_seconds: float,
            stride_seconds: float, fps: float = 0.0, seconds: Optional[List[float]] = None
            ) -> Iterator[Tuple[int, int, float, List[bytes]]]:
  """(first frame, end frame, frame rate, JPEG frames) of each window of a video, streamed:
  windows start every stride frames, and a last one ends at the video's end. With `fps` > 0 the
  frames are resampled to that rate first (the frame on screen at each 1/fps tick), as the
  converter resamples a video into records; `frame_options` (data/pipeline.frame_options) size
  and encode them as the records' frames. Once the video is done, `seconds` (if given) holds
  each frame's start and the video's end in the container's time (`_frame_seconds`)."""
  source_rate, tolerance = video_io.stream_timing(path)
  source_rate = source_rate or video_io.ASSUMED_FPS
  rate = fps if fps > 0 else source_rate
  size, stride = window_frames(window_seconds, rate), window_frames(stride_seconds, rate)
  recent: collections.deque = collections.deque(maxlen=size)  # the last `size` frames
  count = 0
  stamps: List[Any] = []  # every decoded frame's container timestamp
  for jpeg in _frames_at(path, frame_options, source_rate, fps, tolerance, stamps):
    recent.append(jpeg)
    count += 1
    if count >= size and (count - size) % stride == 0:
      yield count - size, count, rate, list(recent)
  if count and (count < size or (count - size) % stride):
    yield max(0, count - size), count, rate, list(recent)
  for line in video_io.stream_warnings(path, stamps):  # as predict of a whole video logs them
    logging.warning('%s: %s', path, line)
  if seconds is not None and count:
    seconds.extend(_frame_seconds(stamps, count, source_rate, fps, tolerance))


def _frame_seconds(stamps: List[Any], count: int, source_rate: float, fps: float,
                   tolerance: float) -> List[float]:
  """The start of each of `count` window frames and the end of the last, in the container's time
  (a video may start later than 0: an MP4 edit list, a cut stream): resampled, the 1/fps ticks
  from the first frame; at the native rate, the frames' presentation times (video_io.frame_times:
  the container's timestamps where they time the video, else the count at the average rate
  from the earliest timestamp), the last frame lasting as long as the gap before it."""
  first = min((float(t) for t in stamps if t is not None), default=0.0)
  if fps > 0:
    return [first + i / fps for i in range(count + 1)]
  times, timing = video_io.frame_times(stamps, source_rate)
  if timing != video_io.TIMING_CONTAINER:
    times = [first + t for t in times]
  last = video_io.frame_duration(times[-2:], source_rate, tolerance) or 1.0 / source_rate
  return times + [times[-1] + last]


def _say_uneven_windows(path: str, spans: List[Tuple[float, float]], frames: int,
                        seconds: List[float], config) -> None:
  """A warning when a video's windows, a fixed count of frames each, span unequal lengths of
  it: its frame rate varies, and windows at its native rate follow its frames, not the clock."""
  lengths = [end - start for start, end in spans]
  if len(lengths) < 2 or max(lengths) <= 1.25 * min(lengths):
    return
  gaps = np.diff(seconds)
  logging.warning('%s: its frame rate varies (its frames are %.0f to %.0f ms apart): windows of '
                  '%d frames at its native rate span %.2f to %.2f s of it (the timeline gives '
                  'their real times); records converted at a fixed rate (data.convert --fps) '
                  'make windows of %g s.', path, 1000 * gaps.min(), 1000 * gaps.max(), frames,
                  min(lengths), max(lengths), config.predict.window_seconds)


def _frames_at(path: str, frame_options: Dict[str, Any], source_rate: float, fps: float,
               tolerance: float, stamps: List[Any]) -> Iterator[bytes]:
  """The video's JPEG frames, streamed: every frame, or with `fps` > 0 those the converter picks
  when it resamples (video_io.resample_stream), each encoded once. Each decoded frame's
  container timestamp is appended to `stamps`."""
  quality = frame_options['jpeg_quality']

  def decoded():
    for stamp, rgb, _ in video_io.iter_frames(
        path, short_side=frame_options['short_side'],
        frame_height=frame_options['frame_height'],
        interpolation=frame_options['interpolation']):
      stamps.append(stamp)
      yield stamp, rgb

  frames = decoded()
  if fps <= 0:
    for _, rgb in frames:
      yield video_io.encode_jpeg(rgb, quality)
    return
  last, jpeg = None, None
  for rgb in video_io.resample_stream(frames, source_rate, fps, tolerance):
    if rgb is not last:
      last, jpeg = rgb, video_io.encode_jpeg(rgb, quality)
    yield jpeg


def window_batch_size(config, devices: int) -> int:
  """How many windows a step scores: config.predict.window_batch, a multiple of the devices."""
  return max(devices, config.predict.window_batch // devices * devices)


def predict_windows(predictor, path: str, output_stem: str) -> np.ndarray:
  """Scores every window of `path`; writes its timeline json and PNG as
  `<output_stem>.timeline.json|.png`; returns the mean of the windows' class probabilities."""
  config = predictor.config
  data = config.data
  name = os.path.basename(path)
  batch_size = window_batch_size(config, predictor.engine.mesh.size)
  frames, failure, seconds, rates = [], [], [], []

  def stream():
    """The windows for the input pipeline; a decoding error is kept and re-raised below (tf.data
    would turn it into one of its own)."""
    try:
      for begin, end, rate, jpegs in bar:
        if not frames:
          _say_what_windows_miss(path, len(jpegs), rate, config)
          rates.append(rate)
        frames.append((begin, end))
        yield jpegs, name, rate, None  # a window of a stream: no clock of its own
    except Exception as e:  # pylint: disable=broad-except
      failure.append(e)

  probs = []
  with console.progress_bar(
      windows(path, pipeline.frame_options(data, predictor.decoding),
              config.predict.window_seconds, config.predict.stride_seconds,
              predictor.decoding.get('fps', 0.0), seconds),
      desc=name, unit='window', leave=False) as bar:
    for batch in pipeline.as_numpy(pipeline.memory_eval_batches(data, stream, batch_size)):
      batch.pop('filename')
      valid = int(batch['mask'].sum())
      outputs = predictor.engine.eval_step(predictor.variables,
                                           parallel.to_global(batch, predictor.engine.mesh))
      for row in np.asarray(outputs['scores'])[:valid]:
        if not np.all(np.isfinite(row)):
          raise evaluate_lib.NonFiniteScoresError(
              f'Checkpoint {predictor.source} gives NaN or Inf scores for {path}.')
        probs.append(evaluate_lib.view_probabilities(row, config.eval, predictor.num_views))
  if failure:
    raise failure[0]
  if not probs:
    raise video_io.VideoError('no video frames decoded (empty or zero-frame video)')
  probs = np.stack(probs)
  first = seconds[0]  # the windows' times count from the first frame, as a clip's do
  spans = [(seconds[begin] - first, seconds[end] - first) for begin, end in frames]
  _say_uneven_windows(path, spans, frames[0][1] - frames[0][0], seconds, config)
  _write(predictor, path, output_stem, spans, probs, rates[0], frames[0][1] - frames[0][0],
         first)
  return probs.mean(axis=0)


def output_files(output_stem: str) -> List[str]:
  """The timeline json and PNG that `predict_windows` writes for `output_stem` (a name too long
  for a file name cut: data.errors.fitted_path)."""
  stem = data_errors.fitted_path(output_stem, len(TIMELINE_SUFFIX + '.json')) + TIMELINE_SUFFIX
  return [stem + extension for extension in ('.json', '.png')]


def _write(predictor, path: str, output_stem: str, spans, probs: np.ndarray,
           rate: float, size: int, first: float) -> None:
  """The timeline json (windows of `size` whole frames at `rate`, fewer than asked in a video
  shorter than one: the seconds they hold, beside those asked for; times from the first frame,
  which is at `first` seconds of the container's time) and its PNG."""
  classes = predictor.classes
  entries = []
  for (start, end), row in zip(spans, probs):
    top = np.argsort(-row, kind='stable')[:5]
    entries.append({'start_seconds': round(start, 3), 'end_seconds': round(end, 3),
                    'top5': [[classes[k], float(row[k])] for k in top]})
  config = predictor.config.predict
  stride = window_frames(config.stride_seconds, rate)
  json_path, png_path = output_files(output_stem)
  with data_errors.replacing(json_path) as f:
    json.dump({'video': path, 'checkpoint': predictor.source, 'frame_rate': rate,
               'first_frame_seconds': round(first, 3),
               'window_frames': size, 'stride_frames': stride,
               'window_seconds': round(size / rate, 3), 'stride_seconds': round(stride / rate, 3),
               'asked': {'window_seconds': config.window_seconds,
                         'stride_seconds': config.stride_seconds},
               'windows': entries}, f, indent=1)
  _plot(png_path, spans, probs, classes, config.timeline_classes, os.path.basename(path))
  later = (f" (its times count from its first frame, at {first:.3f} s of the container's time: "
           'add that to find them in a player showing that time)') if abs(first) >= 0.0005 else ''
  logging.info('%s: %d windows, timeline in %s and .png%s', path, len(spans), json_path, later)


def _plot(path: str, spans, probs: np.ndarray, classes, count: int, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  centres = np.asarray([(start + end) / 2 for start, end in spans])
  shown = np.argsort(-probs.max(axis=0), kind='stable')[:count]
  fig, ax = plt.subplots(figsize=(min(6 + len(spans) * 0.05, 16), 3.8))
  marker = 'o' if len(spans) <= 30 else None  # a line through one window draws nothing
  for k in shown:
    ax.plot(centres, probs[:, k], label=classes[k], linewidth=1.4, marker=marker, markersize=3)
  ax.set_xlabel('time (s, window centre)')
  ax.set_ylabel('probability')
  ax.set_ylim(0, 1)
  if len(title) > 48:  # a name too long for the narrowest figure keeps its start and end
    title = f'{title[:22]}...{title[-23:]}'
  ax.set_title(f'{title}\nthe {len(shown)} classes most probable in some window', fontsize=10)
  ax.legend(fontsize=8, loc='upper right')
  fig.tight_layout()
  with data_errors.replacing(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=90)
  plt.close(fig)
