"""Exact jaxpr rewrites for the primitives a target format cannot take as they are.

- ONNX (jax2onnx 0.13 + onnxruntime): 3D convolutions have no lowering, and 4D/5D window
  reductions become a MaxPool over every axis that onnxruntime refuses. `ONNX_RULES` turn them
  into sums of 2D convolutions over temporal taps and separable strided-slice maxima / sums.
- SavedModel (jax2tf): `lax.top_k` serializes as a StableHLO composite that TF 2.21's
  XlaCallModule cannot read; `SAVEDMODEL_RULES` compute it with a two-key sort instead.

A rule takes a jaxpr equation and returns an implementation of it (or None to keep it); the
evaluator below re-runs a traced function with the rules applied, inlining nested jits and
custom derivatives so every primitive is seen.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

Rule = Callable[[Any], Optional[Callable[..., Sequence[Any]]]]
_NESTED = {'pjit': 'jaxpr', 'jit': 'jaxpr', 'custom_jvp_call': 'call_jaxpr',
           'custom_vjp_call': 'call_jaxpr'}


def _read(env, var):
  return var.val if isinstance(var, jcore.Literal) else env[var]


def eval_jaxpr(jaxpr, consts, args, rules: Dict[str, Rule]):
  """Evaluates `jaxpr` on `args`, replacing the equations a rule in `rules` rewrites."""
  env = dict(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    values = [_read(env, v) for v in eqn.invars]
    name = eqn.primitive.name
    impl = rules[name](eqn) if name in rules else None
    if impl is not None:
      outs = impl(*values)
    elif name in _NESTED:
      sub = eqn.params[_NESTED[name]]
      outs = eval_jaxpr(sub.jaxpr, sub.consts, values, rules)
    else:
      outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for var, value in zip(eqn.outvars, outs):
      if not isinstance(var, jcore.DropVar):
        env[var] = value
  return [_read(env, v) for v in jaxpr.outvars]


@dataclasses.dataclass(frozen=True)
class Traced:
  """A function traced once at given (possibly symbolic) shapes: its closed jaxpr and the
  tree structure of its outputs."""
  closed: Any
  out_tree: Any

  def function(self, rules: Optional[Dict[str, Rule]] = None) -> Callable:
    """The traced function, re-evaluated with `rules` applied."""

    def evaluate(*args):
      outs = eval_jaxpr(self.closed.jaxpr, self.closed.consts, args, rules or {})
      return jax.tree.unflatten(self.out_tree, outs)

    return evaluate


def trace(fun: Callable, abstract_args: Sequence[Any]) -> Traced:
  closed, shapes = jax.make_jaxpr(fun, return_shape=True)(*abstract_args)
  return Traced(closed, jax.tree.structure(shapes))


def rewrite_primitives(fun: Callable, rules: Dict[str, Rule]) -> Callable:
  """`fun` with the primitives named in `rules` rewritten, traced at each call's shapes."""
  return lambda *args: trace(fun, args).function(rules)(*args)


def _strided_taps(x, axis: int, size: int, stride: int, dilation: int):
  """The `size` strided slices along `axis` a window of that size and stride reads."""
  out = (x.shape[axis] - dilation * (size - 1) - 1) // stride + 1
  return [jax.lax.slice_in_dim(x, tap * dilation, tap * dilation + stride * (out - 1) + 1,
                               stride, axis) for tap in range(size)]


def conv3d_as_2d(eqn) -> Optional[Callable]:
  """A 3D convolution as the sum over its temporal taps of 2D convolutions of strided frames."""
  params = eqn.params
  if (eqn.invars[0].aval.ndim != 5 or any(d != 1 for d in params['lhs_dilation'])
      or params['batch_group_count'] != 1):
    return None
  spec = params['dimension_numbers']
  to_nthwc = spec.lhs_spec[:1] + spec.lhs_spec[2:] + spec.lhs_spec[1:2]
  to_thwio = spec.rhs_spec[2:] + spec.rhs_spec[1:2] + spec.rhs_spec[:1]
  out_order = spec.out_spec[:1] + spec.out_spec[2:] + spec.out_spec[1:2]
  from_nthwc = tuple(out_order.index(i) for i in range(5))
  (pad_lo, pad_hi), pad_h, pad_w = params['padding']
  stride_t, stride_h, stride_w = params['window_strides']
  dilation_t, dilation_h, dilation_w = params['rhs_dilation']

  def impl(x, kernel):
    x = jax.lax.transpose(x, to_nthwc)
    kernel = jax.lax.transpose(kernel, to_thwio)
    if pad_lo or pad_hi:
      x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (pad_lo, pad_hi, 0)] + [(0, 0, 0)] * 3)
    total = None
    for tap, frames in enumerate(_strided_taps(x, 1, kernel.shape[0], stride_t, dilation_t)):
      batch, out_frames = frames.shape[:2]
      y = jax.lax.conv_general_dilated(
          frames.reshape((batch * out_frames,) + frames.shape[2:]), kernel[tap],
          (stride_h, stride_w), (pad_h, pad_w), rhs_dilation=(dilation_h, dilation_w),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          feature_group_count=params['feature_group_count'], precision=params['precision'],
          preferred_element_type=params['preferred_element_type'])
      y = y.reshape((batch, out_frames) + y.shape[1:])
      total = y if total is None else total + y
    return [jax.lax.transpose(total, from_nthwc)]

  return impl


def separable_window_reduction(combine: Callable, pad_value: Callable) -> Rule:
  """reduce_window_{max,sum} as elementwise `combine`s of strided slices, one axis at a time
  (exact for max; for sum only the order of additions changes)."""

  def rule(eqn) -> Optional[Callable]:
    params = eqn.params
    if any(d != 1 for d in params['base_dilation']):
      return None
    dtype = eqn.invars[0].aval.dtype
    windows = list(zip(params['window_dimensions'], params['window_strides'], params['padding'],
                       params['window_dilation']))

    def impl(x):
      for axis, (size, stride, (lo, hi), dilation) in enumerate(windows):
        if size == 1 and stride == 1 and lo == 0 and hi == 0:
          continue
        if lo or hi:
          widths = [(0, 0, 0)] * x.ndim
          widths[axis] = (lo, hi, 0)
          x = jax.lax.pad(x, jnp.asarray(pad_value(dtype), dtype), widths)
        taps = _strided_taps(x, axis, size, stride, dilation)
        x = taps[0]
        for tap in taps[1:]:
          x = combine(x, tap)
      return [x]

    return impl

  return rule


def _lowest(dtype):
  return -np.inf if jnp.issubdtype(dtype, jnp.floating) else np.iinfo(dtype).min


def top_k_by_sort(eqn) -> Callable:
  """lax.top_k as a sort by (value descending, index ascending): the same values, indices and
  order of ties."""
  k = eqn.params['k']
  axis = eqn.params.get('axis', -1)

  def impl(x):
    axis_ = axis % x.ndim
    last = x.ndim - 1
    x = jnp.moveaxis(x, axis_, last)
    index = jax.lax.broadcasted_iota(jnp.int32, x.shape, last)
    negated, order = jax.lax.sort((-x, index), dimension=last, num_keys=2)
    values = jax.lax.slice_in_dim(-negated, 0, k, axis=last)
    indices = jax.lax.slice_in_dim(order, 0, k, axis=last)
    return [jnp.moveaxis(values, last, axis_), jnp.moveaxis(indices, last, axis_)]

  return impl


ONNX_RULES: Dict[str, Rule] = {
    'conv_general_dilated': conv3d_as_2d,
    'reduce_window_max': separable_window_reduction(jax.lax.max, _lowest),
    'reduce_window_sum': separable_window_reduction(jax.lax.add, lambda dtype: 0),
}
SAVEDMODEL_RULES: Dict[str, Rule] = {'top_k': top_k_by_sort}
