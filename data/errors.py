"""Errors in the input data a user can fix (missing records, corrupt shards, bad videos).

Kept apart from `salinet_jax.errors` because `data/` never imports the model package; the
command line reports both kinds as one line without a traceback.
"""


class DataError(Exception):
  """Input data that cannot be read as asked; the message names the file, field or value."""


class SettingError(DataError, ValueError):
  """A `config.data` value the input pipeline cannot work with (the message names the field)."""
