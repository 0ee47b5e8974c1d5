r"""Input pipeline benchmark: train clips/s against a JPEG-decode ceiling and per-clip PyAV decoding.

  python -m data.bench --records=DIR [--split=train] [--videos=DIR] [--seconds=20]

Measures, in one run, 8x224x224 clips (stride 8) from records stored at short side 256:
  (a) clips_per_s          the train pipeline (data/pipeline.py train_dataset with the base config:
                           random dense clip, short-side jitter 256-320, random 224 crop, flip,
                           normalise, batch) on all CPU cores;
  (b) ceiling_clips_per_s  plain `tf.io.decode_jpeg` of the JPEG frames of the same kind of clips
                           (8 frames each, from the same records), held in memory and decoded in a
                           tight loop by one thread per core; the best of that and one thread;
  (c) pyav_clips_per_s     the same clips as (b) decoded straight from the source videos with PyAV
                           (open, seek, decode to the last frame needed, resize to short side 256,
                           crop 224), one process per core.
and `peak_rss_mib`, the peak resident memory of this process after (a) (TensorFlow included).
The last line is one JSON object with those four numbers. The source videos are found from the
conversion input recorded in metadata.json (override with --videos).
"""

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import threading
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_pipeline(records_dir: str, split: str, seconds: float, batch_size: int,
                   warmup_batches: int) -> Tuple[float, int]:
  """(a): clips/s of pipeline.train_dataset; returns (clips/s, clips timed)."""
  from configs import base  # pylint: disable=g-import-not-at-top
  from data import datasets  # pylint: disable=g-import-not-at-top
  from data import pipeline  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  metadata = records.read_metadata(records_dir)
  if metadata.name not in datasets.REGISTRY:
    datasets.register(datasets.DatasetInfo(name=metadata.name, num_classes=metadata.num_classes,
                                           split_sizes=metadata.split_sizes))
  config = base.get_base_config()
  config.dataset.name = metadata.name
  config.dataset.data_dir = records_dir
  config.dataset.train_split = split
  config.data.num_frames = 8
  config.data.frame_stride = 8
  config.data.crop_size = 224
  config.batch_size = batch_size
  ds = pipeline.train_dataset(config, seed=0, process_index=0, process_count=1)
  iterator = iter(ds)
  for _ in range(warmup_batches):
    next(iterator)
  clips, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    batch = next(iterator)
    clips += int(batch['video'].shape[0])
  elapsed = time.perf_counter() - start
  assert tuple(batch['video'].shape[1:]) == (8, 224, 224, 3), batch['video'].shape
  return clips / elapsed, clips


def sample_clips(records_dir: str, split: str, num_clips: int, seed: int = 0
                 ) -> Tuple[List[Dict], Dict[str, List[bytes]]]:
  """A fixed list of dense clips (8 frames, stride 8; short videos loop) over the split's videos.

  Returns (clips: {'filename', 'fps', 'num_frames', 'indices'}, JPEGs of each clip's frames).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  metadata = records.read_metadata(records_dir)
  videos = []
  for path in records.shard_files(records_dir, metadata.name, split):
    for serialized in tf.data.TFRecordDataset(path):
      features = records.parse_video(serialized)
      videos.append((features['filename'].numpy().decode(), float(features['fps'].numpy()),
                     list(features['frames_jpeg'].numpy())))
  rng = random.Random(seed)
  clips, frames = [], {}
  for k in range(num_clips):
    filename, fps, jpegs = videos[k % len(videos)]
    count = len(jpegs)
    span = 7 * 8 + 1
    start = rng.randint(0, max(count - span, 0))
    indices = [(start + 8 * i) % count for i in range(8)]
    clips.append({'filename': filename, 'fps': fps, 'num_frames': count, 'indices': indices})
    frames[k] = [jpegs[i] for i in indices]
  return clips, frames


def bench_ceiling(frames: Dict[int, List[bytes]], seconds: float, threads: int) -> float:
  """(b): clips/s of tf.io.decode_jpeg over the clips' frames, `threads` tight loops."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  clips = [[tf.constant(b) for b in frames[k]] for k in sorted(frames)]
  for jpeg in clips[0]:
    tf.io.decode_jpeg(jpeg, channels=3)
  counts = [0] * threads
  stop = time.perf_counter() + seconds

  def loop(worker: int):
    k = worker
    while time.perf_counter() < stop:
      for jpeg in clips[k % len(clips)]:
        tf.io.decode_jpeg(jpeg, channels=3)
      counts[worker] += 1
      k += threads

  start = time.perf_counter()
  workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
  for w in workers:
    w.start()
  for w in workers:
    w.join()
  return sum(counts) / (time.perf_counter() - start)


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
    rate = fps or float(stream.average_rate or 25)
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


def bench_pyav(clips: Sequence[Dict], video_root: str, seconds: float, processes: int) -> float:
  """(c): clips/s decoding the clips from their source videos, `processes` worker processes."""
  tasks = [(os.path.join(video_root, c['filename']), c['fps'], c['indices'], 256, 224)
           for c in clips]
  missing = [t[0] for t in tasks if not os.path.exists(t[0])]
  if missing:
    raise FileNotFoundError(f'Source videos not found (pass --videos): {missing[:3]}')
  with multiprocessing.get_context('spawn').Pool(processes) as pool:
    pool.map(decode_clip_pyav, tasks[:processes])  # start the workers, import PyAV
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      for shape in pool.imap_unordered(decode_clip_pyav, tasks, chunksize=1):
        assert shape == (8, 224, 224, 3), shape
        done += 1
        if time.perf_counter() - start >= seconds:
          break
    elapsed = time.perf_counter() - start
    pool.terminate()
  return done / elapsed


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m data.bench', description=__doc__.split('\n')[0])
  parser.add_argument('--records', required=True, help='records directory (short side 256)')
  parser.add_argument('--split', default='train')
  parser.add_argument('--videos', default='', help='root of the source videos (default: the '
                      'conversion input in metadata.json)')
  parser.add_argument('--seconds', type=float, default=20.0, help='timed seconds per measurement')
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--num_clips', type=int, default=256, help='clips in the (b)/(c) list')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  cores = os.cpu_count() or 1
  from data import records  # pylint: disable=g-import-not-at-top
  metadata = records.read_metadata(args.records)
  video_root = args.videos or metadata.extra.get('conversion', {}).get(args.split, {}).get('input')
  if not video_root:
    parser.error('--videos is needed: metadata.json does not say where the source videos are.')
  short = metadata.extra.get('conversion', {}).get(args.split, {}).get('settings', {}).get(
      'short_side')
  print(f'records {args.records} ({metadata.name}/{args.split}, short side {short}), '
        f'{cores} CPU cores, {args.seconds:.0f}s per measurement', flush=True)

  clips_per_s, timed = bench_pipeline(args.records, args.split, args.seconds, args.batch_size,
                                      warmup_batches=4)
  peak_rss = _peak_rss_mib()
  print(f'(a) train pipeline: {clips_per_s:.1f} clips/s ({timed} clips, batch '
        f'{args.batch_size}); peak RSS {peak_rss:.0f} MiB', flush=True)

  clips, frames = sample_clips(args.records, args.split, args.num_clips)
  single = bench_ceiling(frames, args.seconds / 2, 1)
  threaded = bench_ceiling(frames, args.seconds / 2, cores)
  ceiling = max(single, threaded)
  print(f'(b) tf.io.decode_jpeg ceiling: {ceiling:.1f} clips/s (1 thread {single:.1f}, '
        f'{cores} threads {threaded:.1f})', flush=True)

  pyav = bench_pyav(clips, video_root, args.seconds, cores)
  print(f'(c) PyAV from source videos: {pyav:.1f} clips/s ({cores} processes)', flush=True)
  print(f'(a)/(b) = {clips_per_s / ceiling:.2f} (target >= 0.70); (a)/(c) = '
        f'{clips_per_s / max(pyav, 1e-9):.1f}x (target >= 5x); peak RSS {peak_rss:.0f} MiB '
        '(target < 2048)', flush=True)
  print(json.dumps({'clips_per_s': round(clips_per_s, 2),
                    'ceiling_clips_per_s': round(ceiling, 2),
                    'pyav_clips_per_s': round(pyav, 2),
                    'peak_rss_mib': round(peak_rss, 1)}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
