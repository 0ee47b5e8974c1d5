"""Predict and features over a long list of videos go on where a stopped run left off.

Scoring a real dataset's videos takes hours; a run stopped part-way (Ctrl-C, SIGTERM, a crash)
lost them all, since its CSV is written at the end. Now each video's result is appended, as it
is done, to a progress file in the output folder, `.<mode>_progress_<key>.jsonl`, whose header
names what does the work: the weights (a hash of their values, or of the export's files) and the
config. The key is a hash of the header, so runs with other weights or settings never share a
file. The same command run again keeps a video's result where the video file is the one that run
read and the files written for it are the ones this run would write, as that run left them (size,
modification and change times, inode: not rewritten since, by another run or another video); it
says how many it keeps and does the rest. A run that ends removes its file, so a later one starts
over, as before; those of stopped runs with other settings are named and left as they are.
"""

import contextlib
import glob
import hashlib
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import jax
import numpy as np
from absl import logging

from data import errors as data_errors
from salinet_jax.export import formats as export_formats


def weights_identity(predictor) -> str:
  """A hash of what scores the videos: the restored variables' values, or an export's format
  folder and its export.json (names, sizes, modification times)."""
  digest = hashlib.sha256()
  variables = getattr(predictor, 'variables', None)
  if variables is not None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
      value = np.asarray(jax.device_get(leaf))
      digest.update(f'{jax.tree_util.keystr(path)} {value.dtype} {value.shape}'.encode())
      digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
  directory = predictor.model.directory
  export = os.path.dirname(directory)
  files = [os.path.join(export, export_formats.EXPORT_JSON)]
  for root, folders, names in os.walk(directory):
    folders.sort()
    files += [os.path.join(root, name) for name in sorted(names)]
  for path in files:
    digest.update(f'{os.path.relpath(path, export)} {_file_identity(path)}\n'.encode())
  return digest.hexdigest()


def _file_identity(path: str) -> Optional[List[int]]:
  """What tells a file from another or a rewritten one at `path`; None where there is none."""
  try:
    stat = os.stat(path)
  except OSError:
    return None
  return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _entry(line: bytes) -> Optional[Dict[str, Any]]:
  """The entry a progress file's line holds; None for anything else (a line cut short by a
  kill, damaged bytes, a line edited by hand)."""
  try:
    entry = json.loads(line.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError):
    return None
  fields = {'video': str, 'file': list, 'outputs': list, 'result': dict}
  if not (isinstance(entry, dict)
          and all(isinstance(entry.get(key), kind) for key, kind in fields.items())
          and all(isinstance(output, list) and len(output) == 2 for output in entry['outputs'])):
    return None
  return entry


class Progress:
  """The results of the videos a run into `output_dir` has done, kept for the same command run
  again after a stop (see the module docstring)."""

  def __init__(self, output_dir: str, mode: str, config, predictor):
    self.header = {'mode': mode, 'weights': weights_identity(predictor),
                   'config': config.to_json_best_effort(sort_keys=True)}
    key = hashlib.sha256(json.dumps(self.header, sort_keys=True).encode()).hexdigest()[:16]
    self.path = os.path.join(output_dir, f'.{mode}_progress_{key}.jsonl')
    others = sorted(set(glob.glob(os.path.join(glob.escape(output_dir),
                                               f'.{mode}_progress_*.jsonl'))) - {self.path})
    if others:
      logging.warning('%d stopped run(s) with other weights or settings left results in %s (%s): '
                      'they are not used, and this run does every video it has not done itself.',
                      len(others), output_dir, ', '.join(os.path.basename(p) for p in others))
    self._start_anew = False
    self.earlier = self._read()
    self._file = None

  def _read(self) -> Dict[str, Dict[str, Any]]:
    """The entries of a stopped run with this header, by video path; {} if none (or if the
    file at this run's name holds another header: copied or renamed by hand)."""
    try:
      with open(self.path, 'rb') as f:
        lines = f.read().split(b'\n')
    except FileNotFoundError:
      return {}
    try:
      ours = json.loads(lines[0].decode('utf-8')) == self.header
    except (UnicodeDecodeError, json.JSONDecodeError):
      ours = False
    if not ours:
      self._start_anew = True
      return {}
    entries = {}
    for line in lines[1:]:
      entry = _entry(line)
      if entry is not None:
        entries[entry['video']] = entry
    return entries

  def kept(self, videos: Iterable[Sequence[Any]]) -> Dict[str, Dict[str, Any]]:
    """The results of `videos` ((path, outputs) pairs) a stopped run did that this run keeps
    (`result`), by path; says how many."""
    videos = list(videos)
    kept = {video: self.result(video, outputs) for video, outputs in videos}
    kept = {video: result for video, result in kept.items() if result is not None}
    if kept:
      logging.info('Going on from the run stopped in %s: %d of %d video(s) done there, with the '
                   'same weights and settings, are kept (%s); the other %d are done now.',
                   os.path.dirname(self.path), len(kept), len(videos),
                   os.path.basename(self.path), len(videos) - len(kept))
    return kept

  def result(self, video: str, outputs: Sequence[str]) -> Optional[Dict[str, Any]]:
    """A stopped run's result for `video`, whose outputs this run would write at `outputs`,
    if the file is the one it read and its outputs are those it wrote, as it left them."""
    entry = self.earlier.get(video)
    if entry is None or entry['file'] != _file_identity(video):
      return None
    for path, identity in entry['outputs']:
      if path not in outputs or identity != _file_identity(path):
        return None
    return entry['result']

  def record(self, video: str, result: Dict[str, Any], outputs: Iterable[str]) -> None:
    """Appends `video`'s result and the files written for it (flushed: a stop keeps it)."""
    if self._file is None:
      mode = 'wb' if self._start_anew else 'ab+'
      self._file = open(self.path, mode)  # pylint: disable=consider-using-with
      if not self._file.tell():
        self._write(self.header)
      else:  # a last line cut short by a kill would swallow the next one
        self._file.seek(-1, os.SEEK_END)
        if self._file.read(1) != b'\n':
          self._file.write(b'\n')
    self._write({'video': video, 'file': _file_identity(video),
                 'outputs': [[path, _file_identity(path)] for path in outputs
                             if os.path.isfile(path)],
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
