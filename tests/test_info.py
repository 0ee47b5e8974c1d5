"""The model-info command: SaliNet's published size and cost, and every SaliNet config builds."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import custom
from configs import demo
from configs import hmdb51_salinet
from configs import k400_i3d_nl
from configs import ucf101_salinet
from salinet_jax import info

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_info_command_reports_k400_salinet_size_and_cost():
  """Run as a user runs it (no JAX_PLATFORMS): JAX's backend probing stays off the console.
  With --params, --json printed the parameter table after the JSON: not one JSON object."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  proc = subprocess.run([sys.executable, '-m', 'salinet_jax.info',
                         '--config=configs/k400_salinet.py', '--json', '--params'],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Unable to initialize backend' not in proc.stderr, proc.stderr[-3000:]
  report = json.loads(proc.stdout)
  assert report['params'] == 46_534_276
  assert sum(p['size'] for p in report['parameters'].values()) == report['params']
  assert report['parameters']['head/fc/kernel'] == {'shape': [2048, 400], 'dtype': 'float32',
                                                    'size': 2048 * 400}
  # The reference's figures less what its TSFP_2 gate computes and discards (test_flops.py), to
  # the reference's precision: at +-1.5 a report counting BatchNorm (0.14 G) by default passed.
  assert report['views']['train']['gflops'] == pytest.approx(57.40 - 0.37 / 2, abs=0.02)
  assert report['views']['test']['gflops'] == pytest.approx(
      76.16 - 0.37 / 2 * (256 / 224)**2, abs=0.02)
  assert report['params_millions'] == report['params'] / 1e6
  assert set(report['params_by_group']) == {'backbone', 'ssf', 'tsfp', 'fusion', 'head'}


def test_modules_off_baseline_size_and_cost():
  report = info.model_report(k400_i3d_nl.get_config())
  assert report['params'] == 35_401_936  # the reference's figures (test_flops.py)
  assert report['views']['train']['gflops'] == pytest.approx(36.54, abs=0.01)
  assert report['views']['test']['gflops'] == pytest.approx(48.91, abs=0.01)


def test_count_norm_adds_the_batch_norms_of_each_view():
  """--count_norm adds BatchNorm's 2 FLOPs per element to each view, as flops.model_info counts
  them; without it they are left out (mutation audit: an ignored count_norm passed)."""
  config = demo.get_config()  # a tiny SaliNet: SSF, TSFP and backbone BatchNorms
  config.model.update(dict(depth=10, width=4))
  config.data.update(dict(num_frames=4, crop_size=32, eval_crop_size=48))
  plain, normed = info.model_report(config), info.model_report(config, count_norm=True)
  model = info.build_model(config.model, plain['num_classes'], config.dtype)
  for view, size in (('train', 32), ('test', 48)):
    norm = info.flops.model_info(model, (4, size, size, 3), count_norm=True)['gflops_by_kind']
    assert norm['norm'] > 0
    assert normed['views'][view]['gflops'] - plain['views'][view]['gflops'] == pytest.approx(
        norm['norm'], rel=1e-6)


def test_report_table_prints_each_views_figures():
  """Each row: the group's parameters in millions (10^6, as the papers count them), then each
  view's GFLOPs in its own column, the total row's from its own view (mutation audit: the table's
  figures were never read)."""
  report = {
      'model': 'm', 'dataset': 'd', 'num_classes': 3, 'params': 2_500_000,
      'params_by_group': {'a': 2_000_000, 'b': 500_000},
      'views': {'train': {'input_shape': [8, 112, 112, 3], 'gflops': 1.5,
                          'gflops_by_group': {'a': 1.0, 'b': 0.5}},
                'test': {'input_shape': [8, 128, 128, 3], 'gflops': 2.25,
                         'gflops_by_group': {'a': 2.0, 'b': 0.25}}}}
  lines = info.format_report(report).splitlines()
  assert lines[0] == 'm on d (3 classes)'
  assert lines[1].split() == ['group', 'params', '(M)', 'GFLOPs', 'train', '8x112x112', 'GFLOPs',
                              'test', '8x128x128']
  rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in lines[2:5]}
  assert rows == {'a': [2.0, 1.0, 2.0], 'b': [0.5, 0.5, 0.25], 'total': [2.5, 1.5, 2.25]}


@pytest.mark.parametrize('split', ['1', '2', '3'])
def test_fold_configs_name_their_splits(split):
  for module, classes in ((ucf101_salinet, 101), (hmdb51_salinet, 51)):
    config = module.get_config(split)
    assert config.dataset.train_split == f'train{split}'
    assert config.dataset.eval_split == f'test{split}'
    assert info.model_report(config)['num_classes'] == classes


def test_unknown_fold_is_a_clear_error():
  with pytest.raises(ValueError, match='split must be one of'):
    ucf101_salinet.get_config('4')


def test_a_config_that_takes_the_dataset_from_its_records_names_it(tiny_data_dir):
  """configs/custom.py leaves config.dataset.name empty: the report names the records' dataset
  (it printed 'hara_resnet3d on  (3 classes)')."""
  config = custom.get_config()
  config.dataset.data_dir = str(tiny_data_dir)
  report = info.model_report(config)
  assert report['dataset'] == 'synthetic' and report['num_classes'] == 4
  assert info.format_report(report).startswith(f'{config.model.name} on synthetic (4 classes)')
  # The figures are multiply-adds, as fvcore and the papers count, where PyTorch's FlopCounter
  # and XLA count two FLOPs each: the table said 'GFLOPs' alone (audit).
  assert info.format_report(report).endswith(
      '\nGFLOPs count multiply-adds, as fvcore, PySlowFast and the papers do (PyTorch\'s '
      "FlopCounter and XLA's cost analysis in salinet_jax.bench count 2 FLOPs each).")
