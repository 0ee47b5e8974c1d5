"""S2DNet: Synopsis-to-Detail Networks (Liang et al., ECCV 2022), spec: docs/s2dnet.md.

    video (B, N, H, W, 3), n valid frames per video
      -> synopsis sampler: T uniform frames, nearest-resized to S       (no gradient)
      -> 'snet' TSM-MobileNetV2: SNet logits, feature map e, context g  (g not detached)
      s = top-k multi-hot of the SNet logits                              (no gradient)
      -> 'f_theta' on [stop_gradient(e) ; s]: raw sampling parameters   (>= float32)
      -> 'sampler' Gaussian filterbanks: T' detail frames of D x D      (>= float32)
      m = 'f_m'(ReLU(Linear([s ; g])))
      -> 'dnet' TSM-ResNet with lateral fusion of m after layer2/layer3,
         classifier on [dropout(x) ; m ; s] per frame, averaged over T' -> logits

Call: `model.apply(variables, video, train=..., return_aux=..., num_valid=num_frames)`, video
(B, N, H, W, 3) with frames >= num_valid[b] padding (never read), num_valid (B,) int, clipped to
[1, N] (None: all N valid). Returns the DNet logits (B, A) float32 (float64 for a float64 model,
see below), or (logits, aux) with aux:
  'snet_logits' (B, A), 'synopsis' s (B, A), 'synopsis_frame_indices' (B, T) int32,
  'detail_frames' (B, T', D, D, 3) (the frames DNet looked at), 'num_valid' (B,),
  'sampler_mu_t' (B, T') temporal centres and 'sampler_delta_t' (B,) stride in frames,
  'sampler_center_x', 'sampler_center_y', 'sampler_delta_x', 'sampler_delta_y' (B, T') in pixels
  of the input frames (window of output frame i: centre +- (D-1)/2 * delta).

Stages (`stage`): 'warmup' fixes the sampler (uniform temporal centres, central D x D crop at
1-pixel stride) and runs f_theta's BatchNorms on their running statistics (never updated, like the
reference's `sampler.eval()`); f_theta still runs, so its parameters exist in a warm-up checkpoint,
but gets no gradient. 'sampling' trains everything end to end.

f_theta size fix (`f_theta_fix`): the reference's trunk Conv3d(1480 -> 64) feeds a
Linear(1600 -> 1024) that expects 4 channels and crashes. 'A': Linear(64*T*h*w -> 1024) (what the
rest of its code implies, 26.9 M parameters); 'B' (default): Conv3d(1480 -> 4) and
Linear(4*T*h*w = 1600 -> 1024), the reference's own `HIDDEN_DIM 4 DETAIL_SAMPLING_DIM_RATE 1`
configuration, 24.7 M parameters fewer.

Precision: logits, s, f_theta and the sampler run in float32 for float32 and bfloat16 models
(`layers.at_least_float32`), and in float64 for a float64 model with float64 inputs
(`jax_enable_x64`; the parity checks against PyTorch's `model.double()`).

`faithful_topk_tiling=True` reproduces the reference's tiling of s onto DNet's frame rows
(`repeat(T, 1)`: frame row r of the batch gets s of video r mod B, i.e. other videos' s when
B > 1); the default gives each frame its own video's s. The reference tiles each GPU's batch
(B = its 32 videos under DDP) and this model the batch it is given (the micro-batch, over all
devices), so the pairing is the reference's only where the two batches are the same videos.
"""

from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from salinet_jax import errors
from salinet_jax.models import fast_conv
from salinet_jax.models import layers
from salinet_jax.models import mobilenet_v2
from salinet_jax.models import resnet2d
from salinet_jax.models import sampler as sampler_lib
from salinet_jax.models import tsm

STAGES = ('warmup', 'sampling')
SAMPLER = 'f_theta'  # the learned sampler's module: frozen in the warm-up, trained when sampling
SYNOPSIS_TYPES = ('multi_hot', 'prob')
# Trunk channels of f_theta's 1x1x1 conv under each fix of the reference's size bug.
F_THETA_FIX_CHANNELS = {'A': 64, 'B': 4}
# TSN's new_fc init: N(0, 0.001), bias 0 (the SNet classifier; the DNet one is replaced by a fresh
# nn.Linear with PyTorch's default init, as the reference's mount_lateral_fusion does).
CLASSIFIER_INIT_STD = 0.001
# Masked softmax ('prob' synopsis) denominator floor, as the reference.
MASKED_SOFTMAX_EPS = 1e-6


def kaiming_uniform(factor: float):
  """U(+-sqrt(factor / fan_in)) (the reference's `kaiming_uniform_(a=sqrt(6/factor - 1))`)."""
  if factor == 0:
    return nn.initializers.zeros
  return resnet2d.uniform_fan_in(factor)


def top_k_multi_hot(logits: jnp.ndarray, k: int) -> jnp.ndarray:
  """(B, A) with ones at each row's k largest logits (float32, or float64 for float64 logits)."""
  k = min(k, logits.shape[-1])
  _, indices = jax.lax.top_k(logits, k)
  dtype = layers.at_least_float32(logits.dtype)
  return jnp.sum(jax.nn.one_hot(indices, logits.shape[-1], dtype=dtype), axis=1)


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Softmax restricted to `mask` (the reference's 'PROB' synopsis)."""
  logits = logits.astype(layers.at_least_float32(logits.dtype))
  weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)) * mask
  return weights / (jnp.sum(weights, axis=-1, keepdims=True) + MASKED_SOFTMAX_EPS)


def tile_per_frame(vectors: jnp.ndarray, frames: int, faithful_bug: bool = False) -> jnp.ndarray:
  """(B, D) -> (B * frames, D) rows aligned with a (B * frames, ...) frame batch.

  `faithful_bug` tiles the whole batch `frames` times instead (row r gets vectors[r % B]).
  """
  if faithful_bug:
    return jnp.tile(vectors, (frames, 1))
  return jnp.repeat(vectors, frames, axis=0)


def batch_pairing_warning(model_config) -> Optional[str]:
  """The line that says what `faithful_topk_tiling=True` does to an S2DNet's outputs, or None
  for any other model: with it, a video's loss and scores depend on the batch it shares."""
  if model_config.get('name') != 's2dnet' or not model_config.get('faithful_topk_tiling'):
    return None
  return ("config.model.faithful_topk_tiling=True gives the detail frames of a clip the top-k "
          "vectors of the clips of its batch in turn, as the reference's tiling does: a video's "
          'loss and scores depend on the other videos of its batch (config.batch_size and '
          'grad_accumulation_steps, config.eval_batch_size, the views and the padded tail of an '
          'eval batch). Set it False to score each video on its own.')


class SynopsisNetwork(nn.Module):
  """SNet: TSM-MobileNetV2 on T uniform frames at S x S; returns (logits, e, g, frame indices).

  logits (B, A): per-frame Linear on dropout(GAP), averaged over frames. e (B, T, h, w, C): the
  backbone's feature map. g (B, C): dropout(mean over frames of GAP), not detached. logits and g
  are float32 (float64 for a float64 model).
  """
  num_classes: int
  num_frames: int = 16
  size: int = 144
  width_mult: float = 1.0
  last_channels: int = mobilenet_v2.LAST_CHANNELS
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  dropout_rate: float = 0.5
  context_dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video, num_valid, train: bool = False):
    batch = video.shape[0]
    frames, indices = sampler_lib.synopsis_frames(jax.lax.stop_gradient(video), num_valid,
                                                  self.num_frames, self.size)
    frames = frames.reshape((batch * self.num_frames,) + frames.shape[2:])
    with layers.rows_per_clip(self.num_frames):
      features = mobilenet_v2.MobileNetV2(
          width_mult=self.width_mult, last_channels=self.last_channels,
          num_segments=self.num_frames, shift_div=self.shift_div, dtype=self.dtype,
          name='backbone')(frames, train)
    e = features.reshape((batch, self.num_frames) + features.shape[1:])
    out_dtype = layers.at_least_float32(self.dtype)
    pooled = jnp.mean(e.astype(out_dtype), axis=(2, 3))  # (B, T, C)
    g = nn.Dropout(self.context_dropout_rate, deterministic=not train)(jnp.mean(pooled, axis=1))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
    per_frame = layers.Dense(self.num_classes, dtype=self.dtype,
                             kernel_init=nn.initializers.normal(CLASSIFIER_INIT_STD),
                             name='fc')(x)
    logits = jnp.mean(per_frame.astype(out_dtype), axis=1)
    return logits, e, g, indices


class SamplerHead(nn.Module):
  """f_theta: where and at what scale to look, from [e ; s], with full-precision products.

  Runs in float32 whatever the model's compute dtype (float64 when e is float64).

  Trunk: Conv3d 1x1x1 (bias) -> ReLU -> BN3d -> flatten (PyTorch (C, T, H, W) order) ->
  [Linear -> BN1d -> ReLU] x len(mlp_features) = h. Heads (Linear, no bias): temporal offset and
  log-stride from h; per-frame spatial (x, y) offsets and log-strides from [h ; o_t ; s_t].

  Attributes:
    out_frames: T', one spatial window per detail frame.
    channels: trunk conv output channels (64 = fix A, 4 = fix B).
    mlp_features: widths of the Linear layers (1024, 512).
    trunk_init_factor, head_init_factor: weight init U(+-sqrt(factor / fan_in)).

  Names map onto the reference's `DNet.sampler`: conv <- space_time_convs.0.0, conv_bn <- .1,
  fc1 <- .3.0, fc1_bn <- .4, fc2 <- .6.0, fc2_bn <- .7, temporal_offset <- fc_temporal_offset.0.0,
  temporal_stride, spatial_offset, spatial_stride likewise (spatial outputs are (frame, x|y)
  interleaved, as its `.view(B, -1, 2)`).
  """
  out_frames: int = 16
  channels: int = F_THETA_FIX_CHANNELS['B']
  mlp_features: Sequence[int] = (1024, 512)
  trunk_init_factor: float = 1.0
  head_init_factor: float = 0.05

  @nn.compact
  def __call__(self, e, s, train: bool = False) -> sampler_lib.SamplingParams:
    dtype = layers.at_least_float32(e.dtype)
    e = e.astype(dtype)
    batch = e.shape[0]
    s = jnp.broadcast_to(s.astype(dtype)[:, None, None, None, :],
                         e.shape[:4] + (s.shape[-1],))
    x = jnp.concatenate([e, s], axis=-1)
    x = nn.Conv(self.channels, (1, 1, 1), use_bias=True, dtype=dtype,
                precision=sampler_lib.FLOAT32_PRECISION,
                conv_general_dilated_cls=fast_conv.ConvForBackend,
                kernel_init=kaiming_uniform(self.trunk_init_factor), name='conv')(x)
    x = layers.batch_norm(train, dtype, name='conv_bn')(nn.relu(x))
    x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape((batch, -1))
    for i, features in enumerate(self.mlp_features):
      x = layers.Dense(features, dtype=dtype,
                       kernel_init=kaiming_uniform(self.trunk_init_factor),
                       precision=sampler_lib.FLOAT32_PRECISION, name=f'fc{i + 1}')(x)
      x = nn.relu(layers.batch_norm(train, dtype, name=f'fc{i + 1}_bn')(x))
    head = lambda n, name: layers.Dense(  # noqa: E731
        n, use_bias=False, dtype=dtype, name=name, precision=sampler_lib.FLOAT32_PRECISION,
        kernel_init=kaiming_uniform(self.head_init_factor))
    temporal_offset = head(1, 'temporal_offset')(x)
    temporal_stride = head(1, 'temporal_stride')(x)
    x = jnp.concatenate([x, temporal_offset, temporal_stride], axis=-1)
    spatial_offset = head(2 * self.out_frames, 'spatial_offset')(x)
    spatial_stride = head(2 * self.out_frames, 'spatial_stride')(x)
    return sampler_lib.SamplingParams(
        temporal_offset[:, 0], temporal_stride[:, 0],
        spatial_offset.reshape((batch, self.out_frames, 2)),
        spatial_stride.reshape((batch, self.out_frames, 2)))


class LateralFusion(nn.Module):
  """Replaces a (B*T, h, w, C) feature map by ReLU(Conv 1x1x1([x ; m tiled over T, h, w])) -> C."""
  num_frames: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    channels = x.shape[-1]
    video = x.reshape((-1, self.num_frames) + x.shape[1:])
    tiled = jnp.broadcast_to(layers.widened(context)[:, None, None, None, :],
                             video.shape[:4] + (context.shape[-1],)).astype(video.dtype)
    y = jnp.concatenate([video, tiled], axis=-1)
    y = layers.Conv3D(channels, 1, use_bias=False, kernel_init=resnet2d.uniform_fan_in(),
                      dtype=self.dtype, name='conv')(y)
    return nn.relu(y).reshape(x.shape)


class DetailNetwork(nn.Module):
  """DNet: TSM-ResNet on the detail frames, lateral fusion of m, classifier on [x ; m ; s].

  Attributes:
    num_classes: A.
    num_frames: T' (TSM segments).
    depth, width: ResNet depth (50) and base width (64).
    fusion_stages: ResNet stages after which m is fused (2, 3).
    dropout_rate: on the pooled per-frame features before the classifier.
    faithful_topk_tiling: reproduce the reference's tiling of s (see module doc).
  """
  num_classes: int
  num_frames: int = 16
  depth: int = 50
  width: int = 64
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  fusion_stages: Sequence[int] = (2, 3)
  dropout_rate: float = 0.5
  faithful_topk_tiling: bool = False
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, frames, context, synopsis, train: bool = False):
    batch = frames.shape[0]
    x = frames.reshape((batch * self.num_frames,) + frames.shape[2:]).astype(self.dtype)
    backbone = resnet2d.ResNet2D(depth=self.depth, width=self.width,
                                 num_segments=self.num_frames, shift_div=self.shift_div,
                                 zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                                 name='backbone')
    with layers.rows_per_clip(self.num_frames):
      x = backbone.stem(x, train)
      for stage in range(1, resnet2d.NUM_STAGES + 1):
        x = backbone.stage(stage, x, train)
        if stage in self.fusion_stages:
          x = LateralFusion(self.num_frames, self.dtype, name=f'fusion_layer{stage}')(x, context)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = jnp.concatenate([
        x,
        tile_per_frame(layers.widened(context), self.num_frames).astype(x.dtype),
        tile_per_frame(layers.widened(synopsis), self.num_frames,
                       self.faithful_topk_tiling).astype(x.dtype),
    ], axis=-1)
    per_frame = layers.Dense(self.num_classes, dtype=self.dtype,
                             kernel_init=resnet2d.uniform_fan_in(),
                             bias_init=resnet2d.torch_bias_init(x.shape[-1]), name='fc')(x)
    per_frame = per_frame.astype(layers.at_least_float32(self.dtype))
    per_frame = per_frame.reshape((batch, self.num_frames, -1))
    return jnp.mean(per_frame, axis=1)


class S2DNet(nn.Module):
  """Synopsis-to-Detail Network; defaults = the Mini-Kinetics model (spec), fix B.

  Attributes (all settable from `config.model`):
    num_classes, dtype: set by `build_model`.
    stage: 'warmup' | 'sampling'.
    synopsis_frames, synopsis_size: SNet input T (16) frames at S x S (144).
    detail_frames, detail_size: DNet input T' (16) frames at D x D (112).
    topk: classes in the synopsis s (5); synopsis_type: 'multi_hot' | 'prob' (masked softmax of
      the SNet logits over the top-k, with gradient into SNet as the reference).
    snet_width, snet_last_channels: MobileNetV2 width multiplier (1.0) and last conv (1280).
    dnet_depth, dnet_width: ResNet depth (50) and base width (64).
    shift_div: TSM fold divisor of both networks (8).
    f_theta_fix: 'A' | 'B' (see module doc); f_theta_mlp: f_theta Linear widths (1024, 512);
      f_theta_head_init: head init factor of a fresh f_theta (0.05; the reference's sampling
      config says 0.01, but that stage starts from the warm-up's f_theta).
    context_features: width of m (256).
    fusion_stages: DNet stages followed by lateral fusion ((2, 3)).
    snet_dropout, context_dropout, dnet_dropout: 0.5 each.
    faithful_topk_tiling: reproduce the reference's tiling bug of s (False).
    sampler_variance: variance of the detail sampler's Gaussians (1.0).
    zero_init_residual: zero-init the last BN of DNet's blocks (torchvision option, False).
  """
  num_classes: int
  dtype: Any = jnp.float32
  stage: str = 'sampling'
  synopsis_frames: int = 16
  synopsis_size: int = 144
  detail_frames: int = 16
  detail_size: int = 112
  topk: int = 5
  synopsis_type: str = 'multi_hot'
  snet_width: float = 1.0
  snet_last_channels: int = mobilenet_v2.LAST_CHANNELS
  dnet_depth: int = 50
  dnet_width: int = 64
  shift_div: int = tsm.DEFAULT_FOLD_DIV
  f_theta_fix: str = 'B'
  f_theta_mlp: Sequence[int] = (1024, 512)
  f_theta_head_init: float = 0.05
  context_features: int = 256
  fusion_stages: Sequence[int] = (2, 3)
  snet_dropout: float = 0.5
  context_dropout: float = 0.5
  dnet_dropout: float = 0.5
  faithful_topk_tiling: bool = False
  sampler_variance: float = sampler_lib.DEFAULT_VARIANCE
  zero_init_residual: bool = False

  def _check(self):
    if self.stage not in STAGES:
      raise errors.ConfigError(f'config.model.stage must be one of {STAGES}, got {self.stage!r}.')
    if self.synopsis_type not in SYNOPSIS_TYPES:
      raise errors.ConfigError(f'config.model.synopsis_type must be one of {SYNOPSIS_TYPES}, '
                               f'got {self.synopsis_type!r}.')
    if self.f_theta_fix not in F_THETA_FIX_CHANNELS:
      raise errors.ConfigError(f"config.model.f_theta_fix must be 'A' or 'B', got "
                               f'{self.f_theta_fix!r}.')
    # A multi-hot of all classes (or more) is all ones: it tells the detail network nothing,
    # without a word. A masked softmax over all classes is the plain softmax, which still does.
    most = self.num_classes - 1 if self.synopsis_type == 'multi_hot' else self.num_classes
    if not 1 <= self.topk <= most:
      raise errors.ConfigError(
          f'config.model.topk must be from 1 to {most} ('
          + (f'fewer than the {self.num_classes} classes' if most < self.num_classes
             else f'the {self.num_classes} classes') + f'), got {self.topk}.')

  @nn.compact
  def __call__(self, x, train: bool = False, return_aux: bool = False,
               num_valid: Optional[jnp.ndarray] = None):
    self._check()
    batch, frames = x.shape[:2]
    num_valid = sampler_lib.valid_counts(num_valid, batch, frames)
    sampling = self.stage == 'sampling'

    snet_logits, e, g, synopsis_indices = SynopsisNetwork(
        self.num_classes, self.synopsis_frames, self.synopsis_size, self.snet_width,
        self.snet_last_channels, self.shift_div, self.snet_dropout, self.context_dropout,
        self.dtype, name='snet')(x, num_valid, train)

    multi_hot = top_k_multi_hot(jax.lax.stop_gradient(snet_logits), self.topk)
    s = multi_hot if self.synopsis_type == 'multi_hot' else masked_softmax(snet_logits, multi_hot)

    params = SamplerHead(self.detail_frames, F_THETA_FIX_CHANNELS[self.f_theta_fix],
                         tuple(self.f_theta_mlp), head_init_factor=self.f_theta_head_init,
                         name='f_theta')(jax.lax.stop_gradient(e), s, train and sampling)
    if not sampling:
      params = jax.lax.stop_gradient(params)
    detail, info = sampler_lib.GaussianDetailSampler(
        self.detail_frames, self.detail_size, fixed=not sampling,
        temporal_variance=self.sampler_variance, spatial_variance=self.sampler_variance,
        name='sampler')(x, num_valid, params)

    context = nn.relu(layers.Dense(
        self.context_features, kernel_init=resnet2d.uniform_fan_in(),
        bias_init=resnet2d.torch_bias_init(self.num_classes + g.shape[-1]),
        name='f_m')(jnp.concatenate([s, g], axis=-1)))

    logits = DetailNetwork(self.num_classes, self.detail_frames, self.dnet_depth,
                           self.dnet_width, self.shift_div, tuple(self.fusion_stages),
                           self.dnet_dropout, self.faithful_topk_tiling,
                           self.zero_init_residual, self.dtype,
                           name='dnet')(detail, context, s, train)
    if not return_aux:
      return logits
    aux: Dict[str, jnp.ndarray] = {
        'snet_logits': snet_logits,
        'synopsis': s,
        'synopsis_frame_indices': synopsis_indices,
        'detail_frames': detail,
        'num_valid': num_valid,
    }
    aux.update(sampler_lib.sampler_aux(info))
    return logits, aux


def in_sampler(name: str) -> bool:
  """Whether the parameter `name` ('KIND:PATH' or 'PATH') is one of the sampler f_theta's."""
  return name.split(':', 1)[-1].startswith(SAMPLER + '/')


def check_stage_recipe(stage: str, frozen_by_name: Dict[str, bool], frozen_pattern: str) -> None:
  """Refuses a stage trained with the other stage's recipe, as `--config.model.stage` on the
  other stage's config file gives: a sampling stage with the warm-up's frozen sampler would
  train everything but f_theta, whose values stay at their initialisation, without a word."""
  sampler = [frozen for name, frozen in frozen_by_name.items() if in_sampler(name)]
  if stage == 'sampling' and any(sampler):
    problem = 'freezes the sampler f_theta, which the sampling stage trains'
  elif stage == 'warmup' and sampler and not all(sampler):
    problem = 'leaves the sampler f_theta trainable, which the warm-up freezes'
  else:
    return
  raise errors.ConfigError(
      f'config.model.stage={stage!r} but config.optimizer.frozen={frozen_pattern!r} {problem}: '
      'the config is the other stage\'s recipe. Choose the stage with --config=FILE.py:STAGE, '
      'which sets its whole recipe (learning rate, frozen parameters, init_from), not with '
      '--config.model.stage.')
