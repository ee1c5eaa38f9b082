"""python -m scratchcap <command> ...: the same as the ``scratchcap`` command."""
import sys

from .cli import main

sys.exit(main())
