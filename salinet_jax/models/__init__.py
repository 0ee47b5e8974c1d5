"""Model registry: `config.model.name` -> Flax module class.

Every model is called as `model.apply(variables, clips, train=..., return_aux=...)` on NTHWC clips
and returns logits (float32), or `(logits, aux)` with a dict of auxiliary tensors when
`return_aux=True` (the tensors some losses need).
"""

import dataclasses
from typing import Any, Dict, Type

import flax.linen as nn
import jax.numpy as jnp

from salinet_jax.models import resnet3d
from salinet_jax.models import s2dnet
from salinet_jax.models import salinet

MODELS: Dict[str, Type[nn.Module]] = {
    'hara_resnet3d': resnet3d.HaraResNet3DClassifier,
    'i3d_nl': resnet3d.NonLocalI3DClassifier,
    'salinet_i3d': salinet.SaliNetI3D,
    'salinet_hara': salinet.SaliNetHara,
    's2dnet': s2dnet.S2DNet,
}

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def compute_dtype(name: str) -> Any:
  """Maps `config.dtype` to a jnp dtype, failing loudly on an unknown name."""
  if name not in DTYPES:
    raise ValueError(f'config.dtype must be one of {sorted(DTYPES)}, got {name!r}.')
  return DTYPES[name]


def build_model(model_config, num_classes: int, dtype: str = 'float32') -> nn.Module:
  """Instantiates `MODELS[model_config.name]` with every other field of `model_config`."""
  fields = dict(model_config)
  name = fields.pop('name')
  if name not in MODELS:
    raise ValueError(f'config.model.name {name!r} is not one of {sorted(MODELS)}.')
  model_cls = MODELS[name]
  accepted = {f.name for f in dataclasses.fields(model_cls)} - {'parent', 'name'}
  unknown = sorted(set(fields) - accepted)
  if unknown:
    raise ValueError(f'config.model has fields {unknown} that model {name!r} does not accept; '
                     f'accepted: {sorted(accepted - {"num_classes", "dtype"})}.')
  return model_cls(num_classes=num_classes, dtype=compute_dtype(dtype), **fields)
