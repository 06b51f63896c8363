"""``python -m archlab`` runs the command line (and torchrun can launch it)."""

import sys

from archlab.cli import main

sys.exit(main())
