"""The three formats: how each is written from the served function and run again from disk.

  stablehlo/model.jaxexport  `jax.export` artifact: `jax.export.deserialize(bytes).call(...)`.
  savedmodel/1/              TF SavedModel (jax2tf native serialization: the same StableHLO in
                             an XlaCallModule op), signature 'serving_default'; the version
                             folder is the layout TF Serving expects.
  onnx/model.onnx            ONNX (jax2onnx, see onnx_support.py) for onnxruntime.

StableHLO and SavedModel need only the core install; ONNX needs requirements-export.txt.
`load_exported(OUT/FORMAT)` gives any of them back as an `ExportedModel`.
"""

import importlib.util
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from salinet_jax.export import rewrites
from salinet_jax.export import serving
from salinet_jax.export.errors import ExportError

FORMATS = ('stablehlo', 'savedmodel', 'onnx')
EXPORT_JSON = 'export.json'
CLASSES_FILE = 'classes.txt'  # in each format's folder: the class names, one per line
STABLEHLO_FILE = 'model.jaxexport'
SAVEDMODEL_VERSION = '1'
ONNX_FILE = 'model.onnx'
# Import names of the packages each format needs beyond the core install.
FORMAT_PACKAGES = {'stablehlo': (), 'savedmodel': ('tensorflow',),
                   'onnx': ('jax2onnx', 'onnx', 'onnxruntime')}
ONNX_RUNTIME = 'onnxruntime CPUExecutionProvider'

Runner = Callable[[List[np.ndarray]], Dict[str, np.ndarray]]


def require_packages(formats: Sequence[str]) -> None:
  for fmt in formats:
    missing = [p for p in FORMAT_PACKAGES[fmt] if importlib.util.find_spec(p) is None]
    if missing:
      raise ExportError(f'Format {fmt} needs {", ".join(missing)}: '
                        'pip install -r requirements-export.txt')


def artifact(directory: str, fmt: str) -> str:
  """The file (or SavedModel folder) a format writes in its folder."""
  return os.path.join(directory, {'stablehlo': STABLEHLO_FILE, 'savedmodel': SAVEDMODEL_VERSION,
                                  'onnx': ONNX_FILE}[fmt])


# ----------------------------------------------------------------------------------- writing
def write_stablehlo(traced: rewrites.Traced, abstract, directory: str,
                    platforms: Sequence[str]) -> None:
  exported = jax.export.export(jax.jit(traced.function()), platforms=tuple(platforms))(*abstract)
  with open(artifact(directory, 'stablehlo'), 'wb') as f:
    f.write(exported.serialize())


def write_savedmodel(fn: Callable, specs: Sequence[serving.InputSpec], directory: str,
                     platforms: Sequence[str]) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  polymorphic = ['(batch, ...)'] * len(specs) if specs[0].shape[0] is None else None
  converted = jax2tf.convert(rewrites.rewrite_primitives(fn, rewrites.SAVEDMODEL_RULES),
                             polymorphic_shapes=polymorphic, with_gradient=False,
                             native_serialization_platforms=tuple(platforms))
  module = tf.Module()
  module.serve = tf.function(
      converted, autograph=False,
      input_signature=[tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs])
  tf.saved_model.save(module, artifact(directory, 'savedmodel'),
                      signatures={'serving_default': module.serve})


def write_onnx(traced: rewrites.Traced, abstract, specs: Sequence[serving.InputSpec],
               directory: str, output_names: Sequence[str], metadata: Dict[str, str]) -> None:
  import onnx  # pylint: disable=g-import-not-at-top
  from salinet_jax.export import onnx_support  # pylint: disable=g-import-not-at-top
  model = onnx_support.convert(traced.function(rewrites.ONNX_RULES), abstract,
                               [s.name for s in specs], output_names)
  # jax2onnx stamps some intermediate shapes wrongly (S2DNet: a Max after a folded reshape given
  # rank 5 for its rank-4 tensor), which onnx.checker and strict runtimes reject. Intermediate
  # shapes are optional in ONNX: dropped, every runtime infers them; the checker then proves
  # the graph valid, or the format fails here.
  del model.graph.value_info[:]
  onnx.checker.check_model(model, full_check=True)
  for key, value in metadata.items():
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
  onnx.save(model, artifact(directory, 'onnx'))


# ----------------------------------------------------------------------------------- running
def _stablehlo_runner(directory: str, names: Sequence[str]) -> Runner:
  del names
  with open(artifact(directory, 'stablehlo'), 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  call = jax.jit(exported.call)
  return lambda args: {k: np.asarray(v) for k, v in call(*args).items()}


def _savedmodel_runner(directory: str, names: Sequence[str]) -> Runner:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(artifact(directory, 'savedmodel'))
  signature = loaded.signatures['serving_default']

  def run(args):
    outputs = signature(**{name: tf.constant(a) for name, a in zip(names, args)})
    return {k: v.numpy() for k, v in outputs.items()}

  run.loaded = loaded  # the signature needs its SavedModel object alive
  return run


def _onnx_runner(directory: str, names: Sequence[str]) -> Runner:
  import onnxruntime  # pylint: disable=g-import-not-at-top
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  session = onnxruntime.InferenceSession(artifact(directory, 'onnx'), options,
                                         providers=['CPUExecutionProvider'])
  output_names = [o.name for o in session.get_outputs()]
  return lambda args: dict(zip(output_names, session.run(output_names, dict(zip(names, args)))))


_RUNNERS = {'stablehlo': _stablehlo_runner, 'savedmodel': _savedmodel_runner,
            'onnx': _onnx_runner}


def call_padded(run: Runner, batch: Optional[int], with_num_valid: bool, video: np.ndarray,
                num_valid: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
  """run([video[, num_valid]]) on all rows at once (batch None) or in chunks of exactly `batch`
  rows, the last one padded with black, all-valid clips whose outputs are dropped."""
  args = [video]
  if with_num_valid:
    if num_valid is None:
      num_valid = np.full((len(video),), video.shape[1], np.int32)
    args.append(np.asarray(num_valid, np.int32).reshape(len(video)))
  if batch is None:
    return {k: np.asarray(v) for k, v in run(args).items()}
  pad_rows = [np.zeros((batch,) + video.shape[1:], np.uint8),
              np.full((batch,), video.shape[1], np.int32)]
  chunks = []
  for start in range(0, len(video), batch):
    part = [a[start:start + batch] for a in args]
    real = len(part[0])
    part = [np.concatenate([p, pad[:batch - real]]) for p, pad in zip(part, pad_rows)]
    chunks.append({k: np.asarray(v)[:real] for k, v in run(part).items()})
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


class ExportedModel:
  """An export reloaded from disk: `model(video, num_valid=None) -> dict of numpy outputs`.

  `video` is uint8 (N, T, H, W, 3), one view per row; `num_valid` (N,) for models fed padded
  clips (all frames valid when omitted). Any N works: a fixed-batch export runs in padded chunks.
  """

  def __init__(self, fmt: str, directory: str, metadata: Dict[str, Any], run: Runner):
    self.format = fmt
    self.directory = directory
    self.metadata = metadata
    self.inputs = [serving.InputSpec.from_json(s) for s in metadata['inputs']]
    self.batch = self.inputs[0].shape[0]  # None: any batch
    self.classes = list(metadata['classes'])
    self._run = run

  @property
  def takes_num_valid(self) -> bool:
    return len(self.inputs) > 1

  def __call__(self, video: np.ndarray, num_valid: Optional[np.ndarray] = None
               ) -> Dict[str, np.ndarray]:
    video = np.asarray(video)
    expected = self.inputs[0].shape[1:]
    if video.dtype != np.uint8 or video.ndim != 5 or tuple(video.shape[1:]) != expected:
      raise ValueError(f'The {self.format} export takes uint8 video (N, '
                       f'{", ".join(map(str, expected))}), got {video.dtype} {video.shape}.')
    return call_padded(self._run, self.batch, self.takes_num_valid, video, num_valid)


def _format_dir(path: str) -> Tuple[str, str]:
  """(format, folder) of OUT/FORMAT, or of a file or SavedModel version inside it."""
  path = os.path.abspath(path)
  if os.path.isfile(path):
    path = os.path.dirname(path)
  if os.path.basename(path) == SAVEDMODEL_VERSION and os.path.basename(
      os.path.dirname(path)) == 'savedmodel':
    path = os.path.dirname(path)
  fmt = os.path.basename(path)
  if fmt not in FORMATS or not os.path.isdir(path):
    raise ExportError(f'{path} is not an exported format folder: expected OUT/FORMAT with FORMAT '
                      f'one of {",".join(FORMATS)} (written by python -m salinet_jax.export).')
  return fmt, path


def read_metadata(directory: str) -> Dict[str, Any]:
  """export.json of the export holding the format folder `directory`."""
  path = os.path.join(os.path.dirname(directory), EXPORT_JSON)
  if not os.path.isfile(path):
    raise ExportError(f'No {EXPORT_JSON} beside {directory}: not a complete export.')
  with open(path) as f:
    return json.load(f)


def load_exported(path: str) -> ExportedModel:
  """Reloads OUT/FORMAT (stablehlo | savedmodel | onnx) as an `ExportedModel`."""
  fmt, directory = _format_dir(path)
  metadata = read_metadata(directory)
  require_packages([fmt])
  names = [s['name'] for s in metadata['inputs']]
  return ExportedModel(fmt, directory, metadata, _RUNNERS[fmt](directory, names))
