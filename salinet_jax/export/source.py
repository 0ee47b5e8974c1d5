"""The run being exported: one checkpoint of a workdir, restored as eval mode restores it.

Everything comes from the checkpoint itself: the run's config and class names from its metadata
(saved with every step), the state through `engine.Engine.restore` (checksums verified), so
`--workdir` alone suffices.
"""

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Tuple

import jax
import ml_collections

from salinet_jax import checkpoints
from salinet_jax import engine
from salinet_jax import predict
from salinet_jax.export.errors import ExportError


@dataclasses.dataclass
class Run:
  """A restored checkpoint: the run's config, its model and host variables, and provenance."""
  config: ml_collections.ConfigDict
  model: Any
  variables: Dict[str, Any]
  classes: List[str]
  checkpoint: str  # how it was chosen, e.g. 'best (step 600)' or a path
  path: str  # the checkpoint's step directory
  step: int
  metrics: Dict[str, Any]
  decoding: Dict[str, Any]  # how its eval records were decoded (data/pipeline.split_decoding)


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """A config saved as json (checkpoint metadata, export.json), with its tuples back."""

  def tuples(value):
    if isinstance(value, dict):
      return {k: tuples(v) for k, v in value.items()}
    if isinstance(value, list):
      return tuple(tuples(v) for v in value)
    return value

  return ml_collections.ConfigDict(tuples(json.loads(text) if isinstance(text, str) else text))


def _step_dir(path: str) -> str:
  """The step directory of `--checkpoint=PATH` (the step itself or its orbax item folder)."""
  if os.sep not in path and not os.path.exists(path):  # a misspelt word, not a path
    raise ExportError(f"--checkpoint must be 'best', 'latest' or the path of a checkpoint step "
                      f'directory, got {path!r}.')
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise ExportError(f'Checkpoint path {path} does not exist.')
  return path if os.path.isdir(os.path.join(path, checkpoints.ITEM_DIR)) else os.path.dirname(path)


def run_folder(workdir: str, which: str) -> str:
  """The run (workdir) that checkpoint `which` of `workdir` belongs to: `workdir`, or for a
  step directory under another run's checkpoints/ folder, that run."""
  if which in checkpoints.CHOICES:
    return os.path.realpath(workdir)
  parent = os.path.dirname(os.path.realpath(_step_dir(which)))
  if os.path.basename(parent) == checkpoints.CHECKPOINT_DIR:
    return os.path.dirname(parent)
  return os.path.realpath(workdir)


def _run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config, from its newest step whose metadata holds one (a damaged newest step
  does not hide the run: choosing among the steps then reports it)."""
  directory = checkpoints.checkpoint_dir(workdir)
  if not checkpoints.has_checkpoints(workdir):
    raise ExportError(f'No checkpoint in {directory}: train first, or pass --checkpoint=PATH.')
  steps = checkpoints.step_numbers(directory)[::-1]
  for step in steps:
    metadata = checkpoints.read_step_metadata(os.path.join(directory, str(step)))
    if 'config' in metadata:
      return config_from_json(metadata['config'])
  return _metadata_config({}, os.path.join(directory, str(steps[0])))


def _metadata_config(metadata: Dict[str, Any], where: str,
                     intact_steps: Callable[[], str] = str) -> ml_collections.ConfigDict:
  """The config saved with the checkpoint at step directory `where`; `intact_steps` says which
  other steps could be exported instead (asked only when this one is damaged: it verifies
  every other step's checksums)."""
  problem = checkpoints.metadata_problem(where)
  if not os.path.exists(os.path.join(where, checkpoints.STEP_METADATA_FILE)):
    problem = f'{os.path.join(where, checkpoints.STEP_METADATA_FILE)} is missing'
  if problem:  # unreadable or missing, as opposed to written before configs were stored
    hint = intact_steps()
    raise ExportError(f'Checkpoint {where} is corrupt: {problem}.' + (f' {hint}' if hint else ''))
  if 'config' not in metadata:
    raise ExportError(f'Checkpoint {where} carries no config in its metadata (written before '
                      'checkpoints stored it): it cannot be exported on its own.')
  return config_from_json(metadata['config'])


def locate(workdir: str, which: str
           ) -> Tuple[ml_collections.ConfigDict, str, Dict[str, Any], str]:
  """(the run's config, step directory, its metadata, how it was chosen) of `which`: 'best' |
  'latest' (chosen by the run's own best_metric and mode) | a checkpoint step directory."""
  if which not in checkpoints.CHOICES:
    step_dir = _step_dir(which)
    metadata = checkpoints.read_step_metadata(step_dir)
    return _metadata_config(metadata, step_dir), step_dir, metadata, step_dir
  config = _run_config(workdir)
  store = checkpoints.CheckpointStore(workdir, config.checkpoint, read_only=True)
  try:
    step, description = store.selection(which)
    step_dir = store.step_dir(step)
    with checkpoints.removal_told(step_dir, f'Checkpoint {step_dir}'):
      metadata = store.metadata(step)
      config = _metadata_config(metadata, step_dir, lambda: store.other_intact_steps(step))
  finally:
    store.close()
  return config, step_dir, metadata, description


def _restorable(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run's config with batch sizes this machine's devices divide: restoring needs only the
  model and the state's shapes, and the export host may have another device count."""
  config = ml_collections.ConfigDict(config.to_dict())
  devices = jax.device_count()
  config.batch_size = devices * config.grad_accumulation_steps
  config.eval_batch_size = devices
  config.bn_group_size = 0
  return config


def restore(workdir: str, which: str) -> Run:
  """Restores checkpoint `which` ('best' | 'latest' | a step directory) of the run in `workdir`:
  the very step whose metadata it located, chosen again where a run training in the workdir
  removes it meanwhile."""
  return checkpoints.chosen_again_if_removed(which, lambda: _restore_located(workdir, which))


def _restore_located(workdir: str, which: str) -> Run:
  config, step_dir, metadata, description = locate(workdir, which)
  config = checkpoints.with_later_settings(config, f'Checkpoint {step_dir}')
  decoding = predict.say_decoding(dict(metadata.get('decoding') or {}), f'Checkpoint {step_dir}')
  # The step located, not 'best' or 'latest' chosen again: a run training in the workdir may
  # have saved another since, whose weights would go with this step's metrics and decoding.
  config.eval.checkpoint = step_dir
  classes = [str(name) for name in engine.checkpoint_classes(workdir, config)]
  restorer = engine.Engine(_restorable(config), classes)
  variables, step, _ = restorer.restore_variables(workdir, step_dir)
  return Run(config=config, model=restorer.model, variables=jax.device_get(variables),
             classes=classes, checkpoint=description, path=step_dir, step=step,
             metrics=dict(metadata.get('metrics') or {}), decoding=decoding)
