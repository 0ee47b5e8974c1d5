"""Pictures of what a model looked at: drawn where the model has something to draw, and a
model without saliency masks or detail windows says it draws nothing."""

import jax
import jax.numpy as jnp
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


def test_a_saliency_picture_shows_each_clip_under_its_own_s_final_resized_to_the_frame(
    tmp_path, monkeypatch):
  """Each picture shows its own clip's frames as they were read (normalisation undone) under
  that clip's S_final, resized bilinearly to the frame, the colour scale spanning it (mutation
  audit: a map of another layer, of another clip, or not resized at all passed every test).
  32-pixel clips, so that S_final is 2x2 and the SSF map S3 4x4: a resize shows."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(figure.Figure, 'savefig', lambda fig, *a, **k: saved.append(fig))
  config = tiny_bench_config('salinet_hara')
  config.data.update(dict(crop_size=32, eval_crop_size=32))
  model = models.build_model(config.model, 4, config.dtype)
  variables = models.init_variables(model, jax.random.key(0), inputs.clip_shape(config.data))
  clips = np.random.default_rng(1).integers(0, 256, (2, 1, 4, 32, 32, 3), dtype=np.uint8)
  batch = {'video': clips, 'mask': np.ones(2, bool), 'label': np.zeros(2, np.int32),
           'filename': np.array([b'a.mp4', b'b.mp4'])}
  visualize.write_visualizations(model, variables, batch, str(tmp_path), 2, config.data,
                                 ['w', 'x', 'y', 'z'])
  mean, std = inputs.normalization(config.data)
  pixels = clips[:, 0] / np.float32(255)
  _, aux = model.apply(variables, jnp.asarray((pixels - mean) / std, jnp.float32), train=False,
                       return_aux=True)
  final = np.asarray(aux['saliency_final'])
  assert final.shape == (2, 1, 2, 2, 1) and np.ptp(final[0] - final[1]) > 1e-4, final
  assert len(saved) == 2
  for clip, fig in enumerate(saved):
    expected = np.asarray(jax.image.resize(final[clip, 0, :, :, 0], (32, 32), 'linear'))
    frame_axes = [ax for ax in fig.axes if ax.images and len(ax.images) == 2]
    assert len(frame_axes) == 4
    for t, ax in enumerate(frame_axes):
      shown, heat = ax.images
      np.testing.assert_allclose(shown.get_array(), pixels[clip, t], atol=1e-5)
      np.testing.assert_allclose(heat.get_array(), expected, rtol=1e-5, atol=1e-7)
      np.testing.assert_allclose(heat.get_clim(), (final[clip].min(), final[clip].max()),
                                 rtol=1e-5)


def test_an_s2dnet_picture_shows_the_synopsis_frames_under_the_window_of_the_nearest_detail(
    tmp_path, monkeypatch):
  """Top row: the synopsis frames the model chose, each under the window of the detail frame
  whose temporal centre is nearest, as the sampler's grid spans it (D points delta apart around
  the centre); bottom row: the detail frames. Mutation audit: the first frames in place of the
  chosen ones, a window picked by column, or one as tall as it is wide passed every test."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(figure.Figure, 'savefig', lambda fig, *a, **k: saved.append(fig))
  rng = np.random.default_rng(0)
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
  pixels, detail = rng.random((10, 8, 8, 3)), rng.random((2, 4, 4, 3))
  aux = {'synopsis_frame_indices': np.array([0, 4, 9]), 'sampler_mu_t': np.array([1.0, 8.0]),
         'detail_frames': (detail - mean) / std,
         'sampler_center_x': np.array([2.0, 5.0]), 'sampler_center_y': np.array([3.0, 4.0]),
         'sampler_delta_x': np.array([0.5, 1.0]), 'sampler_delta_y': np.array([1.0, 0.25])}
  visualize.s2dnet_figure((pixels - mean) / std, aux, str(tmp_path / 'a.png'), mean=mean,
                          std=std)
  (fig,) = saved
  top, bottom = fig.axes[:3], fig.axes[3:5]
  nearest = [0, 0, 1]  # frame 4 is 3 frames from detail 0's centre (1.0), 4 from detail 1's
  for ax, index, window in zip(top, (0, 4, 9), nearest):
    np.testing.assert_allclose(ax.images[0].get_array(), pixels[index], atol=1e-6)
    (box,) = ax.patches
    # The 4 grid points x_j = center + (j - 1.5) * delta: the box spans the first to the last.
    xs = aux['sampler_center_x'][window] + (np.arange(4) - 1.5) * aux['sampler_delta_x'][window]
    ys = aux['sampler_center_y'][window] + (np.arange(4) - 1.5) * aux['sampler_delta_y'][window]
    np.testing.assert_allclose([box.get_x(), box.get_y(), box.get_width(), box.get_height()],
                               [xs[0], ys[0], xs[-1] - xs[0], ys[-1] - ys[0]])
  for ax, frame in zip(bottom, detail):
    np.testing.assert_allclose(ax.images[0].get_array(), frame, atol=1e-6)


def test_each_s2dnet_picture_is_drawn_from_its_own_videos_frames_and_windows(tmp_path,
                                                                              monkeypatch):
  """write_visualizations hands each S2DNet picture its own video's frames and detail windows,
  computed over that video's own valid frames (its frame_mask). Only s2dnet_figure was tested:
  every picture drawn with the first video's windows, or every video taken as full length
  (padding read as frames), passed (audit)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from salinet_jax.models import s2dnet  # pylint: disable=g-import-not-at-top
  from tests.test_s2dnet import TINY, TINY_CLASSES  # pylint: disable=g-import-not-at-top
  model = s2dnet.S2DNet(num_classes=TINY_CLASSES, **TINY)
  frames, size = 12, 32
  data_config = ml_collections.ConfigDict(dict(normalization='kinetics', num_frames=frames))
  variables = models.init_variables(model, jax.random.key(0), (1, frames, size, size, 3))
  video = np.random.default_rng(0).integers(0, 256, (2, 1, frames, size, size, 3),
                                            dtype=np.uint8)
  frame_mask = np.arange(frames)[None, :] < np.array([[12], [7]])
  drawn = []
  monkeypatch.setattr(visualize, 's2dnet_figure',
                      lambda shown, aux, path, **kwargs: drawn.append((shown, aux)) or path)
  batch = {'video': video, 'frame_mask': frame_mask, 'mask': np.ones(2, bool),
           'label': np.array([1, 3]), 'filename': np.array([b'a.mp4', b'b.mp4'])}
  paths = visualize.write_visualizations(model, variables, batch, str(tmp_path), 2, data_config,
                                         [str(k) for k in range(TINY_CLASSES)])
  assert len(paths) == len(drawn) == 2
  normalised, kwargs = inputs.model_inputs({'video': video[:, 0], 'frame_mask': frame_mask},
                                           data_config)
  _, aux = model.apply(variables, normalised, train=False, return_aux=True, **kwargs)
  np.testing.assert_array_equal(aux['num_valid'], [12, 7])
  assert np.ptp(np.asarray(aux['sampler_mu_t'][0] - aux['sampler_mu_t'][1])) > 0.5
  for i, (shown, got) in enumerate(drawn):
    np.testing.assert_allclose(shown, normalised[i], rtol=1e-6)
    for key in ('sampler_mu_t', 'sampler_center_x', 'sampler_delta_y', 'synopsis_frame_indices',
                'detail_frames'):
      np.testing.assert_allclose(got[key], aux[key][i], rtol=1e-5, atol=1e-6, err_msg=key)
