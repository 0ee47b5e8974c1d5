"""SaliNet classifiers: a 3D ResNet trunk plus SSF saliency maps, TSFP fusion and a feature mask.

    f1, f2, f3, f4 = trunk(clip)                'backbone' (I3D: pool1, res3-5; Hara: stages 1-4)
    S1, S2, S3 = SSF(f1), SSF(f2), SSF(f3)      'ssf'
    P1, G1, P2, G2, P3 = fusion across scales   'tsfp'     (closed form, see salient.py)
    S_final = temporal mask fusion(P3)          'fusion'
    logits = FC(Dropout(GAP(S_final * f4)))     'head'

`SaliNetI3D` is the published model (PySlowFast I3D-NLN-R50 8x8 trunk); `SaliNetHara` attaches the
same modules to the Hara et al. 3D-ResNet family (spec section 8), with TSFP/pool strides derived
from the trunk's stage shapes. Hara trunks on 8-16 frames end with a single frame; there the mask
fusion has nothing to fuse, no parameters, and S_final = P3.

Switches: `ssf` (saliency branch at all), `tsfp` (gated pooling; needs `ssf`),
`shared_saliency_bn` (one BN for the three maps, as the reference; False gives each SSF its own).
With `ssf=False` the model is the plain trunk classifier with identical parameter names.
With `return_aux=True` the models return `(logits, aux)`; aux holds 'S1', 'S2', 'S3', 'P1', 'P2',
'P3', 'G1' and 'G2' (TSFP only) and 'saliency_final' (S_final, (B, 1, H, W, 1)), all float32;
it is empty when `ssf=False`.
"""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salinet_jax import errors
from salinet_jax.models import layers
from salinet_jax.models import resnet3d
from salinet_jax.models import salient


def apply_salient_modules(features: Sequence[jnp.ndarray], train: bool, *, use_tsfp: bool,
                          shared_saliency_bn: bool, dtype: Any,
                          conv_impl: str) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Masks the last of four feature maps with the saliency computed from the first three.

  Must be called inside the `nn.compact` method of the classifier: it creates the submodules
  'ssf', 'tsfp' and 'fusion' there, so they sit next to 'backbone' and 'head' in the parameter tree.
  """
  if len(features) != 4:
    raise ValueError(f'Expected 4 feature maps from the trunk, got {len(features)}.')
  shapes = [tuple(f.shape[1:4]) for f in features]
  strides = salient.scale_strides(shapes)
  maps = salient.SSFPyramid(shared_bn=shared_saliency_bn, dtype=dtype, conv_impl=conv_impl,
                            name='ssf')(features[:3], train)
  aux = {f'S{k + 1}': s for k, s in enumerate(maps)}
  aux.update(salient.CrossScaleFusion(strides, use_tsfp=use_tsfp, dtype=dtype, conv_impl=conv_impl,
                                      name='tsfp')(*maps))
  aux['saliency_final'] = salient.TemporalMaskFusion(dtype=layers.at_least_float32(dtype),
                                                     name='fusion')(aux['P3'])
  # The mask's gradient sums the time steps and channels of the product, in float32.
  masked = (features[3] * layers.widened(aux['saliency_final'])).astype(features[3].dtype)
  return masked, aux


class _SaliNetMixin:
  """The shared forward: trunk -> (optional) salient modules -> head."""

  def _check_switches(self):
    if self.tsfp and not self.ssf:
      raise errors.ConfigError('config.model.tsfp=True needs config.model.ssf=True (TSFP fuses the '
                               'SSF maps).')

  def _forward(self, x, train: bool, return_aux: bool):
    self._check_switches()
    features = self.backbone()(x, train)
    final, aux = features[-1], {}
    if self.ssf:
      final, aux = apply_salient_modules(
          features, train, use_tsfp=self.tsfp, shared_saliency_bn=self.shared_saliency_bn,
          dtype=self.dtype, conv_impl=self.conv_impl)
    logits = resnet3d.ClassificationHead(self.num_classes, self.dropout_rate, self.dtype,
                                         name='head')(final, train)
    if return_aux:
      return logits, aux
    return logits


class SaliNetI3D(_SaliNetMixin, resnet3d.NonLocalI3DClassifier):
  """SaliNet on PySlowFast's (NL-)I3D ResNet; defaults = the published K400 model.

  Attributes: those of `NonLocalI3DClassifier` (depth, width, stage_blocks, temporal_kernels,
  use_nonlocal, nonlocal_blocks, nonlocal_pool, stem_temporal_kernel, pool1_temporal,
  dropout_rate, dtype, conv_impl) plus `ssf`, `tsfp`, `shared_saliency_bn`.
  """
  ssf: bool = True
  tsfp: bool = True
  shared_saliency_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    return self._forward(x, train, return_aux)


class SaliNetHara(_SaliNetMixin, resnet3d.HaraResNet3DClassifier):
  """SaliNet on a Hara et al. 3D ResNet: SSF on stages 1-3, the mask on stage 4.

  Attributes: those of `HaraResNet3DClassifier` (depth, width, stem_temporal_kernel,
  stem_max_pool, dropout_rate, dtype, conv_impl) plus `ssf`, `tsfp`, `shared_saliency_bn`.
  The TSFP/pool strides map each stage's (T, H, W) onto the next one's, so they include a
  temporal stride 2 wherever the trunk halves time.
  """
  ssf: bool = True
  tsfp: bool = True
  shared_saliency_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    return self._forward(x, train, return_aux)
