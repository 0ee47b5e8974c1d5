"""Import PyTorch (and Caffe2) checkpoints into this code base's Flax models.

    python -m salinet_jax.convert --source=pyslowfast --checkpoint=I3D_NLN_8x8_R50.pkl \\
        --config=configs/k400_i3d_nl.py --output=/ckpt/i3d_nln_k400

writes an orbax checkpoint of {'params', 'batch_stats'} (`<output>/variables`) and a json report
(`<output>/conversion.json`) that `config.init_from.checkpoint` loads (`salinet_jax.pretrained`).

Sources (`SOURCES`):
  pyslowfast   PySlowFast `.pyth` (state dict under 'model_state') or model-zoo Caffe2 `.pkl`:
               I3D / I3D-NLN / Slow / C2D ResNets -> i3d_nl (or a SaliNet backbone)
  salinet      the reference SaliNet / S2TF-Net checkpoints -> salinet_i3d
  torchvision  ImageNet ResNet-50 -> i3d_nl / salinet_i3d backbones by inflation (--inflate);
               ResNet-50 / MobileNetV2 -> the S2DNet DNet / SNet backbones
  tsm          TSM checkpoints ('module.base_model.*', 'module.new_fc.*') -> S2DNet DNet / SNet
  s2dnet       whole reference S2DNet checkpoints ('module.SNet.*', 'module.DNet.*') -> s2dnet

The layout rules live in `layout.py`; each source contributes a name map.
"""

import dataclasses
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from data import errors as data_errors

# pylint: disable=g-import-not-at-top,wrong-import-position
with data_errors.ctrl_c_while_starting(__name__):  # numpy's, for `python -m salinet_jax.convert`
  import numpy as np

  from salinet_jax import errors
  from salinet_jax.convert import inflate
  from salinet_jax.convert import layout
  from salinet_jax.convert import pyslowfast
  from salinet_jax.convert import readers
  from salinet_jax.convert import s2dnet
  from salinet_jax.convert import salinet
  from salinet_jax.convert.layout import ConversionReport, convert_state_dict  # noqa: F401

I3D_MODELS = ('i3d_nl', 'salinet_i3d')


@dataclasses.dataclass(frozen=True)
class Source:
  """A checkpoint family: how to read its files and how its names map onto a model."""
  name: str
  help: str
  # (path, trust_pickle) -> (state dict, names the reader could not place)
  read: Callable[[str, bool], Tuple[Dict[str, np.ndarray], Sequence[str]]]
  # (model name, state dict, options) -> (name map, default inflate mode or None)
  name_map: Callable[[str, Mapping[str, np.ndarray], Mapping[str, Any]],
                     Tuple[layout.NameMap, Optional[str]]]
  classifier_keys: Tuple[str, ...]
  # The config.data.normalization preset of the pixels the family's weights were trained on.
  normalization: str
  # The same for 2D kernels (an image network's) inflated into a 3D model; None where the
  # family's 2D weights were trained on pixels of another kind (PySlowFast's: Caffe2 ImageNet
  # ResNets, BGR with the mean subtracted and no std).
  inflated_normalization: Optional[str]


def _read_torch(path: str, trust_pickle: bool):
  return readers.load_torch_checkpoint(path, trust_pickle), ()


def _read_pyslowfast(path: str, trust_pickle: bool):
  if path.endswith('.pkl'):
    return pyslowfast.caffe2_to_pyslowfast(readers.load_caffe2_blobs(path))
  return _read_torch(path, trust_pickle)


def _require_model(source: str, model_name: str, allowed: Sequence[str]) -> None:
  if model_name not in allowed:
    raise errors.ConversionError(f'--source={source} converts into models {list(allowed)}, but '
                                 f'the config builds {model_name!r}.')


def _pyslowfast_map(model_name, state_dict, options):
  _require_model('pyslowfast', model_name, I3D_MODELS)
  return pyslowfast.name_map(), None


def _salinet_map(model_name, state_dict, options):
  _require_model('salinet', model_name, I3D_MODELS)
  return salinet.name_map(), None


def _s2dnet_map(model_name, state_dict, options):
  _require_model('s2dnet', model_name, ('s2dnet',))
  return s2dnet.name_map(options.get('fusion_stages', s2dnet.DEFAULT_FUSION_STAGES)), None


def _read_s2dnet(path: str, trust_pickle: bool):
  return s2dnet.strip_shift_wrappers(readers.load_torch_checkpoint(path, trust_pickle)), ()


def _torchvision_map(model_name, state_dict, options):
  if model_name in I3D_MODELS:
    return inflate.resnet_to_i3d_name_map(), 'repeat'
  from salinet_jax.convert import torchvision as tv  # pylint: disable=g-import-not-at-top
  return tv.name_map(model_name, state_dict, options), None


def _tsm_map(model_name, state_dict, options):
  if model_name in I3D_MODELS:
    return inflate.resnet_to_i3d_name_map(fc='new_fc'), 'repeat'
  from salinet_jax.convert import torchvision as tv  # pylint: disable=g-import-not-at-top
  return tv.tsm_name_map(model_name, state_dict, options), None


def _read_tsm(path: str, trust_pickle: bool):
  from salinet_jax.convert import torchvision as tv  # pylint: disable=g-import-not-at-top
  return tv.strip_tsm_prefix(readers.load_torch_checkpoint(path, trust_pickle)), ()


SOURCES: Dict[str, Source] = {
    'pyslowfast': Source(
        'pyslowfast', 'PySlowFast .pyth (model_state) or model-zoo Caffe2 .pkl I3D/NLN/Slow/C2D',
        _read_pyslowfast, _pyslowfast_map, pyslowfast.CLASSIFIER_KEYS, 'kinetics', None),
    'salinet': Source(
        'salinet', 'reference SaliNet / S2TF-Net checkpoint (PySlowFast fork, 433 keys)',
        _read_torch, _salinet_map, salinet.CLASSIFIER_KEYS, 'kinetics', 'kinetics'),
    'torchvision': Source(
        'torchvision', 'torchvision ImageNet ResNet-50 / MobileNetV2 state dict',
        _read_torch, _torchvision_map, ('fc.weight', 'classifier.1.weight'), 'imagenet',
        'imagenet'),
    'tsm': Source(
        'tsm', "TSM checkpoint ('module.base_model.*', 'module.new_fc.*')",
        _read_tsm, _tsm_map, ('new_fc.weight',), 'imagenet', 'imagenet'),
    's2dnet': Source(
        's2dnet', "whole reference S2DNet checkpoint ('module.SNet.*', 'module.DNet.*')",
        _read_s2dnet, _s2dnet_map, s2dnet.CLASSIFIER_KEYS, 'imagenet', 'imagenet'),
}


# Sources of 2D networks: inflated into a 3D model (--inflate), or one S2DNet backbone each
# (--target).
TWO_D_SOURCES = ('torchvision', 'tsm')


def num_classes_of(state_dict: Mapping[str, np.ndarray], keys: Sequence[str]) -> Optional[int]:
  """Rows of the first classifier weight found in `state_dict`, else None."""
  for key in keys:
    if key in state_dict:
      return int(np.asarray(state_dict[key]).shape[0])
  return None


def model_template(model, input_shape: Sequence[int]) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of `model` as ShapeDtypeStructs (no computation)."""
  # Imported here: the seconds-long imports of JAX and Flax are not needed for `--help` or by
  # the library users of this package that only read checkpoints.
  from salinet_jax import models  # pylint: disable=g-import-not-at-top
  shapes = models.abstract_variables(model, input_shape)
  return {'params': shapes.get('params', {}), 'batch_stats': shapes.get('batch_stats', {})}


def convert(source: str, state_dict: Mapping[str, np.ndarray], template: Mapping[str, Any],
            model_name: str, *, exclude: str = '', inflate_mode: Optional[str] = None,
            options: Optional[Mapping[str, Any]] = None, dtype: Any = np.float32,
            unplaced: Sequence[str] = ()) -> Tuple[Dict[str, Any], ConversionReport]:
  """Converts a state dict of `source` into variables shaped like `template`.

  `inflate_mode` None uses the source's default ('repeat' for torchvision -> 3D, else none);
  'none' turns inflation off. `unplaced` are reader-level names with no PyTorch key (unknown
  Caffe2 blobs); they are reported as unexpected. `options`: 'target' ('auto' | 'snet' | 'dnet')
  for 2D checkpoints into S2DNet; 'fusion_stages' for the `s2dnet` source (default: the
  template's), whose reference numbers its fusion convs by rank among those stages.
  """
  if source not in SOURCES:
    raise errors.ConversionError(f'Unknown source {source!r}; one of {sorted(SOURCES)}.')
  options = dict(options or {})
  if source == 's2dnet':
    options.setdefault('fusion_stages', s2dnet.fusion_stages_of(template))
  name_map, default_inflate = SOURCES[source].name_map(model_name, state_dict, options)
  mode = default_inflate if inflate_mode is None else inflate_mode
  mode = None if mode in (None, 'none', '') else mode
  ignored: Sequence[str] = ()
  if source in TWO_D_SOURCES and model_name not in I3D_MODELS:
    # A 2D checkpoint initialises one S2DNet backbone: convert (and report on) that part only.
    from salinet_jax.convert import torchvision as tv  # pylint: disable=g-import-not-at-top
    template, target = tv.restrict_template(template, model_name, state_dict, options, source)
    ignored = tv.skipped_keys(state_dict, source, target)
  variables, report = convert_state_dict(state_dict, template, name_map, exclude=exclude,
                                         inflate=mode, dtype=dtype, extra_ignored=ignored)
  report.unexpected.extend(f'{name} (unknown blob)' for name in unplaced)
  return variables, report


def read_checkpoint(source: str, path: str, trust_pickle: bool = False
                    ) -> Tuple[Dict[str, np.ndarray], Sequence[str]]:
  """(state dict with PyTorch keys, unplaced names) of a checkpoint file of `source`."""
  if source not in SOURCES:
    raise errors.ConversionError(f'Unknown source {source!r}; one of {sorted(SOURCES)}.')
  return SOURCES[source].read(path, trust_pickle)


def merge_parts(parts: Sequence[Tuple[str, Mapping[str, Any]]]) -> Dict[str, Any]:
  """The union of the variables converted from several files (S2DNet's SNet and DNet
  checkpoints), each leaf from one file only: two files of one network would have the second
  replace the first without a word."""
  flat, origin = {}, {}
  for path, variables in parts:
    for key, value in layout.flatten(variables).items():
      if key in origin:
        raise errors.ConversionError(
            f'{origin[key]} and {path} both convert {layout.path_str(key)}: give one checkpoint '
            'per network.')
      origin[key], flat[key] = path, value
  return layout.unflatten(flat)


# The networks S2DNet's warm-up takes from 2D checkpoints, one file each.
S2DNET_NETWORKS = ('snet', 'dnet')


def networks_not_converted(variables: Mapping[str, Any], model_name: str) -> List[str]:
  """S2DNet's networks that no file converted into (its 2D sources convert one network per
  file, each file's report complete for its own network: one file alone reported nothing
  missing)."""
  if model_name != 's2dnet':
    return []
  converted = {key[1] for key in layout.flatten(variables) if len(key) > 1}
  return [network for network in S2DNET_NETWORKS if network not in converted]


def merge_reports(a: ConversionReport, b: ConversionReport) -> ConversionReport:
  """The report of two conversions into disjoint parts of one model."""
  return ConversionReport(
      converted=a.converted + b.converted, missing=a.missing + b.missing,
      unexpected=a.unexpected + b.unexpected, mis_shaped=a.mis_shaped + b.mis_shaped,
      excluded=sorted(set(a.excluded) | set(b.excluded)), inflated=a.inflated + b.inflated,
      inflated_from_2d=a.inflated_from_2d + b.inflated_from_2d,
      ignored=a.ignored + b.ignored)


def sanitize_regex(pattern: str) -> str:
  """Validates a user regex early, with a clear message."""
  try:
    re.compile(pattern)
  except re.error as e:
    raise errors.ConversionError(f'Invalid regex {pattern!r}: {e}') from e
  return pattern
