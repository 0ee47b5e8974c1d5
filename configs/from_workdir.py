"""The config a workdir's run was trained with, read back from its `config.json`.

  python main.py --config=configs/from_workdir.py:DIR --workdir=DIR --mode=predict --video=V
  python main.py --config=configs/from_workdir.py:DIR --workdir=DIR --config.num_train_steps=N

Eval, predict, features, `salinet_jax.bench --checkpoint` and a longer training run then need
none of the training command's overrides repeated. JSON has no tuples: its lists become
tuples again, as every config writes them. Settings added to configs/base.py after the run wrote
its config.json take their defaults, said in one line (as a checkpoint that predates them is
read). A run by epochs comes back with the steps its epochs made (config.json records its
length); that num_train_steps is read as the same run by epochs (salinet_jax/engine.py
runs_by_epochs). Overrides on top work as on any config.
"""

import json
import os
import sys
from typing import Any, Dict, Tuple

import ml_collections

from configs import base

CONFIG_FILE = 'config.json'  # what salinet_jax/workdir.py writes a run's resolved config to


def get_config(workdir: str = '') -> ml_collections.ConfigDict:
  if not workdir:
    raise ValueError('configs/from_workdir.py needs the workdir: --config=configs/'
                     'from_workdir.py:DIR, DIR a workdir a training run wrote its config.json to.')
  path = os.path.join(os.path.expanduser(workdir), CONFIG_FILE)
  try:
    with open(path, 'rb') as f:
      stored = json.loads(f.read().decode('utf-8'))
  except FileNotFoundError:
    raise ValueError(f'{path} does not exist: {workdir} is not the workdir of a training run '
                     '(it writes config.json as it starts).') from None
  except OSError as e:
    raise ValueError(f'{path} cannot be read: {e.strerror}.') from None
  except ValueError as e:  # not UTF-8 or not JSON
    raise ValueError(f'{path} is not a config written by a training run ({e}).') from None
  if not isinstance(stored, dict):
    raise ValueError(f'{path} is not a config written by a training run (it holds no object).')
  merged, predated = _with_base_defaults(_lists_as_tuples(stored),
                                         base.get_base_config().to_dict())
  if predated:
    print(f'{path} predates {", ".join(predated)}: their defaults are used.', file=sys.stderr)
  return ml_collections.ConfigDict(merged)


def _lists_as_tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {key: _lists_as_tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_lists_as_tuples(item) for item in value)
  return value


def _with_base_defaults(stored: Dict[str, Any], defaults: Dict[str, Any],
                        prefix: str = 'config.') -> Tuple[Dict[str, Any], list]:
  """`stored` with the base settings it lacks added at their defaults, and their names. A stored
  value where base has a section (or the other way round) is kept as it is."""
  merged, predated = dict(stored), []
  for key, default in defaults.items():
    if key not in stored:
      merged[key] = default
      predated.append(f'{prefix}{key}')
    elif isinstance(default, dict) and isinstance(stored[key], dict):
      merged[key], inner = _with_base_defaults(stored[key], default, f'{prefix}{key}.')
      predated += inner
  return merged, predated
