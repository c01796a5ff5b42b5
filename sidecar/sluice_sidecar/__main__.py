"""``python -m sluice_sidecar``: parse the command line and serve (see ``main``)."""

import sys

from .main import main

sys.exit(main())
