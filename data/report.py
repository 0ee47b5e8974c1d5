"""The data card of a converted records directory: what is in it, and what did not make it.

  python -m data.report --records=DIR [--output=DIR/report]

Prints, and writes as report.json and report.png: videos per split and per class, the failures
and their reasons, histograms of duration and frames per video (of the stored frames, after the
converter's --fps and --max_frames, which it names), frame rate, source resolution and the
short side frames were stored at (the converter's --short_side),
how each split's frames were timed (container timestamps or decoder order), and, for the standard
datasets of the registry, the official count beside the converted one. The check PySlowFast and
MMAction2 maintainers ask for when accuracy does not reproduce: a missing tenth of a split or a
resolution mix shows here first. A split whose shard files are missing, cut short or damaged,
or that holds videos without frames, is named on a DAMAGED line, and the command then exits with
status 1.

Per-video facts come from the converter's bookkeeping (DIR/.convert/, source sizes and rates
included); records written without it are read directly (context features and the stored
frame size of their first frame). Either way every record of every shard is read and its
checksum checked, as training and evaluation would: the card takes as long as reading the
records once.
"""

import argparse
import collections
import errno
import glob
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import data
from data import errors

data.quiet_tensorflow()  # before TensorFlow is imported

# pylint: disable=g-import-not-at-top,wrong-import-position
with errors.ctrl_c_while_starting(__name__):  # TensorFlow's and JAX's imports take seconds
  import numpy as np

  from data import datasets
  from data import records
  from data.convert import shards


def _from_states(directory: str) -> Dict[str, List[Dict[str, Any]]]:
  """Per split, the converter's per-video entries (empty when the bookkeeping is absent)."""
  videos = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(glob.escape(directory), shards.STATE_DIR, '*.json'))):
    with open(path) as f:
      state = json.load(f)
    videos[state['split']] += state.get('videos', [])
  return dict(videos)


def _from_records(directory: str, metadata, split: str) -> List[Dict[str, Any]]:
  """Per-video entries read from the shards: label, frames, fps, stored size."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = []
  for shard in records.shard_files(directory, metadata.name, split):
    try:
      serialized_videos = list(tf.data.TFRecordDataset(shard))
    except tf.errors.DataLossError as e:  # the shard and byte offset, as training says them
      raise records.locate_corruption([shard], e) from None
    for serialized in serialized_videos:
      features = records.parse_video_with_context(serialized)
      jpegs = features['frames_jpeg']
      height, width = (int(v) for v in tf.image.extract_jpeg_shape(jpegs[0])[:2]) \
          if int(tf.size(jpegs)) else (0, 0)
      out.append({'filename': features['filename'].numpy().decode(),
                  'label': int(features['label']), 'num_frames': int(tf.size(jpegs)),
                  'fps': float(features['fps']), 'timing': features['timing'].numpy().decode(),
                  'stored_height': height, 'stored_width': width})
  return out


def _damage(directory: str, metadata, split: str) -> str:
  """What is wrong with the split's shard files (missing, another size than the converter
  wrote, left over from another conversion: records.check_shards), '' when nothing is."""
  if not metadata.split_sizes.get(split):
    return ''
  try:
    records.check_shards(records.shard_files(directory, metadata.name, split),
                         records.recorded_shard_bytes(metadata, split))
  except errors.DataError as e:
    return str(e)
  return ''


def _frameless(videos: List[Dict[str, Any]]) -> str:
  """The damage of a split holding videos without frames (written by other code: the converter
  fails such a video), which training and evaluation refuse; '' when every video has frames."""
  empty = [v['filename'] for v in videos if not v['num_frames']]
  if not empty:
    return ''
  return (f"{len(empty)} of its {len(videos)} videos {'has' if len(empty) == 1 else 'have'} no "
          f"frames ({errors.first_few(empty, 3)}): records written "
          'by other code? Training and evaluation refuse such a split; convert it again.')


def _histogram(values: Sequence[float], bins: int = 12) -> Dict[str, Any]:
  values = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
  if not values.size:
    return {'count': 0}
  counts, edges = np.histogram(values, bins=bins)
  return {'count': int(values.size), 'min': float(values.min()),
          'median': float(np.median(values)), 'max': float(values.max()),
          'counts': counts.tolist(), 'edges': [float(e) for e in edges]}


def _reason_kind(reason: str) -> str:
  """A short category of a failure reason, for counting: a known kind, else the reason up to
  its first colon, cut at a word past 80 characters."""
  for kind in ('missing video file', 'missing frame', 'empty file', 'cannot open video',
               'decoding failed', 'no video frames', 'no video stream', 'out of memory',
               'decoder process crashed', 'unexpected'):
    if reason.startswith(kind) or kind in reason:
      return kind
  if reason.startswith('a single frame (a still image'):
    return 'a single frame (a still image), not a video'
  head = reason.split(':')[0]
  return head if len(head) <= 80 else head[:80].rsplit(' ', 1)[0] + ' ...'


def build(directory: str) -> Dict[str, Any]:
  """The data card of a records directory as a dict (see the module docstring)."""
  records.check_not_being_written(directory)
  metadata = records.read_metadata(directory)
  from_states = _from_states(directory)
  official = datasets.REGISTRY.get(metadata.name)
  card: Dict[str, Any] = {'records': os.path.abspath(directory), 'dataset': metadata.name,
                          'num_classes': metadata.num_classes, 'classes': list(metadata.classes),
                          'splits': {}}
  for split in sorted(metadata.split_sizes):
    damage = _damage(directory, metadata, split)
    settings = records.conversion_settings(metadata, split) or {}
    videos = from_states.get(split) or []
    if not damage:
      try:
        if videos:  # the sizes matched, but a byte damaged inside a shard keeps its size
          for shard in records.shard_files(directory, metadata.name, split):
            records.verify_records(shard)
        else:  # reading them checks every record too
          videos = _from_records(directory, metadata, split)
      except errors.DataError as e:
        damage = str(e)
    damage = damage or _frameless(videos)
    failures = [f for f in metadata.failures if f.get('split') == split]
    per_class = collections.Counter(v['label'] for v in videos)
    durations = [v['num_frames'] / v['fps'] if v.get('fps') else None for v in videos]
    short_sides = [min(v['source_height'], v['source_width']) if v.get('source_height')
                   else min(v.get('stored_height', 0), v.get('stored_width', 0)) or None
                   for v in videos]
    entry = {
        'videos': metadata.split_sizes[split],
        'damaged': damage,
        'failures': len(failures),
        'videos_with_warnings': len({file for file, _ in
                                     metadata.extra.get('warnings', {}).get(split, ())}),
        'failure_reasons': dict(collections.Counter(_reason_kind(f['reason'])
                                                    for f in failures).most_common()),
        'videos_per_class': {metadata.classes[k]: per_class.get(k, 0)
                             for k in range(metadata.num_classes)},
        'classes_without_videos': [metadata.classes[k] for k in range(metadata.num_classes)
                                   if not per_class.get(k)],
        'duration_seconds': _histogram(durations),
        'fps': _histogram([v.get('source_fps') or v.get('fps') for v in videos]),
        'fps_of': ('source' if videos and all(v.get('source_fps') for v in videos)
                   else 'stored'),
        # The converter's --fps and --max_frames (0: native rate, no cap): the durations and
        # frames above are of the stored frames.
        'stored_fps': float(settings.get('fps') or 0.0),
        'stored_max_frames': int(settings.get('max_frames') or 0),
        # The converter's --short_side (0: frames kept at the sources' size).
        'stored_short_side': int(settings.get('short_side') or 0),
        # The converter's --frame_height (0: not used).
        'stored_frame_height': int(settings.get('frame_height') or 0),
        'short_side_pixels': _histogram(short_sides),
        'source_resolution': _resolution_kind(videos),
        'frames_per_video': _histogram([v['num_frames'] for v in videos]),
        'timing': dict(collections.Counter(v.get('timing') or 'not recorded' for v in videos)),
    }
    if official is not None and split in official.split_sizes:
      entry['official_videos'] = official.split_sizes[split]
      entry['missing_from_official'] = max(0, official.split_sizes[split] - entry['videos'])
      entry['beyond_official'] = max(0, entry['videos'] - official.split_sizes[split])
    card['splits'][split] = entry
  if official is not None:
    card['official_num_classes'] = official.num_classes
  return card


def _resolution_kind(videos: List[Dict[str, Any]]) -> str:
  """Which short sides a split's histogram shows: the sources' (the converter recorded them),
  the stored frames', or both."""
  recorded = sum(1 for v in videos if v.get('source_height'))
  if recorded == len(videos):
    return 'source'
  if not recorded:
    return 'stored (the converter recorded no source size)'
  return (f'mixed (source for {recorded} of {len(videos)} videos, stored for the others: '
          'converted by versions with and without source sizes)')


def summary(card: Dict[str, Any]) -> str:
  """The card as a few readable lines."""
  lines = [f"{card['dataset']}: {card['num_classes']} classes"
           + (f" (official {card['official_num_classes']})" if 'official_num_classes' in card
              else '') + f", records {card['records']}"]
  for split, entry in card['splits'].items():
    official = ''
    if 'official_videos' in entry:
      official = (f" of {entry['official_videos']:,} official ("
                  + (f"{entry['beyond_official']:,} more than official)"
                     if entry.get('beyond_official') else
                     f"{entry['missing_from_official']:,} missing)"))
    lines.append(f"  {split}: {entry['videos']:,} videos{official}, {entry['failures']} failed"
                 + (f" {entry['failure_reasons']}" if entry['failures'] else '')
                 + (f", {entry['videos_with_warnings']} kept with a warning (warnings.csv)"
                    if entry['videos_with_warnings'] else ''))
    if entry['damaged']:
      lines.append(f"    DAMAGED: {entry['damaged']}")
    counts = sorted(entry['videos_per_class'].values())
    lines.append(f"    per class: min {counts[0]}, median {int(np.median(counts))}, max "
                 f"{counts[-1]}" + (f"; no video: {entry['classes_without_videos'][:5]}"
                                    if entry['classes_without_videos'] else ''))
    side = f'{_side_kind(entry)} short side pixels'
    resampled = (([f"resampled to {entry['stored_fps']:g} fps"] if entry.get('stored_fps') else [])
                 + ([f"at most {entry['stored_max_frames']} frames"]
                    if entry.get('stored_max_frames') else []))
    resized = ([f"at short side {entry['stored_short_side']} px"]
               if entry.get('stored_short_side') else []) + (
                   [f"{entry['stored_frame_height']} px high"]
                   if entry.get('stored_frame_height') else [])
    if resampled or resized:
      lines.append(f"    stored {', '.join(resampled + resized)}"
                   + (': durations and frames are of the stored frames' if resampled else ''))
    for key, name, unit in (('duration_seconds', 'stored duration seconds', 's'),
                            ('fps', f"{entry.get('fps_of', 'stored')} fps", 'fps'),
                            ('short_side_pixels', side, 'px'),
                            ('frames_per_video', 'stored frames per video', 'frames')):
      h = entry[key]
      if h.get('count'):
        lines.append(f"    {name}: {h['min']:.4g}-{h['max']:.4g} {unit}, "
                     f"median {h['median']:.4g}")
    lines.append(f"    frames timed by: {entry['timing']}; resolution: {entry['source_resolution']}")
  return '\n'.join(lines)


def _side_kind(entry: Dict[str, Any]) -> str:
  """'source', 'stored' or 'mixed': the first word of a split's `source_resolution`."""
  return entry['source_resolution'].split()[0]


def _plotted_side_kind(card: Dict[str, Any]) -> str:
  kinds = {_side_kind(entry) for entry in card['splits'].values()}
  return kinds.pop() if len(kinds) == 1 else 'mixed'


def plot(card: Dict[str, Any], path: str) -> str:
  """One figure: videos per class and split, the four histograms, failures and counts."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  splits = list(card['splits'])
  fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
  ax = axes[0, 0]
  classes = card['classes']
  width = 0.8 / max(len(splits), 1)
  for i, split in enumerate(splits):
    values = [card['splits'][split]['videos_per_class'][c] for c in classes]
    ax.bar(np.arange(len(classes)) + i * width, values, width, label=split)
  ax.set_title('videos per class')
  if len(classes) <= 40:
    ax.set_xticks(np.arange(len(classes)) + width * (len(splits) - 1) / 2, classes, rotation=90,
                  fontsize=7)
  else:
    ax.set_xlabel(f'{len(classes)} classes (index order)')
  ax.legend(fontsize=8)
  for ax, key, label in ((axes[0, 1], 'duration_seconds', 'duration (s)'),
                         (axes[0, 2], 'fps', 'frames per second'),
                         (axes[1, 0], 'short_side_pixels',
                          f'{_plotted_side_kind(card)} short side (px)'),
                         (axes[1, 1], 'frames_per_video', 'frames per video')):
    for split in splits:
      h = card['splits'][split][key]
      if h.get('count'):
        edges = np.asarray(h['edges'])
        ax.stairs(h['counts'], edges, label=split, fill=False, linewidth=1.5)
    ax.set_xlabel(label)
    ax.set_ylabel('videos')
    ax.legend(fontsize=8)
  ax = axes[1, 2]
  ax.axis('off')
  text = []
  for split in splits:
    entry = card['splits'][split]
    official = (f" / {entry['official_videos']:,} official" if 'official_videos' in entry
                else '')
    text.append(f"{split}: {entry['videos']:,} videos{official}")
    text.append(f"  failed: {entry['failures']}")
    for reason, count in list(entry['failure_reasons'].items())[:4]:
      text.append(f'    {count} x {reason}')
    text.append(f"  timing: {entry['timing']}")
  ax.text(0, 1, '\n'.join(text), va='top', family='monospace', fontsize=8)
  ax.set_title('splits and failures')
  fig.suptitle(f"{card['dataset']}: {card['num_classes']} classes ({card['records']})")
  fig.tight_layout()
  with errors.replacing(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=90)
  plt.close(fig)
  return path


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m data.report',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--records', required=True, type=errors.path_argument,
                      help='records directory (python -m data.convert)')
  parser.add_argument('--output', default='', type=errors.path_argument,
                      help='where report.json/.png go (default RECORDS/report)')
  args = parser.parse_args(argv)
  try:
    card = build(args.records)
    output = args.output or os.path.join(args.records, 'report')
    problem = errors.unwritable(output)
    if problem:
      remedy = ('Free some space, or pass' if problem == os.strerror(errno.ENOSPC) else 'Pass')
      raise errors.DataError(f'Cannot write the data card to {output}: {problem}. {remedy} '
                             'another --output.')
    card_path = os.path.join(output, 'report.json')
    print(summary(card))
    with errors.replacing_together():  # never a card beside another report's picture, or none
      with errors.replacing(card_path) as f:
        json.dump(card, f, indent=1)
      picture = plot(card, os.path.join(output, 'report.png'))
    print(f'wrote {card_path} and {picture}')
    damaged = [split for split, entry in card['splits'].items() if entry['damaged']]
    if damaged:
      print(f"error: the records of split{'s' if len(damaged) > 1 else ''} "
            f"{', '.join(map(repr, damaged))} in {args.records} are damaged (the DAMAGED "
            f"line{'s' if len(damaged) > 1 else ''} above): convert the split again.",
            file=sys.stderr)
      return 1
  except errors.DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except errors.NoSpace as e:
    print(f'error: {e}. Free some space, or pass another --output.', file=sys.stderr)
    return 1
  except KeyboardInterrupt:  # asked for: one line
    print('Interrupted by Ctrl-C: the report is incomplete. Exit status 130.', file=sys.stderr)
    return 130
  return 0


if __name__ == '__main__':
  with errors.ctrl_c_while_ending(), errors.sigterm_in_one_line():
    sys.exit(main())
