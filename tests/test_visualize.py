"""Pictures of what a model looked at: drawn where the model has something to draw, and a
model without saliency masks or detail windows says it draws nothing."""

import jax
import numpy as np

from salinet_jax import inputs
from salinet_jax import models
from salinet_jax import visualize
from tests.test_bench import tiny_bench_config


def _pictures(name, tmp_path, caplog):
  config = tiny_bench_config(name)
  model = models.build_model(config.model, 4, config.dtype)
  variables = models.init_variables(model, jax.random.key(0), inputs.clip_shape(config.data))
  frames, size = config.data.num_frames, config.data.eval_crop_size
  batch = {'video': np.random.default_rng(0).integers(0, 256, (1, 1, frames, size, size, 3),
                                                      dtype=np.uint8),
           'mask': np.ones((1,), bool), 'label': np.zeros((1,), np.int32),
           'filename': np.array([b'clips/a.mp4'])}
  caplog.clear()
  visualize.say_nothing_to_draw.cache_clear()  # once per process and model: this test's own
  return visualize.write_visualizations(model, variables, batch, str(tmp_path / name), 1,
                                        config.data, ['w', 'x', 'y', 'z'])


def test_a_model_with_nothing_to_draw_says_so(tmp_path, caplog):
  assert _pictures('hara_resnet3d', tmp_path, caplog) == []
  assert 'has no saliency mask or detail windows to draw' in caplog.text
  assert not (tmp_path / 'hara_resnet3d').exists()  # no empty folder left where none was drawn
  drawn = _pictures('salinet_hara', tmp_path, caplog)
  assert [p.rsplit('/', 1)[-1] for p in drawn] == ['000_a.mp4.png']
  assert 'nothing' not in caplog.text and 'no saliency mask' not in caplog.text
