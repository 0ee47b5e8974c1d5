"""Pictures of what a model looked at, as PNG files (matplotlib, no display needed).

- S2DNet: the synopsis frames with the detail window the sampler chose drawn on them, above the
  detail frames the detail network actually received.
- SaliNet: the input frames under the final saliency mask S_final, upsampled bilinearly to the
  frame, with a colour bar and a one-line legend.
Titles name the predicted class (and the label, when the video has one).
"""

import contextlib
import functools
import os
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from absl import logging
import jax
import numpy as np
from PIL import Image

from data import errors as data_errors
from salinet_jax import inputs


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def to_display(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Undoes the pipeline's normalisation: (..., 3) float -> [0, 1] for imshow."""
  return np.clip(np.asarray(frames, np.float32) * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


def s2dnet_figure(video: np.ndarray, aux: Mapping[str, np.ndarray], path: str, *,
                  mean: Sequence[float], std: Sequence[float], title: str = '') -> str:
  """Writes the S2DNet sampling picture of one video.

  Args:
    video: (N, H, W, 3) normalised input frames of the video.
    aux: this video's S2DNet aux outputs (no batch axis): 'synopsis_frame_indices' (T,),
      'detail_frames' (T', D, D, 3), 'sampler_mu_t', 'sampler_center_x/_y', 'sampler_delta_x/_y'
      (T',).
    path: the PNG to write.
  """
  plt = _pyplot()
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  indices = np.asarray(aux['synopsis_frame_indices']).astype(int)
  detail = to_display(aux['detail_frames'], mean, std)
  mu_t = np.asarray(aux['sampler_mu_t'])
  size = detail.shape[1]
  columns = max(len(indices), len(detail))
  fig, axes = plt.subplots(2, columns, figsize=(1.6 * columns, 3.6), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for col, index in enumerate(indices):
    ax = axes[0, col]
    ax.imshow(to_display(video[index], mean, std))
    # The window of the detail frame whose temporal centre is nearest to this synopsis frame.
    i = int(np.argmin(np.abs(mu_t - index)))
    half_w = (size - 1) / 2 * float(aux['sampler_delta_x'][i])
    half_h = (size - 1) / 2 * float(aux['sampler_delta_y'][i])
    x0 = float(aux['sampler_center_x'][i]) - half_w
    y0 = float(aux['sampler_center_y'][i]) - half_h
    ax.add_patch(patches.Rectangle((x0, y0), 2 * half_w, 2 * half_h, fill=False,
                                   edgecolor='red', linewidth=1.5))
    ax.set_title(f'frame {index}', fontsize=7)
  for col, frame in enumerate(detail):
    axes[1, col].imshow(frame)
    axes[1, col].set_title(f'detail t={mu_t[col]:.1f}', fontsize=7)
  fig.suptitle(title or 'synopsis frames with the sampled window (top), detail frames (bottom)',
               fontsize=9)
  fig.tight_layout()
  with data_errors.replacing(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=90)
  plt.close(fig)
  return path


def upsample(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """A (h, w) map resized bilinearly to (height, width), as the eye expects a heat map."""
  image = Image.fromarray(np.asarray(mask, np.float32), mode='F')
  return np.asarray(image.resize((width, height), Image.BILINEAR), np.float32)


def saliency_figure(video: np.ndarray, saliency: np.ndarray, path: str, *,
                    mean: Sequence[float], std: Sequence[float], title: str = '',
                    max_frames: Optional[int] = 8) -> str:
  """Writes the input frames of one clip under the upsampled S_final mask.

  Args:
    video: (T, H, W, 3) normalised clip.
    saliency: S_final of the clip, (..., h, w, 1) (leading axes of size 1).
  """
  plt = _pyplot()
  saliency = np.asarray(saliency, np.float32)
  if saliency.ndim < 3 or saliency.shape[-1] != 1 or saliency.size != np.prod(saliency.shape[-3:]):
    raise ValueError(f'S_final must be (..., h, w, 1), got shape {saliency.shape}.')
  mask = saliency.reshape(saliency.shape[-3:-1])
  height, width = video.shape[1:3]
  heat = upsample(mask, height, width)
  low, high = float(mask.min()), float(mask.max())
  high = high if high > low else low + 1e-6
  frames = video[:max_frames] if max_frames else video
  fig, axes = plt.subplots(1, len(frames), figsize=(1.8 * len(frames) + 0.8, 2.6), squeeze=False)
  image = None
  for ax, frame in zip(axes[0], frames):
    ax.imshow(to_display(frame, mean, std))
    image = ax.imshow(heat, cmap='inferno', alpha=0.4, vmin=low, vmax=high)
    ax.axis('off')
  bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.01)
  bar.set_label('S_final', fontsize=7)
  bar.ax.tick_params(labelsize=6)
  fig.suptitle(title or 'S_final saliency over the input frames', fontsize=9)
  shown = f" Frames 1-{len(frames)} of the clip's {len(video)}." if len(frames) < len(video) else ''
  fig.text(0.01, 0.02, f'Overlay: the final saliency mask S_final ({mask.shape[0]}x'
           f'{mask.shape[1]}, one per clip) upsampled to the frame; brighter = more salient.'
           + shown, fontsize=6.5)
  with data_errors.replacing(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=90, bbox_inches='tight')
  plt.close(fig)
  return path


def write_visualizations(model, variables, batch: Dict[str, np.ndarray], directory: str,
                         count: int, data_config, classes: Sequence[str],
                         first: int = 0, apply: Optional[Callable] = None) -> List[str]:
  """PNGs of what the model looked at for the first `count` videos of `batch` (first view),
  numbered from `first`. `apply` is `with_aux(model)` where batches follow one another (one
  compilation).

  S2DNet: sampled detail windows and detail frames; SaliNet: the S_final mask over the clip.
  Other models have nothing to draw and write nothing.
  """
  mean, std = inputs.normalization(data_config)
  count = min(count, int(np.sum(batch['mask'])))
  if not count:
    return []
  first_views = {key: batch[key][:count] for key in ('video', 'frame_mask') if key in batch}
  first_views['video'] = first_views['video'][:, 0]
  video, kwargs = inputs.model_inputs(first_views, data_config)
  video = np.asarray(video)
  logits, aux = (apply or with_aux(model))(variables, video, kwargs)
  aux = jax.tree.map(np.asarray, aux)
  probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
  if 'detail_frames' not in aux and 'saliency_final' not in aux:
    say_nothing_to_draw(type(model).__name__)
    return []
  paths = []
  for i in range(count):
    name = os.path.basename(batch['filename'][i].decode('utf-8', 'replace')) or f'video{i}'
    path = picture_path(directory, first + i, name)
    label = int(batch['label'][i])
    predicted = int(np.argmax(probabilities[i]))
    title = (f'{name}: predicted {classes[predicted]} ({probabilities[i, predicted]:.2f}, '
             'first view)' + (f', label {classes[label]}' if label >= 0 else ''))
    if 'detail_frames' in aux:
      paths.append(s2dnet_figure(
          video[i], {k: v[i] for k, v in aux.items()}, path, mean=mean, std=std, title=title))
    elif 'saliency_final' in aux:
      paths.append(saliency_figure(
          video[i], aux['saliency_final'][i], path, mean=mean, std=std, title=title))
  return paths


def with_aux(model) -> Callable:
  """The jitted eval forward of `model` that returns its aux outputs (masks, detail windows)."""
  return jax.jit(lambda v, x, kw: model.apply(v, x, train=False, return_aux=True, **kw))


class EvalPictures:
  """The pictures of the first `count` videos an evaluation's process reads, drawn batch after
  batch (an eval batch may hold fewer): called with each local batch, it says whether it wants
  the next. One process draws; in a group of n it reads one video in n of the split."""

  def __init__(self, model, variables, directory: str, count: int, data_config,
               classes: Sequence[str], drawn_into: Optional[str] = None):
    """`drawn_into`: the folder the pictures are drawn into where it is not `directory`, the
    one they end up in and the lines name (`replacing_pictures`)."""
    self.draw = functools.partial(write_visualizations, model, variables,
                                  directory=drawn_into or directory, data_config=data_config,
                                  classes=classes, apply=with_aux(model))
    self.directory, self.count, self.paths = directory, count, []
    self.videos_seen = 0  # the real (unpadded) videos of the batches it was called with

  def __call__(self, batch: Dict[str, np.ndarray]) -> bool:
    self.videos_seen += int(np.sum(batch['mask']))
    paths = self.draw(batch, count=self.count - len(self.paths), first=len(self.paths))
    self.paths += paths
    return bool(paths) and len(self.paths) < self.count  # none: no masks to draw, or the end

  def summary(self, num_videos: int) -> str:
    """The line that says where the pictures went, and why fewer than asked: the split (of
    `num_videos`), or this process's share of it, holds fewer videos."""
    short, share, processes = '', '', jax.process_count()
    if processes > 1:
      share = (f", of process 0's share of the split: with {processes} processes each reads one "
               f"video in {processes} (the split's 1st, {processes + 1}{_ordinal(processes + 1)}, "
               f'{2 * processes + 1}{_ordinal(2 * processes + 1)}, ...)')
    if len(self.paths) < self.count:
      held = 'the split' if self.videos_seen == num_videos else "this process's share of the split"
      short = (f' (config.eval.num_visualizations={self.count}, but {held} holds '
               f'{self.videos_seen} videos)')
    return f'Wrote {len(self.paths)} pictures to {self.directory}{share}{short}.'


@contextlib.contextmanager
def replacing_pictures(model, variables, directory: str, count: int, data_config,
                       classes: Sequence[str]) -> Iterator[EvalPictures]:
  """EvalPictures drawn into a new folder that replaces `directory` whole as the block ends
  (inside data.errors.replacing_together, with that block's files): an earlier evaluation's
  pictures are never left beside them, nor drawn over by an evaluation that stops."""
  with data_errors.replacing_folder(directory) as new:
    yield EvalPictures(model, variables, directory, count, data_config, classes, new)


def _ordinal(number: int) -> str:
  """The English suffix of `number` as an ordinal: st, nd, rd or th."""
  if number % 100 in (11, 12, 13):
    return 'th'
  return {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th')


def picture_path(directory: str, index: int, name: str) -> str:
  """Where the picture of the `index`-th video drawn into `directory`, `name`, goes (a name too
  long for a file name cut: data.errors.fitted_path)."""
  stem = os.path.join(directory, f'{index:03d}_{os.path.basename(name)}')
  return data_errors.fitted_path(stem, len('.png')) + '.png'


@functools.cache
def say_nothing_to_draw(model_name: str) -> None:
  """Once per model: the pictures asked for (config.eval.num_visualizations) are not coming."""
  logging.warning('config.eval.num_visualizations: %s has no saliency mask or detail windows '
                  'to draw, so no pictures are written.', model_name)
