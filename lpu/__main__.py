"""`python -m lpu` runs the command line."""

import sys

from lpu.cli import main

sys.exit(main())
