"""``python -m pipeline`` runs the dexport command line."""

import sys

from pipeline.cli import main

sys.exit(main())
