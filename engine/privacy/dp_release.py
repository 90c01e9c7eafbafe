"""Differentially private releases: what a study asks for, sensitivities, clipping, noise shares.

A DP release is one round of a site analysis (:mod:`engine.stats.registry`) whose per-variant outputs get
noise at each site *before* protection (secure aggregation or HE), so the coordinator's aggregate
carries calibrated noise while each site's share stays hidden. This module is transport-free and
draws no randomness itself: calibration and sampling are OpenDP's (:mod:`engine.privacy.dp`).

The derivations behind :data:`SENSITIVITY` are in docs/privacy.md, section "Sensitivity"; keep the two
in step. Neighbouring datasets differ by one participant added or removed at one site.

Distributed noise
-----------------
Each site sizes its own share from its own policy, never from anything the coordinator sends (a
collusion count or a participant list could be forged). With ``n`` participants *verified* against
its roster and its ``[budget] honest_sites = h`` (the honest sites it assumes, itself included;
default 1):

* Gaussian: the site adds ``N(0, σ² / min(h, n))``; any ``min(h, n)`` honest shares sum to at least
  ``N(0, σ²)``. With ``h = 1`` every site adds the full noise, which no collusion can remove.
* Laplace (sums of Laplace variables are not Laplace): every site adds the full ``Laplace(b)``, so
  no participant order can leave a site without noise.

In ``plaintext`` mode the coordinator sees every share, so each site adds the full noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from engine.privacy import dp
from engine.cohort.cohort import Cohort
from engine.errors import ConfigError, ProtocolError
from engine.stats.linear.kernel import LinearLayout
from engine.stats.qc.counts import COUNT_COLUMNS
from engine.tasks import CohortRequest

#: TaskHeader.parameters keys of a DP request.
KEYS = {"epsilon": "dp.epsilon", "delta": "dp.delta", "mechanism": "dp.mechanism",
        "collusion": "dp.collusion", "bounds": "dp.bounds"}
#: ``dp.phase = "check"``: validate and check the budget only (records the outcome, computes nothing).
PHASE_KEY = "dp.phase"
CHECK_PHASE = "check"
#: Absolute genotype bound: hard calls count 0, 1 or 2 copies of the effect allele.
GENOTYPE_BOUND = 2.0


@dataclass(frozen=True)
class DpRequest:
    """A study's DP request for each release (one round of one analysis).

    ``bounds`` maps the phenotype and each covariate to its declared clipping range ``(lo, hi)``;
    sites clip to it, and the sensitivity follows from it (analyses that read them need them all).
    """

    epsilon: float
    delta: float = 1e-6
    mechanism: str = "gaussian"
    collusion: int = 0
    bounds: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.mechanism not in dp.MECHANISMS:
            raise ProtocolError(f"{KEYS['mechanism']} {self.mechanism!r} is not one of {list(dp.MECHANISMS)}")
        if not (math.isfinite(self.epsilon) and 0.0 < self.epsilon <= dp.MAX_EPSILON):
            raise ProtocolError(f"{KEYS['epsilon']} {self.epsilon!r} must be in (0, {dp.MAX_EPSILON:g}]")
        if self.mechanism == "gaussian" and not 0.0 < self.delta < 1.0:
            raise ProtocolError(f"{KEYS['delta']} {self.delta!r} must be in (0, 1) for Gaussian noise")
        if self.collusion < 0:
            raise ProtocolError(f"{KEYS['collusion']} {self.collusion} must be >= 0")
        names = [name for name, _, _ in self.bounds]
        if len(set(names)) != len(names):
            raise ProtocolError(f"{KEYS['bounds']} repeats a name: {names}")
        for name, lo, hi in self.bounds:
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ProtocolError(f"{KEYS['bounds']}: range of {name!r} [{lo!r}, {hi!r}] must be finite with lo < hi")

    def bound(self, name: str) -> tuple[float, float]:
        """The declared range of ``name``; a ProtocolError naming it when the study declared none."""
        for key, lo, hi in self.bounds:
            if key == name:
                return lo, hi
        raise ProtocolError(f"{KEYS['bounds']} declares no clipping range for {name!r} (declared: "
                            f"{[n for n, _, _ in self.bounds]}); a DP release needs one for the phenotype "
                            f"and every covariate")

    def to_parameters(self) -> dict[str, str]:
        """Task parameter entries (``repr`` keeps floats exact). ``collusion`` is the coordinator's
        planning assumption only: it never reaches a site, which sizes its noise from its own policy."""
        return {KEYS["epsilon"]: repr(self.epsilon), KEYS["delta"]: repr(self.delta),
                KEYS["mechanism"]: self.mechanism,
                KEYS["bounds"]: json.dumps({n: [lo, hi] for n, lo, hi in self.bounds}, sort_keys=True)}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> "DpRequest | None":
        """The request carried by task parameters, ``None`` for a non-DP task."""
        if KEYS["epsilon"] not in parameters:
            stray = sorted(k for k in parameters if k.startswith("dp.") and k != PHASE_KEY)
            if stray:
                raise ProtocolError(f"task parameters {stray} given without {KEYS['epsilon']}")
            return None

        def number(key: str, default: str, kind: Callable[[str], float | int]) -> float | int:
            text = parameters.get(KEYS[key], default)
            try:
                return kind(text)
            except ValueError:
                raise ProtocolError(f"task parameter {KEYS[key]} = {text!r} is not a number") from None

        try:
            raw = json.loads(parameters.get(KEYS["bounds"], "{}"))
            bounds = tuple(sorted((str(n), float(v[0]), float(v[1])) for n, v in raw.items() if len(v) == 2))
            if len(bounds) != len(raw):
                raise ValueError
        except (ValueError, TypeError, AttributeError, IndexError):
            raise ProtocolError(f"task parameter {KEYS['bounds']} must be a JSON object of name -> [lo, hi]") from None
        return cls(epsilon=float(number("epsilon", "", float)), delta=float(number("delta", "1e-6", float)),
                   mechanism=parameters.get(KEYS["mechanism"], "gaussian"),
                   bounds=bounds)


@dataclass(frozen=True)
class RowSensitivity:
    """Per-variant contribution bound of one participant, and the analysis's values per variant."""

    l1: float
    l2: float
    width: int


def _qc_row(cohort: CohortRequest, request: DpRequest) -> RowSensitivity:
    # One participant is counted in exactly one of the genotype classes (or missing) per variant,
    # in one status group: one count changes by 1.
    groups = 2 if cohort.phenotype else 1
    return RowSensitivity(l1=1.0, l2=1.0, width=len(COUNT_COLUMNS) * groups)


def _linear_row(cohort: CohortRequest, request: DpRequest) -> RowSensitivity:
    # Row = [triu(x x'), x y, y^2] with x = [1, covariates, g]. After clip_cohort, covariates lie in
    # [-1, 1], y in [-h, h] (h = half the declared range) and g in {0, 1, 2}; every entry is bounded by
    # the product of its factors' bounds, all reached together at a corner of the box.
    if len(cohort.phenotypes) > 1:  # each phenotype is its own release, planned and charged on its own
        raise ProtocolError(f"a DP release covers one phenotype; the task names {len(cohort.phenotypes)}: "
                            f"{cohort.phenotype!r}")
    for name in cohort.covariates:
        request.bound(name)
    lo, hi = request.bound(cohort.phenotype)
    h = (hi - lo) / 2.0
    x = np.array([1.0] * (len(cohort.covariates) + 1) + [GENOTYPE_BOUND])
    rows, cols = np.triu_indices(len(x))
    terms = np.concatenate([x[rows] * x[cols], x * h, [h * h]])
    layout = LinearLayout(len(cohort.covariates) + 1)
    return RowSensitivity(l1=float(terms.sum()), l2=float(np.sqrt(np.sum(terms ** 2))), width=layout.width)


#: Analyses that can be released with DP, with their per-row sensitivity (docs/privacy.md).
SENSITIVITY: dict[str, Callable[[CohortRequest, DpRequest], RowSensitivity]] = {"qc": _qc_row, "linear": _linear_row}
#: Analyses whose inputs are clipped to the declared bounds (and affinely rescaled) at the site.
CLIPPED = frozenset({"linear"})


def check_dp_study(request: DpRequest, glm: str, cohort: CohortRequest) -> None:
    """Refuse, before any site is asked, a DP study whose model has no DP release or whose
    clipping ranges are incomplete (ConfigError naming what is missing)."""
    if glm and glm not in SENSITIVITY:
        raise ConfigError(f"study: differential privacy is implemented for QC counts and linear regression, "
                          f"not for glm {glm!r}")
    if glm:
        try:
            SENSITIVITY[glm](cohort, request)
        except ProtocolError as error:
            raise ConfigError(f"study: {error}") from None


@dataclass(frozen=True)
class ReleasePlan:
    """The noise of one DP release: its sensitivity, calibration and how sites share the noise."""

    request: DpRequest
    analysis: str
    n_variants: int
    row: RowSensitivity
    calibration: dp.NoiseCalibration

    @property
    def n_values(self) -> int:
        return self.n_variants * self.row.width

    def honest_for(self, n_sites: int, privacy: str, honest_sites: int) -> int:
        """Honest shares the noise is sized for: the site's own ``[budget] honest_sites`` among the
        ``n_sites`` *verified* participants, or 1 in plaintext mode (the coordinator sees every share)."""
        if honest_sites < 1:
            raise ConfigError(f"honest_sites {honest_sites} must be at least 1 (the site itself)")
        return 1 if privacy == "plaintext" else min(honest_sites, n_sites)

    def share_scale(self, n_sites: int, privacy: str, honest_sites: int = 1) -> float:
        """Noise scale one site adds to each value: never zero, whatever the participants' order.

        Gaussian: ``σ / sqrt(h)``, so any ``h`` honest shares sum to at least ``N(0, σ²)``. Laplace (sums
        of Laplace variables are not Laplace): the full ``Laplace(b)`` at every site.
        """
        if self.calibration.mechanism == "gaussian":
            return self.calibration.scale / math.sqrt(self.honest_for(n_sites, privacy, honest_sites))
        return self.calibration.scale

    def total_variance(self, n_sites: int, privacy: str, honest_sites: int = 1) -> float:
        """Variance of the aggregate noise on each value (every site's share)."""
        return n_sites * self.share_scale(n_sites, privacy, honest_sites) ** 2 * \
            (self.calibration.variance / self.calibration.scale ** 2)

    def rho_if_colluding(self, colluders: int, n_sites: int, privacy: str, honest_sites: int = 1) -> float:
        """zCDP loss of the release if ``colluders`` sites' shares are known (``inf``: no guarantee)."""
        honest = n_sites - colluders
        if honest <= 0:
            return math.inf
        if self.calibration.mechanism == "laplace":
            return self.calibration.rho
        h = self.honest_for(n_sites, privacy, honest_sites)
        return self.calibration.rho * h / honest if honest < h else self.calibration.rho


def plan_release(request: DpRequest, analysis: str, cohort: CohortRequest, n_variants: int) -> ReleasePlan:
    """Calibrate the noise of one release of ``analysis`` on ``n_variants`` variants.

    Neighbours differ by one participant, who contributes to every variant's row, so the release's
    sensitivity is ``sqrt(M)`` (L2) or ``M`` (L1) times the per-row bound.

    Raises
    ------
    ProtocolError
        The analysis has no DP sensitivity, or a clipping range it needs is missing.
    """
    row_bound = SENSITIVITY.get(analysis)
    if row_bound is None:
        raise ProtocolError(f"analysis {analysis!r} has no differentially private release "
                            f"(DP is available for {sorted(SENSITIVITY)})")
    row = row_bound(cohort, request)
    if request.mechanism == "gaussian":
        sensitivity = row.l2 * math.sqrt(n_variants)
    else:
        sensitivity = row.l1 * n_variants
    calibration = dp.calibrate(request.mechanism, request.epsilon, request.delta if request.mechanism == "gaussian"
                               else 0.0, sensitivity, n_variants * row.width)
    return ReleasePlan(request=request, analysis=analysis, n_variants=n_variants, row=row, calibration=calibration)


def clip_cohort(cohort: Cohort, request: DpRequest) -> Cohort:
    """The cohort with its phenotype and covariates clipped to the declared ranges, then shifted.

    The phenotype is clipped to ``[lo, hi]`` and centred (``y - (lo + hi)/2``); each covariate is
    clipped and mapped linearly onto ``[-1, 1]``. A regression with an intercept gives the genotype
    the same estimate and standard error after such shifts and covariate rescalings, so the results
    are those of the clipped data, with a smaller sensitivity.
    """
    lo, hi = request.bound(cohort.phenotype_name)
    phenotype = np.clip(cohort.phenotype, lo, hi) - (lo + hi) / 2.0
    covariates = np.empty_like(cohort.covariates)
    for j, name in enumerate(cohort.covariate_names):
        c_lo, c_hi = request.bound(name)
        covariates[:, j] = (np.clip(cohort.covariates[:, j], c_lo, c_hi) - (c_lo + c_hi) / 2.0) / ((c_hi - c_lo) / 2.0)
    return dataclasses.replace(cohort, phenotype=phenotype, covariates=np.ascontiguousarray(covariates))


def add_noise_share(plan: ReleasePlan, scale: float, values: np.ndarray) -> np.ndarray:
    """``values`` ``(m, width)`` plus this site's noise share (OpenDP samplers)."""
    return dp.sample_noise(plan.calibration.mechanism, scale, values)


def postprocess(analysis: str, totals: np.ndarray) -> np.ndarray:
    """Coordinator-side post-processing of a noisy aggregate (free under DP).

    Counts (``qc``) are rounded to whole numbers and floored at 0, so that they read as counts.
    """
    if analysis == "qc":
        return np.maximum(np.rint(totals), 0.0)
    return totals
