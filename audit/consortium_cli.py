"""``fedgwas audit cross-check``: compare the coordinator's log with the sites' ledgers.

    fedgwas audit cross-check --coordinator-log OUT/coordinator-log.jsonl --ledger L1 [--ledger L2 ...] [--strict]

Each ledger's hash chain is verified first; then every request and release in the log must appear in
the ledger of the site it went to, with the same release digest (engine/audit/coordinator_log.py). Exit 0
when everything matches, 4 when a ledger fails verification or disagrees with the log (each problem
is printed), 2 when a file cannot be read.
"""

from __future__ import annotations

import argparse

from engine.errors import ExitCode
from engine.audit.coordinator_log import cross_check, read_log
from engine.audit.ledger import open_entries, verify

COMMANDS = ("audit",)


def add_commands(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="check a coordinator log against site ledgers")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser("cross-check", help="compare the coordinator's log with site ledgers")
    check.add_argument("--coordinator-log", required=True, metavar="LOG",
                       help="the coordinator's log (OUT/coordinator-log.jsonl)")
    check.add_argument("--ledger", action="append", required=True, metavar="LEDGER",
                       help="a site's ledger.sqlite (repeat for each site)")
    check.add_argument("--strict", action="store_true",
                       help="also fail on ledger releases to this log's requesters that the log does not show")


def run(args: argparse.Namespace) -> int:
    """Run ``audit cross-check``; unreadable files raise domain errors for the caller (exit 2)."""
    events = read_log(args.coordinator_log)
    ledgers, failed = {}, []
    for path in args.ledger:
        entries = open_entries(path)
        verification = verify(entries)
        site = entries[-1].site if entries else path
        if not verification.ok:
            failed.append(f"ledger of site {site!r} ({path}) fails verification at entry "
                          f"{verification.first_bad}: {verification.problem}")
        print(f"ledger {path}: site {site!r}, {verification.n_entries} entries, "
              + ("hash chain intact" if verification.ok else "HASH CHAIN BROKEN"))
        ledgers[site] = entries
    result = cross_check(events, ledgers, strict=args.strict)
    for note in result.notes:
        print(f"note: {note}")
    problems = failed + result.problems
    for problem in problems:
        print(f"MISMATCH: {problem}")
    if problems:
        print(f"cross-check FAILED: {len(problems)} problem(s)")
        return ExitCode.AUDIT
    print(f"cross-check OK: {result.matched} release(s) match, every logged request is in the ledgers")
    return ExitCode.OK
