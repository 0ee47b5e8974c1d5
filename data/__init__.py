"""The input side: dataset registry, record schema, converters and the tf.data pipeline."""

import os

# TensorFlow's environment for every command here: level 2 keeps its C++ warnings and errors off
# the console; with oneDNN's optimisations on (the default on CPUs with AVX-512 VNNI or AMX),
# TensorFlow prints a notice at import whatever the level, and its ops' results then depend on
# the CPU. Off, they are Eigen's everywhere.
TENSORFLOW_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0'}


def quiet_tensorflow() -> None:
  """Sets TENSORFLOW_ENV where the environment does not. Call before TensorFlow is imported."""
  for name, value in TENSORFLOW_ENV.items():
    os.environ.setdefault(name, value)
