"""Small PyTorch modules with the reference code bases' naming and semantics, for parity tests.

Written for these tests (not taken from the reference repositories): each module reproduces what
the checkpoint converter has to match, namely the state-dict names and the forward semantics
(PyTorch padding, pooling, BatchNorm in eval mode), at tiny widths:

* PySlowFast I3D / NL-I3D ResNet: `VideoModelStem` (s1.pathway0_stem.{conv,bn}), bottleneck
  `ResBlock` (branch1[_bn], branch2.{a,b,c}[_bn]), softmax `Nonlocal` (conv_theta/phi/g/out, bn,
  max-pool before phi and g), `ResStage` (pathway0_res{i}, pathway0_nonlocal{i}), the
  `pathway0_pool` temporal max-pool after res2, and `ResNetBasicHead` (head.projection; softmax
  at eval like PySlowFast's test-time head).
* SaliNet: side layers (sidelayer{k}.side_layer_3x3x3_*), the shared `bn_one`, the two TSFP
  modules (TSPF_layer_{1,2}, sic) fed by literal frame interleaving, `fusion_temp_mask`, root `fc`.
* S2DNet (aliyun/Synopsis-to-Detail-Network): f_theta as `DNet.sampler` (space_time_convs,
  fc_{temporal,spatial}_{offset,stride}), the DRAW-style Gaussian sampler computed one video and
  one output frame at a time on the valid frames only, lateral fusion (fusion_layers.{i}), and a
  whole `S2DNetReference` (SNet.model.*, DNet.sampler.*, DNet.ctx_feature_layer, DNet.model.*).

Helpers randomise every BatchNorm (gamma, beta, running statistics) and zero bias, and compare a
float32 JAX output against the reference's own float32-vs-float64 error.
"""

import numpy as np
import pytest

torch = pytest.importorskip(
    'torch', reason='PyTorch is needed for the checkpoint-conversion parity tests '
    '(pip install -r requirements-test.txt, which pins the CPU build).')
nn = torch.nn


# ----------------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------------


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random BN gammas/betas/running stats and random (not zero) biases; eval mode.

  Zero-initialised last-BN gammas would make every residual and non-local branch vanish, so
  nothing but the identity paths would be compared.
  """
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
        n = module.num_features
        module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        module.bias.copy_(torch.randn(n, generator=gen) * 0.3)
        module.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
        module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        module.num_batches_tracked.fill_(7)
    for name, param in model.named_parameters():
      if name.endswith('bias') and not torch.any(param != 0):
        param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
  return model.eval()


def calibrate_batch_norm(model: nn.Module, *inputs, **kwargs) -> nn.Module:
  """Running statistics = this batch's statistics (one train-mode pass); eval mode.

  Deep stacks (MobileNetV2, ResNet-50) with arbitrary running statistics let activations vanish
  or saturate, so that the output no longer depends on the input; statistics measured on the
  input distribution keep every layer's activations O(1).
  """
  batch_norm = nn.modules.batchnorm._BatchNorm  # pylint: disable=protected-access
  norms = [m for m in model.modules() if isinstance(m, batch_norm)]
  for module in norms:
    module.reset_running_stats()
    module.momentum = None  # cumulative average: after one pass, exactly the batch statistics
  with torch.no_grad():
    model.train()(*inputs, **kwargs)
  for module in norms:
    module.momentum = 0.1
  return model.eval()


def state_dict_numpy(model: nn.Module):
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def to_ncthw(x: np.ndarray) -> 'torch.Tensor':
  """NTHWC numpy -> NCTHW torch tensor (same dtype)."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def from_ncthw(x: 'torch.Tensor') -> np.ndarray:
  return np.moveaxis(x.detach().numpy(), 1, -1)


def max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# Float32 parity: both implementations round differently (summation order, conv algorithms), so
# the JAX float32 output is held to a small multiple of the reference's own float32 error against
# its float64 output, plus a floor of a few float32 ulps of the output scale for the (lucky) case
# where the reference's own error is tiny.
F32_ERROR_FACTOR = 4.0
F32_ULP_FLOOR = 32 * float(np.finfo(np.float32).eps)


def assert_f32_parity(jax_out, torch32, torch64, what: str = 'output') -> None:
  ref_err = max_abs(torch32, torch64)
  scale = max(1.0, float(np.max(np.abs(np.asarray(torch64)))))
  tol = F32_ERROR_FACTOR * ref_err + F32_ULP_FLOOR * scale
  err = max_abs(jax_out, torch64)
  assert err <= tol, (f'{what}: JAX float32 differs from the float64 reference by {err:.3g}; the '
                      f'reference\'s own float32 error is {ref_err:.3g} (tolerance {tol:.3g}).')


def assert_training_step_parity(grads, stats, expected) -> None:
  """A float64 training step's gradients (`grads`, a Flax params tree) and running statistics
  (`stats`) against `expected` ({'params': PyTorch's gradients, 'batch_stats': its running
  statistics after the step}, converted to the Flax layout). Each leaf is held to 1e-8 of its
  largest value (statistics to 1e-6: they are kept in float32, configs/base.py), and to 1e-10
  where that is below 1e-2 (gradients that are 0 in theory come out at up to 1e-11)."""
  import flax  # pylint: disable=g-import-not-at-top
  for kind, ours, theirs, tolerance in (('gradient', grads, expected['params'], 1e-8),
                                        ('running statistic', stats, expected['batch_stats'],
                                         1e-6)):
    flat_ours = flax.traverse_util.flatten_dict(ours, sep='/')
    flat_theirs = flax.traverse_util.flatten_dict(theirs, sep='/')
    assert flat_ours.keys() == flat_theirs.keys()
    for name, value in flat_theirs.items():
      scale = max(float(np.max(np.abs(value))), 1e-2)
      err = max_abs(flat_ours[name], value)
      assert err <= tolerance * scale, f'{kind} of {name}: {err:.3g} off, of {scale:.3g}'


# ----------------------------------------------------------------------------------------------
# PySlowFast I3D / NL-I3D ResNet.
# ----------------------------------------------------------------------------------------------


def bn3d(channels: int) -> nn.BatchNorm3d:
  return nn.BatchNorm3d(channels, eps=1e-5, momentum=0.1)


class ResNetBasicStem(nn.Module):
  """conv (kt x 7 x 7, stride 1,2,2, pad kt//2,3,3, no bias), bn, ReLU, 1x3x3 max-pool /2."""

  def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int = 5):
    super().__init__()
    kt = temporal_kernel
    self.conv = nn.Conv3d(dim_in, dim_out, (kt, 7, 7), stride=(1, 2, 2),
                          padding=(kt // 2, 3, 3), bias=False)
    self.bn = bn3d(dim_out)
    self.relu = nn.ReLU(inplace=True)
    self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

  def forward(self, x):
    return self.pool_layer(self.relu(self.bn(self.conv(x))))


class VideoModelStem(nn.Module):
  def __init__(self, dim_in: int, dim_out: int, temporal_kernel: int = 5):
    super().__init__()
    self.pathway0_stem = ResNetBasicStem(dim_in, dim_out, temporal_kernel)

  def forward(self, x):
    return self.pathway0_stem(x)


class BottleneckTransform(nn.Module):
  """a: kt x 1 x 1; b: 1 x 3 x 3 carrying the spatial stride; c: 1 x 1 x 1; BN after each."""

  def __init__(self, dim_in: int, dim_out: int, dim_inner: int, temporal_kernel: int,
               stride: int):
    super().__init__()
    kt = temporal_kernel
    self.a = nn.Conv3d(dim_in, dim_inner, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
    self.a_bn = bn3d(dim_inner)
    self.a_relu = nn.ReLU(inplace=True)
    self.b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), stride=(1, stride, stride),
                       padding=(0, 1, 1), bias=False)
    self.b_bn = bn3d(dim_inner)
    self.b_relu = nn.ReLU(inplace=True)
    self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
    self.c_bn = bn3d(dim_out)

  def forward(self, x):
    x = self.a_relu(self.a_bn(self.a(x)))
    x = self.b_relu(self.b_bn(self.b(x)))
    return self.c_bn(self.c(x))


class ResBlock(nn.Module):
  def __init__(self, dim_in: int, dim_out: int, dim_inner: int, temporal_kernel: int,
               stride: int):
    super().__init__()
    if dim_in != dim_out or stride != 1:
      self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
      self.branch1_bn = bn3d(dim_out)
    self.branch2 = BottleneckTransform(dim_in, dim_out, dim_inner, temporal_kernel, stride)
    self.relu = nn.ReLU(inplace=True)

  def forward(self, x):
    shortcut = self.branch1_bn(self.branch1(x)) if hasattr(self, 'branch1') else x
    return self.relu(shortcut + self.branch2(x))


class Nonlocal(nn.Module):
  """Embedded-Gaussian non-local block: softmax(theta^T phi / sqrt(C')) g, out conv, BN, add."""

  def __init__(self, dim: int, dim_inner: int, pool_size=(1, 2, 2)):
    super().__init__()
    self.dim_inner = dim_inner
    self.conv_theta = nn.Conv3d(dim, dim_inner, 1)
    self.conv_phi = nn.Conv3d(dim, dim_inner, 1)
    self.conv_g = nn.Conv3d(dim, dim_inner, 1)
    self.pool = nn.MaxPool3d(pool_size, stride=pool_size)
    self.conv_out = nn.Conv3d(dim_inner, dim, 1)
    self.bn = bn3d(dim)

  def forward(self, x):
    n, _, t, h, w = x.shape
    theta = self.conv_theta(x).reshape(n, self.dim_inner, -1)
    pooled = self.pool(x)
    phi = self.conv_phi(pooled).reshape(n, self.dim_inner, -1)
    g = self.conv_g(pooled).reshape(n, self.dim_inner, -1)
    affinity = torch.einsum('ncq,nck->nqk', theta, phi) * self.dim_inner**-0.5
    affinity = affinity.softmax(dim=2)
    y = torch.einsum('nqk,nck->ncq', affinity, g).reshape(n, self.dim_inner, t, h, w)
    return x + self.bn(self.conv_out(y))


class ResStage(nn.Module):
  def __init__(self, dim_in, dim_out, dim_inner, num_blocks, temporal_kernels, stride,
               nonlocal_blocks=()):
    super().__init__()
    self.num_blocks = num_blocks
    self.nonlocal_blocks = tuple(nonlocal_blocks)
    for i in range(num_blocks):
      self.add_module(f'pathway0_res{i}', ResBlock(
          dim_in if i == 0 else dim_out, dim_out, dim_inner,
          temporal_kernels[i % len(temporal_kernels)], stride if i == 0 else 1))
      if i in self.nonlocal_blocks:
        self.add_module(f'pathway0_nonlocal{i}', Nonlocal(dim_out, dim_out // 2))

  def forward(self, x):
    for i in range(self.num_blocks):
      x = getattr(self, f'pathway0_res{i}')(x)
      if i in self.nonlocal_blocks:
        x = getattr(self, f'pathway0_nonlocal{i}')(x)
    return x


class ResNetBasicHead(nn.Module):
  """Average pool, dropout, `projection` Linear on NTHWC, softmax at eval (unless act=False)."""

  def __init__(self, dim_in: int, num_classes: int, act: bool = True):
    super().__init__()
    self.pathway0_avgpool = nn.AdaptiveAvgPool3d(1)
    self.dropout = nn.Dropout(0.5)
    self.projection = nn.Linear(dim_in, num_classes)
    self.act = nn.Softmax(dim=4) if act else None

  def forward(self, x):
    x = self.dropout(self.pathway0_avgpool(x).permute(0, 2, 3, 4, 1))
    x = self.projection(x)
    if not self.training and self.act is not None:
      x = self.act(x)
    return x.reshape(x.shape[0], -1)


# Tiny NL-I3D: width 4, one/two blocks per stage, non-local after block 1 of res3 and res4.
TINY_I3D = dict(width=4, stage_blocks=(1, 2, 2, 1), nonlocal_blocks=((), (1,), (1,), ()))
I3D_TEMPORAL_KERNELS = ((3,), (3, 1), (3, 1), (1, 3))


class I3DTrunk(nn.Module):
  """s1..s5 and pathway0_pool at the root, as in PySlowFast's ResNet; returns 4 feature maps."""

  def __init__(self, width=4, stage_blocks=(1, 2, 2, 1), nonlocal_blocks=((), (1,), (1,), ())):
    super().__init__()
    self.s1 = VideoModelStem(3, width)
    for stage in range(4):
      self.add_module(f's{stage + 2}', ResStage(
          width if stage == 0 else width * 2**(stage + 1), width * 4 * 2**stage, width * 2**stage,
          stage_blocks[stage], I3D_TEMPORAL_KERNELS[stage], 1 if stage == 0 else 2,
          nonlocal_blocks[stage]))
      if stage == 0:
        self.pathway0_pool = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))

  def features(self, x):
    x = self.s2(self.s1(x))
    f1 = self.pathway0_pool(x)
    f2 = self.s3(f1)
    f3 = self.s4(f2)
    return [f1, f2, f3, self.s5(f3)]


class PySlowFastResNet(I3DTrunk):
  def __init__(self, num_classes=5, act=False, **kwargs):
    super().__init__(**kwargs)
    self.head = ResNetBasicHead(kwargs.get('width', 4) * 32, num_classes, act)

  def forward(self, x):
    return self.head(self.features(x)[-1])


# ----------------------------------------------------------------------------------------------
# SaliNet side modules.
# ----------------------------------------------------------------------------------------------


class SideLayer(nn.Module):
  """Two (2+1)D residual units without BN, then a 1x1x1 conv to one channel and ReLU."""

  def __init__(self, channels: int):
    super().__init__()
    half = channels // 2
    p = 'side_layer_3x3x3_'
    for unit, (reduce, spatial, temporal, expand) in enumerate(
        (('conv1', 'conv_S_1', 'conv_T_1', 'conv2'), ('conv3', 'conv_S_2', 'conv_T_2', 'conv4'))):
      del unit
      self.add_module(p + reduce, nn.Conv3d(channels, half, 1, bias=False))
      self.add_module(p + spatial, nn.Conv3d(half, half, (1, 3, 3), padding=(0, 1, 1), bias=False))
      self.add_module(p + temporal, nn.Conv3d(half, half, (3, 1, 1), padding=(1, 0, 0),
                                              bias=False))
      self.add_module(p + expand, nn.Conv3d(half, channels, 1, bias=False))
    self.add_module(p + 'conv5', nn.Conv3d(channels, 1, 1, bias=False))

  def forward(self, x):
    p = 'side_layer_3x3x3_'
    conv = lambda name, y: getattr(self, p + name)(y)  # noqa: E731
    for names in (('conv1', 'conv_S_1', 'conv_T_1', 'conv2'),
                  ('conv3', 'conv_S_2', 'conv_T_2', 'conv4')):
      y = torch.relu(conv(names[0], x))
      y = torch.relu(conv(names[1], y))
      y = torch.relu(conv(names[2], y))
      x = torch.relu(conv(names[3], y) + x)
    return torch.relu(conv('conv5', x))


class TSFPModule(nn.Module):
  """Gate of bias-free 1xkxk convs (last one strided), sigmoid; times an average pool."""

  def __init__(self, stride):
    super().__init__()
    specs = ((1, 16, 9), (16, 32, 7), (32, 64, 3), (64, 32, 1), (32, 16, 5), (16, 4, 3))
    for n, (cin, cout, k) in enumerate(specs):
      self.add_module(f'x_edge_layer{n + 1}', nn.Conv3d(
          cin, cout, (1, k, k), stride=stride if n == len(specs) - 1 else 1,
          padding=(0, k // 2, k // 2), bias=False))
    self.x_edge_layer7 = nn.Conv3d(4, 1, 1, bias=False)
    self.pool = nn.AvgPool3d(stride, stride=stride)

  def forward(self, x):
    g = x
    for n in range(1, 7):
      g = torch.relu(getattr(self, f'x_edge_layer{n}')(g))
    g = torch.sigmoid(self.x_edge_layer7(g))
    return self.pool(x) * g, g


class FusionTempForMask(nn.Module):
  def __init__(self, frames: int):
    super().__init__()
    self.fusion_1x1x1_1 = nn.Conv3d(frames, frames // 2, 1, bias=False)
    self.fusion_1x1x1_2 = nn.Conv3d(frames // 2, 1, 1, bias=False)

  def forward(self, x):
    x = x.permute(0, 2, 1, 3, 4)
    x = self.fusion_1x1x1_2(torch.relu(self.fusion_1x1x1_1(x)))
    return x.permute(0, 2, 1, 3, 4)


def interleave(a, b):
  """Chunk both maps into frames along T and concatenate a_0, b_0, a_1, b_1, ... (reference)."""
  parts = []
  for fa, fb in zip(a.chunk(a.shape[2], 2), b.chunk(b.shape[2], 2)):
    parts += [fa, fb]
  return torch.cat(parts, 2)


class SaliNetModules(nn.Module):
  """sidelayer1..3, shared bn_one, TSPF_layer_1/2 and fusion_temp_mask (root-level names)."""

  def __init__(self, channels=(16, 32, 64), frames: int = 4):
    super().__init__()
    for k, c in enumerate(channels):
      self.add_module(f'sidelayer{k + 1}', SideLayer(c))
    self.bn_one = bn3d(1)
    self.TSPF_layer_1 = TSFPModule((1, 2, 2))  # pylint: disable=invalid-name
    self.TSPF_layer_2 = TSFPModule((2, 2, 2))  # pylint: disable=invalid-name
    self.average_pooling = nn.AvgPool3d(2, stride=2)
    self.fusion_temp_mask = FusionTempForMask(frames)

  def saliency(self, f1, f2, f3):
    """Returns S_final and the intermediate maps, as the reference computes them."""
    s = [torch.sigmoid(self.bn_one(getattr(self, f'sidelayer{k + 1}')(f)))
         for k, f in enumerate((f1, f2, f3))]
    p1, g1 = self.TSPF_layer_1(s[0])
    p2, g2 = self.TSPF_layer_2(interleave(p1, s[1]))
    p3 = self.average_pooling(interleave(p2, s[2]))
    final = self.fusion_temp_mask(p3)
    return final, {'S1': s[0], 'S2': s[1], 'S3': s[2], 'P1': p1, 'G1': g1, 'P2': p2, 'G2': g2,
                   'P3': p3, 'saliency_final': final}


class SaliNetReference(I3DTrunk):
  """Tiny SaliNet: I3D trunk + side modules + root `fc` (no softmax), like the reference."""

  def __init__(self, num_classes=5, **kwargs):
    super().__init__(**kwargs)
    width = kwargs.get('width', 4)
    modules = SaliNetModules((width * 4, width * 8, width * 16))
    for name, module in modules.named_children():
      self.add_module(name, module)
    self.dropout = nn.Dropout(0.5)
    self.fc = nn.Linear(width * 32, num_classes)

  def forward(self, x, return_aux=False):
    f1, f2, f3, f4 = self.features(x)
    final, aux = SaliNetModules.saliency(self, f1, f2, f3)
    logits = self.fc(self.dropout(torch.mean(final * f4, dim=(2, 3, 4))))
    return (logits, aux) if return_aux else logits


# ----------------------------------------------------------------------------------------------
# torchvision layouts and TSM (2D networks on (B*T, C, H, W) frame batches).
# ----------------------------------------------------------------------------------------------


def tsm_shift(x, segments: int, fold_div: int = 8):
  """TSM's out-of-place shift: first fold channels look one frame ahead, next fold one back."""
  nt, c, h, w = x.shape
  x = x.view(nt // segments, segments, c, h, w)
  fold = c // fold_div
  out = torch.zeros_like(x)
  out[:, :-1, :fold] = x[:, 1:, :fold]
  out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
  out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
  return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
  """Wraps a module as `.net` and shifts its input (TSM's wrapper, hence '.net.' in keys)."""

  def __init__(self, net: nn.Module, segments: int, fold_div: int = 8):
    super().__init__()
    self.net = net
    self.segments, self.fold_div = segments, fold_div

  def forward(self, x):
    return self.net(tsm_shift(x, self.segments, self.fold_div))


def bn2d(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class TorchvisionBottleneck(nn.Module):
  """torchvision ResNet v1.5 bottleneck (stride on conv2), optionally TSM-shifted conv1."""

  def __init__(self, inplanes: int, planes: int, stride: int = 1, segments: int = 0):
    super().__init__()
    conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.conv1 = TemporalShift(conv1, segments) if segments else conv1
    self.bn1 = bn2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = bn2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = bn2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                      bn2d(planes * 4))

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class TorchvisionResNet50Like(nn.Module):
  """torchvision ResNet-50 layout at a given width and blocks per stage; returns layer4."""

  def __init__(self, width=4, blocks=(3, 4, 6, 3), segments=0):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = bn2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = width
    for stage, n in enumerate(blocks):
      planes = width * 2**stage
      layer = []
      for i in range(n):
        layer.append(TorchvisionBottleneck(inplanes, planes, 2 if stage and not i else 1,
                                           segments))
        inplanes = planes * 4
      self.add_module(f'layer{stage + 1}', nn.Sequential(*layer))

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class InvertedResidual(nn.Module):
  """MobileNetV2 block in torchvision's layout (conv.0.0 ...) or TSM's flat one (conv.0, 1, 3...).

  `segments` > 0 shifts the expansion conv's input in blocks with a residual connection.
  """

  def __init__(self, inp, oup, stride, expand_ratio, layout='torchvision', segments=0):
    super().__init__()
    hidden = int(round(inp * expand_ratio))
    self.use_res_connect = stride == 1 and inp == oup
    dw = [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), bn2d(hidden),
          nn.ReLU6(inplace=True)]
    pw = [nn.Conv2d(hidden, oup, 1, bias=False), bn2d(oup)]
    expand = []
    if expand_ratio != 1:
      expand = [nn.Conv2d(inp, hidden, 1, bias=False), bn2d(hidden), nn.ReLU6(inplace=True)]
    if layout == 'torchvision':
      groups = ([nn.Sequential(*expand)] if expand else []) + [nn.Sequential(*dw)] + pw
      self.conv = nn.Sequential(*groups)
    else:
      self.conv = nn.Sequential(*(expand + dw + pw))
    if segments and self.use_res_connect and expand_ratio != 1:
      self.conv[0] = TemporalShift(self.conv[0], segments)

  def forward(self, x):
    return x + self.conv(x) if self.use_res_connect else self.conv(x)


MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2Features(nn.Module):
  """MobileNetV2 `features` (width 1): stem, 17 inverted residuals, 1x1 to 1280."""

  def __init__(self, layout='torchvision', segments=0):
    super().__init__()
    def conv_bn(cin, cout, k, s):
      return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), bn2d(cout),
                           nn.ReLU6(inplace=True))
    blocks = [conv_bn(3, 32, 3, 2)]
    cin = 32
    for t, c, n, s in MOBILENET_V2_SETTINGS:
      for i in range(n):
        blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t, layout, segments))
        cin = c
    blocks.append(conv_bn(cin, 1280, 1, 1))
    self.features = nn.Sequential(*blocks)

  def forward(self, x):
    return self.features(x)


# ----------------------------------------------------------------------------------------------
# S2DNet: f_theta, the Gaussian detail sampler, lateral fusion, the whole two-network model.
# ----------------------------------------------------------------------------------------------


def linear_slot(features_in: int, features_out: int, bias: bool = True) -> nn.Sequential:
  """A Linear in the reference's (Linear, optional-BN) pair; the BN slot is an identity."""
  return nn.Sequential(nn.Linear(features_in, features_out, bias=bias), nn.Identity())


class S2DSamplerHead(nn.Module):
  """f_theta under the reference's names: `space_time_convs` = [Conv3d 1x1x1 (bias) + ReLU],
  BatchNorm3d, Flatten (C, T, h, w order), then [Linear slot, BatchNorm1d, ReLU] per MLP width;
  bias-free heads `fc_{temporal,spatial}_{offset,stride}.0.0`, the spatial ones on [h ; o_t ; s_t].
  """

  def __init__(self, in_channels, trunk_channels, frames, size, mlp=(1024, 512), out_frames=16):
    super().__init__()
    layers = [nn.Sequential(nn.Conv3d(in_channels, trunk_channels, 1, bias=True), nn.ReLU()),
              nn.BatchNorm3d(trunk_channels), nn.Flatten()]
    features = trunk_channels * frames * size * size
    for width in mlp:
      layers += [linear_slot(features, width), nn.BatchNorm1d(width), nn.ReLU()]
      features = width
    self.space_time_convs = nn.Sequential(*layers)
    self.fc_temporal_offset = nn.Sequential(linear_slot(features, 1, bias=False))
    self.fc_temporal_stride = nn.Sequential(linear_slot(features, 1, bias=False))
    self.fc_spatial_offset = nn.Sequential(linear_slot(features + 2, 2 * out_frames, bias=False))
    self.fc_spatial_stride = nn.Sequential(linear_slot(features + 2, 2 * out_frames, bias=False))

  def forward(self, e, s):
    """e (B, T, C, h, w), s (B, A) -> o_t (B,), s_t (B,), offsets and log-strides (B, T', 2)."""
    batch, frames, _, height, width = e.shape
    synopsis = s[:, :, None, None, None].expand(-1, -1, frames, height, width)
    h = self.space_time_convs(torch.cat([e.permute(0, 2, 1, 3, 4), synopsis], dim=1))
    offset_t, stride_t = self.fc_temporal_offset(h), self.fc_temporal_stride(h)
    h = torch.cat([h, offset_t, stride_t], dim=-1)
    return (offset_t[:, 0], stride_t[:, 0], self.fc_spatial_offset(h).view(batch, -1, 2),
            self.fc_spatial_stride(h).view(batch, -1, 2))


def gaussian_rows(centres, length: int, eps: float = 1e-7):
  """(K,) centres -> (K, length): exp(-(a - mu)^2 / 2) over a, each row over max(its sum, eps)."""
  positions = torch.arange(length, dtype=centres.dtype, device=centres.device)
  weights = torch.exp(-(positions[None, :] - centres[:, None]) ** 2 / 2)
  return weights / torch.clamp(weights.sum(dim=1, keepdim=True), min=eps)


def gaussian_detail_frames(x, valid, offset_t, stride_t, offsets, strides, out_frames: int,
                           out_size: int, fixed: bool = False):
  """x (B, N, C, H, W) -> (B, T', C, out, out): temporal filterbank on the valid frames, then
  F_y frame F_x^T per output frame. `fixed`: uniform centres and a central crop at 1 px stride."""
  _, _, _, height, width = x.shape
  steps = lambda n: torch.arange(n, dtype=x.dtype, device=x.device) - (n - 1) / 2  # noqa: E731
  videos = []
  for b, n in enumerate(valid):
    o_t = x.new_zeros(()) if fixed else offset_t[b]
    s_t = x.new_zeros(()) if fixed else stride_t[b]
    centre = torch.tanh(o_t) * (n - 1) / 2 + (n - 1) / 2
    mu_t = centre + steps(out_frames) * (n / (out_frames - 1) * torch.exp(s_t))
    frames = torch.einsum('in,nchw->ichw', gaussian_rows(mu_t, n), x[b, :n])
    banks = []  # each output frame's F_x, then F_y: (T', out, size)
    for axis, size in ((0, width), (1, height)):
      if fixed:
        centres = x.new_full((out_frames,), (size - 1) / 2)
        spacing = x.new_ones((out_frames,))
      else:
        centres = torch.tanh(offsets[b, :, axis]) * (size - 1) / 2 + (size - 1) / 2
        spacing = size / (out_size - 1) * torch.exp(strides[b, :, axis])
      mu = centres[:, None] + steps(out_size)[None, :] * spacing[:, None]
      banks.append(gaussian_rows(mu.reshape(-1), size).view(out_frames, out_size, size))
    f_x, f_y = banks
    videos.append(f_y[:, None] @ frames @ f_x[:, None].transpose(-1, -2))
  return torch.stack(videos)


def lateral_fuse(x, context, fusion: nn.Module, frames: int):
  """(B*T, C, h, w) frames, (B, D) context -> `fusion` of [x ; context tiled], (B*T, C, h, w)."""
  _, channels, height, width = x.shape
  video = x.view(-1, frames, channels, height, width)
  tiled = context[:, None, :, None, None].expand(-1, frames, -1, height, width)
  y = fusion(torch.cat([video, tiled], dim=2).transpose(1, 2)).transpose(1, 2)
  return y.reshape(-1, channels, height, width)


def fusion_layer(channels: int, context: int) -> nn.Sequential:
  return nn.Sequential(nn.Conv3d(channels + context, channels, 1, bias=False), nn.ReLU())


class _Holder(nn.Module):
  """A plain container, so that state-dict keys get the reference's module prefixes."""

  def __init__(self, **children):
    super().__init__()
    for name, child in children.items():
      self.add_module(name, child)


class S2DNetReference(nn.Module):
  """A tiny S2DNet with the reference's state-dict names and eval-mode semantics.

  SNet: TSM-MobileNetV2 (flat TSM layout) on T frames floor(linspace(0, n-1, T)) nearest-resized
  to `synopsis_size`, per-frame `new_fc` averaged over time. s: top-5 multi-hot. DNet: f_theta on
  [e ; s], the Gaussian sampler, m = ReLU(Linear([s ; g])), a TSM-ResNet-50-like trunk (`width`)
  with lateral fusion after `fusion_stages`, `new_fc` on [x ; m ; s] per frame, averaged. s is
  tiled onto the frame rows with `repeat(T, 1)` when `faithful_tiling` (the reference's layout).
  """

  def __init__(self, num_classes, synopsis_frames, synopsis_size, detail_frames, detail_size,
               trunk_channels=64, mlp=(16, 8), context=8, width=4, fusion_stages=(2, 3),
               faithful_tiling=True):
    super().__init__()
    self.sizes = (synopsis_frames, synopsis_size, detail_frames, detail_size)
    self.fusion_stages, self.faithful_tiling = tuple(sorted(fusion_stages)), faithful_tiling
    feature_size = -(-synopsis_size // 32)
    self.SNet = _Holder(model=_Holder(base_model=MobileNetV2Features('tsm', synopsis_frames),
                                      new_fc=nn.Linear(1280, num_classes)))
    channels = [width * 4 * 2**stage for stage in range(4)]
    self.DNet = _Holder(
        sampler=S2DSamplerHead(1280 + num_classes, trunk_channels, synopsis_frames, feature_size,
                               mlp, detail_frames),
        ctx_feature_layer=nn.Sequential(nn.Linear(num_classes + 1280, context), nn.ReLU()),
        model=_Holder(
            base_model=TorchvisionResNet50Like(width, segments=detail_frames),
            fusion_layers=nn.ModuleList(
                [fusion_layer(channels[stage - 1], context) for stage in self.fusion_stages]),
            new_fc=nn.Linear(channels[-1] + context + num_classes, num_classes)))

  def forward(self, x, valid, fixed=False):
    """x (B, N, 3, H, W), valid: frames per video -> DNet logits, SNet logits, detail frames."""
    synopsis_frames, synopsis_size, detail_frames, detail_size = self.sizes
    batch = x.shape[0]
    picked = torch.stack([x[b, torch.linspace(0, n - 1, synopsis_frames, device=x.device).long()]
                          for b, n in enumerate(valid)])
    picked = nn.functional.interpolate(picked.flatten(1, 2), size=synopsis_size)
    snet = self.SNet.model
    features = snet.base_model(picked.view(-1, 3, synopsis_size, synopsis_size))
    pooled = features.mean(dim=(2, 3))
    snet_logits = snet.new_fc(pooled).view(batch, synopsis_frames, -1).mean(dim=1)
    e = features.view((batch, synopsis_frames) + features.shape[1:])
    g = pooled.view(batch, synopsis_frames, -1).mean(dim=1)
    top5 = torch.sort(snet_logits, dim=-1, descending=True)[1][:, :5]
    s = nn.functional.one_hot(top5, snet_logits.shape[-1]).sum(dim=1).to(x.dtype)

    dnet = self.DNet
    detail = gaussian_detail_frames(x, valid, *dnet.sampler(e, s), detail_frames, detail_size,
                                    fixed)
    m = dnet.ctx_feature_layer(torch.cat([s, g], dim=1))
    trunk = dnet.model.base_model
    y = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(detail.flatten(0, 1)))))
    for stage in range(1, 5):
      y = getattr(trunk, f'layer{stage}')(y)
      if stage in self.fusion_stages:
        fusion = dnet.model.fusion_layers[self.fusion_stages.index(stage)]
        y = lateral_fuse(y, m, fusion, detail_frames)
    y = y.mean(dim=(2, 3))
    s_rows = (s.repeat(detail_frames, 1) if self.faithful_tiling
              else s.repeat_interleave(detail_frames, dim=0))
    y = torch.cat([y, m.repeat_interleave(detail_frames, dim=0), s_rows], dim=1)
    dnet_logits = dnet.model.new_fc(y).view(batch, detail_frames, -1).mean(dim=1)
    return dnet_logits, snet_logits, detail
