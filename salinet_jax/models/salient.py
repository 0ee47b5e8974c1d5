"""SaliNet's side modules: SSF (saliency maps), TSFP (gated pooling across scales), mask fusion.

Shapes are NTHWC; every saliency map has one channel. For an 8x224 clip on I3D-NLN-R50:
S1 (B,4,56,56,1), S2 (B,4,28,28,1), S3 (B,4,14,14,1); P1, G1 (B,4,28,28,1); P2, G2 (B,4,14,14,1);
P3 (B,4,7,7,1); S_final (B,1,7,7,1).

Cross-scale fusion, closed form. The reference interleaves the frames of two maps along time,
[P1_0, S2_0, P1_1, S2_1, ...], and pools that with temporal stride 2. Frame t of the result is the
average of P1_t and S2_t, and TSFP_2's gate, whose last conv has temporal stride 2 and temporal
kernel 1, only ever reads the P1 frames. So, per frame:

    P1 = pool(S1) * G1(S1)
    P2 = pool((P1 + S2) / 2) * G2(P1)          G2 reads P1 only (the reference's TSFP_2 quirk)
    P3 = pool((P2 + S3) / 2)                   plain average pool, no gate
    S_final = w2 . ReLU(W1 [P3_0 .. P3_{T-1}])   time as channels, T -> T/2 -> 1, no bias/sigmoid

where `pool` is an average pool whose window = stride maps one scale onto the next one's (T, H, W)
((1,2,2) for I3D; (2,2,2) where a backbone halves time). `CrossScaleFusion` is this closed form,
tests/test_salient.py's `InterleavedCrossScaleFusion` the literal interleave-then-pool. The two share
parameter names, so one set of variables drives both. The closed form runs TSFP_2's gate on T frames
instead of the reference's 2T, so it costs half of the reference's TSFP_2 FLOPs for the same output.

Parameter names against the reference's state_dict (`sidelayer{k}`, `bn_one`, `TSPF_layer_{k}`
(sic), `fusion_temp_mask`); every side-layer name below is prefixed `side_layer_3x3x3_`:
    sidelayer{k}.{conv1,conv_S_1,conv_T_1,conv2}   ssf/ssf{k}/unit1/{reduce,spatial,temporal,expand}
    sidelayer{k}.{conv3,conv_S_2,conv_T_2,conv4}   ssf/ssf{k}/unit2/{reduce,spatial,temporal,expand}
    sidelayer{k}.conv5                             ssf/ssf{k}/to_map
    bn_one.*                                       ssf/shared_bn   (separate: ssf/ssf{k}/bn)
    TSPF_layer_{k}.x_edge_layer{n}.weight          tsfp/tsfp{k}/gate{n}/kernel
    fusion_temp_mask.fusion_1x1x1_{n}.weight       fusion/conv{n}/kernel
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salinet_jax.models import layers

Triple = Tuple[int, int, int]
Shape3 = Tuple[int, int, int]


# ----------------------------------------------------------------------------------------------
# Small helpers.
# ----------------------------------------------------------------------------------------------


def scale_strides(shapes: Sequence[Shape3]) -> Tuple[Triple, ...]:
  """Per-axis strides that map each (T, H, W) in `shapes` onto the next one.

  A stride s maps size a onto b when ceil(a / s) == b (odd sizes happen where a backbone's
  strided convolution rounds up, e.g. 7 -> 4); anything else is an error.
  """
  strides = []
  for k, (src, dst) in enumerate(zip(shapes[:-1], shapes[1:])):
    stride = []
    for axis, (a, b) in enumerate(zip(src, dst)):
      s = -(-a // b)
      if b < 1 or -(-a // s) != b:
        raise ValueError(f'Scale {k + 1} {tuple(src)} cannot be pooled onto scale {k + 2} '
                         f'{tuple(dst)} (axis {axis}: {a} -> {b}).')
      stride.append(s)
    strides.append(tuple(stride))
  return tuple(strides)


def avg_pool_ceil(x, strides: Triple):
  """Average pool with window = stride; a partial last window averages only its real elements."""
  strides = layers.triple(strides)
  if all(s == 1 for s in strides):
    return x
  pads = tuple((0, -size % s) for size, s in zip(x.shape[1:4], strides))
  return nn.avg_pool(x, strides, strides, pads, count_include_pad=False)


# ----------------------------------------------------------------------------------------------
# SSF: Salient Semantic Feature mining.
# ----------------------------------------------------------------------------------------------


class Residual2Plus1DUnit(nn.Module):
  """Bias-free (2+1)D residual bottleneck without BN.

  1x1x1 C->C/r, ReLU; 1xkxk, ReLU; kx1x1, ReLU; 1x1x1 C/r->C; add the input; ReLU.
  """
  reduction: int = 2
  spatial_kernel: int = 3
  temporal_kernel: int = 3
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    inner = channels // self.reduction
    ks, kt = self.spatial_kernel, self.temporal_kernel
    conv = lambda f, k, p, name: layers.Conv3D(  # noqa: E731
        f, k, 1, p, dtype=self.dtype, impl=self.conv_impl, name=name)
    y = nn.relu(conv(inner, 1, 0, 'reduce')(x))
    y = nn.relu(conv(inner, (1, ks, ks), (0, ks // 2, ks // 2), 'spatial')(y))
    y = nn.relu(conv(inner, (kt, 1, 1), (kt // 2, 0, 0), 'temporal')(y))
    y = conv(channels, 1, 0, 'expand')(y)
    return nn.relu(y + x.astype(y.dtype))


class SalientSemanticFeature(nn.Module):
  """SSF module: C-channel features -> 1-channel saliency map S in (0, 1).

  Two residual (2+1)D units, a 1x1x1 C->1 conv + ReLU, BatchNorm over the single channel, sigmoid.
  The BN is this module's own ('bn') unless a shared one is passed in (the reference's `bn_one`,
  shared by all three scales). The map is returned in float32 (float64 in float64 runs).
  """
  num_units: int = 2
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool, shared_norm: Optional[nn.Module] = None):
    for i in range(self.num_units):
      x = Residual2Plus1DUnit(dtype=self.dtype, conv_impl=self.conv_impl, name=f'unit{i + 1}')(x)
    s = nn.relu(layers.Conv3D(1, 1, dtype=self.dtype, impl=self.conv_impl, name='to_map')(x))
    out_dtype = layers.at_least_float32(self.dtype)
    s = s.astype(out_dtype)
    norm = (shared_norm if shared_norm is not None
            else layers.batch_norm(train, out_dtype, name='bn'))
    return nn.sigmoid(norm(s))


class SSFPyramid(nn.Module):
  """The three SSF modules ('ssf1'..'ssf3'), with one shared or three separate saliency BNs.

  `shared_bn=True` is the reference: one BatchNorm ('shared_bn') normalises all three maps, so in
  training its running statistics are updated three times per step, once per scale.
  """
  shared_bn: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool):
    shared = (layers.batch_norm(train, layers.at_least_float32(self.dtype), name='shared_bn')
              if self.shared_bn else None)
    return [SalientSemanticFeature(dtype=self.dtype, conv_impl=self.conv_impl,
                                   name=f'ssf{k + 1}')(f, train, shared)
            for k, f in enumerate(features)]


# ----------------------------------------------------------------------------------------------
# TSFP: Two-branch Salient Feature Preserving.
# ----------------------------------------------------------------------------------------------

# (out channels, spatial kernel) of gate convs 1..6; conv 7 is 1x1x1 to one channel.
TSFP_GATE_LAYERS = ((16, 9), (32, 7), (64, 3), (32, 1), (16, 5), (4, 3))


class TSFP(nn.Module):
  """TSFP module on a 1-channel map: returns (P, G) with P = avgpool(x) * G(gate_input).

  Gate branch: bias-free 1xkxk convs with "same" padding and ReLU (`gate_layers`), the last one
  carrying `strides`, then 1x1x1 to one channel and a sigmoid. Pool branch: average pool with
  window = stride = `strides`. `gate_input` defaults to `x`; the closed-form fusion passes P1 for
  TSFP_2 (see the module docstring).
  """
  strides: Triple = (1, 2, 2)
  gate_layers: Sequence[Tuple[int, int]] = TSFP_GATE_LAYERS
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, gate_input=None):
    g = x if gate_input is None else gate_input
    last = len(self.gate_layers) - 1
    for n, (features, k) in enumerate(self.gate_layers):
      g = layers.Conv3D(features, (1, k, k), self.strides if n == last else 1, (0, k // 2, k // 2),
                        dtype=self.dtype, impl=self.conv_impl, name=f'gate{n + 1}')(g)
      g = nn.relu(g)
    g = layers.Conv3D(1, 1, dtype=self.dtype, impl=self.conv_impl,
                      name=f'gate{len(self.gate_layers) + 1}')(g)
    g = nn.sigmoid(g.astype(layers.at_least_float32(self.dtype)))
    pooled = avg_pool_ceil(x, self.strides)
    if pooled.shape != g.shape:
      raise ValueError(f'TSFP pool {pooled.shape} and gate {g.shape} disagree.')
    return pooled * g, g


class CrossScaleFusion(nn.Module):
  """Closed-form cross-scale fusion of S1..S3 into P3 (see the module docstring).

  Attributes:
    strides: three (t, h, w) strides mapping S1 -> S2, S2 -> S3 and S3 -> the masked feature map.
    use_tsfp: gated TSFP pooling ('tsfp1', 'tsfp2'); False is the SSF-only variant (plain pools).
  Returns a dict with P1, P2, P3 and, with TSFP, G1, G2.
  """
  strides: Sequence[Triple]
  use_tsfp: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, s1, s2, s3) -> Dict[str, jnp.ndarray]:
    st1, st2, st3 = (tuple(s) for s in self.strides)
    out = {}
    if self.use_tsfp:
      out['P1'], out['G1'] = TSFP(st1, dtype=self.dtype, conv_impl=self.conv_impl, name='tsfp1')(s1)
      _check_same(out['P1'], s2, 'P1', 'S2')
      out['P2'], out['G2'] = TSFP(st2, dtype=self.dtype, conv_impl=self.conv_impl, name='tsfp2')(
          (out['P1'] + s2) / 2, gate_input=out['P1'])
    else:
      out['P1'] = avg_pool_ceil(s1, st1)
      _check_same(out['P1'], s2, 'P1', 'S2')
      out['P2'] = avg_pool_ceil((out['P1'] + s2) / 2, st2)
    _check_same(out['P2'], s3, 'P2', 'S3')
    out['P3'] = avg_pool_ceil((out['P2'] + s3) / 2, st3)
    return out


def _check_same(a, b, name_a: str, name_b: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f'{name_a} {a.shape} does not match {name_b} {b.shape}.')


# ----------------------------------------------------------------------------------------------
# Mask fusion over time.
# ----------------------------------------------------------------------------------------------


class TemporalMaskFusion(nn.Module):
  """P3 (B,T,H,W,1) -> S_final (B,1,H,W,1): time as channels, 1x1x1 convs T -> hidden -> 1.

  No biases and no sigmoid (the reference's `Fusion_Temp_For_Mask`, T = 4 -> 2 -> 1). `hidden`
  defaults to ceil(T / 2). With a single frame (Hara trunks on 8-16 frames end with T = 1) there is
  nothing to fuse and S_final = P3: the layers are skipped, because a 1 -> 1 -> 1 ReLU stack on the
  non-negative P3 outputs an all-zero mask, killing every gradient, whenever its first weight
  initialises negative (half of all seeds).
  """
  hidden: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, p3):
    frames = p3.shape[1]
    if frames == 1:
      return p3.astype(layers.at_least_float32(self.dtype))
    hidden = self.hidden or -(-frames // 2)
    x = jnp.moveaxis(p3[..., 0], 1, -1)[:, None]  # (B, 1, H, W, T)
    x = nn.relu(layers.Conv3D(hidden, 1, dtype=self.dtype, name='conv1')(x))
    return layers.Conv3D(1, 1, dtype=self.dtype, name='conv2')(x).astype(
        layers.at_least_float32(self.dtype))
