"""Video and frame-folder reading for the converter: PyAV decoding, rotation, resizing, JPEG.

Kept free of TensorFlow so converter worker processes start fast and stay small; the parent
process turns what the workers return into TFRecords (data/records.py).

Decoding rules (see `decode_video`):
  * frames are stored in the decoder's output order, which is presentation order for every
    container and codec (what `ffmpeg -vsync passthrough` writes); they are never re-sorted by
    timestamp. Timestamps only time the frames (resampling, the stored fps), and only where the
    container gives real presentation timestamps: present for every frame and strictly
    increasing in output order. Otherwise (AVI with B-frames carries decode-order times, some
    streams have none) frame i is taken to be shown at i / average rate. `DecodedVideo.timing`
    records which was used ('container' or 'decoder_order');
  * rotation metadata (display-matrix side data, else the legacy `rotate` tag) is applied, so the
    stored frames are upright;
  * frames are resized so their short side is `short_side` (0 keeps the size), or, with
    `frame_height`, so that they stand that many pixels high in any orientation (TSM's frame
    extraction), and JPEG-encoded;
  * `fps=None` keeps every decoded frame (native rate); a number resamples by timestamps (each
    output instant takes the frame on screen at that instant), which also makes variable-frame-
    rate sources evenly spaced.
"""

import dataclasses
import io
import itertools
import math
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from data import tree

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.flv',
                    '.3gp', '.wmv')
DEFAULT_SHORT_SIDE = 256
DEFAULT_JPEG_QUALITY = 90
DEFAULT_INTERPOLATION = 'BILINEAR'  # swscale filter used when resizing decoded frames
# swscale's resize filters (PyAV's Interpolation names).
INTERPOLATIONS = ('FAST_BILINEAR', 'BILINEAR', 'BICUBIC', 'X', 'POINT', 'AREA', 'BICUBLIN', 'GAUSS',
                  'SINC', 'LANCZOS', 'SPLINE')
ASSUMED_FPS = 25.0  # the frame rate of a video whose container gives none
# How the frames of a video were timed (see `frame_times`).
TIMING_CONTAINER = 'container'  # the container's presentation timestamps
TIMING_DECODER_ORDER = 'decoder_order'  # output index / average frame rate


class VideoError(Exception):
  """A video that cannot be converted; the message is the reason written to the failure report."""


@dataclasses.dataclass(frozen=True)
class StreamClock:
  """A stream's declared duration and frame count (PyAV's stream.duration, stream.frames) and
  the timestamps of the frames stored, all in the stream's time base."""
  pts: Tuple[int, ...]
  duration: int
  frames: int


def _stream_clock(declared: Tuple[Any, Any, Any], timestamps: Sequence[Optional[float]]
                  ) -> Optional[StreamClock]:
  """The StreamClock of frames the container timed at `timestamps` (seconds), from the
  stream's `declared` (duration, frames, time_base); None where it declares no duration or
  frame count (Matroska, WebM)."""
  duration, frames, unit = declared
  if not (duration and frames and unit):
    return None
  return StreamClock(pts=tuple(round(t / float(unit)) for t in timestamps),
                     duration=int(duration), frames=int(frames))


@dataclasses.dataclass
class DecodedVideo:
  """One converted video: JPEG frames in presentation order plus what was learnt decoding it."""
  jpegs: List[bytes]
  fps: float  # rate of the stored frames (the native average rate when not resampled)
  source_fps: float  # the container's average frame rate (0 when unknown)
  num_source_frames: int  # frames the decoder produced
  height: int  # of the stored (upright, resized) frames
  width: int
  rotation: int  # clockwise degrees applied to make frames upright (0, 90, 180, 270)
  source_height: int = 0  # of the upright source frames, before resizing (0: unknown)
  source_width: int = 0
  timing: str = TIMING_CONTAINER  # what timed the frames: TIMING_CONTAINER | TIMING_DECODER_ORDER
  # What a user should know about a video kept as decoded (a truncated file, uncertain timing).
  warnings: List[str] = dataclasses.field(default_factory=list)
  # Where a stream declares its duration and frame count and its container times every frame,
  # each stored frame's timestamp (stream time base) and those two: what PySlowFast's selective
  # decoding picks a clip's frames by (data/sampling.py). None otherwise, and for frames
  # resampled or cut to the first max_frames.
  stream_clock: Optional[StreamClock] = None


def list_videos(path: str, extensions: Sequence[str] = VIDEO_EXTENSIONS
                ) -> Tuple[List[str], List[str], List[str]]:
  """(videos, other files, hidden videos) of `path`: the file itself, or every file below the
  directory `path`, split by whether its extension is a video's (case-insensitive); a video
  that is hidden or in a hidden folder is listed apart, other hidden files not at all; each
  sorted."""
  if not os.path.isdir(path):
    return [path], [], []
  wanted = {e.lower() for e in extensions}
  videos, others, hidden = [], [], []
  for parent, _, names in tree.walk(path, hidden=True):
    for name in names:
      file = os.path.join(parent, name)
      is_video = os.path.splitext(name)[1].lower() in wanted
      if tree.is_hidden(os.path.relpath(file, path)):
        if is_video:
          hidden.append(file)
      else:
        (videos if is_video else others).append(file)
  return sorted(videos), sorted(others), sorted(hidden)


def output_size(width: int, height: int, short_side: int, frame_height: int = 0,
                rotation: int = 0) -> Tuple[int, int]:
  """(width, height) of a decoded frame, before its clockwise `rotation`, after scaling:
  the upright frame `frame_height` high where given (ffmpeg's scale=-1:H after its autorotate),
  else min(width, height) == short_side (0: unchanged)."""
  if frame_height > 0:  # the other side as ffmpeg's av_rescale rounds it: halves up
    turned = rotation in (90, 270)
    high, wide = (width, height) if turned else (height, width)
    other = max(1, (2 * wide * frame_height + high) // (2 * high))
    return (frame_height, other) if turned else (other, frame_height)
  if short_side > 0:
    scale = short_side / min(width, height)
  else:
    return width, height
  return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def encode_jpeg(frame: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
  """RGB uint8 (H, W, 3) -> baseline JPEG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format='JPEG', quality=int(quality))
  return buffer.getvalue()


def clockwise_rotation(frame, stream) -> int:
  """Clockwise degrees (0/90/180/270) that turn a decoded frame upright.

  FFmpeg's display matrix angle (PyAV `VideoFrame.rotation`) is counter-clockwise, so the frame
  is turned by its negative; files carrying only the legacy `rotate` tag (clockwise) use that.
  """
  angle = None
  ccw = getattr(frame, 'rotation', None)
  if ccw:
    angle = -float(ccw)
  if angle is None:
    tag = (stream.metadata or {}).get('rotate')
    try:
      angle = float(tag) if tag is not None else 0.0
    except ValueError:
      angle = 0.0
  return int(round(angle / 90.0)) % 4 * 90


def upright(array: np.ndarray, clockwise: int) -> np.ndarray:
  """Turns an (H, W, C) array `clockwise` degrees clockwise (np.rot90 turns counter-clockwise)."""
  if clockwise % 360 == 0:
    return array
  return np.ascontiguousarray(np.rot90(array, k=-(clockwise // 90)))


def _frame_rgb(frame, stream, size: Tuple[int, int], interpolation: str
               ) -> Tuple[np.ndarray, int]:
  """A decoded frame as upright RGB uint8 resized to `size` (width, height, before rotation);
  also returns the rotation."""
  rotation = clockwise_rotation(frame, stream)
  width, height = size
  if (width, height) == (frame.width, frame.height):
    rgb = frame.to_ndarray(format='rgb24')
  else:
    rgb = frame.to_ndarray(format='rgb24', width=width, height=height,
                           interpolation=interpolation)
  return upright(rgb, rotation), rotation


def _open(path: str, threads: int):
  import av  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise VideoError(f'missing video file: {path}')
  if os.path.getsize(path) == 0:
    raise VideoError('empty file (0 bytes)')
  try:  # absolute: FFmpeg reads a relative '12:30 talk.mp4' as protocol '12' and cannot open it
    container = av.open(os.path.abspath(path))
  except av.error.FFmpegError as e:
    raise VideoError(f'cannot open video ({type(e).__name__}: {e})') from None
  if not container.streams.video:
    container.close()
    raise VideoError('no video stream in the file')
  stream = container.streams.video[0]
  if threads != 1:
    stream.thread_type = 'AUTO'
    stream.codec_context.thread_count = max(0, threads)
  return container, stream


def _average_rate(stream) -> float:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate and float(rate) > 0:
      return float(rate)
  return 0.0


def stream_timing(path: str) -> Tuple[float, float]:
  """(average frame rate or 0, timestamp tolerance) of a video's first video stream: the
  tolerance is half the container's time unit where that unit is finer than a quarter frame
  (Matroska and WebM round timestamps to 1 ms), else a microsecond (a unit as coarse as a frame,
  AVI's, times frames exactly), so that resampling is not thrown by the rounding."""
  container, stream = _open(path, threads=1)
  try:
    return _average_rate(stream), _tolerance(stream)
  finally:
    container.close()


def _declared_seconds(container, stream) -> float:
  """The video stream's length as the file declares it, 0 where it does not say: the stream's
  duration (MP4, MOV, AVI), else its DURATION tag (Matroska and WebM, which ffmpeg and
  mkvmerge write per track), else the container's where the video is its only stream (with
  an audio track that outlasts the video, the container's length is the audio's)."""
  if stream.duration and stream.time_base:
    return float(stream.duration * stream.time_base)
  tag = (stream.metadata or {}).get('DURATION') or (stream.metadata or {}).get('duration')
  if tag:
    try:
      hours, minutes, seconds = tag.split(':')
      return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
      pass
  if container.duration and len(container.streams) == 1:
    return container.duration / 1e6  # AV_TIME_BASE units
  return 0.0


# A video decoded this much shorter than declared (and at least a tenth of it) is likely a
# truncated file: partly downloaded clips decode cleanly up to where they stop.
_SHORTFALL_SECONDS = 1.0


def _timing_warnings(timestamps: Sequence[Optional[float]], times: Sequence[float], timing: str,
                     rate: float, declared: float, complete: bool,
                     later: Sequence[Optional[float]] = ()) -> List[str]:
  """Lines about a decoded video's length and timing that its records cannot show: decoded
  well short of the declared length (`complete`: every frame was decoded), or timed by frame
  count where its timestamps, sorted, are unevenly spaced (a variable frame rate, where the
  count gives other times than the video shows; B-frame AVIs are even and say nothing). `later`:
  the times of frames after those kept (a cut), those below the kept ones' filling the gaps
  that B-frames leave in a cut's times."""
  lines = []
  frame = frame_duration(times, rate, 1e-6) or 1.0 / (rate or ASSUMED_FPS)
  # Declared lengths count from the stream's start or from 0 (a stream starting late): the
  # decoded video reaches whichever is longer.
  reached = max(times[-1] - times[0], times[-1]) + frame
  if complete and declared and reached < declared - max(_SHORTFALL_SECONDS, 0.1 * declared):
    lines.append(f'decoded {reached:.1f} s of the {declared:.1f} s its container declares: the '
                 'file may be truncated (kept as decoded)')
  if timing == TIMING_DECODER_ORDER and len(timestamps) > 2 and all(
      t is not None for t in timestamps):
    last = max(timestamps)
    spaced = list(timestamps) + [t for t in later if t is not None and t < last]
    sorted_gaps = np.diff(np.sort(np.asarray(spaced, np.float64)))
    positive = sorted_gaps[sorted_gaps > 0]
    if positive.size and positive.max() > 1.5 * positive.min():
      first = next(i for i in range(1, len(timestamps)) if timestamps[i] <= timestamps[i - 1])
      lines.append(f'its timestamps stop increasing at frame {first + 1} of {len(timestamps)} '
                   'and are unevenly spaced (a variable frame rate?): its frames are timed by '
                   f'their count at {rate or ASSUMED_FPS:g} fps instead')
  return lines


def _native_rate_warnings(times: Sequence[float], timing: str) -> List[str]:
  """A line for a video kept at its native rate whose frames are unevenly spaced in time (the
  10th and 90th percentiles of the gaps more than 1.5x apart: a variable frame rate, not a few
  dropped frames): the samplers count frames, so its clips span different lengths of it."""
  gaps = np.diff(np.asarray(times, np.float64))
  gaps = gaps[gaps > 0]
  if timing != TIMING_CONTAINER or gaps.size < 2:
    return []
  short, long = np.percentile(gaps, [10, 90])
  if long <= 1.5 * short:
    return []
  return [f'its frame rate varies (its frames are {1e3 * short:.0f} to {1e3 * long:.0f} ms '
          'apart): kept at its native rate, clips, which count frames, span different lengths '
          'of it; a fixed rate (data.convert --fps) evens them']


def _tolerance(stream) -> float:
  unit, rate = float(stream.time_base or 0), _average_rate(stream)
  return max(1e-6, 0.5 * unit) if unit and rate and unit <= 0.25 / rate else 1e-6


_TIMING_LOOKAHEAD = 32  # frames whose timestamps decide the timing of a stream


def stream_warnings(path: str, timestamps: Sequence[Optional[float]]) -> List[str]:
  """What `decode_video` warns about a video (DecodedVideo.warnings), from the container
  timestamps of all its frames as a stream decoded them (windowed predict)."""
  if not timestamps:
    return []
  container, stream = _open(path, threads=1)
  try:
    rate, declared = _average_rate(stream), _declared_seconds(container, stream)
    pixel_shape = _pixel_shape_warnings(stream)
  finally:
    container.close()
  times, timing = frame_times(timestamps, rate)
  return pixel_shape + _timing_warnings(timestamps, times, timing, rate, declared, complete=True)


def _pixel_shape_warnings(stream) -> List[str]:
  """A line when a stream's pixels are not square: its frames are kept as coded (as PySlowFast
  and TSM read videos), so shapes look narrower or wider than a player shows them."""
  ratio = stream.sample_aspect_ratio
  if not ratio or ratio == 1:
    return []
  width, height = int(stream.codec_context.width), int(stream.codec_context.height)
  return [f'its pixels are not square (sample aspect ratio {ratio.numerator}:{ratio.denominator}'
          f'): its frames are kept as coded, {width}x{height}, where players show '
          f'{round(width * ratio)}x{height}']


def frame_duration(times: Sequence[float], rate: float, tolerance: float) -> Optional[float]:
  """How long a video's last frame stays on screen: the median gap between its frames' times,
  or the average rate's frame period where the two agree within the timestamps' rounding
  (`tolerance`: Matroska's 1 ms stamps make a 30 fps gap 33 ms, and a resampled clip lost its
  last tick); None for a single frame."""
  gaps = np.diff(np.asarray(times, np.float64))
  gaps = gaps[gaps > 0]
  if not gaps.size:
    return None
  median = float(np.median(gaps))
  return 1.0 / rate if rate > 0 and abs(median - 1.0 / rate) <= tolerance else median


def resample_stream(frames: Iterator[Tuple[Optional[float], Any]], rate: float, fps: float,
                    tolerance: float = 1e-6) -> Iterator[Any]:
  """Streams what `resample_times` picks from (container timestamp or None, frame) pairs in
  output order, holding a few frames at a time: the frame on screen at each 1/fps tick, a tick
  only once the video outlasts it. The timestamps are used when they increase over the first
  frames (and until they stop); else frame i is timed i / rate, as `frame_times` times a whole
  video."""
  single_frame_duration = 1.0 / (rate if rate > 0 else fps)
  rate_known = rate > 0
  rate = rate if rate_known else ASSUMED_FPS
  tick, times = 0, []
  held = held_time = start = None
  # Decoders reorder B-frames within their first frames: timestamps that do not increase there
  # (AVI gives decode-order times) time the whole video by frame count, as frame_times does.
  frames = iter(frames)
  head = list(itertools.islice(frames, _TIMING_LOOKAHEAD))
  stamps = [stamp for stamp, _ in head]
  container = all(s is not None for s in stamps) and all(b > a for a, b in zip(stamps, stamps[1:]))
  pending: List[Tuple[int, Any]] = []  # ticks given a frame, until the video outlasts them
  for index, (stamp, frame) in enumerate(itertools.chain(head, frames)):
    if container and (stamp is None or (held_time is not None and stamp - start <= held_time)):
      container = False
    time = stamp - (start if start is not None else stamp) if container else index / rate
    if start is None:
      start = stamp if container else 0.0
    times.append(time)
    if held is not None:
      while tick / fps + (tolerance if container else 1e-6) < time:
        pending.append((tick, held))
        tick += 1
    held, held_time = frame, time
    while pending and (pending[0][0] + 1) / fps <= time + 1e-6:  # the tick's whole interval
      yield pending.pop(0)[1]
  if held is None:
    return
  duration = frame_duration(times, rate if rate_known else 0.0,
                            tolerance if container else 1e-6) or single_frame_duration
  total = max(1, int(math.floor((held_time + duration) * fps + 1e-6)))
  while tick < total:
    pending.append((tick, held))
    tick += 1
  for pending_tick, frame in pending:
    if pending_tick < total:
      yield frame


def iter_frames(path: str, *, short_side: int = DEFAULT_SHORT_SIDE, frame_height: int = 0,
                interpolation: str = DEFAULT_INTERPOLATION, threads: int = 1
                ) -> Iterator[Tuple[Optional[float], np.ndarray, int]]:
  """Yields (container timestamp in seconds or None, upright RGB uint8 frame, clockwise
  rotation) in the decoder's output order, which is presentation order.

  The timestamp is the container's, unchecked (see `frame_times`). Every frame gets the size
  the first one scales to (streams that change resolution midway still give equal-sized
  frames). Raises VideoError (with the number of frames decoded so far) when the file cannot be
  decoded.
  """
  import av  # pylint: disable=g-import-not-at-top
  container, stream = _open(path, threads)
  count = 0
  size = None
  try:
    try:
      for frame in container.decode(stream):
        t = frame.time
        if size is None:
          size = output_size(frame.width, frame.height, short_side, frame_height,
                             clockwise_rotation(frame, stream))
        rgb, rotation = _frame_rgb(frame, stream, size, interpolation)
        yield (None if t is None else float(t)), rgb, rotation
        count += 1
    except av.error.FFmpegError as e:
      raise VideoError(f'decoding failed after {count} frames ({type(e).__name__}: {e})') from None
  finally:
    container.close()


def frame_times(timestamps: Sequence[Optional[float]], rate: float) -> Tuple[List[float], str]:
  """(presentation time of each frame in output order, timing) for frames in decoder order.

  The container's timestamps are used when every frame has one and they strictly increase in
  output order ('container'); otherwise they are not presentation times (AVI gives B-frames
  decode-order times) or absent, and frame i is timed i / `rate` ('decoder_order').
  """
  if timestamps and all(t is not None for t in timestamps) and all(
      b > a for a, b in zip(timestamps, timestamps[1:])):
    return [float(t) for t in timestamps], TIMING_CONTAINER
  rate = rate if rate > 0 else ASSUMED_FPS
  return [i / rate for i in range(len(timestamps))], TIMING_DECODER_ORDER


def resample_times(times: Sequence[float], fps: float, frame_duration: float,
                   tolerance: float = 1e-6) -> List[int]:
  """Indices into sorted `times` of the frames on screen at t0, t0 + 1/fps, ... until the end.

  The last frame is taken to stay on screen for `frame_duration` seconds.
  """
  if not times:
    return []
  t0, end = times[0], times[-1] + frame_duration
  count = max(1, int(math.floor((end - t0) * fps + 1e-6)))
  targets = t0 + np.arange(count) / fps
  indices = np.searchsorted(np.asarray(times), targets + tolerance, side='right') - 1
  return np.clip(indices, 0, len(times) - 1).tolist()


# How much longer than the clip it should hold a file may declare itself (a clip cut at the
# key frames around its segment runs a little over) before it is taken for an untrimmed video.
CLIP_SLACK_SECONDS = 2.0


def _longer_than_its_clip(seconds: float, clip_seconds: float) -> Optional[str]:
  """Why a video of `seconds` is not the clip of `clip_seconds` (0: not known) it should hold;
  None where it may be."""
  if clip_seconds and seconds > clip_seconds + CLIP_SLACK_SECONDS:
    return (f'the file is {seconds:.1f} s long and the clip it should hold {clip_seconds:g} s: '
            "an untrimmed video? Store the clip's own segment (trim the file to it)")
  return None


def _times_of_the_next_frames(decoded: Iterator[Tuple[Optional[float], Any, int]]
                              ) -> List[Optional[float]]:
  """The timestamps of up to _TIMING_LOOKAHEAD more frames of `decoded` (`iter_frames`), fewer
  where the file ends or cannot be decoded there (the frames before are whole): B-frames carry
  the times of frames decoded after them, which the spacing of a cut's times lacks."""
  times = []
  try:
    for t, _, _ in itertools.islice(decoded, _TIMING_LOOKAHEAD - 1):
      times.append(t)
  except VideoError:
    pass
  return times


def decode_video(path: str, *, fps: Optional[float] = None, short_side: int = DEFAULT_SHORT_SIDE,
                 frame_height: int = 0, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                 max_frames: int = 0,
                 interpolation: str = DEFAULT_INTERPOLATION, threads: int = 1,
                 clip_seconds: float = 0.0) -> DecodedVideo:
  """Decodes `path` into upright, resized JPEG frames in presentation order.

  Args:
    path: the video file.
    fps: None (or <= 0) keeps every frame; else frames are resampled to this rate by timestamp.
    short_side: stored short side in pixels (0 keeps the decoded size).
    frame_height: when > 0, the stored height of the upright frames instead (short_side is then
      not read).
    jpeg_quality: JPEG quality (1-95).
    max_frames: keep at most this many frames from the start (0: all).
    interpolation: swscale filter name ('BILINEAR', 'AREA', 'BICUBIC', ...).
    threads: decoder threads (1 inside a worker pool; 0 = FFmpeg's choice).
    clip_seconds: the length of the clip the file should hold (0: not known).

  Raises:
    VideoError: missing/empty/unreadable file, no video stream, a decoding error, no frames, a
      single frame (a still image named like a video) unless max_frames is 1, or a file longer
      (as it declares, else as decoded) than `clip_seconds` by more than CLIP_SLACK_SECONDS (an
      untrimmed video: its frames are not the clip's).
  """
  container, stream = _open(path, threads)
  source_fps, tolerance = _average_rate(stream), _tolerance(stream)
  coded = (int(stream.codec_context.height or 0), int(stream.codec_context.width or 0))
  declared = _declared_seconds(container, stream)
  declared_clock = (stream.duration, stream.frames, stream.time_base)
  too_long = _longer_than_its_clip(declared, clip_seconds)
  if too_long:
    container.close()
    raise VideoError(too_long)
  pixel_shape = _pixel_shape_warnings(stream)
  container_format = container.format.name
  container.close()
  resample = fps is not None and fps > 0
  timestamps: List[Optional[float]] = []
  frames: List[Any] = []  # jpeg bytes, or (small, resized) arrays while resampling
  rotation = 0
  shape = (0, 0)
  later: List[Optional[float]] = []  # times of frames past a cut, to judge the spacing by
  decoded = iter_frames(path, short_side=short_side, frame_height=frame_height,
                        interpolation=interpolation, threads=threads)
  for t, rgb, rotation in decoded:
    if max_frames and not resample and len(frames) >= max_frames:
      later = [t] + _times_of_the_next_frames(decoded)
      break
    shape = rgb.shape[:2]
    # Resampling needs the time of every frame before choosing: keep the arrays then and encode
    # only the chosen ones; otherwise encode right away.
    timestamps.append(t)
    frames.append(rgb if resample else encode_jpeg(rgb, jpeg_quality))
  if not frames:
    raise VideoError('no video frames decoded (empty or zero-frame video)')
  if len(frames) == 1 and max_frames != 1:
    still = (f' (a still image in format {container_format})'
             if container_format.endswith('_pipe') or container_format == 'image2' else '')
    raise VideoError(f'a single frame{still}, not a video')
  times, timing = frame_times(timestamps, source_fps)
  num_decoded = len(frames)
  complete = resample or not max_frames or not later  # every frame decoded
  if complete and not declared:  # a length the file does not declare: the decoded one
    too_long = _longer_than_its_clip(times[-1] - times[0] + (
        frame_duration(times, source_fps, 1e-6) or 1.0 / (source_fps or ASSUMED_FPS)),
                                     clip_seconds)
    if too_long:
      raise VideoError(too_long)
  warnings = pixel_shape + _timing_warnings(
      timestamps, times, timing, source_fps, declared, complete=complete, later=later)
  if not resample:
    warnings += _native_rate_warnings(times, timing)
  if resample:
    rounding = tolerance if timing == TIMING_CONTAINER else 1e-6
    duration = frame_duration(times, source_fps, rounding) or 1.0 / (source_fps or fps)
    chosen = resample_times(times, fps, duration, rounding)
    if max_frames:
      chosen = chosen[:max_frames]
    cache: Dict[int, bytes] = {}
    jpegs = []
    for i in chosen:
      if i not in cache:
        cache[i] = encode_jpeg(frames[i], jpeg_quality)
      jpegs.append(cache[i])
    stored_fps = float(fps)
  else:
    jpegs = frames
    stored_fps = source_fps
    if not stored_fps and len(times) > 1 and times[-1] > times[0]:
      stored_fps = (len(times) - 1) / (times[-1] - times[0])
  source = coded[::-1] if rotation in (90, 270) else coded
  # A clock declares the whole file's frames: of the first frames alone (max_frames) or
  # resampled ones, PySlowFast's selective decoding would take frames the records lack.
  clock = (_stream_clock(declared_clock, timestamps)
           if timing == TIMING_CONTAINER and not resample and complete else None)
  return DecodedVideo(jpegs=jpegs, fps=stored_fps, source_fps=source_fps,
                      num_source_frames=num_decoded, height=int(shape[0]), width=int(shape[1]),
                      rotation=rotation, timing=timing, source_height=source[0],
                      source_width=source[1], warnings=warnings, stream_clock=clock)


def _refuse_a_gap(directory: str, template: str, start_index: int, missing: int) -> None:
  """Frames of unknown count are read until the first missing index: frames after it would be
  left out without a word, so a gap is an error."""
  names = set(os.listdir(directory))
  later = sum(template.format(start_index + j) in names
              for j in range(missing + 1, missing + 1 + len(names)))
  if later:
    raise VideoError(f'missing frame {template.format(start_index + missing)} with {later} '
                     'frame(s) after it: the folder has a gap')


def _refuse_frames_before_the_start(directory: str, template: str, start_index: int) -> None:
  """Frames numbered below `start_index` (a folder counting from 0 read from 1) would be left out
  without a word: an error naming the start the folder uses."""
  if not start_index:
    return
  names = set(os.listdir(directory))  # one listing, not a look-up per index below the start
  lower = next((i for i in range(start_index) if template.format(i) in names), None)
  if lower is not None:
    raise VideoError(f'frame {template.format(lower)} comes before {template.format(start_index)}'
                     f', the first one read (start index {start_index}): it would be left out; '
                     f'the folder numbers its frames from {lower}, so give that start '
                     f'(--frame_start={lower})')


def read_frame_folder(directory: str, *, num_frames: int = 0, template: str = '{:06d}.jpg',
                      start_index: int = 1, short_side: int = DEFAULT_SHORT_SIDE,
                      frame_height: int = 0, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                      fps: float = 0.0, max_frames: int = 0) -> DecodedVideo:
  """Reads a folder of extracted frames (TSN layout) into JPEG frames.

  Frames are `template.format(start_index + i)`; with `num_frames` 0 (unknown) they are read until
  the first missing index, which must be the end (a gap is a VideoError). JPEG files already at
  the size `short_side` or `frame_height` (as in `decode_video`) give are stored byte for byte;
  others are decoded, resized and re-encoded.
  """
  if not os.path.isdir(directory):
    raise VideoError(f'missing frame folder: {directory}')
  _refuse_frames_before_the_start(directory, template, start_index)
  jpegs, size = [], (0, 0)
  first_size = None  # every frame takes the size the first one scales to
  source_size = (0, 0)
  i = 0
  while not num_frames or i < num_frames:
    if max_frames and i >= max_frames:
      break
    path = os.path.join(directory, template.format(start_index + i))
    if not os.path.exists(path):
      if num_frames:
        raise VideoError(f'missing frame {os.path.basename(path)} ({i} of {num_frames} read)')
      _refuse_a_gap(directory, template, start_index, i)
      break
    with open(path, 'rb') as f:
      data = f.read()
    try:
      image = Image.open(io.BytesIO(data))
      width, height = image.size
      if first_size is None:
        first_size = output_size(width, height, short_side, frame_height)
        source_size = (width, height)
      target = first_size
      if image.format == 'JPEG' and image.mode == 'RGB' and target == (width, height):
        jpegs.append(data)
      else:
        image = image.convert('RGB')
        if target != (width, height):
          image = image.resize(target, Image.BILINEAR)
        jpegs.append(encode_jpeg(np.asarray(image), jpeg_quality))
      size = (target[1], target[0])
    except (OSError, ValueError) as e:
      raise VideoError(f'cannot read frame {os.path.basename(path)}: {e}') from None
    i += 1
  if not jpegs:
    raise VideoError(f'no frames found in {directory} (template {template!r}, '
                     f'first index {start_index})')
  return DecodedVideo(jpegs=jpegs, fps=float(fps), source_fps=float(fps),
                      num_source_frames=len(jpegs), height=size[0], width=size[1], rotation=0,
                      timing=TIMING_DECODER_ORDER, source_height=source_size[1],
                      source_width=source_size[0])


def convert_task(task: Dict[str, Any]) -> Dict[str, Any]:
  """Worker entry point: converts one video or frame folder; never raises.

  `task` has 'index', 'source' (path), 'kind' ('video' | 'frames') and 'options' (the keyword
  arguments of `decode_video` / `read_frame_folder`); a 'missing' reason short-cuts to a failure
  (the planner found no file). Returns
  {'index', 'ok', 'reason', 'jpegs', 'fps', 'seconds', ...}.
  """
  start = time.time()
  result: Dict[str, Any] = {'index': task['index'], 'ok': False, 'reason': '', 'jpegs': [],
                            'fps': 0.0}
  if task.get('missing'):
    result.update(reason=task['missing'], seconds=0.0)
    return result
  try:
    options = dict(task.get('options', {}))
    if task.get('kind', 'video') == 'frames':
      video = read_frame_folder(task['source'], **options)
    else:
      video = decode_video(task['source'], **options)
    result.update(ok=True, jpegs=video.jpegs, fps=video.fps, rotation=video.rotation,
                  height=video.height, width=video.width, timing=video.timing,
                  num_source_frames=video.num_source_frames, source_fps=video.source_fps,
                  source_height=video.source_height, source_width=video.source_width,
                  warnings=video.warnings, stream_clock=video.stream_clock)
  except VideoError as e:
    result['reason'] = str(e)
  except MemoryError:
    result['reason'] = 'out of memory while decoding'
  except Exception as e:  # pylint: disable=broad-except
    # One broken file must never stop a run: anything unexpected is reported with its type.
    result['reason'] = f'unexpected {type(e).__name__}: {e}'
  result['seconds'] = time.time() - start
  return result
