"""2D ImageNet ResNets -> the 3D I3D backbone, by inflating kernels over time.

Name map from torchvision's ResNet-50 (stride in the 3x3 conv, like PySlowFast's "b" conv):

    Flax                                        torchvision
    backbone/s1/pathway0_stem/conv, bn          conv1, bn1
    backbone/s{k}/pathway0_res{i}/branch2/a     layer{k-1}.{i}.conv1       (a_bn: bn1)
    backbone/s{k}/pathway0_res{i}/branch2/b     layer{k-1}.{i}.conv2       (b_bn: bn2)
    backbone/s{k}/pathway0_res{i}/branch2/c     layer{k-1}.{i}.conv3       (c_bn: bn3)
    backbone/s{k}/pathway0_res{i}/branch1[_bn]  layer{k-1}.{i}.downsample.{0,1}
    head/fc                                     fc (1000 ImageNet classes: usually excluded)

Kernels whose 3D template has kT > 1 (stem 5x7x7, the Tx1x1 "a" convs) are inflated with
`layout.inflate_kernel` ('repeat': copy over time and divide by kT, as PySlowFast's
CHECKPOINT_INFLATE; 'centre': centre tap only); kT = 1 kernels just gain a temporal axis. The
non-local blocks have no 2D counterpart: exclude them (and the head) or convert non-strictly.
A PySlowFast C2D checkpoint (3D kernels with kT = 1) inflates the same way with the PySlowFast map.
"""

from salinet_jax.convert import layout

# Flax module suffix under branch2 -> torchvision module suffix.
_BRANCH2 = {'a': 'conv1', 'a_bn': 'bn1', 'b': 'conv2', 'b_bn': 'bn2', 'c': 'conv3', 'c_bn': 'bn3'}
_BRANCH1 = {'branch1': 'downsample.0', 'branch1_bn': 'downsample.1'}
SUGGESTED_EXCLUDE = r'^head/|/pathway0_nonlocal\d+/'


def _branch2(match) -> str:
  stage, block, module = match.groups()
  return f'layer{int(stage) - 1}.{block}.{_BRANCH2[module]}'


def _branch1(match) -> str:
  stage, block, module = match.groups()
  return f'layer{int(stage) - 1}.{block}.{_BRANCH1[module]}'


def resnet_to_i3d_name_map(fc: str = 'fc') -> layout.NameMap:
  """torchvision ResNet (50/101) -> `I3DResNet` backbone + head."""
  return [
      (r'backbone/s1/pathway0_stem/conv', 'conv1'),
      (r'backbone/s1/pathway0_stem/bn', 'bn1'),
      (r'backbone/s([2-5])/pathway0_res(\d+)/branch2/(a|a_bn|b|b_bn|c|c_bn)', _branch2),
      (r'backbone/s([2-5])/pathway0_res(\d+)/(branch1|branch1_bn)', _branch1),
      (r'head/fc', fc),
  ]
