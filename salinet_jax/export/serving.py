"""The served function and what export.json says about its inputs, outputs and views.

One view per row: uint8 `video` (batch, frames, height, width, 3) RGB at the eval view size,
plus `num_valid` (batch,) for models fed padded clips (S2DNet's all-frames sampling). Inside:
the normalisation of `inputs.model_inputs`, `model.apply(train=False, return_aux=True)` and a
softmax. The views themselves (decoding, temporal sampling, resize and crops) are built outside,
as `data/pipeline.py:video_eval_batches` builds them (export.json's `views` and `decoding`).
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from data import ops
from salinet_jax import inputs

VIDEO_INPUT = 'video'
NUM_VALID_INPUT = 'num_valid'
SALINET_OUTPUTS = ('saliency_final',)
# S2DNet's sampled detail window (models/s2dnet.py): what predict's pictures draw.
S2DNET_OUTPUTS = ('detail_frames', 'synopsis_frame_indices', 'sampler_mu_t', 'sampler_delta_t',
                  'sampler_center_x', 'sampler_center_y', 'sampler_delta_x', 'sampler_delta_y')
_DESCRIPTIONS = {
    'probabilities': 'softmax of the view logits',
    'logits': 'class logits of the view',
    'saliency_final': 'SaliNet final saliency mask S_final of the view',
    'detail_frames': 'S2DNet detail frames sampled by the Gaussian sampler (normalised pixels)',
    'synopsis_frame_indices': 'S2DNet frames the synopsis network saw',
    'sampler_mu_t': 'S2DNet detail frames\' temporal centres, in frames of the view (0: its first)',
    'sampler_delta_t': 'S2DNet stride between the detail frames\' temporal centres, in frames',
}


def takes_num_valid(config) -> bool:
  """Whether the model reads zero-padded clips plus their real frame counts."""
  return ops.pads_frames(config.data)


def serving_outputs(logits: jnp.ndarray, aux: Dict[str, jnp.ndarray]) -> Dict[str, jnp.ndarray]:
  """The exported outputs of a batch of views: float32 logits and probabilities, plus the
  aux outputs predict draws (floats as float32, indices as int32)."""
  logits = logits.astype(jnp.float32)
  outputs = {'logits': logits, 'probabilities': jax.nn.softmax(logits, axis=-1)}
  for key in SALINET_OUTPUTS + S2DNET_OUTPUTS:
    if key in aux:
      value = aux[key]
      floating = jnp.issubdtype(value.dtype, jnp.floating)
      outputs[key] = value.astype(jnp.float32 if floating else jnp.int32)
  return outputs


def make_serving_fn(model, data_config, with_num_valid: bool) -> Callable[..., Dict[str, Any]]:
  """serve(variables, video[, num_valid]) -> dict of outputs (see the module docstring)."""

  def serve(variables, video, num_valid=None):
    batch = {'video': video}
    if with_num_valid:
      frames = jnp.arange(video.shape[1], dtype=jnp.int32)
      batch['frame_mask'] = frames[None, :] < num_valid.astype(jnp.int32)[:, None]
    clips, kwargs = inputs.model_inputs(batch, data_config)
    logits, aux = model.apply(variables, clips, train=False, return_aux=True, **kwargs)
    outputs = serving_outputs(logits, aux)
    if with_num_valid:  # a graph cannot raise: rows with no real frame (or more than fit) are
      # NaN, their indices -1
      valid = (num_valid >= 1) & (num_valid <= video.shape[1])
      outputs = {name: jnp.where(valid.reshape((-1,) + (1,) * (value.ndim - 1)), value,
                                 jnp.nan if jnp.issubdtype(value.dtype, jnp.floating) else -1)
                 for name, value in outputs.items()}
    return outputs

  return serve


@dataclasses.dataclass(frozen=True)
class InputSpec:
  name: str
  shape: Tuple[Optional[int], ...]  # a None batch: batch-polymorphic
  dtype: str

  def to_json(self) -> Dict[str, Any]:
    return {'name': self.name, 'shape': list(self.shape), 'dtype': self.dtype}

  @classmethod
  def from_json(cls, spec: Dict[str, Any]) -> 'InputSpec':
    return cls(spec['name'], tuple(spec['shape']), spec['dtype'])


def input_specs(config, batch: Optional[int]) -> List[InputSpec]:
  """The exported inputs at the eval view size; `batch` None = any batch."""
  data = config.data
  size = data.eval_crop_size
  specs = [InputSpec(VIDEO_INPUT, (batch, data.num_frames, size, size, 3), 'uint8')]
  if takes_num_valid(config):
    specs.append(InputSpec(NUM_VALID_INPUT, (batch,), 'int32'))
  return specs


def abstract_args(specs: Sequence[InputSpec]) -> List[jax.ShapeDtypeStruct]:
  """The inputs as ShapeDtypeStructs; a None batch becomes the symbolic dimension 'batch'."""
  batch = jax.export.symbolic_shape('batch')[0] if specs[0].shape[0] is None else None
  return [jax.ShapeDtypeStruct(tuple(batch if d is None else d for d in s.shape),
                               np.dtype(s.dtype)) for s in specs]


def output_specs(outputs: Dict[str, Any], batch: Optional[int]) -> List[Dict[str, Any]]:
  """export.json's "outputs" from one batch of outputs."""
  specs = []
  for name, value in sorted(outputs.items()):
    default = ('S2DNet detail window geometry, in pixels of the view'
               if name.startswith('sampler_') else '')
    specs.append({'name': name, 'shape': [batch] + list(value.shape[1:]),
                  'dtype': str(value.dtype), 'description': _DESCRIPTIONS.get(name, default)})
  return specs


def input_notes(specs: Sequence[InputSpec]) -> str:
  notes = ('video: uint8 RGB, one view per row, (batch, frames, height, width, 3) at the eval '
           'view size; normalisation runs inside the model')
  if len(specs) > 1:
    notes += ('; num_valid: real frames of each zero-padded clip (S2DNet), 1 to frames: '
              'outside that a row\'s outputs are NaN and its indices -1')
  return notes


def views_doc(config) -> Dict[str, Any]:
  """How the eval builds a video's views and combines their scores (export.json "views")."""
  data, ev = config.data, config.eval
  scores = 'logits' if ev.view_scores == 'logits' else 'probabilities'
  mean, std = inputs.normalization(data)
  return {
      'clips': int(data.eval_num_clips), 'crops': int(data.eval_num_crops),
      'per_video': int(data.eval_num_clips * data.eval_num_crops),
      'reduction': ev.view_reduction, 'scores': ev.view_scores,
      'how': (f'feed each view (temporal clip x spatial crop) as one row, then take the '
              f'{ev.view_reduction} over the views of a video of their {scores} '
              '(salinet_jax.evaluate.reduce_views)'),
      'probabilities': _probability_rule(ev.view_scores, ev.view_reduction),
      'temporal_sampling': data.temporal_sampling,
      'num_frames': int(data.num_frames), 'frame_stride': int(data.frame_stride),
      'eval_short_side': int(data.eval_short_side), 'eval_crop_size': int(data.eval_crop_size),
      'eval_crop_rounding': data.eval_crop_rounding, 'resize_filter': data.resize_filter,
      'normalization': data.normalization, 'mean_std': [list(mean), list(std)],
  }


def _probability_rule(scores: str, reduction: str) -> str:
  """How predict turns a video's reduced view scores into its class probabilities
  (salinet_jax.evaluate.view_probabilities), in words for export.json."""
  if scores == 'softmax':
    return ('the maximum over the views of each class probability, divided by their total'
            if reduction == 'max' else 'the mean over the views of the probabilities')
  return (f'softmax of the {"maximum" if reduction == "max" else "mean"} over the views of the '
          'logits')
