"""``python -m vaediag``: the same command line as the ``vaediag`` console script."""

import sys

from vaediag.cli import main

if __name__ == "__main__":
    sys.exit(main())
