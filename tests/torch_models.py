"""Full-size PyTorch counterparts of the project's models, for `python -m salinet_jax.bench
--compare=torch` (benchmark and test dependency only; nothing under salinet_jax imports torch).

Written for this project (not taken from any repository). The I3D, SaliNet and S2DNet modules are
the ones the parity tests use (`reference_torch.py`), built here at full width; the Hara et al.
3D ResNet is new here and has the same architecture as `salinet_jax.models.resnet3d.HaraResNet3D`
(7x7x7 stem stride (1,2,2), 3x3x3 stride-2 max-pool, basic or bottleneck blocks, projection
shortcuts where the shape changes, GAP, dropout, fc).

A workload is described by a JSON-serialisable spec (what `salinet_jax.bench` derives from a
config) so that a child process can rebuild it without importing JAX:

    {"arch": "hara_resnet3d" | "i3d_nl" | "salinet_i3d" | "s2dnet", "model": {...config.model},
     "mode": "train" | "eval", "batch": B, "frames": T, "size": S, "num_classes": K,
     "optimizer": {"lr", "momentum", "nesterov", "weight_decay"}, "threads": N, "seed": 0,
     "device": "cpu" | "cuda", "autocast": null | "bfloat16" | "float16", "tf32": bool}

On "cuda" the step runs under `torch.autocast` in the "autocast" dtype (PyTorch AMP) when one is
given, with cuDNN's autotuner on and TF32 matmuls and convolutions as "tf32" says, and each
step's time includes waiting for the GPU.

`python tests/torch_models.py SPEC_JSON [STEPS]` runs that workload's warm-up and STEPS steps and
prints one JSON line with the step times and the process's peak RSS. `... SPEC_JSON --serve` is
how the benchmark runs it: one step per `step` line on stdin, so that its steps interleave with
JAX's while each framework has its own process (neither imports the other, nor TensorFlow).
"""

import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import reference_torch as ref  # noqa: E402  pylint: disable=wrong-import-position
# The benchmark's own peak-RSS reading (it imports neither JAX nor TensorFlow).
from data.host_malloc import peak_rss_mib  # noqa: E402  pylint: disable=wrong-import-position

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------
# Hara et al. 3D ResNet.
# ----------------------------------------------------------------------------------------------

HARA_DEPTHS = {10: ('basic', (1, 1, 1, 1)), 18: ('basic', (2, 2, 2, 2)),
               34: ('basic', (3, 4, 6, 3)), 50: ('bottleneck', (3, 4, 6, 3)),
               101: ('bottleneck', (3, 4, 23, 3))}


def _bn3d(channels: int) -> nn.BatchNorm3d:
  return nn.BatchNorm3d(channels, eps=1e-5, momentum=0.1)


class HaraBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = _bn3d(planes)
    self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = _bn3d(planes)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(nn.Conv3d(inplanes, planes, 1, stride, bias=False),
                                      _bn3d(planes))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class HaraBottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int):
    super().__init__()
    out = planes * 4
    self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
    self.bn1 = _bn3d(planes)
    self.conv2 = nn.Conv3d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = _bn3d(planes)
    self.conv3 = nn.Conv3d(planes, out, 1, bias=False)
    self.bn3 = _bn3d(out)
    self.downsample = None
    if stride != 1 or inplanes != out:
      self.downsample = nn.Sequential(nn.Conv3d(inplanes, out, 1, stride, bias=False), _bn3d(out))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class HaraResNet3D(nn.Module):
  """Hara 3D ResNet classifier on NCTHW clips (the JAX `HaraResNet3DClassifier`)."""

  def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
               stem_temporal_kernel: int = 7, stem_max_pool: bool = True,
               dropout_rate: float = 0.5):
    super().__init__()
    kind, stages = HARA_DEPTHS[depth]
    block = HaraBasicBlock if kind == 'basic' else HaraBottleneck
    kt = stem_temporal_kernel
    self.conv1 = nn.Conv3d(3, width, (kt, 7, 7), (1, 2, 2), (kt // 2, 3, 3), bias=False)
    self.bn1 = _bn3d(width)
    self.maxpool = nn.MaxPool3d(3, 2, 1) if stem_max_pool else nn.Identity()
    inplanes = width
    for stage, num_blocks in enumerate(stages):
      blocks = []
      for i in range(num_blocks):
        blocks.append(block(inplanes, width * 2**stage, 2 if stage and not i else 1))
        inplanes = width * 2**stage * block.expansion
      self.add_module(f'layer{stage + 1}', nn.Sequential(*blocks))
    self.dropout = nn.Dropout(dropout_rate)
    self.fc = nn.Linear(inplanes, num_classes)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for stage in range(1, 5):
      x = getattr(self, f'layer{stage}')(x)
    return self.fc(self.dropout(x.mean(dim=(2, 3, 4))))


# ----------------------------------------------------------------------------------------------
# Builders from a spec.
# ----------------------------------------------------------------------------------------------

I3D_R50_BLOCKS = (3, 4, 6, 3)
I3D_NONLOCAL = ((), (1, 3), (1, 3, 5), ())


def _i3d_kwargs(model: Dict[str, Any]) -> Dict[str, Any]:
  if model.get('depth', 50) != 50 and not model.get('stage_blocks'):
    raise ValueError('The PyTorch I3D counterpart is built for depth 50 (or explicit stage_blocks).')
  if tuple(model.get('nonlocal_pool', (1, 2, 2))) != (1, 2, 2):
    raise ValueError('The PyTorch I3D counterpart has non-local pool (1, 2, 2) only.')
  if model.get('stem_temporal_kernel', 5) != 5 or model.get('pool1_temporal', 2) != 2:
    raise ValueError('The PyTorch I3D counterpart has stem_temporal_kernel 5 and pool1 2 only.')
  nonlocal_blocks = model.get('nonlocal_blocks', I3D_NONLOCAL)
  if not model.get('use_nonlocal', True):
    nonlocal_blocks = ((), (), (), ())
  return dict(width=model.get('width', 64),
              stage_blocks=tuple(model.get('stage_blocks') or I3D_R50_BLOCKS),
              nonlocal_blocks=tuple(tuple(b) for b in nonlocal_blocks))


def build_model(spec: Dict[str, Any]) -> nn.Module:
  """The PyTorch module for `spec` (see the module docstring); raises ValueError if none."""
  arch, model, classes = spec['arch'], spec.get('model', {}), spec['num_classes']
  if arch == 'hara_resnet3d':
    return HaraResNet3D(classes, model.get('depth', 18), model.get('width', 64),
                        model.get('stem_temporal_kernel', 7), model.get('stem_max_pool', True),
                        model.get('dropout_rate', 0.5))
  if arch == 'i3d_nl':
    return ref.PySlowFastResNet(num_classes=classes, act=False, **_i3d_kwargs(model))
  if arch == 'salinet_i3d':
    if not (model.get('ssf', True) and model.get('tsfp', True)
            and model.get('shared_saliency_bn', True)):
      raise ValueError('The PyTorch SaliNet counterpart is the reference model (ssf, tsfp and a '
                       'shared saliency BN).')
    if spec['frames'] != 8:
      raise ValueError('The PyTorch SaliNet counterpart fuses 4 trunk frames: use 8 input frames.')
    return ref.SaliNetReference(num_classes=classes, **_i3d_kwargs(model))
  if arch == 's2dnet':
    if model.get('topk', 5) != 5 or model.get('synopsis_type', 'multi_hot') != 'multi_hot':
      raise ValueError('The PyTorch S2DNet counterpart has a top-5 multi-hot synopsis only.')
    if model.get('dnet_depth', 50) != 50 or model.get('snet_width', 1.0) != 1.0:
      raise ValueError('The PyTorch S2DNet counterpart has a ResNet-50 DNet and a width-1 SNet.')
    return ref.S2DNetReference(
        classes, model.get('synopsis_frames', 16), model.get('synopsis_size', 144),
        model.get('detail_frames', 16), model.get('detail_size', 112),
        trunk_channels={'A': 64, 'B': 4}[model.get('f_theta_fix', 'B')],
        mlp=tuple(model.get('f_theta_mlp', (1024, 512))),
        context=model.get('context_features', 256), width=model.get('dnet_width', 64),
        fusion_stages=tuple(model.get('fusion_stages', (2, 3))),
        faithful_tiling=model.get('faithful_topk_tiling', False))
  raise ValueError(f'No PyTorch counterpart of model {arch!r} (have hara_resnet3d, i3d_nl, '
                   'salinet_i3d, s2dnet).')


class Workload:
  """One model, optimizer and synthetic batch; `step()` runs one train step or eval forward."""

  def __init__(self, spec: Dict[str, Any]):
    torch.set_num_threads(int(spec.get('threads') or os.cpu_count()))
    torch.manual_seed(spec.get('seed', 0))
    self.spec = spec
    self.device = torch.device(spec.get('device', 'cpu'))
    if self.device.type == 'cuda':
      if not torch.cuda.is_available():
        raise ValueError(f'PyTorch {torch.__version__} here sees no CUDA device (a build without '
                         'CUDA, or CUDA_VISIBLE_DEVICES empty?).')
      torch.backends.cudnn.benchmark = True
      torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(
          spec.get('tf32'))
    self.autocast = spec.get('autocast')
    self.arch, self.mode = spec['arch'], spec['mode']
    self.model = build_model(spec)
    batch, frames, size = spec['batch'], spec['frames'], spec['size']
    gen = torch.Generator().manual_seed(spec.get('seed', 0))
    if self.arch == 's2dnet':
      # (B, N, 3, H, W) frames, every frame valid.
      shape = (batch, frames, 3, size, size)
      mean, std = IMAGENET_MEAN, IMAGENET_STD
      stat_shape = (1, 1, 3, 1, 1)
    else:
      shape = (batch, 3, frames, size, size)  # NCTHW
      mean, std = KINETICS_MEAN, KINETICS_STD
      stat_shape = (1, 3, 1, 1, 1)
    self.video = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
    self.scale = (1.0 / (255.0 * torch.tensor(std))).reshape(stat_shape)
    self.offset = (-torch.tensor(mean) / torch.tensor(std)).reshape(stat_shape)
    self.labels = torch.randint(0, spec['num_classes'], (batch,), generator=gen)
    self.model.to(self.device)
    self.video, self.scale, self.offset, self.labels = (
        t.to(self.device) for t in (self.video, self.scale, self.offset, self.labels))
    self.valid = [frames] * batch
    self.fixed = spec.get('model', {}).get('stage') == 'warmup'
    opt = spec.get('optimizer', {})
    self.optimizer = None
    if self.mode == 'train':
      self.model.train()
      self.optimizer = torch.optim.SGD(
          self.model.parameters(), lr=opt.get('lr', 1e-3), momentum=opt.get('momentum', 0.9),
          nesterov=opt.get('nesterov', True) and opt.get('momentum', 0.9) > 0,
          weight_decay=opt.get('weight_decay', 1e-4))
    else:
      self.model.eval()

  def _inputs(self):
    # Like the JAX steps, which normalise uint8 batches inside the step.
    return self.video.float() * self.scale + self.offset

  def _loss(self, x):
    ce = nn.functional.cross_entropy
    if self.arch == 'salinet_i3d':
      logits, aux = self.model(x, return_aux=True)
      loss = ce(logits, self.labels) + 1e-4 * aux['saliency_final'].abs().sum()
      for p, g in (('P1', 'G1'), ('P2', 'G2')):
        loss = loss + 1e-4 * torch.mean((aux[p] - aux[g]) ** 2)
      return loss
    if self.arch == 's2dnet':
      dnet, snet, _ = self.model(x, self.valid, self.fixed)
      return ce(dnet, self.labels, label_smoothing=0.1) + 0.1 * ce(snet, self.labels)
    return ce(self.model(x), self.labels)

  def step(self) -> None:
    """One step, done when it returns (on a GPU too)."""
    self._step()
    if self.device.type == 'cuda':
      torch.cuda.synchronize(self.device)

  def _amp(self):
    """PyTorch AMP's autocast where the spec asks for it: around the forward pass and the loss,
    not the backward pass or the update (as PyTorch's AMP recipe has it)."""
    return (torch.autocast(self.device.type, dtype=getattr(torch, self.autocast))
            if self.autocast else contextlib.nullcontext())

  def device_peak_mib(self) -> Optional[float]:
    """The peak of PyTorch's allocations on the GPU, or None on the CPU."""
    if self.device.type != 'cuda':
      return None
    return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)

  def _step(self) -> None:
    if self.mode == 'train':
      self.optimizer.zero_grad(set_to_none=True)
      with self._amp():
        loss = self._loss(self._inputs())
      loss.backward()
      self.optimizer.step()
      return
    with torch.no_grad(), self._amp():
      x = self._inputs()
      if self.arch == 's2dnet':
        self.model(x, self.valid, self.fixed)
      else:
        self.model(x)


def time_steps(step: Callable[[], None], steps: int):
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return times


def serve(spec: Dict[str, Any]) -> None:
  """The benchmark's side of an interleaved comparison: builds the workload and runs its
  warm-up, prints a `ready` line, then runs one step per `step` line read from stdin and prints
  its time; at the end of stdin prints the process's peak RSS. A spec PyTorch cannot build is one
  `error` line and exit status 2."""
  try:
    workload = Workload(spec)
  except ValueError as e:
    print(json.dumps({'error': str(e)}), flush=True)
    sys.exit(2)
  warmup = time_steps(workload.step, int(spec.get('warmup', 1)))
  print(json.dumps({'ready': True, 'torch_version': torch.__version__,
                    'threads': torch.get_num_threads(), 'warmup_s': warmup}), flush=True)
  for line in sys.stdin:
    if line.strip() != 'step':
      raise ValueError(f'unexpected command {line.strip()!r} (expected "step")')
    print(json.dumps({'step_s': time_steps(workload.step, 1)[0]}), flush=True)
  print(json.dumps({'peak_rss_mib': round(peak_rss_mib(), 1),
                    'device_peak_memory_mib': workload.device_peak_mib()}), flush=True)


def main(argv) -> None:
  spec = json.loads(argv[1])
  if argv[2:] == ['--serve']:
    serve(spec)
    return
  steps = int(argv[2]) if len(argv) > 2 else 2
  workload = Workload(spec)
  warmup = time_steps(workload.step, int(spec.get('warmup', 1)))
  times = time_steps(workload.step, steps)
  print(json.dumps({'framework': 'torch', 'torch_version': torch.__version__,
                    'threads': torch.get_num_threads(), 'warmup_s': warmup,
                    'step_time_median_s': statistics.median(times), 'step_times_s': times,
                    'peak_rss_mib': round(peak_rss_mib(), 1),
                    'device_peak_memory_mib': workload.device_peak_mib()}))


if __name__ == '__main__':
  main(sys.argv)
