"""Training losses, selected by `config.loss.name`.

`compute_loss(loss_config, logits, labels, aux)` returns `(total, terms)` where `terms` maps each
named term to its (already weighted) scalar value, for logging. Losses always run in float32.

Names: 'cross_entropy'; 'ce_l1' (+ lambda * L1 of the SaliNet mask S_final); 'ce_l1_l2' (+ the two
TSFP gate MSE terms); 's2dnet' (label-smoothed CE on the DNet logits + weighted CE on the SNet
logits). The last three read the model's aux outputs (see LOSSES_NEEDING_AUX).
"""

from typing import Dict, Mapping, Tuple

import jax.numpy as jnp
import optax

Terms = Dict[str, jnp.ndarray]


def cross_entropy(logits, labels, label_smoothing: float = 0.0, weights=None):
  """Mean softmax cross-entropy over the examples with nonzero `weights` (all if None)."""
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax_one_hot(labels, num_classes), label_smoothing) \
      if label_smoothing else jax_one_hot(labels, num_classes)
  per_example = optax.softmax_cross_entropy(logits, targets)
  if weights is None:
    return jnp.mean(per_example)
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def jax_one_hot(labels, num_classes: int):
  return (labels[..., None] == jnp.arange(num_classes)).astype(jnp.float32)


def _cross_entropy_loss(loss_config, logits, labels, aux) -> Tuple[jnp.ndarray, Terms]:
  del aux
  ce = cross_entropy(logits, labels, loss_config.get('label_smoothing', 0.0))
  return ce, {'cross_entropy': ce}


# SaliNet's auxiliary terms (reference: models/losses.py, CE_L1 and CE_L1_L2), weights from the
# released config (MODEL.LAMDA / GAMA / THETA) and the per-GPU batch of its 2-GPU, batch-2 run.
DEFAULT_L1_WEIGHT = 1e-4
DEFAULT_GATE1_WEIGHT = 1e-4
DEFAULT_GATE2_WEIGHT = 1e-4
DEFAULT_REFERENCE_PER_DEVICE_BATCH = 1


def saliency_l1(saliency_final,
                reference_per_device_batch: int = DEFAULT_REFERENCE_PER_DEVICE_BATCH):
  """L1 norm of S_final, expressed per clip so it does not depend on our batch or device count.

  The reference adds `torch.norm(S_final, p=1)`: the sum of |S_final| over its whole per-GPU
  tensor, and DDP then averages gradients over GPUs. That is (per-GPU batch) x (mean over clips of
  the per-clip sum). We compute exactly that: sum |S_final| over each clip's (t, h, w, c), mean over
  the batch, times `reference_per_device_batch` (1 for the released 2-GPU, batch-2 config), so the
  term keeps the reference's scale relative to the cross-entropy whatever batch size we run.
  """
  s = jnp.abs(saliency_final.astype(jnp.float32))
  per_clip = jnp.sum(s.reshape(s.shape[0], -1), axis=1)
  return jnp.mean(per_clip) * reference_per_device_batch


def gate_mse(pooled, gate):
  """Mean squared error between a TSFP output P and its gate G over all elements.

  As in the reference, G is not detached: the term also trains the gate, and since P = pool * G it
  equals mean(G^2 (pool - 1)^2).
  """
  diff = pooled.astype(jnp.float32) - gate.astype(jnp.float32)
  return jnp.mean(jnp.square(diff))


def _require(aux: Mapping[str, jnp.ndarray], keys, loss_name: str) -> None:
  missing = [k for k in keys if k not in aux]
  if missing:
    raise ValueError(f'Loss {loss_name!r} needs the model aux outputs {missing}: use a SaliNet '
                     'model with model.ssf=True (and model.tsfp=True for the gate terms).')


def _ce_l1_loss(loss_config, logits, labels, aux) -> Tuple[jnp.ndarray, Terms]:
  """CE + lambda * ||S_final||_1 (reference "CE_L1"); lambda = config.loss.l1_weight."""
  _require(aux, ['saliency_final'], 'ce_l1')
  ce = cross_entropy(logits, labels, loss_config.get('label_smoothing', 0.0))
  l1 = loss_config.get('l1_weight', DEFAULT_L1_WEIGHT) * saliency_l1(
      aux['saliency_final'],
      loss_config.get('reference_per_device_batch', DEFAULT_REFERENCE_PER_DEVICE_BATCH))
  return ce + l1, {'cross_entropy': ce, 'saliency_l1': l1}


def _ce_l1_l2_loss(loss_config, logits, labels, aux) -> Tuple[jnp.ndarray, Terms]:
  """CE + lambda ||S_final||_1 + gamma MSE(P1, G1) + theta MSE(P2, G2) (reference "CE_L1_L2").

  Config fields (all optional): l1_weight (lambda), gate1_weight (gamma), gate2_weight (theta),
  each 1e-4 by default, reference_per_device_batch (1), label_smoothing (0).
  """
  _require(aux, ['saliency_final', 'P1', 'G1', 'P2', 'G2'], 'ce_l1_l2')
  total, terms = _ce_l1_loss(loss_config, logits, labels, aux)
  terms['gate1_mse'] = loss_config.get('gate1_weight', DEFAULT_GATE1_WEIGHT) * gate_mse(
      aux['P1'], aux['G1'])
  terms['gate2_mse'] = loss_config.get('gate2_weight', DEFAULT_GATE2_WEIGHT) * gate_mse(
      aux['P2'], aux['G2'])
  return total + terms['gate1_mse'] + terms['gate2_mse'], terms


# S2DNet (reference configs: S2D.DNET_SMOOTH_ALPHA, SNET_SMOOTH_ALPHA, SNET_LOSS_WEIGHT).
DEFAULT_S2DNET_DNET_LABEL_SMOOTHING = 0.1
DEFAULT_S2DNET_SNET_LABEL_SMOOTHING = 0.0
DEFAULT_S2DNET_SNET_WEIGHT = 0.1


def _s2dnet_loss(loss_config, logits, labels, aux) -> Tuple[jnp.ndarray, Terms]:
  """CE(DNet logits, smoothing 0.1) + 0.1 * CE(SNet logits); no sampler regulariser.

  `logits` are the DNet logits (the model's main output), aux['snet_logits'] the SNet ones.
  Config fields (all optional): dnet_label_smoothing (0.1), snet_label_smoothing (0),
  snet_loss_weight (0.1).
  """
  if 'snet_logits' not in aux:
    raise ValueError("Loss 's2dnet' needs the model aux output 'snet_logits': use model 's2dnet'.")
  dnet = cross_entropy(logits, labels, loss_config.get(
      'dnet_label_smoothing', DEFAULT_S2DNET_DNET_LABEL_SMOOTHING))
  snet = loss_config.get('snet_loss_weight', DEFAULT_S2DNET_SNET_WEIGHT) * cross_entropy(
      aux['snet_logits'], labels, loss_config.get(
          'snet_label_smoothing', DEFAULT_S2DNET_SNET_LABEL_SMOOTHING))
  return dnet + snet, {'dnet_cross_entropy': dnet, 'snet_cross_entropy': snet}


LOSSES = {
    'cross_entropy': _cross_entropy_loss,
    'ce_l1': _ce_l1_loss,
    'ce_l1_l2': _ce_l1_l2_loss,
    's2dnet': _s2dnet_loss,
}
# Losses that read auxiliary model outputs (the model is asked to return them).
LOSSES_NEEDING_AUX = frozenset({'ce_l1', 'ce_l1_l2', 's2dnet'})


def _check_name(name: str) -> None:
  if name not in LOSSES:
    raise ValueError(f'config.loss.name {name!r} is not one of {sorted(LOSSES)}.')


def needs_aux(loss_config) -> bool:
  """Whether the model must return its auxiliary tensors for this loss."""
  _check_name(loss_config.name)
  return loss_config.name in LOSSES_NEEDING_AUX


def compute_loss(loss_config, logits, labels, aux: Mapping[str, jnp.ndarray]):
  """Returns (total loss, {term name: value}) for `loss_config.name`."""
  _check_name(loss_config.name)
  return LOSSES[loss_config.name](loss_config, logits, labels, aux)
