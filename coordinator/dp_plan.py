"""The coordinator's side of differentially private releases: task options, preview, budget check.

For a study with a DP request (:class:`engine.privacy.dp_release.DpRequest`), every round of the
:class:`coordinator.rounds.RoundExecutor` goes through a :class:`DpSession`:

1. ``parameters`` adds the ``dp.*`` options to every task of the round (the sites recompute the
   sensitivity and the calibration themselves; nothing numeric is taken from the coordinator);
2. ``before_round`` shows the analyst the utility preview (noise scale, expected inflation of the
   frequency SD or of the standard errors, each site's remaining budget) *before anything is spent*,
   then sends every site a budget pre-check (``dp.phase = check``): if any site refuses, the study
   stops with every refusal listed and no site has computed or charged anything;
3. ``after_round`` post-processes the noisy totals (counts rounded and floored at 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from engine.audit.coordinator_log import CoordinatorLog, audited_events
from coordinator.client import SiteClient
from engine.privacy import dp
from engine.privacy.dp_release import CHECK_PHASE, PHASE_KEY, DpRequest, ReleasePlan, plan_release, postprocess
from engine.errors import SiteFailure, StudyFailed
from engine.tasks import CohortRequest, SiteDescription, TaskDone, TaskSpec

log = logging.getLogger("coordinator")

#: Allele frequencies at which the preview shows the expected noise.
PREVIEW_FREQUENCIES = (0.05, 0.2, 0.5)


@dataclass(frozen=True)
class SiteBudget:
    """A site's budget as it reported it in Describe (``SiteInfo.budget``), and whether the release fits."""

    site: str
    epsilon_total: float | None
    epsilon_spent: float | None
    epsilon_remaining: float | None
    fits: bool | None  # None: the site reported no budget (it will refuse a DP release)


@dataclass(frozen=True)
class Preview:
    """What the analyst is shown before a DP release is requested (see :func:`preview`)."""

    plan: ReleasePlan
    n_sites: int
    privacy: str
    n_samples: int
    collusion: int
    share_scale: float
    total_sd: float
    utility: tuple[tuple[str, float, float, float], ...]  # (what, noise SD, sampling SD, inflation)
    if_colluding: tuple[tuple[int, float], ...]  # (colluding sites, epsilon at delta; inf: none)
    budgets: tuple[SiteBudget, ...]

    def to_json(self) -> dict[str, Any]:
        c = self.plan.calibration
        return {
            "analysis": self.plan.analysis, "n_variants": self.plan.n_variants, "n_values": self.plan.n_values,
            "mechanism": c.mechanism, "epsilon": c.epsilon, "delta": c.delta, "rho": c.rho,
            "epsilon_achieved": c.epsilon_achieved, "sensitivity": c.sensitivity,
            "sensitivity_per_variant": {"l1": self.plan.row.l1, "l2": self.plan.row.l2},
            "noise_scale": c.scale, "noise_sd": math.sqrt(c.variance), "share_scale": self.share_scale,
            "total_noise_sd": self.total_sd, "n_sites": self.n_sites, "collusion": self.collusion,
            "privacy": self.privacy, "n_samples": self.n_samples,
            "utility": [{"what": w, "noise_sd": n, "sampling_sd": s, "inflation": i} for w, n, s, i in self.utility],
            "if_colluding": [{"sites": k, "epsilon": None if math.isinf(e) else e} for k, e in self.if_colluding],
            "budgets": [dataclasses.asdict(b) for b in self.budgets],
        }

    def render(self) -> str:
        c, plan = self.plan.calibration, self.plan
        guarantee = (f"epsilon {c.epsilon:g} at delta {c.delta:g} (rho {c.rho:.4g}, zCDP)" if c.mechanism == "gaussian"
                     else f"pure epsilon {c.epsilon:g} (charged as rho {c.rho:.4g})")
        norm = "L2" if c.mechanism == "gaussian" else "L1"
        row = plan.row.l2 if c.mechanism == "gaussian" else plan.row.l1
        lines = [
            f"DP release preview (nothing requested yet): {plan.analysis} on {plan.n_variants} variants "
            f"({plan.n_values} values), {c.mechanism} noise",
            f"  privacy per release: {guarantee}; neighbours: one participant added or removed at one site",
            f"  sensitivity: {norm} {c.sensitivity:.4g} ({row:.4g} per variant)",
            f"  noise: SD {math.sqrt(c.variance):.4g} per aggregate value from the honest sites; each of the "
            f"{self.n_sites} sites adds scale {self.share_scale:.4g} (all shares: SD {self.total_sd:.4g}), "
            f"tolerating {self.collusion} colluding site(s)",
        ]
        for what, noise_sd, sampling_sd, inflation in self.utility:
            lines.append(f"  expected: {what}: noise SD {noise_sd:.3g} vs sampling SD {sampling_sd:.3g} "
                         f"(x{inflation:.2f})")
        for sites, epsilon in self.if_colluding:
            lines.append(f"  if {sites} site{'s' if sites > 1 else ''} collude{'' if sites > 1 else 's'} with the coordinator: "
                         + ("no guarantee" if math.isinf(epsilon) else f"epsilon {epsilon:.3g} at delta {c.delta:g}"))
        for b in self.budgets:
            if b.fits is None:
                lines.append(f"  budget at {b.site}: none configured (the site will refuse DP releases)")
            else:
                lines.append(f"  budget at {b.site}: epsilon {b.epsilon_spent:.4g} spent of {b.epsilon_total:g}; "
                             f"largest release that fits: epsilon {b.epsilon_remaining:.4g} -> "
                             + ("fits" if b.fits else "DOES NOT FIT"))
        return "\n".join(lines)


def _utility(plan: ReleasePlan, variance: float, n_samples: int,
             phenotype: str) -> tuple[tuple[str, float, float, float], ...]:
    """Delta-method noise SDs of what the analyst reads off the release, next to sampling SDs.

    ``qc``: an allele frequency ``(2 h + k) / (2 (h + k + o))`` from noisy counts (noise variance
    ``v`` on each count gives ``v (5 + 12 f^2) / (2N)^2``), at :data:`PREVIEW_FREQUENCIES`, every
    sample called. ``linear``: the SE of beta near beta = 0 from the noise on ``g'y`` and, through the
    intercept of the genotype-on-covariates fit (about ``2f``), on ``sum(y)``:
    ``sqrt(v (1 + 4 f^2)) / s_gg`` with ``s_gg = 2 N f (1 - f)``, assuming the declared phenotype range
    spans +-3 residual SDs, the covariates explain little of the genotype and the phenotype's mean is
    near the middle of its range. Approximations for planning, not guarantees.
    """
    n = max(n_samples, 1)
    sd = math.sqrt(variance)
    rows = []
    for f in PREVIEW_FREQUENCIES:
        if plan.analysis == "qc":
            noise = sd * math.sqrt(5.0 + 12.0 * f * f) / (2.0 * n)
            sampling = math.sqrt(f * (1.0 - f) / (2.0 * n))
            what = f"allele frequency {f:g}"
        elif plan.analysis == "linear":
            lo, hi = plan.request.bound(phenotype)
            s_gg = 2.0 * n * f * (1.0 - f)
            sampling = (hi - lo) / 6.0 / math.sqrt(s_gg)
            noise = sd * math.sqrt(1.0 + 4.0 * f * f) / s_gg
            what = f"SE of beta at MAF {f:g}"
        else:
            continue
        rows.append((what, noise, sampling, math.sqrt(1.0 + (noise / sampling) ** 2)))
    return tuple(rows)


def preview(plan: ReleasePlan, descriptions: Mapping[str, SiteDescription], privacy: str,
            cohort: CohortRequest) -> Preview:
    """The utility preview of one release over the sites in ``descriptions``."""
    n_sites = len(descriptions)
    t = plan.collusion_for(n_sites, privacy)
    n_samples = sum(d.n_samples_analysed for d in descriptions.values())
    calibration = plan.calibration
    share = calibration.scale / math.sqrt(n_sites - t) if calibration.mechanism == "gaussian" else calibration.scale
    total = math.sqrt(plan.total_variance(n_sites, privacy))
    # The honest sites' noise is what the guarantee rests on; all shares together is what the analyst gets.
    utility = _utility(plan, plan.total_variance(n_sites, privacy), n_samples, cohort.phenotype)
    colluding = []
    for k in range(t + 1, n_sites + 1):
        rho = plan.rho_if_colluding(k, n_sites, privacy)
        colluding.append((k, dp.epsilon_from_rho(rho, calibration.delta) if math.isfinite(rho) else math.inf))
    budgets = []
    for name, description in descriptions.items():
        b = description.budget
        if "rho_remaining" not in b:
            budgets.append(SiteBudget(name, None, None, None, None))
            continue
        budgets.append(SiteBudget(name, b.get("epsilon_total"), b.get("epsilon_spent"), b.get("epsilon_remaining"),
                                  calibration.rho <= b["rho_remaining"] * (1 + 1e-9)))
    return Preview(plan=plan, n_sites=n_sites, privacy=privacy, n_samples=n_samples, collusion=t, share_scale=share,
                   total_sd=total, utility=utility, if_colluding=tuple(colluding), budgets=tuple(budgets))


class DpSession:
    """DP state of one study at the coordinator (see the module docstring).

    ``announce`` receives the preview text (the CLI prints it); ``log`` is the coordinator's audit
    log (previews and budget checks are recorded there).
    """

    def __init__(self, request: DpRequest, descriptions: Mapping[str, SiteDescription], privacy: str,
                 pool: ThreadPoolExecutor, announce: Callable[[str], None] = print,
                 log: CoordinatorLog | None = None) -> None:
        self.request = request
        self.descriptions = dict(descriptions)
        self.privacy = privacy
        self.pool = pool
        self.announce = announce
        self.log = log
        self.previews: list[Preview] = []

    def parameters(self) -> dict[str, str]:
        """The ``dp.*`` task parameters of every round."""
        return self.request.to_parameters()

    def before_round(self, clients: Sequence[SiteClient], tasks: Mapping[str, TaskSpec]) -> Preview:
        """Preview the release, then have every site pre-check its budget; raises StudyFailed on refusal."""
        first = next(iter(tasks.values()))
        plan = plan_release(self.request, first.analysis, first.cohort, first.n_variants)
        shown = preview(plan, {c.name: self.descriptions[c.name] for c in clients}, self.privacy, first.cohort)
        self.previews.append(shown)
        self.announce(shown.render())
        if self.log is not None:
            self.log.write({"event": "preview", "study": first.study_id, "round": first.round, **shown.to_json()})
        self.check(clients, tasks)
        return shown

    def check(self, clients: Sequence[SiteClient], tasks: Mapping[str, TaskSpec]) -> None:
        """Every site checks (and records) the request against its budget; nothing is computed.

        All sites are asked, so every site that would refuse records its refusal; the study fails
        with all their messages.
        """

        def one(client: SiteClient) -> TaskDone | None:
            task = tasks[client.name]
            check = dataclasses.replace(task, parameters={**task.parameters, PHASE_KEY: CHECK_PHASE})
            done = None
            for event in audited_events(self.log, client.name, check, client.run_task(check)):
                if isinstance(event, TaskDone):
                    done = event
            return done

        futures = {client.name: self.pool.submit(one, client) for client in clients}
        refused: list[SiteFailure] = []
        for name, future in futures.items():
            try:
                if future.result() is None:
                    refused.append(SiteFailure(name, "ended the budget check without a summary", kind="ProtocolError"))
            except SiteFailure as failure:
                refused.append(failure)
        if refused:
            reasons = "".join(f"\n  {failure}" for failure in refused)
            raise StudyFailed(f"the DP release was refused before anything was computed:{reasons}", failures=refused)

    def after_round(self, analysis: str, totals: np.ndarray) -> np.ndarray:
        """Post-processing of the noisy totals (free under DP)."""
        return postprocess(analysis, totals)

    def notes(self) -> tuple[str, ...]:
        """One line per release for the run summary and report."""
        notes = []
        for shown in self.previews:
            c = shown.plan.calibration
            guarantee = f"epsilon {c.epsilon:g}, delta {c.delta:g}" if c.mechanism == "gaussian" else \
                f"pure epsilon {c.epsilon:g}"
            notes.append(f"differentially private {shown.plan.analysis} release ({c.mechanism} noise, {guarantee}, "
                         f"rho {c.rho:.4g}; noise SD {shown.total_sd:.4g} per aggregate value; tolerates "
                         f"{shown.collusion} colluding site(s)); results carry this noise")
        return tuple(notes)
