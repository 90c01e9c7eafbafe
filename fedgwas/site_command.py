"""``fedgwas-site``: the site agent's commands (init, check, serve) and the auditor's ``audit`` on a site's ledger.

The command line is where roles meet; the role packages themselves never import each other.
"""

from __future__ import annotations

from audit import site_cli
from site_agent import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, plugins=(site_cli,))
