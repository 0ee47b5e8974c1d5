"""PySlowFast checkpoints (I3D, I3D-NLN, Slow, C2D ResNets) -> `I3DResNet` backbones.

The Flax backbone's module names are PySlowFast's (see `salinet_jax/models/resnet3d.py`), so the
name map is a rename of '/' to '.' under 'backbone/', plus the classifier:

    Flax                                      PySlowFast
    backbone/s1/pathway0_stem/{conv,bn}       s1.pathway0_stem.{conv,bn}
    backbone/sK/pathway0_resI/branch1[_bn]    sK.pathway0_resI.branch1[_bn]
    backbone/sK/pathway0_resI/branch2/X[_bn]  sK.pathway0_resI.branch2.X[_bn]      X in a, b, c
    backbone/sK/pathway0_nonlocalI/Y          sK.pathway0_nonlocalI.Y
                                              Y in conv_{theta,phi,g,out}, bn
    head/fc                                   head.projection

PySlowFast's test-time head applies a softmax after the projection; the Flax head returns the
projection (logits), which is what a comparison should use.

Caffe2 `.pkl` checkpoints of the model zoo (I3D_NLN_8x8_R50.pkl ...) name blobs after the Caffe2
video models ('res3_1_branch2a_bn_s', 'nonlocal_conv4_5_theta_w', 'pred_w'); `caffe2_to_pyslowfast`
renames them to the PySlowFast keys above (single pathway only). The BN blobs '_s', '_b', '_rm',
'_riv' are gamma, beta, running mean and running variance; solver state (momentum, lr, iteration)
is dropped.
"""

import re
from typing import Dict, Mapping, Tuple

import numpy as np

from salinet_jax.convert import layout

PROJECTION = 'head.projection'
CLASSIFIER_KEYS = (f'{PROJECTION}.weight',)


def backbone_rules() -> layout.NameMap:
  """Rules for the 'backbone' subtree of the I3D models."""
  return [(r'backbone/(s[1-5]/.+)', lambda m: layout.dotted(m.group(1)))]


def name_map(head: str = PROJECTION) -> layout.NameMap:
  """I3D / NL-I3D classifier; `head` is the PyTorch name of the final Linear."""
  return backbone_rules() + [(r'head/fc', head)]


# Caffe2 blob suffix -> PyTorch tensor name.
_C2_TENSOR = {'w': 'weight', 'b': 'bias', 's': 'weight', 'rm': 'running_mean',
              'riv': 'running_var'}
_C2_SOLVER_STATE = re.compile(r'(_momentum$|^lr$|^model_iter$|_lr$|^iter$)')
_C2_RULES: Tuple[Tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    (r'conv1_(w|b)', r's1.pathway0_stem.conv.{}'),
    (r'res_conv1_bn_(s|b|rm|riv)', r's1.pathway0_stem.bn.{}'),
    (r'res(\d)_(\d+)_branch1_(w|b)', r's{0}.pathway0_res{1}.branch1.{2}'),
    (r'res(\d)_(\d+)_branch1_bn_(s|b|rm|riv)', r's{0}.pathway0_res{1}.branch1_bn.{2}'),
    (r'res(\d)_(\d+)_branch2([abc])_(w|b)', r's{0}.pathway0_res{1}.branch2.{2}.{3}'),
    (r'res(\d)_(\d+)_branch2([abc])_bn_(s|b|rm|riv)', r's{0}.pathway0_res{1}.branch2.{2}_bn.{3}'),
    (r'nonlocal_conv(\d)_(\d+)_(theta|phi|g|out)_(w|b)',
     r's{0}.pathway0_nonlocal{1}.conv_{2}.{3}'),
    (r'nonlocal_conv(\d)_(\d+)_bn_(s|b|rm|riv)', r's{0}.pathway0_nonlocal{1}.bn.{2}'),
    (r'pred_(w|b)', PROJECTION + r'.{}'),
))


def caffe2_key(blob: str):
  """PySlowFast key of a Caffe2 blob name; '' for solver state; None if unknown."""
  if _C2_SOLVER_STATE.search(blob):
    return ''
  for pattern, template in _C2_RULES:
    match = pattern.fullmatch(blob)
    if match:
      groups = list(match.groups())
      groups[-1] = _C2_TENSOR[groups[-1]]
      return template.format(*groups)
  return None


def caffe2_to_pyslowfast(blobs: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], list]:
  """Renames Caffe2 blobs to PySlowFast keys; returns (state dict, unknown blob names).

  Linear weights stored with trailing singleton dims are squeezed to 2D.
  """
  state_dict, unknown = {}, []
  for blob, value in blobs.items():
    key = caffe2_key(blob)
    if key is None:
      unknown.append(blob)
    elif key:
      value = np.asarray(value)
      if key == f'{PROJECTION}.weight' and value.ndim > 2:
        value = value.reshape(value.shape[:2])
      state_dict[key] = value
  return state_dict, sorted(unknown)
