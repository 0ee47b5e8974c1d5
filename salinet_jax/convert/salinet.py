"""Reference SaliNet / S2TF-Net checkpoints (a PySlowFast fork) -> `SaliNetI3D`.

The backbone keys are PySlowFast's (`pyslowfast.backbone_rules`); the classifier is a root-level
`fc`; the side modules are named as in the reference's state dict (433 keys for the K400 model,
`TSPF` misspelt there):

    Flax                                       reference (P = sidelayer{k}.side_layer_3x3x3_)
    ssf/ssf{k}/unit1/{reduce,spatial,temporal,expand}   P{conv1,conv_S_1,conv_T_1,conv2}
    ssf/ssf{k}/unit2/{reduce,spatial,temporal,expand}   P{conv3,conv_S_2,conv_T_2,conv4}
    ssf/ssf{k}/to_map                                   Pconv5
    ssf/shared_bn                              bn_one
    ssf/ssf{k}/bn  (shared_saliency_bn=False)  bn_one  (each separate BN starts as the shared one)
    tsfp/tsfp{k}/gate{n}                       TSPF_layer_{k}.x_edge_layer{n}
    fusion/conv{n}                             fusion_temp_mask.fusion_1x1x1_{n}
    head/fc                                    fc
"""

from salinet_jax.convert import layout
from salinet_jax.convert import pyslowfast

CLASSIFIER_KEYS = ('fc.weight',)
SIDE_PREFIX = 'side_layer_3x3x3_'
# (unit, Flax conv) -> reference conv name inside a side layer.
SIDE_CONVS = {
    ('unit1', 'reduce'): 'conv1', ('unit1', 'spatial'): 'conv_S_1',
    ('unit1', 'temporal'): 'conv_T_1', ('unit1', 'expand'): 'conv2',
    ('unit2', 'reduce'): 'conv3', ('unit2', 'spatial'): 'conv_S_2',
    ('unit2', 'temporal'): 'conv_T_2', ('unit2', 'expand'): 'conv4',
}


def _side_conv(match) -> str:
  scale, unit, conv = match.groups()
  return f'sidelayer{scale}.{SIDE_PREFIX}{SIDE_CONVS[(unit, conv)]}'


def name_map() -> layout.NameMap:
  return pyslowfast.backbone_rules() + [
      (r'ssf/ssf([1-3])/(unit[12])/(reduce|spatial|temporal|expand)', _side_conv),
      (r'ssf/ssf([1-3])/to_map', rf'sidelayer\1.{SIDE_PREFIX}conv5'),
      (r'ssf/shared_bn', 'bn_one'),
      (r'ssf/ssf[1-3]/bn', 'bn_one'),
      (r'tsfp/tsfp([12])/gate([1-7])', r'TSPF_layer_\1.x_edge_layer\2'),
      (r'fusion/conv([12])', r'fusion_temp_mask.fusion_1x1x1_\1'),
      (r'head/fc', 'fc'),
  ]
