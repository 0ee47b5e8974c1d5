"""SaliNet losses on hand-made tensors with hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from salinet_jax import losses


def _config(**fields):
  """The base config's loss fields with `fields` replaced."""
  config = base.get_base_config().loss
  config.update(fields)
  return config


def _aux():
  # S_final for two clips, (B, 1, H, W, 1) with H = W = 2.
  saliency = jnp.array([[1.0, -2.0], [0.5, 0.0]])[None, None, :, :, None]
  saliency = jnp.concatenate([saliency, jnp.full_like(saliency, 0.25)], axis=0)
  return {
      'saliency_final': saliency,  # per-clip |.| sums 3.5 and 1.0 -> mean 2.25
      'P1': jnp.array([0.5, 0.2]).reshape(1, 1, 1, 2, 1),
      'G1': jnp.array([0.5, 0.6]).reshape(1, 1, 1, 2, 1),  # MSE = (0 + 0.16) / 2 = 0.08
      'P2': jnp.array([0.1, 0.1, 0.4, 1.0]).reshape(1, 1, 2, 2, 1),
      'G2': jnp.array([0.3, 0.1, 0.4, 0.0]).reshape(1, 1, 2, 2, 1),  # MSE = (0.04 + 1) / 4 = 0.26
  }


LOGITS = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]])
LABELS = jnp.array([0, 1])
# CE: clip 0 log 2; clip 1 -log(1/4) = log 4; mean = 1.5 log 2.
CE = 1.5 * math.log(2.0)


def test_registry_and_aux_requirements():
  assert {'cross_entropy', 'ce_l1', 'ce_l1_l2'} <= set(losses.LOSSES)
  assert losses.needs_aux(_config(name='ce_l1')) and losses.needs_aux(_config(name='ce_l1_l2'))
  assert not losses.needs_aux(_config(name='cross_entropy'))
  with pytest.raises(ValueError, match='G1'):
    losses.compute_loss(_config(name='ce_l1_l2'), LOGITS, LABELS, {'saliency_final': jnp.zeros(1)})


def test_cross_entropy_unchanged():
  total, terms = losses.compute_loss(_config(name='cross_entropy'), LOGITS, LABELS, {})
  np.testing.assert_allclose(total, CE, rtol=1e-6)
  assert set(terms) == {'cross_entropy'}


def test_cross_entropy_with_label_smoothing_by_hand():
  """Mutation audit: the cross_entropy loss ignoring config.loss.label_smoothing passed every
  test. Targets (1 - e) one-hot + e / K, as torch's CrossEntropyLoss(label_smoothing=e)."""
  total, _ = losses.compute_loss(_config(name='cross_entropy', label_smoothing=0.1), LOGITS,
                                 LABELS, {})
  second = -(0.05 * math.log(0.75) + 0.95 * math.log(0.25))  # softmax [0.75, 0.25], label 1
  np.testing.assert_allclose(total, (math.log(2.0) + second) / 2, rtol=1e-6)


def test_ce_l1_hand_computed():
  config = _config(name='ce_l1', l1_weight=0.1)
  total, terms = losses.compute_loss(config, LOGITS, LABELS, _aux())
  np.testing.assert_allclose(terms['cross_entropy'], CE, rtol=1e-6)
  np.testing.assert_allclose(terms['weighted_saliency_l1'], 0.1 * 2.25, rtol=1e-6)
  np.testing.assert_allclose(total, CE + 0.225, rtol=1e-6)
  # Per-clip sum, mean over the batch, times the reference's per-device batch.
  config = _config(name='ce_l1', l1_weight=0.1, reference_per_device_batch=2)
  _, terms = losses.compute_loss(config, LOGITS, LABELS, _aux())
  np.testing.assert_allclose(terms['weighted_saliency_l1'], 0.45, rtol=1e-6)


def test_ce_l1_with_one_clip_per_device_equals_reference_sum():
  aux = _aux()
  one_clip = {'saliency_final': aux['saliency_final'][:1]}
  config = _config(name='ce_l1', l1_weight=1.0)
  _, terms = losses.compute_loss(config, LOGITS[:1], LABELS[:1], one_clip)
  np.testing.assert_allclose(terms['weighted_saliency_l1'], 3.5, rtol=1e-6)  # torch.norm(S_final, p=1)


def test_ce_l1_l2_hand_computed():
  config = _config(name='ce_l1_l2', l1_weight=0.1, gate1_weight=2.0, gate2_weight=10.0)
  total, terms = losses.compute_loss(config, LOGITS, LABELS, _aux())
  assert set(terms) == {'cross_entropy', 'weighted_saliency_l1', 'weighted_gate1_mse',
                        'weighted_gate2_mse'}
  np.testing.assert_allclose(terms['weighted_gate1_mse'], 2.0 * 0.08, rtol=1e-6)
  np.testing.assert_allclose(terms['weighted_gate2_mse'], 10.0 * 0.26, rtol=1e-6)
  np.testing.assert_allclose(total, CE + 0.225 + 0.16 + 2.6, rtol=1e-6)


def test_ce_l1_l2_default_weights_are_1e4():
  total, terms = losses.compute_loss(_config(name='ce_l1_l2'), LOGITS, LABELS, _aux())
  np.testing.assert_allclose(terms['weighted_saliency_l1'], 1e-4 * 2.25, rtol=1e-6)
  np.testing.assert_allclose(terms['weighted_gate1_mse'], 1e-4 * 0.08, rtol=1e-6)
  np.testing.assert_allclose(terms['weighted_gate2_mse'], 1e-4 * 0.26, rtol=1e-6)
  np.testing.assert_allclose(total, CE + 1e-4 * (2.25 + 0.08 + 0.26), rtol=1e-6)
