"""Orbax checkpoints in `<workdir>/checkpoints`: keep the last k and the best by a val metric.

A checkpoint holds the whole train state (step, params, batch_stats, opt_state) and, as metrics,
the validation figures of the evaluation run at that step (used to pick the best one).
"""

import logging as std_logging
import os
from typing import Any, Optional

from absl import logging

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

CHECKPOINT_DIR = 'checkpoints'


class _DropOrbaxInfo(std_logging.Filter):
  """Orbax logs dozens of INFO lines per save; keep its warnings and errors only."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def quiet_orbax_logs() -> None:
  """Hides orbax's per-save INFO chatter from the absl log (warnings still show)."""
  logging.get_absl_handler().addFilter(_DropOrbaxInfo())


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def create_manager(workdir: str, ckpt_config, *, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager keeping `keep_last` latest checkpoints plus the best by `best_metric`."""
  metric = ckpt_config.best_metric
  mode = ckpt_config.best_mode
  if mode not in ('max', 'min'):
    raise ValueError(f"config.checkpoint.best_mode must be 'max' or 'min', got {mode!r}.")
  policies = [checkpoint_managers.LatestN(n=ckpt_config.keep_last)]
  if ckpt_config.keep_best:
    policies.append(checkpoint_managers.BestN(
        get_metric_fn=lambda metrics: metrics[metric], reverse=(mode == 'min'), n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
      best_fn=lambda metrics: metrics[metric], best_mode=mode,
      enable_async_checkpointing=ckpt_config.async_save, read_only=read_only,
      create=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, metrics: Optional[dict] = None,
         config: Optional[Any] = None) -> None:
  """Saves `state` at `step` with its validation `metrics` and the run's config as metadata.

  Orbax writes into a temporary directory and renames it when complete, so a crash during a
  save leaves the previous checkpoints intact.
  """
  metadata = {'step': int(step), 'metrics': dict(metrics or {})}
  if config is not None:
    metadata['config'] = config.to_json()
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True,
               custom_metadata=metadata)


def metadata(manager: ocp.CheckpointManager, step: int) -> dict:
  """The custom metadata (step, metrics, config json) saved with checkpoint `step`."""
  return dict(manager.metadata(step).custom_metadata or {})


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores checkpoint `step` into the structure (and shardings) of `target`."""
  return manager.restore(step, args=ocp.args.StandardRestore(target))


def best_step(manager: ocp.CheckpointManager) -> Optional[int]:
  """The step with the best metric among checkpoints that have metrics, else None."""
  return manager.best_step()


def select_step(manager: ocp.CheckpointManager, which: str) -> int:
  """Resolves `config.eval.checkpoint` ('best' or 'latest') to a step, failing clearly."""
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f'No checkpoint in {manager.directory}: train first.')
  if which == 'latest':
    return manager.latest_step()
  if which == 'best':
    step = best_step(manager)
    return manager.latest_step() if step is None else step
  raise ValueError(f"config.eval.checkpoint must be 'best', 'latest' or a checkpoint path, "
                   f'got {which!r}.')


def restore_from_path(path: str, target: Any) -> Any:
  """Restores a train state from an explicit checkpoint step directory."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'Checkpoint path {path} does not exist.')
  # A manager step directory holds the state under 'default'; accept both that and the item dir.
  item = os.path.join(path, 'default') if os.path.isdir(os.path.join(path, 'default')) else path
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(item, target)
