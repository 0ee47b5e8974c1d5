"""Model inputs from pipeline batches, computed inside the jitted steps on the accelerator.

Batches arrive with uint8 pixels (data/pipeline.py). Here, train crops that the host left
unresized (a 'crop_hw' key, `config.data.train_resize_on_device`) are resized and flipped, the
normalisation named by `config.data.normalization` is applied (XLA fuses it into the first
layer), and padded variable-length videos (S2DNet) give the model their valid-frame counts.
"""

from typing import Any, Dict, Mapping, Tuple

import jax.numpy as jnp

from data import pipeline


def model_inputs(batch: Mapping[str, Any], data_config) -> Tuple[jnp.ndarray, Dict[str, Any]]:
  """(normalised float32 video, keyword inputs) of a batch; video keeps its (B, [V,] T, ...) shape.

  The keyword inputs hold 'num_valid' (B,) int32 when the batch has a 'frame_mask' (B, T).
  """
  frame_mask = batch.get('frame_mask')
  video = batch['video']
  if 'crop_hw' in batch:
    video = pipeline.resize_crops_on_device(video, batch['crop_hw'], batch['flip'])
  video = pipeline.normalize_on_device(video, data_config, frame_mask)
  kwargs = {}
  if frame_mask is not None:
    kwargs['num_valid'] = jnp.sum(frame_mask, axis=-1).astype(jnp.int32)
  return video, kwargs
