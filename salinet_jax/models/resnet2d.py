"""2D ResNets in torchvision's layout (stride in the 3x3 conv, "ResNet v1.5"), optionally TSM.

    conv1 7x7/2, bn1, ReLU, max-pool 3x3/2 -> layer1 .. layer4 (first block of layer2-4 strides 2)
    -> [global average pool, fc]   (only with num_classes > 0)

TSM ("blockres", Lin et al.): with `num_segments > 0` every block shifts the input of its residual
branch in time before conv1; the identity/downsample path sees the unshifted input. For networks
with 23 or more blocks in layer3 (ResNet-101/152) only every second block shifts, as in TSM.

The stem and the stages are separate methods (`stem`, `stage`), so a model can run the trunk stage
by stage and insert its own layers in between (S2DNet's lateral fusion); `__call__` runs it all.

Parameter names map onto torchvision's state dict by replacing '/' and '_' with '.', 'kernel' and
'scale' with 'weight', batch_stats 'mean'/'var' with 'running_mean'/'running_var', and transposing
conv kernels (kh, kw, cin, cout) -> (cout, cin, kh, kw) and Linear kernels:

    conv1/kernel                    conv1.weight
    bn1/{scale,bias}, {mean,var}    bn1.{weight,bias}, bn1.running_{mean,var}
    layer2_0/conv2/kernel           layer2.0.conv2.weight
    layer2_0/downsample_0/kernel    layer2.0.downsample.0.weight
    layer2_0/downsample_1/scale     layer2.0.downsample.1.weight
    fc/{kernel,bias}                fc.{weight,bias}

(TSM checkpoints name a shifted conv1 `layerK.i.conv1.net.weight`.)
"""

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from salinet_jax.models import fast_conv
from salinet_jax.models import layers
from salinet_jax.models import tsm

# depth -> (block kind, blocks per stage), torchvision's table plus a tiny ResNet-10.
DEPTHS: Dict[int, Tuple[str, Tuple[int, int, int, int]]] = {
    10: ('basic', (1, 1, 1, 1)),
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}
EXPANSION = {'basic': 1, 'bottleneck': 4}
# TSM shifts every second block when layer3 has this many blocks or more.
TSM_SPARSE_SHIFT_MIN_BLOCKS = 23
NUM_STAGES = 4


def conv2d(features: int, kernel: int, strides: int, dtype: Any, name: str) -> nn.Conv:
  """Bias-free 2D conv, PyTorch padding kernel // 2, He fan-out normal init (torchvision)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (strides, strides), ((pad, pad), (pad, pad)),
                 use_bias=False, kernel_init=layers.he_normal_fan_out, dtype=dtype, name=name,
                 conv_general_dilated_cls=fast_conv.ConvForBackend)


def uniform_fan_in(factor: float = 1.0):
  """U(+-sqrt(factor / fan_in)): PyTorch's default Linear/Conv weight init when factor = 1.

  (PyTorch's `kaiming_uniform_(w, a=sqrt(6 / factor - 1))`, which S2DNet uses with other factors.)
  """
  return nn.initializers.variance_scaling(factor / 3.0, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init, U(+-1/sqrt(fan_in))."""
  bound = 1.0 / max(fan_in, 1) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class BasicBlock(nn.Module):
  """3x3 (stride) -> 3x3, residual; torchvision `BasicBlock`."""
  planes: int
  strides: int = 1
  shift_segments: int = 0  # > 0: temporal shift before conv1 with this many frames per video
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = tsm.temporal_shift(x, self.shift_segments, self.shift_div) if self.shift_segments else x
    y = conv2d(self.planes, 3, self.strides, self.dtype, 'conv1')(y)
    y = nn.relu(layers.batch_norm(train, self.dtype, name='bn1')(y))
    y = conv2d(self.planes, 3, 1, self.dtype, 'conv2')(y)
    y = layers.batch_norm(train, self.dtype, self.zero_init_residual, name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.planes:
      x = conv2d(self.planes, 1, self.strides, self.dtype, 'downsample_0')(x)
      x = layers.batch_norm(train, self.dtype, name='downsample_1')(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride) -> 1x1 (x4), residual; torchvision `Bottleneck` (ResNet v1.5)."""
  planes: int
  strides: int = 1
  shift_segments: int = 0
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    out_features = self.planes * EXPANSION['bottleneck']
    y = tsm.temporal_shift(x, self.shift_segments, self.shift_div) if self.shift_segments else x
    y = conv2d(self.planes, 1, 1, self.dtype, 'conv1')(y)
    y = nn.relu(layers.batch_norm(train, self.dtype, name='bn1')(y))
    y = conv2d(self.planes, 3, self.strides, self.dtype, 'conv2')(y)
    y = nn.relu(layers.batch_norm(train, self.dtype, name='bn2')(y))
    y = conv2d(out_features, 1, 1, self.dtype, 'conv3')(y)
    y = layers.batch_norm(train, self.dtype, self.zero_init_residual, name='bn3')(y)
    if self.strides != 1 or x.shape[-1] != out_features:
      x = conv2d(out_features, 1, self.strides, self.dtype, 'downsample_0')(x)
      x = layers.batch_norm(train, self.dtype, name='downsample_1')(x)
    return nn.relu(x + y)


class ResNet2D(nn.Module):
  """(TSM-)ResNet on (N, H, W, 3) frames, torchvision layout.

  Attributes:
    depth: 10, 18, 34, 50, 101 or 152.
    width: channels of conv1 and planes of layer1 (64); later stages double the planes.
    num_classes: > 0 adds torchvision's fc on the pooled features (`__call__` returns logits);
      0 makes `__call__` return the layer4 feature map.
    num_segments: frames per video for TSM (one video's frames are consecutive); 0 = plain 2D.
    shift_div: TSM fold divisor.
    zero_init_residual: zero-init the last BN of each block (torchvision option, default off).
  """
  depth: int = 50
  width: int = 64
  num_classes: int = 0
  num_segments: int = 0
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    if self.depth not in DEPTHS:
      raise ValueError(f'ResNet depth must be one of {sorted(DEPTHS)}, got {self.depth}.')
    kind, stage_sizes = DEPTHS[self.depth]
    block_cls = BasicBlock if kind == 'basic' else Bottleneck
    every = 2 if stage_sizes[2] >= TSM_SPARSE_SHIFT_MIN_BLOCKS else 1
    self.conv1 = nn.Conv(self.width, (7, 7), (2, 2), ((3, 3), (3, 3)), use_bias=False,
                         kernel_init=layers.he_normal_fan_out, dtype=self.dtype,
                         conv_general_dilated_cls=fast_conv.ConvForBackend)
    self.bn1 = layers.BatchNorm(dtype=self.dtype)
    for stage, num_blocks in enumerate(stage_sizes):
      blocks = []
      for block in range(num_blocks):
        shift = self.num_segments if block % every == 0 else 0
        blocks.append(block_cls(self.width * 2**stage, 2 if stage > 0 and block == 0 else 1,
                                shift, self.shift_div, self.zero_init_residual, self.dtype))
      setattr(self, f'layer{stage + 1}', blocks)
    if self.num_classes:
      fan_in = self.width * 2**(NUM_STAGES - 1) * EXPANSION[kind]
      self.fc = layers.Dense(self.num_classes, dtype=self.dtype, kernel_init=uniform_fan_in(),
                             bias_init=torch_bias_init(fan_in))

  @property
  def out_features(self) -> int:
    """Channels of the layer4 feature map."""
    kind, _ = DEPTHS[self.depth]
    return self.width * 2**(NUM_STAGES - 1) * EXPANSION[kind]

  def stem(self, x, train: bool = False):
    """conv1, bn1, ReLU, 3x3 stride-2 max-pool (padding never wins)."""
    x = self.conv1(x.astype(self.dtype))
    x = nn.relu(self.bn1(x, use_running_average=not train))
    return nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))

  def stage(self, index: int, x, train: bool = False):
    """Runs layer`index` (1..4)."""
    for block in getattr(self, f'layer{index}'):
      x = block(x, train)
    return x

  def __call__(self, x, train: bool = False):
    x = self.stem(x, train)
    for index in range(1, NUM_STAGES + 1):
      x = self.stage(index, x, train)
    if not self.num_classes:
      return x
    return self.fc(jnp.mean(x, axis=(1, 2))).astype(layers.at_least_float32(self.dtype))
