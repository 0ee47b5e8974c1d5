"""torchvision ImageNet and TSM checkpoints -> S2DNet's SNet (MobileNetV2) and DNet (ResNet).

The Flax 2D backbones are named after torchvision's modules with '_' for '.'
(`salinet_jax/models/mobilenet_v2.py`, `resnet2d.py`), so a torchvision key is the Flax path with
'/' and '_' turned into '.':

    Flax (under snet/backbone/ or dnet/backbone/)   torchvision
    features_3/conv_1_0                             features.3.conv.1.0      MobileNetV2
    layer2_0/downsample_1                           layer2.0.downsample.1    ResNet

TSM checkpoints ({'state_dict': {'module.base_model.*', 'module.new_fc.*'}}) are read with the
'module.' and 'base_model.' prefixes removed and the temporal-shift wrapper '.net' dropped
(`strip_tsm_prefix`). Their ResNets then have torchvision's keys; their MobileNetV2 is the older
flat layout (TSM's archs/mobilenet_v2.py), mapped explicitly:

    Flax                                  TSM MobileNetV2
    features_0_{0,1}, features_18_{0,1}   features.0.{0,1}, features.18.{0,1}
    features_k/conv_{0_0,0_1,1_0,1_1,2,3} features.k.conv.{0,1,3,4,6,7}   (expansion blocks)
    features_1/conv_{0_0,0_1,1,2}         features.1.conv.{0,1,3,4}       (first block, t = 1)

Only the backbones (and, for a TSM MobileNetV2, SNet's classifier from `new_fc` when the class
counts agree) come from these checkpoints; the ImageNet classifiers and DNet's TSM classifier
(whose inputs differ: DNet classifies [x ; m ; s]) are skipped. `target` picks the network a file
initialises: 'auto' looks at its keys ('features.*' -> SNet, 'layer1.*' -> DNet). A 2D model alone
(no S2DNet) is not a registered model, so the targets are S2DNet's subtrees.
"""

import re
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from salinet_jax import errors
from salinet_jax.convert import layout

S2DNET = 's2dnet'
TARGETS = ('snet', 'dnet')
BACKBONE = {'snet': 'snet/backbone', 'dnet': 'dnet/backbone'}
# Keys of 2D classifiers that never initialise an S2DNet head.
SKIPPED_CLASSIFIERS = ('fc.weight', 'fc.bias', 'classifier.1.weight', 'classifier.1.bias',
                       'classifier.weight', 'classifier.bias')
TSM_FC = 'new_fc'
# Recommended `exclude` for init_from with a backbone-only S2DNet checkpoint.
S2DNET_HEADS_EXCLUDE = r'^(f_theta|f_m|dnet/fusion_layer\d+|dnet/fc|snet/fc)/'

# TSM's flat MobileNetV2 block layout: Flax conv name -> index in `features.k.conv`.
_TSM_EXPAND = {'conv_0_0': '0', 'conv_0_1': '1', 'conv_1_0': '3', 'conv_1_1': '4', 'conv_2': '6',
               'conv_3': '7'}
_TSM_FIRST = {'conv_0_0': '0', 'conv_0_1': '1', 'conv_1': '3', 'conv_2': '4'}


def torchvision_module(path: str) -> str:
  """'features_3/conv_1_0' -> 'features.3.conv.1.0'; 'layer2_0/downsample_1' -> ..."""
  return path.replace('/', '.').replace('_', '.')


def detect_target(state_dict: Mapping[str, Any]) -> str:
  """'snet' for a MobileNetV2 state dict, 'dnet' for a ResNet one."""
  if any(k.startswith('layer1.') for k in state_dict):
    return 'dnet'
  if any(k.startswith('features.') for k in state_dict):
    return 'snet'
  raise errors.ConversionError('Cannot tell whether the checkpoint is a ResNet (layer1.*) or a '
                               'MobileNetV2 (features.*): pass --target.')


def _target(model_name: str, state_dict, options) -> str:
  if model_name != S2DNET:
    raise errors.ConversionError(
        f'2D checkpoints convert into the S2DNet model ({S2DNET!r}) or, inflated, into i3d_nl / '
        f'salinet_i3d; the config builds {model_name!r}.')
  target = options.get('target', 'auto')
  return detect_target(state_dict) if target in ('auto', None, '') else target


def tsm_mobilenet_module(match) -> str:
  """TSM MobileNetV2 name of a (block index, Flax conv name) match: 'features.3.conv.6'."""
  block, conv = match.groups()
  table = _TSM_FIRST if block == '1' else _TSM_EXPAND
  return f'features.{block}.conv.{table[conv]}'


def name_map(model_name: str, state_dict: Mapping[str, Any], options: Mapping[str, Any]
             ) -> layout.NameMap:
  """torchvision ResNet -> DNet backbone, or torchvision MobileNetV2 -> SNet backbone."""
  target = _target(model_name, state_dict, options)
  prefix = re.escape(BACKBONE[target])
  return [(prefix + r'/(.+)', lambda m: torchvision_module(m.group(1)))]


def tsm_name_map(model_name: str, state_dict: Mapping[str, Any], options: Mapping[str, Any]
                 ) -> layout.NameMap:
  """TSM ResNet -> DNet backbone; TSM MobileNetV2 -> SNet backbone (+ SNet fc from new_fc)."""
  target = _target(model_name, state_dict, options)
  prefix = re.escape(BACKBONE[target])
  if target == 'dnet':
    return [(prefix + r'/(.+)', lambda m: torchvision_module(m.group(1)))]
  return [
      (prefix + r'/features_(\d+)/(conv_\d(?:_\d)?)', tsm_mobilenet_module),
      (prefix + r'/features_(\d+)_(\d)', r'features.\1.\2'),
      (r'snet/fc', TSM_FC),
  ]


def strip_tsm_prefix(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Drops 'module.' / 'base_model.' prefixes and TSM's '.net' shift wrappers from keys."""
  out = {}
  for key, value in state_dict.items():
    key = re.sub(r'^(module\.)?(base_model\.)?', '', key)
    out[key.replace('.net.', '.')] = value
  return out


def restrict_template(template: Mapping[str, Any], model_name: str, state_dict, options,
                      source: str) -> Tuple[Dict[str, Any], str]:
  """The part of an S2DNet template a 2D checkpoint initialises, and that part's prefix."""
  target = _target(model_name, state_dict, options)
  keep = [BACKBONE[target]]
  if source == 'tsm' and target == 'snet':
    keep.append('snet/fc')
  out = {}
  for collection, tree in template.items():
    flat = {k: v for k, v in layout.flatten(tree).items()
            if any('/'.join(k).startswith(p + '/') for p in keep)}
    out[collection] = layout.unflatten(flat)
  return out, target


def skipped_keys(state_dict: Mapping[str, Any], source: str, target: str):
  """Checkpoint keys that never initialise S2DNet (classifiers of other tasks / inputs)."""
  skipped = [k for k in state_dict if k in SKIPPED_CLASSIFIERS]
  if source == 'tsm' and target == 'dnet':
    skipped += [k for k in state_dict if k.startswith(TSM_FC + '.')]
  return skipped
