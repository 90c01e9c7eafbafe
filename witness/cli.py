"""``fedgwas witness serve``: run a ledger-head witness.

::

    fedgwas witness serve --dir DIR [--listen HOST:PORT] [--ready-file PATH]

``DIR`` holds the witness's key (``witness.key``, 0600, created on first start; ``witness.key.pub``
is what auditors pin) and every head it co-signed (``heads.jsonl``, append-only). Keep both.

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import ExitCode, FedGwasError

COMMANDS = ("witness",)


def add_commands(sub: argparse._SubParsersAction) -> None:
    witness = sub.add_parser("witness", help="run a witness that co-signs and keeps the sites' ledger heads")
    actions = witness.add_subparsers(dest="witness_command", required=True)
    serve = actions.add_parser("serve", help="co-sign and keep ledger heads until interrupted",
                               description="Co-signs each site's signed ledger head and keeps every head, "
                                           "append-only; refuses a head that rolls back or contradicts one it "
                                           "holds, or is signed by another key than the site's first head.")
    serve.add_argument("--dir", required=True, help="the witness's key and its record of heads (created if needed)")
    serve.add_argument("--listen", default="0.0.0.0:50070",
                       help="address to serve on (default 0.0.0.0:50070; port 0 picks a free port)")
    serve.add_argument("--ready-file", help="write {\"address\": ..., \"key\": ...} as JSON here once serving")


def run(args: argparse.Namespace) -> int:
    from witness.server import serve

    try:
        serve(Path(args.dir), args.listen, args.ready_file)
    except FedGwasError as error:
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return ExitCode.INPUT
    return ExitCode.OK
