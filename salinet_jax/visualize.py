"""Pictures of what a model looked at, as PNG files (matplotlib, no display needed).

- S2DNet: the synopsis frames with the detail window the sampler chose drawn on them, above the
  detail frames the detail network actually received.
- SaliNet: the input frames overlaid with the upsampled final saliency mask S_final.
"""

from typing import Mapping, Optional, Sequence

import numpy as np


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
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def saliency_figure(video: np.ndarray, saliency: np.ndarray, path: str, *,
                    mean: Sequence[float], std: Sequence[float], title: str = '',
                    max_frames: Optional[int] = 8) -> str:
  """Writes the input frames of one clip overlaid with the upsampled S_final mask.

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
  rows = (np.arange(height) * mask.shape[0] // height).astype(int)
  cols = (np.arange(width) * mask.shape[1] // width).astype(int)
  upsampled = mask[rows][:, cols]
  frames = video[:max_frames] if max_frames else video
  fig, axes = plt.subplots(1, len(frames), figsize=(1.8 * len(frames), 2.3), squeeze=False)
  for ax, frame in zip(axes[0], frames):
    ax.imshow(to_display(frame, mean, std))
    ax.imshow(upsampled, cmap='jet', alpha=0.45, vmin=float(mask.min()),
              vmax=float(mask.max()) if mask.max() > mask.min() else float(mask.min()) + 1e-6)
    ax.axis('off')
  fig.suptitle(title or 'S_final saliency over the input frames', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
