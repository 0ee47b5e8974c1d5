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

import data

data.quiet_tensorflow()  # `python -m salinet_jax.export` imports TensorFlow through here

# pylint: disable=g-import-not-at-top,wrong-import-position
from salinet_jax.export.errors import ExportError
from salinet_jax.export.errors import ParityError
from salinet_jax.export.exporter import export
from salinet_jax.export.formats import FORMATS
from salinet_jax.export.formats import ExportedModel
from salinet_jax.export.formats import load_exported
from salinet_jax.export.predictor import ExportedPredictor

__all__ = ['ExportError', 'ParityError', 'export', 'FORMATS', 'ExportedModel', 'load_exported',
           'ExportedPredictor']
