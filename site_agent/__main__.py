"""``python -m site_agent`` is ``fedgwas-site``."""

import sys

from site_agent.cli import main

sys.exit(main())
