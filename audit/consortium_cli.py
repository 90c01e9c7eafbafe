"""``fedgwas audit``: the auditor's consortium-wide commands.

    fedgwas audit cross-check --coordinator-log OUT/coordinator-log.jsonl --ledger [SITE=]L1 [--ledger ...]
                              [--witness HOST:PORT [--witness-key FILE]] [--site-key SITE=FILE ...] [--strict]
    fedgwas audit report --coordinator-log LOG --ledger [SITE=]L1 ... [--json FILE] [--png FILE] [--html FILE]

``cross-check`` verifies each ledger's hash chain, recomputes every DP charge through OpenDP, compares
mechanism/ε/δ with what the coordinator asked for, checks that each ledger extends every signed head
held by the coordinator's log and the witness, and that every logged request and release is in the
ledgers with the same digest (audit/cross_check.py). Exit 0 when everything matches, 4 when anything
does not (each problem is printed), 2 when the log or the witness cannot be read.
``report`` shows the budget spent and left per site, dataset, study and requester over time and the
refusals by reason (audit/consortium.py).
"""

from __future__ import annotations

import argparse

from engine.errors import ExitCode

COMMANDS = ("audit",)


def _ledger_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator-log", required=True, metavar="LOG",
                        help="the coordinator's log (OUT/coordinator-log.jsonl)")
    parser.add_argument("--ledger", action="append", required=True, metavar="[SITE=]LEDGER",
                        help="a site's ledger.sqlite, optionally as SITE=PATH (checked to be that site's; repeat)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="check site ledgers against the coordinator's log and the witness")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser("cross-check", help="compare the coordinator's log, the witness and site ledgers")
    _ledger_arguments(check)
    check.add_argument("--witness", metavar="HOST:PORT", help="a witness holding the sites' signed heads")
    check.add_argument("--witness-key", metavar="FILE", help="the witness's public key (witness.key.pub) to pin")
    check.add_argument("--site-key", action="append", default=[], metavar="SITE=FILE",
                       help="a site's ledger public key (keys/ledger-signing.key.pub): heads under another key fail")
    check.add_argument("--strict", action="store_true",
                       help="also fail on ledger releases to this log's requesters that the log does not show")
    report = commands.add_parser("report", help="budgets spent and left across sites, refusals by reason")
    _ledger_arguments(report)
    report.add_argument("--json", metavar="FILE", help="write the report as JSON")
    report.add_argument("--png", metavar="FILE", help="draw the spending over time as a PNG chart")
    report.add_argument("--html", metavar="FILE", help="write a self-contained HTML page (tables and chart)")


def run(args: argparse.Namespace) -> int:
    """Run an ``audit`` subcommand; an unreadable log or witness raises domain errors (exit 2)."""
    from pathlib import Path

    from engine.audit.heads import read_public_key

    if args.audit_command == "report":
        from audit.consortium import build, write_outputs

        report = build(args.coordinator_log, args.ledger)
        for line in write_outputs(report, args.json, args.png, args.html):
            print(line)
        return ExitCode.OK
    from audit.cross_check import read_site_keys, run_cross_check

    outcome = run_cross_check(args.coordinator_log, args.ledger, witness=args.witness,
                              witness_key=read_public_key(Path(args.witness_key)) if args.witness_key else None,
                              site_keys=read_site_keys(args.site_key), strict=args.strict)
    for line in outcome.lines:
        print(line)
    for note in outcome.notes:
        print(f"note: {note}")
    for problem in outcome.problems:
        print(f"MISMATCH: {problem}")
    if outcome.problems:
        print(f"cross-check FAILED: {len(outcome.problems)} problem(s)")
        return ExitCode.AUDIT
    print(f"cross-check OK: {outcome.matched} release(s) match, every logged request is in the ledgers, every DP "
          f"charge recomputes, every held head is extended")
    return ExitCode.OK
