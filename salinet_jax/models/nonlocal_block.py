"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), PySlowFast flavour.

This is the embedded-Gaussian ("softmax") instantiation used by PySlowFast's I3D-NLN models:

    theta = conv_theta(x)                      1x1x1 conv with bias, C -> C_inner
    phi   = conv_phi(maxpool(x))               keys are computed on a spatially pooled copy of x
    g     = conv_g(maxpool(x))                 values likewise
    a     = softmax_over_keys(theta . phi * C_inner^-0.5)
    y     = x + bn(conv_out(a . g))            output conv with bias, BN whose gamma starts at 0

so the block is an identity mapping at initialisation. Parameter names match the PyTorch module
(`conv_theta`, `conv_phi`, `conv_g`, `conv_out`, `bn`) so checkpoint conversion is a rename.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from salinet_jax.models import layers


class NonLocalBlock(nn.Module):
  """Softmax non-local block on NTHWC features.

  Attributes:
    inner_features: channels of theta/phi/g (PySlowFast uses half the input channels).
    pool_size: (t, h, w) max-pool window = stride applied before phi and g; all ones disables it.
    softmax_dtype: dtype of the affinity softmax; None = at least float32 (keeps bf16 runs
      stable, float64 in float64 runs).
  """
  inner_features: int
  pool_size: Sequence[int] = (1, 2, 2)
  dtype: Any = jnp.float32
  softmax_dtype: Optional[Any] = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    batch, frames, height, width, channels = x.shape
    conv = lambda features, name: layers.Conv3D(  # noqa: E731
        features, 1, use_bias=True, dtype=self.dtype, impl=self.conv_impl, name=name)

    theta = conv(self.inner_features, 'conv_theta')(x)
    pool = layers.triple(self.pool_size)
    keys_in = layers.max_pool3d(x, pool, pool) if any(p > 1 for p in pool) else x
    phi = conv(self.inner_features, 'conv_phi')(keys_in)
    g = conv(self.inner_features, 'conv_g')(keys_in)

    theta = theta.reshape(batch, -1, self.inner_features)
    phi = phi.reshape(batch, -1, self.inner_features)
    g = g.reshape(batch, -1, self.inner_features)

    affinity = jnp.einsum('bqc,bkc->bqk', theta, phi)
    softmax_dtype = self.softmax_dtype or layers.at_least_float32(self.dtype)
    affinity = affinity.astype(softmax_dtype) * (self.inner_features ** -0.5)
    affinity = jax.nn.softmax(affinity, axis=-1).astype(self.dtype)
    attended = jnp.einsum('bqk,bkc->bqc', affinity, g)
    attended = attended.reshape(batch, frames, height, width, self.inner_features)

    y = conv(channels, 'conv_out')(attended)
    y = layers.batch_norm(train, self.dtype, zero_init=True, name='bn')(y)
    return x + y
