r"""Command line: convert a PyTorch/Caffe2 checkpoint for `config.init_from`.

  python -m salinet_jax.convert --source=pyslowfast --checkpoint=I3D_NLN_8x8_R50.pkl \
      --config=configs/k400_i3d_nl.py --output=/ckpt/i3d_nln_k400
  python -m salinet_jax.convert --source=salinet --checkpoint=salinet_k400.pyth \
      --config=configs/k400_salinet.py --output=/ckpt/salinet_k400 --classes=k400_labels.txt
  python -m salinet_jax.convert --source=torchvision --checkpoint=resnet50-11ad3fa6.pth \
      --config=configs/k400_i3d_nl.py --output=/ckpt/i3d_inflated --inflate=repeat \
      --exclude='^head/|/pathway0_nonlocal\d+/'
  python -m salinet_jax.convert --source=s2dnet --checkpoint=s2dnet_sampling.pth.tar \
      --config=configs/mini_kinetics_s2dnet.py:sampling --config.model.f_theta_fix=A \
      --output=/ckpt/s2dnet_mini_kinetics

The model is built from `--config` (`--config.a.b=value` overrides any field the config has) with the number of
classes of the checkpoint's classifier (or `--num_classes`). Every model variable must come from
the checkpoint and every checkpoint tensor must be used, else the command lists what is missing,
unexpected or mis-shaped and writes nothing; `--exclude` (regex over Flax paths such as
'head/fc/kernel') leaves variables out on purpose, `--nostrict` writes what converted anyway.
`--classes` records the class names of the classifier's rows: init_from then refuses records
whose classes differ (or come in another order), and warns where a converted classifier
records none. The normalisation of the pixels the weights were trained on (the source's
convention, or `--normalization`; none for 2D kernels of --source=pyslowfast inflated, an
image network's of unknown pixels) is recorded too: init_from warns a run that normalises its pixels
otherwise.
"""

import collections
import sys

from data import errors as data_errors

# pylint: disable=g-import-not-at-top,wrong-import-position
with data_errors.ctrl_c_while_starting(__name__):
  from absl import app
  from absl import flags
  from ml_collections import config_flags

  from salinet_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_SOURCE = flags.DEFINE_enum('source', None,
                            ['pyslowfast', 'salinet', 'torchvision', 'tsm', 's2dnet'],
                            'Checkpoint family.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Checkpoint file to convert.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output directory.')
_NUM_CLASSES = flags.DEFINE_integer(
    'num_classes', 0, 'Classes of the model; 0 = rows of the checkpoint\'s classifier.',
    lower_bound=0)
_CLASSES = flags.DEFINE_string(
    'classes', None, "A file of the checkpoint's class names, one per line in its classifier's "
    'row order (e.g. the label map it was trained with): recorded, so that init_from checks '
    "them against the records' classes.")
_NORMALIZATION = flags.DEFINE_string(
    'normalization', None, 'The config.data.normalization preset of the pixels the weights were '
    "trained on (default: the --source family's convention): recorded for init_from to compare.")
_EXCLUDE = flags.DEFINE_string('exclude', '', 'Regex over Flax variable paths to leave out.')
_STRICT = flags.DEFINE_bool('strict', True, 'Fail on missing, unexpected or mis-shaped tensors.')
_INFLATE = flags.DEFINE_enum('inflate', None, ['none', 'repeat', 'centre'],
                             '2D -> 3D kernels: repeat/kT over time or centre tap (default: '
                             'repeat for torchvision into a 3D model, else none).')
_TARGET = flags.DEFINE_enum('target', 'auto', ['auto', 'snet', 'dnet'],
                            'S2DNet only: which network a 2D checkpoint initialises.')
_TRUST_PICKLE = flags.DEFINE_bool('trust_pickle', False,
                                  'Open PyTorch files with weights_only=False (trusted files '
                                  'that pickle Python objects besides tensors).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing output.')
flags.mark_flags_as_required(['config', 'source', 'checkpoint', 'output'])
# An empty value (an unset shell variable) passes the required-flag check: refuse it too, or an
# empty --output writes into the current directory.
flags.register_validator(
    'checkpoint', lambda value: value is None or any(p.strip() for p in value.split(',')),
    '--checkpoint names no file')
flags.register_validator('output', lambda value: value is None or bool(value.strip()),
                         '--output is empty')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with data_errors.ctrl_c_while_starting():  # JAX's import, here so that --help stays instant
    from salinet_jax import console  # pylint: disable=g-import-not-at-top
  console.setup()
  with cli.user_errors_in_one_line():  # a missing, damaged or unsafe checkpoint, a bad --exclude
    _convert()


def _convert():
  """Reads, converts and writes the checkpoint of the parsed flags."""
  from salinet_jax import convert  # pylint: disable=g-import-not-at-top
  from salinet_jax import errors  # pylint: disable=g-import-not-at-top
  from salinet_jax import inputs  # pylint: disable=g-import-not-at-top
  from salinet_jax import parallel  # pylint: disable=g-import-not-at-top
  from salinet_jax import pretrained  # pylint: disable=g-import-not-at-top
  from salinet_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from salinet_jax.models import s2dnet as s2dnet_model  # pylint: disable=g-import-not-at-top

  parallel.refuse_a_process_group('python -m salinet_jax.convert')
  config = _CONFIG.value
  source = convert.SOURCES[_SOURCE.value]
  two_d = source.name in convert.TWO_D_SOURCES
  # Given where nothing reads them, they were ignored and the conversion went ahead.
  if _TARGET.value != 'auto' and not (two_d and config.model.name == 's2dnet'):
    raise errors.ConversionError(
        f'--target picks the S2DNet network a 2D checkpoint (--source='
        f'{" or ".join(convert.TWO_D_SOURCES)}) initialises; it is not read for --source='
        f'{source.name} into {config.model.name!r}.')
  if _INFLATE.value is not None and config.model.name not in convert.I3D_MODELS:
    raise errors.ConversionError(
        f'--inflate turns 2D kernels into the 3D kernels of an I3D ('
        f'{", ".join(convert.I3D_MODELS)}); it is not read for model {config.model.name!r}.')
  if (_NORMALIZATION.value is not None
      and _NORMALIZATION.value not in inputs.NORMALIZATION_PRESETS):
    raise errors.ConversionError(
        f'--normalization must be one of {sorted(inputs.NORMALIZATION_PRESETS)} '
        f"(config.data.normalization's presets), got {_NORMALIZATION.value!r}.")
  exclude = convert.sanitize_regex(_EXCLUDE.value)
  paths = [p for p in _CHECKPOINT.value.split(',') if p]
  if len(paths) > 1 and config.model.name != 's2dnet':
    raise errors.ConversionError('Several --checkpoint files (comma-separated) only combine for '
                                 'S2DNet (an SNet and a DNet backbone).')
  loaded = [convert.read_checkpoint(source.name, p, _TRUST_PICKLE.value) for p in paths]
  num_classes = _NUM_CLASSES.value
  for state_dict, _ in loaded:
    num_classes = num_classes or convert.num_classes_of(state_dict, source.classifier_keys)
  if not num_classes and config.model.name == 's2dnet':
    # The backbones converted from 2D checkpoints do not depend on it; the synopsis' top-k needs
    # more classes than it picks.
    num_classes = config.model.get('topk', s2dnet_model.S2DNet.topk) + 1
  if not num_classes:
    raise errors.ConversionError(
        f'The checkpoint has no classifier ({", ".join(source.classifier_keys)}): pass '
        '--num_classes.')
  classes = _class_names(_CLASSES.value, num_classes) if _CLASSES.value else None
  model = build_model(config.model, num_classes, 'float32')
  template = convert.model_template(model, inputs.clip_shape(config.data))
  options = {'target': _TARGET.value}
  parts, report = [], None
  for path, (state_dict, unplaced) in zip(paths, loaded):
    part, part_report = convert.convert(source.name, state_dict, template, config.model.name,
                                        exclude=exclude, inflate_mode=_INFLATE.value,
                                        options=options, unplaced=unplaced)
    if len(paths) > 1:
      print(f'{path}: {part_report.summary(limit=50)}')
    parts.append((path, part))
    report = part_report if report is None else convert.merge_reports(report, part_report)
  variables = convert.merge_parts(parts)
  print(report.summary(limit=50))
  if exclude and not report.excluded:
    raise errors.ConversionError(
        f'--exclude={exclude!r} matches nothing in the model or the checkpoint (a regex '
        'searched in Flax paths such as head/fc/kernel and in checkpoint names), so it leaves '
        'nothing out.')
  if _STRICT.value and not report.ok:
    print('Nothing written: fix the mismatch, leave tensors out with --exclude, or pass '
          '--nostrict to write what converted.', file=sys.stderr)
    sys.exit(1)
  absent = convert.networks_not_converted(variables, config.model.name)
  if _STRICT.value and absent:
    print(f"Nothing written: no checkpoint converted into S2DNet's {' and '.join(absent)}; its "
          'warm-up starts from both networks: pass one checkpoint for each, comma-separated '
          '(or --nostrict to write what converted).', file=sys.stderr)
    sys.exit(1)
  normalization = _NORMALIZATION.value
  if normalization is None:
    normalization = (source.inflated_normalization if report.inflated_from_2d
                     else source.normalization)
    if normalization is None:
      print(f'The normalisation of the pixels the inflated 2D weights were trained on is not '
            f'known for --source={source.name}, so none is recorded: pass '
            '--normalization=PRESET to record it (init_from then compares it with the run).')
  info = {
      'source': source.name, 'checkpoint': paths, 'model': config.model.to_dict(),
      'num_classes': num_classes, 'normalization': normalization, 'exclude': exclude,
      'inflate': _INFLATE.value, 'target': _TARGET.value, 'report': report.to_dict(),
  }
  if classes:
    info['classes'] = classes
  out = pretrained.save_converted(_OUTPUT.value, variables, info, overwrite=_OVERWRITE.value)
  print(f'Wrote {out}')


def _class_names(path: str, num_classes: int) -> list:
  """The class names of --classes: one per line (blank lines and surrounding spaces dropped), as
  many as the classifier has rows, none twice."""
  from salinet_jax import errors  # pylint: disable=g-import-not-at-top
  try:
    with open(path, encoding='utf-8-sig') as f:
      names = [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise errors.ConversionError(f'--classes={path} cannot be read: {e.strerror}.') from None
  if len(names) != num_classes:
    raise errors.ConversionError(
        f'--classes={path} lists {len(names)} class names, but the classifier has {num_classes} '
        'rows: give one name per line, in row order.')
  twice = sorted(name for name, count in collections.Counter(names).items() if count > 1)
  if twice:
    raise errors.ConversionError(f'--classes={path} lists {", ".join(twice[:5])} more than once.')
  return names


if __name__ == '__main__':
  with data_errors.ctrl_c_while_ending(), data_errors.sigterm_in_one_line():
    app.run(main, flags_parser=cli.parse_flags)
