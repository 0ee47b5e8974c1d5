r"""Input pipeline benchmark: train clips/s against a JPEG-decode ceiling and per-clip PyAV decoding.

  python -m data.bench --records=DIR [--split=train] [--videos=DIR] [--seconds=8] [--rounds=3]

Measures, in one run, 8x224x224 clips (stride 8) from records stored at short side 256:
  (a) clips_per_s          the train pipeline (data/pipeline.py train_dataset with the base config:
                           random dense clip, short-side jitter 256-320, random 224 crop, flip,
                           batch of uint8 clips) on all CPU cores. What the base config runs in
                           the train step on the accelerator is not in (a): the normalisation and,
                           for crop windows smaller than 224 (short sides above 256), the resize
                           and flip (`python -m salinet_jax.bench --mode=inputs` measures them);
  (b) ceiling_clips_per_s  plain JPEG decoding (`records.decode_frame`) of the frames of the same
                           kind of clips (8 frames each, from the same records), held in memory,
                           in a tight single-threaded loop by one process per core (the 1-process
                           figure is printed too); no crop, resize, normalisation or batching;
  (c) pyav_clips_per_s     the same clips as (b) decoded straight from the source videos with PyAV
                           (open, seek, decode to the last frame needed, resize to short side 256,
                           crop 224), one process per core.
and `peak_rss_mib`, the peak resident memory of this process, which runs (a) (TensorFlow included;
(b) and (c) run in worker processes). The three are measured in alternating rounds and the best
round of each is reported, so a load spike from other users of a shared machine hurts none of them
more than the others. The last line is one JSON object with those four numbers. The source videos are found from the
conversion input recorded in metadata.json (override with --videos).
"""

import argparse
import collections
import json
import multiprocessing
import os
import random
import sys
import time
from typing import Dict, List, Sequence, Tuple

import data
from data import errors

# pylint: disable=g-import-not-at-top,wrong-import-position
with errors.ctrl_c_while_starting(__name__):  # numpy's, and the converter's through its package
  import numpy as np

  from data import host_malloc
  from data.convert.cli import in_range


def sample_clips(records_dir: str, split: str, num_clips: int, seed: int = 0
                 ) -> Tuple[List[Dict], Dict[int, List[bytes]]]:
  """A fixed list of dense clips (8 frames, stride 8; short videos loop) over the split's videos.

  Clip k comes from video k mod (number of videos) at a seeded random start. Returns
  (clips: {'filename', 'fps', 'num_frames', 'indices'}, JPEGs of each clip's 8 frames).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  metadata = records.read_metadata(records_dir)
  num_videos = metadata.split_sizes[split]
  rng = random.Random(seed)
  starts = [rng.random() for _ in range(num_clips)]
  clips, frames = {}, {}
  video = 0
  for path in records.shard_files(records_dir, metadata.name, split):
    for serialized in tf.data.TFRecordDataset(path):
      features = records.parse_video(serialized)
      jpegs = features['frames_jpeg'].numpy()
      count = len(jpegs)
      if not count:
        raise errors.DataError(
            f'{path} holds a video without frames ({features["filename"].numpy().decode()}): '
            'records written by other code? Convert the split again.')
      for k in range(video, num_clips, num_videos):
        start = int(starts[k] * (max(count - (7 * 8 + 1), 0) + 1))
        indices = [(start + 8 * i) % count for i in range(8)]
        clips[k] = {'filename': features['filename'].numpy().decode(),
                    'fps': float(features['fps'].numpy()), 'num_frames': count,
                    'indices': indices}
        frames[k] = [bytes(jpegs[i]) for i in indices]
      video += 1
  return [clips[k] for k in sorted(clips)], frames


_WORKER_CLIPS = []


def _ceiling_init(clips: List[List[bytes]], everyone_ready) -> None:
  data.quiet_tensorflow()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_inter_op_parallelism_threads(1)
  tf.config.threading.set_intra_op_parallelism_threads(1)
  _WORKER_CLIPS[:] = [[tf.constant(b) for b in clip] for clip in clips]
  for jpeg in _WORKER_CLIPS[0]:
    records.decode_frame(jpeg)
  everyone_ready.wait()


def _started(_) -> int:
  return os.getpid()


def _decode_loop(args: Tuple[int, float, float]) -> Tuple[int, float]:
  """A tight single-threaded loop of records.decode_frame over this worker's share of the clips
  from `start_at` (a time.time() instant, so every worker times the same window)."""
  from data import records  # pylint: disable=g-import-not-at-top
  offset, start_at, seconds = args
  while time.time() < start_at:
    time.sleep(0.0005)
  count, k, end = 0, offset, start_at + seconds
  while time.time() < end:
    for jpeg in _WORKER_CLIPS[k % len(_WORKER_CLIPS)]:
      records.decode_frame(jpeg)
    count += 1
    k += 1
  return count, time.time() - start_at


class Ceiling:
  """(b): `processes` worker processes (not threads: no GIL), each a tight single-threaded
  records.decode_frame loop over the clips' frames held in memory; no crop/resize/batching."""

  def __init__(self, frames: Dict[int, List[bytes]], processes: int):
    clips = [frames[k] for k in sorted(frames)]
    self.processes = processes
    context = multiprocessing.get_context('spawn')
    # Each worker imports TensorFlow first (seconds): a round timed before all had started
    # counted nothing in those that had not (round 1 read 0 clips/s).
    self._pool = context.Pool(processes, _ceiling_init, (clips, context.Barrier(processes)))
    self._pool.map(_started, range(processes), chunksize=1)

  def run(self, seconds: float, processes: int) -> float:
    start_at = time.time() + 0.5
    results = self._pool.map(_decode_loop, [(i * 7919, start_at, seconds)
                                            for i in range(processes)], chunksize=1)
    return sum(count for count, _ in results) / max(elapsed for _, elapsed in results)

  def close(self):
    self._pool.terminate()


def decode_clip_pyav(task: Tuple[str, float, Sequence[int], int, int]) -> Tuple[int, ...]:
  """(c) worker: decodes one clip's frames from the source video with PyAV.

  Seeks to the first needed frame (by time), decodes to the last one, resizes each kept frame
  to short side 256 and cuts a centre 224 crop. Frame k is the k-th frame in presentation order.
  """
  import av  # pylint: disable=g-import-not-at-top
  from data import video_io  # pylint: disable=g-import-not-at-top
  path, fps, indices, short_side, crop = task
  wanted = sorted(set(indices))
  with av.open(path) as container:
    stream = container.streams.video[0]
    rate = fps or float(stream.average_rate or video_io.ASSUMED_FPS)
    first = wanted[0]
    start_time = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    if first > 0:
      target = start_time + (first - 0.5) / rate
      container.seek(int(target / stream.time_base), stream=stream, backward=True,
                     any_frame=False)
    out = {}
    for frame in container.decode(stream):
      index = int(round((frame.time - start_time) * rate)) if frame.time is not None else 0
      if index in wanted and index not in out:
        width, height = video_io.output_size(frame.width, frame.height, short_side)
        rgb = frame.to_ndarray(format='rgb24', width=width, height=height,
                               interpolation=video_io.DEFAULT_INTERPOLATION)
        rgb = video_io.upright(rgb, video_io.clockwise_rotation(frame, stream))
        y0, x0 = (rgb.shape[0] - crop) // 2, (rgb.shape[1] - crop) // 2
        out[index] = np.ascontiguousarray(rgb[y0:y0 + crop, x0:x0 + crop])
      if index >= wanted[-1]:
        break
  clip = np.stack([out.get(i, next(iter(out.values()))) for i in indices]) if out else None
  return clip.shape if clip is not None else (0,)


class PyAV:
  """(c): the clips decoded from their source videos, one process per core."""

  def __init__(self, clips: Sequence[Dict], video_root: str, processes: int):
    self.tasks = [(os.path.join(video_root, c['filename']), c['fps'], c['indices'], 256, 224)
                  for c in clips]
    self._pool = multiprocessing.get_context('spawn').Pool(processes)
    self._pool.map(decode_clip_pyav, self.tasks[:processes])  # start workers, import PyAV
    self._next = 0

  def run(self, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      batch = [self.tasks[(self._next + i) % len(self.tasks)] for i in range(8)]
      self._next += 8
      for shape in self._pool.imap_unordered(decode_clip_pyav, batch):
        assert shape == (8, 224, 224, 3), shape
        done += 1
    return done / (time.perf_counter() - start)

  def close(self):
    self._pool.terminate()


class Pipeline:
  """(a): pipeline.train_dataset with the base config at 8x224x224, stride 8."""

  def __init__(self, records_dir: str, split: str, batch_size: int):
    from configs import base  # pylint: disable=g-import-not-at-top
    from data import pipeline  # pylint: disable=g-import-not-at-top
    from data import records  # pylint: disable=g-import-not-at-top
    metadata = records.read_metadata(records_dir)
    config = base.get_base_config()
    config.dataset.name = metadata.name
    config.dataset.data_dir = records_dir
    config.dataset.train_split = split
    config.data.num_frames = 8
    config.data.frame_stride = 8
    config.data.crop_size = 224
    config.batch_size = batch_size
    self._iterator = iter(pipeline.train_dataset(config, seed=0, process_index=0,
                                                 process_count=1))
    for _ in range(4):
      next(self._iterator)

  def run(self, seconds: float) -> float:
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      batch = next(self._iterator)
      clips += int(batch['video'].shape[0])
    assert tuple(batch['video'].shape[1:]) == (8, 224, 224, 3), batch['video'].shape
    return clips / (time.perf_counter() - start)


def short_side_warning(short_side) -> str:
  """A line when the records' frames are not stored at short side 256: (a) and (b) then decode
  frames of another size than (c) decodes and resizes the sources to, and the ratios' targets
  do not hold for them."""
  if short_side == 256:
    return ''
  stored = {0: 'their original size', None: 'an unknown size'}.get(short_side,
                                                                    f'short side {short_side}')
  return (f'the records store frames at {stored}, not short side 256: (a) and '
          '(b) decode those while (c) decodes the sources to 256, so (a)/(b) and (a)/(c) do not '
          'compare with their targets; measure records converted with --short_side=256.')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m data.bench', description=__doc__.split('\n')[0])
  parser.add_argument('--records', required=True, type=errors.path_argument,
                      help='records directory (short side 256)')
  parser.add_argument('--split', default='train')
  parser.add_argument('--videos', default='', type=errors.path_argument,
                      help='root of the source videos (default: the conversion input in '
                      'metadata.json)')
  parser.add_argument('--seconds', type=in_range(float, 0.1), default=8.0,
                      help='timed seconds per measurement')
  parser.add_argument('--rounds', type=in_range(int, 1), default=3, help='rounds of (a), (b), '
                      '(c); the best round of each counts (the machine may be shared)')
  parser.add_argument('--batch_size', type=in_range(int, 1), default=8)
  parser.add_argument('--num_clips', type=in_range(int, 1), default=256,
                      help='clips in the (b)/(c) list')
  args = parser.parse_args(argv)
  data.quiet_tensorflow()
  try:
    return _measure(args, parser)
  except errors.DataError as e:  # missing or corrupt records: one line
    print(f'error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:  # asked for: one line
    print('Interrupted by Ctrl-C. Exit status 130.', file=sys.stderr)
    return 130


def _measure(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
  """The rounds of (a), (b) and (c) on `args`' records, printed; returns the exit status."""
  cores = os.cpu_count() or 1
  from data import records  # pylint: disable=g-import-not-at-top
  metadata = records.read_metadata(args.records)
  if not metadata.split_sizes.get(args.split):
    records.check_not_being_written(args.records, args.split)  # converted for the first time
    raise errors.DataError(
        f'The records in {args.records} hold no video of split {args.split!r} (their splits: '
        + ', '.join(f'{split} {size}' for split, size in sorted(metadata.split_sizes.items()))
        + '): pass --split=NAME.')
  video_root = args.videos or metadata.extra.get('conversion', {}).get(args.split, {}).get('input')
  if not video_root:
    parser.error('--videos is needed: metadata.json does not say where the source videos are.')
  short = metadata.extra.get('conversion', {}).get(args.split, {}).get('settings', {}).get(
      'short_side')
  print(f'records {args.records} ({metadata.name}/{args.split}, short side {short}), '
        f'{cores} CPU cores, {args.seconds:g} s per measurement', flush=True)
  warning = short_side_warning(short)
  if warning:
    print(f'warning: {warning}', flush=True)

  clips, frames = sample_clips(args.records, args.split, args.num_clips)
  missing = list(dict.fromkeys(c['filename'] for c in clips
                               if not os.path.exists(os.path.join(video_root, c['filename']))))
  if missing:
    raise errors.DataError(f'{len(missing)} source videos of the sampled clips are not under '
                           f'{video_root} (e.g. {missing[0]}): pass --videos=DIR, the folder '
                           'they were converted from.')
  pipe = Pipeline(args.records, args.split, args.batch_size)
  ceiling = Ceiling(frames, cores)
  pyav = PyAV(clips, video_root, cores)
  rounds = collections.defaultdict(list)
  try:
    for r in range(args.rounds):
      rounds['a'].append(pipe.run(args.seconds))
      rounds['b'].append(ceiling.run(args.seconds, cores))
      rounds['b1'].append(ceiling.run(args.seconds, 1))
      rounds['c'].append(pyav.run(args.seconds))
      print(f'round {r + 1}/{args.rounds}: (a) {rounds["a"][-1]:.1f}  (b) {rounds["b"][-1]:.1f} '
            f'(1 process {rounds["b1"][-1]:.1f})  (c) {rounds["c"][-1]:.1f} clips/s', flush=True)
  finally:
    ceiling.close()
    pyav.close()
  peak_rss = host_malloc.peak_rss_mib()
  clips_per_s, ceiling_cps, pyav_cps = max(rounds['a']), max(rounds['b']), max(rounds['c'])
  print(f'(a) train pipeline:            {clips_per_s:.1f} clips/s (best of {args.rounds} '
        f'rounds, batch {args.batch_size}); peak RSS {peak_rss:.0f} MiB')
  print('    its accelerator part (jitted resize of unresized crops, flip, normalisation) is '
        'not in (a): python -m salinet_jax.bench --mode=inputs measures it')
  print(f'(b) JPEG decoding ceiling:     {ceiling_cps:.1f} clips/s on {cores} processes '
        f'({max(rounds["b1"]):.1f} on 1)')
  print(f'(c) PyAV from source videos:   {pyav_cps:.1f} clips/s on {cores} processes')
  print(f'(a)/(b) = {clips_per_s / ceiling_cps:.2f} (target >= 0.70; against 1 process '
        f'{clips_per_s / max(rounds["b1"]):.2f}); (a)/(c) = {clips_per_s / pyav_cps:.1f}x '
        f'(target >= 5x); peak RSS {peak_rss:.0f} MiB (target < 2048)', flush=True)
  print(json.dumps({'clips_per_s': round(clips_per_s, 2),
                    'ceiling_clips_per_s': round(ceiling_cps, 2),
                    'pyav_clips_per_s': round(pyav_cps, 2),
                    'peak_rss_mib': round(peak_rss, 1)}))
  return 0


if __name__ == '__main__':
  with errors.ctrl_c_while_ending(), errors.sigterm_in_one_line():
    sys.exit(main())
