"""Auditor's views of a site ledger: budget spent and left per dataset, study and requester, over time.

``fedgwas-site audit report LEDGER`` prints :func:`render_table`; ``--json`` prints :func:`to_json`;
``--png FILE`` draws :func:`plot_spending`. Spending is the sum of the zCDP ρ of ``accepted``
entries (see engine/privacy/budget.py), shown as ε at the budget's δ through OpenDP's conversion; the
budget is the policy recorded in the ledger with each charge (the latest one is shown).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from engine.privacy import dp
from engine.audit.ledger import LedgerEntry, Verification

#: δ used to express spending as ε when the ledger records no budget policy.
DEFAULT_DELTA = 1e-6


@dataclass(frozen=True)
class ScopeReport:
    """Spending of one dataset, study or requester. ``epsilon_budget`` is the configured limit (for
    studies and requesters: their cap, else ``None``: only the dataset budget limits them)."""

    scope: str
    name: str
    dp_releases: int
    exact_releases: int
    refused: int
    aborted: int
    rho_spent: float
    epsilon_spent: float
    epsilon_budget: float | None
    epsilon_remaining: float | None  # largest further release (ε at δ) this scope admits


@dataclass(frozen=True)
class TimelineRow:
    time: str
    seq: int
    kind: str
    requester: str
    study: str
    analysis: str
    mechanism: str
    epsilon: float
    rho: float
    dataset_epsilon_spent: float  # cumulative, after this entry


@dataclass(frozen=True)
class LedgerReport:
    ledger: str
    verification: Verification
    budget: dict[str, Any]
    delta: float
    scopes: tuple[ScopeReport, ...]
    timeline: tuple[TimelineRow, ...]


def _latest_budget(entries: Sequence[LedgerEntry]) -> dict[str, Any]:
    for entry in reversed(entries):
        if entry.budget:
            return entry.budget_policy
    return {}


def build_report(path: Path | str, entries: Sequence[LedgerEntry], verification: Verification) -> LedgerReport:
    """Spending per scope and the charge/refusal timeline of a ledger's entries."""
    budget = _latest_budget(entries)
    delta = float(budget.get("delta") or DEFAULT_DELTA)
    limits = {"dataset": budget.get("epsilon"), "study": budget.get("study_epsilon"),
              "requester": budget.get("requester_epsilon")}
    groups: dict[tuple[str, str], list[LedgerEntry]] = {}
    for entry in entries:
        for scope, name in (("dataset", entry.dataset), ("study", entry.study), ("requester", entry.requester)):
            groups.setdefault((scope, name), []).append(entry)
    # A site has one dataset; the latest entry names it (earlier labels, if it was renamed, are shown too).
    current = entries[-1].dataset if entries else ""
    current_rho = sum(e.rho for e in groups.get(("dataset", current), []) if e.kind == "accepted")
    scopes = []
    for (scope, name), group in groups.items():
        rho = sum(e.rho for e in group if e.kind == "accepted")
        limit = limits[scope]
        remaining = None
        if budget and (scope != "dataset" or name == current):
            room = [dp.rho_from_epsilon(float(budget["epsilon"]), delta) - current_rho]
            if limit is not None and scope != "dataset":
                room.append(dp.rho_from_epsilon(float(limit), delta) - rho)
            remaining = dp.epsilon_from_rho(max(min(room), 0.0), delta)
        released = [e for e in group if e.kind == "released"]
        scopes.append(ScopeReport(
            scope=scope, name=name, dp_releases=sum(e.mechanism != "exact" for e in released),
            exact_releases=sum(e.mechanism == "exact" for e in released),
            refused=sum(e.kind == "refused" for e in group), aborted=sum(e.kind == "aborted" for e in group),
            rho_spent=rho, epsilon_spent=dp.epsilon_from_rho(rho, delta),
            epsilon_budget=None if limit is None else float(limit), epsilon_remaining=remaining))
    order = {"dataset": 0, "study": 1, "requester": 2}
    scopes.sort(key=lambda s: (order[s.scope], s.name))
    timeline, spent = [], 0.0
    for entry in entries:
        if entry.kind not in ("accepted", "refused") or entry.mechanism == "exact":
            continue
        spent += entry.rho if entry.kind == "accepted" else 0.0
        timeline.append(TimelineRow(entry.time, entry.seq, entry.kind, entry.requester, entry.study, entry.analysis,
                                    entry.mechanism, entry.epsilon, entry.rho, dp.epsilon_from_rho(spent, delta)))
    return LedgerReport(str(path), verification, budget, delta, tuple(scopes), tuple(timeline))


def to_json(report: LedgerReport) -> str:
    v = report.verification
    return json.dumps({
        "ledger": report.ledger,
        "verification": {"ok": v.ok, "entries": v.n_entries, "head": v.head, "first_bad_entry": v.first_bad or None,
                         "problem": v.problem or None},
        "budget": report.budget or None, "delta": report.delta,
        "scopes": [asdict(s) for s in report.scopes], "timeline": [asdict(t) for t in report.timeline],
    }, indent=2)


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def render_table(report: LedgerReport) -> str:
    v = report.verification
    status = f"hash chain intact (head {v.head[:16]}...)" if v.ok else f"FAILED VERIFICATION: {v.problem}"
    lines = [f"ledger {report.ledger}: {v.n_entries} entries, {status}"]
    if report.budget:
        caps = [f"{k} {report.budget[k]:g}" for k in ("study_epsilon", "requester_epsilon") if report.budget.get(k)]
        lines.append(f"budget: epsilon {report.budget['epsilon']:g} at delta {report.delta:g} per dataset"
                     + (f" (caps: {', '.join(caps)})" if caps else "")
                     + "; zCDP accounting, epsilon shown at that delta")
    else:
        lines.append(f"budget: none recorded (no DP release was charged); epsilon shown at delta {report.delta:g}")
    header = (f"{'scope':<10} {'name':<24} {'DP rel.':>7} {'exact':>6} {'refused':>7} {'rho spent':>10} "
              f"{'eps spent':>10} {'eps budget':>10} {'eps left*':>10}")
    lines += ["", header, "-" * len(header)]
    for s in report.scopes:
        lines.append(f"{s.scope:<10} {s.name[:24]:<24} {s.dp_releases:>7} {s.exact_releases:>6} {s.refused:>7} "
                     f"{s.rho_spent:>10.4g} {s.epsilon_spent:>10.4g} {_number(s.epsilon_budget):>10} "
                     f"{_number(s.epsilon_remaining):>10}")
    lines.append("* eps left: the largest epsilon (at the budget's delta) one more release may have")
    if report.timeline:
        header = (f"{'time (UTC)':<26} {'entry':>5} {'event':<9} {'requester':<16} {'study':<16} {'analysis':<8} "
                  f"{'mech.':<8} {'epsilon':>8} {'rho':>9} {'dataset eps spent':>17}")
        lines += ["", header, "-" * len(header)]
        for t in report.timeline:
            lines.append(f"{t.time[:26]:<26} {t.seq:>5} {t.kind:<9} {t.requester[:16]:<16} {t.study[:16]:<16} "
                         f"{t.analysis[:8]:<8} {t.mechanism[:8]:<8} {t.epsilon:>8.4g} {t.rho:>9.4g} "
                         f"{t.dataset_epsilon_spent:>17.4g}")
    return "\n".join(lines)


def plot_spending(report: LedgerReport, path: Path | str) -> Path:
    """PNG of cumulative ε spent over time per dataset, study and requester, with the budgets.

    Drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas (no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import date2num
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = report.timeline
    start = datetime.fromisoformat(rows[0].time) if rows else None
    end = datetime.fromisoformat(rows[-1].time) if rows else None
    styles = {"dataset": "-", "study": "--", "requester": ":"}
    for scope, style in styles.items():
        names = sorted({getattr(t, scope) if scope != "dataset" else "dataset" for t in rows})
        for name in names:
            times, spent, rho = [], [], 0.0
            for t in rows:
                if scope != "dataset" and getattr(t, scope) != name:
                    continue
                if t.kind == "accepted":
                    rho += t.rho
                    times.append(datetime.fromisoformat(t.time))
                    spent.append(dp.epsilon_from_rho(rho, report.delta))
            if times and start is not None and end is not None:  # from 0 at the first request to the last
                ax.step(date2num([start, *times, end]), [0.0, *spent, spent[-1]], where="post", linestyle=style, marker="o",
                        markersize=3, label=f"{scope} {name}" if scope != "dataset" else "dataset")
    refused = [t for t in rows if t.kind == "refused"]
    if refused:
        ax.scatter(date2num([datetime.fromisoformat(t.time) for t in refused]), [t.dataset_epsilon_spent for t in refused],
                   marker="x", color="crimson", zorder=3, label="refused request")
    for key, label in (("epsilon", "dataset budget"), ("study_epsilon", "study cap"),
                       ("requester_epsilon", "requester cap")):
        if report.budget.get(key):
            ax.axhline(float(report.budget[key]), color="grey", linewidth=1,
                       linestyle="-" if key == "epsilon" else "--", label=label)
    ax.xaxis_date()
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"epsilon spent (at delta {report.delta:g})")
    ax.set_title(f"Privacy budget spent: {Path(report.ledger).name}")
    if rows or report.budget:
        ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
