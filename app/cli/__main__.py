"""`python -m app.cli`: the `lookalike` command without the console script."""

import sys

from app.cli.commands import main

if __name__ == "__main__":  # importing the package's modules (e.g. to list error classes) runs nothing
    sys.exit(main())
