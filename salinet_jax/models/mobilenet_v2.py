"""MobileNetV2 (Sandler et al., CVPR 2018) on NHWC frames, optionally with TSM temporal shifts.

Standard network: 3x3 stride-2 stem to 32 channels, BN, ReLU6; inverted residual blocks with
settings (expand t, channels c, repeats n, first stride s) = (1,16,1,1) (6,24,2,2) (6,32,3,2)
(6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1); a final 1x1 conv to 1280 channels, BN, ReLU6.
Channel rounding under `width_mult` follows torchvision (`_make_divisible`, multiples of 8).

TSM-MobileNetV2 (`num_segments > 0`): a temporal shift on the input of the 1x1 expansion conv of
every block that has a residual connection and an expansion (features 3, 5, 6, 8, 9, 10, 12, 13,
15 and 16); the residual itself adds the unshifted input (the TSM reference wraps `conv[0]`).

Parameter names follow torchvision's state dict: replace '/' and '_' by '.', 'kernel'/'scale' by
'weight', batch_stats 'mean'/'var' by 'running_mean'/'running_var', and transpose kernels
(kh, kw, cin/groups, cout) -> (cout, cin/groups, kh, kw) and Linear kernels. E.g.

    features_0_0/kernel            features.0.0.weight        (stem conv)
    features_3/conv_0_0/kernel     features.3.conv.0.0.weight  (expansion 1x1)
    features_3/conv_1_0/kernel     features.3.conv.1.0.weight  (depthwise 3x3)
    features_3/conv_2/kernel       features.3.conv.2.weight    (projection 1x1)
    features_3/conv_3/scale        features.3.conv.3.weight    (its BN)
    features_18_0/kernel           features.18.0.weight       (last 1x1 conv)
    classifier_1/{kernel,bias}     classifier.1.{weight,bias}

TSM checkpoints use the older flat layout of the same tensors: features.k.conv.{0,1,3,4,6,7}
(conv.0 wrapped as conv.0.net when shifted) for conv_{0_0,0_1,1_0,1_1,2,3}, and conv.{0,1,3,4}
for the first block's conv_{0_0,0_1,1,2}.
"""

from typing import Any, List, NamedTuple, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from salinet_jax.models import fast_conv
from salinet_jax.models import layers
from salinet_jax.models import tsm

# (expand ratio t, output channels c, repeats n, stride of the first repeat s)
INVERTED_RESIDUAL_SETTINGS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
CHANNEL_DIVISOR = 8
# torchvision: Linear weights N(0, 0.01), biases 0; the classifier's dropout.
CLASSIFIER_INIT_STD = 0.01
DEFAULT_DROPOUT = 0.2


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
  """torchvision's `_make_divisible`: nearest multiple of `divisor`, never below 90 % of value."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


def conv2d(features: int, kernel: int, strides: int, dtype: Any, name: str,
           groups: int = 1) -> nn.Conv:
  """Bias-free 2D conv with PyTorch padding (kernel // 2) and He fan-out init."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (strides, strides), ((pad, pad), (pad, pad)),
                 feature_group_count=groups, use_bias=False,
                 kernel_init=layers.he_normal_fan_out, dtype=dtype, name=name,
                 conv_general_dilated_cls=fast_conv.ConvForBackend)


class BlockSpec(NamedTuple):
  """One inverted residual block: its index in `features`, channels, stride and expansion."""
  index: int
  in_features: int
  out_features: int
  strides: int
  expand_ratio: int

  @property
  def has_residual(self) -> bool:
    return self.strides == 1 and self.in_features == self.out_features

  @property
  def shifts(self) -> bool:
    """Whether TSM shifts this block (residual connection and an expansion conv)."""
    return self.has_residual and self.expand_ratio != 1


def block_specs(width_mult: float = 1.0,
                settings: Sequence[Tuple[int, int, int, int]] = INVERTED_RESIDUAL_SETTINGS
                ) -> List[BlockSpec]:
  """The inverted residual blocks in order (`features_1` .. `features_17` as standard)."""
  specs = []
  in_features = make_divisible(STEM_CHANNELS * width_mult)
  for t, c, n, s in settings:
    out_features = make_divisible(c * width_mult)
    for repeat in range(n):
      specs.append(BlockSpec(len(specs) + 1, in_features, out_features, s if repeat == 0 else 1, t))
      in_features = out_features
  return specs


class InvertedResidual(nn.Module):
  """Expansion 1x1 (if t > 1), depthwise 3x3 (stride), linear 1x1; residual if shapes match.

  Attributes:
    features: output channels.
    strides: stride of the depthwise conv.
    expand_ratio: t; hidden channels = round(input channels * t).
    num_segments: frames per video for the temporal shift; 0 = no shift.
    shift_div: the shifted fraction is 2 / shift_div of the channels.
  """
  features: int
  strides: int
  expand_ratio: int
  num_segments: int = 0
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    in_features = x.shape[-1]
    hidden = int(round(in_features * self.expand_ratio))
    use_residual = self.strides == 1 and in_features == self.features
    y = x
    if self.expand_ratio != 1:
      if use_residual and self.num_segments:
        y = tsm.temporal_shift(y, self.num_segments, self.shift_div)
      y = conv2d(hidden, 1, 1, self.dtype, 'conv_0_0')(y)
      y = jax.nn.relu6(layers.batch_norm(train, self.dtype, name='conv_0_1')(y))
      names = ('conv_1_0', 'conv_1_1', 'conv_2', 'conv_3')
    else:
      names = ('conv_0_0', 'conv_0_1', 'conv_1', 'conv_2')
    y = conv2d(hidden, 3, self.strides, self.dtype, names[0], groups=hidden)(y)
    y = jax.nn.relu6(layers.batch_norm(train, self.dtype, name=names[1])(y))
    y = conv2d(self.features, 1, 1, self.dtype, names[2])(y)
    y = layers.batch_norm(train, self.dtype, name=names[3])(y)
    return x + y if use_residual else y


class MobileNetV2(nn.Module):
  """(TSM-)MobileNetV2 on (N, H, W, 3) frames.

  Attributes:
    num_classes: > 0 adds torchvision's classifier (dropout, Linear) on the pooled features and
      returns logits; 0 returns the final feature map (N, H/32, W/32, last channels).
    width_mult: channel multiplier (torchvision rounding); the last conv keeps
      `last_channels` unless width_mult > 1.
    last_channels: channels of the final 1x1 conv (1280 in the standard network).
    settings: inverted residual settings (t, c, n, s).
    num_segments: frames per video for TSM (input frames of one video are consecutive); 0 = 2D.
    shift_div: TSM fold divisor.
    dropout_rate: classifier dropout (only with num_classes > 0).
  """
  num_classes: int = 0
  width_mult: float = 1.0
  last_channels: int = LAST_CHANNELS
  settings: Sequence[Tuple[int, int, int, int]] = INVERTED_RESIDUAL_SETTINGS
  num_segments: int = 0
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  dropout_rate: float = DEFAULT_DROPOUT
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = conv2d(make_divisible(STEM_CHANNELS * self.width_mult), 3, 2, self.dtype,
               'features_0_0')(x)
    x = jax.nn.relu6(layers.batch_norm(train, self.dtype, name='features_0_1')(x))
    specs = block_specs(self.width_mult, self.settings)
    for spec in specs:
      x = InvertedResidual(spec.out_features, spec.strides, spec.expand_ratio,
                           self.num_segments, self.shift_div, self.dtype,
                           name=f'features_{spec.index}')(x, train)
    index = len(specs) + 1
    last = make_divisible(self.last_channels * max(1.0, self.width_mult))
    x = conv2d(last, 1, 1, self.dtype, f'features_{index}_0')(x)
    x = jax.nn.relu6(layers.batch_norm(train, self.dtype, name=f'features_{index}_1')(x))
    if not self.num_classes:
      return x
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = layers.Dense(self.num_classes, dtype=self.dtype,
                          kernel_init=nn.initializers.normal(CLASSIFIER_INIT_STD),
                          name='classifier_1')(x)
    return logits.astype(layers.at_least_float32(self.dtype))
