"""`python -m tunegate`: the same entry point as the `tunegate` script."""

import sys

from tunegate.cli import main

sys.exit(main())
