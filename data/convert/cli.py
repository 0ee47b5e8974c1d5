r"""Converts videos (or extracted frames) plus official annotation files into sharded TFRecords.

  python -m data.convert --dataset=KIND --input=DIR --output=DIR [--annotations=PATH] [--split=NAME]

KIND and what --input / --annotations are:
  kinetics400, kinetics600  --input: the downloaded clips, `<youtube_id>_<start:06d>_<end:06d>.<ext>`
                            (or `<youtube_id>.<ext>`), flat or in per-class / per-split folders.
                            --annotations: crawler CSV(s), comma separated, `[split=]path`; the split
                            is read from the file name (train / val|validate / test) unless given.
                            Classes: sorted label names of the labeled CSVs (or --class_list).
  ucf101                    --input: UCF-101/ (`<Class>/v_*.avi`). --annotations: ucfTrainTestlist/
                            (classInd.txt, trainlist0k.txt, testlist0k.txt); --fold=1|2|3|all gives
                            splits train<k>/test<k>. Classes: classInd order.
  hmdb51                    --input: the per-class folders of .avi. --annotations: the official
                            testTrainMulti_7030_splits/ folder (`*_test_split<k>.txt`) with --fold,
                            or TSN-form list file(s) `split=path` (`<dir> <frames> <label>`).
  ssv2                      --input: the .webm files. --annotations: folder holding
                            something-something-v2-{labels,train,validation,test}.json
                            (splits train / val / test). Classes: the labels json index order.
  mini_kinetics             --input: a Kinetics-400 clip folder. --annotations: folder with
                            {train,val}_ytid_list.txt; --kinetics_csv: labeled K400 CSV(s) for them.
  folder                    --input: `<class>/<video>` or `<class>/<group>/<video>` tree (classes =
                            sorted folder names); --split_by_group=subfolder keeps each group on one
                            side of a train/val split (=file splits by video; --val_fraction).
  list                      --annotations: `[split=]path` list file(s) of `<path> <label>` lines or a
                            CSV with a header (`--path_column`, `--label_column`); with
                            --split_by_group=COLUMN the CSV is split into train/val by that column
                            (whole groups go to one side; --val_fraction, --val_groups, --group_seed).
  frames                    --input: frame folders. --annotations: TSN list(s) `<dir> <frames> <label>`
                            of `--frame_template` files (default {:06d}.jpg, from --frame_start).

Frames are decoded with PyAV in presentation order, turned upright from rotation metadata, stored
at --fps (0: every native frame) with short side --short_side (256) as JPEG (--jpeg_quality);
--frame_height=H stores every frame H px high instead, whatever its orientation (TSM's frame
extraction, ffmpeg's scale=-1:H, which S2DNet's recipes were trained on at 331).
Class indices follow the official class order (--class_list overrides it for the kinds that have
no official list file: kinetics, mini_kinetics, folder, list, frames); a label missing from the
class list stops the run before any decoding, listing every offender. Flags the kind does not
read are refused, and list files mixing integer and name labels too (but with
--integer_labels=name).

The work runs over --workers processes with a progress bar. Each shard is written to a temporary
name and renamed when complete, with its bookkeeping in OUTPUT/.convert/; a re-run with the same
arguments skips finished shards, but not those holding a video whose file changed since (its size
or modification time; a frame folder's own, which frames added or removed change, not frames
rewritten in place). Shards are counted by the videos found. A video that is missing, empty,
corrupt or has no frames is left out and reported (file, reason) in metadata.json and
OUTPUT/failures.csv; the run carries on. A video kept with something to know about it (decoded well
short of the length its container declares, as a partly downloaded file is; or timed by frame count
because its timestamps stop increasing and are unevenly spaced) is reported in OUTPUT/warnings.csv
and metadata.json. The pairs of splits in OUTPUT holding the same videos (by source file) are
named after each run, with how many: a model trained on one is not to be scored on the other.

Output (OUTPUT/): `<name>-<split>.tfrecord-<i:05d>-of-<n:05d>` shards (data/records.py schema),
metadata.json, failures.csv, warnings.csv, and TFDS's dataset_info.json + features.json: see
data/records.py for what `tfds.builder_from_directory(OUTPUT)` gives. Exit status: 0 when at
least one video of each converted split was written, 1 otherwise or when the disk is full, 2
for bad arguments or annotations, 130 after a Ctrl-C (finished shards are kept for the re-run,
after a full disk too).
"""

import argparse
import math
import os
import sys
import time
from typing import TYPE_CHECKING, List, Optional, Sequence

from data import datasets
from data import errors as data_errors
from data import video_io
from data.convert.outputs import FAILURES_FILE, WARNINGS_FILE, existing_metadata, write_outputs
from data.convert.outputs import video_warnings
from data.convert.plans import (DEFAULT_GROUP_SEED, DEFAULT_VAL_FRACTION, KINDS, ConversionError,
                                 make_plan, split_specs)
from data.convert.shards import remove_stale_shards, run_jobs, settings_of, shard_jobs

if TYPE_CHECKING:  # TensorFlow is imported lazily: worker processes never need it
  from data import records  # pylint: disable=g-bad-import-order

VIDEO_EXTENSIONS = video_io.VIDEO_EXTENSIONS


def _names(classes, shown: int = 12) -> str:
  """The class names for a summary line: all of a few, the first `shown` of many."""
  head = ', '.join(classes[:shown])
  return head if len(classes) <= shown else f'{head}, ... ({len(classes) - shown} more)'


def _replaced_conversions(before, plan, args) -> List[str]:
  """A line per split in the output that this run converts again with other settings: a model
  trained on the old records is then evaluated or resumed on other frames (train and eval say
  so, from what each checkpoint keeps of its records)."""
  if before is None:
    return []
  from data import records  # pylint: disable=g-import-not-at-top,redefined-outer-name
  settings, lines = settings_of(args), []
  for split in sorted(plan.splits):
    old = records.conversion_settings(before, split) or {}
    changed = [f'{name} {old[name]!r} -> {settings[name]!r}' for name in sorted(settings)
               if name in old and old[name] != settings[name]]
    if changed:
      lines.append(f"split {split!r} is converted again with other settings ({', '.join(changed)})"
                   ': a model trained on the old records sees other frames (checkpoints keep '
                   'which conversion they trained on, and say so when evaluated or resumed).')
  return lines


def _clip_settings_unlike_kept_splits(before, plan, args) -> List[str]:
  """A line per split this run converts with other clip settings (records.CLIP_SETTINGS) than a
  split it keeps in the output: a model trained on one is scored on clips spanning other
  lengths of time in the other (training and eval say so too)."""
  from data import records  # pylint: disable=g-import-not-at-top,redefined-outer-name
  if before is None:
    return []
  conversions = before.extra.get('conversion', {})
  kept = [split for split in sorted(before.split_sizes) if split not in plan.splits]
  lines = []
  for split in sorted(plan.splits):
    for other in kept:
      unlike = records.unlike_clip_settings(split, settings_of(args), other,
                                            (conversions.get(other) or {}).get('settings'))
      if unlike:
        lines.append(f'split {split!r} is converted with other clip settings than split '
                     f'{other!r} kept in {os.path.abspath(args.output)} ({unlike}): a model '
                     'trained on one and scored on the other sees clips of other lengths in '
                     'time; convert them alike.')
  return lines


def convert(args) -> Optional['records.DatasetMetadata']:
  """Runs a whole conversion for parsed arguments; returns the written metadata (None for
  --dry_run). Splits other than this run's, already in the output, are kept."""
  output = os.path.abspath(args.output)
  args = _with_stored_size(args)
  _refuse_flags_the_kind_ignores(args)
  if not os.path.isdir(args.input):  # every listed video was a failure line, then an error
    raise ConversionError(f'--input {args.input} ' + ('is a file, not the folder the videos are '
                                                      'in.' if os.path.exists(args.input) else
                                                      'does not exist.'))
  plan = make_plan(args)
  _refuse_names_not_utf8(plan, args)
  problem = data_errors.unwritable(output)
  if problem:
    raise ConversionError(f'Cannot write the records to {output}: {problem}.')
  from data import records  # pylint: disable=g-import-not-at-top
  if args.dry_run:
    writer = records.writer_of(output)
    if writer is not None:
      print(f'warning: records folder {output} is being written now by '
            f'{records.describe_writer(writer)}: this conversion would be refused until it ends.',
            file=sys.stderr)
    return _convert_planned(args, plan, output)
  with records.sole_writer(output, plan.splits) as writing:
    if not writing.guarded:
      print(f'warning: {output} takes no file locks (its filesystem has none, or they are off): '
            'a second conversion into it would not be refused, and readers would not be told '
            'of this one. Run one conversion at a time into it.', file=sys.stderr)
    return _convert_planned(args, plan, output)


def _convert_planned(args, plan, output: str) -> Optional['records.DatasetMetadata']:
  """`convert` once planned: the shards, metadata.json and the console's account of them."""
  jobs = shard_jobs(plan, args, output)
  counts = {split: len(items) for split, items in plan.splits.items()}
  missing = sum(1 for items in plan.splits.values() for i in items if i.missing)
  print(f'{plan.name}: {len(plan.classes)} classes ({_names(plan.classes)}), videos per split '
        f'{counts}, {len(jobs)} shards, {missing} listed videos left out (not found, found '
        'twice or listed twice: each becomes a failure).', file=sys.stderr)
  before = existing_metadata(output, plan)  # fail before decoding anything, dry run or not
  for line in (plan.warnings + official_class_warnings(plan, args) + coverage_warnings(plan)
               + unlabelled_warnings(plan)
               + share_warnings(plan, args)
               + frame_rate_warnings(plan, args) + _replaced_conversions(before, plan, args)
               + _clip_settings_unlike_kept_splits(before, plan, args)):
    print(f'warning: {line}', file=sys.stderr)
  if args.dry_run:
    return None
  remove_stale_shards(output, plan, jobs)
  start = time.time()
  states = run_jobs(jobs, args, output)
  metadata = write_outputs(output, plan, jobs, states, args)
  failed = [f for f in metadata.failures if f['split'] in plan.splits]
  print(f'Wrote {sum(metadata.split_sizes[s] for s in plan.splits)} videos '
        f'({ {s: metadata.split_sizes[s] for s in sorted(plan.splits)} }) to {output} in '
        f'{time.time() - start:.1f}s; {len(failed)} failed'
        + (f' (see {os.path.join(output, FAILURES_FILE)})' if failed else '') + '.',
        file=sys.stderr)
  for failure in failed[:10]:
    print(f"  {failure['split']}: {failure['file']}: {failure['reason']}", file=sys.stderr)
  warned = video_warnings(states)
  if warned:
    print(f'warning: {len({(split, file) for split, file, _ in warned})} video(s) converted with '
          f'a warning (all in {os.path.join(output, WARNINGS_FILE)}):', file=sys.stderr)
    for split, file, warning in warned[:10]:
      print(f'  {split}: {file}: {warning}', file=sys.stderr)
  unchecked = sum(1 for state in states.values()
                  if state['videos'] and 'warnings' not in state['videos'][0])
  if unchecked:
    print(f'warning: {unchecked} shard(s) were written by a version that kept no video '
          'warnings: their videos were not checked for them (convert them anew to check).',
          file=sys.stderr)
  for line in (emptied_class_warnings(plan, metadata) + enlarged_warnings(states, args)
               + uncounted_share_warnings(plan, metadata) + shared_video_warnings(plan, metadata)):
    print(f'warning: {line}', file=sys.stderr)
  return metadata


def _refuse_names_not_utf8(plan, args) -> None:
  """A ConversionError naming the video files and class folders whose names are not UTF-8
  (e.g. latin-1 names from an old archive), before any work: the records store names as UTF-8,
  and each such video stopped the whole conversion with a UnicodeEncodeError."""
  names = [item.filename for items in plan.splits.values() for item in items]
  bad = data_errors.not_utf8(names + list(plan.classes))
  if bad:
    raise ConversionError(
        f'{len(bad)} video file or class folder name(s) are not UTF-8 text, which the records '
        f'store names as: {data_errors.first_few(bad)} (undecodable bytes shown escaped). '
        f'Rename them (e.g. convmv -f latin1 -t utf8 -r --notest {args.input}) and run the same '
        'command again.')


def shared_video_warnings(plan, metadata, most: int = 12) -> List[str]:
  """One line naming the pairs of splits holding the same videos where one of the pair is this
  run's (official folds do: UCF101's test2 is in train1; so do lists written by hand that
  overlap), with how many; the first `most` pairs, the rest counted."""
  shared = metadata.extra.get('shared_videos', {})
  pairs = sorted({tuple(sorted((split, other))): count for split in plan.splits
                  for other, count in shared.get(split, {}).items() if count}.items())
  if not pairs:
    return []
  named = ', '.join(f'{a!r} and {b!r} share {count}' for (a, b), count in pairs[:most])
  more = (f' and {len(pairs) - most} more pair(s) (metadata.json, extra.shared_videos)'
          if len(pairs) > most else '')
  return ['splits holding the same videos (a model trained on one and scored on the other is '
          f'scored on videos it trained on; training and eval say so): {named}{more}.']


def uncounted_share_warnings(plan, metadata) -> List[str]:
  """A line per split of this run whose shared videos with another split in the output could
  not be counted (that split's bookkeeping in .convert/ is gone, or from before sources were
  kept): training and eval then cannot say where one holds videos of the other."""
  shared = metadata.extra.get('shared_videos', {})
  lines = []
  for split in sorted(plan.splits):
    others = sorted(other for other in metadata.split_sizes
                    if other != split and other not in shared.get(split, {}))
    if others:
      lines.append(f'split {split!r}: the videos it shares with split(s) {others} cannot be '
                   "counted (their shards' bookkeeping in .convert/ is gone, or older than this "
                   'count): training and eval cannot warn where one holds videos of the other; '
                   'convert those splits again to count them.')
  return lines


def enlarged_warnings(states, args) -> List[str]:
  """A line when this run stored videos whose source short side is below --short_side (height
  below --frame_height): they were enlarged, with detail the source never had, and training's
  warning about enlarged frames compares with the stored size, so it cannot tell."""
  flag, wanted = (('frame_height', args.frame_height) if args.frame_height else
                  ('short_side', args.short_side))
  if not wanted:
    return []
  measure = ((lambda video: video.get('source_height', 0)) if args.frame_height else
             (lambda video: min(video.get('source_height', 0), video.get('source_width', 0))))
  smaller = sorted((measure(video), state['split'], video['filename'])
                   for state in states.values() for video in state['videos']
                   if 0 < measure(video) < wanted)
  if not smaller:
    return []
  side, split, file = smaller[0]
  what, keep = (('a height', ", or with --short_side=0 (each video's size) instead,")
                if args.frame_height else ('a short side', " (0 keeps each video's size)"))
  return [f'{len(smaller)} video(s) converted in this run have {what} below '
          f'--{flag}={wanted} (the smallest {side} px: {split}: {file}) and were '
          'stored enlarged to it, with detail the source never had: convert with a smaller '
          f'--{flag}{keep} to store them as they are.']


def emptied_class_warnings(plan, metadata) -> List[str]:
  """A line per split where classes the annotations gave videos hold none once the failures
  are left out (e.g. a header line read as a video of class 'label', whose file is missing)."""
  lines = []
  for split, items in sorted(plan.splits.items()):
    listed = {item.label_index for item in items}
    written = metadata.extra.get('videos_per_class', {}).get(split) or ()
    emptied = [name for index, name in enumerate(plan.classes)
               if index in listed and index < len(written) and not written[index]]
    if emptied:
      lines.append(f'split {split!r}: no video of class(es) {emptied[:20]} could be converted '
                   '(see the failures above): they stay classes of the model, without videos.')
  return lines


# Flags for one kind of source only, with the kinds they are for: given for another they would be
# ignored, while metadata.json recorded them as applied.
_FRAMES_FLAGS = ('frame_template', 'frame_start', 'frames_fps')
_VIDEO_FLAGS = ('fps', 'interpolation', 'decode_threads')
# Annotation flags that only some kinds read, with those kinds (the official datasets' kinds
# order their classes as their annotations do, so --class_list is not theirs).
_KIND_FLAGS = {
    'class_list': ('kinetics400', 'kinetics600', 'mini_kinetics', 'folder', 'list', 'frames'),
    'fold': ('ucf101', 'hmdb51'),
    'kinetics_csv': ('mini_kinetics',),
    'label_index_base': ('list', 'frames'),
    'integer_labels': ('list', 'frames'),
    'path_column': ('list',),
    'label_column': ('list',),
}


def _refuse_flags_the_kind_ignores(args) -> None:
  defaults = build_parser()

  def given(names) -> List[str]:
    return [name for name in names if getattr(args, name) != defaults.get_default(name)]

  def only_apply(names) -> str:
    return ' and '.join(f'--{n}' for n in names) + (' only applies' if len(names) == 1 else
                                                      ' only apply')

  frames = args.dataset == 'frames'
  other_source = given(_VIDEO_FLAGS if frames else _FRAMES_FLAGS)
  if other_source:
    raise ConversionError(
        f'{only_apply(other_source)} to '
        + ('videos; frame folders are stored as they are (--frames_fps gives their rate)'
           if frames else 'frame folders (--dataset=frames)') + ': it would be ignored.')
  other_kind = given(n for n, kinds in _KIND_FLAGS.items() if args.dataset not in kinds)
  if other_kind:
    kinds = sorted({kind for n in other_kind for kind in _KIND_FLAGS[n]}, key=KINDS.index)
    raise ConversionError(f'{only_apply(other_kind)} to --dataset={"|".join(kinds)}: with '
                          f'--dataset={args.dataset} it would be ignored.')
  if args.dataset == 'list' and args.annotations:
    csv = any(path.lower().endswith('.csv') for _, path in split_specs(args.annotations, 'list'))
    other_format = given(('path_column', 'label_column')) if not csv else []
    if other_format:
      raise ConversionError(f'{only_apply(other_format)} to CSV lists (with a header): it would '
                            'be ignored.')


def _with_stored_size(args) -> argparse.Namespace:
  """A copy of `args` whose --short_side is resolved: its default, or 0 (recorded so: the
  stored short side varies with orientation) with --frame_height."""
  if args.frame_height and args.short_side is not None:
    raise ConversionError(f'--short_side={args.short_side} and --frame_height={args.frame_height} '
                          'both set the stored size: give one of them.')
  short_side = (0 if args.frame_height else video_io.DEFAULT_SHORT_SIDE
                if args.short_side is None else args.short_side)
  return argparse.Namespace(**dict(vars(args), short_side=short_side))


def coverage_warnings(plan) -> List[str]:
  """One line per labelled split that lacks some classes: a model trained without a class
  still predicts it, and an evaluation without it scores the others only."""
  lines = []
  for split, items in sorted(plan.splits.items()):
    labelled = {item.label_index for item in items if item.label_index >= 0}
    absent = [name for index, name in enumerate(plan.classes) if index not in labelled]
    if labelled and absent:
      lines.append(f'split {split!r} has no video of {len(absent)} of the {len(plan.classes)} '
                   f'classes: {absent[:20]}' + (' ...' if len(absent) > 20 else '') + '.')
  return lines


def official_class_warnings(plan, args) -> List[str]:
  """A line when a registered dataset's name is given classes of another count (Kinetics-600's
  CSVs as kinetics400): training would say so, but only once the records are written."""
  info = datasets.REGISTRY.get(plan.name)
  if info is None or len(plan.classes) == info.num_classes:
    return []
  count = len(plan.classes)
  kinds = ([name for name, other in sorted(datasets.REGISTRY.items())
            if other.num_classes == count and name in KINDS]
           if args.dataset == plan.name else [])  # another kind is renamed, not re-kinded
  return [f'these annotations give {count} classes; the official {plan.name!r} has '
          f"{info.num_classes}: another dataset's annotation files? ("
          + (f"{' or '.join('--dataset=' + name for name in kinds)} has {count}" if kinds
             else '--name=NAME converts them as a dataset of your own') + ')']


def unlabelled_warnings(plan) -> List[str]:
  """A line per split holding unlabelled videos beside labelled ones, or named for training:
  training refuses them (their label -1 is no class), an evaluation leaves them out of its
  accuracy."""
  lines = []
  for split, items in sorted(plan.splits.items()):
    unlabelled = sum(item.label_index < 0 for item in items)
    if unlabelled and (unlabelled < len(items) or split.startswith('train')):
      lines.append(f'split {split!r} holds {unlabelled} unlabelled video(s) of its {len(items)} '
                   '(annotation rows without a label): training refuses a split with unlabelled '
                   'videos; an evaluation scores them without counting them in its accuracy.')
  return lines


def frame_rate_warnings(plan, args) -> List[str]:
  """A line when frame folders are converted without --frames_fps: their rate is stored as
  unknown, which sampling by time and predict can only guess."""
  folders = sum(item.kind == 'frames' for items in plan.splits.values() for item in items)
  if not folders or args.frames_fps > 0:
    return []
  return [f'{folders} frame folder(s) are converted without --frames_fps: their rate is stored as '
          "unknown (0), so temporal_sampling='pyslowfast' takes them at config.data.target_fps "
          'and predict decodes videos at their native rate. Pass --frames_fps with the rate the '
          'frames were extracted at.']


def share_warnings(plan, args) -> List[str]:
  """A line when a group split's val share is well above --val_fraction: whole groups, or
  groups added so that more classes are evaluated on (data/annotations/lists.split_by_group).
  Nothing when --split converts one side only (its share of the split is not known here)."""
  total = sum(len(items) for items in plan.splits.values())
  val = len(plan.splits.get('val', ()))
  if not args.split_by_group or args.val_groups or args.split or not total:
    return []
  if val / total > 1.2 * args.val_fraction and val - args.val_fraction * total >= 2:
    return [f'val holds {val} of {total} videos ({100 * val / total:.0f}%) for --val_fraction='
            f'{args.val_fraction:g}: groups go whole, and classes without a val group get one '
            'where the bounds allow.']
  return []


def build_parser() -> argparse.ArgumentParser:
  """The command line's flags; its help is this module's docstring."""
  p = argparse.ArgumentParser(
      prog='python -m data.convert', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
  p.add_argument('--dataset', required=True, choices=KINDS, help='source layout / dataset kind')
  p.add_argument('--input', required=True, type=data_errors.path_argument,
                 help='root of the videos or frame folders')
  p.add_argument('--output', required=True, type=data_errors.path_argument,
                 help='records directory to write')
  p.add_argument('--annotations', default='', type=data_errors.path_argument,
                 help='annotation file(s) or folder (see above)')
  p.add_argument('--split', default='', help='split name (single-split kinds) or the one split '
                 'to convert')
  p.add_argument('--name', default='', help='dataset name in shard files, metadata and TFDS '
                 '(default: the kind; use the registry name, e.g. fight_surv)')
  p.add_argument('--class_list', default='', type=data_errors.path_argument,
                 help='class names one per line, in index order, or `<index> <name>` lines '
                 'numbered in order from 0 or 1 (classInd.txt)')
  p.add_argument('--fold', default=None, help='ucf101/hmdb51 fold: 1 (the default), 2, 3 or all')
  p.add_argument('--kinetics_csv', default='', type=data_errors.path_argument,
                 help='mini_kinetics: labeled K400 CSV(s)')
  p.add_argument('--extensions', default=','.join(VIDEO_EXTENSIONS), help='video extensions')
  p.add_argument('--path_column', default='path', help='CSV lists: column of the video path')
  p.add_argument('--label_column', default='label', help='CSV lists: column of the label')
  p.add_argument('--label_index_base', type=int, default=0, help='integer labels start here')
  p.add_argument('--integer_labels', choices=('', 'index', 'name'), default='',
                 help='integer labels are indices into the class list (index) or class names '
                 '(name); needed only where classes are named by integers and the two differ')
  p.add_argument('--split_by_group', default='', help='split train/val by whole groups: a CSV '
                 'column (list), subfolder or file (folder)')
  p.add_argument('--val_fraction', type=in_range(float, 0.0, 1.0), default=None,
                 help='share of videos in val '
                 f'(with --split_by_group; default {DEFAULT_VAL_FRACTION})')
  p.add_argument('--val_groups', default='', help='comma-separated groups forced into val (with '
                 '--split_by_group)')
  p.add_argument('--group_seed', type=int, default=None, help='seed of the group split (with '
                 f'--split_by_group; default {DEFAULT_GROUP_SEED})')
  p.add_argument('--fps', type=in_range(float, 0.0), default=0.0,
                 help='stored frame rate; 0 = native')
  p.add_argument('--short_side', type=in_range(int, 0), default=None,
                 help=f'stored short side in pixels (default {video_io.DEFAULT_SHORT_SIDE}); '
                 '0 = original size')
  p.add_argument('--frame_height', type=in_range(int, 0), default=0,
                 help='stored height in pixels of every upright frame, portrait ones included, '
                 'instead of --short_side; 0 = use --short_side')
  p.add_argument('--jpeg_quality', type=in_range(int, 1, 100),
                 default=video_io.DEFAULT_JPEG_QUALITY)
  p.add_argument('--max_frames', type=in_range(int, 0), default=0,
                 help='keep at most this many frames; 0 = all')
  p.add_argument('--interpolation', default=video_io.DEFAULT_INTERPOLATION,
                 choices=video_io.INTERPOLATIONS, help='swscale resize filter')
  p.add_argument('--decode_threads', type=in_range(int, 0), default=1,
                 help='FFmpeg threads per video')
  p.add_argument('--frame_template', default='{:06d}.jpg', help='frames: file name template')
  p.add_argument('--frame_start', type=in_range(int, 0), default=1,
                 help='frames: first frame number')
  p.add_argument('--frames_fps', type=in_range(float, 0.0), default=0.0,
                 help='frames: rate they were taken at')
  p.add_argument('--workers', type=in_range(int, 1), default=os.cpu_count() or 1,
                 help='decoding processes')
  p.add_argument('--videos_per_shard', type=in_range(int, 1), default=32,
                 help='shard size, counted in the videos found (listed ones missing add none)')
  p.add_argument('--num_shards', type=in_range(int, 0), default=0,
                 help='shards per split (overrides --videos_per_shard; at most one per video '
                 'found)')
  p.add_argument('--shuffle_seed', type=in_range(int, -1), default=0,
                 help='order of videos in shards; -1 keeps '
                 'the annotation order')
  p.add_argument('--dry_run', action='store_true', help='parse annotations, print the plan, stop')
  p.add_argument('--quiet', action='store_true', help='no progress bar')
  return p


def in_range(kind, low, high=None):
  """An argparse type: `kind` from `low` to `high` (None: no limit), else one usage line (a
  negative --max_frames kept one frame of every video, a --short_side of -64 the native size)."""
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'expected {kind.__name__}, got {text!r}') from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
      bounds = f'at least {low}' if high is None else f'from {low} to {high}'
      raise argparse.ArgumentTypeError(
          f'must be {bounds if math.isfinite(value) else "a finite number, " + bounds}, '
          f'got {text}')
    return value
  return parse


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command line; returns the exit status (see the module docstring)."""
  args = build_parser().parse_args(argv)
  try:
    with data_errors.sigterm_raises():
      metadata = convert(args)
  except (ConversionError, data_errors.DataError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except data_errors.NoSpace as e:
    print(f'error: {e}. The shards finished so far stay in {os.path.abspath(args.output)}; free '
          'some space and the same command resumes from them.', file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:  # asked for, not a bug: one line, and the status a shell gives
    how, status = (('Stopped by SIGTERM', 143) if isinstance(e, data_errors.Terminated) else
                   ('Interrupted by Ctrl-C', 130))
    print(f'{how}: the shards completed so far stay in {args.output}, and the same command '
          f'resumes from them. Exit status {status}.', file=sys.stderr)
    return status
  if metadata is None:
    return 0
  empty = [s for s in metadata.extra['last_run'] if not metadata.split_sizes.get(s)]
  if empty:
    print(f'error: no video of split(s) {empty} could be converted.', file=sys.stderr)
  return 1 if empty else 0
