"""`python -m data.convert ...`: the converter's command line (data/convert/cli.py)."""

import sys

from data.convert import cli

if __name__ == '__main__':
  sys.exit(cli.main())
