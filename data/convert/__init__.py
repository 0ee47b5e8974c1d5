"""Videos (or frame folders) plus official annotations -> sharded TFRecords, as a library.

The parts, in the order a run uses them: plans.py (the class list and items of each split, one
planner per dataset kind), files.py (finding each item's source on disk), shards.py (cutting
splits into shards, the decoder pool, resumable bookkeeping in OUTPUT/.convert/), outputs.py
(metadata.json, failures.csv, TFDS files) and cli.py (`python -m data.convert`, `main`). The
command line lives in cli.py, not __main__.py: importing __main__ here would make
`python -m data.convert` run it twice (runpy warns).
"""

from data import errors

# pylint: disable=g-import-not-at-top,wrong-import-position
with errors.ctrl_c_while_starting(__name__):  # numpy's, for `python -m data.convert`
  from data.convert.cli import VIDEO_EXTENSIONS, build_parser, convert, main
  from data.convert.files import FileIndex, attach_paths, attach_sources
  from data.convert.outputs import FAILURES_FILE, existing_metadata, write_outputs
  from data.convert.plans import KINDS, PLANNERS, ConversionError, Item, Plan, make_plan
  from data.convert.shards import (STATE_DIR, ShardJob, remove_stale_shards, run_jobs,
                                   settings_of, shard_jobs)

__all__ = [
    'VIDEO_EXTENSIONS', 'build_parser', 'convert', 'main', 'FileIndex', 'attach_paths',
    'attach_sources', 'FAILURES_FILE', 'existing_metadata', 'write_outputs', 'KINDS', 'PLANNERS',
    'ConversionError', 'Item', 'Plan', 'make_plan', 'STATE_DIR', 'ShardJob', 'remove_stale_shards',
    'run_jobs', 'settings_of', 'shard_jobs',
]
