"""Model information: parameters and per-view GFLOPs of a config's model, by module group; with
--recipe, the resolved training and test recipe (salinet_jax/recipe.py).

  python -m salinet_jax.info --config=configs/k400_salinet.py [--json] [--params]
  python -m salinet_jax.info --config=configs/k400_salinet.py --recipe [--json] \
      [--video_frames=300 --video_fps=30]

FLOPs follow fvcore/PySlowFast: one multiply-accumulate counts as one FLOP; BatchNorm, activations
and pooling are not counted. Reported for the training input (num_frames x crop_size^2) and the
test input (num_frames x eval_crop_size^2); nothing is run, the model is only traced.
"""

import json
from typing import Any, Dict, Tuple

import data
from data import errors as data_errors

data.quiet_tensorflow()  # before TensorFlow is imported

# pylint: disable=g-import-not-at-top,wrong-import-position
with data_errors.ctrl_c_while_starting(__name__):
  from absl import app
  from absl import flags
  from clu import parameter_overview
  import flax
  from ml_collections import config_flags

  from data import datasets
  from data import pipeline
  from data import synthetic
  from salinet_jax import cli
  from salinet_jax import console
  from salinet_jax import errors
  from salinet_jax import flops
  from salinet_jax import inputs
  from salinet_jax import models
  from salinet_jax import recipe
  from salinet_jax.models import build_model

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_bool('json', False, 'Print one machine-readable JSON object instead of a table.')
flags.DEFINE_bool('count_norm', False, 'Also count BatchNorm (2 FLOPs per element, fvcore style).')
flags.DEFINE_bool('params', False, 'Also print every parameter (clu.parameter_overview table; '
                  'with --json, its "parameters" field).')
flags.DEFINE_bool('recipe', False, 'Print the recipe card instead of the model report.')
flags.DEFINE_integer('video_frames', 0, 'Recipe card: frames of a video whose test clip frame '
                     'indices to list.', lower_bound=0)
flags.DEFINE_float('video_fps', 30.0, 'Recipe card: the frame rate of that video.', lower_bound=0.0)
# The flags only the recipe card reads, and those only the model report reads.
RECIPE_FLAGS = ('video_frames', 'video_fps')
REPORT_FLAGS = ('count_norm', 'params')
flags.mark_flags_as_required(['config'])


def dataset_of(config) -> Tuple[str, int]:
  """(dataset name, class count) of the config without reading data where possible: the
  built-in synthetic classes, the registry's standard datasets, else the records' metadata
  (whose name stands in for an empty config.dataset.name, as in configs/custom.py)."""
  name = config.dataset.name
  if name == 'synthetic':
    return name, len(synthetic.CLASSES)
  if name in datasets.REGISTRY:
    return name, datasets.REGISTRY[name].num_classes
  metadata = pipeline.prepare(config.dataset)
  return metadata.name, len(metadata.classes)


def num_classes_of(config) -> int:
  return dataset_of(config)[1]


def model_report(config, count_norm: bool = False) -> Dict[str, Any]:
  """{'model', 'num_classes', 'params', 'params_by_group', 'views': {train, test}} for `config`."""
  dataset, num_classes = dataset_of(config)
  model = build_model(config.model, num_classes, config.dtype)
  data = config.data
  shapes = {
      'train': (data.num_frames, data.crop_size, data.crop_size, 3),
      'test': (data.num_frames, data.eval_crop_size, data.eval_crop_size, 3),
  }
  views = {}
  params = params_by_group = None
  for name, shape in shapes.items():
    info = flops.model_info(model, shape, count_norm=count_norm)
    params, params_by_group = info['params'], info['params_by_group']
    views[name] = {'input_shape': list(shape), 'gflops': info['gflops'],
                   'gflops_by_group': info['gflops_by_group']}
  return {'model': config.model.name, 'dataset': dataset, 'num_classes': num_classes,
          'params': params, 'params_millions': params / 1e6, 'params_by_group': params_by_group,
          'views': views}


def format_report(report: Dict[str, Any]) -> str:
  groups = sorted(set(report['params_by_group'])
                  | {g for v in report['views'].values() for g in v['gflops_by_group']})
  header = f"{'group':<12}{'params (M)':>12}"
  for name, view in report['views'].items():
    t, h, w, _ = view['input_shape']
    header += f"{f'GFLOPs {name} {t}x{h}x{w}':>26}"
  lines = [f"{report['model']} on {report['dataset']} ({report['num_classes']} classes)", header]
  for group in groups + ['total']:
    params = (report['params'] if group == 'total'
              else report['params_by_group'].get(group, 0))
    line = f'{group:<12}{params / 1e6:>12.4f}'
    for view in report['views'].values():
      gflops = view['gflops'] if group == 'total' else view['gflops_by_group'].get(group, 0.0)
      line += f'{gflops:>26.3f}'
    lines.append(line)
  lines.append("GFLOPs count multiply-adds, as fvcore, PySlowFast and the papers do (PyTorch's "
               "FlopCounter and XLA's cost analysis in salinet_jax.bench count 2 FLOPs each).")
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.setup()  # main.py's console: no backend-probing chatter
  with cli.user_errors_in_one_line():
    for name in RECIPE_FLAGS + REPORT_FLAGS:
      if FLAGS[name].present and FLAGS.recipe != (name in RECIPE_FLAGS):
        raise errors.UserError(
            f'--{name} applies to --recipe only (it is not read without it): add --recipe, or '
            'leave it out.' if name in RECIPE_FLAGS else
            f'--{name} applies to the model report only (it is not read with --recipe): leave '
            'it or --recipe out.')
    if FLAGS.recipe:
      card = recipe.card(FLAGS.config, FLAGS.video_frames, FLAGS.video_fps)
      print(json.dumps(card) if FLAGS.json else recipe.format_card(card))
      return
    report = model_report(FLAGS.config, FLAGS.count_norm)
    params = None
    if FLAGS.params:
      config = FLAGS.config
      model = build_model(config.model, report['num_classes'], config.dtype)
      params = models.abstract_variables(model, inputs.clip_shape(config.data))['params']
    if FLAGS.json:  # one object: the parameters, asked for, go inside it
      if params is not None:
        report['parameters'] = {
            name: {'shape': list(p.shape), 'dtype': str(p.dtype), 'size': int(p.size)}
            for name, p in flax.traverse_util.flatten_dict(params, sep='/').items()}
      print(json.dumps(report))
      return
    print(format_report(report))
    if params is not None:
      print(parameter_overview.get_parameter_overview(params, include_stats=False))


if __name__ == '__main__':
  with data_errors.ctrl_c_while_ending(), data_errors.sigterm_in_one_line():
    app.run(main, flags_parser=cli.parse_flags)
