"""``fedgwas audit report``: the privacy budgets of a whole consortium, from every site's ledger and
the coordinator's log.

Per site: the ledger's verification, the budget spent and left per dataset, study and requester over
time (from charges the auditor recomputes through OpenDP, audit/charges.py; see
audit/site_report.py), and refusals by reason. Across the consortium: refusals by reason at
all sites, and what the coordinator's log shows per site (requests, receipts, failures by reason).
Written as JSON, a PNG (one panel per site) and a self-contained HTML page.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from audit.cross_check import parse_ledger_spec
from audit.html import Section, render
from engine.audit.coordinator_log import read_log
from engine.errors import ConfigError
from audit.site_report import LedgerReport, build_report, draw_spending, html_sections, to_dict
from engine.audit.ledger import open_entries, verify


@dataclass(frozen=True)
class ConsortiumReport:
    log: str
    sites: tuple[tuple[str, LedgerReport], ...]
    missing: tuple[str, ...]  # ledgers that could not be read, with the reason
    refusals: tuple[tuple[str, int], ...]  # across sites
    coordinator: dict[str, dict[str, int]]  # site -> event kind -> count
    failures: tuple[tuple[str, int], ...]  # coordinator-side failures by reason


def _failure_reason(message: str) -> str:
    """The refusal kind in a coordinator ``failed`` event (``... refused: Kind: ...`` or the first words)."""
    for marker in ("privacy budget exceeded", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAVAILABLE",
                   "INVALID_ARGUMENT", "DEADLINE_EXCEEDED"):
        if marker in message:
            return marker
    return message.split(":", 1)[0][:60] or "other"


def build(log_path: str, ledger_specs: Sequence[str]) -> ConsortiumReport:
    """Read the log and every ledger (a missing or unreadable ledger is listed, not fatal)."""
    events = read_log(log_path)
    sites, missing = [], []
    for spec in ledger_specs:
        given, path = parse_ledger_spec(spec)
        try:
            entries = open_entries(path)
        except ConfigError as error:
            missing.append(f"{given or str(path)}: {error}")
            continue
        report = build_report(path, entries, verify(entries))
        sites.append((given or report.site or str(path), report))
    refusals: Counter[str] = Counter()
    for _, report in sites:
        refusals.update(dict(report.refusals))
    coordinator: dict[str, dict[str, int]] = {}
    failures: Counter[str] = Counter()
    for event in events:
        kind = str(event.get("event"))
        if kind not in ("requested", "received", "failed"):
            continue
        counts = coordinator.setdefault(str(event.get("site")), {"requested": 0, "received": 0, "failed": 0})
        counts[kind] += 1
        if kind == "failed":
            failures[_failure_reason(str(event.get("message", "")))] += 1
    order = lambda counter: tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0])))  # noqa: E731
    return ConsortiumReport(log_path, tuple(sites), tuple(missing), order(refusals), coordinator, order(failures))


def to_json(report: ConsortiumReport) -> str:
    return json.dumps({
        "coordinator_log": report.log,
        "sites": {name: to_dict(site) for name, site in report.sites},
        "unreadable_ledgers": list(report.missing),
        "refusals": [{"reason": r, "count": c} for r, c in report.refusals],
        "coordinator": report.coordinator,
        "coordinator_failures": [{"reason": r, "count": c} for r, c in report.failures],
    }, indent=2)


def plot(report: ConsortiumReport, path: Path | str) -> Path:
    """One panel per site: cumulative ε spent over time per dataset, study and requester, with budgets."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(report.sites), 1)
    fig = Figure(figsize=(8.0, 3.2 * n), dpi=100)
    FigureCanvasAgg(fig)
    for index, (name, site) in enumerate(report.sites):
        draw_spending(fig.add_subplot(n, 1, index + 1), site, f"site {name}")
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def summary_lines(report: ConsortiumReport) -> list[str]:
    lines = [f"consortium audit report: {len(report.sites)} site ledger(s), coordinator log {report.log}"]
    for name, site in report.sites:
        v = site.verification
        dataset = next((s for s in site.scopes if s.scope == "dataset"), None)
        state = "intact" if v.ok and not site.charge_problems else "FAILS VERIFICATION"
        spent = "" if dataset is None else (f", epsilon spent {dataset.epsilon_spent:.4g}"
                                            + (f" of {site.budget['epsilon']:g}, largest further release "
                                               f"{dataset.epsilon_remaining:.4g}" if site.budget and
                                               dataset.epsilon_remaining is not None else ""))
        lines.append(f"  site {name}: {v.n_entries} entries, {state}{spent}")
    lines += [f"  ledger not read: {m}" for m in report.missing]
    if report.refusals:
        lines.append("  refusals by reason: " + ", ".join(f"{r} {c}" for r, c in report.refusals))
    return lines


def write_outputs(report: ConsortiumReport, json_path: str | None, png_path: str | None,
                  html_path: str | None) -> list[str]:
    """Write the requested files; returns the lines to print (a summary, then each file written)."""
    lines = summary_lines(report)
    if json_path:
        Path(json_path).write_text(to_json(report), encoding="utf-8")
        lines.append(f"json: {json_path}")
    if png_path:
        lines.append(f"chart: {plot(report, png_path)}")
    if html_path:
        chart = Path(png_path) if png_path else plot(report, Path(html_path).with_suffix(".tmp.png"))
        overview = Section("Consortium")
        overview.lines += [(line.strip(), None) for line in summary_lines(report)[1:]]
        overview.tables.append((("site", "requested", "received", "failed"),
                                [(site, c["requested"], c["received"], c["failed"])
                                 for site, c in sorted(report.coordinator.items())]))
        if report.refusals:
            overview.tables.append((("refusal reason (all sites)", "count"), list(report.refusals)))
        if report.failures:
            overview.tables.append((("coordinator-side failure", "count"), list(report.failures)))
        sections: list[Any] = [overview]
        for name, site in report.sites:
            sections += html_sections(site, f"Site {name}")
        Path(html_path).write_text(render("Consortium privacy budget audit", sections, chart), encoding="utf-8")
        if not png_path:
            chart.unlink()
        lines.append(f"html: {html_path}")
    return lines
