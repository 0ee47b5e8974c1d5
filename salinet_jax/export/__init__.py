r"""Export a trained workdir for serving: StableHLO, a TF SavedModel and ONNX, with a parity
certificate (issue #15).

  python -m salinet_jax.export --workdir=DIR --output=OUT [--checkpoint=best|latest|PATH] \
      [--formats=stablehlo,savedmodel,onnx] [--batch=dynamic|N] [--video=clip.mp4 ...] \
      [--num_videos=8] [--split=NAME] [--overwrite] [--tolerance=1e-4] [--platforms=cpu,cuda] \
      [--benchmark=N]

The package, by concept:
  source.py       the checkpoint to export: config and class names from its metadata, the state
                  restored through engine.Engine.
  serving.py      the served function (uint8 views in; normalisation, model, softmax inside) and
                  export.json's input/output spec and views.
  rewrites.py     exact jaxpr rewrites for primitives a format cannot take (3D convolutions,
                  5D pooling, top_k).
  formats.py      writing and reloading each format (onnx_support.py: jax2onnx's workarounds).
  certificate.py  the parity clips and the comparison with the jitted model.
  exporter.py     export(): staging, certificate, export.json, all-or-nothing move into OUT.
  predictor.py    predict mode through an export (--config.predict.exported=OUT/FORMAT).
  __main__.py     the command line.
"""

import importlib

import data

data.quiet_tensorflow()  # before TensorFlow is imported, through any module of the package

# The package's names, by the module they live in, imported when first used (PEP 562):
# `python -m salinet_jax.export` imports this file before __main__.py, which guards its own
# seconds-long imports against a Ctrl-C.
_HOMES = {'ExportError': 'errors', 'ParityError': 'errors', 'AlreadyExported': 'errors',
          'export': 'exporter',
          'FORMATS': 'formats', 'ExportedModel': 'formats', 'load_exported': 'formats',
          'ExportedPredictor': 'predictor'}
__all__ = list(_HOMES)


def __getattr__(name: str):
  if name not in _HOMES:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  return getattr(importlib.import_module(f'{__name__}.{_HOMES[name]}'), name)
