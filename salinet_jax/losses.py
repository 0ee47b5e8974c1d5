"""Training losses, selected by `config.loss.name`.

`compute_loss(loss_config, logits, labels, aux)` returns `(total, terms)` where `terms` maps each
named term to its scalar value, for logging: `cross_entropy` (or `dnet_cross_entropy`) unweighted,
every other term as it enters the total, named `weighted_<term>`. Losses always run in float32.
Every weight and smoothing factor is a field of `config.loss` (configs/base.py).

Names: 'cross_entropy'; 'ce_l1' (+ lambda * L1 of the SaliNet mask S_final); 'ce_l1_l2' (+ the two
TSFP gate MSE terms); 's2dnet' (label-smoothed CE on the DNet logits + weighted CE on the SNet
logits). The last three read the model's aux outputs (see LOSSES_NEEDING_AUX).
"""

from typing import Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import optax

from salinet_jax import errors

Terms = Dict[str, jnp.ndarray]


def cross_entropy(logits, labels, label_smoothing: float = 0.0, weights=None):
  """Mean softmax cross-entropy over the examples with nonzero `weights` (all if None)."""
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    per_example = optax.softmax_cross_entropy(logits, targets)
  else:
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if weights is None:
    return jnp.mean(per_example)
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _cross_entropy_loss(loss_config, logits, labels, aux) -> Tuple[jnp.ndarray, Terms]:
  del aux
  ce = cross_entropy(logits, labels, loss_config.label_smoothing)
  return ce, {'cross_entropy': ce}


# SaliNet's auxiliary terms (reference: models/losses.py, CE_L1 and CE_L1_L2); their weights are
# config.loss.l1_weight / gate1_weight / gate2_weight (the released MODEL.LAMDA / GAMA / THETA).
def saliency_l1(saliency_final, reference_per_device_batch: int):
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
  ce = cross_entropy(logits, labels, loss_config.label_smoothing)
  l1 = loss_config.l1_weight * saliency_l1(aux['saliency_final'],
                                           loss_config.reference_per_device_batch)
  return ce + l1, {'cross_entropy': ce, 'weighted_saliency_l1': l1}


def _ce_l1_l2_loss(loss_config, logits, labels, aux) -> Tuple[jnp.ndarray, Terms]:
  """CE + lambda ||S_final||_1 + gamma MSE(P1, G1) + theta MSE(P2, G2) (reference "CE_L1_L2").

  Config fields: l1_weight (lambda), gate1_weight (gamma), gate2_weight (theta),
  reference_per_device_batch, label_smoothing.
  """
  _require(aux, ['saliency_final', 'P1', 'G1', 'P2', 'G2'], 'ce_l1_l2')
  total, terms = _ce_l1_loss(loss_config, logits, labels, aux)
  terms['weighted_gate1_mse'] = loss_config.gate1_weight * gate_mse(aux['P1'], aux['G1'])
  terms['weighted_gate2_mse'] = loss_config.gate2_weight * gate_mse(aux['P2'], aux['G2'])
  return total + terms['weighted_gate1_mse'] + terms['weighted_gate2_mse'], terms


def _s2dnet_loss(loss_config, logits, labels, aux) -> Tuple[jnp.ndarray, Terms]:
  """CE(DNet logits, smoothed) + weight * CE(SNet logits); no sampler regulariser.

  `logits` are the DNet logits (the model's main output), aux['snet_logits'] the SNet ones.
  Config fields: dnet_label_smoothing, snet_label_smoothing, snet_loss_weight (the reference's
  S2D.DNET_SMOOTH_ALPHA, SNET_SMOOTH_ALPHA, SNET_LOSS_WEIGHT).
  """
  if 'snet_logits' not in aux:
    raise ValueError("Loss 's2dnet' needs the model aux output 'snet_logits': use model 's2dnet'.")
  dnet = cross_entropy(logits, labels, loss_config.dnet_label_smoothing)
  snet = loss_config.snet_loss_weight * cross_entropy(aux['snet_logits'], labels,
                                                      loss_config.snet_label_smoothing)
  return dnet + snet, {'dnet_cross_entropy': dnet, 'weighted_snet_cross_entropy': snet}


LOSSES = {
    'cross_entropy': _cross_entropy_loss,
    'ce_l1': _ce_l1_loss,
    'ce_l1_l2': _ce_l1_l2_loss,
    's2dnet': _s2dnet_loss,
}
# The config.loss fields each loss reads (the recipe card shows these).
LOSS_FIELDS = {
    'cross_entropy': ('label_smoothing',),
    'ce_l1': ('label_smoothing', 'l1_weight', 'reference_per_device_batch'),
    'ce_l1_l2': ('label_smoothing', 'l1_weight', 'gate1_weight', 'gate2_weight',
                 'reference_per_device_batch'),
    's2dnet': ('dnet_label_smoothing', 'snet_label_smoothing', 'snet_loss_weight'),
}
# Losses that read auxiliary model outputs (the model is asked to return them).
LOSSES_NEEDING_AUX = frozenset({'ce_l1', 'ce_l1_l2', 's2dnet'})


def _check_name(name: str) -> None:
  if name not in LOSSES:
    raise errors.ConfigError(f'config.loss.name {name!r} is not one of {sorted(LOSSES)}.')


def needs_aux(loss_config) -> bool:
  """Whether the model must return its auxiliary tensors for this loss."""
  _check_name(loss_config.name)
  return loss_config.name in LOSSES_NEEDING_AUX


def compute_loss(loss_config, logits, labels, aux: Mapping[str, jnp.ndarray]):
  """Returns (total loss, {term name: value}) for `loss_config.name`."""
  _check_name(loss_config.name)
  return LOSSES[loss_config.name](loss_config, logits, labels, aux)
