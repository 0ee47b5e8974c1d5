"""3D ResNets for video: PySlowFast's (non-local) I3D ResNet and the Hara et al. 3D-ResNet family.

Two trunks, both returning the four feature maps that the SaliNet modules attach to:

* `I3DResNet` — PySlowFast's I3D ResNet-50/101 (Wang et al., "Non-local Neural Networks";
  Feichtenhofer et al., SlowFast): 5x7x7 stem, 1x3x3 max-pool, res2..res5 bottleneck stages whose
  "a" convolution is Tx1x1 with a per-block temporal kernel, a (2,1,1) temporal max-pool ("pool1")
  after res2, and optional non-local blocks after chosen blocks of each stage. With the defaults it
  is the I3D-NLN-R50 8x8 backbone that SaliNet fine-tunes. Its module names mirror PySlowFast's
  state_dict so that a checkpoint converts by renaming:

      PyTorch (s1..s5 at the model root)           Flax (under `backbone/`)
      s1.pathway0_stem.conv.weight                  s1/pathway0_stem/conv/kernel
      s1.pathway0_stem.bn.{weight,bias}             s1/pathway0_stem/bn/{scale,bias}
      s1.pathway0_stem.bn.running_{mean,var}        batch_stats .../bn/{mean,var}
      s2.pathway0_res0.branch1[_bn].*               s2/pathway0_res0/branch1[_bn]/*
      s3.pathway0_res1.branch2.{a,b,c}[_bn].*       s3/pathway0_res1/branch2/{a,b,c}[_bn]/*
      s3.pathway0_nonlocal1.conv_{theta,phi,g,out}  s3/pathway0_nonlocal1/conv_{theta,phi,g,out}
      s3.pathway0_nonlocal1.bn.*                    s3/pathway0_nonlocal1/bn/*
      fc.{weight,bias} (SaliNet fork; upstream      head/fc/{kernel,bias}   (not under backbone/)
        PySlowFast: head.projection.*)

  Conv weights (Cout, Cin, kT, kH, kW) transpose to (kT, kH, kW, Cin, Cout); Linear weights
  transpose; `num_batches_tracked` has no counterpart.

* `HaraResNet3D` — Hara et al., "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and
  ImageNet?" (CVPR 2018): 7x7x7 stem stride (1,2,2), 3x3x3 max-pool stride 2, four stages of 3x3x3
  basic or bottleneck blocks, stages 2-4 halve time and space, projection shortcuts where the shape
  changes. A width multiplier scales every channel count so tiny variants run in CPU tests and
  demos.

Both trunks `sow` their stage outputs into the 'intermediates' collection (a no-op unless that
collection is mutable), which is how tests read every intermediate shape: I3D sows 's1_out' ..
's5_out' and 'pool1'; Hara sows 'stem' and 'stage1' .. 'stage4'.

Over 400 lines because both 3D ResNet families share their blocks, stages and classifier heads.
"""

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from salinet_jax import errors
from salinet_jax.models import layers
from salinet_jax.models.nonlocal_block import NonLocalBlock

BOTTLENECK_EXPANSION = 4


def maybe_remat(block_cls, remat: bool):
  """`block_cls`, or its `nn.remat` version (called as `block(x, train)`, `train` static)."""
  return nn.remat(block_cls, static_argnums=(2,)) if remat else block_cls

# ----------------------------------------------------------------------------------------------
# Hara et al. 3D-ResNet family.
# ----------------------------------------------------------------------------------------------

# depth -> (block kind, blocks per stage)
HARA_DEPTHS = {
    10: ('basic', (1, 1, 1, 1)),
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
}


class BasicBlock3D(nn.Module):
  """Two 3x3x3 convolutions with a residual connection."""
  features: int
  strides: Tuple[int, int, int]
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, p, name: layers.Conv3D(  # noqa: E731
        f, k, s, p, dtype=self.dtype, impl=self.conv_impl, name=name)
    y = conv(self.features, 3, self.strides, 1, 'conv1')(x)
    y = nn.relu(layers.batch_norm(train, self.dtype, name='bn1')(y))
    y = conv(self.features, 3, 1, 1, 'conv2')(y)
    y = layers.batch_norm(train, self.dtype, zero_init=True, name='bn2')(y)
    if x.shape[-1] != self.features or tuple(self.strides) != (1, 1, 1):
      x = conv(self.features, 1, self.strides, 0, 'downsample_conv')(x)
      x = layers.batch_norm(train, self.dtype, name='downsample_bn')(x)
    return nn.relu(x + y)


class BottleneckBlock3D(nn.Module):
  """1x1x1 reduce, 3x3x3 (carrying the stride), 1x1x1 expand by 4, residual connection."""
  features: int
  strides: Tuple[int, int, int]
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, p, name: layers.Conv3D(  # noqa: E731
        f, k, s, p, dtype=self.dtype, impl=self.conv_impl, name=name)
    out_features = self.features * BOTTLENECK_EXPANSION
    y = conv(self.features, 1, 1, 0, 'conv1')(x)
    y = nn.relu(layers.batch_norm(train, self.dtype, name='bn1')(y))
    y = conv(self.features, 3, self.strides, 1, 'conv2')(y)
    y = nn.relu(layers.batch_norm(train, self.dtype, name='bn2')(y))
    y = conv(out_features, 1, 1, 0, 'conv3')(y)
    y = layers.batch_norm(train, self.dtype, zero_init=True, name='bn3')(y)
    if x.shape[-1] != out_features or tuple(self.strides) != (1, 1, 1):
      x = conv(out_features, 1, self.strides, 0, 'downsample_conv')(x)
      x = layers.batch_norm(train, self.dtype, name='downsample_bn')(x)
    return nn.relu(x + y)


class HaraResNet3D(nn.Module):
  """Hara-style 3D ResNet trunk; returns the output of each of its four stages.

  Attributes:
    depth: 10, 18, 34, 50 or 101.
    width: channels of the first stage (64 in the paper); later stages double it.
    stem_temporal_kernel: temporal size of the stem convolution (7 in the paper).
    stem_max_pool: whether to keep the 3x3x3 stride-2 max-pool after the stem.
    remat_blocks: recompute each residual block's activations in the backward pass
      (`config.remat='blocks'`): less activation memory for one more forward of each block.
  """
  depth: int = 18
  width: int = 64
  stem_temporal_kernel: int = 7
  stem_max_pool: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  remat_blocks: bool = False

  @nn.compact
  def __call__(self, x, train: bool) -> Sequence[jnp.ndarray]:
    if self.depth not in HARA_DEPTHS:
      raise errors.ConfigError(f'config.model.depth must be one of {sorted(HARA_DEPTHS)}, got '
                               f'{self.depth}.')
    kind, stage_sizes = HARA_DEPTHS[self.depth]
    block_cls = maybe_remat(BasicBlock3D if kind == 'basic' else BottleneckBlock3D,
                            self.remat_blocks)
    kt = self.stem_temporal_kernel
    x = layers.Conv3D(self.width, (kt, 7, 7), (1, 2, 2), (kt // 2, 3, 3), dtype=self.dtype,
                      impl=self.conv_impl, name='stem_conv')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='stem_bn')(x))
    if self.stem_max_pool:
      x = layers.max_pool3d(x, 3, 2, 1)
    self.sow('intermediates', 'stem', x)
    outputs = []
    for stage, num_blocks in enumerate(stage_sizes):
      for block in range(num_blocks):
        strides = (2, 2, 2) if stage > 0 and block == 0 else (1, 1, 1)
        x = block_cls(self.width * 2**stage, strides, dtype=self.dtype, conv_impl=self.conv_impl,
                      name=f'stage{stage + 1}_block{block}')(x, train)
      self.sow('intermediates', f'stage{stage + 1}', x)
      outputs.append(x)
    return outputs


# ----------------------------------------------------------------------------------------------
# PySlowFast I3D ResNet with non-local blocks.
# ----------------------------------------------------------------------------------------------

# depth -> bottleneck blocks in res2..res5.
I3D_STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Temporal kernel of each block's "a" convolution, per stage res2..res5; a stage cycles its pattern
# over its blocks (res3 of R50: 3,1,3,1).
I3D_TEMPORAL_KERNELS = ((3,), (3, 1), (3, 1), (1, 3))
# Blocks of res2..res5 followed by a non-local block (PySlowFast I3D_NLN_8x8_R50).
I3D_NONLOCAL_BLOCKS = ((), (1, 3), (1, 3, 5), ())


class BottleneckTransform(nn.Module):
  """PySlowFast bottleneck branch: Tx1x1 conv "a", 1x3x3 conv "b" (spatial stride), 1x1x1 "c".

  The BN after "c" starts with gamma 0 so every residual block is the identity at initialisation.
  """
  features: int
  inner_features: int
  temporal_kernel: int
  spatial_stride: int = 1
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, p, name: layers.Conv3D(  # noqa: E731
        f, k, s, p, dtype=self.dtype, impl=self.conv_impl, name=name)
    kt, s = self.temporal_kernel, self.spatial_stride
    x = conv(self.inner_features, (kt, 1, 1), 1, (kt // 2, 0, 0), 'a')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='a_bn')(x))
    x = conv(self.inner_features, (1, 3, 3), (1, s, s), (0, 1, 1), 'b')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='b_bn')(x))
    x = conv(self.features, 1, 1, 0, 'c')(x)
    return layers.batch_norm(train, self.dtype, zero_init=True, name='c_bn')(x)


class ResBlock(nn.Module):
  """Residual block: projection shortcut "branch1" (+BN) where the shape changes, "branch2"."""
  features: int
  inner_features: int
  temporal_kernel: int
  spatial_stride: int = 1
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    y = BottleneckTransform(self.features, self.inner_features, self.temporal_kernel,
                            self.spatial_stride, self.dtype, self.conv_impl,
                            name='branch2')(x, train)
    if x.shape[-1] != self.features or self.spatial_stride != 1:
      s = self.spatial_stride
      x = layers.Conv3D(self.features, 1, (1, s, s), 0, dtype=self.dtype, impl=self.conv_impl,
                        name='branch1')(x)
      x = layers.batch_norm(train, self.dtype, name='branch1_bn')(x)
    return nn.relu(x + y)


class ResNetBasicStem(nn.Module):
  """Stem conv (stride (1,2,2), no bias), BN, ReLU, 1x3x3 max-pool stride (1,2,2)."""
  features: int
  temporal_kernel: int = 5
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    kt = self.temporal_kernel
    x = layers.Conv3D(self.features, (kt, 7, 7), (1, 2, 2), (kt // 2, 3, 3), dtype=self.dtype,
                      impl=self.conv_impl, name='conv')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='bn')(x))
    return layers.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))


class VideoModelStem(nn.Module):
  """Container named like PySlowFast's `s1`, holding the single pathway's stem."""
  features: int
  temporal_kernel: int = 5
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    return ResNetBasicStem(self.features, self.temporal_kernel, self.dtype, self.conv_impl,
                           name='pathway0_stem')(x, train)


class ResStage(nn.Module):
  """A stage of bottleneck blocks, with non-local blocks after the listed block indices.

  Attributes:
    features: output channels of every block.
    inner_features: bottleneck channels.
    num_blocks: blocks in the stage.
    temporal_kernels: per-block "a" temporal kernels, cycled over the blocks.
    spatial_stride: stride of the first block's "b" conv and shortcut.
    nonlocal_blocks: indices of the blocks followed by a non-local block.
    nonlocal_pool: max-pool window before the non-local keys/values.
  """
  features: int
  inner_features: int
  num_blocks: int
  temporal_kernels: Sequence[int]
  spatial_stride: int = 1
  nonlocal_blocks: Sequence[int] = ()
  nonlocal_pool: Sequence[int] = (1, 2, 2)
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  remat_blocks: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    kernels = tuple(self.temporal_kernels)
    res_block = maybe_remat(ResBlock, self.remat_blocks)
    nonlocal_block = maybe_remat(NonLocalBlock, self.remat_blocks)
    for i in range(self.num_blocks):
      x = res_block(self.features, self.inner_features, kernels[i % len(kernels)],
                   self.spatial_stride if i == 0 else 1, self.dtype, self.conv_impl,
                   name=f'pathway0_res{i}')(x, train)
      if i in self.nonlocal_blocks:
        x = nonlocal_block(self.features // 2, tuple(self.nonlocal_pool), self.dtype,
                          conv_impl=self.conv_impl, name=f'pathway0_nonlocal{i}')(x, train)
    return x


class I3DResNet(nn.Module):
  """PySlowFast I3D ResNet trunk (single pathway), optionally with non-local blocks.

  Returns `[pool1, res3, res4, res5]`: the res2 output after the temporal max-pool "pool1" (which
  is what SaliNet's first SSF module reads), then the outputs of res3, res4 and res5. For an
  8x224x224 clip: 256x4x56x56, 512x4x28x28, 1024x4x14x14, 2048x4x7x7 (NCTHW).

  Attributes:
    depth: 50 or 101 (picks blocks per stage unless `stage_blocks` is given).
    width: stem channels (64); stage k's bottleneck has width * 2^k channels, outputs 4x that.
    stage_blocks: optional blocks per stage res2..res5, overriding `depth` (tiny test variants).
    temporal_kernels: per-stage "a" temporal kernel patterns, cycled over each stage's blocks.
    use_nonlocal: whether to insert non-local blocks at all.
    nonlocal_blocks: per-stage indices of blocks followed by a non-local block.
    nonlocal_pool: max-pool window before non-local phi and g.
    stem_temporal_kernel: temporal size of the 7x7 stem conv (5 for I3D).
    pool1_temporal: temporal window = stride of the max-pool after res2 (2 halves time; 1 skips).
    remat_blocks: recompute each residual and non-local block in the backward pass.
  """
  depth: int = 50
  width: int = 64
  stage_blocks: Optional[Sequence[int]] = None
  temporal_kernels: Sequence[Sequence[int]] = I3D_TEMPORAL_KERNELS
  use_nonlocal: bool = True
  nonlocal_blocks: Sequence[Sequence[int]] = I3D_NONLOCAL_BLOCKS
  nonlocal_pool: Sequence[int] = (1, 2, 2)
  stem_temporal_kernel: int = 5
  pool1_temporal: int = 2
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  remat_blocks: bool = False

  def stage_sizes(self) -> Tuple[int, ...]:
    """Blocks per stage res2..res5, validated."""
    if self.stage_blocks is not None:
      sizes = tuple(int(b) for b in self.stage_blocks)
    elif self.depth in I3D_STAGE_BLOCKS:
      sizes = I3D_STAGE_BLOCKS[self.depth]
    else:
      raise errors.ConfigError(f'config.model.depth must be one of {sorted(I3D_STAGE_BLOCKS)}, '
                               f'got {self.depth}.')
    if len(sizes) != 4 or len(self.temporal_kernels) != 4 or len(self.nonlocal_blocks) != 4:
      raise ValueError('stage_blocks, temporal_kernels and nonlocal_blocks need 4 entries '
                       '(res2..res5).')
    for stage, (blocks, nl) in enumerate(zip(sizes, self.nonlocal_blocks)):
      if self.use_nonlocal and any(i >= blocks for i in nl):
        raise ValueError(f'nonlocal_blocks {tuple(nl)} out of range for res{stage + 2} '
                         f'with {blocks} blocks.')
    return sizes

  @nn.compact
  def __call__(self, x, train: bool) -> Sequence[jnp.ndarray]:
    sizes = self.stage_sizes()
    x = VideoModelStem(self.width, self.stem_temporal_kernel, self.dtype, self.conv_impl,
                       name='s1')(x, train)
    self.sow('intermediates', 's1_out', x)
    outputs = []
    for stage in range(4):
      x = ResStage(
          features=self.width * BOTTLENECK_EXPANSION * 2**stage,
          inner_features=self.width * 2**stage,
          num_blocks=sizes[stage],
          temporal_kernels=tuple(self.temporal_kernels[stage]),
          spatial_stride=1 if stage == 0 else 2,
          nonlocal_blocks=tuple(self.nonlocal_blocks[stage]) if self.use_nonlocal else (),
          nonlocal_pool=tuple(self.nonlocal_pool),
          dtype=self.dtype, conv_impl=self.conv_impl, remat_blocks=self.remat_blocks,
          name=f's{stage + 2}')(x, train)
      self.sow('intermediates', f's{stage + 2}_out', x)
      if stage == 0:
        pt = self.pool1_temporal
        if pt > 1:
          x = layers.max_pool3d(x, (pt, 1, 1), (pt, 1, 1))
        self.sow('intermediates', 'pool1', x)
      outputs.append(x)
    return outputs


# ----------------------------------------------------------------------------------------------
# Heads and plain classifiers.
# ----------------------------------------------------------------------------------------------


class ClassificationHead(nn.Module):
  """Global average pool over (T, H, W), dropout, linear classifier (N(0, 0.01) weights)."""
  num_classes: int
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = jnp.mean(x, axis=(1, 2, 3))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = layers.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                          kernel_init=nn.initializers.normal(0.01), name='fc')(x)
    return logits.astype(layers.at_least_float32(self.dtype))


class HaraResNet3DClassifier(nn.Module):
  """A Hara 3D ResNet with a classification head: the plain (modules off) demo model."""
  num_classes: int
  depth: int = 18
  width: int = 64
  stem_temporal_kernel: int = 7
  stem_max_pool: bool = True
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  remat_blocks: bool = False

  def backbone(self) -> HaraResNet3D:
    """The trunk, named 'backbone' (call from inside `__call__`)."""
    return HaraResNet3D(self.depth, self.width, self.stem_temporal_kernel, self.stem_max_pool,
                        self.dtype, self.conv_impl, self.remat_blocks, name='backbone')

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    stages = self.backbone()(x, train)
    logits = ClassificationHead(self.num_classes, self.dropout_rate, self.dtype,
                                name='head')(stages[-1], train)
    if return_aux:
      return logits, {}
    return logits


class NonLocalI3DClassifier(nn.Module):
  """PySlowFast (NL-)I3D ResNet classifier; with the defaults, I3D-NLN-R50 8x8 ("modules off").

  Attributes mirror `I3DResNet` plus `num_classes` and the head's `dropout_rate` (0.5).
  """
  num_classes: int
  depth: int = 50
  width: int = 64
  stage_blocks: Optional[Sequence[int]] = None
  temporal_kernels: Sequence[Sequence[int]] = I3D_TEMPORAL_KERNELS
  use_nonlocal: bool = True
  nonlocal_blocks: Sequence[Sequence[int]] = I3D_NONLOCAL_BLOCKS
  nonlocal_pool: Sequence[int] = (1, 2, 2)
  stem_temporal_kernel: int = 5
  pool1_temporal: int = 2
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  remat_blocks: bool = False

  def backbone(self) -> I3DResNet:
    """The trunk, named 'backbone' (call from inside `__call__`)."""
    return I3DResNet(
        depth=self.depth, width=self.width, stage_blocks=self.stage_blocks,
        temporal_kernels=self.temporal_kernels, use_nonlocal=self.use_nonlocal,
        nonlocal_blocks=self.nonlocal_blocks, nonlocal_pool=self.nonlocal_pool,
        stem_temporal_kernel=self.stem_temporal_kernel, pool1_temporal=self.pool1_temporal,
        dtype=self.dtype, conv_impl=self.conv_impl, remat_blocks=self.remat_blocks,
        name='backbone')

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False):
    features = self.backbone()(x, train)
    logits = ClassificationHead(self.num_classes, self.dropout_rate, self.dtype,
                                name='head')(features[-1], train)
    if return_aux:
      return logits, {}
    return logits
