"""`python -m data.convert ...`: the converter's command line (data/convert/cli.py)."""

import sys

import data

data.quiet_tensorflow()  # before TensorFlow is imported

# pylint: disable=g-import-not-at-top,wrong-import-position
from data import errors
from data.convert import cli

if __name__ == '__main__':
  with errors.ctrl_c_while_ending():
    sys.exit(cli.main())
