"""What a run leaves beside the shards: metadata.json, failures.csv, warnings.csv and the TFDS
files.

A run converts some splits; metadata of other splits already in OUTPUT is kept (and must be of the
same dataset and class list). Per split it records sizes, shards (videos, bytes), failures, the
timing source counts of its videos, and the conversion settings; per pair of splits, the videos
both hold.
"""

import collections
import csv
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple

from data import errors as data_errors
from data.convert.plans import ConversionError, Plan
from data.convert.shards import ShardJob, recorded_videos, settings_of

if TYPE_CHECKING:  # TensorFlow is imported lazily: worker processes never need it
  from data import records  # pylint: disable=g-bad-import-order

FAILURES_FILE = 'failures.csv'
WARNINGS_FILE = 'warnings.csv'  # videos kept as decoded, with what to know about them


def existing_metadata(output: str, plan: Plan) -> Optional['records.DatasetMetadata']:
  """The metadata already in `output` (other splits), failing if it is another dataset."""
  from data import records  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(output, records.METADATA_FILE)):
    return None
  try:
    metadata = records.read_metadata(output)
  except ValueError as e:
    raise ConversionError(str(e)) from None
  if metadata.name != plan.name or tuple(metadata.classes) != plan.classes:
    raise ConversionError(
        f'{output} holds dataset {metadata.name!r} with {len(metadata.classes)} classes; this '
        f'run converts {plan.name!r} with {len(plan.classes)} classes (another class list?). '
        'Use another --output.')
  old_groups = metadata.extra.get('groups', {})
  moved = _moved_groups(old_groups, plan.notes.get('groups', {}))
  if moved:
    old_val = old_groups.get('val', [])
    raise ConversionError(
        f'{output} holds a split by group that this run would change: {len(moved)} group(s) '
        'would move, e.g. ' + ', '.join(f'{g} ({a} -> {b})' for g, a, b in moved[:5]) + '. A '
        'model trained on the old records would then be scored on videos it trained on. Keep '
        + (f'the old sides with --val_groups={",".join(old_val)}' if len(old_val) <= 20 else
           "the old sides with --val_groups (the old val groups are in metadata.json's "
           'extra.groups.val)') + ' (in place of --val_fraction and --group_seed), or use '
        'another --output.')
  regrouped = sorted(set(old_groups) & set(plan.splits)) if 'groups' not in plan.notes else []
  kept = sorted(set(old_groups) - set(plan.splits))
  if regrouped and kept:
    raise ConversionError(
        f'{output} holds a split by group ({", ".join(sorted(old_groups))}) and this run '
        f'converts {", ".join(regrouped)} without --split_by_group: the {", ".join(kept)} '
        'split kept beside it would share its videos, and a model be scored on videos it '
        'trained on. Give the --split_by_group of that conversion, or use another --output.')
  return metadata


def _moved_groups(old: Dict[str, Sequence[str]], new: Dict[str, Sequence[str]]
                  ) -> List[Tuple[str, str, str]]:
  """(group, old split, new split) for the groups that change sides between two group splits."""
  side_of = lambda groups: {g: split for split, names in groups.items() for g in names}
  before, after = side_of(old), side_of(new)
  return [(g, before[g], after[g]) for g in sorted(after) if g in before and before[g] != after[g]]


def write_outputs(output: str, plan: Plan, jobs: Sequence[ShardJob],
                  states: Dict[str, Dict[str, Any]], args) -> 'records.DatasetMetadata':
  """metadata.json (merged with other splits already there), failures.csv, warnings.csv (the
  videos kept with a warning, also in metadata's extra.warnings) and the TFDS files."""
  from data import records  # pylint: disable=g-import-not-at-top
  metadata = existing_metadata(output, plan)
  if metadata is None:
    metadata = records.DatasetMetadata(name=plan.name, classes=list(plan.classes), split_sizes={},
                                       num_shards={})
  converted = set(plan.splits)
  metadata.failures = [f for f in metadata.failures if f.get('split') not in converted]
  for split in sorted(converted):
    split_jobs = [job for job in jobs if job.split == split]
    shard_states = [states[job.path] for job in split_jobs]
    metadata.split_sizes[split] = sum(s['num_videos'] for s in shard_states)
    metadata.num_shards[split] = len(split_jobs)
    metadata.shards[split] = [{'file': os.path.basename(job.path), 'num_videos': s['num_videos'],
                               'num_bytes': s['num_bytes']} for job, s in zip(split_jobs,
                                                                             shard_states)]
    for state in shard_states:
      metadata.failures.extend(state['failures'])
    timing = collections.Counter(v.get('timing', 'unknown') for s in shard_states
                                 for v in s['videos'])
    metadata.extra.setdefault('timing', {})[split] = dict(sorted(timing.items()))
    clocks = [v.get('stream_clock') for s in shard_states for v in s['videos']]
    if None in clocks:  # shards kept from a conversion that stored no stream clocks
      metadata.extra.get('stream_clocks', {}).pop(split, None)
    else:
      metadata.extra.setdefault('stream_clocks', {})[split] = sum(clocks)
    per_class = [0] * len(plan.classes)  # of the videos written, so failures are counted out
    for video in (v for s in shard_states for v in s['videos'] if v['label'] >= 0):
      per_class[video['label']] += 1
    metadata.extra.setdefault('videos_per_class', {})[split] = per_class
    metadata.extra.setdefault('names_digest', {})[split] = records.names_digest(
        v['filename'] for s in shard_states for v in s['videos'])
    lengths = records.video_lengths(v for s in shard_states for v in s['videos'])
    if lengths is None:  # shards kept from a conversion whose bookkeeping had no lengths
      metadata.extra.get('lengths', {}).pop(split, None)
    else:
      metadata.extra.setdefault('lengths', {})[split] = lengths
  metadata.extra['shared_videos'] = _shared_videos(output, metadata, {
      split: _files_of([v for job in jobs if job.split == split
                        for v in states[job.path]['videos']]) for split in converted})
  conversion = dict(metadata.extra.get('conversion', {}))
  for split in converted:
    conversion[split] = dict(source_kind=args.dataset, input=os.path.abspath(args.input),
                             annotations=args.annotations, settings=settings_of(args))
  metadata.extra['conversion'] = conversion
  metadata.extra['last_run'] = sorted(converted)  # the splits the latest run converted
  if 'groups' in plan.notes:
    groups = dict(metadata.extra.get('groups', {}))
    groups.update(plan.notes['groups'])
    metadata.extra['groups'] = groups
  elif set(metadata.extra.get('groups', {})) <= converted:  # a split by group replaced whole
    metadata.extra.pop('groups', None)
  warnings = {split: lines for split, lines in metadata.extra.get('warnings', {}).items()
              if split not in converted}
  for split, file, warning in video_warnings(states):
    warnings.setdefault(split, []).append([file, warning])
  metadata.extra['warnings'] = dict(sorted(warnings.items()))
  records.write_metadata(output, metadata)
  with data_errors.replacing(os.path.join(output, FAILURES_FILE), newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['split', 'file', 'reason'])
    for failure in metadata.failures:
      writer.writerow([failure['split'], failure['file'], failure['reason']])
  with data_errors.replacing(os.path.join(output, WARNINGS_FILE), newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['split', 'file', 'warning'])
    for split, lines in metadata.extra['warnings'].items():
      for file, warning in lines:
        writer.writerow([split, file, warning])
  with data_errors.writing(os.path.join(output, 'dataset_info.json')):
    records.write_tfds_info(output, metadata,
                            description=f'{plan.name}: converted by salinet_jax data.convert.')
  return metadata


def _files_of(videos: Sequence[Dict[str, Any]]) -> Optional[Set[str]]:
  """The real paths of the source files of `videos` (bookkeeping entries); None where an entry
  does not keep its source (written before sources were kept)."""
  if any('source' not in video for video in videos):
    return None
  return {video['source'] for video in videos}


def _shared_videos(output: str, metadata: 'records.DatasetMetadata',
                   converted: Dict[str, Optional[Set[str]]]) -> Dict[str, Dict[str, int]]:
  """{split: {other split: videos both hold}} for every pair of splits in `output` whose source
  files are known (by real path, whatever spelling each list gives): this run's, and the
  others' from their shards' bookkeeping where it describes the records there (or the counts
  an earlier run kept for two splits this run leaves alone). Official folds share videos
  (UCF101's test2 is in train1): a checkpoint evaluated on a split holding videos it trained
  on is warned about from these counts."""
  from data import records  # pylint: disable=g-import-not-at-top,redefined-outer-name
  names = {split: files for split, files in converted.items() if files is not None}
  for split, shards in metadata.shards.items():
    if split in converted or split not in metadata.split_sizes:
      continue
    listed = [recorded_videos(output, shard['file']) for shard in shards]
    if not shards or any(videos is None for videos in listed):
      continue
    videos = [video for videos in listed for video in videos]
    digest = metadata.extra.get('names_digest', {}).get(split)
    if digest and records.names_digest(v['filename'] for v in videos) == digest:
      kept = _files_of(videos)  # the bookkeeping of the records there, not of earlier ones
      if kept is not None:
        names[split] = kept
  old = metadata.extra.get('shared_videos', {})
  shared: Dict[str, Dict[str, int]] = {}
  for split in sorted(metadata.split_sizes):
    for other in sorted(metadata.split_sizes):
      if other == split:
        continue
      if split in names and other in names:
        shared.setdefault(split, {})[other] = len(names[split] & names[other])
      elif split not in converted and other not in converted and other in old.get(split, {}):
        shared.setdefault(split, {})[other] = old[split][other]
  return shared


def video_warnings(states: Dict[str, Dict[str, Any]]) -> List[Tuple[str, str, str]]:
  """(split, file, warning) of each warning the converted videos of `states` carry, sorted
  (shards written before warnings were kept carry none)."""
  return sorted((state['split'], video['filename'], warning) for state in states.values()
                for video in state['videos'] for warning in video.get('warnings', ()))
