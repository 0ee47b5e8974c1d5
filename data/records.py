"""The on-disk video record format: DMVR-compatible TFRecords plus a metadata json.

One `tf.train.SequenceExample` per video:
  context   `clip/label/index` (int64), `clip/label/text` (bytes), `video/filename` (bytes),
            `video/fps` (float), `video/num_frames` (int64)
  sequence  `image/encoded`: one JPEG per frame, in presentation order.
Shards of split S are named `<dataset>-<S>.tfrecord-<i:05d>-of-<n:05d>` (the TFDS convention) and sit
beside `metadata.json` (classes in their official order, videos per split, failures, schema version).
"""

import dataclasses
import glob
import json
import os
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

SCHEMA_VERSION = 1
METADATA_FILE = 'metadata.json'

IMAGE_KEY = 'image/encoded'
LABEL_INDEX_KEY = 'clip/label/index'
LABEL_TEXT_KEY = 'clip/label/text'
FILENAME_KEY = 'video/filename'
FPS_KEY = 'video/fps'
NUM_FRAMES_KEY = 'video/num_frames'


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

  @property
  def num_classes(self) -> int:
    return len(self.classes)


def write_metadata(directory: str, metadata: DatasetMetadata) -> None:
  """Writes metadata.json atomically (a crash never leaves a half-written file)."""
  path = os.path.join(directory, METADATA_FILE)
  tmp_path = path + '.tmp'
  with open(tmp_path, 'w') as f:
    json.dump(dataclasses.asdict(metadata), f, indent=2)
  os.replace(tmp_path, path)


def read_metadata(directory: str) -> DatasetMetadata:
  """Reads `directory/metadata.json`, failing with the path and reason if it is missing or bad."""
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'No {METADATA_FILE} in records directory {directory!r}: convert the '
                            'dataset first (python -m data.convert ...).')
  try:
    with open(path) as f:
      fields = json.load(f)
    metadata = DatasetMetadata(**fields)
  except (json.JSONDecodeError, TypeError) as e:
    raise ValueError(f'Cannot read dataset metadata {path}: {e}') from e
  if metadata.schema_version != SCHEMA_VERSION:
    raise ValueError(f'{path} has record schema version {metadata.schema_version}; this code reads '
                     f'version {SCHEMA_VERSION}: convert the dataset again.')
  return metadata


def shard_path(directory: str, dataset: str, split: str, index: int, num_shards: int) -> str:
  return os.path.join(directory, f'{dataset}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}')


def shard_files(directory: str, dataset: str, split: str) -> List[str]:
  """Lists the shards of one split, failing with a clear message when there are none."""
  files = sorted(glob.glob(os.path.join(directory, f'{dataset}-{split}.tfrecord-*-of-*')))
  if not files:
    raise FileNotFoundError(f'No TFRecord shards for split {split!r} of dataset {dataset!r} in '
                            f'{directory!r}.')
  return files


def serialize_video(jpeg_frames: Sequence[bytes], label_index: int, label_text: str,
                    filename: str, fps: float = 0.0) -> bytes:
  """Builds the serialized SequenceExample of one video from its JPEG-encoded frames."""
  example = tf.train.SequenceExample()
  context = example.context.feature
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
  """Parses one serialized SequenceExample (inside tf.data): frames stay JPEG-encoded."""
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
          LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
          FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
          FPS_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
      },
      sequence_features={IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string)})
  return {
      'frames_jpeg': sequence[IMAGE_KEY],
      'label': tf.cast(context[LABEL_INDEX_KEY], tf.int32),
      'label_text': context[LABEL_TEXT_KEY],
      'filename': context[FILENAME_KEY],
      'fps': context[FPS_KEY],
  }


class ShardWriter:
  """Writes serialized videos round-robin into `num_shards` shards of one split."""

  def __init__(self, directory: str, dataset: str, split: str, num_shards: int,
               options: Optional[tf.io.TFRecordOptions] = None):
    os.makedirs(directory, exist_ok=True)
    self.paths = [shard_path(directory, dataset, split, i, num_shards) for i in range(num_shards)]
    self._writers = [tf.io.TFRecordWriter(p, options) for p in self.paths]
    self._count = 0

  def write(self, serialized: bytes) -> None:
    self._writers[self._count % len(self._writers)].write(serialized)
    self._count += 1

  @property
  def count(self) -> int:
    return self._count

  def close(self) -> None:
    for writer in self._writers:
      writer.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
