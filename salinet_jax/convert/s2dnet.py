"""Whole reference S2DNet checkpoints (aliyun/Synopsis-to-Detail-Network) -> `S2DNet`.

The reference's training script saves {'state_dict': S2DNetwork.state_dict()} with a 'module.'
prefix (DistributedDataParallel), which the reader removes together with TSM's temporal-shift
wrappers ('.net.'). Its SNet and DNet are TSM models, so the backbones follow the `tsm` source's
layouts (see `torchvision.py`): TSM's flat MobileNetV2 for SNet, torchvision's ResNet for DNet.

    Flax                               reference
    snet/backbone/...                  SNet.model.base_model.features.*     (TSM MobileNetV2)
    snet/fc                            SNet.model.new_fc
    f_theta/conv, conv_bn              DNet.sampler.space_time_convs.0.0, .1
    f_theta/fc{i}, fc{i}_bn            DNet.sampler.space_time_convs.{3i}.0, .{3i+1}
    f_theta/temporal_offset            DNet.sampler.fc_temporal_offset.0.0  (also temporal_stride,
                                                                             spatial_offset/stride)
    f_m                                DNet.ctx_feature_layer.0
    dnet/backbone/...                  DNet.model.base_model.*               (torchvision ResNet)
    dnet/fusion_layer{k}/conv          DNet.model.fusion_layers.{i}.0
    dnet/fc                            DNet.model.new_fc

The reference keeps its lateral-fusion convs in a list ordered by the sorted layer names, so the
conv after ResNet stage k is entry i = the rank of k among the model's fusion stages (stage 2 -> 0,
stage 3 -> 1 for the default `fusion_stages=(2, 3)`).

Shapes tell the f_theta fix apart (`S2DNet.f_theta_fix`): a checkpoint of the reference run with
`S2D.DETAIL_SAMPLING_DIM_RATE 1` has a 64-channel trunk conv (fix A), one run with `S2D.HIDDEN_DIM 4
S2D.DETAIL_SAMPLING_DIM_RATE 1` a 4-channel one (fix B); a config with the other fix reports the
f_theta conv, BN and fc1 tensors as mis-shaped.
"""

import re
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from salinet_jax import errors
from salinet_jax.convert import layout
from salinet_jax.convert import torchvision as tv

SNET = 'SNet.model'
DNET = 'DNet.model'
SAMPLER = 'DNet.sampler'
CONTEXT = 'DNet.ctx_feature_layer.0'
CLASSIFIER_KEYS = (f'{DNET}.new_fc.weight', f'{SNET}.new_fc.weight')
DEFAULT_FUSION_STAGES = (2, 3)
# f_theta's Sequential: conv block, BN3d, Flatten, then [Linear block, BN1d, ReLU] per fc layer.
F_THETA_TRUNK = f'{SAMPLER}.space_time_convs'
F_THETA_LAYERS_PER_FC = 3
_FUSION_MODULE = re.compile(r'dnet/fusion_layer(\d+)(?:/.*)?')


def strip_shift_wrappers(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Drops TSM's temporal-shift wrapper level '.net' from the keys ('conv1.net.weight')."""
  return {key.replace('.net.', '.'): value for key, value in state_dict.items()}


def fusion_stages_of(template: Mapping[str, Mapping]) -> Tuple[int, ...]:
  """The DNet stages followed by a lateral-fusion conv in a model template, sorted."""
  stages = set()
  for path in layout.flatten(template.get('params', {})):
    match = _FUSION_MODULE.fullmatch('/'.join(path[:-1]))
    if match:
      stages.add(int(match.group(1)))
  return tuple(sorted(stages))


def _snet_block_conv(match) -> str:
  return f'{SNET}.base_model.' + tv.tsm_mobilenet_module(match)


def _dnet_backbone(match) -> str:
  return f'{DNET}.base_model.' + tv.torchvision_module(match.group(1))


def _f_theta_fc(match) -> str:
  index, bn = int(match.group(1)), match.group(2)
  position = F_THETA_LAYERS_PER_FC * index + (1 if bn else 0)
  return f'{F_THETA_TRUNK}.{position}' + ('' if bn else '.0')


def name_map(fusion_stages: Sequence[int] = DEFAULT_FUSION_STAGES) -> layout.NameMap:
  """Rules from every S2DNet module to the reference's S2DNetwork names."""
  fusion_index = {stage: i for i, stage in enumerate(sorted(fusion_stages))}

  def fusion(match) -> str:
    stage = int(match.group(1))
    if stage not in fusion_index:
      raise errors.ConversionError(f'dnet/fusion_layer{stage} is not among the fusion stages '
                                   f'{tuple(fusion_stages)}.')
    return f'{DNET}.fusion_layers.{fusion_index[stage]}.0'

  return [
      (r'snet/backbone/features_(\d+)/(conv_\d(?:_\d)?)', _snet_block_conv),
      (r'snet/backbone/features_(\d+)_(\d)', rf'{SNET}.base_model.features.\1.\2'),
      (r'snet/fc', f'{SNET}.new_fc'),
      (r'f_theta/conv', f'{F_THETA_TRUNK}.0.0'),
      (r'f_theta/conv_bn', f'{F_THETA_TRUNK}.1'),
      (r'f_theta/fc(\d+)(_bn)?', _f_theta_fc),
      (r'f_theta/(temporal|spatial)_(offset|stride)', rf'{SAMPLER}.fc_\1_\2.0.0'),
      (r'f_m', CONTEXT),
      (r'dnet/backbone/(.+)', _dnet_backbone),
      (r'dnet/fusion_layer(\d+)/conv', fusion),
      (r'dnet/fc', f'{DNET}.new_fc'),
  ]
