"""Parameter counts and per-view FLOPs of any Flax model, without running it.

Convention (fvcore's, which the SaliNet paper and spec section 7 use): one multiply-accumulate
counts as one FLOP. Counted: convolutions (`conv_general_dilated`: output elements x input
channels per group x kernel volume) and matrix products (`dot_general`: dense layers and the
non-local attention einsums). Ignored by default: normalisation, activations, pooling, elementwise
ops. With `count_norm=True`, every BatchNorm adds 2 FLOPs per input element (fvcore's inference
count for an affine batch norm).

How: `jax.make_jaxpr` traces `model.apply` on abstract inputs (`jax.ShapeDtypeStruct`, no real
compute or memory) and every counted equation is attributed to a module through its name stack.
Flax runs each module method under `jax.named_scope(<module name>)`, so an equation's name stack
is its module path, e.g. 'SaliNetI3D/backbone/s3/pathway0_nonlocal1/bqc,bkc->bqk'. Equations in
nested jaxprs (jit, custom_jvp, scan, cond, ...) inherit their caller's path; a scan body counts
`length` times, a cond the most expensive branch, a while loop body once. BatchNorm inputs are seen
with `flax.linen.intercept_methods`.

Groups are the model's top-level submodules ('backbone', 'ssf', 'tsfp', 'fusion', 'head' for
SaliNet); work done directly in the root module is reported as 'other'.
"""

import collections
import math
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from clu import parameter_overview

from salinet_jax import models
from salinet_jax.models import layers

from salinet_jax.models import fast_conv

ROOT_GROUP = 'other'
NORM_FLOPS_PER_ELEMENT = 2
_TRANSFORM_WRAPPER = re.compile(r'^[A-Za-z_]\w*\((.*)\)$')


def conv_macs(lhs_shape, rhs_shape, out_shape, dimension_numbers) -> int:
  """MACs of one `conv_general_dilated`: out elements x (Cin / groups) x kernel volume."""
  rhs_spec = dimension_numbers.rhs_spec  # (out feature dim, in feature dim, *spatial dims)
  in_features = rhs_shape[rhs_spec[1]]
  kernel_volume = math.prod(rhs_shape[d] for d in rhs_spec[2:])
  return math.prod(out_shape) * in_features * kernel_volume


def dot_general_macs(lhs_shape, rhs_shape, dimension_numbers) -> int:
  """MACs of one `dot_general`: every lhs element meets every free rhs element once."""
  (_, rhs_contract), (_, rhs_batch) = dimension_numbers
  rhs_free = math.prod(size for d, size in enumerate(rhs_shape)
                       if d not in rhs_contract and d not in rhs_batch)
  return math.prod(lhs_shape) * rhs_free


def _eqn_macs(eqn) -> Tuple[Optional[str], int]:
  name = eqn.primitive.name
  if name == 'conv_general_dilated':
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    return 'conv', conv_macs(lhs, rhs, eqn.outvars[0].aval.shape, eqn.params['dimension_numbers'])
  if name == 'dot_general':
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    return 'dot_general', dot_general_macs(lhs, rhs, eqn.params['dimension_numbers'])
  return None, 0


def _clean_component(component: str) -> str:
  """'jvp(backbone)' -> 'backbone'; 'backbone.method' -> 'backbone'."""
  while True:
    match = _TRANSFORM_WRAPPER.match(component)
    if not match:
      break
    component = match.group(1)
  return component.split('.', 1)[0]


def _path_of(prefix: Tuple[str, ...], eqn) -> Tuple[str, ...]:
  stack = str(eqn.source_info.name_stack)
  parts = tuple(_clean_component(p) for p in stack.split('/') if p)
  return prefix + parts


def _walk(jaxpr, prefix: Tuple[str, ...], multiplier: int,
          out: Dict[Tuple[Tuple[str, ...], str], int]) -> None:
  """Adds MACs of every counted equation in `jaxpr` (recursively) to out[(path, kind)]."""
  for eqn in jaxpr.eqns:
    path = _path_of(prefix, eqn)
    kind, macs = _eqn_macs(eqn)
    if kind is not None:
      out[(path, kind)] += macs * multiplier
      continue
    name = eqn.primitive.name
    if name == 'cond':
      branch_counts = []
      for branch in eqn.params['branches']:
        counts = collections.Counter()
        _walk(branch.jaxpr, path, multiplier, counts)
        branch_counts.append(counts)
      out.update(max(branch_counts, key=lambda c: sum(c.values())))
      continue
    inner_multiplier = multiplier * (eqn.params['length'] if name == 'scan' else 1)
    for sub in jex.core.jaxprs_in_params(eqn.params):
      _walk(sub, path, inner_multiplier, out)


def count_macs(fn: Callable, *args, **kwargs) -> Dict[Tuple[Tuple[str, ...], str], int]:
  """{(name-stack path, 'conv'|'dot_general'): MACs} of `fn(*args, **kwargs)`, traced abstractly."""
  with nn.override_named_call(True), fast_conv.disabled():  # the textbook operations
    closed = jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)
  return jaxpr_macs(closed)


def jaxpr_macs(closed) -> Dict[Tuple[Tuple[str, ...], str], int]:
  """`count_macs` of a traced program (a ClosedJaxpr, e.g. a jitted step's `.trace(...).jaxpr`)."""
  counts = collections.Counter()
  _walk(closed.jaxpr, (), 1, counts)
  return dict(counts)


def _abstract_input(input_shape: Sequence[int], dtype) -> jax.ShapeDtypeStruct:
  shape = tuple(int(s) for s in input_shape)
  if len(shape) == 4:
    shape = (1,) + shape
  if len(shape) != 5:
    raise ValueError(f'input_shape must be (T, H, W, C) or (B, T, H, W, C), got {input_shape}.')
  return jax.ShapeDtypeStruct(shape, dtype)


def params_by_prefix(params, depth: int = 1) -> Dict[str, int]:
  """Parameter count per module path truncated to `depth` components ('a/b'), counted by
  clu.parameter_overview (as a Python int: clu returns numpy integers)."""
  groups = collections.defaultdict(dict)
  for path, leaf in flax.traverse_util.flatten_dict(params).items():
    groups['/'.join(str(p) for p in path[:depth])][path] = leaf
  return {prefix: int(parameter_overview.count_parameters(flax.traverse_util.unflatten_dict(tree)))
          for prefix, tree in groups.items()}


def _aggregate(entries, depth: int) -> Dict[str, float]:
  out = collections.Counter()
  for path, value in entries:
    out['/'.join(path[:depth]) if path else ROOT_GROUP] += value
  return dict(out)


def model_info(model: nn.Module, input_shape: Sequence[int], *, depth: int = 1,
               count_norm: bool = False, train: bool = False,
               input_dtype=jnp.float32) -> Dict[str, Any]:
  """Parameters and per-view GFLOPs (MACs) of `model` on one clip of `input_shape`.

  Args:
    model: a Flax module called as `model.apply(variables, x, train=...)`.
    input_shape: (T, H, W, C) for one view, or (B, T, H, W, C); FLOPs are reported per view.
    depth: module-path depth of the `*_by_module` breakdowns (1 = top-level groups).
    count_norm: also count BatchNorm at 2 FLOPs per element.
    train: trace the training forward (BN batch statistics, dropout) instead of inference.

  Returns a dict with 'params', 'params_by_group', 'params_by_module', 'gflops',
  'gflops_by_group', 'gflops_by_module', 'gflops_by_kind' ('conv', 'dot_general', 'norm') and
  'input_shape' (with batch).
  """
  x = _abstract_input(input_shape, input_dtype)
  variables = models.abstract_variables(model, x.shape)
  params = variables.get('params', {})
  root = model.name or type(model).__name__

  norm_inputs: List[Tuple[Tuple[str, ...], int]] = []

  def interceptor(next_fun, args, kwargs, context):
    is_norm = isinstance(context.module, (nn.BatchNorm, layers.BatchNorm)) and context.method_name == '__call__'
    if count_norm and is_norm:
      norm_inputs.append((tuple(context.module.path), int(np.prod(args[0].shape))))
    return next_fun(*args, **kwargs)

  def forward(variables, x):
    mutable = ['batch_stats'] if train else False
    rngs = {'dropout': jax.random.PRNGKey(0)} if train else None
    with nn.intercept_methods(interceptor):
      return model.apply(variables, x, train=train, mutable=mutable, rngs=rngs)

  macs = count_macs(forward, variables, x)
  batch = x.shape[0]
  entries = []  # (module path without the root, kind, FLOPs per view)
  for (path, kind), value in macs.items():
    if path and path[0] == root:
      path = path[1:]
    entries.append((path, kind, value / batch))
  for path, numel in norm_inputs:
    entries.append((path, 'norm', NORM_FLOPS_PER_ELEMENT * numel / batch))

  giga = 1e-9

  def by(depth_):
    return {k: v * giga for k, v in _aggregate([(p, f) for p, _, f in entries], depth_).items()}

  by_kind = collections.Counter()
  for _, kind, value in entries:
    by_kind[kind] += value * giga
  return {
      'input_shape': x.shape,
      'params': sum(params_by_prefix(params, 1).values()),
      'params_by_group': params_by_prefix(params, 1),
      'params_by_module': params_by_prefix(params, depth),
      'gflops': sum(f for _, _, f in entries) * giga,
      'gflops_by_group': by(1),
      'gflops_by_module': by(depth),
      'gflops_by_kind': dict(by_kind),
  }
