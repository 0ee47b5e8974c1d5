"""Reference SaliNet checkpoints -> SaliNetI3D: side layers, bn_one, TSFP, fusion, whole model.

The PyTorch side (reference_torch.SaliNetModules) computes the maps literally as the reference:
shared `bn_one` on each side layer, TSFP_2 on the interleaved [P1_0, S2_0, P1_1, ...] sequence
with temporal stride 2, the interleaved average pool and the time-as-channels fusion; the Flax
side uses its closed form. Float64 must agree to 1e-12, float32 within the reference's own error.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_torch as ref
from salinet_jax import convert
from salinet_jax.convert import layout
from salinet_jax.convert import salinet as salinet_map
from salinet_jax.models import salinet

torch = ref.torch
F64_TOL = 1e-12
TINY = dict(width=4, stage_blocks=(1, 2, 2, 1), nonlocal_blocks=((), (1,), (1,), ()))
MAPS = ('S1', 'S2', 'S3', 'P1', 'G1', 'P2', 'G2', 'P3', 'saliency_final')


class SalientModules(nn.Module):
  """Just the side modules, named 'ssf', 'tsfp', 'fusion' as inside SaliNetI3D."""
  shared_bn: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f1, f2, f3, f4):
    _, aux = salinet.apply_salient_modules([f1, f2, f3, f4], False, use_tsfp=True,
                                           shared_saliency_bn=self.shared_bn, dtype=self.dtype,
                                           conv_impl='auto')
    return aux


def flax_maps(aux):
  """NTHWC maps -> NCTHW numpy like the reference's."""
  return {k: np.moveaxis(np.asarray(aux[k], np.float64), -1, 1) for k in MAPS}


def convert_for(module, inputs, state_dict, dtype):
  template = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
  variables, report = convert.convert('salinet', state_dict, template, 'salinet_i3d',
                                      dtype=dtype)
  return variables, report


def with_live_maps(model):
  """`model` with every saliency map depending on its input. Random weights leave the ReLU
  inside the mask fusion closed on the sigmoid maps (S_final 0: the logits are the classifier's
  bias), the ReLU before each side layer's map closed on the whole model's features (S1, S3
  constant), and the TSFP gates' sigmoids at 0.5 +- 1e-4 (PyTorch's init shrinks the signal at
  each of their seven convolutions): a wrong gate passed. Positive fusion weights, side-map
  weights mostly positive and gate weights x3 open them."""
  with torch.no_grad():
    for conv in (model.fusion_temp_mask.fusion_1x1x1_1, model.fusion_temp_mask.fusion_1x1x1_2):
      conv.weight.abs_()
    for k in (1, 2, 3):
      weight = getattr(model, f'sidelayer{k}').side_layer_3x3x3_conv5.weight
      weight.copy_(weight.abs() - 0.3 * weight.abs().mean())
    for tsfp in (model.TSPF_layer_1, model.TSPF_layer_2):
      for n in range(1, 8):
        getattr(tsfp, f'x_edge_layer{n}').weight.mul_(3.0)
  return model


def assert_live(maps):
  """The checks `with_live_maps` makes possible: none of the maps compared is constant."""
  assert np.min(maps['saliency_final']) > 0.01, 'the mask is closed: S_final is 0'
  for key, least in (('S1', 1e-3), ('S2', 1e-3), ('S3', 1e-3), ('G1', 1e-2), ('G2', 1e-2)):
    assert np.std(maps[key]) > least, f'{key} is (nearly) constant: std {np.std(maps[key]):.2g}'


@pytest.mark.parametrize('shared_bn', [True, False])
def test_side_modules_match_reference_maps(shared_bn):
  torch.manual_seed(0)
  torch_modules = with_live_maps(ref.randomise(ref.SaliNetModules((16, 32, 64), frames=4)))
  rng = np.random.default_rng(0)
  feats = [rng.standard_normal((1, 4, s, s, c)) for s, c in ((16, 16), (8, 32), (4, 64), (2, 8))]
  out = {}
  with torch.no_grad():
    for tag, tdtype in (('t32', np.float32), ('t64', np.float64)):
      m = torch_modules.float() if tag == 't32' else torch_modules.double()
      _, aux = m.saliency(*[ref.to_ncthw(f.astype(tdtype)) for f in feats[:3]])
      out[tag] = {k: v.numpy() for k, v in aux.items()}
  state_dict = ref.state_dict_numpy(torch_modules)
  for tag, dtype in (('j64', jnp.float64), ('j32', jnp.float32)):
    with jax.enable_x64(tag == 'j64'):
      module = SalientModules(shared_bn=shared_bn, dtype=dtype)
      inputs = [jnp.asarray(f, dtype) for f in feats]
      variables, report = convert_for(module, inputs, state_dict,
                                      np.float64 if tag == 'j64' else np.float32)
      assert report.ok, report.summary()
      out[tag] = flax_maps(module.apply(variables, *inputs))
  assert_live(out['t64'])
  if not shared_bn:
    # Each separate BN starts as the shared one; nothing else of the checkpoint is left over.
    assert not report.unexpected
  for key in MAPS:
    err = ref.max_abs(out['j64'][key], out['t64'][key])
    assert err <= F64_TOL, f'{key}: float64 max abs difference {err:.3g}'
    ref.assert_f32_parity(out['j32'][key], out['t32'][key], out['t64'][key], key)


def test_name_map_covers_reference_module_names():
  cases = {
      'ssf/ssf2/unit1/spatial': 'sidelayer2.side_layer_3x3x3_conv_S_1',
      'ssf/ssf3/unit2/expand': 'sidelayer3.side_layer_3x3x3_conv4',
      'ssf/ssf1/to_map': 'sidelayer1.side_layer_3x3x3_conv5',
      'ssf/shared_bn': 'bn_one',
      'ssf/ssf2/bn': 'bn_one',
      'tsfp/tsfp2/gate6': 'TSPF_layer_2.x_edge_layer6',
      'fusion/conv1': 'fusion_temp_mask.fusion_1x1x1_1',
      'head/fc': 'fc',
      'backbone/s4/pathway0_nonlocal5/conv_theta': 's4.pathway0_nonlocal5.conv_theta',
  }
  for flax_path, torch_name in cases.items():
    assert layout.torch_module_name(flax_path, salinet_map.name_map()) == torch_name


def test_whole_salinet_parity_and_complete_report():
  torch.manual_seed(0)
  model = with_live_maps(ref.randomise(ref.SaliNetReference(num_classes=5, **TINY)))
  x = np.random.default_rng(1).standard_normal((1, 8, 64, 64, 3))
  out = {}
  with torch.no_grad():
    for tag, dt in (('t32', np.float32), ('t64', np.float64)):
      m = model.float() if dt == np.float32 else model.double()
      logits, aux = m(ref.to_ncthw(x.astype(dt)), return_aux=True)
      out[tag] = dict({k: v.numpy() for k, v in aux.items()}, logits=logits.numpy())
  state_dict = ref.state_dict_numpy(model)
  for tag, dtype in (('j64', jnp.float64), ('j32', jnp.float32)):
    with jax.enable_x64(tag == 'j64'):
      flax_model = salinet.SaliNetI3D(5, dtype=dtype, **TINY)
      template = convert.model_template(flax_model, x.shape)
      variables, report = convert.convert('salinet', state_dict, template, 'salinet_i3d',
                                          dtype=np.float64 if tag == 'j64' else np.float32)
      assert not report.missing and not report.unexpected and not report.mis_shaped
      assert report.converted + len(report.ignored) == len(state_dict)
      logits, aux = flax_model.apply(variables, jnp.asarray(x, dtype), train=False,
                                     return_aux=True)
      out[tag] = dict(flax_maps(aux), logits=np.asarray(logits, np.float64))
  assert_live(out['t64'])
  for key in MAPS + ('logits',):
    err = ref.max_abs(out['j64'][key], out['t64'][key])
    assert err <= F64_TOL, f'{key}: float64 max abs difference {err:.3g}'
    ref.assert_f32_parity(out['j32'][key], out['t32'][key], out['t64'][key], key)


def test_a_training_step_s_gradients_and_statistics_match_pytorch_autograd():
  """Train mode, float64: the logits and maps with batch statistics, the gradient of every
  parameter through the whole model (BatchNorm's batch statistics, the shared bn_one, the
  saliency mask, the project's convolution VJPs) and the running statistics after the step
  equal PyTorch autograd through the reference modules. The eval-mode parity above leaves all
  of these unchecked. The torch gradients reach the Flax layout through the weight converter."""
  torch.manual_seed(0)
  model = with_live_maps(ref.randomise(ref.SaliNetReference(num_classes=5, **TINY)))
  model = model.double().train()
  model.dropout.p = 0.0
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 8, 64, 64, 3))
  labels = np.array([3, 1])
  # Copies: the arrays share memory with the buffers the forward pass updates in place.
  state_dict = {name: value.copy() for name, value in ref.state_dict_numpy(model).items()}

  def loss_of(logits, aux, log_softmax, mean):
    chosen = log_softmax(logits)[np.arange(2), labels]
    # Any smooth function of the maps carries their gradients; the losses' own formulas are
    # tested by hand in test_salinet_losses.py.
    return (-mean(chosen) + 0.3 * mean(abs(aux['saliency_final']))
            + 0.5 * mean((aux['P1'] - aux['G1']) ** 2) + 0.7 * mean((aux['P2'] - aux['G2']) ** 2))

  logits, aux = model(ref.to_ncthw(x), return_aux=True)
  assert_live({k: v.detach().numpy() for k, v in aux.items()})
  torch_loss = loss_of(logits, aux, lambda v: torch.log_softmax(v, -1), torch.mean)
  torch_loss.backward()
  torch_logits = logits.detach().numpy()
  # The gradients as a state dict (buffers: the running statistics after the step), in Flax's
  # layout through the converter.
  torch_grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
  torch_after = dict(ref.state_dict_numpy(model), **torch_grads)

  with jax.enable_x64(True):
    flax_model = salinet.SaliNetI3D(5, dtype=jnp.float64, dropout_rate=0.0, **TINY)
    template = convert.model_template(flax_model, x.shape)
    variables, _ = convert.convert('salinet', state_dict, template, 'salinet_i3d',
                                   dtype=np.float64)
    expected, _ = convert.convert('salinet', torch_after, template, 'salinet_i3d',
                                  dtype=np.float64)

    def loss(params):
      (logits, aux), updated = flax_model.apply(
          {'params': params, 'batch_stats': variables['batch_stats']}, jnp.asarray(x),
          train=True, return_aux=True, mutable=['batch_stats'])
      aux = {k: jnp.moveaxis(v, -1, 1) for k, v in aux.items() if k in MAPS}
      value = loss_of(logits, aux, lambda v: jax.nn.log_softmax(v, -1), jnp.mean)
      return value, (logits, updated['batch_stats'])

    (value, (logits, stats)), grads = jax.value_and_grad(loss, has_aux=True)(
        variables['params'])
  torch_loss = float(torch_loss.detach())
  assert abs(float(value) - torch_loss) <= 1e-9 * abs(torch_loss)
  np.testing.assert_allclose(np.asarray(logits), torch_logits, rtol=1e-9, atol=1e-9)
  ref.assert_training_step_parity(jax.device_get(grads), jax.device_get(stats), expected)
