"""Model registry: `config.model.name` -> Flax module class.

Every model is called as `model.apply(variables, clips, train=..., return_aux=...)` on NTHWC clips
and returns logits (float32), or `(logits, aux)` with a dict of auxiliary tensors when
`return_aux=True` (the tensors some losses need).
"""

import dataclasses
import functools
import inspect
from typing import Any, Dict, FrozenSet, Sequence, Type

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from salinet_jax import errors

from salinet_jax.models import fast_conv
from salinet_jax.models import layers
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

REMAT_MODES = ('none', 'elementwise', 'blocks', 'full')

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16,
          'float64': jnp.float64}


# Mixed precision as PyTorch AMP trains: bfloat16 activations where an accelerator computes them
# fast, float32 on a CPU (where bfloat16 is slower and gains nothing).
ACCELERATOR_BFLOAT16 = 'bfloat16_on_accelerators'
# Every value config.dtype takes.
DTYPE_NAMES = sorted(DTYPES) + [ACCELERATOR_BFLOAT16]


def compute_dtype(name: str) -> Any:
  """Maps `config.dtype` to a jnp dtype, failing loudly on an unknown name.

  'float64' (parity checks against PyTorch through the normal path) needs 64-bit JAX;
  'bfloat16_on_accelerators' is bfloat16 on GPU/TPU and float32 on CPU.
  """
  if name == ACCELERATOR_BFLOAT16:
    name = 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'
  if name not in DTYPES:
    raise errors.ConfigError(f'config.dtype must be one of {DTYPE_NAMES}, got {name!r}.')
  if name == 'float64' and not jax.config.jax_enable_x64:
    raise errors.ConfigError("config.dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 in "
                             "the environment (or jax.config.update('jax_enable_x64', True) "
                             'before building the model).')
  return DTYPES[name]


def check_remat(remat: str) -> None:
  """Fails on a `config.remat` that is not one of REMAT_MODES."""
  if remat not in REMAT_MODES:
    raise errors.ConfigError(f'config.remat must be one of {REMAT_MODES}, got {remat!r}.')


def build_model(model_config, num_classes: int, dtype: str = 'float32',
                remat: str = 'none') -> nn.Module:
  """Instantiates `MODELS[model_config.name]` with every other field of `model_config`.

  `remat` (`config.remat`): 'none'; 'elementwise' saves only the convolutions' outputs and
  BatchNorm's statistics for the backward pass and recomputes what follows the convolutions
  (normalisation, activations, pooling, attention);
  'blocks' recomputes each residual block in the backward pass (models with a `remat_blocks`
  field: the 3D ResNets and SaliNet); 'full' recomputes the whole forward (`jax.checkpoint`
  around the model), keeping only its inputs and parameters. Parameter names and values are the
  same in every mode. On the CPU backend only a train step compiled with
  `engine.remat_compiler_options` honours any of them.
  """
  fields = dict(model_config)
  name = fields.pop('name')
  if name not in MODELS:
    raise errors.ConfigError(f'config.model.name {name!r} is not one of {sorted(MODELS)}.')
  check_remat(remat)
  model_cls = MODELS[name]
  accepted = {f.name for f in dataclasses.fields(model_cls)} - {'parent', 'name'}
  unknown = sorted(set(fields) - accepted)
  if unknown:
    raise errors.ConfigError(f'config.model has fields {unknown} that model {name!r} does not '
                             f'accept; accepted: {sorted(accepted - {"num_classes", "dtype"})}.')
  if remat == 'blocks':
    if 'remat_blocks' not in accepted:
      raise errors.ConfigError(f"config.remat='blocks' is not available for model {name!r}; use "
                       "'full' or 'none'.")
    fields['remat_blocks'] = True
  elif remat in ('full', 'elementwise'):
    model_cls = full_remat(model_cls, remat == 'elementwise')
  return model_cls(num_classes=num_classes, dtype=compute_dtype(dtype), **fields)


def takes_frame_counts(model_config) -> bool:
  """Whether the model reads the count of real frames of zero-padded clips (`num_valid`)."""
  model_cls = MODELS.get(model_config.name)
  return model_cls is not None and 'num_valid' in inspect.signature(model_cls.__call__).parameters


def init_variables(model: nn.Module, rng: jax.Array, input_shape: Sequence[int]) -> Dict[str, Any]:
  """The model's freshly initialised variables for float32 clips of `input_shape` (B, T, H, W, C).

  The one place a model is initialised: training, conversion, FLOP counting and the benchmark
  all go through here (or `abstract_variables`).
  """
  return model.init({'params': rng, 'dropout': rng}, jnp.zeros(tuple(input_shape), jnp.float32),
                    train=False)


def abstract_variables(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Any]:
  """`init_variables` as ShapeDtypeStructs: shapes and dtypes only, nothing computed."""
  return jax.eval_shape(lambda: init_variables(model, jax.random.key(0), input_shape))


def classifier_paths(model_config, num_classes: int, input_shape: Sequence[int],
                     dtype: str = 'float32', remat: str = 'none') -> FrozenSet[str]:
  """Paths of the parameters whose shapes follow the number of classes ('head/fc/kernel',
  S2DNet's 'snet/fc/bias', ...): the classifiers, found by building the model for one class more
  (shapes only). Their rows mean classes in an order that a checkpoint has to record."""
  flat = lambda classes: flax.traverse_util.flatten_dict(  # noqa: E731
      abstract_variables(build_model(model_config, classes, dtype, remat), input_shape)['params'],
      sep='/')
  mine, theirs = flat(num_classes), flat(num_classes + 1)
  return frozenset(path for path, leaf in mine.items()
                   if path not in theirs or theirs[path].shape != leaf.shape)


@functools.cache
def full_remat(model_cls: Type[nn.Module], save_conv_outputs: bool = False) -> Type[nn.Module]:
  """`model_cls` whose whole `__call__(x, train, return_aux, **inputs)` runs under
  `jax.checkpoint` (`train` and `return_aux` static); same parameter tree as `model_cls`.
  `save_conv_outputs` keeps the outputs named `fast_conv.CONV_OUTPUT` and BatchNorm's
  statistics (`layers.BN_STATISTICS`, a few numbers per channel): only the elementwise work
  after each convolution is recomputed (figures: README, `config.remat`)."""
  policy = (jax.checkpoint_policies.save_only_these_names(fast_conv.CONV_OUTPUT,
                                                          layers.BN_STATISTICS)
            if save_conv_outputs else None)
  rematted = nn.remat(model_cls, static_argnums=(2, 3), policy=policy)

  class FullRemat(rematted):  # pylint: disable=missing-class-docstring
    def __call__(self, x, train: bool = False, return_aux: bool = False, **kwargs):
      return super().__call__(x, train, return_aux, **kwargs)

  prefix = 'ElementwiseRemat' if save_conv_outputs else 'FullRemat'
  FullRemat.__name__ = FullRemat.__qualname__ = f'{prefix}{model_cls.__name__}'
  return FullRemat
