"""``fedgwas-site audit``: what an auditor runs on a site's ledger (read-only).

    fedgwas-site audit verify LEDGER [--head HASH]
    fedgwas-site audit report LEDGER [--json] [--png FILE]

``verify`` exits 0 when the hash chain is intact and 4 otherwise, naming the first bad entry; it
prints the head hash, which a site can publish or hand to its auditors, so that a later
``verify --head HASH`` shows whether entries were cut off the end. ``report`` shows the privacy budget
spent and left per dataset, study and requester, as a table, as JSON, or as a PNG chart; it works on
a ledger that fails verification too (and says so), since an auditor needs to see it.
"""

from __future__ import annotations

import argparse

from engine.errors import ExitCode
from engine.audit.ledger import open_entries, verify

COMMANDS = ("audit",)



def add_commands(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="verify a ledger's hash chain or report the privacy budget spent")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser("verify", help="check the ledger's hash chain (exit 4 and the first bad entry "
                                               "if any entry was edited, removed or reordered)")
    check.add_argument("ledger", help="path to ledger.sqlite")
    check.add_argument("--head", help="a head hash recorded earlier: it must still be in the chain (detects "
                                      "entries removed from the end)")
    report = commands.add_parser("report", help="budget spent and left per dataset, study and requester")
    report.add_argument("ledger", help="path to ledger.sqlite")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--png", metavar="FILE", help="also draw the spending over time as a PNG chart")


def run(args: argparse.Namespace) -> int:
    """Run an ``audit`` subcommand; domain errors (no such ledger) are left to the caller (exit 2)."""
    # Imported here: the report pulls in OpenDP and matplotlib, which `serve` does not need.
    from audit.site_report import build_report, plot_spending, render_table, to_json

    entries = open_entries(args.ledger)
    verification = verify(entries, head=args.head if args.audit_command == "verify" else None)
    if args.audit_command == "verify":
        if not verification.ok:
            print(f"ledger {args.ledger}: FAILED at entry {verification.first_bad}: {verification.problem}")
            return ExitCode.AUDIT
        print(f"ledger {args.ledger}: OK, {verification.n_entries} entries, hash chain intact")
        print(f"head {verification.head}")
        return ExitCode.OK
    report = build_report(args.ledger, entries, verification)
    print(to_json(report) if args.json else render_table(report))
    if args.png:
        print(f"chart: {plot_spending(report, args.png)}") if not args.json else plot_spending(report, args.png)
    return ExitCode.OK
