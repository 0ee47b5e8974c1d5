"""Pictures of what a model looked at: drawn where the model has something to draw, and a
model without saliency masks or detail windows says it draws nothing."""

import jax
import numpy as np

from salinet_jax import inputs
from salinet_jax import models
from salinet_jax import visualize
from tests.test_bench import tiny_bench_config


def _pictures(name, tmp_path, caplog, mask=(True,), count=1):
  """The pictures of a batch of len(mask) videos (False: a padding row), `count` asked for."""
  config = tiny_bench_config(name)
  model = models.build_model(config.model, 4, config.dtype)
  variables = models.init_variables(model, jax.random.key(0), inputs.clip_shape(config.data))
  frames, size, rows = config.data.num_frames, config.data.eval_crop_size, len(mask)
  batch = {'video': np.random.default_rng(0).integers(0, 256, (rows, 1, frames, size, size, 3),
                                                      dtype=np.uint8),
           'mask': np.asarray(mask, bool), 'label': np.zeros((rows,), np.int32),
           'filename': np.array([f'clips/{"abc"[k]}.mp4'.encode() for k in range(rows)])}
  caplog.clear()
  visualize.say_nothing_to_draw.cache_clear()  # once per process and model: this test's own
  return visualize.write_visualizations(model, variables, batch, str(tmp_path / name), count,
                                        config.data, ['w', 'x', 'y', 'z'])


def test_a_model_with_nothing_to_draw_says_so(tmp_path, caplog):
  assert _pictures('hara_resnet3d', tmp_path, caplog) == []
  assert 'has no saliency mask or detail windows to draw' in caplog.text
  assert not (tmp_path / 'hara_resnet3d').exists()  # no empty folder left where none was drawn
  drawn = _pictures('salinet_hara', tmp_path, caplog)
  assert [p.rsplit('/', 1)[-1] for p in drawn] == ['000_a.mp4.png']
  assert 'nothing' not in caplog.text and 'no saliency mask' not in caplog.text


def test_padding_rows_of_the_last_batch_get_no_picture(tmp_path, caplog):
  """The first `count` rows of a last batch may include the rows it is padded with, which are
  no video (mutation audit: drawing them passed every test)."""
  drawn = _pictures('salinet_hara', tmp_path, caplog, mask=(True, True, False), count=4)
  assert [p.rsplit('/', 1)[-1] for p in drawn] == ['000_a.mp4.png', '001_b.mp4.png']


def test_a_saliency_picture_of_a_longer_clip_says_which_frames_it_shows(tmp_path, monkeypatch):
  """A clip of 12 frames was drawn as its first 8 without a word (audit)."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(figure.Figure, 'savefig', lambda fig, *a, **k: saved.append(fig))
  rng = np.random.default_rng(0)
  for frames in (12, 8):
    visualize.saliency_figure(rng.normal(size=(frames, 16, 16, 3)), rng.random((1, 4, 4, 1)),
                              str(tmp_path / f'{frames}.png'), mean=(0, 0, 0), std=(1, 1, 1))
  notes = [' '.join(text.get_text() for text in fig.texts) for fig in saved]
  assert 'Frames 1-8 of the clip\'s 12.' in notes[0], notes[0]
  assert 'Frames' not in notes[1], notes[1]
  assert len(saved[0].axes) == len(saved[1].axes) == 9  # 8 frames and the colour bar
