"""Built-in demo dataset: short videos whose class is told by MOTION only.

Each video shows a textured square sliding in one of four directions (the class) over a textured
background that drifts in a random direction of its own. Both wrap around the frame edges, so the
square's position is uniform in every frame: a single frame carries no information about the
class (chance), while two frames do. Videos are written once, as TFRecord shards in the same
schema as the real datasets (data/records.py), deterministically from a seed.
"""

import hashlib
import io
import json
import os
from typing import TYPE_CHECKING, List, Tuple

import numpy as np
from absl import logging
from PIL import Image

if TYPE_CHECKING:
  from data import records

CLASSES: Tuple[str, ...] = ('moving_right', 'moving_left', 'moving_down', 'moving_up')
# (dy, dx) unit motion per class, in the order of CLASSES.
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))
SPLITS = ('train', 'val')
# The generator's settings (`config.dataset.synthetic`), each read by `generate`.
SETTINGS = ('background_cell', 'background_speed', 'fps', 'frame_size', 'jpeg_quality',
            'num_frames', 'num_shards', 'num_train', 'num_val', 'object_cell', 'object_size',
            'seed', 'speed')


def check_settings(cfg) -> None:
  """Refuses generator settings with a field it does not read (a typo in a config file, which
  the locked config does not catch there) or without one it reads."""
  from data import errors  # pylint: disable=g-import-not-at-top
  given = set(dict(cfg))
  unknown, missing = sorted(given - set(SETTINGS)), [s for s in SETTINGS if s not in given]
  if unknown:
    raise errors.SettingError(
        f'config.dataset.synthetic sets {", ".join(unknown)}, which the generator does not read '
        f'(it reads {", ".join(SETTINGS)}).')
  if missing:
    raise errors.SettingError(f'config.dataset.synthetic lacks {", ".join(missing)} (the '
                              f'generator reads {", ".join(SETTINGS)}).')


def _smooth_texture(rng: np.random.Generator, size: int, cell: int, channels: int = 3):
  """Blocky random colour texture (nearest-upsampled noise), values in [0, 1]."""
  cells = -(-size // cell)
  coarse = rng.random((cells, cells, channels))
  return np.kron(coarse, np.ones((cell, cell, 1)))[:size, :size]


def render_video(rng: np.random.Generator, label: int, cfg) -> np.ndarray:
  """Renders one video of class `label` as uint8 (T, H, W, 3)."""
  size, frames, obj = cfg.frame_size, cfg.num_frames, cfg.object_size
  background = 0.25 + 0.5 * _smooth_texture(rng, size, cfg.background_cell)
  square = _smooth_texture(rng, obj, max(1, cfg.object_cell))
  square = np.where(square > 0.5, 1.0, 0.0) * rng.random(3)[None, None]  # high-contrast, own colour
  angle = rng.uniform(0, 2 * np.pi)
  bg_velocity = cfg.background_speed * np.array([np.sin(angle), np.cos(angle)])
  velocity = cfg.speed * np.array(DIRECTIONS[label], dtype=np.float64)
  start = rng.uniform(0, size, 2)
  video = np.empty((frames, size, size, 3), np.uint8)
  for t in range(frames):
    shift = np.round(t * bg_velocity).astype(int)
    frame = np.roll(background, tuple(shift), axis=(0, 1))
    y, x = np.round(start + t * velocity).astype(int) % size
    rows = (y + np.arange(obj)) % size
    cols = (x + np.arange(obj)) % size
    frame[np.ix_(rows, cols)] = square
    video[t] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return video


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def fingerprint(cfg) -> str:
  """A short hash of every generator setting, so different settings never share a directory."""
  text = json.dumps(dict(cfg), sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:10]


def generate(directory: str, cfg) -> 'records.DatasetMetadata':
  """Writes the train and val splits of the demo dataset into `directory`.

  Args:
    directory: output folder (created).
    cfg: the `config.dataset.synthetic` settings (`SETTINGS`).
  """
  check_settings(cfg)
  # records (TensorFlow) is imported only to write: CLASSES alone must not load TensorFlow.
  from data import records  # pylint: disable=g-import-not-at-top,redefined-outer-name
  os.makedirs(directory, exist_ok=True)
  sizes = {'train': cfg.num_train, 'val': cfg.num_val}
  num_shards, shards = {}, {}
  for split_id, split in enumerate(SPLITS):
    num_shards[split] = min(cfg.num_shards, max(1, sizes[split]))
    with records.ShardWriter(directory, 'synthetic', split, num_shards[split]) as writer:
      for index in range(sizes[split]):
        rng = np.random.default_rng([cfg.seed, split_id, index])
        label = index % len(CLASSES)
        video = render_video(rng, label, cfg)
        jpegs: List[bytes] = [encode_jpeg(f, cfg.jpeg_quality) for f in video]
        writer.write(records.serialize_video(
            jpegs, label, CLASSES[label], f'{split}/{CLASSES[label]}/{index:06d}.synthetic',
            fps=cfg.fps))
    shards[split] = writer.shard_entries()
  metadata = records.DatasetMetadata(
      name='synthetic', classes=list(CLASSES), split_sizes=sizes, num_shards=num_shards,
      extra={'generator': dict(cfg)}, shards=shards)
  records.write_metadata(directory, metadata)
  return metadata


def ensure_generated(directory: str, cfg) -> 'records.DatasetMetadata':
  """Generates the dataset unless `directory` already holds it (metadata is written last).

  A run that finds another generating it (two demo runs started together) waits for that one
  and reuses its records. Records there from other generator settings (an explicit `data_dir` is
  not named by the settings' fingerprint) are refused: reusing them would silently ignore the
  settings. Records that carry no generator settings (assembled by hand, e.g. a held-out split)
  are taken as they are.
  """
  from data import records  # pylint: disable=g-import-not-at-top,redefined-outer-name

  def generated() -> bool:
    return os.path.exists(os.path.join(directory, records.METADATA_FILE))

  if not generated():
    os.makedirs(directory, exist_ok=True)
    writer = records.writer_of(directory)
    if writer is not None:
      logging.info('Waiting for %s, which writes %s.', records.describe_writer(writer),
                   directory)
    with records.sole_writer(directory, SPLITS, by='the synthetic data generator', wait=True,
                             done=generated) as writing:
      if writing.needed:
        logging.info('Generating the synthetic demo videos (%d train, %d val) in %s; later runs '
                     'reuse them.', cfg.num_train, cfg.num_val, directory)
        return generate(directory, cfg)
  metadata = records.read_metadata(directory)
  stored = metadata.extra.get('generator')
  changed = [f'{key}: stored {stored.get(key)!r}, given {value!r}'
             for key, value in sorted(dict(cfg).items())
             if stored is not None and stored.get(key) != value]
  if changed:
    raise records.MissingRecordsError(
        f'The synthetic records in {directory} were generated with other settings ('
        + '; '.join(changed) + '): remove that folder to regenerate them, or point '
        'config.dataset.data_dir elsewhere.')
  return metadata
