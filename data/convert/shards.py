"""Writing the shards: cutting splits into shards, resuming, and the pool of decoder processes.

Each split is shuffled (seeded) and cut into `ShardJob`s. A shard is written under a hidden
temporary name and renamed when complete; its bookkeeping (fingerprint of everything that changes
its bytes, videos, failures, byte size) goes to OUTPUT/.convert/<shard>.json, so a re-run with the
same arguments skips finished shards. Decoding (data/video_io.py) runs in spawned worker
processes; a worker that dies is retried alone, so only the culprit video is reported.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence

from data import errors as data_errors
from data import video_io
from data.convert.plans import Item, Plan

# Per finished shard, the videos it holds and how they were converted: what a rerun resumes from,
# and what data.report lists per video.
STATE_DIR = '.convert'


def _decode_options(args, item: Item) -> Dict[str, Any]:
  if item.kind == 'frames':
    return dict(num_frames=item.num_frames, template=args.frame_template,
                start_index=args.frame_start, short_side=args.short_side,
                frame_height=args.frame_height, jpeg_quality=args.jpeg_quality,
                fps=args.frames_fps, max_frames=args.max_frames)
  return dict(fps=args.fps or None, short_side=args.short_side, frame_height=args.frame_height,
              jpeg_quality=args.jpeg_quality, max_frames=args.max_frames,
              interpolation=args.interpolation,
              threads=args.decode_threads, clip_seconds=item.clip_seconds)


def settings_of(args) -> Dict[str, Any]:
  """Everything that changes the bytes of the records (part of each split's fingerprint)."""
  settings = dict(fps=args.fps, short_side=args.short_side, jpeg_quality=args.jpeg_quality,
                  max_frames=args.max_frames, interpolation=args.interpolation,
                  frame_template=args.frame_template, frame_start=args.frame_start,
                  frames_fps=args.frames_fps, shuffle_seed=args.shuffle_seed)
  if args.frame_height:  # only then: the fingerprints of records converted before it stay
    settings['frame_height'] = args.frame_height
  return settings


@dataclasses.dataclass
class ShardJob:
  """One shard to write: where it goes, its videos, and the fingerprint a re-run compares."""
  split: str
  index: int
  num_shards: int
  path: str
  items: List[Item]
  fingerprint: str


def _source_states(job: ShardJob) -> Dict[str, List[int]]:
  """{source: [size, modification time]} of a shard's videos, kept in its bookkeeping so that a
  re-run converts a file replaced under its name again. A frame folder's are its own, which its
  entries' comings and goings set: frames rewritten in place under the same names go unseen."""
  states = {}
  for item in job.items:
    if item.source:
      try:
        stat = os.stat(item.source)
        states[item.source] = [stat.st_size, stat.st_mtime_ns]
      except OSError:
        states[item.source] = [0, 0]
  return states


def _fingerprint(plan: Plan, split: str, items: Sequence[Item], settings: Dict[str, Any],
                 index: int, num_shards: int) -> str:
  text = json.dumps([plan.name, list(plan.classes), split, index, num_shards, settings,
                     [(i.filename, i.label_index, i.source, i.kind, i.num_frames)
                      + ((i.clip_seconds,) if i.clip_seconds else ()) for i in items]],
                    sort_keys=True)
  return hashlib.sha1(text.encode()).hexdigest()


def shard_jobs(plan: Plan, args, output: str) -> List[ShardJob]:
  """Orders each split (seeded shuffle) and cuts it into shards of --videos_per_shard. Shards are
  counted by the videos found (a partial copy of a dataset gets as many as it fills), and cut
  from the whole ordered list, so that a missing video found later changes its shard alone
  (until the count of found videos crosses a multiple of --videos_per_shard)."""
  from data import records  # pylint: disable=g-import-not-at-top
  settings = settings_of(args)
  jobs = []
  for split in sorted(plan.splits):
    items = list(plan.splits[split])
    if args.shuffle_seed >= 0:
      random.Random(f'{args.shuffle_seed}-{split}').shuffle(items)
    found = sum(1 for item in items if not item.missing)
    if args.num_shards > 0:
      num_shards = min(args.num_shards, max(1, found))
    else:
      num_shards = max(1, -(-found // max(1, args.videos_per_shard)))
    for index in range(num_shards):
      part = items[index * len(items) // num_shards:(index + 1) * len(items) // num_shards]
      path = records.shard_path(output, plan.name, split, index, num_shards)
      jobs.append(ShardJob(split, index, num_shards, path, part,
                           _fingerprint(plan, split, part, settings, index, num_shards)))
  return jobs


def _temporary_path(shard_path: str) -> str:
  """Where a shard is written before its rename: hidden, so no shard glob ever matches it."""
  return os.path.join(os.path.dirname(shard_path), f'.{os.path.basename(shard_path)}.incomplete')


def _state_path(output: str, shard_path: str) -> str:
  return os.path.join(output, STATE_DIR, os.path.basename(shard_path) + '.json')


def _read_state(output: str, job: ShardJob) -> Optional[Dict[str, Any]]:
  """The bookkeeping of a finished shard, or None when it must be (re)written."""
  path = _state_path(output, job.path)
  if not (os.path.exists(job.path) and os.path.exists(path)):
    return None
  try:
    with open(path) as f:
      state = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  if state.get('fingerprint') != job.fingerprint:
    return None
  if os.path.getsize(job.path) != state.get('num_bytes'):
    return None
  # Bookkeeping written before sources were kept is taken as it is (their files unknown).
  if 'sources' in state and state['sources'] != _source_states(job):
    return None
  return state


def recorded_videos(output: str, shard_file: str) -> Optional[List[Dict[str, Any]]]:
  """The videos the bookkeeping of shard `shard_file` (a basename) in `output` lists; None where
  it is gone or unreadable."""
  try:
    with open(_state_path(output, shard_file)) as f:
      return list(json.load(f)['videos'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _write_json(path: str, value: Any) -> None:
  with data_errors.replacing(path) as f:
    json.dump(value, f, indent=1)


class _Runner:
  """Runs `video_io.convert_task` over tasks, in order, in a process pool (or inline)."""

  def __init__(self, workers: int):
    self.workers = workers
    self._pool = None

  def _new_pool(self, workers: int):
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context('spawn'),
        initializer=data_errors.end_with_parent, initargs=(os.getpid(),))

  def map(self, tasks: Iterator[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
    if self.workers <= 1:
      for task in tasks:
        yield video_io.convert_task(task)
      return
    window = collections.deque()
    self._pool = self._new_pool(self.workers)
    try:
      tasks = iter(tasks)
      exhausted = False
      while True:
        while not exhausted and len(window) < 4 * self.workers:
          task = next(tasks, None)
          if task is None:
            exhausted = True
            break
          window.append((task, self._pool.submit(video_io.convert_task, task)))
        if not window:
          return
        task, future = window.popleft()
        try:
          yield future.result()
        except concurrent.futures.process.BrokenProcessPool:
          # A worker died (segfault, OOM kill). Retry every unfinished task alone in a fresh
          # process so only the culprit is reported, then carry on with a new pool.
          pending = [task] + [t for t, _ in window]
          window.clear()
          self._pool.shutdown(wait=False, cancel_futures=True)
          for retry in pending:
            yield self._run_isolated(retry)
          self._pool = self._new_pool(self.workers)
    finally:
      self._pool.shutdown(wait=True, cancel_futures=True)

  def _run_isolated(self, task):
    pool = self._new_pool(1)
    try:
      return pool.submit(video_io.convert_task, task).result()
    except concurrent.futures.process.BrokenProcessPool:
      return {'index': task['index'], 'ok': False, 'jpegs': [], 'fps': 0.0,
              'reason': 'decoder process crashed (killed or segmentation fault)'}
    finally:
      pool.shutdown(wait=True)


def run_jobs(jobs: Sequence[ShardJob], args, output: str) -> Dict[str, Dict[str, Any]]:
  """Writes every unfinished shard; returns the state of every shard by path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  states = {}
  todo = []
  for job in jobs:
    state = _read_state(output, job)
    if state is None:
      todo.append(job)
    else:
      states[job.path] = state
  skipped = len(jobs) - len(todo)
  if skipped:
    print(f'Resuming: {skipped} of {len(jobs)} shards already written, skipped.', file=sys.stderr)
  for job in jobs:  # leftovers of an interrupted run
    if os.path.exists(_temporary_path(job.path)):
      os.remove(_temporary_path(job.path))

  def tasks():
    for shard_number, job in enumerate(todo):
      for position, item in enumerate(job.items):
        task = {'index': (shard_number, position), 'source': item.source, 'kind': item.kind,
                'options': _decode_options(args, item)}
        if item.missing:
          task['missing'] = item.missing
        yield task

  total = sum(len(job.items) for job in todo)
  failures_so_far = 0
  results = _Runner(args.workers).map(tasks())
  with tqdm(total=total, unit='video', desc=f'convert {len(todo)} shards', file=sys.stderr,
            disable=args.quiet or total == 0, dynamic_ncols=True) as progress:
    for job in todo:
      tmp = _temporary_path(job.path)
      failures, videos = [], []
      with data_errors.writing(job.path, tmp), tf.io.TFRecordWriter(tmp) as writer:
        for item in job.items:
          result = next(results)
          if result['ok']:
            writer.write(records.serialize_video(result['jpegs'], item.label_index,
                                                 item.label_text, item.filename, result['fps'],
                                                 timing=result['timing'],
                                                 stream_clock=result.get('stream_clock')))
            videos.append({'filename': item.filename, 'source': os.path.realpath(item.source),
                           'label': item.label_index,
                           'num_frames': len(result['jpegs']), 'fps': round(result['fps'], 4),
                           'timing': result['timing'],
                           'stream_clock': result.get('stream_clock') is not None,
                           'source_fps': round(result['source_fps'], 4),
                           'source_frames': result['num_source_frames'],
                           'source_height': result['source_height'],
                           'source_width': result['source_width'],
                           'warnings': result['warnings']})
          else:
            failures.append({'split': job.split, 'file': item.filename,
                             'source': item.source, 'reason': result['reason']})
            failures_so_far += 1
          progress.update(1)
          progress.set_postfix(failures=failures_so_far, refresh=False)
      state = {'fingerprint': job.fingerprint, 'split': job.split, 'index': job.index,
               'num_shards': job.num_shards, 'num_videos': len(videos),
               'num_bytes': os.path.getsize(tmp), 'failures': failures, 'videos': videos,
               'sources': _source_states(job)}
      _write_json(_state_path(output, job.path), state)
      os.replace(tmp, job.path)
      states[job.path] = state
  results.close()  # shuts the worker pool down
  return states


def remove_stale_shards(output: str, plan: Plan, jobs: Sequence[ShardJob]) -> None:
  """Deletes shards of the converted splits that this plan does not produce (other shard counts)."""
  import glob  # pylint: disable=g-import-not-at-top
  wanted = {job.path for job in jobs}
  for split in plan.splits:
    for path in glob.glob(os.path.join(glob.escape(output),
                                       f'{plan.name}-{split}.tfrecord-*-of-*')):
      if path not in wanted:
        os.remove(path)
        state = _state_path(output, path)
        if os.path.exists(state):
          os.remove(state)
