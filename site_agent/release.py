"""A task's path out of the site: admission against the budget, DP noise, and its ledger entries.

The handler (:func:`site_agent.handlers.run_task`) validates a task, then calls :func:`admit` before
reading any genotype. ``admit`` plans the DP release (sensitivity and calibration, from the task's
``dp.*`` parameters: the site recomputes everything itself and trusts no number from the
coordinator), charges the budget and commits the ``accepted`` entry. The returned
:class:`ReleaseGuard` then clips the cohort, adds this site's noise share to every block before
protection, hashes what is sent, and closes the ledger record with ``released`` or ``aborted``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from engine.audit.records import REQUEST_ID_KEY, ReleaseDigest
from engine.cohort.cohort import Cohort
from engine.privacy.dp_release import CHECK_PHASE, CLIPPED, PHASE_KEY, DpRequest, ReleasePlan, add_noise_share, \
    clip_cohort, plan_release
from engine.errors import FedGwasError, ProtocolError
from engine.tasks import ResultBlock, TaskSpec
from engine.privacy import budget
from site_agent.data import SiteData
from engine.audit.ledger import LedgerEntry, canonical_json

log = logging.getLogger("site_agent")


def task_fields(task: TaskSpec, requester: str) -> dict[str, Any]:
    """Ledger fields that describe a task (no individual-level data: names, sizes and options)."""
    description = {
        "cohort": {"phenotype": task.cohort.phenotype, "covariates": list(task.cohort.covariates),
                   "coding": task.cohort.phenotype_coding},
        "privacy": task.privacy, "n_variants": task.n_variants, "block_size": task.block_size,
        "participants": [name for name, _ in task.participants], "parameters": dict(task.parameters),
    }
    return {"requester": requester, "study": task.study_id, "round": task.round,
            "request_id": task.parameters.get(REQUEST_ID_KEY, ""), "analysis": task.analysis,
            "parameters": canonical_json(description)}


def plan(task: TaskSpec) -> ReleasePlan | None:
    """The DP release a task asks for (``None`` without ``dp.*`` parameters); refuses bad parameters."""
    request = DpRequest.from_parameters(task.parameters)
    if request is None:
        if task.parameters.get(PHASE_KEY):
            raise ProtocolError(f"task parameter {PHASE_KEY} given for a task without DP")
        return None
    phase = task.parameters.get(PHASE_KEY, "")
    if phase not in ("", CHECK_PHASE):
        raise ProtocolError(f"task parameter {PHASE_KEY} = {phase!r} must be {CHECK_PHASE!r} or absent")
    release = plan_release(request, task.analysis, task.cohort, task.n_variants)
    release.collusion_for(len(task.participants), task.privacy)  # validates the collusion parameter
    return release


def record_refusal(data: SiteData, task: TaskSpec, requester: str, error: FedGwasError) -> None:
    """Record a task refused before admission (invalid request, privacy mode, unknown phenotype...)."""
    data.ledger.append(kind="refused", message=f"{type(error).__name__}: {error}", **task_fields(task, requester))


@dataclass
class ReleaseGuard:
    """One admitted task: clipping and noise (for DP), the digest of what was sent, its ledger record.

    Use as a context manager around the sending loop: leaving it without :meth:`released` (an error,
    a cancelled client) records ``aborted``; the charge stays spent.
    """

    data: SiteData
    task: TaskSpec
    accepted: LedgerEntry
    plan: ReleasePlan | None
    noise_scale: float = 0.0
    digest: ReleaseDigest = field(default_factory=ReleaseDigest)
    _closed: bool = False

    @property
    def check_only(self) -> bool:
        return self.accepted.kind == "checked"

    def clip(self, cohort: Cohort) -> Cohort:
        """The cohort as this analysis may use it: clipped and rescaled for DP releases that need it."""
        if self.plan is not None and self.task.analysis in CLIPPED:
            return clip_cohort(cohort, self.plan.request)
        return cohort

    def noise(self, values: np.ndarray) -> np.ndarray:
        """``values`` plus this site's share of the release noise (unchanged without DP)."""
        if self.plan is None:
            return values
        if values.shape[1] != self.plan.row.width:  # the sensitivity was derived for another layout: a bug
            raise RuntimeError(f"analysis {self.task.analysis!r} produced {values.shape[1]} values per variant, "
                               f"its DP sensitivity is for {self.plan.row.width}")
        return add_noise_share(self.plan, self.noise_scale, values)

    def sent(self, block: ResultBlock) -> None:
        self.digest.update(block)

    def _close(self, kind: str, message: str) -> None:
        self._closed = True
        self.data.ledger.append(
            kind=kind, message=message, digest=self.digest.hexdigest(), ref=self.accepted.seq,
            mechanism=self.accepted.mechanism, epsilon=self.accepted.epsilon, delta=self.accepted.delta,
            n_participants=self.accepted.n_participants,
            **{k: getattr(self.accepted, k) for k in ("requester", "study", "round", "request_id", "analysis",
                                                     "parameters")})

    def released(self) -> None:
        """Record that every block left the site (with the digest of what was sent)."""
        self._close("released", f"{self.digest.n_blocks} blocks, {self.digest.n_bytes} bytes")

    def __enter__(self) -> "ReleaseGuard":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._closed:
            return
        reason = "cancelled by the client" if error is None or isinstance(error, GeneratorExit) else \
            f"{type(error).__name__}: {error}"
        try:
            self._close("aborted", f"{reason} after {self.digest.n_blocks} of {self.task.n_blocks} blocks")
        except Exception:  # the original error matters more; the charge is recorded already
            log.exception("could not record the abort of task %s round %d", self.task.study_id, self.task.round)


def admit(data: SiteData, task: TaskSpec, release: ReleasePlan | None, n_participants: int,
          requester: str) -> ReleaseGuard:
    """Check the budget and charge it (or record the check), durably, before any computation.

    Raises
    ------
    BudgetExceededError, PrivacyError
        The refusal is recorded in the ledger first.
    """
    if release is None:
        charge = budget.EXACT
    else:
        calibration = release.calibration
        charge = budget.Charge(calibration.mechanism, calibration.rho, calibration.epsilon, calibration.delta)
    check_only = task.parameters.get(PHASE_KEY) == CHECK_PHASE
    accepted = budget.admit(data.ledger, data.config.budget, charge, check_only=check_only,
                            n_participants=n_participants, **task_fields(task, requester))
    guard = ReleaseGuard(data=data, task=task, accepted=accepted, plan=release)
    if release is not None:
        names = [name for name, _ in task.participants]
        guard.noise_scale = release.share_scale(data.name, names, task.privacy)
        log.info("task %s round %d: DP %s release, epsilon %g, rho %.4g %s, noise share scale %.4g",
                 task.study_id, task.round, charge.mechanism, charge.epsilon, charge.rho,
                 "within budget (check only)" if check_only else "charged", guard.noise_scale)
    return guard
