"""Temporal samplers: which frames of a video a training clip or the test views are made of.

Frame indices are chosen BEFORE any JPEG is decoded, so only the frames a clip uses are decoded.
Each sampler is registered by name in `SAMPLERS` and chosen by `config.data.temporal_sampling`;
it takes one parsed video (`frames_jpeg` (N,), `fps`) and returns `frames_jpeg` (1, T) in
training and (K, T) for the K test clips (`config.data.eval_num_clips`).

  dense       num_frames x frame_stride native frames: a random start in training, K starts
              spread over the video for test; a video shorter than the clip's span loops
              (index modulo its length, MMAction2's 'loop': the clip jumps back to the start,
              and one shorter than frame_stride repeats or scrambles its frames; PySlowFast's
              sampler repeats the last frame instead). The data card (python -m data.report)
              shows the frame counts.
  pyslowfast  PySlowFast's decoder: a clip spans num_frames * frame_stride frames at target_fps,
              mapped onto the video's own frame rate; indices from a linspace over it, clamped
              at the video's end (short videos repeat their last frame); random start in
              [0, delta] for training, start delta * k / K for test clip k. PySlowFast decodes
              a stream that declares its duration and frame count (MP4, AVI) selectively: clip k
              from the first frame at or after timestamp int(start * duration / frames), the
              linspace counted from that frame; a video converted with that stream clock
              (records' image/pts) takes those frames here too. Others take PySlowFast's
              decode-all path's, the linspace from the start itself: MKV, WebM, and where no
              clock is stored (records converted before, a stream of 0 declared frames such as
              a fragmented MP4 or MPEG-TS, on which PySlowFast's decoder fails, AVI B-frames
              timed in decoder order, --fps or --max_frames conversions); for an MP4 or AVI,
              one frame off the selective path in most clips (30 fps MP4, clip 1 of 10:
              frames 24, 33, ... against 23, 32, ...; a 25 fps AVI's steps 7, 7, 8, ...
              against 7, 8, 7, ...). Known departure: in an open-GOP H.264 stream PySlowFast's
              seek drops the B-frames shown before a keyframe, so its clips starting there
              begin a frame later than the timestamps say (x264's default GOP is closed).
  tsn         num_frames segments, one frame each (random in training, centred for test).
  all_frames  every frame_stride-th frame up to num_frames (S2DNet), padded later with a
              validity mask; training first trims a random 0..floor(n * trim_fraction) of them
              at each end, n being the video's own (strided) length.
"""

import math
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from data import errors
from data import ops

Features = Dict[str, tf.Tensor]

SAMPLERS = ops.Registry('temporal sampler', 'config.data.temporal_sampling')


def dense_span(num_frames: int, stride: int) -> int:
  """The native frames a dense clip spans, first to last."""
  return (num_frames - 1) * stride + 1


def pyslowfast_length(num_frames: int, stride: int, rate, target_fps: float):
  """PySlowFast's clip length L in native frames of a video at `rate` (a float or a float64
  tensor): num_frames * stride frames counted at target_fps."""
  return num_frames * stride * rate / target_fps


def dense_clip_indices(num_available: tf.Tensor, num_frames: int, stride: int,
                       start: tf.Tensor) -> tf.Tensor:
  """`num_frames` indices `stride` apart from `start`; short videos loop around."""
  offsets = start + tf.range(num_frames) * stride
  return tf.math.floormod(offsets, tf.maximum(num_available, 1))


def sample_random_clip(features: Features, num_frames: int, stride: int,
                       seed: tf.Tensor) -> Features:
  """Train sampling: one dense clip at a uniformly random start."""
  available = tf.shape(features['frames_jpeg'])[0]
  span = dense_span(num_frames, stride)
  max_start = tf.maximum(available - span, 0)
  start = tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)
  indices = dense_clip_indices(available, num_frames, stride, start)
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)[None]
  return features


def sample_uniform_clips(features: Features, num_frames: int, stride: int,
                         num_clips: int) -> Features:
  """Test sampling: `num_clips` dense clips with uniformly spaced starts (K x T indices)."""
  available = tf.shape(features['frames_jpeg'])[0]
  span = dense_span(num_frames, stride)
  max_start = tf.cast(tf.maximum(available - span, 0), tf.float32)
  if num_clips == 1:
    starts = tf.cast(tf.round(max_start / 2), tf.int32)[None]
  else:
    starts = tf.cast(tf.round(tf.linspace(0.0, max_start, num_clips)), tf.int32)
  indices = tf.map_fn(lambda s: dense_clip_indices(available, num_frames, stride, s), starts)
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)
  return features


@SAMPLERS.register('dense')
def dense(features: Features, data, *, train: bool, seed: Optional[tf.Tensor]) -> Features:
  if train:
    return sample_random_clip(features, data.num_frames, data.frame_stride, seed)
  return sample_uniform_clips(features, data.num_frames, data.frame_stride, data.eval_num_clips)


def pyslowfast_indices(num_available: tf.Tensor, fps: tf.Tensor, num_frames: int, stride: int,
                       target_fps: float, clip_index: tf.Tensor, num_clips: float) -> tf.Tensor:
  """PySlowFast's frame indices of a video decoded whole (decoder.py get_start_end_idx +
  temporal_sampling, its decode-all path: see the module docstring), (K, T).

  The clip spans L = num_frames * stride * fps / target_fps native frames (fps 0, unknown, is
  taken as target_fps); delta = max(N - L, 0); clip k starts at delta * clip_index[k] /
  num_clips (in that order of operations, as the reference) and its indices are
  floor(start + j (L - 1) / (T - 1)), clamped to N - 1. Computed in float64.
  """
  n = tf.cast(tf.maximum(num_available, 1), tf.float64)
  rate = tf.where(fps > 0, tf.cast(fps, tf.float64), tf.constant(target_fps, tf.float64))
  length = pyslowfast_length(num_frames, stride, rate, target_fps)
  delta = tf.maximum(n - length, 0.0)
  starts = delta * tf.cast(clip_index, tf.float64) / num_clips
  step = (length - 1.0) / max(num_frames - 1, 1)
  positions = starts[:, None] + tf.range(num_frames, dtype=tf.float64)[None, :] * step
  return tf.cast(tf.minimum(tf.floor(positions), n - 1.0), tf.int32)


def pyslowfast_selective_indices(pts: tf.Tensor, duration: tf.Tensor, declared_frames: tf.Tensor,
                                 fps: tf.Tensor, num_frames: int, stride: int, target_fps: float,
                                 clip_index: tf.Tensor, num_clips: float) -> tf.Tensor:
  """PySlowFast's frame indices of a stream that declares its duration and frame count (MP4,
  AVI: decoder.py pyav_decode's selective decoding), (K, T), into frames timed `pts`.

  Clip k starts at s = delta * clip_index[k] / num_clips with delta = max(frames - L, 0) of the
  declared frames; PySlowFast decodes the frames timed from int(s * duration / frames) to
  int((s + L - 1) * duration / frames) and the one after them, and takes floor(j (L - 1) /
  (T - 1)) of those, clamped to the last. Computed in float64, as the reference.
  """
  count = tf.shape(pts, out_type=tf.int32)[0]
  rate = tf.where(fps > 0, tf.cast(fps, tf.float64), tf.constant(target_fps, tf.float64))
  length = pyslowfast_length(num_frames, stride, rate, target_fps)
  declared = tf.cast(declared_frames, tf.float64)
  starts = tf.maximum(declared - length, 0.0) * tf.cast(clip_index, tf.float64) / num_clips
  tick = tf.cast(duration, tf.float64) / declared
  first_pts = tf.cast(tf.floor(starts * tick), tf.int64)
  last_pts = tf.cast(tf.floor((starts + length - 1.0) * tick), tf.int64)
  first = tf.searchsorted(pts, first_pts, side='left', out_type=tf.int32)
  after = tf.searchsorted(pts, last_pts, side='right', out_type=tf.int32)
  decoded = tf.minimum(after + 1, count) - first  # the frame after the clip is decoded too
  step = (length - 1.0) / max(num_frames - 1, 1)
  positions = tf.cast(tf.floor(tf.range(num_frames, dtype=tf.float64) * step), tf.int32)
  indices = first[:, None] + tf.minimum(positions[None, :], tf.maximum(decoded, 1)[:, None] - 1)
  return tf.clip_by_value(indices, 0, tf.maximum(count, 1) - 1)


def has_stream_clock(features: Features) -> tf.Tensor:
  """Whether a parsed video carries its stream clock (records.parse_video), one timestamp per
  stored frame."""
  return ((features['stream_duration'] > 0) & (features['stream_frames'] > 0)
          & (tf.size(features['pts']) == tf.size(features['frames_jpeg'])))


@SAMPLERS.register('pyslowfast')
def pyslowfast(features: Features, data, *, train: bool,
               seed: Optional[tf.Tensor]) -> Features:
  """PySlowFast's clips: selective decoding's frames where the video carries its stream clock
  (an MP4 or AVI converted by this version), else the decode-all path's."""
  available = tf.shape(features['frames_jpeg'])[0]
  if train:  # a uniform start in [0, delta]
    clip_index, num_clips = tf.random.stateless_uniform([1], seed, dtype=tf.float64), 1.0
  else:
    clip_index, num_clips = tf.range(data.eval_num_clips, dtype=tf.float64), data.eval_num_clips
  args = (data.num_frames, data.frame_stride, data.target_fps, clip_index, float(num_clips))
  decode_all = lambda: pyslowfast_indices(available, features['fps'], *args)
  if 'pts' in features:
    indices = tf.cond(
        has_stream_clock(features),
        lambda: pyslowfast_selective_indices(features['pts'], features['stream_duration'],
                                             features['stream_frames'], features['fps'], *args),
        decode_all)
  else:  # frames held without their stream's clock
    indices = decode_all()
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)
  return features


def tsn_segment_indices(num_available: tf.Tensor, num_segments: int, positions: tf.Tensor
                        ) -> tf.Tensor:
  """One frame per segment: the video is cut into `num_segments` equal segments and each takes
  the frame at relative `positions` (in [0, 1), one per segment) inside its segment.

  Videos shorter than `num_segments` repeat frames (each segment still yields one index).
  """
  n = tf.cast(tf.maximum(num_available, 1), tf.float32)
  seg = n / num_segments
  starts = tf.range(num_segments, dtype=tf.float32) * seg
  indices = tf.cast(tf.floor(starts + positions * seg), tf.int32)
  return tf.clip_by_value(indices, 0, tf.maximum(num_available, 1) - 1)


def sample_tsn_segments(features: Features, num_segments: int, *, train: bool,
                        seed: Optional[tf.Tensor] = None, num_clips: int = 1) -> Features:
  """TSN sampling: `num_segments` segments, one frame each.

  Train: a uniformly random frame inside each segment -> (1, S). Test: `num_clips` views whose
  frames sit at (k + 0.5) / num_clips of each segment (k = 0..K-1; K = 1 is the centre) -> (K, S).
  """
  available = tf.shape(features['frames_jpeg'])[0]
  if train:
    positions = tf.random.stateless_uniform([num_segments], seed)
    indices = tsn_segment_indices(available, num_segments, positions)[None]
  else:
    offsets = (tf.range(num_clips, dtype=tf.float32) + 0.5) / num_clips
    indices = tf.stack([tsn_segment_indices(available, num_segments,
                                            tf.fill([num_segments], offsets[k]))
                        for k in range(num_clips)])
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)
  return features


@SAMPLERS.register('tsn')
def tsn(features: Features, data, *, train: bool, seed: Optional[tf.Tensor]) -> Features:
  return sample_tsn_segments(features, data.num_frames, train=train, seed=seed,
                             num_clips=1 if train else data.eval_num_clips)


def sample_all_frames(features: Features, max_frames: int, *, train: bool,
                      seed: Optional[tf.Tensor] = None, trim_fraction: float = 1 / 16,
                      stride: int = 1) -> Features:
  """All frames up to `max_frames` (S2DNet): returns (1, num_valid) JPEGs and 'num_valid'.

  The video is first taken at every `stride`-th frame (S2DNet's x2 pre-subsampling), giving n
  frames. Train: drops a random 0..floor(n * trim_fraction) of them at each end (at least one
  frame always stays), as the reference trims relative to each video's own length; then keeps
  the first `max_frames`. Test: the first `max_frames`. `pad_frames` later pads the decoded clip
  to `max_frames` and adds the validity mask.
  """
  available = tf.shape(features['frames_jpeg'])[0]
  strided = (available + stride - 1) // stride
  start, end = tf.constant(0, tf.int32), strided
  if train:
    max_trim = tf.cast(tf.floor(tf.cast(strided, tf.float64) * trim_fraction), tf.int32)
    trims = tf.random.stateless_uniform([2], seed, 0, max_trim + 1, dtype=tf.int32)
    start = tf.minimum(trims[0], tf.maximum(strided - 1, 0))
    end = tf.maximum(strided - trims[1], start + 1)
  num_valid = tf.minimum(end - start, max_frames)
  indices = stride * (start + tf.range(num_valid))
  features['frames_jpeg'] = tf.gather(features['frames_jpeg'], indices)[None]
  features['num_valid'] = num_valid
  return features


@SAMPLERS.register('all_frames')
def all_frames(features: Features, data, *, train: bool, seed: Optional[tf.Tensor]) -> Features:
  return sample_all_frames(features, data.num_frames, train=train, seed=seed,
                           stride=data.frame_stride, trim_fraction=data.all_frames_trim_fraction)


def pad_frames(features: Features, max_frames: int) -> Features:
  """Pads decoded (V, T, H, W, C) clips with zero frames to T = `max_frames`.

  Adds 'frame_mask' (max_frames,) bool, True for the `num_valid` real frames.
  """
  video = features['video']
  num_valid = tf.shape(video)[1]
  padding = [[0, 0], [0, max_frames - num_valid], [0, 0], [0, 0], [0, 0]]
  padded = tf.pad(video, padding)
  static = video.shape.as_list()
  padded.set_shape([static[0], max_frames] + static[2:])
  features['video'] = padded
  features['frame_mask'] = tf.range(max_frames) < num_valid
  features['num_valid'] = num_valid
  return features


def clip_span(data_config, fps: float) -> Optional[int]:
  """The fewest frames of a video at `fps` from which a test clip takes what it takes from a
  long video (TSN: distinct frames); fewer, and it loops, repeats or squeezes them. None for
  all_frames, whose clips take the frames there are."""
  sampling, frames, stride = (data_config.temporal_sampling, data_config.num_frames,
                              data_config.frame_stride)
  if sampling == 'dense':
    return dense_span(frames, stride)
  if sampling == 'pyslowfast':  # its last index is floor(length - 1), length in native frames
    # The rate as the sampler sees it: a float32 feature, widened to float64.
    rate = float(np.float32(fps)) if fps > 0 else data_config.target_fps
    return max(1, math.floor(pyslowfast_length(frames, stride, rate, data_config.target_fps)))
  if sampling == 'tsn':
    return frames
  return None


def clip_reach(data_config) -> Optional[int]:
  """The most frames from a video's start that its test clip takes from: all_frames takes the
  first num_frames x frame_stride and nothing after them; None for the samplers that spread
  their clips over the whole video."""
  if ops.pads_frames(data_config):
    return data_config.num_frames * data_config.frame_stride
  return None


# The share of a video's frames past a clip's reach that goes unsaid: a 10 s Kinetics clip at
# 30 fps often decodes to 301 frames against the S2DNet recipes' reach of 300.
UNSEEN_TOLERANCE = 0.05


def misses_frames(data_config, frames: int) -> bool:
  """Whether the test clip of `frames` frames leaves more than UNSEEN_TOLERANCE of them unseen
  (past `clip_reach`)."""
  reach = clip_reach(data_config)
  return reach is not None and frames - reach > UNSEEN_TOLERANCE * frames


def check(data_config, *, train: bool) -> None:
  """Fails, before any reading, on an unknown sampler or one the config cannot use."""
  SAMPLERS.get(data_config.temporal_sampling)
  if data_config.temporal_sampling == 'pyslowfast' and data_config.target_fps <= 0:
    raise errors.SettingError(
        "config.data.target_fps must be positive for temporal_sampling='pyslowfast', got "
        f'{data_config.target_fps}.')
  if not train and ops.pads_frames(data_config) and data_config.eval_num_clips != 1:
    raise ops.UnknownOpError(
        'temporal_sampling="all_frames" gives one temporal view per video: set '
        f'config.data.eval_num_clips=1 (got {data_config.eval_num_clips}).')


# What the check in `sample` says when a record holds no frame (data/pipeline.py reads it back).
NO_FRAMES = 'holds no frames'


def sample(features: Features, data_config, *, train: bool,
           seed: Optional[tf.Tensor] = None) -> Features:
  """The sampler named by `config.data.temporal_sampling` applied to one parsed video.

  A record without frames (other code wrote it: the converter fails such a video) fails here
  naming its file, instead of inside a sampler's gather."""
  has_frames = tf.debugging.Assert(tf.size(features['frames_jpeg']) > 0,
                                   [features.get('filename', ''), NO_FRAMES])
  with tf.control_dependencies([has_frames]):
    features = dict(features, frames_jpeg=tf.identity(features['frames_jpeg']))
  return SAMPLERS.get(data_config.temporal_sampling)(features, data_config, train=train,
                                                     seed=seed)
