"""PySlowFast checkpoints -> I3D / NL-I3D: per-block and whole-model parity with PyTorch modules.

Float64 on both sides must agree to 1e-12 (they differ by rounding, about 1e-15); float32 within a
small multiple of the PyTorch module's own float32-vs-float64 error (reference_torch's
assert_f32_parity).
"""

import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_torch as ref
from salinet_jax import convert
from salinet_jax import errors
from salinet_jax import pretrained
from salinet_jax.convert import layout
from salinet_jax.convert import pyslowfast
from salinet_jax.models import nonlocal_block
from salinet_jax.models import resnet3d

torch = ref.torch
F64_TOL = 1e-12
TINY = dict(width=4, stage_blocks=(1, 2, 2, 1), nonlocal_blocks=((), (1,), (1,), ()))


def run_parity(torch_module, make_flax, name_map, x, *, source=None, model_name='',
               torch_fn=None, flax_fn=None):
  """Converts `torch_module` and runs both sides in float64 and float32.

  Returns {'t64', 't32', 'j64', 'j32', 'report'}; outputs are numpy (NTHWC for feature maps).
  """
  torch_fn = torch_fn or (lambda m, inp: ref.from_ncthw(m(inp)) if inp.ndim == 5 else m(inp))
  flax_fn = flax_fn or (lambda m, v, inp: m.apply(v, inp, train=False))
  out = {}
  with torch.no_grad():
    out['t32'] = np.asarray(torch_fn(torch_module.float(), ref.to_ncthw(x.astype(np.float32))))
    out['t64'] = np.asarray(torch_fn(torch_module.double(), ref.to_ncthw(x.astype(np.float64))))
  state_dict = ref.state_dict_numpy(torch_module)  # float64
  for tag, dtype in (('j64', jnp.float64), ('j32', jnp.float32)):
    with jax.enable_x64(tag == 'j64'):
      module = make_flax(dtype)
      template = convert.model_template(module, x.shape)
      np_dtype = np.float64 if tag == 'j64' else np.float32
      if source:
        variables, report = convert.convert(source, state_dict, template, model_name,
                                            dtype=np_dtype)
      else:
        variables, report = layout.convert_state_dict(state_dict, template, name_map,
                                                      dtype=np_dtype)
      assert report.ok, report.summary()
      out[tag] = np.asarray(flax_fn(module, variables, jnp.asarray(x, dtype)), np.float64)
      out['report'] = report
  return out


def check(out, what='output'):
  err64 = ref.max_abs(out['j64'], out['t64'])
  assert err64 <= F64_TOL, f'{what}: float64 max abs difference {err64:.3g}'
  ref.assert_f32_parity(out['j32'], out['t32'], out['t64'], what)


def random_input(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------------------------


def test_stem():
  torch_stem = ref.randomise(ref.VideoModelStem(3, 8))
  out = run_parity(torch_stem, lambda d: resnet3d.VideoModelStem(8, dtype=d),
                   layout.identity_name_map(), random_input((1, 4, 16, 16, 3)))
  check(out, 'stem')


@pytest.mark.parametrize('dim_in,dim_out,inner,kt,stride', [
    (8, 16, 4, 3, 2),   # projection shortcut (branch1 + branch1_bn), strided "b"
    (16, 16, 4, 1, 1),  # identity shortcut, 1x1x1 "a"
])
def test_bottleneck_block(dim_in, dim_out, inner, kt, stride):
  torch_block = ref.randomise(ref.ResBlock(dim_in, dim_out, inner, kt, stride))
  out = run_parity(torch_block,
                   lambda d: resnet3d.ResBlock(dim_out, inner, kt, stride, dtype=d),
                   layout.identity_name_map(), random_input((1, 4, 8, 8, dim_in)))
  check(out, 'bottleneck')
  assert ('branch1' in dict(torch_block.named_children())) == (stride != 1 or dim_in != dim_out)


def test_nonlocal_block():
  torch_block = ref.randomise(ref.Nonlocal(16, 8))
  out = run_parity(torch_block, lambda d: nonlocal_block.NonLocalBlock(8, dtype=d),
                   layout.identity_name_map(), random_input((2, 4, 6, 6, 16)) * 3)
  check(out, 'non-local')


@pytest.mark.parametrize('softmax', [False, True])
def test_head_matches_pyslowfast_logits_and_test_time_softmax(softmax):
  """The logits themselves (a softmax alone hides a shift common to every class), and the
  probabilities PySlowFast's head gives at test time."""
  torch_head = ref.randomise(ref.ResNetBasicHead(16, 5, act=softmax))
  scores = jax.nn.softmax if softmax else (lambda logits: logits)
  out = run_parity(
      torch_head, lambda d: resnet3d.ClassificationHead(5, dtype=d), [(r'fc', 'projection')],
      random_input((2, 2, 3, 3, 16)),
      flax_fn=lambda m, v, inp: scores(m.apply(v, inp, train=False)))
  check(out, 'head')


# ----------------------------------------------------------------------------------------------
# Whole model, files and the command line.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def tiny_nl_i3d():
  torch.manual_seed(0)
  return ref.randomise(ref.PySlowFastResNet(num_classes=5, **TINY))


def test_whole_nl_i3d_parity_and_complete_report(tiny_nl_i3d):
  x = random_input((1, 8, 64, 64, 3))
  out = run_parity(tiny_nl_i3d, lambda d: resnet3d.NonLocalI3DClassifier(5, dtype=d, **TINY),
                   None, x, source='pyslowfast', model_name='i3d_nl',
                   torch_fn=lambda m, inp: m(inp).numpy())
  check(out, 'NL-I3D logits')
  report = out['report']
  assert not report.missing and not report.unexpected and not report.mis_shaped
  num_bn = sum(isinstance(m, torch.nn.BatchNorm3d) for m in tiny_nl_i3d.modules())
  assert len(report.ignored) == num_bn  # num_batches_tracked
  assert report.converted + len(report.ignored) == len(tiny_nl_i3d.state_dict())


def to_caffe2_blobs(state_dict):
  """PySlowFast keys -> the model zoo's Caffe2 blob names (written for this test)."""
  suffix = {'weight': 'w', 'bias': 'b', 'running_mean': 'rm', 'running_var': 'riv'}
  bn_suffix = dict(suffix, weight='s')
  blobs = {}
  for key, value in state_dict.items():
    parts = key.split('.')
    if parts[-1] == 'num_batches_tracked':
      continue
    tensor = parts[-1]
    if parts[0] == 'head':
      name = f'pred_{suffix[tensor]}'
    elif parts[1] == 'pathway0_stem':
      name = ('conv1_' + suffix[tensor] if parts[2] == 'conv'
              else 'res_conv1_bn_' + bn_suffix[tensor])
    elif parts[1].startswith('pathway0_nonlocal'):
      stage, block = parts[0][1:], parts[1][len('pathway0_nonlocal'):]
      if parts[2] == 'bn':
        name = f'nonlocal_conv{stage}_{block}_bn_{bn_suffix[tensor]}'
      else:
        name = f'nonlocal_conv{stage}_{block}_{parts[2][len("conv_"):]}_{suffix[tensor]}'
    else:
      stage, block = parts[0][1:], parts[1][len('pathway0_res'):]
      module = parts[2] if parts[2] != 'branch2' else 'branch2' + parts[3]
      if module.endswith('_bn'):
        name = f'res{stage}_{block}_{module[:-3]}_bn_{bn_suffix[tensor]}'
      else:
        name = f'res{stage}_{block}_{module}_{suffix[tensor]}'
    blobs[name] = np.asarray(value, np.float32)
    blobs[name + '_momentum'] = np.zeros_like(blobs[name])
  blobs['lr'] = np.asarray([0.1], np.float32)
  blobs['model_iter'] = np.asarray([1000], np.int64)
  return blobs


def test_caffe2_pkl_names_map_to_pyslowfast_keys(tiny_nl_i3d, tmp_path):
  state_dict = ref.state_dict_numpy(tiny_nl_i3d.float())
  path = tmp_path / 'I3D_NLN_tiny.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'blobs': to_caffe2_blobs(state_dict)}, f)
  loaded, unknown = convert.read_checkpoint('pyslowfast', str(path))
  assert unknown == []
  expected = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
  assert sorted(loaded) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_caffe2_reader_refuses_arbitrary_objects(tmp_path):
  path = _caffe2_pickle_with_an_object(tmp_path / 'evil.pkl')
  with pytest.raises(errors.ConversionError, match='Refusing to unpickle subprocess.Popen'):
    convert.read_checkpoint('pyslowfast', str(path))


def test_pyth_file_with_data_parallel_prefix(tiny_nl_i3d, tmp_path):
  state_dict = tiny_nl_i3d.float().state_dict()
  path = tmp_path / 'checkpoint_epoch_00001.pyth'
  torch.save({'epoch': 1, 'model_state': {f'module.{k}': v for k, v in state_dict.items()},
              'optimizer_state': {'state': {}, 'param_groups': [{'lr': 0.1}]},
              'cfg': 'MODEL:\n  ARCH: i3d\n'}, path)
  loaded, _ = convert.read_checkpoint('pyslowfast', str(path))
  assert sorted(loaded) == sorted(state_dict)
  np.testing.assert_array_equal(loaded['head.projection.weight'],
                                state_dict['head.projection.weight'].numpy())


def test_checkpoint_layouts_the_audit_found_misread(tiny_nl_i3d, tmp_path, caplog):
  """DataParallel weights beside a bare 'num_updates' counter kept their 'module.' prefix (every
  tensor then 'missing' and 'unexpected'); a whole model saved with torch.save(model) gave
  'Expected a dict-like checkpoint, got PySlowFastResNet.' naming no file; an EMA copy beside
  'model_state' was left out without a word."""
  state_dict = tiny_nl_i3d.float().state_dict()
  prefixed = tmp_path / 'data_parallel.pyth'
  torch.save({**{f'module.{k}': v for k, v in state_dict.items()}, 'num_updates': 7}, prefixed)
  loaded, _ = convert.read_checkpoint('pyslowfast', str(prefixed))
  assert sorted(loaded) == sorted(state_dict)  # the counter is no tensor: not converted
  whole = tmp_path / 'whole_model.pyth'
  torch.save(tiny_nl_i3d, whole)
  caplog.set_level('WARNING')
  loaded, _ = convert.read_checkpoint('pyslowfast', str(whole), trust_pickle=True)
  assert sorted(loaded) == sorted(state_dict)
  assert f'{whole}: a whole {type(tiny_nl_i3d).__name__} object was saved' in caplog.text
  with_ema = tmp_path / 'with_ema.pyth'
  torch.save({'model_state': state_dict, 'model_ema': state_dict}, with_ema)
  convert.read_checkpoint('pyslowfast', str(with_ema))
  assert f"{with_ema}: converting the weights under 'model_state'; the file also holds " \
         "'model_ema', left out." in caplog.text
  # A whole model of a class that cannot be imported here: one line, not a traceback.
  (tmp_path / 'gone_module.py').write_text('import torch\nclass Net(torch.nn.Linear):\n  pass\n')
  sys.path.insert(0, str(tmp_path))
  try:
    import gone_module  # pylint: disable=g-import-not-at-top
    torch.save(gone_module.Net(2, 2), tmp_path / 'gone.pyth')
  finally:
    sys.path.remove(str(tmp_path))
    sys.modules.pop('gone_module', None)
  with pytest.raises(errors.ConversionError, match=(
      rf"^{tmp_path / 'gone.pyth'} pickles an object whose class cannot be imported here "
      r"\(No module named 'gone_module'\): save its weights instead")):
    convert.read_checkpoint('pyslowfast', str(tmp_path / 'gone.pyth'), trust_pickle=True)


def test_pickled_objects_need_trust(tmp_path):
  path = tmp_path / 'with_object.pyth'
  torch.save({'model_state': {'w': torch.zeros(2)}, 'extra': pytest.raises}, path)
  with pytest.raises(errors.ConversionError, match=r'\(_pytest.raises.raises\).*trust_pickle'):
    convert.read_checkpoint('pyslowfast', str(path))


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY_CONFIG = textwrap.dedent('''
    from configs import k400_i3d_nl

    def get_config():
      config = k400_i3d_nl.get_config()
      config.model.update(dict(width=4, stage_blocks=(1, 2, 2, 1),
                               nonlocal_blocks=((), (1,), (1,), ())))
      config.data.crop_size = 64
      return config
''')


def test_command_line_writes_a_checkpoint_that_init_from_loads(tiny_nl_i3d, tmp_path):
  path = tmp_path / 'tiny.pyth'
  torch.save({'model_state': tiny_nl_i3d.float().state_dict()}, path)
  config_file = tmp_path / 'tiny_config.py'
  config_file.write_text(TINY_CONFIG)
  output = tmp_path / 'converted'
  args = [sys.executable, '-m', 'salinet_jax.convert', '--source=pyslowfast',
          f'--checkpoint={path}', f'--config={config_file}', f'--output={output}']
  result = subprocess.run(args, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'missing 0, unexpected 0, mis-shaped 0' in result.stdout
  info = pretrained.conversion_info(str(output))
  assert info['source'] == 'pyslowfast' and info['num_classes'] == 5 and info['report']['ok']
  assert info['normalization'] == 'kinetics'  # PySlowFast's pixels, for init_from to compare

  model = resnet3d.NonLocalI3DClassifier(5, **TINY)
  x = random_input((1, 8, 64, 64, 3)).astype(np.float32)
  fresh = model.init(jax.random.key(1), jnp.zeros_like(x), train=False)
  params, batch_stats, report = pretrained.load_pretrained(
      fresh['params'], fresh['batch_stats'], {'checkpoint': str(output), 'exclude': '',
                                              'strict': True})
  assert report.ok and not report.excluded
  logits = model.apply({'params': params, 'batch_stats': batch_stats}, jnp.asarray(x))
  with torch.no_grad():
    t32 = tiny_nl_i3d.float()(ref.to_ncthw(x)).numpy()
    t64 = tiny_nl_i3d.double()(ref.to_ncthw(x.astype(np.float64))).numpy()
  ref.assert_f32_parity(logits, t32, t64, 'logits after CLI + load_pretrained')

  # A second run refuses to overwrite; a strict run that cannot convert everything writes nothing.
  again = subprocess.run(args, capture_output=True, text=True, check=False)
  assert again.returncode == 1 and 'exists' in again.stderr.strip().splitlines()[-1]
  assert 'Traceback' not in again.stderr
  bad = subprocess.run(args[:-1] + [f'--output={tmp_path / "bad"}', '--config.model.width=8'],
                       capture_output=True, text=True, check=False)
  assert bad.returncode == 1 and 'mis-shaped' in bad.stdout
  assert not (tmp_path / 'bad').exists()

  # --classes records the classifier's class names (for init_from to check); a list of another
  # length is refused before anything is written.
  names = tmp_path / 'labels.txt'
  names.write_text('\ufeffa\r\nb\r\nc\r\nd\r\ne\r\n\r\n')  # a BOM, CRLF, a blank last line
  named = subprocess.run(args[:-1] + [f'--output={tmp_path / "named"}', f'--classes={names}',
                                      '--normalization=imagenet'],
                         capture_output=True, text=True, check=False)
  assert named.returncode == 0, named.stderr[-3000:]
  named_info = pretrained.conversion_info(str(tmp_path / 'named'))
  assert named_info['classes'] == list('abcde') and named_info['normalization'] == 'imagenet'
  names.write_text('a\nb\nc\nd\n')
  short = subprocess.run(args[:-1] + [f'--output={tmp_path / "short"}', f'--classes={names}'],
                         capture_output=True, text=True, check=False)
  assert short.returncode == 1 and short.stderr.strip().splitlines()[-1] == (
      f'error: --classes={names} lists 4 class names, but the classifier has 5 rows: give one '
      'name per line, in row order.')
  typo = subprocess.run(args[:-1] + [f'--output={tmp_path / "typo"}', '--normalization=imagnet'],
                        capture_output=True, text=True, check=False)
  assert typo.returncode == 1 and typo.stderr.strip().splitlines()[-1] == (
      "error: --normalization must be one of ['imagenet', 'kinetics'] (config.data.normalization's "
      "presets), got 'imagnet'.")
  assert not (tmp_path / 'typo').exists()
  assert not (tmp_path / 'short').exists()
  empty = subprocess.run(args[:-1] + [f'--output={tmp_path / "empty"}', '--normalization='],
                         capture_output=True, text=True, check=False)
  assert empty.returncode == 1 and empty.stderr.strip().splitlines()[-1].startswith(
      "error: --normalization must be one of ['imagenet', 'kinetics']"), empty.stderr[-2000:]

  # 2D kernels (an image network's, e.g. a Caffe2 ImageNet ResNet of BGR pixels) inflated into
  # the I3D: the pixels they were trained on are not known, so none is recorded (it recorded
  # 'kinetics'). A C2D's 3D kernels of one tap, trained by PySlowFast on video, keep it.
  state = tiny_nl_i3d.float().state_dict()
  for kind, kernels in (('c2d', lambda v: v[:, :, :1].clone()), ('2d', lambda v: v[:, :, 0])):
    torch.save({'model_state': {k: kernels(v) if v.ndim == 5 else v for k, v in state.items()}},
               tmp_path / f'{kind}.pyth')
  inflated_args = {
      kind: [f'--checkpoint={tmp_path / f"{kind}.pyth"}' if a.startswith('--checkpoint=') else a
             for a in args[:-1]] + ['--inflate=repeat'] for kind in ('c2d', '2d')}
  for kind, recorded in (('c2d', 'kinetics'), ('2d', None)):
    inflated = subprocess.run(inflated_args[kind] + [f'--output={tmp_path / kind}'],
                              capture_output=True, text=True, check=False)
    assert inflated.returncode == 0, inflated.stderr[-3000:]
    assert ('so none is recorded: pass --normalization=PRESET' in inflated.stdout) == (
        recorded is None), inflated.stdout
    inflated_info = pretrained.conversion_info(str(tmp_path / kind))
    assert inflated_info['report']['inflated'] and inflated_info['normalization'] == recorded
  told = subprocess.run(inflated_args['2d'] + [f'--output={tmp_path / "told"}',
                                               '--normalization=kinetics'],
                        capture_output=True, text=True, check=False)
  assert told.returncode == 0 and 'none is recorded' not in told.stdout
  assert pretrained.conversion_info(str(tmp_path / 'told'))['normalization'] == 'kinetics'


def _caffe2_pickle_with_an_object(path):
  with open(path, 'wb') as f:
    pickle.dump({'blobs': {'conv1_w': np.zeros(2)}, 'x': subprocess.Popen}, f)
  return path


@pytest.mark.parametrize('case', ['missing_checkpoint', 'truncated_checkpoint', 'not_a_checkpoint',
                                  'unsafe_pickle', 'misspelt_config_field', 'missing_config_file',
                                  'bad_exclude', 'no_config', 'no_classifier', 'empty_checkpoint',
                                  'empty_output'])
def test_command_line_mistakes_end_in_one_line(case, tmp_path):
  """A checkpoint that is missing, damaged, not a checkpoint or unsafe, a misspelt config
  field, a missing config file, no --config, a bad --exclude regex and a checkpoint without a
  classifier (no --num_classes) or an empty --checkpoint or --output (an unset shell variable;
  an empty --output wrote into the current directory) each end the converter in one `error:`
  line naming the path or value, with nothing written. Only a file that pickles
  objects is told about --trust_pickle (a web page saved as .pth was told it too)."""
  config_file = tmp_path / 'tiny_config.py'
  config_file.write_text(TINY_CONFIG)
  checkpoint = tmp_path / 'tiny.pyth'
  torch.save({'model_state': {'w': torch.zeros(2)}}, checkpoint)
  args = {'--source': 'pyslowfast', '--checkpoint': str(checkpoint),
          '--config': str(config_file), '--output': str(tmp_path / 'out')}
  named = {
      'missing_checkpoint': str(tmp_path / 'nope.pyth'),
      'truncated_checkpoint': str(checkpoint),
      'not_a_checkpoint': str(checkpoint),
      'unsafe_pickle': str(tmp_path / 'evil.pkl'),
      'misspelt_config_field': 'widht',
      'missing_config_file': str(tmp_path / 'nope.py'),
      'bad_exclude': '[',
      'no_config': '--config',
      'no_classifier': '--num_classes',
      'empty_checkpoint': '--checkpoint',
      'empty_output': '--output',
  }[case]
  extra = []
  if case == 'missing_checkpoint':
    args['--checkpoint'] = named
  elif case == 'truncated_checkpoint':
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
  elif case == 'not_a_checkpoint':
    checkpoint.write_text('<html>Not found</html>')
  elif case == 'unsafe_pickle':
    args['--checkpoint'] = str(_caffe2_pickle_with_an_object(tmp_path / 'evil.pkl'))
  elif case == 'misspelt_config_field':
    extra = ['--config.model.widht=8']
  elif case == 'missing_config_file':
    args['--config'] = named
  elif case == 'no_config':
    del args['--config']
  elif case == 'bad_exclude':
    extra = ['--exclude=[']
  elif case in ('empty_checkpoint', 'empty_output'):
    args[named] = ''
  workdir = tmp_path / 'cwd'  # where an empty --output would write
  workdir.mkdir()
  result = subprocess.run([sys.executable, '-m', 'salinet_jax.convert',
                           *[f'{k}={v}' for k, v in args.items()], *extra],
                          capture_output=True, text=True, check=False, cwd=workdir,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  lines = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode in (1, 2), result.stderr[-3000:]
  assert len(lines) == 1 and named in lines[0], result.stderr[-3000:]
  assert 'Traceback' not in result.stderr and 'trust_pickle' not in lines[0]
  assert not (tmp_path / 'out').exists() and not any(workdir.iterdir())


def test_caffe2_key_rules():
  assert pyslowfast.caffe2_key('res4_5_branch2c_bn_riv') == (
      's4.pathway0_res5.branch2.c_bn.running_var')
  assert pyslowfast.caffe2_key('res3_0_branch1_w') == 's3.pathway0_res0.branch1.weight'
  assert pyslowfast.caffe2_key('nonlocal_conv4_3_phi_b') == 's4.pathway0_nonlocal3.conv_phi.bias'
  assert pyslowfast.caffe2_key('res_conv1_bn_s') == 's1.pathway0_stem.bn.weight'
  assert pyslowfast.caffe2_key('pred_w') == 'head.projection.weight'
  assert pyslowfast.caffe2_key('res2_1_branch2b_w_momentum') == ''
  assert pyslowfast.caffe2_key('some_unknown_blob') is None
