"""Export failures a user can fix: the command line prints them as one line and exits 1."""

from salinet_jax import errors


class ExportError(errors.UserError):
  """Bad arguments, a workdir without a usable checkpoint, or missing optional packages."""


class ParityError(ExportError):
  """A format's outputs differ from the jitted model's beyond the tolerance; nothing is written."""
