"""``python -m runforgectl``: the command-line client of runforged (see runforgectl.cli)."""

import sys

from runforgectl.cli import main

if __name__ == "__main__":
    sys.exit(main())
