"""Baseline: PySlowFast's NL-I3D-R50 8x8 on Kinetics-400, trained as PySlowFast trains it.

configs/Kinetics/I3D_NLN_8x8_R50.yaml: from scratch, 8 GPUs x 8 clips (BatchNorm over each GPU's
8 clips), SGD with Nesterov, LR 0.1, cosine over 196 epochs with 34 epochs of linear warm-up from
0.01, weight decay 1e-4 except BatchNorm, dropout 0.5, precise BN over 200 batches; test: 10
clips x 3 crops at 256, the sum of the views' softmax scores (its head applies softmax at test
time). Known difference: PySlowFast's test head is fully convolutional (2 x 2 positions on a
256 crop, averaged after the softmax); here the head pools globally.

  python main.py --config=configs/k400_i3d_nl.py --workdir=runs/k400_i3d_nl \\
      --config.dataset.data_dir=/data/k400_records

`configs/k400_i3d_nl.py:slow_r50` is PySlowFast's Slow R50 8x8 (configs/Kinetics/SLOW_8x8_R50.yaml)
on the same recipe: no non-local blocks, a stem and res2-res3 without temporal kernels, res4-res5
with them, and no temporal pooling after res2. Its weights have the same shapes as those of an
I3D with other temporal settings, so the conversion cannot tell them apart: convert Slow R50
checkpoints with this config. (The tests check these settings, not outputs against a PyTorch
Slow R50: their reference model is PySlowFast's I3D.)
"""

import ml_collections

from configs import k400_salinet


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  if variant not in ('', 'slow_r50'):
    raise ValueError(f"configs/k400_i3d_nl.py takes no argument or 'slow_r50', got {variant!r}.")
  config = k400_salinet.get_config()
  config.model = ml_collections.ConfigDict(dict(
      name='i3d_nl', depth=50, width=64, use_nonlocal=True, dropout_rate=0.5, conv_impl='auto'))
  if variant == 'slow_r50':
    config.model.update(dict(use_nonlocal=False, stem_temporal_kernel=1,
                             temporal_kernels=((1,), (1,), (3,), (3,)), pool1_temporal=1))
  config.init_from.checkpoint = 'none'  # PySlowFast trains it from scratch
  config.init_from.source = ''
  config.init_from.convert_command = ''
  config.init_from.exclude = ''
  config.loss.name = 'cross_entropy'

  config.optimizer.base_learning_rate = 0.1
  config.optimizer.schedule = 'pyslowfast_cosine'
  config.optimizer.warmup_epochs = 34.0
  config.optimizer.warmup_start_lr = 0.01

  config.batch_size = 64
  config.bn_group_size = 8
  config.eval_batch_size = 64
  config.num_epochs = 196.0
  config.eval_every_steps = 38_521  # every 10 epochs at batch 64
  config.eval.view_scores = 'softmax'
  return config
