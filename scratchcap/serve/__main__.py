"""python -m scratchcap.serve: the same as ``scratchcap serve``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
