"""export(): a workdir's checkpoint written in each format, certified, then moved into OUT.

Files are assembled in a staging folder beside OUT and moved into place only once every format
has passed its certificate, so a refused export leaves OUT untouched. A format that cannot be
converted (or reloaded) at all is recorded as failed in export.json and the others are written,
unless OUT holds an earlier export: that is then kept and nothing is written.
"""

import dataclasses
import functools
import importlib.metadata
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from data import errors as data_errors
from salinet_jax import checkpoints
from salinet_jax import models
from salinet_jax.export import certificate
from salinet_jax.export import formats as formats_lib
from salinet_jax.export import onnx_support
from salinet_jax.export import rewrites
from salinet_jax.export import serving
from salinet_jax.export import source
from salinet_jax.export.errors import AlreadyExported
from salinet_jax.export.errors import ExportError
from salinet_jax.export.errors import ParityError

EXPORT_FORMAT_VERSION = 1
VERSION_PACKAGES = ('jax', 'jaxlib', 'flax', 'tensorflow-cpu', 'tensorflow', 'jax2onnx', 'onnx',
                    'onnx-ir', 'onnxruntime')


def parse_formats(value: Any) -> List[str]:
  names = [n.strip() for n in (value.split(',') if isinstance(value, str) else value)]
  names = [n for n in names if n]
  unknown = [n for n in names if n not in formats_lib.FORMATS]
  if unknown or not names:
    raise ExportError(f'Unknown export format(s) {unknown or names}: choose from '
                      f'{",".join(formats_lib.FORMATS)}.')
  return list(dict.fromkeys(names))


def parse_batch(value: Any) -> Optional[int]:
  """'dynamic' -> None (batch-polymorphic); 'N' -> N."""
  if value in (None, 'dynamic'):
    return None
  try:
    batch = int(value)
  except (TypeError, ValueError):
    batch = 0
  if batch < 1:
    raise ExportError(f"--batch must be 'dynamic' or a positive integer, got {value!r}.")
  return batch


def _inside(path: str, folder: str) -> bool:
  return os.path.commonpath([path, folder]) == folder


def _check_output(output: str, overwrite: bool, runs: Sequence[str]) -> str:
  """OUT as an absolute path, once it is known that the export may be moved there (nothing is
  created here): a new or empty folder, or an earlier export and nothing else (replaced with
  `overwrite`, else compared by `_refuse_unless_done`; never one of the `runs` it exports from,
  a folder that holds one, or its checkpoints), in a folder that can be written."""
  data_errors.refuse_path(output, '--output')
  output = os.path.realpath(output)
  for workdir in map(os.path.realpath, runs):
    if _inside(workdir, output):
      raise ExportError(f'--output {output} is or holds the workdir {workdir}: an export goes to '
                        'a folder of its own.')
    if _inside(output, checkpoints.checkpoint_dir(workdir)):
      raise ExportError(f'--output {output} lies in the checkpoints of {workdir}: an export goes '
                        'to a folder of its own.')
  if os.path.exists(output):
    if not os.path.isdir(output):
      raise ExportError(f'--output {output} exists and is not a directory.')
    present = set(os.listdir(output))
    others = sorted(present - {formats_lib.EXPORT_JSON, *formats_lib.FORMATS})
    an_export = formats_lib.EXPORT_JSON in present and not others
    if present and not overwrite and not an_export:
      raise _not_empty(output)
    if present and not an_export:
      raise ExportError(f'--output {output} holds files that are not an export\'s ('
                        + (', '.join(others[:5]) if formats_lib.EXPORT_JSON in present
                           else f'no {formats_lib.EXPORT_JSON}')
                        + '): --overwrite replaces only an earlier export; choose another folder.')
  existing = os.path.dirname(output)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ExportError(f'--output {output} cannot be created: {existing} is a file.')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ExportError(f'--output {output} cannot be created: {existing} is not writable.')
  return output


def _not_empty(output: str) -> ExportError:
  return ExportError(f'--output {output} exists and is not empty: choose another folder or pass '
                     '--overwrite.')


_ABSENT = object()


def _first_difference(there: Any, here: Any, path: str = '') -> Optional[Tuple[str, Any, Any]]:
  """(dotted path, value there, value here) of the first field where two export.json contents
  differ, else None; `here`'s fields are compared, in their order."""
  if isinstance(there, dict) and isinstance(here, dict):
    for key, value in here.items():
      found = _first_difference(there.get(key, _ABSENT), value, f'{path}.{key}' if path else key)
      if found:
        return found
    return None
  return None if there == here else (path, there, here)


def _shown(value: Any) -> str:
  text = 'none' if value is _ABSENT else value if isinstance(value, str) else json.dumps(value)
  return text if len(text) <= 70 else text[:67] + '...'


def _refuse_unless_done(output: str, planned: Dict[str, Any], formats: Sequence[str],
                        benchmark: int) -> None:
  """Where OUT holds an export, raises AlreadyExported when it is the one `planned` (export.json
  as this export would write it, before its outputs and formats) with `formats` and `benchmark`,
  its files the sizes it recorded: a finished command run again (a scheduler rerunning a job its
  time limit stopped just after the export was moved into place) has nothing to do. Raises
  ExportError naming the first difference otherwise."""
  try:
    with open(os.path.join(output, formats_lib.EXPORT_JSON)) as f:
      earlier = json.load(f)
    written = {fmt: entry for fmt, entry in earlier['formats'].items()
               if entry.get('status') == 'ok'}
    repeats = (earlier.get('throughput_clips_per_second') or {}).get('repeats', 0)
  except (OSError, ValueError, KeyError, AttributeError, TypeError):
    raise _not_empty(output) from None
  here = json.loads(json.dumps(planned))  # the types a reread export.json has
  for key in ('outputs', 'formats'):
    here.pop(key, None)
  here.update(formats=sorted(formats), benchmark=benchmark)
  found = _first_difference(dict(earlier, formats=sorted(written), benchmark=repeats), here)
  if found:
    name, there, now = found
    raise ExportError(f'--output {output} holds another export ({name}: {_shown(there)} there, '
                      f'{_shown(now)} here): choose another folder or pass --overwrite.')
  changed = [fmt for fmt, entry in written.items()
             if _size(os.path.join(output, fmt)) != entry.get('bytes')]
  if changed:
    raise ExportError(f'--output {output} holds this export, but its {", ".join(changed)} files '
                      'changed since it was written: pass --overwrite to export it again.')
  raise AlreadyExported(
      f'{output} already holds this export (step {planned["source"]["step"]} of '
      f'{planned["source"]["workdir"]}: {", ".join(written)}), nothing to do; --overwrite '
      'exports it again.', earlier)


# The platforms jax.export lowers for (jax.export.Exported.platforms).
LOWERING_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


def _check_platforms(platforms: Sequence[str], formats: Sequence[str]) -> Tuple[str, ...]:
  """The lowering platforms of StableHLO and SavedModel, which must include this host's: the
  certificate runs every export here (by default this host's platform alone). ONNX has
  none."""
  host = jax.export.default_export_platform()
  platforms = tuple(p.strip().lower() for p in platforms if p.strip()) or (host,)
  unknown = [p for p in platforms if p not in LOWERING_PLATFORMS]
  if unknown:
    # An unknown name was exported as a lowering nobody could run, said only as "not run here".
    raise ExportError(f'--platforms names {", ".join(unknown)}: lowering platforms are '
                      f'{", ".join(LOWERING_PLATFORMS)}'
                      + (" (a GPU is 'cuda' or 'rocm')" if 'gpu' in unknown else '') + '.')
  if host not in platforms and {'stablehlo', 'savedmodel'} & set(formats):
    raise ExportError(f'--platforms={",".join(platforms)} leaves out this host\'s platform '
                      f'({host}): the certificate reloads and runs every export here. Add it '
                      f'(--platforms={",".join((host,) + platforms)}), or export on a '
                      f'{platforms[0]} host.')
  return platforms


def _dtype_said(config_dtype: str, platforms: Sequence[str], formats: Sequence[str]) -> str:
  """The dtype the export computes in on every platform: the model is built on this host, so
  'bfloat16_on_accelerators' resolves to this host's (float32 on a CPU, bfloat16 on an
  accelerator). One computation serves all the lowering platforms (of StableHLO and
  SavedModel), so where they mix CPUs and accelerators, the others get this host's dtype too:
  said in a line."""
  computes_in = jnp.dtype(models.compute_dtype(config_dtype)).name
  host = jax.export.default_export_platform()
  others = [p for p in platforms if (p == 'cpu') != (host == 'cpu')]
  lowered = {'stablehlo', 'savedmodel'} & set(formats)
  if config_dtype == models.ACCELERATOR_BFLOAT16 and others and lowered:
    print(f"config.dtype='{config_dtype}' computes in {computes_in} on this {host} host, and "
          f'one export is one computation for all its --platforms: its {", ".join(others)} '
          f'lowering computes in {computes_in} too. For bfloat16 on accelerators and float32 on '
          'CPUs, export each kind on a host of that kind.', file=sys.stderr)
  return computes_in


def _versions() -> Dict[str, str]:
  versions = {}
  for package in VERSION_PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def _size(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  if not os.path.isdir(path):
    return -1
  return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
             for f in files)


def _one_line(error: BaseException) -> str:
  first = next((line.strip() for line in str(error).splitlines() if line.strip()), '')
  return f'{type(error).__name__}: {first}'[:500]


def _unfinished_run(step_dir: str) -> Optional[Dict[str, int]]:
  """{'step', 'run_steps'} when the checkpoint's run stopped short of its length, else None: the
  console's warning does not travel with the export."""
  unfinished = checkpoints.unfinished_run(step_dir)
  return None if unfinished is None else dict(zip(('step', 'run_steps'), unfinished))


def export(workdir: str, output: str, formats: Any = formats_lib.FORMATS, *,
           checkpoint: str = 'latest', batch: Any = 'dynamic', videos: Sequence[str] = (),
           num_videos: Optional[int] = None, overwrite: bool = False,
           tolerance: Optional[float] = None,
           platforms: Sequence[str] = (), benchmark: int = 0,
           split: Optional[str] = None) -> Dict[str, Any]:
  """Exports checkpoint `checkpoint` of `workdir` into `output`; returns export.json's content.
  The export is certified on the views of `videos` files, else of the first `num_videos`
  (default certificate.DEFAULT_NUM_VIDEOS) videos of `split` (default: the eval split).

  Raises ExportError (nothing written) on bad arguments, a workdir without a usable checkpoint
  or, without `overwrite`, an OUT holding another export; ParityError (nothing written) when a
  format exceeds its tolerance; AlreadyExported (nothing written) when OUT holds this very
  export. A format that fails to convert or reload is listed in `failed_formats`; the others
  are written (where OUT holds an earlier export, ExportError instead: it is kept and nothing
  is written).
  """
  formats = parse_formats(formats)
  batch_size = parse_batch(batch)
  run_dir = source.run_folder(workdir, checkpoint)
  if run_dir != os.path.realpath(workdir):
    print(f'--checkpoint is a step of the run {run_dir}, not of --workdir {workdir}: export.json '
          'records that run as the source.', file=sys.stderr)
  if 'savedmodel' in formats:  # its reload (the certificate's, then serving's) globs the path
    data_errors.refuse_brackets(output, '--output', "TensorFlow's SavedModel reader")
  output = _check_output(output, overwrite, (workdir, run_dir))
  platforms = _check_platforms(platforms, formats)
  if tolerance is not None and not tolerance >= 0:  # NaN too
    raise ExportError(f'--tolerance must be 0 or more, got {tolerance:g}.')
  formats_lib.require_packages(formats)
  if videos and (split is not None or num_videos is not None):
    raise ExportError('--split and --num_videos choose the eval-split videos that certify the '
                      'export; with --video the files given do: leave out --split and '
                      '--num_videos, or --video.')
  if num_videos is not None and num_videos < 1:
    raise ExportError(f'--num_videos must be positive, got {num_videos}.')
  start = time.perf_counter()
  run = source.restore(workdir, checkpoint)
  config = run.config
  computes_in = _dtype_said(config.dtype, platforms, formats)
  # A tolerance given is the one applied (0 demands equal outputs); else the dtype's.
  tolerance = (certificate.TOLERANCES.get(computes_in, 1e-4) if tolerance is None
               else float(tolerance))
  clips = certificate.parity_clips(config, videos, num_videos, split, run.decoding)
  specs = serving.input_specs(config, batch_size)
  serve = serving.make_serving_fn(run.model, config.data, serving.takes_num_valid(config))
  exported_fn = functools.partial(serve, run.variables)  # the variables become constants
  chunk = batch_size or min(len(clips.video), config.eval_batch_size * clips.views_per_video)
  summary: Dict[str, Any] = {
      'format_version': EXPORT_FORMAT_VERSION,
      'source': {'workdir': run_dir, 'checkpoint': run.checkpoint,
                 'checkpoint_path': run.path, 'step': run.step,
                 'checksums_sha256': checkpoints.checksums_digest(run.path),
                 'metrics': run.metrics, 'unfinished_run': _unfinished_run(run.path)},
      'model': config.model.name,
      'dtype': computes_in,
      'config_dtype': config.dtype,
      'classes': run.classes,
      'decoding': run.decoding,
      'batch': 'dynamic' if batch_size is None else batch_size,
      'platforms': list(platforms),
      'inputs': [s.to_json() for s in specs],
      'input_notes': serving.input_notes(specs),
      'outputs': None,  # below, from the reference run
      'views': serving.views_doc(config),
      'config': json.loads(config.to_json()),
      'parity': {
          'clips': clips.source, 'videos': clips.filenames, 'views': int(len(clips.video)),
          'reference': ('jax.jit of normalisation + model.apply(train=False) + softmax, '
                        f'variables as arguments, on {jax.default_backend()}'),
          # Each export runs here, on this host's lowering; the others are exported unrun.
          'platform_run': jax.export.default_export_platform(),
          'tolerance': tolerance, 'rule': certificate.RULE,
      },
      'formats': {},
      'versions': _versions(),
  }
  if os.path.exists(os.path.join(output, formats_lib.EXPORT_JSON)) and not overwrite:
    _refuse_unless_done(output, summary, formats, benchmark)
  jitted, on_device = jax.jit(serve), jax.device_put(run.variables)
  reference_run = functools.partial(  # fed the same padded chunks as the exports
      formats_lib.call_padded, lambda args: jitted(on_device, *args), batch_size, len(specs) > 1)
  reference = certificate.run_in_chunks(reference_run, clips, chunk)
  summary['outputs'] = serving.output_specs(reference, batch_size)
  with data_errors.replacing_folder(output) as staging:  # moved into place as the block ends
    job = _Job(summary=summary, output=output, staging=staging,
               exported_fn=exported_fn, specs=specs, clips=clips, chunk=chunk,
               reference=reference, eval_config=config.eval, tolerance=tolerance,
               platforms=platforms)
    timings = {}
    for fmt in formats:
      loaded = job.write_and_certify(fmt)
      if benchmark and loaded is not None:
        timings[fmt] = certificate.clips_per_second(loaded, clips, chunk, benchmark)
    refused = [(fmt, entry['parity']) for fmt, entry in summary['formats'].items()
               if entry['status'] == 'refused']
    if refused:
      raise ParityError('; '.join(certificate.refusal(fmt, c, tolerance) for fmt, c in refused)
                        + f'. Nothing written to {output}.')
    if benchmark:
      jit_rate = certificate.clips_per_second(reference_run, clips, chunk, benchmark)
      summary['throughput_clips_per_second'] = {
          'views': int(len(clips.video)), 'chunk': chunk, 'repeats': benchmark,
          **{k: round(v, 2) for k, v in {'jax_jit': jit_rate, **timings}.items()}}
    summary['failed_formats'] = [f for f, e in summary['formats'].items()
                                 if e['status'] == 'failed']
    if summary['failed_formats'] and os.path.exists(os.path.join(output,
                                                                  formats_lib.EXPORT_JSON)):
      raise ExportError(
          f'{", ".join(summary["failed_formats"])} failed (above): the earlier export in '
          f'{output} is kept and nothing is written; export to another folder to keep the '
          'formats that passed.')
    summary['export_seconds'] = round(time.perf_counter() - start, 2)
    job.write_json()
  return summary


@dataclasses.dataclass
class _Job:
  """One export in progress: what every format is written from and certified against."""
  summary: Dict[str, Any]  # export.json, its 'formats' filled in as they are done
  output: str
  staging: str
  exported_fn: Callable
  specs: Sequence[serving.InputSpec]
  clips: certificate.Clips
  chunk: int
  reference: Dict[str, Any]
  eval_config: Any
  tolerance: float
  platforms: Sequence[str]
  traced: Optional[rewrites.Traced] = None

  def __post_init__(self):
    self.abstract = serving.abstract_args(self.specs)  # one symbolic 'batch' for every format

  def _in_output(self, path: str) -> str:
    """Where the staged `path` goes once moved into place: what a full disk's line names (the
    staging folder is new, so its files are written in place)."""
    return os.path.join(self.output, os.path.relpath(path, self.staging))

  def write_json(self) -> None:
    path = os.path.join(self.staging, formats_lib.EXPORT_JSON)
    with data_errors.writing(self._in_output(path)), open(path, 'w') as f:
      json.dump(self.summary, f, indent=1)

  def _write(self, fmt: str, directory: str) -> None:
    abstract = self.abstract
    if fmt == 'savedmodel':
      formats_lib.write_savedmodel(self.exported_fn, self.specs, directory, self.platforms)
      return
    if self.traced is None:  # one trace serves StableHLO and ONNX
      self.traced = rewrites.trace(self.exported_fn, abstract)
    if fmt == 'stablehlo':
      formats_lib.write_stablehlo(self.traced, abstract, directory, self.platforms)
    else:
      formats_lib.write_onnx(self.traced, abstract, self.specs, directory,
                             sorted(self.reference),
                             {'salinet_jax_classes': json.dumps(self.summary['classes']),
                              'salinet_jax_views': json.dumps(self.summary['views'])})

  def write_and_certify(self, fmt: str) -> Optional[formats_lib.ExportedModel]:
    """Writes `fmt`, reloads it from disk and certifies it; records the outcome in the
    summary; returns the reloaded model if it passed."""
    directory = os.path.join(self.staging, fmt)
    began = time.perf_counter()
    try:
      with data_errors.writing(self._in_output(directory)):
        os.makedirs(directory)
        self._write(fmt, directory)
    except data_errors.NoSpace:
      raise  # not a format that failed: the export stops, in one line
    except Exception as e:  # pylint: disable=broad-except
      return self._failed(fmt, directory, _one_line(e), 'not exported')
    export_seconds = time.perf_counter() - began
    # Class names travel with each format's folder too (a server copying only savedmodel/ or
    # stablehlo/ would otherwise lose them; ONNX also carries them in its metadata).
    classes = os.path.join(directory, formats_lib.CLASSES_FILE)
    with data_errors.writing(self._in_output(classes)), open(classes, 'w') as f:
      f.write(''.join(f'{name}\n' for name in self.summary['classes']))
    self.write_json()  # the loader reads export.json
    try:
      loaded = formats_lib.load_exported(directory)
      began = time.perf_counter()
      outputs = certificate.run_in_chunks(loaded, self.clips, self.chunk)
      check_seconds = time.perf_counter() - began
    except Exception as e:  # pylint: disable=broad-except
      return self._failed(fmt, directory, f'reload and run: {_one_line(e)}',
                          'exported but it does not reload and run')
    parity = certificate.certify(self.reference, outputs, self.clips, self.eval_config,
                                 self.tolerance)
    entry = {'status': 'ok' if parity['passed'] else 'refused',
             'path': os.path.relpath(formats_lib.artifact(directory, fmt), self.staging),
             'bytes': _size(directory), 'export_seconds': round(export_seconds, 3),
             'parity_run_seconds': round(check_seconds, 3), 'parity': parity}
    if fmt == 'onnx':
      entry.update(opset=onnx_support.OPSET, runtime=formats_lib.ONNX_RUNTIME)
    self.summary['formats'][fmt] = entry
    return loaded if parity['passed'] else None

  def _failed(self, fmt: str, directory: str, reason: str, what: str) -> None:
    print(f'{fmt}: {what} ({self.summary["model"]}): {reason}', file=sys.stderr)
    shutil.rmtree(directory, ignore_errors=True)
    self.summary['formats'][fmt] = {'status': 'failed', 'error': reason}
