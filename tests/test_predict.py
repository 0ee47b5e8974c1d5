"""Predict mode on a real video file: top-5 classes with probabilities and a saliency PNG."""

import os

import pytest

from salinet_jax import predict
from salinet_jax import train
from tests.conftest import TESTDATA

PANCAKE = TESTDATA / 'real_clips' / 'codec_fixtures' / 'flipping_a_pancake.mkv'


@pytest.mark.skipif(not PANCAKE.exists(), reason=f'shared test data not found at {PANCAKE}')
def test_predict_on_a_real_video(config, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  results = predict.predict(config, workdir, [str(PANCAKE)])
  assert len(results) == 1
  top = results[0]['top5']
  assert len(top) == 4  # the synthetic dataset has 4 classes
  probabilities = [p for _, p in top]
  assert probabilities == sorted(probabilities, reverse=True)
  assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
  assert {name for name, _ in top} == set(train.Trainer(config, workdir).classes)
  printed = capsys.readouterr().out
  assert str(PANCAKE) in printed and top[0][0] in printed
  pictures = os.listdir(os.path.join(workdir, 'predictions'))
  assert pictures == ['000_flipping_a_pancake.mkv.png']


def test_predict_rejects_missing_files(config, tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.mp4'):
    predict.predict(config, str(tmp_path), [str(tmp_path / 'nope.mp4')])
