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

from engine.errors import ExitCode, FedGwasError

COMMANDS = ("keys", "keyholder")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``keys`` and ``keyholder`` subcommands to the ``fedgwas`` parser."""
    keys = sub.add_parser("keys", help="generate key material (fedgwas keys he --out DIR)")
    kinds = keys.add_subparsers(dest="keys_kind", required=True)
    he = kinds.add_parser("he", help="generate the key holder's CKKS key pair for --privacy he studies",
                          description="Writes DIR/he_secret.ctx (secret key, owner-only 0600; keep it at the key "
                                      "holder) and DIR/he_public.ctx (give it to the sites, which pin its SHA-256).")
    he.add_argument("--out", required=True, help="directory for he_secret.ctx and he_public.ctx (must not hold keys)")
    tls = kinds.add_parser("tls", help="a development CA and mutual-TLS certificates for every party",
                           description="Creates DIR/ca.pem + DIR/ca.key once (kept on later runs) and, for each "
                                       "party, DIR/NAME.pem + DIR/NAME.key (keys 0600) with CN and DNS name = NAME. "
                                       "For tests, demos and pilots; a consortium normally uses its own CA.")
    tls.add_argument("--out", required=True, help="directory of the CA and certificates")
    tls.add_argument("--site", action="append", default=[], metavar="NAME", help="a site's name (repeat)")
    tls.add_argument("--coordinator", action="append", default=[], metavar="NAME",
                     help="a coordinator/analyst identity (repeat); sites see it as the requester")
    tls.add_argument("--key-holder", action="append", default=[], metavar="NAME", help="a key holder's name")

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
    transport = serve.add_mutually_exclusive_group(required=True)
    transport.add_argument("--tls-dir", metavar="DIR",
                           help="mutual TLS: DIR/ca.pem and DIR/NAME.pem, DIR/NAME.key (from `fedgwas keys tls`)")
    transport.add_argument("--insecure", action="store_true", help="plaintext gRPC (development only)")
    serve.add_argument("--tls-name", default="keyholder", help="certificate name in --tls-dir (default keyholder)")


def run(args: argparse.Namespace) -> int:
    """Execute a ``keys`` or ``keyholder`` command; returns the exit code."""
    if args.command == "keys" and args.keys_kind == "tls":
        return _tls_keys(args)
    from key_holder.keys import PUBLIC_FILE, SECRET_FILE, write_key_files  # imports tenseal

    try:
        if args.command == "keys":
            out = Path(args.out)
            fingerprint = write_key_files(out)
            print(f"wrote {out / SECRET_FILE} (secret: keep it at the key holder) and {out / PUBLIC_FILE}")
            print(f"public context sha256: {fingerprint}")
            print(f"each site pins it with: fedgwas-site init ... --he-context {out / PUBLIC_FILE}")
            return ExitCode.OK
        from key_holder.server import serve

        logging.getLogger("key_holder.keys").setLevel(logging.INFO)
        from protos.pki import TlsFiles

        tls = None if args.insecure else TlsFiles(Path(args.tls_dir) / "ca.pem", Path(args.tls_dir) / f"{args.tls_name}.pem",
                                                  Path(args.tls_dir) / f"{args.tls_name}.key")
        serve(Path(args.keys), args.listen, args.ready_file, min_participants=args.min_participants, tls=tls)
        return ExitCode.OK
    except FedGwasError as error:
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return ExitCode.INPUT


def _tls_keys(args: argparse.Namespace) -> int:
    """``fedgwas keys tls``: the development CA and one certificate per named party."""
    from protos.pki import dev_pki

    names = [*args.site, *args.coordinator, *args.key_holder]
    try:
        if not names:
            raise FedGwasError("name at least one party: --site NAME, --coordinator NAME or --key-holder NAME")
        if len(set(names)) != len(names):
            raise FedGwasError(f"party names must be unique, got {names}")
        files = dev_pki(Path(args.out), names)
    except FedGwasError as error:
        print(f"fedgwas: error: {error}", file=sys.stderr)
        return ExitCode.INPUT
    print(f"CA: {Path(args.out) / 'ca.pem'} (its key ca.key stays with whoever issues certificates)")
    for name, paths in files.items():
        print(f"{name}: {paths.cert} + {paths.key}")
    return ExitCode.OK
