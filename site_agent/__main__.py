"""``python -m site_agent`` runs the site agent's own commands (init, check, serve); ``fedgwas-site`` adds ``audit``."""

import sys

from site_agent.cli import main

sys.exit(main())
