"""Export for serving (salinet_jax/export/).

Tiny runs of the demo SaliNet and a Hara 3D ResNet are trained once per module (2 steps); the tiny
S2DNet is the sampling stage of the session's shared two-stage run. Each is exported in every
format, its certificate checked and each format reloaded and run on views of another batch size;
predict mode runs through the SaliNet export. The exporter's own behaviour (fixed batch, --video
clips, refusal, a format that fails, the command line and its one-line errors) is tested on the
Hara run, the cheapest. ONNX needs requirements-export.txt: without it the ONNX parts are skipped,
saying so.
"""

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from PIL import Image

from configs import base as base_config
from data import records
from salinet_jax import checkpoints
from salinet_jax import engine
from salinet_jax import errors
from salinet_jax import export
from salinet_jax import predict
from salinet_jax import train
from salinet_jax.export import __main__ as cli
from salinet_jax.export import certificate as certificate_lib
from salinet_jax.export import formats
from salinet_jax.export import predictor as predictor_lib
from salinet_jax.export import source as export_source
from salinet_jax.export import rewrites
from salinet_jax.export import serving
from salinet_jax.export import source
from tests.conftest import REPO_ROOT
from tests.conftest import TESTDATA
from tests.conftest import tiny_config
from tests.conftest import tiny_s2dnet_config

HAVE_ONNX = all(importlib.util.find_spec(p) for p in ('jax2onnx', 'onnx', 'onnxruntime'))
NO_ONNX = ('ONNX left out: it needs jax2onnx, onnx and onnxruntime '
           '(pip install -r requirements-export.txt)')
FORMATS = ['stablehlo', 'savedmodel'] + (['onnx'] if HAVE_ONNX else [])
KINDS = ('salinet', 's2dnet', 'hara')
PANCAKE = TESTDATA / 'real_clips' / 'codec_fixtures' / 'flipping_a_pancake.mkv'
HOST_PLATFORM = jax.export.default_export_platform()
OTHER_PLATFORM = 'tpu' if HOST_PLATFORM != 'tpu' else 'cpu'
NO_PANCAKE = f'shared test data not found at {PANCAKE}'


def kind_config(kind: str, data_dir):
  if kind == 'salinet':  # the demo SaliNet, shrunk
    config = tiny_config(data_dir)
    # Native 3D convolutions compile faster than frame sums on CPU, and take ONNX through the
    # 3D-convolution rewrite.
    config.model.conv_impl = 'native'
    return config
  config = tiny_config(data_dir)  # hara_resnet3d as configs/fight_surv.py, with its stem max pool
  config.model = ml_collections.ConfigDict(dict(
      name='hara_resnet3d', depth=10, width=4, stem_temporal_kernel=3, stem_max_pool=True,
      dropout_rate=0.5, conv_impl='auto'))
  config.loss.name = 'cross_entropy'
  return config


@pytest.fixture(scope='module')
def trained(tiny_data_dir, tmp_path_factory, request):
  """kind -> (config, workdir) of a tiny run, trained on first use; 's2dnet' is the sampling
  stage (f_theta and the sampler train) of the shared two-stage run."""
  runs = {}

  def get(kind):
    if kind == 's2dnet':
      return request.getfixturevalue('s2dnet_stage_runs')['sampling'][:2]
    if kind not in runs:
      config = kind_config(kind, tiny_data_dir)
      workdir = str(tmp_path_factory.mktemp(kind) / 'run')
      train.train_and_evaluate(config, workdir)
      runs[kind] = config, workdir
    return runs[kind]

  return get


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
  """kind -> (config, workdir, OUT, summary) of an export of every format, made on first use."""
  exports = {}

  def get(kind):
    if kind not in exports:
      config, workdir = trained(kind)
      out = str(tmp_path_factory.mktemp(f'{kind}_export') / 'out')
      exports[kind] = config, workdir, out, export.export(workdir, out, FORMATS, num_videos=2)
    return exports[kind]

  return get


def _views(config, rows: int, seed: int = 1):
  """Random uint8 views (and valid-frame counts, padded like the pipeline) at the eval size."""
  rng = np.random.default_rng(seed)
  data = config.data
  video = rng.integers(0, 256, (rows, data.num_frames, data.eval_crop_size,
                                data.eval_crop_size, 3), dtype=np.uint8)
  if not serving.takes_num_valid(config):
    return [video]
  num_valid = rng.integers(1, data.num_frames + 1, (rows,)).astype(np.int32)
  video[np.arange(data.num_frames)[None, :] >= num_valid[:, None]] = 0
  return [video, num_valid]


def _assert_close(got, expected, what: str):
  assert set(got) == set(expected), what
  for key in expected:
    scale = max(1.0, float(np.abs(expected[key]).max()))
    np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-4 * scale,
                               err_msg=f'{what} {key}')


@pytest.mark.parametrize('kind', KINDS)
def test_export_all_formats_certified_and_reloadable(exported, kind):
  config, workdir, out, summary = exported(kind)
  on_disk = json.loads(open(os.path.join(out, 'export.json')).read())
  assert on_disk['formats'].keys() == summary['formats'].keys() == set(FORMATS)
  assert on_disk['source']['step'] == 2 and on_disk['source']['checkpoint'] == 'latest (step 2)'
  assert on_disk['source']['checkpoint_path'] == os.path.join(workdir, 'checkpoints', '2')
  assert on_disk['classes'] == list(engine.checkpoint_classes(workdir, config))
  assert on_disk['config']['model']['name'] == config.model.name
  data = config.data
  views = data.eval_num_clips * data.eval_num_crops
  assert on_disk['parity']['views'] == 2 * views and on_disk['views']['per_video'] == views
  assert on_disk['views']['eval_crop_rounding'] == data.eval_crop_rounding  # a server's crops
  assert on_disk['views']['resize_filter'] == data.resize_filter
  assert on_disk['parity']['tolerance'] == 1e-4 and on_disk['failed_formats'] == []
  video = {'name': 'video', 'shape': [None, data.num_frames, 16, 16, 3], 'dtype': 'uint8'}
  assert on_disk['inputs'] == [video] + (
      [{'name': 'num_valid', 'shape': [None], 'dtype': 'int32'}] if kind == 's2dnet' else [])
  extra = {'salinet': {'saliency_final'}, 'hara': set(), 's2dnet': set(serving.S2DNET_OUTPUTS)}
  assert {o['name'] for o in on_disk['outputs']} == {'probabilities', 'logits'} | extra[kind]
  assert os.listdir(os.path.dirname(out)) == ['out']  # no staging folder left behind
  for fmt in FORMATS:
    entry = on_disk['formats'][fmt]
    assert entry['status'] == 'ok', entry
    parity = entry['parity']
    assert parity['passed'] and not parity['exceeded'] and not parity['missing_outputs']
    assert parity['max_abs_diff']['probabilities'] <= 1e-4
    assert parity['top1_agreement_views'] == parity['top1_agreement_videos'] == 1.0
    assert set(parity['max_abs_diff']) == {o['name'] for o in on_disk['outputs']}
    assert entry['bytes'] > 10_000 and os.path.exists(os.path.join(out, entry['path']))
    with open(os.path.join(out, fmt, formats.CLASSES_FILE)) as f:  # travels with the folder
      assert f.read().splitlines() == on_disk['classes']

  # Each format reloaded from disk on 3 other views (the certificate ran batches of 4), against
  # StableHLO, which the certificate found equal to the jitted model.
  args = _views(config, rows=3)
  expected = export.load_exported(os.path.join(out, 'stablehlo'))(*args)
  assert expected['probabilities'].shape == (3, 4)
  np.testing.assert_allclose(expected['probabilities'].sum(-1), 1.0, atol=1e-5)
  for fmt in FORMATS[1:]:
    _assert_close(export.load_exported(os.path.join(out, fmt))(*args), expected, fmt)
  if HAVE_ONNX:  # valid ONNX with its shapes (S2DNet's failed the full check: a rank-5 Max)
    import onnx  # pylint: disable=g-import-not-at-top
    onnx.checker.check_model(onnx.load(os.path.join(out, 'onnx', formats.ONNX_FILE)),
                             full_check=True)
  if kind == 's2dnet':  # a row with no real frame, or more than fit, is NaN in every format
    # (it was scored as a blank clip, with probabilities that looked like any other's)
    video, num_valid = args
    num_valid = np.asarray([0, 2, data.num_frames + 1], np.int32)
    for fmt in FORMATS:
      got = export.load_exported(os.path.join(out, fmt))(video, num_valid)
      assert np.isnan(got['probabilities'][[0, 2]]).all(), fmt
      assert np.isfinite(got['probabilities'][1]).all(), fmt
      indices = [name for name, value in got.items() if np.asarray(value).dtype.kind == 'i']
      assert indices and all((np.asarray(got[name])[[0, 2]] == -1).all() for name in indices)
    # Frames past num_valid are padding: what they hold changes nothing (mutation audit: one
    # frame too many taken as real passed every test).
    num_valid = np.asarray([1, 2, data.num_frames - 1], np.int32)
    padding = np.arange(data.num_frames)[None, :] >= num_valid[:, None]
    video = np.where(padding[..., None, None, None], 0, video).astype(np.uint8)
    noisy = video.copy()
    noisy[padding] = np.random.default_rng(3).integers(0, 256, noisy[padding].shape)
    serve = export.load_exported(os.path.join(out, 'stablehlo'))
    _assert_close(serve(noisy, num_valid), serve(video, num_valid), 'noise in the padding')
  # The same export again finds it done: every format's files the sizes export.json recorded,
  # after the reloads above too.
  with pytest.raises(export.AlreadyExported, match=f'^{re.escape(out)} already holds this '):
    export.export(workdir, out, FORMATS, num_videos=2)
  if not HAVE_ONNX:
    pytest.skip(f'{NO_ONNX}; stablehlo and savedmodel passed')


@pytest.mark.skipif(not PANCAKE.exists(), reason=NO_PANCAKE)
def test_predict_through_an_export(exported, tmp_path, monkeypatch, caplog):
  """--config.predict.exported=OUT/FORMAT: the checkpoint's top-5, CSV and picture, without the
  checkpoint or any record; view settings given beside it are not used, and that is said."""
  config, workdir, out, _ = exported('salinet')
  from_checkpoint = predict.predict(config, workdir, [str(PANCAKE)], str(tmp_path / 'ckpt'))[0]
  config = ml_collections.ConfigDict(config.to_dict())
  config.predict.exported = os.path.join(out, FORMATS[-1])
  monkeypatch.setattr(records, 'ShardWriter', None)  # no temporary records
  monkeypatch.setattr(predict.engine, 'Engine', None)  # no checkpoint
  through = predict.predict(config, str(tmp_path / 'no_workdir'), [str(PANCAKE)],
                            str(tmp_path / 'export'))[0]
  assert through['ok'] and FORMATS[-1] in through['checkpoint']
  assert [n for n, _ in through['top5']] == [n for n, _ in from_checkpoint['top5']]
  np.testing.assert_allclose([p for _, p in through['top5']],
                             [p for _, p in from_checkpoint['top5']], atol=1e-4)
  tables = []
  for name in ('ckpt', 'export'):
    with open(tmp_path / name / predict.PREDICTIONS_FILE) as f:
      tables.append(list(csv.reader(f)))
    assert os.path.getsize(tmp_path / name / '000_flipping_a_pancake.mkv.png') > 1000
  assert tables[0][0] == tables[1][0] and len(tables[0]) == len(tables[1]) == 2
  assert [row[:3] for row in tables[0]] == [row[:3] for row in tables[1]]
  assert 'is not used' not in caplog.text

  stored_reduction = config.eval.view_reduction
  config.eval.view_reduction = 'max' if stored_reduction != 'max' else 'mean'
  again = predict.predict(config, str(tmp_path / 'no_workdir'), [str(PANCAKE)],
                          str(tmp_path / 'export_other_views'))[0]
  assert again['top5'] == through['top5']  # the export's own views and reduction
  assert (f"eval.view_reduction: stored {stored_reduction!r}, given "
          f"{config.eval.view_reduction!r}") in caplog.text and 'is not used' in caplog.text


@pytest.mark.skipif(not PANCAKE.exists(), reason=NO_PANCAKE)
def test_predict_through_an_export_that_predates_a_view_setting(exported, tmp_path, monkeypatch,
                                                                caplog):
  """An export made before config.data.eval_crop_rounding and resize_filter existed was made
  with their defaults, the only ones there were: predicting through it takes them, says so in
  one line, and calls the default given beside it no difference (review: AttributeError
  'resize_filter', after a warning that the given 'bilinear' differed from '<absent>')."""
  config, _, out, _ = exported('salinet')
  old = tmp_path / 'old_export'
  shutil.copytree(out, old)
  with open(old / formats.EXPORT_JSON) as f:
    metadata = json.load(f)
  for field in ('eval_crop_rounding', 'resize_filter'):
    del metadata['config']['data'][field]
    del metadata['views'][field]
  with open(old / formats.EXPORT_JSON, 'w') as f:
    json.dump(metadata, f)
  config = ml_collections.ConfigDict(config.to_dict())
  monkeypatch.setattr(records, 'ShardWriter', None)  # no temporary records
  monkeypatch.setattr(predict.engine, 'Engine', None)  # no checkpoint
  results = {}
  for name, root in (('new', out), ('old', old)):
    config.predict.exported = os.path.join(root, FORMATS[0])
    results[name] = predict.predict(config, str(tmp_path / 'no_workdir'), [str(PANCAKE)],
                                    str(tmp_path / name))[0]
  assert results['old']['ok'] and results['old']['top5'] == results['new']['top5']
  assert (f'The {FORMATS[0]} export {old / FORMATS[0]} predates config.data.eval_crop_rounding, '
          "config.data.resize_filter: their defaults are used (data.eval_crop_rounding="
          "'pyslowfast', data.resize_filter='bilinear').") in caplog.text, caplog.text
  assert 'is not used' not in caplog.text


def test_windowed_predict_needs_the_checkpoint(tmp_path):
  config = tiny_config(tmp_path)
  config.predict.exported = str(tmp_path / 'out' / 'onnx')
  config.predict.window_seconds = 2.0
  (tmp_path / 'a.mp4').write_bytes(b'')
  with pytest.raises(errors.ConfigError, match=r'^config\.predict\.window_seconds needs the '
                     r'checkpoint: windowed predict does not run through an export; unset '):
    predict.predict(config, str(tmp_path), [str(tmp_path / 'a.mp4')], str(tmp_path / 'p'))


@pytest.mark.skipif(not PANCAKE.exists(), reason=NO_PANCAKE)
def test_fixed_batch_export_on_video_clips(trained, tmp_path, monkeypatch):
  """--batch=2 --video=FILE: parity clips decoded in memory; 3 views run as 2 chunks (the last
  padded) and match the checkpoint's jitted model."""
  _, workdir = trained('hara')
  monkeypatch.setattr(records, 'ShardWriter', None)
  summary = export.export(workdir, str(tmp_path / 'fixed'), FORMATS, batch='2',
                          videos=[str(PANCAKE)])
  assert summary['parity']['clips'] == '--video: 1 file(s)'
  assert summary['parity']['videos'] == ['flipping_a_pancake.mkv']
  assert summary['batch'] == 2 and summary['inputs'][0]['shape'][0] == 2
  run = source.restore(workdir, 'latest')
  serve = jax.jit(serving.make_serving_fn(run.model, run.config.data, False))
  args = _views(run.config, rows=3)
  expected = jax.tree.map(np.asarray, serve(run.variables, *args))
  for fmt in FORMATS:
    model = export.load_exported(str(tmp_path / 'fixed' / fmt))
    assert model.batch == 2
    _assert_close(model(*args), expected, fmt)
  # The certificate's views of --video are predict's views of that file (they were decoded
  # straight at the eval short side, ignoring how the run's records were decoded).
  clips = export.certificate.parity_clips(run.config, [str(PANCAKE)], decoding=run.decoding)
  predictor = predict.Predictor(run.config, workdir)
  decoded = predictor.decode(str(PANCAKE))
  views = next(iter(predictor.batches(decoded.jpegs, decoded.fps, 'pancake')))['video'][0]
  np.testing.assert_array_equal(clips.video, views)


def test_refuses_beyond_tolerance_and_writes_nothing(trained, tmp_path, monkeypatch):
  _, workdir = trained('hara')
  write = formats.write_stablehlo

  def off_by_a_little(traced, abstract, directory, platforms):
    def shifted(*args):
      outputs = dict(traced.function()(*args))
      outputs['probabilities'] = outputs['probabilities'] + 3e-3
      return outputs
    write(rewrites.trace(shifted, abstract), abstract, directory, platforms)

  monkeypatch.setattr(formats, 'write_stablehlo', off_by_a_little)
  out = tmp_path / 'refused'
  with pytest.raises(export.ParityError, match=r'^stablehlo probabilities differ from the jitted '
                     r'model by 0\.003 \(allowed 0\.0001, tolerance 0\.0001; top-1 agreement '
                     r'1\.000\)\. Nothing written to ') as error:
    export.export(workdir, str(out), ['stablehlo', 'savedmodel'], num_videos=1)
  assert 'savedmodel' not in str(error.value)
  assert os.listdir(tmp_path) == []  # neither OUT nor a staging folder


def test_a_refusal_at_tolerance_zero_names_the_worst_output():
  """`--tolerance=0` (README: demands equal outputs) ended in ZeroDivisionError (audit) when
  picking the worst output by its share of the allowed difference; a NaN difference is worst."""
  certificate = {'missing_outputs': [], 'top1_agreement_views': 1.0,
                 'exceeded': {'logits': 2e-7, 'probabilities': 1.2e-7},
                 'allowed_abs_diff': {'logits': 0.0, 'probabilities': 0.0}}
  assert certificate_lib.refusal('stablehlo', certificate, 0.0) == (
      'stablehlo logits differ from the jitted model by 2e-07 (allowed 0, tolerance 0; top-1 '
      'agreement 1.000)')
  certificate['exceeded']['probabilities'] = float('nan')
  certificate['allowed_abs_diff']['probabilities'] = 1e-4
  assert certificate_lib.refusal('stablehlo', certificate, 1e-4).startswith(
      'stablehlo probabilities differ from the jitted model by nan (allowed 0.0001,')


def test_a_misspelt_checkpoint_selector_is_named_as_one(tmp_path):
  """`--checkpoint=bset` said 'Checkpoint path <cwd>/bset does not exist.' (README audit), not
  which words the flag takes, as main.py does for the same mistake."""
  with pytest.raises(errors.UserError, match=r"^--checkpoint must be 'best', 'latest' or the "
                     r"path of a checkpoint step directory, got 'bset'\.$"):
    source.locate(str(tmp_path), 'bset')
  with pytest.raises(errors.UserError, match=r'^Checkpoint path /no/such/step does not exist\.$'):
    source.locate(str(tmp_path), '/no/such/step')


def _flags(**overrides):
  values = dict(workdir=None, output=None, formats='stablehlo', checkpoint='best',
                batch='dynamic', video=[], num_videos=1, overwrite=False, tolerance=None,
                platforms=[], benchmark=0, split=None)
  values.update(overrides)
  return types.SimpleNamespace(**values)


def test_ctrl_c_during_an_export_ends_in_one_line_and_writes_nothing(trained, tmp_path,
                                                                    monkeypatch, capsys):
  """It printed a KeyboardInterrupt traceback (the README says every command ends in one line)."""
  _, workdir = trained('hara')

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(formats, 'write_stablehlo', interrupted)
  out = tmp_path / 'out'
  assert cli.main(['export'], _flags(workdir=workdir, output=str(out))) == 130
  assert capsys.readouterr().err == (f'Interrupted by Ctrl-C: nothing was written to {out}. '
                                     'Exit status 130.\n')
  assert os.listdir(tmp_path) == []  # nor is a staging folder left beside it


@pytest.mark.parametrize('fmt, no_new_files, named', [
    ('stablehlo', False, 'out/stablehlo'), ('savedmodel', False, 'out/savedmodel'),
    ('stablehlo', True, 'out')])
def test_a_full_disk_ends_the_export_in_one_line_and_writes_nothing(trained, small_disk, capsys,
                                                                    fmt, no_new_files, named):
  """The export had never been tried on a full disk: each format's write is caught as a format
  that failed, so the refusal must still end the command (nothing half-exported is kept). Where
  no folder can be made either (a full ext4 disk), it ended in a traceback."""
  from tests.conftest import fill_disk  # pylint: disable=g-import-not-at-top
  _, workdir = trained('hara')
  fill_disk(small_disk, inodes=no_new_files)
  before = sorted(os.listdir(small_disk))
  out = small_disk / 'out'
  assert cli.main(['export'], _flags(workdir=workdir, output=str(out), formats=fmt)) == 1
  printed = capsys.readouterr()
  assert printed.err == (f'error: export failed: Cannot write {small_disk / named}: No space '
                         'left on device; the command stopped there. Nothing was written to '
                         f'{out}; free some space and export again.\n')
  assert sorted(os.listdir(small_disk)) == before


def test_a_format_that_cannot_convert_is_recorded(trained, tmp_path, monkeypatch, capsys):
  _, workdir = trained('hara')

  def unsupported(*args, **kwargs):
    raise NotImplementedError('Unsupported primitive: some_op\nmore details')

  monkeypatch.setattr(formats, 'write_onnx', unsupported)
  monkeypatch.setitem(formats.FORMAT_PACKAGES, 'onnx', ())
  out = tmp_path / 'partial'
  assert cli.main(['export'], _flags(workdir=workdir, output=str(out),
                                     formats='stablehlo,onnx')) == 3
  printed = capsys.readouterr()
  assert 'onnx: FAILED: NotImplementedError: Unsupported primitive: some_op' in printed.out
  assert ('onnx: not exported (hara_resnet3d): NotImplementedError: Unsupported primitive: '
          'some_op') in printed.err
  recorded = json.loads((out / 'export.json').read_text())
  assert recorded['formats']['onnx'] == {
      'status': 'failed', 'error': 'NotImplementedError: Unsupported primitive: some_op'}
  assert recorded['formats']['stablehlo']['status'] == 'ok'
  assert recorded['failed_formats'] == ['onnx']
  assert sorted(os.listdir(out)) == ['export.json', 'stablehlo']


def test_command_line(trained, tmp_path, capsys):
  _, workdir = trained('hara')
  out = tmp_path / 'cli'
  flags = _flags(workdir=workdir, output=str(out), checkpoint='latest', benchmark=1)
  assert cli.main(['export'], flags) == 0
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].startswith('stablehlo: stablehlo/model.jaxexport (')
  assert printed[0].endswith('top-1 agreement 1.000 of views / 1.000 of videos')
  assert printed[1].startswith(f'Wrote {out / "export.json"} (')
  summary = json.loads((out / 'export.json').read_text())
  assert summary['source']['checkpoint'] == 'latest (step 2)'
  assert set(summary['throughput_clips_per_second']) >= {'jax_jit', 'stablehlo'}
  flags.benchmark = 0
  assert cli.main(['export'], flags) == 1  # OUT holds an export, with timings
  assert capsys.readouterr().err.splitlines() == [
      f'error: export failed: --output {out} holds another export (benchmark: 1 there, 0 here): '
      'choose another folder or pass --overwrite.']
  flags.overwrite = True
  flags.checkpoint = os.path.join(workdir, 'checkpoints', '2')
  assert cli.main(['export'], flags) == 0
  assert sorted(os.listdir(tmp_path)) == ['cli']
  summary = json.loads((out / 'export.json').read_text())
  assert summary['source']['checkpoint'] == flags.checkpoint


def _files_of(folder) -> dict:
  return {os.path.relpath(os.path.join(root, name), folder):
          open(os.path.join(root, name), 'rb').read()
          for root, _, names in os.walk(folder) for name in names}


def test_the_same_export_again_finds_it_done_and_another_is_refused_naming_the_difference(
    trained, tmp_path, capsys):
  """An export stopped by SIGTERM just after it moved its files into place ends with status 143,
  its outputs complete; a scheduler reran the same command, and it was refused (OUT is not
  empty). The same export again now says it is there and ends with status 0, writing nothing;
  any other export into OUT is refused naming what differs, as is an OUT whose files changed."""
  _, workdir = trained('hara')
  out = tmp_path / 'out'
  flags = _flags(workdir=workdir, output=str(out), checkpoint='latest')
  assert cli.main(['export'], flags) == 0
  capsys.readouterr()
  written = _files_of(out)
  assert cli.main(['export'], flags) == 0
  printed = capsys.readouterr()
  assert printed.out.splitlines() == [
      f'{out} already holds this export (step 2 of {os.path.realpath(workdir)}: stablehlo), '
      'nothing to do; --overwrite exports it again.']
  assert printed.err == ''
  assert _files_of(out) == written
  assert sorted(os.listdir(tmp_path)) == ['out']

  another = _flags(workdir=workdir, output=str(out), checkpoint='latest', tolerance=0.5)
  assert cli.main(['export'], another) == 1
  assert capsys.readouterr().err.splitlines() == [
      f'error: export failed: --output {out} holds another export (parity.tolerance: 0.0001 '
      'there, 0.5 here): choose another folder or pass --overwrite.']
  assert cli.main(['export'], _flags(workdir=workdir, output=str(out), checkpoint='latest',
                                     formats='stablehlo,savedmodel')) == 1
  assert ('holds another export (formats: ["stablehlo"] there, ["savedmodel", "stablehlo"] '
          'here)') in capsys.readouterr().err

  # The same step number of other weights (a run retrained in the same workdir).
  summary = json.loads((out / 'export.json').read_text())
  summary['source']['checksums_sha256'] = '0' * 64
  (out / 'export.json').write_text(json.dumps(summary, indent=1))
  assert cli.main(['export'], flags) == 1
  assert 'holds another export (source.checksums_sha256: ' in capsys.readouterr().err
  (out / 'export.json').write_bytes(written['export.json'])

  with open(out / summary['formats']['stablehlo']['path'], 'ab') as f:
    f.write(b'changed')
  assert cli.main(['export'], flags) == 1
  assert capsys.readouterr().err.splitlines() == [
      f'error: export failed: --output {out} holds this export, but its stablehlo files changed '
      'since it was written: pass --overwrite to export it again.']


@pytest.mark.parametrize('overrides,expected', [
    (dict(formats='stablehlo,tflite'),
     "Unknown export format(s) ['tflite']: choose from stablehlo,savedmodel,onnx."),
    (dict(batch='0'), "--batch must be 'dynamic' or a positive integer, got '0'."),
    (dict(batch='two'), "--batch must be 'dynamic' or a positive integer, got 'two'."),
    (dict(checkpoint='/no/such/step'), 'Checkpoint path /no/such/step does not exist.'),
])
def test_bad_arguments_fail_with_one_line(tmp_path, capsys, overrides, expected):
  flags = _flags(workdir=str(tmp_path), output=str(tmp_path / 'out'), **overrides)
  assert cli.main(['export'], flags) == 1
  assert capsys.readouterr().err.splitlines() == [f'error: export failed: {expected}']
  assert not (tmp_path / 'out').exists()


def test_a_format_without_its_packages_fails_with_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(formats.FORMAT_PACKAGES, 'onnx', ('onnx', 'no_such_package_xyz'))
  flags = _flags(workdir=str(tmp_path), output=str(tmp_path / 'out'), formats='stablehlo,onnx')
  assert cli.main(['export'], flags) == 1
  assert capsys.readouterr().err.splitlines() == [
      'error: export failed: Format onnx needs no_such_package_xyz: pip install -r '
      'requirements-export.txt']


def test_workdir_without_checkpoints_fails_with_one_line(tmp_path):
  """Through the real command line: exit status 1 and one line saying what to do."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  proc = subprocess.run(
      [sys.executable, '-m', 'salinet_jax.export', f'--workdir={workdir}',
       f'--output={tmp_path / "out"}'], cwd=REPO_ROOT, capture_output=True, text=True,
      timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1:] == [
      f'error: export failed: No checkpoint in {workdir}/checkpoints: train first, or pass '
      '--checkpoint=PATH.'], proc.stderr[-2000:]
  assert not (tmp_path / 'out').exists()


def test_rewrites_are_exact():
  """The ONNX and SavedModel rewrites give the originals' values: convolutions and window sums
  up to float rounding, max pooling and top_k (values, indices, order of ties) exactly. Every
  3D convolution is rewritten (mutation audit: a rule that kept them all passed), and the
  window parameters SaliNet's padded average pooling takes (padding, a strided window of 1)
  and unequal dilations are tried (a sum padded with ones, a strided axis of size 1 skipped,
  window dilation ignored, or height and width dilation swapped passed)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 9, 9, 4)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 3, 4, 6)).astype(np.float32)
  grouped = rng.normal(size=(6, 2, 2, 1, 3)).astype(np.float32)  # OIDHW, 2 groups

  def model(x):
    conv = jax.nn.relu(jax.lax.conv_general_dilated(  # relu: a custom_jvp call to inline
        x, kernel, (2, 2, 1), ((1, 2), (1, 1), (0, 0)), rhs_dilation=(2, 2, 1),
        dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC')))
    channels_first = jax.lax.conv_general_dilated(
        jax.numpy.moveaxis(x, -1, 1), grouped, (1, 1, 2), 'SAME', feature_group_count=2,
        dimension_numbers=('NCDHW', 'OIDHW', 'NCDHW'))
    pooled = jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 3, 3, 3, 1), (1, 2, 2, 2, 1),
                                   ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, 2, 2, 1), (1, 1, 2, 2, 1),
                                   'VALID')
    padded_sum = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, 2, 2, 1), (1, 2, 2, 2, 1),
                                       ((0, 0), (0, 0), (1, 1), (0, 1), (0, 0)),
                                       window_dilation=(1, 1, 2, 1, 1))
    values, indices = jax.lax.top_k(jax.numpy.round(2 * x.reshape(2, -1)), 7)  # many ties
    return conv, channels_first, summed, padded_sum, pooled, values, indices

  rules = {**rewrites.ONNX_RULES, **rewrites.SAVEDMODEL_RULES}
  rewritten = rewrites.rewrite_primitives(model, rules)
  remaining = {e.primitive.name for e in rewrites.trace(rewritten, [x]).closed.jaxpr.eqns}
  assert not {'reduce_window_max', 'reduce_window_sum', 'top_k'} & remaining
  convolved = [e.invars[0].aval.ndim for e in rewrites.trace(rewritten, [x]).closed.jaxpr.eqns
               if e.primitive.name == 'conv_general_dilated']
  assert convolved and set(convolved) == {4}, convolved  # no 3D convolution left
  expected = [np.asarray(v) for v in jax.jit(model)(x)]
  got = [np.asarray(v) for v in jax.jit(rewritten)(x)]
  close = ('3D conv', 'grouped channels-first conv', 'window sum', 'padded dilated window sum')
  for name, a, b in zip(close, got, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
  for name, a, b in zip(('max pool', 'top_k values', 'top_k indices'), got[4:], expected[4:]):
    np.testing.assert_array_equal(a, b, err_msg=name)


def _a_run_folder(root):
  """A workdir's files (as far as the output checks look): a log and a checkpoint step."""
  workdir = root / 'run'
  (workdir / 'checkpoints' / '2').mkdir(parents=True)
  (workdir / 'log.txt').write_text('a training log\n')
  (root / 'other_run').mkdir()
  (root / 'other_run' / 'log.txt').write_text('another run\n')
  (root / 'notes').mkdir()
  (root / 'notes' / 'todo.txt').write_text('keep me\n')
  (root / 'a_file').write_text('a file\n')
  (root / 'an_export' / 'nested').mkdir(parents=True)  # an export.json beside other files
  for folder in (root / 'an_export', root / 'an_export' / 'nested'):
    (folder / 'export.json').write_text('{}')
  (root / 'an_export' / 'todo.txt').write_text('keep me\n')
  return workdir


@pytest.mark.parametrize('output, overrides, expected', [
    ('run', {}, 'is or holds the workdir'),
    ('.', {}, 'is or holds the workdir'),
    ('run/checkpoints', {}, 'lies in the checkpoints of'),
    ('run/checkpoints/2/export', {}, 'lies in the checkpoints of'),
    ('notes', {}, "holds files that are not an export's (no export.json): --overwrite replaces "
                  'only an earlier export'),
    ('an_export', {}, "holds files that are not an export's (nested, todo.txt)"),
    ('a_file/out', {}, '--output {root}/a_file/out cannot be created: {root}/a_file is a file.'),
    ('new/deeper/out', {'platforms': [OTHER_PLATFORM]},
     f"--platforms={OTHER_PLATFORM} leaves out this host's platform ({HOST_PLATFORM}): the "
     'certificate reloads and runs every export here'),
    ('new/deeper/out', {'tolerance': -1.0}, '--tolerance must be 0 or more, got -1.'),
    # NaN refused every format as over 'allowed nan' (review)
    ('new/deeper/out', {'tolerance': float('nan')}, '--tolerance must be 0 or more, got nan.'),
    # A misspelt platform was exported as a lowering nobody could run, said as "not run here".
    ('new/deeper/out', {'platforms': [HOST_PLATFORM, 'cdua']},
     '--platforms names cdua: lowering platforms are cpu, cuda, rocm, tpu.'),
    ('new/deeper/out', {'platforms': [HOST_PLATFORM, 'gpu']},
     "--platforms names gpu: lowering platforms are cpu, cuda, rocm, tpu (a GPU is 'cuda' or "
     "'rocm')."),
])
def test_overwrite_never_replaces_what_is_not_an_export(tmp_path, capsys, output, overrides,
                                                         expected):
  """--overwrite replaced whatever --output named: the workdir (its checkpoints, log and config
  gone, exit 0), a folder holding other runs, or the run's checkpoints folder. --platforms=cuda
  on a CPU host exported, failed its own reload and deleted the formats it replaced; a negative
  tolerance was reported as a parity failure; an output under a file ended in a traceback. A
  refusal creates no folder either."""
  workdir = _a_run_folder(tmp_path)
  before = sorted(str(p) for p in tmp_path.rglob('*'))
  flags = _flags(workdir=str(workdir), output=str(tmp_path / output), overwrite=True,
                 **overrides)
  assert cli.main(['export'], flags) == 1
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith('error: export failed: '), err
  assert expected.format(root=tmp_path) in err[0], err
  assert sorted(str(p) for p in tmp_path.rglob('*')) == before  # nothing moved or removed


def test_a_failed_format_never_replaces_an_earlier_export(trained, tmp_path, monkeypatch,
                                                          capsys):
  """With --overwrite, a format that failed (e.g. --platforms that cannot run here) deleted the
  earlier export's working copy of that format."""
  _, workdir = trained('hara')
  out = tmp_path / 'out'
  assert cli.main(['export'], _flags(workdir=workdir, output=str(out), tolerance=0.5)) == 0
  earlier = (out / 'export.json').read_text()
  assert json.loads(earlier)['parity']['tolerance'] == 0.5  # as given
  assert json.loads(earlier)['parity']['platform_run'] == HOST_PLATFORM
  # What predict does to the summed logits (evaluate.view_probabilities), for a server to match.
  assert json.loads(earlier)['views']['probabilities'] == (
      'softmax of the mean over the views of the logits')

  def unsupported(*args, **kwargs):
    raise NotImplementedError('Unsupported primitive: some_op')

  monkeypatch.setattr(formats, 'write_stablehlo', unsupported)
  capsys.readouterr()
  assert cli.main(['export'], _flags(workdir=workdir, output=str(out), overwrite=True)) == 1
  assert capsys.readouterr().err.splitlines()[-1] == (
      f'error: export failed: stablehlo failed (above): the earlier export in {out} is kept and '
      'nothing is written; export to another folder to keep the formats that passed.')
  assert (out / 'export.json').read_text() == earlier
  assert sorted(os.listdir(out)) == ['export.json', 'stablehlo']
  assert sorted(os.listdir(tmp_path)) == ['out']  # no staging folder left


def test_a_checkpoint_of_another_run_is_recorded_as_that_runs(trained, tmp_path, capsys):
  """--workdir=A --checkpoint=B/checkpoints/N exported B's model with A recorded as its source,
  without a word; and B was not protected from --output."""
  _, hara = trained('hara')
  _, salinet = trained('salinet')
  step = os.path.join(salinet, 'checkpoints', '2')
  out = tmp_path / 'out'
  assert cli.main(['export'], _flags(workdir=hara, output=str(out), checkpoint=step)) == 0
  assert (f'--checkpoint is a step of the run {os.path.realpath(salinet)}, not of --workdir '
          f'{hara}: export.json records that run as the source.') in capsys.readouterr().err
  summary = json.loads((out / 'export.json').read_text())
  assert summary['source']['workdir'] == os.path.realpath(salinet)
  assert summary['model'] != 'hara_resnet3d'  # the checkpoint's own model, as before
  assert cli.main(['export'], _flags(workdir=hara, output=salinet, checkpoint=step,
                                     overwrite=True)) == 1
  assert 'is or holds the workdir' in capsys.readouterr().err


@pytest.mark.skipif(HOST_PLATFORM != 'cpu', reason='the line is about a CPU host exporting for '
                    'accelerators; an accelerator host says the converse')
def test_the_dtype_an_export_computes_in_is_recorded_and_a_mixed_lowering_said(trained,
                                                                              tmp_path, capsys):
  """'bfloat16_on_accelerators' resolves on the export host, and one export is one computation:
  a CPU host's --platforms=cpu,cuda export computed in float32 on GPUs too (a GPU host's, in
  bfloat16 on CPUs), said nowhere, and export.json recorded the unresolved name, whose parity
  tolerance fell back to 1e-4 (audit)."""
  from salinet_jax.export import exporter  # pylint: disable=g-import-not-at-top
  assert exporter._dtype_said('bfloat16_on_accelerators', ['cpu'], FORMATS) == 'float32'
  assert exporter._dtype_said('float32', ['cpu', 'cuda'], FORMATS) == 'float32'
  assert exporter._dtype_said('bfloat16_on_accelerators', ['cpu', 'cuda'], ['onnx']) == 'float32'
  assert capsys.readouterr().err == ''  # ONNX has no lowering platform
  assert exporter._dtype_said('bfloat16_on_accelerators', ['cpu', 'cuda', 'tpu'],
                              ['stablehlo']) == 'float32'
  assert capsys.readouterr().err == (
      "config.dtype='bfloat16_on_accelerators' computes in float32 on this cpu host, and one "
      'export is one computation for all its --platforms: its cuda, tpu lowering computes in '
      'float32 too. For bfloat16 on accelerators and float32 on CPUs, export each kind on a '
      'host of that kind.\n')
  config, workdir = trained('hara')
  out = tmp_path / 'out'
  assert cli.main(['export'], _flags(workdir=workdir, output=str(out))) == 0
  summary = json.loads((out / 'export.json').read_text())
  assert (summary['dtype'], summary['config_dtype']) == ('float32', config.dtype)


def test_split_or_num_videos_beside_video_files_are_refused(trained, tmp_path):
  """--split and --num_videos pick the eval-split videos that certify an export: beside --video
  (the files given certify it) they were accepted and ignored, a split that does not exist
  included."""
  _, workdir = trained('hara')
  for given in (dict(split='no_such_split'), dict(num_videos=1)):
    with pytest.raises(export.ExportError, match=re.escape(
        '--split and --num_videos choose the eval-split videos that certify the export; with '
        '--video the files given do: leave out --split and --num_videos, or --video.')):
      export.export(workdir, str(tmp_path / 'out'), ['stablehlo'], videos=[str(PANCAKE)],
                    **given)
  assert not (tmp_path / 'out').exists()


def test_a_certifying_video_whose_name_is_not_utf8_is_refused_in_one_line(trained, tmp_path):
  """predict and features refuse such a --video before any work; export ended in TensorFlow's
  'Unable to convert element to UTF-8' traceback."""
  _, workdir = trained('hara')
  bad = tmp_path / os.fsdecode(b'cr\xeape.mkv')
  shutil.copy(PANCAKE, bad)
  with pytest.raises(errors.UserError, match=r'^--video .*/cr\\xeape\.mkv is not UTF-8 text'):
    export.export(workdir, str(tmp_path / 'out'), ['stablehlo'], videos=[str(PANCAKE), str(bad)])
  assert not (tmp_path / 'out').exists()


def test_a_damaged_newest_step_is_called_corrupt_and_the_intact_ones_named(trained, tmp_path):
  """Its unreadable metadata was reported as 'written before checkpoints stored it', with no
  intact step named."""
  _, workdir = trained('hara')
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  steps = sorted(int(n) for n in os.listdir(copy / 'checkpoints') if n.isdigit())
  metadata = copy / 'checkpoints' / str(steps[-1]) / '_CHECKPOINT_METADATA'
  metadata.write_text(metadata.read_text()[:40])
  with pytest.raises(export.ExportError, match=(
      rf'Checkpoint {copy}/checkpoints/{steps[-1]} is corrupt: .*_CHECKPOINT_METADATA is '
      r'unreadable \(.*\)\.' + (r' Intact steps: \[' if len(steps) > 1 else '$'))):
    export.export(str(copy), str(tmp_path / 'out'), ['stablehlo'], checkpoint='latest')
  assert not (tmp_path / 'out').exists()


def _a_run_with_a_newer_step(trained, tmp_path):
  """A copy of the tiny run whose newest step, 5, is a copy of its step 2 (a run training in
  the workdir saved it); returns (config, copy, step directory of 5)."""
  config, workdir = trained('hara')
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  assert sorted(os.listdir(copy / 'checkpoints')) == ['2']
  shutil.copytree(copy / 'checkpoints' / '2', copy / 'checkpoints' / '5')
  return config, copy, str(copy / 'checkpoints' / '5')


def _removed_as_it_is_read(monkeypatch, step_dir):
  """The first read of `step_dir`'s arrays finds it removed, as a run training in the workdir
  removes the steps it no longer keeps."""
  plain = checkpoints._restore_item

  def restore_item(item_dir, *args):
    if os.path.dirname(item_dir) == step_dir and os.path.isdir(step_dir):
      shutil.rmtree(step_dir)
    return plain(item_dir, *args)

  monkeypatch.setattr(checkpoints, '_restore_item', restore_item)


def test_an_export_restores_the_very_step_it_located(trained, tmp_path, monkeypatch):
  """An export of 'latest' read the run's config, metrics and decoding from the step it located,
  then chose 'latest' again to restore the weights: a step saved in between (a run still
  training) went out with the other step's metrics, or, damaged, failed the export."""
  _, copy, newer = _a_run_with_a_newer_step(trained, tmp_path)
  shutil.rmtree(newer)
  located = export_source.locate

  def locate(workdir, which):
    found = located(workdir, which)
    shutil.copytree(copy / 'checkpoints' / '2', newer)  # saved now, and damaged
    os.remove(max((os.path.join(parent, name) for parent, _, names in os.walk(newer)
                   for name in names), key=os.path.getsize))
    return found

  monkeypatch.setattr(export_source, 'locate', locate)
  summary = export.export(str(copy), str(tmp_path / 'out'), ['stablehlo'], num_videos=1)
  assert summary['source']['checkpoint'] == 'latest (step 2)', summary['source']
  assert summary['source']['step'] == 2


def test_export_and_eval_choose_again_where_a_training_run_removed_the_step_they_read(
    trained, tmp_path, monkeypatch, caplog):
  """A step removed while it was read (a run training in the workdir keeps only its last
  steps) was called corrupt, or ended in orbax's FileNotFoundError traceback; 'latest' now
  reads the step chosen next, and says so."""
  config, copy, newer = _a_run_with_a_newer_step(trained, tmp_path)
  _removed_as_it_is_read(monkeypatch, newer)
  caplog.set_level('WARNING')
  summary = export.export(str(copy), str(tmp_path / 'out'), ['stablehlo'], num_videos=1)
  assert summary['source']['checkpoint'] == 'latest (step 2)', summary['source']
  said = [r.getMessage() for r in caplog.records if 'was removed while it was read' in
          r.getMessage()]
  assert said == [f'Checkpoint {newer} was removed while it was read (a run training in its '
                  'workdir drops its older steps as it saves new ones). Choosing the latest step '
                  'again.'], said
  shutil.copytree(copy / 'checkpoints' / '2', newer)
  _removed_as_it_is_read(monkeypatch, newer)
  caplog.clear()
  results = train.evaluate(config, str(copy), output_dir=str(tmp_path / 'eval'))
  assert results['checkpoint'] == 'latest (step 2)', results['checkpoint']
  assert any(r.getMessage().startswith(f'Checkpoint step 5 in {copy}/checkpoints was removed '
                                       'while it was read') for r in caplog.records)


def test_the_step_of_an_unfinished_run_is_recorded_as_such(trained, exported, tmp_path):
  """The console warned that the checkpoint's run had not finished, but export.json, which goes
  with the model where the console does not, said nothing."""
  assert exported('hara')[3]['source']['unfinished_run'] is None
  _, workdir = trained('hara')
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  step = max(int(n) for n in os.listdir(copy / 'checkpoints') if n.isdigit())
  metadata_file = copy / 'checkpoints' / str(step) / '_CHECKPOINT_METADATA'
  metadata = json.loads(metadata_file.read_text())
  metadata['custom_metadata']['total_steps'] = 10 * step  # as if stopped before its end
  metadata_file.write_text(json.dumps(metadata))
  summary = export.export(str(copy), str(tmp_path / 'out'), ['stablehlo'], checkpoint='latest',
                          num_videos=1)
  assert summary['source']['unfinished_run'] == {'step': step, 'run_steps': 10 * step}
  written = json.loads((tmp_path / 'out' / 'export.json').read_text())
  assert written['source']['unfinished_run'] == summary['source']['unfinished_run']


def _as_an_older_version_wrote_it(workdir, tmp_path, change):
  """A copy of run `workdir` whose every step's metadata `change` (a function of the metadata
  dict) has edited the way an older version of the project would have written it."""
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  for path in copy.glob(f'checkpoints/*/{checkpoints.STEP_METADATA_FILE}'):
    metadata = json.loads(path.read_text())
    change(metadata['custom_metadata'])
    path.write_text(json.dumps(metadata))
  return str(copy)


@pytest.mark.parametrize('field', ['data.malloc_mmap_threshold_mib',
                                   'data.malloc_trim_threshold_mib', 'remat',
                                   'eval.clips_per_device_forward', 'data.temporal_sampling',
                                   'data.resize_filter'])
def test_a_checkpoint_whose_stored_config_predates_a_setting_restores(trained, tmp_path, caplog,
                                                                     field):
  """Export builds its model from the config stored with the checkpoint, as it was written: one
  from before a setting existed must still restore, with that setting's default, said (review:
  malloc_mmap_threshold_mib raised AttributeError; audit: remat and
  eval.clips_per_device_forward still did)."""
  _, workdir = trained('hara')

  def drop(metadata):
    stored = json.loads(metadata['config'])
    *parents, name = field.split('.')
    parent = stored
    for key in parents:
      parent = parent[key]
    del parent[name]
    metadata['config'] = json.dumps(stored)

  copy = _as_an_older_version_wrote_it(workdir, tmp_path, drop)
  default = flatten_dict(base_config.get_base_config().to_dict(), sep='.')[field]
  with caplog.at_level('WARNING', logger='absl'):
    run = export_source.restore(copy, 'latest')
  assert run.step >= 1 and run.variables['params']
  assert ' predates config.' in caplog.text and f'{field}={default!r}' in caplog.text, caplog.text
  # Not also 'trained with other model or clip settings' (review: a view setting it predates
  # was listed as stored '<absent>').
  assert 'other model or clip settings' not in caplog.text, caplog.text


def test_a_checkpoint_of_this_version_is_exported_without_a_word_on_its_config(trained, caplog):
  """Nothing predated, nothing unrecorded: the lines above are for older checkpoints only."""
  _, workdir = trained('hara')
  with caplog.at_level('WARNING', logger='absl'):
    run = export_source.restore(workdir, 'latest')
  assert run.decoding and 'predates' not in caplog.text and 'does not record' not in caplog.text


def test_later_settings_fill_what_a_stored_config_lacks_and_keep_what_it_has(caplog):
  """Only settings the stored config lacks take base.py's defaults: a section stored where
  base.py has a value (or the reverse) is kept, and an empty stored section is filled (review)."""
  stored = base_config.get_base_config().to_dict()
  stored['remat'] = {'mode': 'blocks'}
  stored['checkpoint'] = {}
  del stored['eval']['clips_per_device_forward']
  with caplog.at_level('WARNING', logger='absl'):
    config = checkpoints.with_later_settings(ml_collections.ConfigDict(stored), 'c')
  assert config.remat.mode == 'blocks'
  assert config.checkpoint.to_dict() == base_config.get_base_config().checkpoint.to_dict()
  assert config.eval.clips_per_device_forward == 0
  assert 'config.remat' not in caplog.text and 'config.checkpoint.keep_last' in caplog.text
  unchanged = base_config.get_base_config()
  assert checkpoints.with_later_settings(unchanged, 'c') is unchanged


def test_a_checkpoint_that_does_not_record_its_decoding_is_said_when_exported(trained, tmp_path,
                                                                             caplog):
  """Audit: an export of a checkpoint without a decoding record wrote `"decoding": {}` to
  export.json and decoded its parity videos at their native rate and straight to the eval short
  side without a word (predict said it)."""
  _, workdir = trained('hara')
  copy = _as_an_older_version_wrote_it(workdir, tmp_path,
                                       lambda metadata: metadata.pop('decoding'))
  with caplog.at_level('WARNING', logger='absl'):
    run = export_source.restore(copy, 'latest')
  assert run.decoding == {}
  assert 'does not record how its eval records decoded their videos' in caplog.text


def test_an_s2dnet_export_is_given_the_real_frame_count_of_a_padded_clip(tmp_path):
  """Predict through an export feeds `num_valid` from the eval batch's frame mask, and no test
  ran an S2DNet export through predict: a count off by one, or every frame taken as real, was
  untested. A clip of 4 frames, padded to the model's 6, must be given 4 for each view (a stub
  stands in for the export: only what predict feeds it is checked)."""
  config = tiny_s2dnet_config(str(tmp_path), 'sampling')
  data = config.data
  assert data.num_frames == 6 and serving.takes_num_valid(config)
  rng = np.random.default_rng(0)
  jpegs = []
  for _ in range(4):
    encoded = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(encoded, 'JPEG')
    jpegs.append(encoded.getvalue())
  fed = []

  def exported_model(views, num_valid):
    fed.append((views, num_valid))
    logits = np.zeros((len(views), 4), np.float32)
    return {'logits': logits, 'probabilities': np.full_like(logits, 0.25)}

  predictor = object.__new__(predictor_lib.ExportedPredictor)
  predictor.model, predictor.config, predictor.source = exported_model, config, 'a test export'
  predictor.num_views = data.eval_num_clips * data.eval_num_crops
  predictor.probabilities(jpegs, 10.0, 'four_frames')
  (views, num_valid), = fed
  assert views.shape[:2] == (predictor.num_views, 6)
  np.testing.assert_array_equal(num_valid, np.full((predictor.num_views,), 4, np.int32))
  assert views[:, :4].any(axis=(2, 3, 4)).all() and not views[:, 4:].any()


def test_export_json_gives_the_sampler_outputs_in_their_units():
  """export.json described S2DNet's temporal centres and stride (frames of the clip) as 'pixels
  of the view', as it does the spatial ones (S2DNet walkthrough)."""
  outputs = {name: np.zeros((1, 4), np.float32) for name in serving.S2DNET_OUTPUTS}
  described = {spec['name']: spec['description'] for spec in serving.output_specs(outputs, None)}
  for name in ('sampler_mu_t', 'sampler_delta_t'):
    assert 'frames' in described[name] and 'pixel' not in described[name], described[name]
  for name in ('sampler_center_x', 'sampler_center_y', 'sampler_delta_x', 'sampler_delta_y'):
    assert described[name].endswith('in pixels of the view'), described[name]
