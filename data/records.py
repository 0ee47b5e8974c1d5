"""The on-disk video record format: DMVR-compatible TFRecords plus a metadata json.

One `tf.train.SequenceExample` per video:
  context   `clip/label/index` (int64), `clip/label/text` (bytes), `video/filename` (bytes),
            `video/fps` (float), `video/num_frames` (int64)
  sequence  `image/encoded`: one JPEG per frame, in presentation order.
Shards of split S are named `<dataset>-<S>.tfrecord-<i:05d>-of-<n:05d>` (the TFDS convention) and sit
beside `metadata.json` (classes in their official order, videos per split, failures, schema version,
and per shard its video count and byte size, so a truncated shard is named before any reading).
A process writing the directory holds `.convert.lock` (`sole_writer`); readers refuse the splits
it writes.

TensorFlow Datasets: converted directories also hold TFDS's `dataset_info.json` and `features.json`
(`write_tfds_info`), so `tfds.builder_from_directory(DIR)` opens them: splits, shard lengths, sizes,
class names (`ClassLabel`) and the context features (`clip/label/index`, `clip/label/text`,
`video/filename`, `video/fps`, `video/num_frames`) load with `builder.as_dataset(split)`.
TFDS parses every record as a `tf.train.Example`, which cannot express the per-frame
`feature_lists` of a SequenceExample, so the frames are NOT TFDS features: `builder.as_dataset`
yields the context of each video only. `tfds_video_dataset(DIR, split)` reads the split's files as
the builder lists them and parses full videos (frames included) with this module's parser; the
training pipeline reads the same files (data/pipeline.py).
"""

import collections
import contextlib
import dataclasses
import datetime
import fcntl
import glob
import hashlib
import json
import os
import re
import socket
import time
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional,
                    Sequence)

import tensorflow as tf

from data import errors

SCHEMA_VERSION = 1
METADATA_FILE = 'metadata.json'
# flocked by the process writing the directory (data.convert, the synthetic data generator),
# which describes itself in it (writer_of)
WRITER_LOCK = '.convert.lock'
# How long a writer waits for a reader only looking at the lock, and a reader for a writer that
# has just taken it to describe itself.
_READER_LOOK_S = 2.0

IMAGE_KEY = 'image/encoded'
LABEL_INDEX_KEY = 'clip/label/index'
LABEL_TEXT_KEY = 'clip/label/text'
FILENAME_KEY = 'video/filename'
FPS_KEY = 'video/fps'
NUM_FRAMES_KEY = 'video/num_frames'
# What timed the frames at conversion: 'container' (presentation timestamps) or 'decoder_order'
# (index / frame rate, where the container's timestamps were missing or not monotonic).
TIMING_KEY = 'video/timing'
# PySlowFast's selective decoding picks an MP4's or AVI's clip frames by timestamp: where the
# converter's source declared its duration and frame count and timed every frame, they are
# stored (stream time base; video_io.StreamClock), each frame's timestamp beside its JPEG.
STREAM_DURATION_KEY = 'video/stream_duration'
STREAM_FRAMES_KEY = 'video/stream_frames'
PTS_KEY = 'image/pts'

TFDS_VERSION = '1.0.0'  # version written into dataset_info.json

# Stored frames are decoded with libjpeg's accurate integer inverse DCT, which reads them as
# Pillow does (the TSM and S2DNet references' frame loader). TensorFlow's default, the fast one,
# reads red and blue about 1.2 levels low; the accurate one takes about 15% longer.
JPEG_DCT_METHOD = 'INTEGER_ACCURATE'


@dataclasses.dataclass
class DatasetMetadata:
  """What a records directory holds; written by the converters, read by the pipeline."""
  name: str
  classes: List[str]
  split_sizes: Dict[str, int]
  num_shards: Dict[str, int]
  schema_version: int = SCHEMA_VERSION
  failures: List[Dict[str, str]] = dataclasses.field(default_factory=list)
  extra: Dict[str, object] = dataclasses.field(default_factory=dict)
  # Per split, one {'file': basename, 'num_videos': int, 'num_bytes': int} per shard, in order
  # (written by data.convert; empty for data written before it existed).
  shards: Dict[str, List[Dict[str, Any]]] = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    return len(self.classes)


class MissingRecordsError(errors.DataError, FileNotFoundError):
  """A records directory, its metadata.json or a split's shards are not there."""


class CorruptShardError(errors.DataError, ValueError):
  """A shard that is missing, truncated, corrupt or not the one the metadata describes."""


class RecordsBusyError(errors.DataError):
  """A records directory (or one of its splits) that another process is writing right now."""


def describe_writer(writer: Mapping[str, Any]) -> str:
  """'data.convert (pid 12 on host h, started ..., writing split(s) [...])' from writer_of."""
  if not writer:
    return (f'a process that names itself nowhere (one whose user may not write {WRITER_LOCK}, '
            'so it cannot say who it is)')
  return (f"{writer.get('by', 'another process')} (pid {writer.get('pid', '?')} on host "
          f"{writer.get('host', '?')}, started {writer.get('started', '?')}, writing split(s) "
          f"{writer.get('splits', '?')})")


class Writing(NamedTuple):
  """What `sole_writer` gives: whether to write at all, and whether a lock guards the writes."""
  needed: bool
  guarded: bool


@contextlib.contextmanager
def sole_writer(directory: str, splits: Iterable[str], by: str = 'data.convert',
                wait: bool = False, done: Callable[[], bool] = lambda: False) -> Iterator[Writing]:
  """Holds an exclusive flock on `directory/WRITER_LOCK` while process `by` writes `splits`.
  Gives `Writing`: not needed where `done()`, asked once the lock is held, says another writer
  did it meanwhile (the lock is then dropped at once, as no reader need wait); not guarded where
  no lock could be taken.

  A second writer of the folder is refused naming the first, or with `wait` waits for it to end:
  two conversions deleted each other's half-written shards, and two runs generating the
  synthetic data at once truncated each other's. Readers refuse the splits being written
  (check_not_being_written); a reader that starts first is not stopped (training checks its
  shards again before each save). The lock file holds the writer's description while it writes
  (not where its user may not write the file: the flock still holds). The kernel drops the flock
  when the process ends, however it ends, so a lock never goes stale; NFS grants it as a POSIX
  lock (on every host only where it is mounted with locking). Where the filesystem has no locks,
  writers go unguarded.
  """
  path = os.path.join(directory, WRITER_LOCK)
  try:
    fd, described = os.open(path, os.O_RDWR | os.O_CREAT, 0o644), True
  except OSError:
    try:  # another user's lock file, or an immutable one: an flock needs no write access
      fd, described = os.open(path, os.O_RDONLY), False
    except OSError:  # no lock file, and none can be made: a folder it cannot write at all
      yield Writing(needed=not done(), guarded=False)
      return
  try:
    locked = _lock(fd, directory, wait)
    finished = done()
    if locked and described and not finished:
      started = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
      os.ftruncate(fd, 0)  # a writer killed earlier left its description
      os.pwrite(fd, json.dumps({'by': by, 'pid': os.getpid(), 'host': socket.gethostname(),
                                'started': started, 'splits': sorted(splits)}).encode(), 0)
  except BaseException:
    os.close(fd)
    raise
  if finished:
    os.close(fd)  # another writer did it meanwhile: no reader need wait
    yield Writing(needed=False, guarded=locked)
    return
  try:
    yield Writing(needed=True, guarded=locked)
  finally:
    if locked and described:
      os.ftruncate(fd, 0)
    os.close(fd)  # drops the flock


def _lock(fd: int, directory: str, wait: bool) -> bool:
  """Takes the exclusive flock of sole_writer (False where the filesystem has none)."""
  deadline = time.monotonic() + _READER_LOOK_S
  while True:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
      return True
    except BlockingIOError:
      if time.monotonic() > deadline:
        raise RecordsBusyError(
            f'records folder {directory} is being written by '
            f'{describe_writer(_read_writer(fd))}: wait for it to end, or pass another --output '
            '(one conversion writes a folder at a time; --workers spreads it over the cores).'
        ) from None
      time.sleep(0.05)
    except OSError:
      return False


def _read_writer(fd: int) -> Dict[str, Any]:
  """The description a writer put into the lock file `fd` ({} before it has)."""
  try:
    writer = json.loads(os.pread(fd, 1 << 16, 0).decode('utf-8'))
  except (OSError, ValueError):
    return {}
  return writer if isinstance(writer, dict) else {}


def writer_of(directory: str) -> Optional[Dict[str, Any]]:
  """The description (by, pid, host, started, splits) of the process writing `directory` now,
  None where none is. Looks with a shared flock that it drops at once; gives a writer that has
  just taken the lock a moment to describe itself."""
  try:
    fd = os.open(os.path.join(directory, WRITER_LOCK), os.O_RDONLY)
  except OSError:
    return None
  try:
    deadline = time.monotonic() + _READER_LOOK_S
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
      except BlockingIOError:
        writer = _read_writer(fd)
        if writer or time.monotonic() > deadline:
          return writer
        time.sleep(0.05)
      except OSError:
        return None
  finally:
    os.close(fd)


def names_digest(names) -> str:
  """A short digest of a split's video names (order-free): two conversions with one digest hold
  the same videos. data.convert keeps it per split in `extra['names_digest']`."""
  return hashlib.sha256('\n'.join(sorted(names)).encode('utf-8')).hexdigest()[:16]


# Up to this many groups of a split are kept whole in an identity (a split by file has one
# group per video: Kinetics' 240k names would weigh megabytes in every checkpoint).
IDENTITY_MAX_GROUPS = 5000


def split_identity(metadata: DatasetMetadata, split: str,
                   with_groups: bool = True) -> Dict[str, Any]:
  """What tells one conversion of `split` from another, for a checkpoint to keep beside its
  weights: the split's name and number of videos, the digest of their names, the groups the
  converter put there (`with_groups`, up to IDENTITY_MAX_GROUPS) and its settings (None where
  the metadata does not say: records written before it kept them, synthetic clips)."""
  extra = metadata.extra
  groups = extra.get('groups', {}).get(split) if with_groups else None
  return {'split': split, 'videos': metadata.split_sizes.get(split),
          'names_digest': extra.get('names_digest', {}).get(split),
          'groups': groups if groups is not None and len(groups) <= IDENTITY_MAX_GROUPS else None,
          'settings': conversion_settings(metadata, split)}


def conversion_settings(metadata: DatasetMetadata, split: str) -> Optional[Dict[str, Any]]:
  """The converter's settings for `split` (fps, max_frames, short_side, ...); None where the
  metadata does not say (records written before it kept them, synthetic clips)."""
  return (metadata.extra.get('conversion', {}).get(split) or {}).get('settings')


def video_lengths(videos: Iterable[Mapping[str, Any]]) -> Optional[List[List[float]]]:
  """[[frames, fps, videos], ...] of the converter's bookkeeping entries `videos`, sorted: how
  many videos of each length and frame rate a split holds, for training and eval to say which
  ones a clip's span loops over or leaves partly unseen without reading the records; None where
  an entry does not keep its length."""
  counts = collections.Counter()
  for video in videos:
    if 'num_frames' not in video or 'fps' not in video:
      return None
    counts[(int(video['num_frames']), float(video['fps']))] += 1
  return [[frames, fps, count] for (frames, fps), count in sorted(counts.items())]


def split_lengths(metadata: DatasetMetadata, split: str) -> Optional[List[List[float]]]:
  """`video_lengths` of `split` as the converter kept them; None for records converted before
  it kept them, and for synthetic clips."""
  return metadata.extra.get('lengths', {}).get(split)


def stream_clocks(metadata: DatasetMetadata, split: str) -> Optional[int]:
  """How many videos of `split` were stored with their stream clock (video_io.StreamClock);
  None for records converted before clocks were stored."""
  return metadata.extra.get('stream_clocks', {}).get(split)


def shared_videos(metadata: DatasetMetadata, split: str, other: str) -> Optional[int]:
  """How many videos splits `split` and `other` both hold (by file name), as data.convert
  counted them; None where it could not (records converted before it counted, a split whose
  bookkeeping was gone)."""
  return metadata.extra.get('shared_videos', {}).get(split, {}).get(other)


def holds_other_videos(then: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
  """Whether two `split_identity`s of a split name other videos (the digests of their names
  differ); False where either does not know."""
  return bool(then.get('names_digest') and now.get('names_digest')
              and then['names_digest'] != now['names_digest'])


def split_changes(then: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
  """How two `split_identity`s of a split differ, one phrase per difference; what either side
  does not know is not compared."""
  known = lambda field: then.get(field) is not None and now.get(field) is not None  # noqa: E731
  changes = []
  if known('videos') and then['videos'] != now['videos']:
    changes.append(f"{then['videos']} videos then, {now['videos']} now")
  if holds_other_videos(then, now):
    changes.append('other videos' if not changes else 'and other videos')
  if known('groups') and sorted(then['groups']) != sorted(now['groups']):
    changes.append(f"groups {errors.first_few(sorted(then['groups']))} then, "
                   f"{errors.first_few(sorted(now['groups']))} now")
  if known('settings'):
    for name in sorted(set(then['settings']) | set(now['settings'])):
      before, after = then['settings'].get(name), now['settings'].get(name)
      if before != after:
        changes.append(f'converted with {name} {before!r} then, {after!r} now')
  return changes


# The conversion settings that change what a clip of the records spans: the rate its frames
# were resampled to (0: every native frame) and the cap on their number (0: none).
CLIP_SETTINGS = ('fps', 'max_frames')


def unlike_clip_settings(name: str, settings: Optional[Mapping[str, Any]], other: str,
                         others: Optional[Mapping[str, Any]]) -> str:
  """'NAME: fps native, max_frames 30; OTHER: fps 10, max_frames none' for the CLIP_SETTINGS
  that the conversion settings of two splits give differently; '' where they agree or either
  side does not know."""
  settings, others = settings or {}, others or {}
  differ = [field for field in CLIP_SETTINGS
            if field in settings and field in others and settings[field] != others[field]]
  if not differ:
    return ''
  said = {'fps': lambda v: f'{float(v):g}' if v else 'native',
          'max_frames': lambda v: str(int(v)) if v else 'none'}
  describe = lambda values: ', '.join(f'{f} {said[f](values[f])}' for f in differ)  # noqa: E731
  return f'{name}: {describe(settings)}; {other}: {describe(others)}'


def write_metadata(directory: str, metadata: DatasetMetadata) -> None:
  """Writes metadata.json atomically (a crash never leaves a half-written file)."""
  with errors.replacing(os.path.join(directory, METADATA_FILE)) as f:
    json.dump(dataclasses.asdict(metadata), f, indent=2)


def read_metadata(directory: str) -> DatasetMetadata:
  """Reads `directory/metadata.json`, failing with the path and reason if it is missing or bad
  (naming the conversion that writes it, where one still does)."""
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.exists(path):
    check_not_being_written(directory)  # a first conversion, still running: name it
    raise MissingRecordsError(
        f'No {METADATA_FILE} in records directory {directory!r}'
        + ('' if os.path.isdir(directory) else ' (the directory does not exist)')
        + ': convert the dataset first (python -m data.convert ...) or fix '
        'config.dataset.data_dir.')
  try:
    with open(path) as f:
      fields = json.load(f)
    metadata = DatasetMetadata(**fields)
  except (json.JSONDecodeError, TypeError) as e:
    raise CorruptShardError(f'Cannot read dataset metadata {path}: {e}') from None
  if metadata.schema_version != SCHEMA_VERSION:
    raise CorruptShardError(f'{path} has record schema version {metadata.schema_version}; this code reads '
                     f'version {SCHEMA_VERSION}: convert the dataset again.')
  for split, shards in sorted(metadata.shards.items()):
    if not shards or split not in metadata.split_sizes or any('num_videos' not in shard
                                                               for shard in shards):
      continue
    listed = sum(int(shard['num_videos']) for shard in shards)
    if listed != metadata.split_sizes[split]:
      raise CorruptShardError(
          f'{path} contradicts itself: split_sizes gives split {split!r} '
          f'{metadata.split_sizes[split]} videos, its shards list {listed} (edited by hand, or '
          'mixed from two conversions?): convert the split again.')
  return metadata


def shard_path(directory: str, dataset: str, split: str, index: int, num_shards: int) -> str:
  return os.path.join(directory, f'{dataset}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}')


def check_not_being_written(directory: str, split: Optional[str] = None) -> None:
  """Fails while another process writes split `split` of `directory` (any split, where None):
  its shards and bookkeeping are being replaced under a reader."""
  writer = writer_of(directory)
  if writer is None or (split is not None and split not in writer.get('splits', [split])):
    return
  what = (f'Split {split!r} of the records in {directory} is' if split is not None else
          f'Records folder {directory} is')
  raise RecordsBusyError(f'{what} being written now by {describe_writer(writer)}: wait for it '
                         'to end, then run this again.')


def shard_files(directory: str, dataset: str, split: str) -> List[str]:
  """Lists the shards of one split, failing with a clear message when there are none or while
  another process writes the split (its shards are being replaced)."""
  check_not_being_written(directory, split)
  # Escaped: '[' in a folder's name is a glob pattern, which found none of its shards.
  files = sorted(glob.glob(os.path.join(glob.escape(directory),
                                        f'{dataset}-{split}.tfrecord-*-of-*')))
  if not files:
    raise MissingRecordsError(f'No TFRecord shards for split {split!r} of dataset {dataset!r} in '
                              f'{directory!r}.')
  return files


def serialize_video(jpeg_frames: Sequence[bytes], label_index: int, label_text: str,
                    filename: str, fps: float = 0.0, timing: str = '',
                    stream_clock: Any = None) -> bytes:
  """Builds the serialized SequenceExample of one video from its JPEG-encoded frames (and its
  `stream_clock`, a video_io.StreamClock of those frames, where there is one)."""
  example = tf.train.SequenceExample()
  context = example.context.feature
  if timing:
    context[TIMING_KEY].bytes_list.value.append(timing.encode('utf-8'))
  if stream_clock is not None:
    if len(stream_clock.pts) != len(jpeg_frames):
      raise ValueError(f'{len(stream_clock.pts)} timestamps for {len(jpeg_frames)} frames')
    context[STREAM_DURATION_KEY].int64_list.value.append(int(stream_clock.duration))
    context[STREAM_FRAMES_KEY].int64_list.value.append(int(stream_clock.frames))
    stamps = example.feature_lists.feature_list[PTS_KEY]
    for pts in stream_clock.pts:
      stamps.feature.add().int64_list.value.append(int(pts))
  context[LABEL_INDEX_KEY].int64_list.value.append(int(label_index))
  context[LABEL_TEXT_KEY].bytes_list.value.append(label_text.encode('utf-8'))
  context[FILENAME_KEY].bytes_list.value.append(filename.encode('utf-8'))
  context[FPS_KEY].float_list.value.append(float(fps))
  context[NUM_FRAMES_KEY].int64_list.value.append(len(jpeg_frames))
  frames = example.feature_lists.feature_list[IMAGE_KEY]
  for jpeg in jpeg_frames:
    frames.feature.add().bytes_list.value.append(jpeg)
  return example.SerializeToString()


def parse_video(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Parses one serialized SequenceExample (inside tf.data): frames stay JPEG-encoded. 'pts' is
  empty and 'stream_duration' and 'stream_frames' 0 for a video stored without a stream clock."""
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
          LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
          FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
          FPS_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
          STREAM_DURATION_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0),
          STREAM_FRAMES_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0),
      },
      sequence_features={IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string),
                         PTS_KEY: tf.io.FixedLenSequenceFeature([], tf.int64,
                                                                allow_missing=True)})
  return {
      'frames_jpeg': sequence[IMAGE_KEY],
      'label': tf.cast(context[LABEL_INDEX_KEY], tf.int32),
      'label_text': context[LABEL_TEXT_KEY],
      'filename': context[FILENAME_KEY],
      'fps': context[FPS_KEY],
      'pts': sequence[PTS_KEY],
      'stream_duration': context[STREAM_DURATION_KEY],
      'stream_frames': context[STREAM_FRAMES_KEY],
  }


class ShardWriter:
  """Writes serialized videos round-robin into `num_shards` shards of one split."""

  def __init__(self, directory: str, dataset: str, split: str, num_shards: int,
               options: Optional[tf.io.TFRecordOptions] = None):
    os.makedirs(directory, exist_ok=True)
    self.paths = [shard_path(directory, dataset, split, i, num_shards) for i in range(num_shards)]
    self._writers = [tf.io.TFRecordWriter(p, options) for p in self.paths]
    self._videos = [0] * num_shards
    self._count = 0

  def write(self, serialized: bytes) -> None:
    shard = self._count % len(self._writers)
    with errors.writing(self.paths[shard]):
      self._writers[shard].write(serialized)
    self._videos[shard] += 1
    self._count += 1

  @property
  def count(self) -> int:
    return self._count

  def close(self) -> None:
    """Closes every shard, then raises the first failure (a full disk names its shard)."""
    failures = []
    for path, writer in zip(self.paths, self._writers):
      try:
        with errors.writing(path):
          writer.close()
      except Exception as e:  # pylint: disable=broad-except
        failures.append(e)
    if failures:
      raise failures[0]

  def shard_entries(self) -> List[Dict[str, Any]]:
    """The `DatasetMetadata.shards` entries of the closed shards (file, videos, bytes)."""
    return [{'file': os.path.basename(p), 'num_videos': n, 'num_bytes': os.path.getsize(p)}
            for p, n in zip(self.paths, self._videos)]

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ----------------------------------------------------------------------------- shard checks
def recorded_shard_bytes(metadata: DatasetMetadata, split: str) -> Dict[str, int]:
  """The byte size the converter wrote of each shard of `split` (basename -> bytes), in file
  order; {} where the metadata does not say (records written before sizes were kept)."""
  return {s['file']: int(s['num_bytes']) for s in metadata.shards.get(split, ())
          if 'num_bytes' in s}


def check_shards(files: Sequence[str], expected: Optional[Mapping[str, int]]) -> None:
  """Compares shard files with the byte sizes recorded at conversion (basename -> bytes).

  Fails naming the file when a recorded shard is missing or has another size (a truncated copy
  or an interrupted write), or when a shard is not in the record (left over from another
  conversion). Does nothing when nothing was recorded (e.g. the synthetic demo data).
  """
  if not expected:
    return
  present = {os.path.basename(f): f for f in files}
  for name, size in expected.items():
    if name not in present:
      raise CorruptShardError(f'TFRecord shard {name} listed in {METADATA_FILE} is missing from '
                              f'{os.path.dirname(files[0]) if files else "the records directory"}.')
    actual = tf.io.gfile.stat(present[name]).length
    if actual != size:
      raise CorruptShardError(
          f'TFRecord shard {present[name]} is {actual} bytes but {size} were written by the '
          f'converter: the file is {"truncated or replaced" if actual < size else "changed"}; '
          'convert it again (python -m data.convert resumes and rewrites missing shards).')
  unexpected = sorted(set(present) - set(expected))
  if unexpected:
    raise CorruptShardError(f'TFRecord shard(s) {unexpected} in {os.path.dirname(files[0])} are '
                            f'not in {METADATA_FILE}: left over from another conversion?')


def verify_records(path: str) -> int:
  """Reads every record of one shard; returns the count or fails naming the file and offset."""
  count = 0
  try:
    for _ in tf.data.TFRecordDataset(path):
      count += 1
  except tf.errors.DataLossError as e:
    raise CorruptShardError(f'TFRecord shard {path} is corrupt after record {count}: '
                            f'{error_reason(e)}') from None
  return count


def error_reason(error: tf.errors.OpError) -> str:
  """TensorFlow's own reason ('corrupted record at 5120', 'truncated record at ...') without the
  name of the graph function that read it, the offset said to be where the record starts."""
  lines = [line.strip() for line in (error.message or str(error)).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  reason = re.sub(r'\{\{[^}]*\}\}\s*', '', lines[0])
  reason = re.sub(r'\s*\[Op:[^\]]*\].*$', '', reason)  # the op that read it, and its name
  failed = re.match(r"(.*?)'? failed with (.+)$", reason)  # a reader's own failure, quoted
  if failed:
    reason = f'{failed.group(1)} ({failed.group(2)[:1].lower()}{failed.group(2)[1:]})'
  return re.sub(r'\b(record) at (\d+)\b', r'\1 starting at byte \2', reason)


def locate_corruption(files: Sequence[str], error: tf.errors.OpError) -> CorruptShardError:
  """The CorruptShardError naming which of `files` made a reader fail with `error`.

  A TFRecord reader's DataLossError says what is wrong and at which byte offset, not in which
  file; the shards are re-read one at a time to find it (this only runs after such an error).
  """
  for path in files:
    try:
      verify_records(path)
    except CorruptShardError as e:
      return e
  return CorruptShardError(f'Reading the TFRecord shards {files[0]}... failed '
                           f'({error_reason(error)}) but each reads cleanly on its own now: was a '
                           'file being rewritten?')


# ----------------------------------------------------------------------------- TFDS
def tfds_features(classes: Sequence[str]):
  """The TFDS FeaturesDict of the context features; nested names flatten to the DMVR keys."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.features.FeaturesDict({
      'clip': {'label': {'index': tfds.features.ClassLabel(names=list(classes)),
                         'text': tfds.features.Text()}},
      'video': {'filename': tfds.features.Text(),
                'fps': tfds.features.Scalar(np.float32),
                'num_frames': tfds.features.Scalar(np.int64)},
  })


TFDS_DESCRIPTION = (
    'Videos as DMVR-style tf.train.SequenceExample records: context clip/label/index, '
    'clip/label/text, video/filename, video/fps, video/num_frames (and, where the source declared '
    'them, video/stream_duration and video/stream_frames); feature list image/encoded (one JPEG '
    'per frame) and, beside it, image/pts. TFDS parses records as tf.train.Example, so '
    'builder.as_dataset() yields the context features only; read frames with '
    'data.records.tfds_video_dataset(dir, split) or the salinet_jax pipeline.')


def write_tfds_info(directory: str, metadata: DatasetMetadata, description: str = '') -> None:
  """Writes dataset_info.json, features.json and the class names file so
  `tfds.builder_from_directory` reads `directory`.

  Needs `metadata.shards` (shard lengths and sizes per split): TFDS checks that its splits are
  exactly those of the shard files in `directory`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  splits = [tfds.core.SplitInfo(name=split, shard_lengths=[int(s['num_videos']) for s in shards],
                                num_bytes=sum(int(s['num_bytes']) for s in shards))
            for split, shards in sorted(metadata.shards.items())]
  tfds.folder_dataset.write_metadata(
      data_dir=directory, features=tfds_features(metadata.classes), split_infos=splits,
      version=TFDS_VERSION, check_data=False,  # else TFDS reads a record and prints a notice
      description=(description + '\n\n' if description else '') + TFDS_DESCRIPTION)


def decode_frame(jpeg: tf.Tensor) -> tf.Tensor:
  """One stored JPEG frame -> uint8 (H, W, 3), as Pillow decodes it (JPEG_DCT_METHOD)."""
  return tf.io.decode_jpeg(jpeg, channels=3, dct_method=JPEG_DCT_METHOD)


def parse_video_with_context(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  """`parse_video` plus `num_frames` (the count the converter recorded) and `timing` ('' for
  records written before it was recorded)."""
  features = parse_video(serialized)
  context = tf.io.parse_single_sequence_example(
      serialized, context_features={
          NUM_FRAMES_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
          TIMING_KEY: tf.io.FixedLenFeature([], tf.string, default_value='')})[0]
  features['num_frames'] = context[NUM_FRAMES_KEY]
  features['timing'] = context[TIMING_KEY]
  return features


def tfds_video_dataset(directory: str, split: str, *, decode_frames: bool = True,
                       shuffle_files: bool = False) -> tf.data.Dataset:
  """Full videos of a TFDS-readable records directory, frames included.

  The files are the ones `tfds.builder_from_directory(directory)` lists for `split`, so TFDS
  tooling and this reader agree on what the split holds. Each element: 'video' (T, H, W, 3) uint8
  (or 'frames_jpeg' (T,) strings when `decode_frames` is False), 'label', 'label_text',
  'filename', 'fps', 'num_frames'.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(directory)
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in {directory}/dataset_info.json '
                     f'(has {sorted(builder.info.splits)}).')
  files = [os.path.join(directory, name) for name in builder.info.splits[split].filenames]
  if os.path.exists(os.path.join(directory, METADATA_FILE)):
    check_shards(files, recorded_shard_bytes(read_metadata(directory), split))
  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle_files:
    ds = ds.shuffle(len(files))
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=1).map(parse_video_with_context)
  if decode_frames:
    def decode(features):
      jpegs = features.pop('frames_jpeg')
      features['video'] = tf.map_fn(decode_frame, jpegs,
                                    fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
      return features
    ds = ds.map(decode)
  return ds
