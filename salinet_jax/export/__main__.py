"""The command line: python -m salinet_jax.export --workdir=DIR --output=OUT [...].

Prints one line per format (path, size, largest probability difference, top-1 agreement) and
where export.json went. Exit status: 0 written, or found already in OUT (one line, nothing
written); 1 bad input or refused (an `error: export failed:` line, after a line per failed
format where an earlier export in OUT is kept; nothing written); 2 a bad flag (one line, as
every command here); 3 written, but some format could not be converted (see export.json); 130
a Ctrl-C.
"""

import os
import sys

from data import errors as data_errors

# pylint: disable=g-import-not-at-top,wrong-import-position
with data_errors.ctrl_c_while_starting(__name__):
  from absl import app
  from absl import flags

  from salinet_jax import cli
  from salinet_jax import console
  from salinet_jax import errors
  from salinet_jax import parallel
  from salinet_jax.export import exporter
  from salinet_jax.export import formats


def define_flags(values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
  names = ','.join(formats.FORMATS)
  flags.DEFINE_string('workdir', None, 'Training workdir whose checkpoint is exported.',
                      flag_values=values)
  flags.DEFINE_string('checkpoint', 'latest', "'latest' (as eval), 'best' or a checkpoint step "
                      'directory.', flag_values=values)
  flags.DEFINE_string('formats', names, f'Comma-separated, of {names}.', flag_values=values)
  flags.DEFINE_string('output', None, 'Output folder (new or empty, or --overwrite).',
                      flag_values=values)
  flags.DEFINE_string('batch', 'dynamic', "'dynamic' (any batch) or a fixed batch N.",
                      flag_values=values)
  flags.DEFINE_multi_string('video', [], 'Certify on the views of these video files instead of '
                            'the eval split (repeatable).', flag_values=values)
  flags.DEFINE_integer('num_videos', None, 'Eval-split videos whose views certify the export '
                       f'(default {exporter.certificate.DEFAULT_NUM_VIDEOS}; not with --video).',
                       flag_values=values)
  flags.DEFINE_string('split', None, 'Split of the parity clips (default: the eval split; not '
                      'with --video).', flag_values=values)
  flags.DEFINE_bool('overwrite', False, 'Replace an earlier export in --output (only an '
                    'export: never a workdir or other files).', flag_values=values)
  flags.DEFINE_float('tolerance', None, 'Certificate tolerance (default 1e-4 for float32, 1e-2 '
                     'for bfloat16).', flag_values=values)
  flags.DEFINE_list('platforms', [], "Lowering platforms of StableHLO and SavedModel (default: "
                    "this machine's), e.g. cpu,cuda.", flag_values=values)
  flags.DEFINE_integer('benchmark', 0, 'Also time each format and the jitted model over the '
                       'parity clips this many times (clips/s in export.json).',
                       lower_bound=0, flag_values=values)
  flags.mark_flags_as_required(['workdir', 'output'], flag_values=values)
  return values


def _format_line(fmt: str, entry) -> str:
  if entry['status'] != 'ok':
    return f'{fmt}: FAILED: {entry["error"]}'
  parity = entry['parity']
  return (f'{fmt}: {entry["path"]} ({entry["bytes"] / 1e6:.2f} MB, '
          f'{entry["export_seconds"]:.1f} s), max |diff| probabilities '
          f'{parity["max_abs_diff"]["probabilities"]:.2e}, top-1 agreement '
          f'{parity["top1_agreement_views"]:.3f} of views / '
          f'{parity["top1_agreement_videos"]:.3f} of videos')


def main(argv, values) -> int:
  """Runs the export of the parsed flags `values`; returns the exit status."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    parallel.refuse_a_process_group('python -m salinet_jax.export')
    summary = exporter.export(
        values.workdir, values.output, values.formats, checkpoint=values.checkpoint,
        batch=values.batch, videos=values.video, num_videos=values.num_videos,
        overwrite=values.overwrite, tolerance=values.tolerance, platforms=values.platforms,
        benchmark=values.benchmark, split=values.split)
  except exporter.AlreadyExported as e:  # a finished command run again
    print(e)
    return 0
  except (errors.UserError, data_errors.DataError) as e:
    print(f'error: export failed: {e}', file=sys.stderr)
    return 1
  except data_errors.NoSpace as e:  # the staging folder is already removed
    print(f'error: export failed: {e}. Nothing was written to {values.output}; free some space '
          'and export again.', file=sys.stderr)
    return 1
  except KeyboardInterrupt:  # asked for: one line; the staging folder is already removed
    print(f'Interrupted by Ctrl-C: nothing was written to {values.output}. Exit status 130.',
          file=sys.stderr)
    return 130
  for fmt, entry in summary['formats'].items():
    print(_format_line(fmt, entry))
  unrun = [p for p in summary['platforms'] if p != summary['parity']['platform_run']]
  lowered = {f for f, e in summary['formats'].items() if e['status'] == 'ok'} - {'onnx'}
  if unrun and lowered:  # ONNX has no platform
    print(f'Certified on {summary["parity"]["platform_run"]} only: the {", ".join(unrun)} '
          'lowering is exported but was not run here (certify it on such a host).')
  print(f'Wrote {os.path.join(os.path.abspath(values.output), formats.EXPORT_JSON)} '
        f'({summary["export_seconds"]:.1f} s).')
  return 3 if summary['failed_formats'] else 0


def _run(argv) -> None:
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow only reloads the SavedModel here
  console.setup()
  with data_errors.ctrl_c_never_dropped():
    status = main(argv, flags.FLAGS)
  sys.exit(status)


if __name__ == '__main__':
  define_flags()
  with data_errors.ctrl_c_while_ending(), data_errors.sigterm_in_one_line():
    app.run(_run, flags_parser=cli.parse_flags)  # a bad flag: one line, status 2
