"""Model inputs from pipeline batches, computed inside the jitted steps on the accelerator.

Batches arrive with uint8 pixels (data/pipeline.py); the normalisation named by
`config.data.normalization` happens here, where XLA fuses it into the first layer, and padded
variable-length videos (S2DNet) also give the model their valid-frame counts.
"""

from typing import Any, Dict, Mapping, Tuple

import jax.numpy as jnp

from data import pipeline


def model_inputs(batch: Mapping[str, Any], data_config) -> Tuple[jnp.ndarray, Dict[str, Any]]:
  """(normalised float32 video, keyword inputs) of a batch; video keeps its (B, [V,] T, ...) shape.

  The keyword inputs hold 'num_valid' (B,) int32 when the batch has a 'frame_mask' (B, T).
  """
  frame_mask = batch.get('frame_mask')
  video = pipeline.normalize_on_device(batch['video'], data_config, frame_mask)
  kwargs = {}
  if frame_mask is not None:
    kwargs['num_valid'] = jnp.sum(frame_mask, axis=-1).astype(jnp.int32)
  return video, kwargs
