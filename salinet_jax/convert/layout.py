"""PyTorch -> Flax tensor layouts, done once for every source, driven by an explicit name map.

A *name map* is an ordered list of `(pattern, replacement)` rules over Flax **module** paths
('backbone/s2/pathway0_res0/branch2/a_bn'). The first rule whose pattern matches the whole path
gives the PyTorch module name ('s2.pathway0_res0.branch2.a_bn'): `replacement` is a `re` template
(`\\1` ...) or a callable taking the match. A module no rule matches has no PyTorch counterpart. The
leaf then picks the tensor inside that module and its layout:

    Flax (collection, leaf)      PyTorch suffix     layout
    params       kernel          .weight            Conv{1,2,3}d (O, I/g, *k) -> (*k, I/g, O)
                                                    Linear (O, I) -> (I, O)
    params       bias            .bias              as is
    params       scale           .weight            BatchNorm gamma, as is
    params       bias (of a BN)  .bias              BatchNorm beta, as is
    batch_stats  mean            .running_mean      as is
    batch_stats  var             .running_var       as is (see below)

`num_batches_tracked` has no Flax counterpart and is skipped. BatchNorm conventions: Flax momentum
m is PyTorch momentum 1 - m (the models use 0.9 == PyTorch 0.1) and both use eps inside the square
root, so only the model's hyper-parameters have to agree, not the tensors. PyTorch's running_var is
the running average of *unbiased* batch variances, as this project's BatchNorm keeps it
(models/layers.py), so copying it is exact for evaluation and fine-tuning continues the same
average.

Conversion is checked against a *template*: the Flax variables the target model has (shapes from
`jax.eval_shape` of its `init`). Every template leaf is either converted, excluded (by regex), or
reported missing; every PyTorch tensor is either consumed or reported unexpected; a converted
tensor whose shape differs from the template's is reported mis-shaped.

Inflation (2D -> 3D, PySlowFast's CHECKPOINT_INFLATE): when the template wants a (kT, kH, kW, I, O)
kernel and the source holds a 2D (O, I, kH, kW) kernel or a 3D one with temporal size 1, the
kernel is either repeated kT times and divided by kT ('repeat', I3D: a static clip gives the 2D
response) or put on the centre tap with zeros elsewhere ('centre').
"""

import dataclasses
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

Replacement = Union[str, Callable[[re.Match], str]]
NameMap = Sequence[Tuple[str, Replacement]]

# (collection, Flax leaf name) -> PyTorch parameter/buffer name inside the module.
TORCH_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
IGNORED_TORCH_SUFFIXES = ('num_batches_tracked',)
INFLATE_MODES = ('repeat', 'centre')
COLLECTIONS = ('params', 'batch_stats')


# ----------------------------------------------------------------------------------------------
# Tensor layouts.
# ----------------------------------------------------------------------------------------------


def torch_to_flax_kernel(weight: np.ndarray) -> np.ndarray:
  """Conv (O, I, *k) -> (*k, I, O) (OIDHW -> DHWIO, OIHW -> HWIO); Linear (O, I) -> (I, O)."""
  weight = np.asarray(weight)
  if weight.ndim < 2:
    raise ValueError(f'A kernel needs at least 2 dimensions, got shape {weight.shape}.')
  if weight.ndim == 2:
    return weight.T
  return np.transpose(weight, tuple(range(2, weight.ndim)) + (1, 0))


def flax_to_torch_kernel(kernel: np.ndarray) -> np.ndarray:
  """Inverse of `torch_to_flax_kernel`."""
  kernel = np.asarray(kernel)
  if kernel.ndim < 2:
    raise ValueError(f'A kernel needs at least 2 dimensions, got shape {kernel.shape}.')
  if kernel.ndim == 2:
    return kernel.T
  spatial = kernel.ndim - 2
  return np.transpose(kernel, (kernel.ndim - 1, kernel.ndim - 2) + tuple(range(spatial)))


def inflate_kernel(kernel: np.ndarray, frames: int, mode: str = 'repeat') -> np.ndarray:
  """A Flax 2D kernel (kH, kW, I, O), or 3D with kT = 1, -> (frames, kH, kW, I, O).

  'repeat' copies it to every temporal tap and divides by `frames` (a clip of identical frames
  then gives the 2D response); 'centre' puts it on tap frames // 2 and zeros the others.
  """
  kernel = np.asarray(kernel)
  if kernel.ndim == 5:
    if kernel.shape[0] != 1:
      raise ValueError(f'Only kernels with temporal size 1 inflate, got {kernel.shape}.')
    kernel = kernel[0]
  if kernel.ndim != 4:
    raise ValueError(f'Expected a (kH, kW, I, O) kernel to inflate, got {kernel.shape}.')
  if mode == 'repeat':
    return np.repeat(kernel[None], frames, axis=0) / frames
  if mode == 'centre':
    out = np.zeros((frames,) + kernel.shape, kernel.dtype)
    out[frames // 2] = kernel
    return out
  raise ValueError(f'inflate mode must be one of {INFLATE_MODES}, got {mode!r}.')


# ----------------------------------------------------------------------------------------------
# Name maps.
# ----------------------------------------------------------------------------------------------


def torch_module_name(module_path: str, name_map: NameMap) -> Optional[str]:
  """The PyTorch module name of a Flax module path under `name_map` (None: no rule matches)."""
  for pattern, replacement in name_map:
    match = re.fullmatch(pattern, module_path)
    if match:
      return replacement(match) if callable(replacement) else match.expand(replacement)
  return None


def dotted(path: str) -> str:
  """'s2/pathway0_res0/branch1' -> 's2.pathway0_res0.branch1' (identical module names)."""
  return path.replace('/', '.')


def torch_key(collection: str, path: Tuple[str, ...], name_map: NameMap) -> Optional[str]:
  """PyTorch state-dict key of the Flax variable `collection`/`path`, or None if unmapped."""
  leaf = TORCH_LEAF_NAMES.get((collection, path[-1]))
  if leaf is None:
    return None
  module = torch_module_name('/'.join(path[:-1]), name_map)
  if module is None:
    return None
  return f'{module}.{leaf}' if module else leaf


# ----------------------------------------------------------------------------------------------
# Trees.
# ----------------------------------------------------------------------------------------------


def flatten(tree: Mapping[str, Any], prefix: Tuple[str, ...] = ()) -> Dict[Tuple[str, ...], Any]:
  """Nested dicts -> {path tuple: leaf}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, prefix + (str(key),)))
    else:
      flat[prefix + (str(key),)] = value
  return flat


def unflatten(flat: Mapping[Tuple[str, ...], Any]) -> Dict[str, Any]:
  """{path tuple: leaf} -> nested dicts."""
  tree: Dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def path_str(path: Tuple[str, ...]) -> str:
  return '/'.join(path)


# ----------------------------------------------------------------------------------------------
# Conversion.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MatchReport:
  """Which tensors of a model and a checkpoint did not match (converting or loading)."""
  missing: List[str] = dataclasses.field(default_factory=list)  # in the model, not the source
  unexpected: List[str] = dataclasses.field(default_factory=list)  # in the source, not the model
  mis_shaped: List[str] = dataclasses.field(default_factory=list)  # 'path: got (..) want (..)'
  excluded: List[str] = dataclasses.field(default_factory=list)  # left out on purpose

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.mis_shaped)

  def to_dict(self) -> Dict[str, Any]:
    out = dataclasses.asdict(self)
    out['ok'] = self.ok
    return out

  def problem_lines(self, limit: int, missing_title: str, unexpected_title: str) -> List[str]:
    """Indented listing of the missing, unexpected and mis-shaped tensors (`limit` each)."""
    lines = []
    for title, items in ((missing_title, self.missing), (unexpected_title, self.unexpected),
                         ('mis-shaped', self.mis_shaped)):
      if items:
        lines.append(f'  {title}:')
        lines.extend(f'    {item}' for item in items[:limit])
        if len(items) > limit:
          lines.append(f'    ... and {len(items) - limit} more')
    return lines


@dataclasses.dataclass
class ConversionReport(MatchReport):
  """What a conversion did. Paths are Flax paths without the collection ('head/fc/kernel')."""
  converted: int = 0
  inflated: List[str] = dataclasses.field(default_factory=list)
  # Those of `inflated` that were 2D kernels in the checkpoint (not 3D ones with kT = 1): weights
  # of an image network, trained on other pixels than a video network's.
  inflated_from_2d: List[str] = dataclasses.field(default_factory=list)
  ignored: List[str] = dataclasses.field(default_factory=list)  # num_batches_tracked etc.

  def summary(self, limit: int = 20) -> str:
    header = (f'converted {self.converted} tensors; missing {len(self.missing)}, unexpected '
              f'{len(self.unexpected)}, mis-shaped {len(self.mis_shaped)}, excluded '
              f'{len(self.excluded)}, inflated {len(self.inflated)}, ignored {len(self.ignored)}')
    return '\n'.join([header] + self.problem_lines(
        limit, 'missing (in the model, not in the checkpoint)',
        'unexpected (in the checkpoint, not in the model)'))


def _shape(leaf: Any) -> Tuple[int, ...]:
  return tuple(int(d) for d in leaf.shape)


def convert_state_dict(state_dict: Mapping[str, np.ndarray], template: Mapping[str, Any],
                       name_map: NameMap, *, exclude: str = '', inflate: Optional[str] = None,
                       dtype: Any = None, extra_ignored: Iterable[str] = ()
                       ) -> Tuple[Dict[str, Any], ConversionReport]:
  """Converts a PyTorch state dict into Flax variables shaped like `template`.

  Args:
    state_dict: PyTorch key -> array (numpy or torch tensors already moved to numpy).
    template: {'params': tree, 'batch_stats': tree} whose leaves have `.shape` (arrays or
      `jax.ShapeDtypeStruct`s): the variables of the target model.
    name_map: rules from Flax module paths to PyTorch module names (see the module docstring).
    exclude: regex (re.search) over Flax paths without collection; matching leaves are neither
      converted nor reported missing, and the PyTorch tensors they map to count as used. It
      is also searched in the names of checkpoint tensors the model has no place for: those
      it matches are left out as excluded ('checkpoint:<name>'), not reported unexpected (e.g.
      the non-local blocks of a checkpoint converted for a model without them).
    inflate: None, 'repeat' or 'centre': how a 2D (or kT = 1) kernel fills a 3D template kernel.
    dtype: output dtype of floating tensors (None keeps the checkpoint's).
    extra_ignored: PyTorch keys to skip silently (buffers without a Flax counterpart).

  Returns:
    ({'params': tree, 'batch_stats': tree} of numpy arrays, ConversionReport). Tensors are
    converted even when mis-shaped (the report says so); missing leaves are simply absent.
  """
  if inflate is not None and inflate not in INFLATE_MODES:
    raise ValueError(f'inflate must be None or one of {INFLATE_MODES}, got {inflate!r}.')
  exclude_re = re.compile(exclude) if exclude else None
  report = ConversionReport()
  used = set()
  out: Dict[str, Dict[Tuple[str, ...], np.ndarray]] = {c: {} for c in COLLECTIONS}
  for collection in COLLECTIONS:
    for path, leaf in sorted(flatten(template.get(collection, {})).items()):
      name = path_str(path)
      key = torch_key(collection, path, name_map)
      if exclude_re is not None and exclude_re.search(name):
        report.excluded.append(name)
        if key is not None:
          used.add(key)
        continue
      if key is None or key not in state_dict:
        report.missing.append(f'{name}' + (f' (no {key})' if key else ' (unmapped)'))
        continue
      used.add(key)
      value = np.asarray(state_dict[key])
      if path[-1] == 'kernel':
        value = torch_to_flax_kernel(value)
        want = _shape(leaf)
        if inflate and len(want) == 5 and value.shape != want and (
            value.ndim == 4 or (value.ndim == 5 and value.shape[0] == 1)):
          if value.ndim == 4:
            report.inflated_from_2d.append(name)
          value = inflate_kernel(value, want[0], inflate)
          report.inflated.append(name)
      if dtype is not None and np.issubdtype(value.dtype, np.floating):
        value = value.astype(dtype)
      if value.shape != _shape(leaf):
        report.mis_shaped.append(f'{name} ({key}): checkpoint {tuple(value.shape)}, model '
                                 f'{_shape(leaf)}')
      out[collection][path] = np.ascontiguousarray(value)
      report.converted += 1
  ignored = set(extra_ignored)
  for key in state_dict:
    if key in used:
      continue
    if key.split('.')[-1] in IGNORED_TORCH_SUFFIXES or key in ignored:
      report.ignored.append(key)
    elif exclude_re is not None and exclude_re.search(key):
      report.excluded.append(f'checkpoint:{key}')
    else:
      report.unexpected.append(key)
  report.unexpected.sort()
  return {c: unflatten(v) for c, v in out.items()}, report


def identity_name_map(prefix: str = '') -> NameMap:
  """Flax module path == PyTorch module name with '.' for '/', under an optional Flax prefix.

  For Flax modules named after their PyTorch counterparts (tests convert single blocks this way).
  """
  if prefix:
    return [(re.escape(prefix.rstrip('/')) + r'/(.+)', lambda m: dotted(m.group(1)))]
  return [(r'(.*)', lambda m: dotted(m.group(1)))]
