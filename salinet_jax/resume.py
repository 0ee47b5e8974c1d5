"""Predict and features over a long list of videos go on where a stopped run left off.

Scoring a real dataset's videos takes hours; a run stopped part-way (Ctrl-C, SIGTERM, a crash)
lost them all, since its CSV is written at the end. Now each video's result is appended, as it
is done, to `<output_dir>/.<mode>_progress.jsonl`, under a header naming the weights (a hash of
their values, or of the export's files) and the config it was done with. The same command run
again keeps the results of the videos whose file is unchanged (size, modification time) and whose
outputs are all still there, if the weights and the config are the same; it says how many it
keeps and does the rest. Other weights or settings start over, which it says. A run that ends
removes the file, so a later one starts over, as before.
"""

import contextlib
import hashlib
import json
import os
from typing import Any, Dict, Iterable, Optional

import jax
import numpy as np
from absl import logging

from data import errors as data_errors


def weights_identity(predictor) -> str:
  """A hash of what scores the videos: the restored variables' values, or an export's files
  (names, sizes, modification times)."""
  digest = hashlib.sha256()
  variables = getattr(predictor, 'variables', None)
  if variables is not None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
      value = np.asarray(jax.device_get(leaf))
      digest.update(f'{jax.tree_util.keystr(path)} {value.dtype} {value.shape}'.encode())
      digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
  directory = predictor.model.directory
  for root, folders, files in os.walk(directory):
    folders.sort()
    for name in sorted(files):
      stat = os.stat(os.path.join(root, name))
      digest.update(f'{os.path.relpath(os.path.join(root, name), directory)} {stat.st_size} '
                    f'{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()


def _file_identity(path: str) -> Optional[list]:
  try:
    stat = os.stat(path)
  except OSError:
    return None
  return [stat.st_size, stat.st_mtime_ns]


class Progress:
  """The results of the videos a run into `output_dir` has done, kept for the same command run
  again after a stop (see the module docstring)."""

  def __init__(self, output_dir: str, mode: str, config, predictor):
    self.path = os.path.join(output_dir, f'.{mode}_progress.jsonl')
    self.header = {'mode': mode, 'weights': weights_identity(predictor),
                   'config': config.to_json_best_effort(sort_keys=True)}
    self.earlier = self._read()
    self._file = None

  def _read(self) -> Dict[str, Dict[str, Any]]:
    """The entries of a stopped run with the same header, by video path; {} if none."""
    try:
      with open(self.path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    except FileNotFoundError:
      return {}
    entries = {}
    for line in lines[1:]:
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:  # the last line, cut short by a kill while written
        continue
      entries[entry['video']] = entry
    try:
      same = json.loads(lines[0]) == self.header
    except json.JSONDecodeError:
      same = False
    if not same:
      logging.warning('%s holds the results of a stopped run with other weights or settings '
                      '(%d video(s)): every video is done again.', self.path, len(entries))
      os.remove(self.path)
      return {}
    return entries

  def say_kept(self, videos: Iterable[str]) -> None:
    """Says how many of `videos` a stopped run did, whose results this run keeps."""
    videos = list(videos)
    kept = sum(self.result(video) is not None for video in videos)
    if kept:
      logging.info('Going on from the run stopped in %s: %d of %d video(s) done there, with the '
                   'same weights and settings, are kept (%s); the other %d are done now.',
                   os.path.dirname(self.path), kept, len(videos), os.path.basename(self.path),
                   len(videos) - kept)

  def result(self, video: str) -> Optional[Dict[str, Any]]:
    """A stopped run's result for `video` if the file and its outputs are as that run left them."""
    entry = self.earlier.get(video)
    if (entry is None or entry['file'] != _file_identity(video)
        or not all(os.path.isfile(path) for path in entry['outputs'])):
      return None
    return entry['result']

  def record(self, video: str, result: Dict[str, Any], outputs: Iterable[str]) -> None:
    """Appends `video`'s result and the files written for it (flushed: a stop keeps it)."""
    if self._file is None:
      self._file = open(self.path, 'ab+')  # pylint: disable=consider-using-with
      if not self._file.tell():
        self._write(self.header)
      else:  # a last line cut short by a kill would swallow the next one
        self._file.seek(-1, os.SEEK_END)
        if self._file.read(1) != b'\n':
          self._file.write(b'\n')
    self._write({'video': video, 'file': _file_identity(video),
                 'outputs': [path for path in outputs if os.path.isfile(path)],
                 'result': result})

  def _write(self, line: Dict[str, Any]) -> None:
    with data_errors.writing(self.path):  # a full disk: one line naming it
      self._file.write(json.dumps(line).encode() + b'\n')
      self._file.flush()

  def finish(self) -> None:
    """The run has ended: its index is written, so a later run starts over."""
    if self._file is not None:
      self._file.close()
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.path)
