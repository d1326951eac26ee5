"""``python -m coreai_opt``: the ``coreai-opt`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
