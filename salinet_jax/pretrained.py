"""Initialising a model from pretrained weights (`config.init_from`).

A pretrained checkpoint is either

* a directory written by `python -m salinet_jax.convert` (converted PyTorch weights): an orbax
  checkpoint of {'params', 'batch_stats'} in `<dir>/variables` next to `<dir>/conversion.json`; or
* a training checkpoint of this code base: another run's workdir (its `init_config.which`
  checkpoint, 'best' or 'latest'), a step directory `<workdir>/checkpoints/<step>` or its 'default'
  item directory; its train state holds 'params' and 'batch_stats' (the optimizer state is not
  used).

`load_pretrained(params, batch_stats, init_config)` merges it into freshly initialised variables:
every model variable found in the checkpoint with the same shape takes the checkpoint's value;
variables whose path matches `init_config.exclude` (a regex searched in paths like
'head/fc/kernel', 'backbone/s1/pathway0_stem/bn/mean') keep their fresh values. The report lists

  * missing: model variables (not excluded) that the checkpoint lacks: they keep fresh values;
  * unexpected: checkpoint tensors (not excluded) that the model lacks: ignored;
  * mis-shaped: same path, different shape: always an error unless excluded (e.g. a classifier
    trained on another number of classes: exclude '^head/').

With `init_config.strict` missing or unexpected tensors are errors too. Values take the dtype of
the fresh variables and, for jax arrays, their sharding.

    config.init_from.checkpoint = '/ckpt/k400_salinet_converted'   # 'none' = train from scratch
    config.init_from.exclude = '^head/'                            # fine-tune on another dataset
    config.init_from.strict = True
"""

import dataclasses
import json
import os
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from data import errors as data_errors
from salinet_jax import checkpoints
from salinet_jax import convert
from salinet_jax import errors
from salinet_jax import inputs
from salinet_jax.convert import layout

VARIABLES_DIR = 'variables'
REPORT_FILE = 'conversion.json'
COLLECTIONS = ('params', 'batch_stats')


# ----------------------------------------------------------------------------------------------
# Converted checkpoints on disk.
# ----------------------------------------------------------------------------------------------


def save_converted(output_dir: str, variables: Mapping[str, Any], info: Mapping[str, Any],
                   overwrite: bool = False) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) as orbax + `info` as json; returns the dir."""
  data_errors.refuse_path(output_dir, '--output')
  checkpoints.refuse_unsavable(output_dir, '--output')
  output_dir = os.path.abspath(output_dir)
  target = os.path.join(output_dir, VARIABLES_DIR)
  if os.path.exists(target) and not overwrite:
    raise errors.UserError(f'{target} exists; pass --overwrite to replace it.')
  tree = {c: jax.tree.map(np.asarray, dict(variables.get(c, {}))) for c in COLLECTIONS}
  with data_errors.writing(target, target + checkpoints.TMP_SUFFIX):
    os.makedirs(output_dir, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(target, tree, force=overwrite)
  with data_errors.replacing(os.path.join(output_dir, REPORT_FILE)) as f:
    json.dump(dict(info), f, indent=2, sort_keys=True, default=str)
  return output_dir


def _restore_raw(path: str) -> Any:
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path)


def _workdir_step_dir(workdir: str, which: str) -> str:
  """The step directory of a workdir's 'best' or 'latest' checkpoint."""
  ckpt_config = ml_collections.ConfigDict(dict(
      keep_last=1, keep_best=True, best_metric='val_top1', best_mode='max', async_save=False))
  store = checkpoints.CheckpointStore(workdir, ckpt_config, read_only=True)
  try:
    return store.step_dir(store.select_step(which))  # check_location saw checkpoints there
  finally:
    store.close()


def check_location(path: str) -> str:
  """The absolute `path`, if it can be a pretrained checkpoint: an existing directory, and for a
  workdir one with checkpoints (its contents are checked when loaded)."""
  path = os.path.abspath(path)
  if os.path.isfile(path):
    raise checkpoints.NoCheckpointError(
        f'Pretrained checkpoint {path} is a file, not a converted checkpoint directory: convert '
        'it first (python -m salinet_jax.convert --source=... --checkpoint=FILE --config=... '
        '--output=DIR) and pass DIR.')
  if not os.path.isdir(path):
    raise checkpoints.NoCheckpointError(f'Pretrained checkpoint {path} does not exist.')
  if (os.path.isdir(os.path.join(path, 'checkpoints'))
      and not checkpoints.has_checkpoints(path)):
    raise checkpoints.NoCheckpointError(
        f'Pretrained checkpoint {path} is a workdir without checkpoints yet: train it first '
        'or point config.init_from.checkpoint elsewhere.')
  return path


def resolve_checkpoint(path: str, which: str = 'best') -> str:
  """The orbax item directory behind a converted dir, a workdir or a (step) checkpoint dir.

  Training checkpoints are verified against their recorded checksums first.
  """
  path = check_location(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = _workdir_step_dir(path, which)
  with _removal_told(path):
    for item in (os.path.join(path, VARIABLES_DIR), os.path.join(path, checkpoints.ITEM_DIR),
                 path):
      if os.path.isdir(item) and os.path.exists(os.path.join(item, '_METADATA')):
        if os.path.basename(item) == checkpoints.ITEM_DIR:
          intact, problem = checkpoints.verify_step_dir(os.path.dirname(item))
          if not intact:
            raise checkpoints.CorruptCheckpointError(
                f'Pretrained checkpoint {os.path.dirname(item)} is corrupt: {problem}.')
        return item
    raise checkpoints.NoCheckpointError(
        f'{path} is neither a converted checkpoint (with {VARIABLES_DIR}/), a workdir (with '
        'checkpoints/) nor a training checkpoint step directory.')


def _removal_told(path: str):
  """checkpoints.removal_told of the checkpoint directory init_from reads."""
  return checkpoints.removal_told(path, f'init_from checkpoint {path}')


def load_variables(path: str, which: str = 'best') -> Dict[str, Any]:
  """{'params', 'batch_stats'} (numpy leaves) of a converted or training checkpoint."""
  return _variables_of(resolve_checkpoint(path, which))


def _variables_of(item: str) -> Dict[str, Any]:
  return {c: jax.tree.map(np.asarray, tree) for c, tree in _collections(_restore_raw(item),
                                                                          item).items()}


def _collections(tree: Any, item: str) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of an orbax item's tree (arrays, or its metadata's shapes)."""
  if not isinstance(tree, Mapping) or 'params' not in tree:
    raise ValueError(f'{item} holds no params (keys: {sorted(tree)[:10]}).')
  return {c: dict(tree.get(c) or {}) for c in COLLECTIONS}


# ----------------------------------------------------------------------------------------------
# Merging into fresh variables.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoadReport(layout.MatchReport):
  """What `load_pretrained` did (or, from `check_fit`, will do); paths are
  'collection:module/.../leaf'."""
  checkpoint: str = ''
  taken: str = ''  # which checkpoint of a workdir was taken, e.g. 'its best checkpoint, step 12'
  source_config: str = ''  # the config (json) a training checkpoint was trained with
  # the model config a converted checkpoint was converted for (its conversion.json)
  converted_for: Optional[Dict[str, Any]] = None
  # the normalisation preset of the pixels a converted checkpoint's weights were trained on
  converted_normalization: Optional[str] = None
  # checkpoint tensors the model does not have, left out by init_from.exclude
  excluded_unexpected: List[str] = dataclasses.field(default_factory=list)
  loaded: List[str] = dataclasses.field(default_factory=list)
  # (step, run length) where the training checkpoint's run had not finished when loaded
  unfinished: Optional[Tuple[int, int]] = None
  # the warning that a classifier's rows are read as these classes unchecked (no names recorded)
  unchecked_classes: str = ''

  @property
  def source(self) -> str:
    """The checkpoint, and which of a workdir's was taken."""
    return f'{self.checkpoint} ({self.taken})' if self.taken else self.checkpoint

  def summary(self, limit: int = 20) -> str:
    header = (f'init_from {self.source}: loaded {len(self.loaded)} tensors, kept fresh '
              f'{len(self.excluded)} excluded; missing {len(self.missing)}, unexpected '
              f'{len(self.unexpected)}, mis-shaped {len(self.mis_shaped)}')
    return '\n'.join([header] + self.problem_lines(
        limit, 'missing (in the model, not in the checkpoint; kept fresh)',
        'unexpected (in the checkpoint, not in the model; ignored)'))


class PretrainedMismatchError(errors.UserError, ValueError):
  """The checkpoint does not fit the model (see the report in the message)."""


REQUIRED = 'REQUIRED'
FROM_SCRATCH = 'none'  # init_from.checkpoint of a run that starts from a random initialisation
EMPTY_CHECKPOINT = ('config.init_from.checkpoint is empty: pass the checkpoint directory to '
                    'start from, or =none to train from scratch.')


class InitCheckpointRequiredError(errors.UserError):
  """A fine-tuning recipe was started without the checkpoint it starts from."""


def check_init_from(init_config) -> None:
  """Fails, before any work, when the recipe needs a checkpoint that was not given, when the
  checkpoint is empty (an unset shell variable would otherwise train from scratch without a
  word: from scratch is `none`), or when `which` or `exclude` cannot work, or the checkpoint
  is not there (before a workdir is made for a run that cannot start)."""
  which, exclude = _get(init_config, 'which', 'best'), _get(init_config, 'exclude', '')
  checkpoint = _get(init_config, 'checkpoint', FROM_SCRATCH)
  source = _get(init_config, 'source', '')
  if which not in checkpoints.CHOICES:
    raise errors.ConfigError(f'config.init_from.which must be one of {checkpoints.CHOICES}, '
                             f'got {which!r}.')
  try:
    re.compile(exclude)
  except re.error as e:
    raise errors.ConfigError(f'config.init_from.exclude is not a valid regex ({exclude!r}: '
                             f'{e}).') from e
  if not checkpoint.strip():
    raise InitCheckpointRequiredError(EMPTY_CHECKPOINT)
  if checkpoint == FROM_SCRATCH:
    return
  data_errors.refuse_path(checkpoint, 'config.init_from.checkpoint')
  if checkpoint != REQUIRED:
    try:
      check_location(checkpoint)
    except checkpoints.NoCheckpointError as e:
      if not source or not str(e).endswith(' does not exist.'):
        raise
      raise checkpoints.NoCheckpointError(
          f'{str(e)[:-1]}: this recipe starts from {source}, or pass '
          '--config.init_from.checkpoint=DIR.') from None
    return
  command = _get(init_config, 'convert_command', '')
  raise InitCheckpointRequiredError(
      f'config.init_from.checkpoint must name what this recipe starts from: '
      f'{source or "a pretrained checkpoint"}. '
      + (f'Make it with `{command}`, then pass ' if command else 'Pass ')
      + '--config.init_from.checkpoint=DIR (or =none to train from scratch, which the '
      'reference does not do).')


def _get(config: Any, name: str, default: Any) -> Any:
  if isinstance(config, Mapping):
    return config.get(name, default)
  return getattr(config, name, default)


def _merged(fresh: Mapping[str, Any], stored: Mapping[str, Any], loaded: Iterable[str]
            ) -> Dict[str, Any]:
  """`fresh` ({collection: tree}) with the tensors of `stored` named in `loaded` (a report's)
  in place of its own."""
  loaded = set(loaded)
  merged = {}
  for collection in COLLECTIONS:
    values = layout.flatten(stored.get(collection) or {})
    merged[collection] = layout.unflatten({
        path: (_like(np.asarray(values[path]), leaf)
               if f'{collection}:{layout.path_str(path)}' in loaded else leaf)
        for path, leaf in layout.flatten(fresh.get(collection) or {}).items()})
  return merged


def match_variables(fresh: Mapping[str, Any], stored: Mapping[str, Any], exclude: str = ''
                    ) -> LoadReport:
  """Which tensors of `stored` would load into `fresh` ({collection: tree} both, of arrays or
  of shapes alone), and which not: excluded, missing, unexpected, mis-shaped."""
  pattern = re.compile(exclude) if exclude else None
  excluded = lambda name: pattern is not None and pattern.search(name)  # noqa: E731
  report = LoadReport()
  for collection in COLLECTIONS:
    fresh_flat = layout.flatten(fresh.get(collection) or {})
    ckpt_flat = layout.flatten(stored.get(collection) or {})
    for path, leaf in sorted(fresh_flat.items()):
      label = f'{collection}:{layout.path_str(path)}'
      if excluded(layout.path_str(path)):
        report.excluded.append(label)
      elif path not in ckpt_flat:
        report.missing.append(label)
      elif tuple(ckpt_flat[path].shape) != tuple(leaf.shape):
        report.mis_shaped.append(f'{label}: checkpoint {tuple(ckpt_flat[path].shape)}, model '
                                 f'{tuple(leaf.shape)}')
      else:
        report.loaded.append(label)
    for path in sorted(set(ckpt_flat) - set(fresh_flat)):
      name = layout.path_str(path)
      if excluded(name):
        report.excluded_unexpected.append(f'{collection}:{name}')
      else:
        report.unexpected.append(f'{collection}:{name}')
  return report


def _like(value: np.ndarray, leaf: Any) -> Any:
  """`value` with the dtype (and, for a jax array, the sharding) of `leaf`."""
  value = value.astype(leaf.dtype)
  if isinstance(leaf, jax.Array):
    return jax.device_put(value, leaf.sharding)
  return value


def load_pretrained(params: Any, batch_stats: Any, init_config: Any,
                    model_config: Optional[Any] = None,
                    classes: Optional[Sequence[str]] = None,
                    classifier_params: Optional[Callable[[], Iterable[str]]] = None
                    ) -> Tuple[Any, Any, LoadReport]:
  """Merges the checkpoint of `init_config` into fresh `params` / `batch_stats`.

  Args:
    params, batch_stats: the freshly initialised variables (nested dicts of arrays).
    init_config: `config.init_from`-like (ConfigDict, dict or object) with `checkpoint` (path;
      'none', the default, returns the inputs unchanged; an empty one is refused), `exclude`
      (regex, '' = none), `strict` (bool, default True) and `which` ('best' | 'latest' for a
      workdir, default 'best').
    model_config: the `config.model` of `params`; a mismatch error then also names the model
      fields the checkpoint was made with that differ from it.
    classes, classifier_params: the class names the model is trained on, and a function giving
      the paths of its classifier parameters (engine.Engine.classifier_params, called only when
      needed); a training checkpoint that recorded other classes (same count, so the shapes
      fit) is refused while its classifier loads.

  Returns:
    (params, batch_stats, LoadReport).

  Raises:
    PretrainedMismatchError: mis-shaped tensors not excluded; with `strict`, also missing or
      unexpected ones (the message is the report); a classifier of other classes.
  """
  fresh = {'params': params, 'batch_stats': batch_stats or {}}

  def read(item: str) -> Tuple[str, Dict[str, Any], LoadReport]:
    stored = _variables_of(item)
    return item, stored, _checked_report(item, fresh, stored, init_config, model_config,
                                         classes, classifier_params)

  read_from = _read_source(init_config, read)
  if read_from is None:
    return params, batch_stats, LoadReport(checkpoint=FROM_SCRATCH)
  item, stored, report = read_from
  if report.unfinished:
    # E.g. a warm-up stopped by a preemption and never resumed: the next stage would start
    # from it without a word. The best step of a finished run is not one.
    logging.warning('init_from %s is from a run that stopped at step %d of its %d steps, '
                    'unfinished: resume that run first if the next stage should start from its '
                    'end.', os.path.dirname(item), *report.unfinished)
  if report.unchecked_classes:
    logging.warning('%s', report.unchecked_classes)
  merged = _merged(fresh, stored, report.loaded)
  return merged['params'], merged['batch_stats'], report


def check_fit(params: Any, batch_stats: Any, init_config: Any,
              model_config: Optional[Any] = None,
              classes: Optional[Sequence[str]] = None,
              classifier_params: Optional[Callable[[], Iterable[str]]] = None) -> LoadReport:
  """`load_pretrained`'s refusals and report, from the shapes of the fresh variables (arrays or
  jax.ShapeDtypeStruct) and the checkpoint's metadata: no array is decoded and nothing merged
  (a training checkpoint's files are still checksummed, as the load does). A run calls it
  before it compiles its model, so that a checkpoint that cannot load fails in seconds; the
  load's own warnings (an unfinished source run, unchecked classes) are left to the load."""
  report = _read_source(init_config, lambda item: _checked_report(
      item, {'params': params, 'batch_stats': batch_stats or {}},
      _collections(checkpoints.item_tree(item), item), init_config, model_config, classes,
      classifier_params))
  return LoadReport(checkpoint=FROM_SCRATCH) if report is None else report


def _read_source(init_config: Any, read: Callable[[str], Any]) -> Any:
  """`read(item)` of the orbax item `init_config.checkpoint` names (_source_item), None for a
  start from scratch. A workdir still training removes its older steps as it saves new ones:
  where its chosen step goes while it is read, that is said and its `which` step chosen again
  (checkpoints.chosen_again_if_removed); a step directory given fails in that one line."""
  path = _get(init_config, 'checkpoint', FROM_SCRATCH)

  def attempt() -> Any:
    item = _source_item(init_config)
    if item is None:
      return None
    with _removal_told(os.path.dirname(item)):
      return read(item)

  in_workdir = os.path.isdir(os.path.join(os.path.abspath(path), 'checkpoints'))
  return checkpoints.chosen_again_if_removed(
      _get(init_config, 'which', 'best') if in_workdir else path, attempt)


def _source_item(init_config: Any) -> Optional[str]:
  """The verified orbax item `init_config.checkpoint` names (resolve_checkpoint), None for a
  start from scratch; an empty checkpoint and the recipe placeholder REQUIRED are refused."""
  path = _get(init_config, 'checkpoint', FROM_SCRATCH)
  if path == FROM_SCRATCH:
    return None
  if not path.strip():
    raise InitCheckpointRequiredError(EMPTY_CHECKPOINT)
  if path == REQUIRED:
    check_init_from(init_config)
  return resolve_checkpoint(path, _get(init_config, 'which', 'best'))


def _checked_report(item: str, fresh: Mapping[str, Any], stored: Mapping[str, Any],
                    init_config: Any, model_config: Optional[Any],
                    classes: Optional[Sequence[str]],
                    classifier_params: Optional[Callable[[], Iterable[str]]]) -> LoadReport:
  """The LoadReport of loading checkpoint `item` (its variables `stored`: arrays or shapes) into
  `fresh`, or the error that refuses it (see load_pretrained)."""
  path = _get(init_config, 'checkpoint', FROM_SCRATCH)
  which = _get(init_config, 'which', 'best')
  exclude = _get(init_config, 'exclude', '')
  report = match_variables(fresh, stored, exclude)
  if exclude and not (report.excluded or report.excluded_unexpected):
    # A typo would silently load what it meant to keep fresh.
    names = [layout.path_str(p) for p in sorted(layout.flatten(fresh['params']))]
    heads = [n for n in names if re.search(r'(^|/)(head|fc|classifier)', n)]
    raise errors.ConfigError(
        f'config.init_from.exclude={exclude!r} matches no parameter of the model or the '
        f'checkpoint, so it would keep nothing fresh; names look like '
        f'{", ".join(repr(n) for n in (heads or names)[:3])} (a regex searched in each).')
  report.checkpoint = path
  step_metadata = (checkpoints.read_step_metadata(os.path.dirname(item))
                   if os.path.basename(item) == checkpoints.ITEM_DIR else {})
  if os.path.isdir(os.path.join(os.path.abspath(path), 'checkpoints')):
    step = os.path.basename(os.path.dirname(item))
    if which == 'best' and not step_metadata.get('metrics'):
      # No step of it was evaluated: the store fell back to the newest.
      report.taken = f'its latest checkpoint, step {step}: none was evaluated, so none is best'
    else:
      report.taken = f'its {which} checkpoint, step {step}'
  if os.path.basename(item) == checkpoints.ITEM_DIR:
    report.unfinished = checkpoints.unfinished_run(os.path.dirname(item))
    report.source_config = step_metadata.get('config', '')
  elif os.path.basename(item) == VARIABLES_DIR:
    info = conversion_info(os.path.dirname(item))
    report.converted_for = info['model'] if isinstance((info or {}).get('model'), dict) else None
    if info is not None:
      report.converted_normalization = converted_normalization(
          info, os.path.join(os.path.dirname(item), REPORT_FILE))
  strict = bool(_get(init_config, 'strict', True))
  if not report.loaded:  # the reason first: the listing of every tensor follows
    raise PretrainedMismatchError(
        f'Nothing of {path} was loaded: the model would start from scratch. Check the '
        'checkpoint, init_from.exclude and the model config (or pass init_from.checkpoint=none '
        'to train from scratch).' + _model_differences(item, model_config)
        + f'\n{report.summary(limit=5)}')
  if report.mis_shaped or (strict and not report.ok):
    raise PretrainedMismatchError(f'{report.summary()}\n{_mismatch_hint(report, strict)}.'
                                  + _model_differences(item, model_config,
                                                       other_architecture=False))
  if classes is not None and classifier_params is not None:
    if os.path.basename(item) == checkpoints.ITEM_DIR:
      trained_on = step_metadata.get('classes')
      remedy = ('It was saved before runs recorded their classes: check that its run had these '
                'classes in this order')
    else:
      trained_on = (conversion_info(os.path.dirname(item)) or {}).get('classes')
      remedy = ("Convert it again with --classes=FILE (the names in its classifier's row "
                'order) to have them checked')
    report.unchecked_classes = _check_the_classes_of_a_classifier(
        report, classifier_params, trained_on, list(classes), remedy)
  return report


def _check_the_classes_of_a_classifier(report: LoadReport,
                                       classifier_params: Callable[[], Iterable[str]],
                                       trained_on: Optional[List[str]],
                                       classes: List[str], remedy: str) -> str:
  """With as many other classes (or the same in another order) the shapes of a checkpoint's
  classifiers (and of S2DNet's layers reading class scores) fit, and their rows would be matched
  to the wrong classes: refused where the checkpoint records its classes (training checkpoints;
  converted ones given --classes); where it records none, the warning to give (else '')."""
  if trained_on == classes or (trained_on and len(trained_on) != len(classes)):
    return ''
  loaded = {entry.split(':', 1)[1] for entry in report.loaded if entry.startswith('params:')}
  classifiers = sorted({path.rsplit('/', 1)[0] for path in classifier_params() if path in loaded})
  if not classifiers:
    return ''
  source = f'{report.checkpoint} ({report.taken})' if report.taken else report.checkpoint
  exclude = f"init_from.exclude='^({'|'.join(classifiers)})(/|$)'"
  if not trained_on:
    return (f'init_from {source} records no class names: its layers with a row per class '
            f"({', '.join(classifiers)}) are read as these records' {len(classes)} classes in "
            f'their order ({data_errors.first_few(list(classes), 3)}), unchecked. {remedy}; or '
            f'exclude them with {exclude} to train them afresh.')
  if sorted(trained_on) == sorted(classes):
    index = next(i for i, (a, b) in enumerate(zip(trained_on, classes)) if a != b)
    how = (f'the same classes in another order: class {index} is {trained_on[index]!r} there, '
           f'{classes[index]!r} here')
  else:
    only = lambda a, b: ', '.join([c for c in a if c not in b][:4])  # noqa: E731
    how = f'classes only there: {only(trained_on, classes)}; only here: {only(classes, trained_on)}'
  raise PretrainedMismatchError(
      f'init_from {source} was trained on other classes than these records ({how}), so its '
      f'layers with a row per class ({", ".join(classifiers)}) would be matched to the wrong '
      f'classes. Exclude them with {exclude} to train them afresh, or train on records of its '
      'classes.')


def _mismatch_hint(report: LoadReport, strict: bool) -> str:
  """What to do about a report's problems: mis-shaped tensors only go with init_from.exclude
  (for a few modules, e.g. a classifier trained on other classes, the regex of those modules);
  missing or unexpected ones also with init_from.strict=False."""
  hints = []
  if report.mis_shaped:
    modules = sorted({entry.split(':')[1].rsplit('/', 1)[0] for entry in report.mis_shaped})
    example = (f" (here '^({'|'.join(modules)})(/|$)')" if len(modules) <= 3 else
               " (e.g. '^head/' for a classifier trained on other classes)")
    hints.append(f'mis-shaped tensors must be excluded with init_from.exclude{example}, or the '
                 'model config must match the checkpoint')
  if strict and (report.missing or report.unexpected):
    hints.append('missing or unexpected tensors are accepted with init_from.strict=False '
                 '(missing ones keep their fresh values), or can be excluded likewise')
  return '; '.join(hints)


def _model_differences(item: str, model_config: Optional[Any],
                       other_architecture: bool = True) -> str:
  """'The checkpoint was made for another model: ...' lines (the converted checkpoint's
  conversion.json or the training checkpoint's stored config against `model_config`), or ''.
  A checkpoint of another architecture is named as such (unless `other_architecture` is off:
  e.g. NL-I3D weights for SaliNet, where that is the recipe)."""
  if model_config is None:
    return ''
  parent = os.path.dirname(item)
  stored: Any = None
  if os.path.basename(item) == VARIABLES_DIR:
    stored = (conversion_info(parent) or {}).get('model')
  elif os.path.basename(item) == checkpoints.ITEM_DIR:
    stored = checkpoints.stored_config_dict(
        checkpoints.read_step_metadata(parent).get('config')).get('model')
  if not isinstance(stored, dict):
    return ''
  given_dict = (model_config.to_dict() if hasattr(model_config, 'to_dict')
                else dict(model_config))
  if stored.get('name') != given_dict.get('name'):  # its fields differ by design
    return (f"\nThe checkpoint was made for model.name {stored.get('name')!r}, the given model "
            f"is {given_dict.get('name')!r}." if other_architecture else '')
  given = ml_collections.ConfigDict({'model': given_dict})
  differences = checkpoints.config_differences(json.dumps({'model': stored}), given)
  if not differences:
    return ''
  return ('\nThe checkpoint was made for another model config than the given one:\n  '
          + '\n  '.join(differences))


# Model fields that leave what loaded weights compute unchanged: the implementation of a
# convolution, dropout rates (training only), how fresh parameters start, and the S2DNet stage
# (its sampling stage starts from the warm-up's weights by design).
SAME_COMPUTATION_FIELDS = ('conv_impl', 'dropout_rate', 'snet_dropout', 'context_dropout',
                           'dnet_dropout', 'zero_init_residual', 'f_theta_head_init', 'stage')


def converted_model_differences(converted_for: Mapping[str, Any], model_config: Any) -> List[str]:
  """'model.F: converted with X, given Y' for each field of both models (the conversion's and
  this run's, defaults filled in from their classes) that differs and changes what the weights
  compute. Weights converted for one temporal pooling, kernel or tiling load into another
  without a mis-shaped tensor: e.g. NL-I3D converted with pool1_temporal=1 loaded into the
  default 2 (0.0197 off on logits of scale 2.1), reported by nothing."""
  from salinet_jax import models  # pylint: disable=g-import-not-at-top
  given = model_config.to_dict() if hasattr(model_config, 'to_dict') else dict(model_config)

  def as_json(value: Any) -> Any:  # tuples as lists, as conversion.json holds them
    try:
      return json.loads(json.dumps(value))
    except TypeError:  # a default that is no config value (a dtype, a module)
      return None

  def resolved(fields: Mapping[str, Any]) -> Dict[str, Any]:
    model_cls = models.MODELS.get(fields.get('name'))
    defaults = {} if model_cls is None else {
        f.name: f.default for f in dataclasses.fields(model_cls)
        if f.default is not dataclasses.MISSING}
    return {key: as_json(value) for key, value in {**defaults, **fields}.items()}

  before, after = resolved(converted_for), resolved(given)
  named = (set(converted_for) | set(given)) & set(before) & set(after)
  return [f'model.{key}: converted with {before[key]!r}, given {after[key]!r}'
          for key in sorted(named - {'name', *SAME_COMPUTATION_FIELDS})
          if before[key] != after[key]]


def converted_normalization(info: Mapping[str, Any], report: str) -> Optional[str]:
  """The normalisation preset of the pixels a converted checkpoint's weights were trained on:
  its conversion.json's (`report`) record (null: not known) or, for conversions written before
  the converter recorded it, the convention of its source; None where neither is known. A value
  that is no preset, or a source that is no name, fails naming the file and field."""
  source = info.get('source')
  if not isinstance(source, str):
    raise errors.UserError(f'{report}: source {source!r} is not the name of a checkpoint '
                           f'family ({", ".join(convert.SOURCES)}); convert the checkpoint '
                           'again, or correct the field.')
  if 'normalization' not in info:
    return convert.SOURCES[source].normalization if source in convert.SOURCES else None
  value = info['normalization']
  if value is not None and (not isinstance(value, str)
                            or value not in inputs.NORMALIZATION_PRESETS):
    raise errors.UserError(f'{report}: normalization {value!r} is not one of '
                           f'{sorted(inputs.NORMALIZATION_PRESETS)} (or null: not known); '
                           'convert the checkpoint again, or correct the field.')
  return value


def conversion_info(path: str) -> Optional[Dict[str, Any]]:
  """The json written next to a converted checkpoint, or None for training checkpoints."""
  report = os.path.join(os.path.abspath(path), REPORT_FILE)
  if not os.path.exists(report):
    return None
  try:
    with open(report, encoding='utf-8') as f:
      info = json.load(f)
  except (OSError, ValueError) as e:  # not UTF-8 or not JSON, a folder, unreadable
    raise errors.UserError(f'{report} is not valid JSON ({e}); convert the checkpoint '
                           'again.') from None
  if not isinstance(info, dict):
    raise errors.UserError(f'{report} holds {type(info).__name__}, not the object the converter '
                           'writes; convert the checkpoint again.')
  return info
