"""``fedgwas-site audit``: what an auditor runs on a site's ledger (read-only).

    fedgwas-site audit verify LEDGER [--head HASH] [--published-head FILE] [--key FILE]
    fedgwas-site audit report LEDGER [--json] [--png FILE] [--html FILE]

``verify`` exits 0 when the hash chain is intact, every DP charge recomputes through OpenDP from the
recorded mechanism, ε, δ and sensitivity (audit/charges.py), and the ledger extends the given heads
(a head hash recorded earlier, or a signed head record such as the site's ``published-head.json``,
checked against the site's public key with ``--key``); 4 otherwise, naming each problem. It prints
the budget spent from the recomputed charges and the head hash. ``report`` shows the privacy budget
spent and left per dataset, study and requester (recomputed), and refusals by reason, as a table,
JSON, a PNG chart or a self-contained HTML page; it works on a ledger that fails verification too
(and says so), since an auditor needs to see it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.audit.ledger import open_entries, verify
from engine.errors import ExitCode

COMMANDS = ("audit",)


def add_commands(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="verify a ledger (chain, recomputed charges, signed heads) or report "
                                         "the privacy budget spent")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser("verify", help="check the ledger's hash chain, recompute its DP charges and check it "
                                               "extends the given heads (exit 4 naming each problem)")
    check.add_argument("ledger", help="path to ledger.sqlite")
    check.add_argument("--head", help="a head hash recorded earlier: it must still be in the chain (detects "
                                      "entries removed from the end)")
    check.add_argument("--published-head", metavar="FILE",
                       help="a signed head record (the site's published-head.json): the ledger must extend it")
    check.add_argument("--key", metavar="FILE", help="the site's ledger public key (ledger-signing.key.pub): the "
                                                     "signed head must be signed by it")
    report = commands.add_parser("report", help="budget spent and left per dataset, study and requester")
    report.add_argument("ledger", help="path to ledger.sqlite")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--png", metavar="FILE", help="also draw the spending over time as a PNG chart")
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")


def _verify(args: argparse.Namespace) -> int:
    from audit.charges import recompute_charges
    from audit.heads_check import HeldHead, check_extension, check_signatures
    from engine.privacy import dp
    from engine.audit.heads import HeadRecord, read_public_key
    from engine.errors import ConfigError
    from audit.site_report import build_report

    entries = open_entries(args.ledger)
    verification = verify(entries, head=args.head)
    problems = [] if verification.ok else [f"at entry {verification.first_bad}: {verification.problem}"]
    charges = recompute_charges(entries)
    problems += list(charges.problems)
    site = entries[-1].site if entries else ""
    if args.published_head:
        record = HeadRecord.read(Path(args.published_head))
        if record is None:
            raise ConfigError(f"published-head record {args.published_head!r} does not exist")
        held = [HeldHead(f"the head record {args.published_head}", record.head)]
        key = read_public_key(Path(args.key)) if args.key else None
        problems += check_signatures(record.head.site, held, key)
        problems += check_extension(record.head.site, [e.hash for e in entries], held)
    if problems:
        for problem in problems:
            print(f"ledger {args.ledger}: FAILED {problem}")
        return ExitCode.AUDIT
    report = build_report(args.ledger, entries, verification, charges)
    dataset = next((s for s in report.scopes if s.scope == "dataset" and s.name == (entries[-1].dataset if entries
                                                                                      else "")), None)
    print(f"ledger {args.ledger}: OK, {verification.n_entries} entries, hash chain intact, "
          f"{len(charges.rho)} DP charge(s) recomputed through OpenDP" + (f", site {site!r}" if site else ""))
    if dataset is not None and report.budget:
        print(f"budget spent (recomputed): rho {dataset.rho_spent:.6g}, epsilon "
              f"{dp.epsilon_from_rho(dataset.rho_spent, report.delta):.4g} of {report.budget['epsilon']:g} at delta "
              f"{report.delta:g}")
    print(f"head {verification.head}")
    return ExitCode.OK


def run(args: argparse.Namespace) -> int:
    """Run an ``audit`` subcommand; domain errors (no such ledger) are left to the caller (exit 2)."""
    if args.audit_command == "verify":
        return _verify(args)
    # Imported here: the report pulls in OpenDP and matplotlib, which `serve` does not need.
    from audit.site_report import build_report, html_sections, plot_spending, render_table, to_json

    entries = open_entries(args.ledger)
    report = build_report(args.ledger, entries, verify(entries))
    print(to_json(report) if args.json else render_table(report))
    if args.png:
        print(f"chart: {plot_spending(report, args.png)}") if not args.json else plot_spending(report, args.png)
    if args.html:
        from audit.html import render

        png = Path(args.html).with_suffix(".tmp.png")
        plot_spending(report, png)
        Path(args.html).write_text(render(f"Privacy budget audit: {report.site or args.ledger}",
                                          html_sections(report), png), encoding="utf-8")
        png.unlink()
        if not args.json:
            print(f"html: {args.html}")
    return ExitCode.OK
