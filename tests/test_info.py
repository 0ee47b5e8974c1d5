"""The model-info command: SaliNet's published size and cost, and every SaliNet config builds."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import custom
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
  assert report['views']['train']['gflops'] == pytest.approx(57.4, abs=1.5)
  assert report['views']['test']['gflops'] == pytest.approx(76.2, abs=2.0)
  assert set(report['params_by_group']) == {'backbone', 'ssf', 'tsfp', 'fusion', 'head'}


def test_modules_off_baseline_size_and_cost():
  report = info.model_report(k400_i3d_nl.get_config())
  assert report['params'] / 1e6 == pytest.approx(35.4, abs=0.2)
  assert report['views']['train']['gflops'] == pytest.approx(36.5, abs=1.0)


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
