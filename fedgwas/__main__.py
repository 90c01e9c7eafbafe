"""``python -m fedgwas`` is ``fedgwas``."""

import sys

from fedgwas.cli import main

sys.exit(main())
