"""Reading PyTorch and Caffe2 checkpoint files into {name: numpy array}.

PyTorch (`torch.load`, which needs torch installed; CPU is enough): the state dict is found under
'model_state' (PySlowFast), 'state_dict' (TSM and most training scripts) or 'model', or the file
is a bare state dict. A leading 'module.' (DataParallel / DistributedDataParallel) is removed.
Files are opened with `weights_only=True` (no code runs while unpickling); a checkpoint that
pickles other Python objects needs `trust_pickle=True`, which should only be used on files from a
trusted source.

Caffe2 (`.pkl`, the PySlowFast model zoo's "caffe2" checkpoints): a pickled {'blobs': {name:
ndarray}}. It is read with an unpickler that only accepts NumPy arrays and plain containers.
"""

import io
import os
import pickle
import re
import struct
from typing import Any, Dict, Mapping

import numpy as np
from absl import logging

from salinet_jax import errors

STATE_DICT_KEYS = ('model_state', 'state_dict', 'model')
DATA_PARALLEL_PREFIX = 'module.'


def import_torch():
  """torch, or a ConversionError that says how to get it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.ConversionError('Reading PyTorch checkpoints needs PyTorch: pip install torch '
                                 '(the CPU build is enough).') from e
  return torch


def to_numpy(value: Any) -> np.ndarray:
  """A torch tensor (any device, with or without grad) or array-like -> numpy array."""
  if hasattr(value, 'detach'):
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def find_state_dict(checkpoint: Any, path: str = '') -> Mapping[str, Any]:
  """The state dict inside a loaded checkpoint object (of `path`, for messages): a whole model
  saved with torch.save(model) gives its state_dict(). Where the file holds other weight sets
  beside the one taken (an EMA copy, a teacher), they are named in a warning."""
  where = f'{path}: ' if path else ''
  if not isinstance(checkpoint, Mapping) and callable(getattr(checkpoint, 'state_dict', None)):
    logging.warning('%sa whole %s object was saved; converting its state_dict().', where,
                    type(checkpoint).__name__)
    checkpoint = checkpoint.state_dict()
  if not isinstance(checkpoint, Mapping):
    raise errors.ConversionError(
        f'{where}expected a dict-like checkpoint, got {type(checkpoint).__name__}.')
  for key in STATE_DICT_KEYS:
    if key in checkpoint and isinstance(checkpoint[key], Mapping):
      others = [other for other, value in checkpoint.items() if other != key
                and isinstance(value, Mapping) and value
                and all(hasattr(v, 'shape') for v in value.values())]
      if others:
        logging.warning('%sconverting the weights under %r; the file also holds %s, left out.',
                        where, key, ', '.join(repr(other) for other in others))
      return checkpoint[key]
  values = list(checkpoint.values())
  if (any(hasattr(v, 'shape') for v in values)  # tensors, maybe beside a counter or two
      and all(hasattr(v, 'shape') or isinstance(v, (int, float)) for v in values)):
    return checkpoint
  raise errors.ConversionError(
      f'{where}no state dict found: the checkpoint has keys {sorted(checkpoint)[:10]}; expected '
      f'one of {STATE_DICT_KEYS} or a bare state dict.')


def strip_data_parallel(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """Removes one leading 'module.' from the keys of a DataParallel model's tensors, when all of
  them have it. Entries beside them keep their names: a plain number (a counter such as
  'num_updates') is no tensor and is not converted; a 0-d tensor is reported unexpected."""
  tensors = [k for k, v in state_dict.items() if getattr(v, 'ndim', 0) > 0]
  if tensors and all(k.startswith(DATA_PARALLEL_PREFIX) for k in tensors):
    return {k[len(DATA_PARALLEL_PREFIX):] if k.startswith(DATA_PARALLEL_PREFIX) else k: v
            for k, v in state_dict.items()}
  return dict(state_dict)


def numpy_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Tensors -> numpy arrays; non-tensor entries (rare: extra_state) are dropped."""
  out = {}
  for key, value in state_dict.items():
    if hasattr(value, 'shape'):
      out[str(key)] = to_numpy(value)
  return out


def _require_file(path: str) -> None:
  if not os.path.isfile(path):
    raise errors.ConversionError(f'Checkpoint {path} does not exist or is not a file.')


def _first_line(error: Exception) -> str:
  """The first line of a reader's error (torch's go on with advice about its own internals)."""
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


# What torch's weights-only unpickler says about a pickled object it refuses (torch 2.6+).
_REFUSED_GLOBAL = re.compile(r'GLOBAL (\S+) was not an allowed global')
_WEIGHTS_UNPICKLER_REASON = re.compile(r'WeightsUnpickler error:\s*(\S[^\n]*)')


def load_torch_checkpoint(path: str, trust_pickle: bool = False) -> Dict[str, np.ndarray]:
  """The state dict of a PyTorch checkpoint file as {key: numpy array}.

  Without `trust_pickle`, torch loads tensors and plain containers only; a file that pickles
  other objects is refused with the hint to trust it, any other unreadable file (damaged, not a
  checkpoint) is named with torch's reason.
  """
  torch = import_torch()
  _require_file(path)
  try:
    checkpoint = torch.load(path, map_location='cpu', weights_only=not trust_pickle)
  except pickle.UnpicklingError as e:
    refused = _REFUSED_GLOBAL.search(str(e))
    if refused and not trust_pickle:
      raise errors.ConversionError(
          f'{path} pickles Python objects besides tensors ({refused.group(1)}), so it cannot be '
          'opened safely. If you trust its source, pass --trust_pickle (loads it with '
          'weights_only=False).') from e
    reason = _WEIGHTS_UNPICKLER_REASON.search(str(e))
    raise errors.ConversionError(
        f'{path} could not be read as a PyTorch checkpoint: '
        f'{reason.group(1) if reason else _first_line(e)}') from e
  except (ModuleNotFoundError, AttributeError) as e:  # a pickled object whose class is not here
    raise errors.ConversionError(
        f'{path} pickles an object whose class cannot be imported here ({_first_line(e)}): save '
        'its weights instead, torch.save(model.state_dict(), path), and convert that.') from e
  except (RuntimeError, EOFError, OSError, struct.error) as e:  # damaged or not a checkpoint
    raise errors.ConversionError(
        f'{path} could not be read as a PyTorch checkpoint: {_first_line(e)}') from e
  return numpy_state_dict(strip_data_parallel(find_state_dict(checkpoint, path)))


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles NumPy arrays, dtypes and builtin containers, and refuses anything else."""

  ALLOWED = {
      ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
      ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
      ('numpy', 'ndarray'), ('numpy', 'dtype'), ('collections', 'OrderedDict'),
      ('builtins', 'bytes'), ('_codecs', 'encode'),
  }

  def __init__(self, file, path: str):
    super().__init__(file, encoding='latin1')
    self.path = path

  def find_class(self, module, name):
    if (module, name) in self.ALLOWED:
      return super().find_class(module, name)
    raise errors.ConversionError(f'Refusing to unpickle {module}.{name} from {self.path} (a Caffe2 '
                                 '.pkl holds only arrays).')


def load_caffe2_blobs(path: str) -> Dict[str, np.ndarray]:
  """The blobs of a Caffe2 .pkl checkpoint ({'blobs': {...}} or a bare dict of arrays)."""
  _require_file(path)
  try:
    with open(path, 'rb') as f:
      data = _NumpyOnlyUnpickler(io.BufferedReader(f), path).load()
  except (pickle.UnpicklingError, EOFError, OSError) as e:
    raise errors.ConversionError(
        f'{path} could not be read as a Caffe2 .pkl: {_first_line(e)}') from e
  blobs = data.get('blobs', data) if isinstance(data, Mapping) else None
  if not isinstance(blobs, Mapping):
    raise errors.ConversionError(f'{path} is not a Caffe2 checkpoint (no blobs dict).')
  return {str(k): np.asarray(v) for k, v in blobs.items() if hasattr(v, 'shape')}
