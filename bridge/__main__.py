"""``python -m bridge`` is ``parloa-bridge``."""

import sys

from bridge.cli import main

sys.exit(main())
