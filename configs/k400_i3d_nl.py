"""Baseline: PySlowFast NL-I3D-R50 8x8 on Kinetics-400, the SaliNet recipe with the modules off.

  python main.py --config=configs/k400_i3d_nl.py --workdir=runs/k400_i3d_nl \\
      --config.dataset.data_dir=/data/k400_records
"""

import ml_collections

from configs import k400_salinet


def get_config() -> ml_collections.ConfigDict:
  config = k400_salinet.get_config()
  config.model = ml_collections.ConfigDict(dict(
      name='i3d_nl', depth=50, width=64, use_nonlocal=True, dropout_rate=0.5, conv_impl='auto'))
  config.loss.name = 'cross_entropy'
  return config
