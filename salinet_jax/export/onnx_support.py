"""ONNX conversion through jax2onnx 0.13.0, the newest release that installs beside
orbax-checkpoint 0.12 (requirements-export.txt), and the two workarounds it needs.

- The function reaches jax2onnx already traced (rewrites.Traced): jax2onnx patches Flax
  functions for its own tracing (its `flax.linen.max_pool` takes keywords only and breaks the
  models), so only its JAX-primitive plugins are imported, which also saves ~10 s.
- Its pad and rem lowerings stamp shapes holding JAX symbolic dimensions into onnx_ir.Shape,
  which fails for batch-polymorphic models: while converting, onnx_ir turns them into named
  ONNX dimensions.
"""

import contextlib
import logging
import pathlib
from typing import Callable, Sequence

import jax

OPSET = 23


@contextlib.contextmanager
def _quiet(*names):
  loggers = [logging.getLogger(name) for name in names]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


@contextlib.contextmanager
def _symbolic_dims_as_names():
  from onnx_ir import _core  # pylint: disable=g-import-not-at-top
  original = _core._maybe_convert_to_symbolic_dim  # pylint: disable=protected-access

  def convert(dim):
    return _core.SymbolicDim(str(dim)) if jax.export.is_symbolic_dim(dim) else original(dim)

  _core._maybe_convert_to_symbolic_dim = convert  # pylint: disable=protected-access
  try:
    yield
  finally:
    _core._maybe_convert_to_symbolic_dim = original  # pylint: disable=protected-access


def _to_onnx():
  """jax2onnx's converter with only its JAX-primitive plugins registered (all of them where
  this jax2onnx lacks the internals used)."""
  from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top
  from jax2onnx.plugins import plugin_system  # pylint: disable=g-import-not-at-top
  if (hasattr(plugin_system, '_import_tree')
      and not getattr(plugin_system, '_already_imported_plugins', True)):
    root = pathlib.Path(plugin_system.__file__).parent / 'jax'
    plugin_system._import_tree(root, 'jax2onnx.plugins.jax')  # pylint: disable=protected-access
    plugin_system._already_imported_plugins = True  # pylint: disable=protected-access
  return to_onnx


def convert(fn: Callable, abstract, input_names: Sequence[str], output_names: Sequence[str]):
  """The onnx.ModelProto of `fn` (a function of primitives) at the abstract inputs."""
  with _quiet('jax2onnx', 'onnx_ir'):
    to_onnx = _to_onnx()
    with _symbolic_dims_as_names():
      return to_onnx(lambda *args: fn(*args), abstract, model_name='salinet_jax', opset=OPSET,
                     input_names=list(input_names), output_names=list(output_names))
