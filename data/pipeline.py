"""The tf.data input pipeline: read -> sample -> decode -> augment -> batch.

Each phase is a named, swappable function on one video's dict of tensors. Frame indices are
sampled BEFORE any JPEG is decoded, so only the frames a clip uses are decoded. Batches carry
uint8 pixels; normalisation runs inside the jitted steps on the accelerator
(salinet_jax/inputs.py): a quarter of float32's host memory, batching copies and host-to-device
traffic, and no host time spent on it. With `train_resize_on_device`, train crops that need
upsampling are also resized (and flipped) there.

The named parts a config chooses: the temporal sampler (`config.data.temporal_sampling`,
data/sampling.py), the train crop (`train_crop`) and the augmentations (`train_augmentations`,
data/augment.py); each is a registered function that reads its numbers from `config.data`.

Train batches: {'video': (B, T, H, W, 3) uint8, 'label': (B,) int32}, infinite, per process;
with train_resize_on_device also 'crop_hw' (B, 2) int32 and 'flip' (B,) bool, which
salinet_jax/inputs.py turns into finished clips.
Eval batches: {'video': (B, V, T, H, W, 3) uint8, 'label': (B,), 'filename': (B,) bytes,
'mask': (B,) bool}: every video of the split exactly once across all processes, V = temporal
clips x spatial crops views per video, padded at the end with mask=False so every process runs
the same number of equal-size batches.
"""

import collections
import dataclasses
import math
import os
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from data import augment
from data import datasets
from data import errors
from data import host_malloc
from data import ops
from data import records
from data import sampling
from data import synthetic
from data import video_io

Features = Dict[str, tf.Tensor]



@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """A resolved split: where its shards are and how many videos it has."""
  directory: str
  dataset: str
  split: str
  num_videos: int
  classes: Tuple[str, ...]
  # (shard basename, bytes written by the converter) pairs; empty when not recorded.
  shard_bytes: Tuple[Tuple[str, int], ...] = ()
  # Videos per shard file, in file order; empty when not recorded.
  shard_videos: Tuple[int, ...] = ()
  # Videos without a label (-1: rows of a test list); 0 when not recorded.
  unlabelled: int = 0


def records_directory(dataset_config) -> str:
  """Where a dataset's records live; the built-in synthetic data defaults to a cache folder."""
  if dataset_config.data_dir:
    return errors.local_path(dataset_config.data_dir, 'config.dataset.data_dir')
  if dataset_config.name == 'synthetic':
    synthetic.check_settings(dataset_config.synthetic)
    cache = errors.local_path(os.environ.get('SALINET_JAX_CACHE', '~/.cache/salinet_jax'),
                              'SALINET_JAX_CACHE')
    return os.path.join(cache, f'synthetic-{synthetic.fingerprint(dataset_config.synthetic)}')
  raise records.MissingRecordsError(
      'config.dataset.data_dir is empty: set it to a records directory written by '
      'python -m data.convert (--config.dataset.data_dir=DIR).')


def prepare(dataset_config) -> records.DatasetMetadata:
  """The metadata of the config's records (generating the synthetic demo data on first use).

  The records describe their dataset: classes in order, splits and sizes. `config.dataset.name`
  may be '' (take the records' name); when given it must be the records' name. For the standard
  datasets of the registry (data/datasets.py), what differs from the official facts (class
  count, videos missing from a split) is logged as a warning. On several hosts only process 0
  generates synthetic data; the others wait for it.
  """
  directory = records_directory(dataset_config)
  if dataset_config.name == 'synthetic':
    if jax.process_index() == 0:
      synthetic.ensure_generated(directory, dataset_config.synthetic)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('synthetic data generated')
  return _read_metadata(dataset_config, directory)


def check_splits(dataset_config, splits: Sequence[str]) -> None:
  """Fails as `split_info` would when the records, or one of `splits` in them, cannot be read:
  from their metadata alone (no warning, no synthetic data generated), so that a run can be
  refused before it writes anything."""
  directory = records_directory(dataset_config)
  if dataset_config.name == 'synthetic' and not os.path.exists(
      os.path.join(directory, records.METADATA_FILE)):
    return  # the run generates them (and says so in its log)
  metadata = _read_metadata(dataset_config, directory)
  for split in splits:
    _require_split(metadata, directory, split)


def _read_metadata(dataset_config, directory: str) -> records.DatasetMetadata:
  metadata = records.read_metadata(directory)
  if dataset_config.name and dataset_config.name != metadata.name:
    raise records.MissingRecordsError(
        f'config.dataset.name is {dataset_config.name!r} but the records in {directory} hold '
        f'dataset {metadata.name!r} ({metadata.num_classes} classes): set '
        f"--config.dataset.name={metadata.name} (or '' to take the records' name), or point "
        'config.dataset.data_dir at the right records.')
  return metadata


def _require_split(metadata: records.DatasetMetadata, directory: str, split: str) -> None:
  if split not in metadata.split_sizes:
    records.check_not_being_written(directory, split)  # converted for the first time, now
    raise records.MissingRecordsError(
        f'Split {split!r} is not in the records of {metadata.name!r} in {directory} (it has '
        f'{sorted(metadata.split_sizes)}): pass one of those (--split=NAME in eval mode, '
        'config.dataset.train_split / eval_split in training).')


_CHECKED_SPLITS = set()  # (records directory, split): its first label checked this process
_SAID = set()  # (records directory, warning) about whole records: said once, not per split


def split_info(dataset_config, split: str) -> SplitInfo:
  """The split `split` of the config's records; fails listing the splits there are."""
  metadata = prepare(dataset_config)
  directory = records_directory(dataset_config)
  _require_split(metadata, directory, split)
  shards = metadata.shards.get(split, ())
  shard_videos = (tuple(int(shard['num_videos']) for shard in shards)
                  if all('num_videos' in shard for shard in shards) else ())
  per_class = metadata.extra.get('videos_per_class', {}).get(split)
  num_videos = metadata.split_sizes[split]
  info = SplitInfo(directory, metadata.name, split, num_videos, tuple(metadata.classes),
                   tuple(records.recorded_shard_bytes(metadata, split).items()), shard_videos,
                   num_videos - sum(per_class) if per_class is not None else 0)
  if (directory, split) not in _CHECKED_SPLITS:
    _check_first_label(info)
    _CHECKED_SPLITS.add((directory, split))
    for warning in datasets.check_records(metadata, split):
      if (directory, warning) not in _SAID:
        _SAID.add((directory, warning))
        logging.warning('%s', warning)
  return info


def _check_first_label(info: SplitInfo) -> None:
  """Fails when the split's first video is labelled with another class name than
  metadata.json's classes give its index (a class list edited, or written by other code):
  every class would be trained and reported as another. Names compare without case, spaces or
  underscores; one record is read, after the shards' sizes are checked."""
  if not info.num_videos:
    return
  files = checked_shard_files(info)
  try:
    first = next(iter(tf.data.TFRecordDataset(files).take(1)), None)
  except tf.errors.DataLossError as e:
    raise records.locate_corruption(files, e) from None
  if first is None:
    return
  video = records.parse_video(first)
  index = int(video['label'])
  text = video['label_text'].numpy().decode('utf-8', 'replace')
  plain = lambda name: re.sub(r'[\s_]+', '', name).lower()  # noqa: E731
  if text and 0 <= index < len(info.classes) and plain(text) != plain(info.classes[index]):
    raise errors.DataError(
        f'The records of split {info.split!r} of {info.dataset!r} in {info.directory} label '
        f'their first video {text!r} (index {index}), but metadata.json\'s classes name index '
        f'{index} {info.classes[index]!r}: its class list is not the one the records were '
        'written with. Convert the records again (or restore their metadata.json).')


def checked_shard_files(info: SplitInfo) -> List[str]:
  """The shard files of split `info`, failing naming one that is missing or not the size the
  converter wrote (records.check_shards). A stream checks them when it starts; training checks
  them again before each save, since every epoch opens them anew."""
  files = records.shard_files(info.directory, info.dataset, info.split)
  records.check_shards(files, dict(info.shard_bytes))
  return files


def check_video_counts(info: SplitInfo) -> None:
  """Fails naming the first shard of split `info` that holds another number of videos than
  metadata.json counts, or the split when only its total is recorded (records written by other
  code, an edited metadata.json); reads every record, so only run after a count went wrong."""
  files = records.shard_files(info.directory, info.dataset, info.split)
  held = [records.verify_records(path) for path in files]
  where = f'Split {info.split!r} of {info.dataset!r} in {info.directory}'
  for path, count, counted in zip(files, held, info.shard_videos):
    if count != counted:
      raise records.CorruptShardError(
          f'{where}: shard {os.path.basename(path)} holds {count} videos, but metadata.json '
          f'counts {counted} ({sum(held)} in the split, {info.num_videos} counted): records '
          'written by other code, or an edited metadata.json? Convert the split again.')
  if sum(held) != info.num_videos:
    raise records.CorruptShardError(
        f'{where}: its shards hold {sum(held)} videos, but metadata.json counts '
        f'{info.num_videos}: records written by other code, or an edited metadata.json? Convert '
        'the split again.')


def train_split_info(dataset_config) -> SplitInfo:
  """The train split's `split_info`; fails on a split without videos or classes to learn, and on
  unlabelled videos in it (label -1, from annotation rows without a label), which the loss would
  read as no class at all."""
  info = split_info(dataset_config, dataset_config.train_split)
  if not info.num_videos:  # the stream would wait for a first batch forever
    raise errors.DataError(
        f'Split {info.split!r} of {info.dataset!r} in {info.directory} holds no video: nothing '
        "to train on (see the conversion's failures: python -m data.report "
        f'--records={info.directory}).')
  if info.unlabelled > 0:
    raise errors.DataError(
        f'Split {info.split!r} of {info.dataset!r} in {info.directory} holds {info.unlabelled} '
        f'unlabelled video(s) of its {info.num_videos}: training needs a label for every video. '
        'Convert them into a split of their own (e.g. test), or set config.dataset.train_split '
        'to a labelled split.')
  if len(info.classes) < 2:  # its loss is 0 and its top-1 1.0 whatever the model learns
    raise errors.DataError(
        f'The records of {info.dataset!r} in {info.directory} hold {len(info.classes)} class '
        f"({', '.join(map(repr, info.classes))}): a classifier needs two or more.")
  return info


# The converter's settings that decide how a frame is stored.
FRAME_OPTIONS = ('short_side', 'frame_height', 'jpeg_quality', 'interpolation')


def split_decoding(dataset_config, split: str) -> Dict[str, Any]:
  """How the converter decoded the videos of `split` into its records: {'fps': the rate frames
  were resampled to (0: every native frame), 'max_frames': the cap (0: none), and the
  `FRAME_OPTIONS` their frames were stored with: 'short_side' (0: as decoded), 'frame_height'
  (only where set: frames that high in any orientation), 'jpeg_quality', 'interpolation', and
  'stream_clock': whether the records store stream clocks, which pyslowfast clips are picked
  by}, so that videos given to a trained model later (predict, features, export) are decoded
  alike, with 'rate_unknown' for frame folders of unknown rate; {} where the records do not say
  (converted before settings were kept, or written by other code). Synthetic clips have no
  source video: any frame rate is theirs, and their frames' size and quality are those they
  were rendered at."""
  if dataset_config.name == 'synthetic':
    synthetic = dataset_config.synthetic
    return {'fps': 0.0, 'max_frames': 0, 'short_side': int(synthetic.frame_size),
            'jpeg_quality': int(synthetic.jpeg_quality),
            'interpolation': video_io.DEFAULT_INTERPOLATION}
  metadata = prepare(dataset_config)
  conversion = metadata.extra.get('conversion', {}).get(split) or {}
  settings = conversion.get('settings')
  if not settings:
    return {}
  decoding = {'fps': float(settings.get('fps') or 0.0),
              'max_frames': int(settings.get('max_frames') or 0),
              'stream_clock': records.stream_clocks(metadata, split) is not None}
  decoding.update({name: settings[name] for name in FRAME_OPTIONS if name in settings})
  if conversion.get('source_kind') == 'frames':  # frame folders keep the rate they were taken at
    decoding['fps'] = float(settings.get('frames_fps') or 0.0)
    if not decoding['fps']:
      decoding['rate_unknown'] = True
  return decoding


def records_identity(dataset_config, splits: Sequence[str],
                     groups_of: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Any]]:
  """`records.split_identity` of each of `splits` the config's records hold, by split name (with
  their groups for those of `groups_of`; None: all): what a checkpoint keeps so that evaluating
  or resuming it on records converted anew is said."""
  metadata = prepare(dataset_config)
  with_groups = lambda split: groups_of is None or split in groups_of  # noqa: E731
  return {split: records.split_identity(metadata, split, with_groups(split))
          for split in dict.fromkeys(splits) if split in metadata.split_sizes}


def shared_videos_warning(dataset_config, evaluated: str, consequence: str,
                          train_split: Optional[str] = None) -> Optional[str]:
  """A line where split `evaluated` holds videos of `train_split` (default: the config's), as
  official folds do (UCF101's and HMDB51's test2 is part of train1), ending with `consequence`
  (what evaluating there scores), and where `evaluated` is the train split itself. None where
  they share none, or the records do not say."""
  train_split = train_split or dataset_config.train_split
  directory = records_directory(dataset_config)
  metadata = records.read_metadata(directory)
  if evaluated == train_split:
    return (f'Split {evaluated!r} of {directory} is the train split itself '
            f'({metadata.split_sizes.get(train_split, 0)} videos): {consequence}.')
  count = records.shared_videos(metadata, train_split, evaluated)
  if not count:
    return None
  return (f'Split {evaluated!r} of {directory} holds {count} of the '
          f'{metadata.split_sizes[train_split]} videos of the train split {train_split!r}: '
          f'{consequence}.')


def clip_settings_warning(dataset_config, evaluated: str, consequence: str,
                          train_split: Optional[str] = None,
                          trained_settings: Optional[Dict[str, Any]] = None) -> Optional[str]:
  """A line where split `evaluated` was converted with other clip settings
  (records.CLIP_SETTINGS) than `train_split` (default: the config's), ending with
  `consequence`; `trained_settings`, the conversion settings a checkpoint trained on, stand
  for the records' own train split. None where they match or either is unknown, and for the
  train split itself (a checkpoint's evaluation says how its conversion changed)."""
  train_split = train_split or dataset_config.train_split
  if evaluated == train_split:
    return None
  metadata = records.read_metadata(records_directory(dataset_config))
  against, label = f'the train split {train_split!r}', train_split
  if trained_settings is None:
    trained_settings = records.conversion_settings(metadata, train_split)
  else:  # not the records' own train split, which may have been converted again since
    against, label = f'{against} had when the checkpoint trained on it', f'{train_split} then'
  unlike = records.unlike_clip_settings(evaluated, records.conversion_settings(metadata, evaluated),
                                       label, trained_settings)
  if not unlike:
    return None
  return (f'Split {evaluated!r} of {records_directory(dataset_config)} was converted with other '
          f'clip settings than {against} ({unlike}): {consequence}.')


def enlarging_warnings(dataset_config, data_config, train_split: Optional[str] = None,
                       eval_split: Optional[str] = None) -> List[str]:
  """A line per split (read for training, for evaluation) whose records store frames smaller
  than the config resizes every clip to (the train short side jitter's lower end or, for other
  train crops, the crop; the eval short side): each frame is then enlarged, with detail the
  records never held. For frames stored at a height (--frame_height) the height is compared:
  portrait ones, narrower, can be enlarged at a larger height too (as the reference's are)."""
  train_field = ('train_min_scale' if data_config.train_crop == 'short_side_jitter'
                 else 'crop_size')
  lines = []
  for split, field in ((train_split, train_field), (eval_split, 'eval_short_side')):
    if split is None:
      continue
    decoding = split_decoding(dataset_config, split)
    flag, what = (('frame_height', 'height') if decoding.get('frame_height') else
                  ('short_side', 'short side'))
    wanted, stored = data_config[field], decoding.get(flag)
    if stored and stored < wanted:
      remedy = (f'raise config.dataset.synthetic.frame_size to {wanted}'
                if dataset_config.name == 'synthetic' else
                f'convert with --{flag}={wanted} or more')
      lines.append(f'split {split!r} of {records_directory(dataset_config)} stores frames at '
                   f'{what} {stored} px and config.data.{field}={wanted} enlarges every one '
                   f'({wanted / stored:.2g}x): {remedy}, or lower config.data.{field}.')
  return lines


# What a clip does with a video shorter than it spans, by temporal sampling, and what shortens
# the span: dense and tsn count stored frames (a higher --fps stores more of them), pyslowfast
# counts frames at target_fps.
SHORT_VIDEO_CLIPS = {
    'dense': ('wrap around to their first frames',
              'lower config.data.num_frames or frame_stride, or convert at a higher --fps'),
    'pyslowfast': ('repeat their last frame', 'lower config.data.num_frames or frame_stride, '
                   'or raise config.data.target_fps'),
    'tsn': ('take frames more than once',
            'lower config.data.num_frames, or convert at a higher --fps')}


# How far apart the frame rates of one split's videos may be (highest over lowest: 30 and 25 fps
# are alike enough) before dense clips of a fixed frame count are said to differ in time.
RATE_SPREAD = 1.25


def clip_coverage_warnings(dataset_config, data_config, train_split: Optional[str] = None,
                           eval_split: Optional[str] = None) -> List[str]:
  """A line per split (read for training, for evaluation, or both: said once) holding videos
  that the config's clips cover otherwise than a long video: shorter than a clip spans
  (sampling.clip_span: their clips repeat frames, and an evaluation's temporal views of one take
  the same frames), or, for all_frames, longer than the frames a clip takes from a video's start
  (sampling.misses_frames: the rest is never read); and, for dense clips, a split of frame
  rates further apart than RATE_SPREAD, whose clips then span other lengths of time (with how
  many lie near the rate most of them are near: one odd video and an even spread read alike
  otherwise). Counted from the lengths the converter kept (records.split_lengths): nothing is
  said of records converted before it kept them, nor of synthetic clips. And, for pyslowfast
  clips, a split converted before its records stored stream clocks (records.stream_clocks)."""
  if dataset_config.name == 'synthetic':
    return []
  metadata = prepare(dataset_config)
  sampler, lines = data_config.temporal_sampling, []
  uses = {}  # split: its uses; one split both trained on and scored has its lines said once
  for split, use in ((train_split, 'trained on'), (eval_split, 'scored')):
    if split:
      uses.setdefault(split, []).append(use)
  for split, split_uses in uses.items():
    timing = metadata.extra.get('timing', {}).get(split)  # None: converted before it was kept
    kind = (metadata.extra.get('conversion', {}).get(split) or {}).get('source_kind')
    if (sampler == 'pyslowfast' and records.stream_clocks(metadata, split) is None
        and kind != 'frames' and (timing is None or timing.get(video_io.TIMING_CONTAINER))):
      lines.append(
          f'split {split!r} of {records_directory(dataset_config)} was converted before records '
          "stored each frame's timestamp: its MP4 and AVI videos take the frames of PySlowFast's "
          'decode-all path, one frame off its selective decoding of those files in most clips '
          "(data/sampling.py). Convert it again to take PySlowFast's frames.")
    lengths = records.split_lengths(metadata, split)
    if not lengths:
      continue
    total = sum(count for _, _, count in lengths)
    short, spans, unseen = collections.Counter(), set(), collections.Counter()  # length: videos
    videos_at = collections.Counter()  # frame rate, where known: videos
    for frames, fps, count in lengths:
      span = sampling.clip_span(data_config, fps)
      if span is not None and frames < span:
        short[frames] += count
        spans.add(span)
      elif sampling.misses_frames(data_config, int(frames)):
        unseen[frames] += count
      if fps > 0:
        videos_at[fps] += count
    where = f'split {split!r} of {records_directory(dataset_config)}'
    if sampler == 'dense' and videos_at and max(videos_at) > RATE_SPREAD * min(videos_at):
      near = lambda rate: sum(count for fps, count in videos_at.items()  # noqa: E731
                              if rate / RATE_SPREAD <= fps <= rate * RATE_SPREAD)
      # The rate most videos lie near: rates are kept to 4 decimals, so NTSC files and phone
      # videos each have one of their own.
      usual = max(videos_at, key=lambda rate: (near(rate), videos_at[rate]))
      known = sum(videos_at.values())
      span = sampling.clip_span(data_config, 0.0)
      lines.append(
          f'the videos of {where} are stored at {min(videos_at):g}-{max(videos_at):g} fps '
          f'({near(usual)} of {known}{"" if known == total else " with a known rate"} within '
          f"{RATE_SPREAD:g}x of {usual:g} fps): a clip of temporal_sampling='dense' spans "
          f'{span} frames, {span / max(videos_at):.1f}-{span / min(videos_at):.1f} s of them. '
          "Clips of one length in time come from temporal_sampling='pyslowfast' (at "
          "config.data.target_fps) or from converting at one --fps.")
    if short:
      span_text = (f'{min(spans)} frames' if len(spans) == 1 else
                   f'{min(spans)}-{max(spans)} frames at their frame rates')
      views = data_config.eval_num_clips
      alike = (f', and the {views} temporal views of each take the same frames'
               if 'scored' in split_uses and views > 1 and sampler in ('dense', 'pyslowfast')
               else '')
      clips, remedy = SHORT_VIDEO_CLIPS.get(
          sampler, ('repeat frames', 'lower config.data.num_frames'))
      lines.append(
          f"{sum(short.values())} of {total} videos of {where} hold fewer frames than a clip of "
          f"temporal_sampling={sampler!r} spans ({span_text}; the shortest holds {min(short)}): "
          f'their clips {clips}{alike}. Where that matters, {remedy}.')
    if unseen:
      reach = sampling.clip_reach(data_config)
      lines.append(
          f"{sum(unseen.values())} of {total} videos of {where} hold more frames than the "
          f"{reach} a clip of temporal_sampling={sampler!r} takes from a video's start "
          f'(num_frames x frame_stride; the longest holds {max(unseen)}): the rest of each is '
          + ', and '.join({'trained on': 'trained on only as far as the random trim of a '
                           "clip's start (config.data.all_frames_trim_fraction) shifts it",
                           'scored': 'never scored'}[use] for use in split_uses) + '.')
  return lines


def frame_options(data_config, decoding: Dict[str, Any]) -> Dict[str, Any]:
  """The `FRAME_OPTIONS` (video_io.decode_video's keywords) the eval records stored their frames
  with, from `decoding` (`split_decoding`); the eval short side and the converter's defaults
  where it does not say (synthetic clips, checkpoints from before they were kept). The eval ops
  then resize the frames to the eval short side, as they resize the records'."""
  return {'short_side': int(decoding.get('short_side', data_config.eval_short_side)),
          'frame_height': int(decoding.get('frame_height', 0)),
          'jpeg_quality': int(decoding.get('jpeg_quality', video_io.DEFAULT_JPEG_QUALITY)),
          'interpolation': str(decoding.get('interpolation', video_io.DEFAULT_INTERPOLATION))}


def decode_like_records(path: str, data_config, decoding: Dict[str, Any]
                        ) -> video_io.DecodedVideo:
  """A video file decoded as the converter decoded the model's eval records (`decoding`, from
  `split_decoding`): their frame rate and frame cap, which the temporal sampling counts in, and
  their frames' size, JPEG quality and resampling filter, so that the eval ops see the same
  bytes; its stream clock only where the records kept theirs."""
  video = video_io.decode_video(path, fps=decoding.get('fps') or None,
                                max_frames=decoding.get('max_frames') or 0,
                                **frame_options(data_config, decoding))
  if not decoding.get('stream_clock'):  # records (or a checkpoint) from before stream clocks
    video = dataclasses.replace(video, stream_clock=None)
  return video


# ----------------------------------------------------------------------------- read
def read(info: SplitInfo, *, shuffle: bool, seed: int, process_index: int,
         process_count: int, by_file: bool = True) -> tf.data.Dataset:
  """Serialized records of this process's part of the split.

  With `by_file`, shards are divided between processes by file when there are at least as many
  files as processes; otherwise every process reads every file and keeps every n-th element
  (evaluation does that so each process holds at most ceil(num_videos / processes) videos).
  """
  # A missing or truncated shard fails here, naming the file, instead of deep inside tf.data.
  files = checked_shard_files(info)
  by_file = by_file and len(files) >= process_count
  if by_file:
    files = files[process_index::process_count]
  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle and by_file:
    # Not before an element-wise shard: each process's own file order would interleave other
    # elements into its every n-th, and the processes' parts would overlap.
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                     num_parallel_calls=tf.data.AUTOTUNE)
  if not by_file:
    ds = ds.shard(process_count, process_index)
  return ds


def split_position(local_index: int, process_index: int, process_count: int) -> int:
  """Where the `local_index`-th record a process reads through `read` without `by_file` sits in
  the order one process reads the split: process p keeps every n-th record from the p-th."""
  return local_index * process_count + process_index


def _check_batch(global_batch: int, process_count: int, what: str) -> int:
  if global_batch % process_count:
    raise ValueError(f'{what} {global_batch} is not divisible by the {process_count} processes.')
  return global_batch // process_count


# ----------------------------------------------------------------------------- datasets
TRAIN_SHARDINGS = ('auto', 'global_order', 'files')


def _graph_only(fn):
  """Marks a tf.data map function as already written in TensorFlow ops (no Python control flow
  on tensors), so tf.data traces it as is: AutoGraph's conversion of the pipeline's functions
  cost about a second for each dataset built, on every train, eval and predict start."""
  return tf.autograph.experimental.do_not_convert(fn)


def train_sharding(data_config, process_count: int, info: Optional[SplitInfo] = None) -> str:
  """'global_order' on one process (same cost, exact resume), else the configured mode.

  'global_order': every process walks the same global, per-epoch shuffled stream and keeps every
  n-th element, so the global batch of step s is the same whatever the number of processes, and
  a resumed run sees exactly the batches an uninterrupted one would (each process reads every
  file, but parses and decodes only its own elements). 'files': each process reads its own shard
  files (the least I/O on many hosts); a resumed run reshuffles with the step folded into the seed.
  'auto' takes 'files' on several processes only where each has shard files of its own and
  their train videos divide between the processes within `FILES_MAX_IMBALANCE` (`info`): each
  process draws its batch share from its own files, so the videos of a smaller share are drawn
  more often than the others (by the ratio of the shares).
  """
  mode = data_config.train_sharding
  if mode not in TRAIN_SHARDINGS:
    raise ops.UnknownOpError(f'config.data.train_sharding must be one of {TRAIN_SHARDINGS}, '
                             f'got {mode!r}.')
  if process_count == 1 and mode == 'auto':
    return 'global_order'
  shares = _file_shares(info, process_count) if info is not None else None
  if mode == 'auto':
    by_file = (shares is not None and len(info.shard_videos) >= process_count
               and min(shares) > 0 and max(shares) <= FILES_MAX_IMBALANCE * min(shares))
    chosen = 'files' if by_file else 'global_order'
    if info is not None:
      logging.info("config.data.train_sharding='auto' reads %r on %d processes (the shard "
                   "files' videos per process: %s).", chosen, process_count,
                   shares if shares is not None else 'not recorded')
    return chosen
  if mode == 'files' and info is not None:
    if info.num_videos < process_count:
      raise errors.DataError(f'Split {info.split!r} holds {info.num_videos} video(s) for '
                             f"{process_count} processes: with config.data.train_sharding='files' "
                             "some would read none. Use 'global_order' (or 'auto').")
    if shares is not None and min(shares) < 1:
      raise errors.DataError(f'The shard files of split {info.split!r} give process '
                             f'{shares.index(0)} of {process_count} no video (its files are '
                             "empty: their videos failed to convert). Use 'global_order' (or "
                             "'auto').")
    if shares is not None and len(set(shares)) > 1:
      logging.warning("config.data.train_sharding='files': the %d shard files of split %r give "
                      'the %d processes %s train videos, so the videos of the smallest share are '
                      "drawn %.2gx as often as those of the largest; 'auto' or 'global_order' "
                      'draw every video alike.', len(info.shard_videos), info.split,
                      process_count, shares, max(shares) / max(min(shares), 1))
  return mode


# How much larger the largest process's share of the train videos may be than the smallest for
# 'auto' to read by file (its videos are drawn that much more often): 2 %. Converted shards
# differ by a video or by their failures, so equal shares are rare on real datasets.
FILES_MAX_IMBALANCE = 1.02


def _file_shares(info: SplitInfo, process_count: int) -> Optional[List[int]]:
  """The train videos each process reads in 'files' mode (its shard files, or every n-th video
  where there are fewer files than processes); None where the shards' counts are not recorded."""
  counts = info.shard_videos
  if not counts:
    return None
  if len(counts) < process_count:  # `read` then gives each process every n-th video
    return [len(range(p, info.num_videos, process_count)) for p in range(process_count)]
  return [sum(counts[p::process_count]) for p in range(process_count)]


def train_dataset(config, *, seed: int, start_step: int = 0,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None,
                  sharding: Optional[str] = None) -> tf.data.Dataset:
  """Infinite, shuffled, augmented train batches for this process (batch = global / processes).

  The stream starts at global step `start_step` (see `train_sharding` for what resuming means in
  each mode). `sharding` is the mode `train_sharding` chose, where the caller has it (training
  records it with each checkpoint); None chooses it here.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  data = config.data
  info = train_split_info(config.dataset)
  local_batch = _check_batch(config.batch_size, process_count, 'config.batch_size')
  host_malloc.apply_settings(data)
  check_train_clips(data)
  padded = ops.pads_frames(data)

  @_graph_only
  def parse_and_sample(serialized, element_seed):
    seeds = tf.random.experimental.stateless_split(element_seed, 2)
    features = records.parse_video(serialized)
    features = sampling.sample(features, data, train=True, seed=seeds[0])
    features = {k: features[k] for k in ('frames_jpeg', 'label', 'num_valid') if k in features}
    features['seed'] = seeds[1]
    return features

  @_graph_only
  def decode_augment(features):
    features = augment.train_clip(features, data, features.pop('seed'))
    if padded:
      features = sampling.pad_frames(features, data.num_frames)
    out = {'video': features['video'][0], 'label': features['label']}
    for key in ('crop_hw', 'flip', 'frame_mask'):
      if key in features:
        out[key] = features[key]
    return out

  if (sharding or train_sharding(data, process_count, info)) == 'global_order':
    ds = _global_order_stream(info, data, seed, start_step * config.batch_size, parse_and_sample)
    if process_count > 1:
      # Process p takes rows [p * local, (p + 1) * local) of every global batch, so the assembled
      # global array has the same rows in the same order for any number of processes.
      ds = ds.batch(local_batch, drop_remainder=True).shard(process_count, process_index).unbatch()
  else:
    # Sampling comes before the shuffle, so the buffer holds the few JPEGs of each clip instead
    # of whole serialized videos (memory), and the decode step only sees what it decodes.
    process_seed = (seed * 7919 + process_index + 1_000_003 * start_step) % (2**31 - 1)
    ds = read(info, shuffle=True, seed=process_seed, process_index=process_index,
              process_count=process_count)
    ds = ds.repeat()
    # One stateless seed per element, derived from the process seed and the element's position.
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=process_seed).batch(2)))
    ds = ds.map(parse_and_sample, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.shuffle(data.shuffle_buffer, seed=process_seed)
  ds = ds.map(decode_augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(data.prefetch_batches)


def _global_order_stream(info: SplitInfo, data, seed: int, start_element: int,
                         parse_and_sample) -> tf.data.Dataset:
  """The global train stream from element `start_element` on: epoch after epoch, each with its
  own file order, shuffle and per-element seeds, all derived from (seed, epoch, position)."""
  files = tf.constant(checked_shard_files(info))
  num_files = int(files.shape[0])
  per_epoch = max(info.num_videos, 1)
  first_epoch, skip = divmod(start_element, per_epoch)

  @_graph_only
  def epoch_stream(epoch):
    epoch_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    order = tf.random.experimental.stateless_shuffle(tf.range(num_files), seed=epoch_seed)
    ds = tf.data.Dataset.from_tensor_slices(tf.gather(files, order))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(num_files, 8), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.enumerate().map(
        _graph_only(lambda i, serialized: parse_and_sample(
            serialized, tf.random.experimental.stateless_fold_in(epoch_seed, i))),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    shuffle_seed = tf.cast(tf.random.experimental.stateless_fold_in(epoch_seed, -1)[0], tf.int64)
    return ds.shuffle(data.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

  first = epoch_stream(tf.constant(first_epoch, tf.int64)).skip(skip)
  rest = tf.data.Dataset.range(first_epoch + 1, 2**62).flat_map(epoch_stream)
  return first.concatenate(rest)


def num_eval_batches(num_videos: int, local_batch: int, process_count: int) -> int:
  """Batches per process that cover every video once (the last ones padded)."""
  return max(1, math.ceil(math.ceil(num_videos / process_count) / local_batch))


def eval_dataset(config, split: str, *, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Tuple[tf.data.Dataset, int, SplitInfo]:
  """Every video of `split` once, as multi-view batches padded with mask=False.

  Returns (dataset, number of batches, split info). Every process yields the same number of
  batches, so collective evaluation never deadlocks on a ragged last batch.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  data = config.data
  info = split_info(config.dataset, split)
  local_batch = _check_batch(config.eval_batch_size, process_count, 'config.eval_batch_size')
  num_batches = num_eval_batches(info.num_videos, local_batch, process_count)
  host_malloc.apply_settings(data)
  ds = read(info, shuffle=False, seed=0, process_index=process_index,
            process_count=process_count, by_file=False)
  ds = ds.map(_graph_only(records.parse_video), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(eval_views_fn(data), num_parallel_calls=tf.data.AUTOTUNE)
  return pad_and_batch(ds, data, num_batches, local_batch), num_batches, info


def check_train_clips(data_config) -> None:
  """Fails, before any reading, on an unknown part name or train clip settings that cannot
  work."""
  sampling.check(data_config, train=True)
  augment.CROP_BOXES.get(data_config.train_crop)
  augment.RESIZE_FILTERS.get(data_config.resize_filter)
  for name in data_config.train_augmentations:
    augment.AUGMENTATIONS.get(name)
  augment.check_crop_sizes(data_config, train=True)


def check_eval_views(data_config) -> None:
  """Fails, before any reading, on eval view settings that cannot work: a training run checks
  them at its start, not at its first evaluation."""
  sampling.check(data_config, train=False)
  augment.check_test_crops(data_config.eval_num_crops, data_config.eval_crop_rounding)
  augment.RESIZE_FILTERS.get(data_config.resize_filter)
  augment.check_crop_sizes(data_config, train=False)


def eval_views_fn(data_config):
  """The eval map of one parsed video (frames_jpeg, fps, label, filename): its test views as
  uint8 (V, T, crop, crop, 3), label, filename, mask=True (and frame_mask when padded)."""
  data = data_config
  check_eval_views(data)
  padded = ops.pads_frames(data)

  @_graph_only
  def sample_decode_views(features):
    features = sampling.sample(features, data, train=False)
    features = augment.eval_views(features, data)
    if padded:
      features = sampling.pad_frames(features, data.num_frames)
    out = {'video': features['video'], 'label': features['label'],
           'filename': features['filename'], 'mask': tf.constant(True)}
    if padded:
      out['frame_mask'] = features['frame_mask']
    return out

  return sample_decode_views


def _padding(data_config) -> tf.data.Dataset:
  """Endless mask=False eval elements that fill the last batch."""
  data = data_config
  views = data.eval_num_clips * data.eval_num_crops
  padding = {
      'video': tf.zeros([views, data.num_frames, data.eval_crop_size, data.eval_crop_size, 3],
                        tf.uint8),
      'label': tf.constant(0, tf.int32),
      'filename': tf.constant(b''),
      'mask': tf.constant(False),
  }
  if ops.pads_frames(data):
    padding['frame_mask'] = tf.zeros([data.num_frames], tf.bool)
  return tf.data.Dataset.from_tensors(padding).repeat()


def pad_and_batch(ds: tf.data.Dataset, data_config, num_batches: int,
                  batch_size: int) -> tf.data.Dataset:
  """Eval elements padded with mask=False elements to `num_batches` full batches."""
  ds = ds.concatenate(_padding(data_config)).take(num_batches * batch_size)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(data_config.prefetch_batches)


def memory_eval_batches(data_config, videos: Callable[[], Iterator[Tuple[Sequence[bytes], str,
                                                                         float, Any]]],
                        batch_size: int) -> tf.data.Dataset:
  """The eval views of videos held in memory as JPEG frames, `videos()` yielding (jpegs,
  filename, fps, stream clock or None: video_io.StreamClock) for each, through the same ops as a
  split's videos, in batches of `batch_size` (the last one padded with mask=False). Labels are
  -1 (unlabelled).

  One pipeline serves the whole stream: a pipeline built per video (or per window of a long
  video) grows TensorFlow's memory by megabytes each time."""

  def elements():
    for jpegs, filename, fps, clock in videos():
      yield {'frames_jpeg': list(jpegs), 'label': -1, 'label_text': '', 'filename': filename,
             'fps': fps, 'pts': list(clock.pts) if clock else [],
             'stream_duration': clock.duration if clock else 0,
             'stream_frames': clock.frames if clock else 0}

  signature = {'frames_jpeg': tf.TensorSpec([None], tf.string),
               'label': tf.TensorSpec([], tf.int32), 'label_text': tf.TensorSpec([], tf.string),
               'filename': tf.TensorSpec([], tf.string), 'fps': tf.TensorSpec([], tf.float32),
               'pts': tf.TensorSpec([None], tf.int64),
               'stream_duration': tf.TensorSpec([], tf.int64),
               'stream_frames': tf.TensorSpec([], tf.int64)}
  ds = tf.data.Dataset.from_generator(elements, output_signature=signature)
  ds = ds.map(eval_views_fn(data_config))
  ds = ds.concatenate(_padding(data_config).take(batch_size - 1))
  return ds.batch(batch_size, drop_remainder=True).prefetch(data_config.prefetch_batches)


def video_eval_batches(data_config, jpegs: Sequence[bytes], filename: str, fps: float,
                       batch_size: int, stream_clock: Any = None) -> tf.data.Dataset:
  """The eval views of one video held in memory (JPEG frames, e.g. decoded for prediction, and
  their stream clock where the decoder gave one): one batch of `batch_size`, the video first
  and the rest padding (`memory_eval_batches`)."""
  return memory_eval_batches(data_config, lambda: iter([(jpegs, filename, fps, stream_clock)]),
                             batch_size)


def as_numpy(ds: tf.data.Dataset, info: Optional[SplitInfo] = None, training: bool = False
             ) -> Iterator[Dict[str, np.ndarray]]:
  """The dataset's elements as numpy. With the split's `info`, a corrupt shard met while reading
  ends the iteration with a CorruptShardError naming the file and the byte offset, and so do a
  frame that is no image, a label beyond the split's classes or below -1 (unlabelled), and, in
  a `training` stream, any label below 0; a shard removed while read, a MissingRecordsError."""
  iterator = ds.as_numpy_iterator()
  if info is None:
    return iterator
  return _explained(iterator, info, training)


# The ops that read a frame's JPEG: their errors mean a damaged frame.
_FRAME_OPS = ('{{node Decode', '{{node ExtractJpegShape')


def _explained(iterator, info: SplitInfo, training: bool):
  while True:
    try:
      element = next(iterator)
    except StopIteration:
      return
    except tf.errors.DataLossError as e:
      files = records.shard_files(info.directory, info.dataset, info.split)
      raise records.locate_corruption(files, e) from None
    except tf.errors.NotFoundError as e:
      missing = re.search(r'\S+\.tfrecord-\d+-of-\d+', e.message)
      if not missing or os.path.exists(missing.group(0)):
        raise
      records.check_not_being_written(info.directory, info.split)  # a conversion replacing it
      raise records.MissingRecordsError(
          f'{missing.group(0)}, a shard of split {info.split!r} of {info.dataset!r}, was removed '
          'while it was read: convert the split again, or restore the file.') from None
    except tf.errors.InvalidArgumentError as e:
      empty = re.search(rf'assertion failed: \[(.*?)\] \[{sampling.NO_FRAMES}\]', e.message)
      if empty:
        raise records.CorruptShardError(
            f'The records of split {info.split!r} of {info.dataset!r} in {info.directory} hold '
            f'a video without frames ({empty.group(1)}): records written by other code? Convert '
            'the split again.') from None
      if not any(op in e.message for op in _FRAME_OPS):
        raise
      # Checksums pass, so the frame was written so (other code, a faulty writer): finding the
      # video would mean decoding every frame of the split.
      reason = records.error_reason(e).rsplit(': ', 1)[-1]
      raise records.CorruptShardError(
          f'A frame in the records of split {info.split!r} of {info.dataset!r} in '
          f'{info.directory} cannot be decoded as an image ({reason}): the records hold a '
          'damaged frame; convert the split again.') from None
    labels = element.get('label') if isinstance(element, dict) else None
    if labels is not None and np.any(labels >= len(info.classes)):
      # The loss would one-hot it to no class at all, and an evaluation count it as a class.
      raise records.CorruptShardError(
          f'The records of split {info.split!r} of {info.dataset!r} in {info.directory} hold '
          f'label {int(np.max(labels))}, beyond their {len(info.classes)} classes '
          '(metadata.json): records written by other code? Convert the split again.')
    lowest = -1 if not training else 0  # -1: unlabelled, which training cannot use
    if labels is not None and np.any(labels < lowest):
      raise records.CorruptShardError(
          f'The records of split {info.split!r} of {info.dataset!r} in {info.directory} hold '
          f'label {int(np.min(labels))}'
          + (', though a train split needs a class for every video and metadata.json counts '
             'every one as labelled' if training else
             ' (-1 marks an unlabelled video; nothing lower is a label)')
          + ': records written by other code? Convert the split again.')
    yield element
