"""Export failures a user can fix: the command line prints them as one line and exits 1; and
the export found already done."""

from salinet_jax import errors


class ExportError(errors.UserError):
  """Bad arguments, a workdir without a usable checkpoint, or missing optional packages."""


class ParityError(ExportError):
  """A format's outputs differ from the jitted model's beyond the tolerance; nothing is written."""


class AlreadyExported(Exception):
  """OUT already holds the very export asked for (a rerun of a finished command): nothing to do.
  `summary` is its export.json."""

  def __init__(self, message: str, summary):
    super().__init__(message)
    self.summary = summary
