"""The auditor's own arithmetic: every DP charge of a ledger recomputed, never read from a stored total.

For each DP entry (``accepted``, ``checked`` or ``refused`` with mechanism ``gaussian``/``laplace``)
the auditor takes what the site recorded about the task (analysis, cohort, number of variants and the
``dp.*`` parameters the coordinator sent, in the entry's ``parameters``) and

1. checks that the entry's mechanism, ε and δ are the ones the task asked for;
2. re-derives the release's sensitivity from the task (engine/privacy/dp_release.py, the same derivation
   the site runs) and checks it against the sensitivity the site recorded (``dp_charge``);
3. recomputes ρ through OpenDP's privacy map (:func:`engine.privacy.dp.calibrate`) and checks it against the
   ρ the entry claims.

The budget spent is then the sum of the *recomputed* ρ of ``accepted`` entries. An ``exact`` entry
(no DP) must be one whose task carried no ``dp.*`` parameters and must charge nothing. Editing a charge
to zero (and re-hashing the chain) therefore fails here, whatever the hashes say.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

from engine.privacy import dp
from engine.privacy.dp_release import KEYS, DpRequest, plan_release
from engine.errors import FedGwasError
from engine.tasks import CohortRequest
from engine.audit.ledger import LedgerEntry

#: Relative tolerance of ρ and sensitivity comparisons (both sides run the same deterministic calibration).
RELATIVE_TOLERANCE = 1e-9
DP_KINDS = ("accepted", "checked", "refused")


@dataclass(frozen=True)
class ChargeCheck:
    """Outcome of :func:`recompute_charges`: ``rho`` maps the seq of each DP entry (accepted, checked,
    refused) to its recomputed ρ; ``problems`` name each entry whose charge does not add up."""

    rho: dict[int, float]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def rho_spent(self, entries: Sequence[LedgerEntry], **scope: str) -> float:
        """Sum of recomputed ρ over ``accepted`` entries matching ``scope`` (e.g. ``study="s1"``)."""
        return sum(self.rho.get(e.seq, 0.0) for e in entries
                   if e.kind == "accepted" and all(getattr(e, k) == v for k, v in scope.items()))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-300)


def _description(entry: LedgerEntry) -> dict[str, Any]:
    try:
        value = json.loads(entry.parameters)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _recompute(entry: LedgerEntry, description: dict[str, Any]) -> tuple[float | None, str]:
    """ρ of one DP entry from its recorded task, or ``(None, why not)``."""
    parameters = description.get("parameters")
    cohort = description.get("cohort")
    if not isinstance(parameters, dict) or not isinstance(cohort, dict):
        return None, "its task description (parameters) is missing, so its charge cannot be recomputed"
    try:
        request = DpRequest.from_parameters({str(k): str(v) for k, v in parameters.items()})
    except FedGwasError as error:
        return None, f"its recorded DP parameters are invalid ({error})"
    if request is None:
        return None, f"it charges a {entry.mechanism} release but its task carried no {KEYS['epsilon']}"
    asked_delta = request.delta if request.mechanism == "gaussian" else 0.0
    if (entry.mechanism, entry.epsilon, entry.delta) != (request.mechanism, request.epsilon, asked_delta):
        return None, (f"it records {entry.mechanism} epsilon {entry.epsilon:g} delta {entry.delta:g} but the task "
                      f"asked for {request.mechanism} epsilon {request.epsilon:g} delta {asked_delta:g}")
    charge = description.get("dp_charge")
    if not isinstance(charge, dict) or not isinstance(charge.get("sensitivity"), (int, float)):
        return None, "it records no sensitivity (dp_charge), so its charge cannot be recomputed"
    try:
        plan = plan_release(request, entry.analysis,
                            CohortRequest(str(cohort.get("phenotype", "")), tuple(cohort.get("covariates", ())),
                                          str(cohort.get("coding", "quantitative"))),
                            int(description.get("n_variants", 0)))
    except (FedGwasError, ValueError, TypeError) as error:
        return None, f"its release cannot be re-planned from the recorded task ({error})"
    derived = plan.calibration.sensitivity
    if not _close(float(charge["sensitivity"]), derived) or int(charge.get("n_values", -1)) != plan.calibration.n_values:
        return None, (f"it records sensitivity {charge['sensitivity']:g} over {charge.get('n_values')} values, but "
                      f"its task ({entry.analysis} on {description.get('n_variants')} variants) has sensitivity "
                      f"{derived:g} over {plan.calibration.n_values} values")
    rho = dp.calibrate(request.mechanism, request.epsilon, asked_delta, float(charge["sensitivity"]),
                       plan.calibration.n_values).rho
    return rho, ""


def recompute_charges(entries: Sequence[LedgerEntry]) -> ChargeCheck:
    """Recompute every DP charge of ``entries`` (see the module docstring); never raises on bad content."""
    rho: dict[int, float] = {}
    problems: list[str] = []
    for entry in entries:
        if entry.kind not in DP_KINDS and entry.kind not in ("released", "aborted"):
            continue
        description = _description(entry)
        if entry.mechanism == "exact" or (entry.mechanism == "" and entry.kind in DP_KINDS):
            asked = isinstance(description.get("parameters"), dict) and KEYS["epsilon"] in description["parameters"]
            if entry.rho != 0.0 or (asked and entry.kind == "accepted"):
                problems.append(f"entry {entry.seq} ({entry.kind}, study {entry.study!r} round {entry.round}) is "
                                f"recorded as a release without DP (rho {entry.rho:g}) but "
                                + ("its task asked for DP" if asked else "charges a nonzero rho"))
            continue
        if entry.kind not in DP_KINDS:
            continue
        value, why = _recompute(entry, description)
        if value is None:
            problems.append(f"entry {entry.seq} ({entry.kind}, study {entry.study!r} round {entry.round}): {why}")
            continue
        rho[entry.seq] = value
        if not _close(entry.rho, value):
            problems.append(f"entry {entry.seq} ({entry.kind}, study {entry.study!r} round {entry.round}) was edited: "
                            f"it records rho {entry.rho:.6g}, but a {entry.mechanism} release with epsilon "
                            f"{entry.epsilon:g} delta {entry.delta:g} at its recorded sensitivity costs rho "
                            f"{value:.6g} (OpenDP)")
    return ChargeCheck(rho, tuple(problems))
