"""``fedgwas keys he`` and ``fedgwas keyholder serve``: the key holder of ``--privacy he`` studies.

::

    fedgwas keys he --out DIR
        CKKS key pair: DIR/he_secret.ctx (0600, never overwritten) and DIR/he_public.ctx; prints the
        public context's SHA-256, which every site pins (fedgwas-site init --he-context he_public.ctx).
    fedgwas keyholder serve --keys DIR [--listen HOST:PORT] [--ready-file PATH] [--min-participants N]
        serve decryptions of registered aggregates until SIGTERM/SIGINT.

Exit codes: 0 success, 2 bad input or configuration, 1 internal error (a bug).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.errors import FedGwasError

COMMANDS = ("keys", "keyholder")
EXIT_OK, EXIT_INPUT = 0, 2


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``keys`` and ``keyholder`` subcommands to the ``fedgwas`` parser."""
    keys = sub.add_parser("keys", help="generate key material (fedgwas keys he --out DIR)")
    kinds = keys.add_subparsers(dest="keys_kind", required=True)
    he = kinds.add_parser("he", help="generate the key holder's CKKS key pair for --privacy he studies",
                          description="Writes DIR/he_secret.ctx (secret key, owner-only 0600; keep it at the key "
                                      "holder) and DIR/he_public.ctx (give it to the sites, which pin its SHA-256).")
    he.add_argument("--out", required=True, help="directory for he_secret.ctx and he_public.ctx (must not hold keys)")

    holder = sub.add_parser("keyholder", help="run the key holder of --privacy he studies")
    actions = holder.add_subparsers(dest="keyholder_command", required=True)
    serve = actions.add_parser("serve", help="decrypt registered aggregates for the coordinator until interrupted",
                               description="Holds the CKKS secret key; decrypts only the aggregate of every "
                                           "registered participant of a block, once, and releases exact totals.")
    serve.add_argument("--keys", required=True, help="directory written by `fedgwas keys he`")
    serve.add_argument("--listen", default="0.0.0.0:50060", help="address to serve on (default 0.0.0.0:50060; "
                                                                 "port 0 picks a free port)")
    serve.add_argument("--ready-file", help="write {\"address\": ..., \"sha256\": ...} as JSON here once serving")
    serve.add_argument("--min-participants", type=int, default=2,
                       help="fewest sites a decrypted sum may come from (default 2)")


def run(args: argparse.Namespace) -> int:
    """Execute a ``keys`` or ``keyholder`` command; returns the exit code."""
    from coordinator.key_holder import PUBLIC_FILE, SECRET_FILE, write_key_files  # imports tenseal

    try:
        if args.command == "keys":
            out = Path(args.out)
            fingerprint = write_key_files(out)
            print(f"wrote {out / SECRET_FILE} (secret: keep it at the key holder) and {out / PUBLIC_FILE}")
            print(f"public context sha256: {fingerprint}")
            print(f"each site pins it with: fedgwas-site init ... --he-context {out / PUBLIC_FILE}")
            return EXIT_OK
        from coordinator.key_holder_server import serve

        logging.getLogger("coordinator.key_holder").setLevel(logging.INFO)
        serve(Path(args.keys), args.listen, args.ready_file, min_participants=args.min_participants)
        return EXIT_OK
    except FedGwasError as error:
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return EXIT_INPUT
