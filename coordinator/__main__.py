"""``python -m coordinator`` is ``fedgwas``."""

import sys

from coordinator.cli import main

sys.exit(main())
