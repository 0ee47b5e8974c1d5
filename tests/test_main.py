"""The command line: config overrides, locked configs, train then eval through main.py."""

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.conftest import subprocess_env


def _main(*args, timeout=600, devices=0):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO_ROOT,
                        env=subprocess_env(devices),
                        capture_output=True, text=True, timeout=timeout)


def _tiny_overrides(data_dir):
  return [
      f'--config.dataset.data_dir={data_dir}', '--config.dataset.synthetic.num_train=8',
      '--config.dataset.synthetic.num_val=7', '--config.dataset.synthetic.num_frames=6',
      '--config.dataset.synthetic.frame_size=20', '--config.dataset.synthetic.object_size=6',
      '--config.dataset.synthetic.num_shards=2', '--config.data.num_frames=4',
      '--config.data.crop_size=16', '--config.data.train_min_scale=16',
      '--config.data.train_max_scale=20', '--config.data.eval_short_side=16',
      '--config.data.eval_crop_size=16', '--config.model.width=4', '--config.batch_size=4',
      '--config.eval_batch_size=4', '--config.num_train_steps=2', '--config.eval_every_steps=2',
      '--config.log_every_steps=1',
  ]


def test_train_then_eval_through_main(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', *_tiny_overrides(tiny_data_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'val top-1:' in proc.stdout
  assert 'clips/s' in proc.stderr and 'ETA' in proc.stderr and 'GFLOPs per' in proc.stderr
  proc = _main('--config=configs/demo.py', f'--workdir={workdir}', '--mode=eval',
               *_tiny_overrides(tiny_data_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  results = json.loads((workdir / 'eval_val.json').read_text())
  assert results['num_videos'] == 7 and results['step'] == 2
  assert f"{results['top1']:.4f}" in proc.stdout
