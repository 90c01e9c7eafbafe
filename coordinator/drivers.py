"""Coordinator-side drivers: turn aggregated site outputs into results, one function per model.

A driver receives a :class:`RoundExecutor` and the study's cohort (after the PCA, with its
``pca_run``), asks the executor for as many rounds as its algorithm needs (one for linear
regression; several for iterative fits), then solves. It returns a :class:`ModelFit`: every
phenotype's result and the facts the summary reports (excluded covariates, case/control counts),
so nothing is left behind on the executor. Adding a model means its statistics in
:mod:`engine.stats.registry`, its entry in :mod:`engine.models` and a driver registered here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from coordinator.rounds import RoundExecutor
from engine.cohort.standardise import MAX_ROUNDS, STANDARDISE_INPUT, identity, moments_width, refine
from engine.privacy import he_encoding, ring
from engine.stats.association import AssociationResult
from engine.errors import InputError, RingOverflowError, StudyFailed
from engine.stats.linear.compact import complete_width, incomplete_variants, totals_width
from engine.stats.linear.kernel import LinearLayout
from engine.stats.linear.solve import solve_linear, solve_linear_sums, sums_from_compact, sums_from_packed
from engine.stats.logistic.solve import BinaryTraitFit, NoCasesOrControls
from engine.tasks import KEEP_GENOTYPES_PARAMETER, CohortRequest

log = logging.getLogger("coordinator")


def _resolution(executor: RoundExecutor) -> float:
    """Absolute error bound of one aggregated sum under the study's privacy mode (its fixed point)."""
    n_sites = len(executor.clients)
    bits = {"secagg": ring.FRACTION_BITS, "he": he_encoding.FRACTION_BITS}.get(executor.config.privacy)
    return 0.0 if bits is None else n_sites * 2.0 ** -(bits + 1)


@dataclass(frozen=True)
class ModelFit:
    """What a model's driver produced: each phenotype's result (in the cohort's order) and what the
    summary reports about the fit."""

    results: Mapping[str, AssociationResult]
    #: covariates left out because they are constant over the pooled cohort (as PLINK 2 does)
    excluded_covariates: tuple[str, ...] = ()
    #: pooled (cases, controls) of each case/control phenotype
    case_controls: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: harmonised variants not tested, by reason (e.g. ``--xchr-model 0``)
    variants_skipped: Mapping[str, int] = field(default_factory=dict)
    #: covariates left out of one phenotype's regression only (constant over that phenotype's samples)
    phenotype_excluded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __add__(self, other: "ModelFit") -> "ModelFit":
        """Both fits' phenotypes (``other``'s facts added to ``self``'s)."""
        excluded = dict(self.phenotype_excluded)
        for name, covariates in other.phenotype_excluded.items():
            excluded[name] = _union(excluded.get(name, ()), covariates)
        return ModelFit(results={**self.results, **other.results},
                        excluded_covariates=_union(self.excluded_covariates, other.excluded_covariates),
                        case_controls={**other.case_controls, **self.case_controls},
                        variants_skipped={**self.variants_skipped, **other.variants_skipped},
                        phenotype_excluded=excluded)

    def excluded_from(self, phenotype: str) -> tuple[str, ...]:
        """Every covariate left out of ``phenotype``'s regression (study-wide, then its own)."""
        return _union(self.excluded_covariates, self.phenotype_excluded.get(phenotype, ()))


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(name for name in second if name not in first)


@dataclass(frozen=True)
class Standardisation:
    """The study-level centres and scales of a cohort's columns and what finding them showed."""

    table: np.ndarray  # (2, P + k): row 0 centres, row 1 scales; phenotypes first, then covariates
    cohort: CohortRequest  # without any covariate constant over the pooled cohort
    excluded_covariates: tuple[str, ...] = ()
    case_control: tuple[int, int] | None = None  # pooled (cases, controls) of a case/control phenotype


def study_standardisation(executor: RoundExecutor, cohort: CohortRequest, scale_phenotype: bool) -> Standardisation:
    """The study-level centres and scales ``(2, 1 + k)`` of the phenotype and covariates
    (:mod:`engine.cohort.standardise`), and the cohort without any constant covariate.

    ``moments`` rounds on one variant until every column is centred and scaled into range (usually
    one; more for a column lost to the fixed-point resolution or a constant one). A covariate constant
    over the pooled cohort is excluded, as PLINK 2 excludes it, with a warning. Under differential
    privacy the sites already clip and rescale to the declared bounds
    (:func:`engine.privacy.dp_release.clip_cohort`) and no extra round is released: the identity is
    returned. For a case/control phenotype the case and control counts are returned too.

    A cohort of ``P`` phenotypes gets a ``(2, P + k)`` table: each phenotype centred and scaled over its
    own samples, the covariates once over the union of the phenotypes' samples (a covariate is dropped
    when it is constant over that union).
    """
    n_pheno = max(1, len(cohort.phenotypes))
    several = n_pheno > 1
    table = identity(len(cohort.covariates), n_pheno)
    if executor.dp is not None:
        return Standardisation(table, cohort)
    case_control = None
    resolution = _resolution(executor)
    first = np.array([0])
    for _ in range(MAX_ROUNDS):
        totals = executor.run("moments", moments_width(table.shape[1], several), cohort=cohort, variants=first,
                              inputs={STANDARDISE_INPUT: table})[0]
        _check_moments(totals, table.shape[1], several)
        empty = [name for name, n in zip(cohort.phenotypes or ("",), totals[:n_pheno] if several else totals[:1])
                 if round(n) == 0]
        if empty:
            raise InputError(f"no analysed sample at the {len(executor.clients)} sites has phenotype "
                             f"{empty[0]!r} and every covariate {list(cohort.covariates)}")
        step = refine(table, totals, resolution, scale_phenotype, per_column_n=several)
        if not scale_phenotype:
            n_cases = int(round(totals[1]))
            case_control = (n_cases, int(round(totals[0])) - n_cases)
        table = step.table
        if step.settled:
            break
    constant = step.constant | ~(step.settled | step.resolved)
    names = cohort.phenotypes or (cohort.phenotype,)
    for name, flag in zip(names, constant[:n_pheno]):
        if flag:
            raise InputError(f"phenotype {name!r} is constant over the analysed samples of the "
                             f"{len(executor.clients)} sites: nothing to regress")
    dropped = tuple(name for name, flag in zip(cohort.covariates, constant[n_pheno:]) if flag)
    if dropped:
        log.warning("excluding covariate(s) %s: constant over the pooled cohort (as PLINK 2 does)", ", ".join(dropped))
        cohort = dataclasses.replace(cohort, covariates=tuple(c for c in cohort.covariates if c not in dropped))
        table = table[:, np.r_[np.ones(n_pheno, dtype=bool), ~constant[n_pheno:]]]
    return Standardisation(table, cohort, dropped, case_control)


def _check_moments(totals: np.ndarray, n_columns: int, per_column_n: bool) -> None:
    """Refuse ``moments`` totals no honest sites can send (sample counts that are not positive whole
    numbers, a negative sum of squares): under secure aggregation a corrupted block is seen only in
    the total, and a garbage total may still fit the ring's range (:func:`engine.privacy.ring.decode`).

    Raises
    ------
    RingOverflowError
        The totals are not valid sums.
    """
    counts = totals[:n_columns] if per_column_n else totals[:1]
    squares = totals[-n_columns:]
    if not (np.all(np.isfinite(totals)) and np.all(counts > -1e-3) and np.all(np.abs(counts - np.rint(counts)) < 1e-3)
            and np.all(squares > -1e-3 * np.maximum(1.0, counts.max()))):
        raise RingOverflowError("aggregate is outside the range of valid sums: the moments round's sample counts "
                                "or sums of squares are impossible (a site sent malformed statistics or the "
                                "masks of the round did not cancel)")


def run_linear(executor: RoundExecutor, cohort: CohortRequest) -> ModelFit:
    """Exact per-variant OLS: the standardisation rounds, one round of sufficient statistics, then the
    batched solve; beta and SE are mapped back to the phenotype's original units."""
    standard = study_standardisation(executor, cohort, scale_phenotype=True)
    table, cohort = standard.table, standard.cohort
    layout = LinearLayout(len(cohort.covariates) + 1)
    totals = executor.run("linear", layout.width, cohort=cohort, inputs={STANDARDISE_INPUT: table})
    result = solve_linear(totals, layout.n_design, executor.harmonised.variants)
    result = dataclasses.replace(result, beta=result.beta * table[1, 0], se=result.se * table[1, 0])
    return ModelFit({cohort.phenotype: result}, standard.excluded_covariates)


def run_linear_phenotypes(executor: RoundExecutor, cohort: CohortRequest) -> ModelFit:
    """Exact per-variant OLS of every phenotype of ``cohort`` from one pass over the genotypes.

    Each phenotype and the covariates are standardised first (:func:`study_standardisation`; each
    phenotype's beta and SE are mapped back by its own scale). The sites read each genotype block once for all phenotypes (:mod:`engine.stats.linear.phenotypes`)
    and send the compact layout of :mod:`engine.stats.linear.compact` (``K + 3`` values per phenotype
    and variant, plus each phenotype's totals once); the variants where a phenotype's samples miss a
    call (``N`` below the phenotype's total) get the full statistics in one more round. Each phenotype
    is then solved on its own slice: the complete variants with the phenotype's covariate system solved
    once (:func:`engine.stats.linear.solve.sums_from_compact`), the others variant by variant.
    """
    standard = study_standardisation(executor, cohort, scale_phenotype=True)
    table, cohort = standard.table, standard.cohort
    inputs = {STANDARDISE_INPUT: table}
    k, n_pheno = len(cohort.covariates) + 1, len(cohort.phenotypes)
    layout = LinearLayout(k)
    totals = executor.run("linear_totals", totals_width(k) * n_pheno, cohort=cohort, variants=np.arange(1),
                          inputs=inputs)[0]
    compact = executor.run("linear_complete", complete_width(k) * n_pheno, cohort=cohort, inputs=inputs)
    incomplete = incomplete_variants(compact, totals, k, n_pheno)
    complete_rows, incomplete_rows = np.flatnonzero(~incomplete), np.flatnonzero(incomplete)
    full = executor.run("linear", layout.width * n_pheno, cohort=cohort, variants=incomplete_rows,
                        inputs=inputs) if len(incomplete_rows) else None
    log.info("linear: %d of %d variants complete in every phenotype's samples", len(complete_rows), len(incomplete))
    results, own_exclusions = {}, {}
    cw, tw = complete_width(k), totals_width(k)
    for i, name in enumerate(cohort.phenotypes):
        design, dropped = _design_of_phenotype(executor, cohort, name, totals[i * tw:(i + 1) * tw])
        if dropped:
            own_exclusions[name] = dropped
        parts = [(complete_rows, sums_from_compact(compact[complete_rows, i * cw:(i + 1) * cw],
                                                   totals[i * tw:(i + 1) * tw], k).design_columns(design))]
        if full is not None:
            parts.append((incomplete_rows, sums_from_packed(full[:, i * layout.width:(i + 1) * layout.width], k)
                          .design_columns(design)))
        result = solve_linear_sums(parts, executor.harmonised.variants)
        results[name] = dataclasses.replace(result, beta=result.beta * table[1, i], se=result.se * table[1, i])
    return ModelFit(results, standard.excluded_covariates, phenotype_excluded=own_exclusions)


def _design_of_phenotype(executor: RoundExecutor, cohort: CohortRequest, name: str,
                         totals: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """The design columns ``(K',)`` (intercept 0 first) of phenotype ``name``'s model, and the covariates
    left out of it: without a covariate
    that is constant over the phenotype's own samples (not over the union of the phenotypes' samples,
    where the standardisation already dropped it), as PLINK 2 leaves it out of that phenotype's
    regression only ("Not including covariate ... on phenotype ..."), with a warning.

    ``totals`` is the phenotype's ``linear_totals`` row (its standardised ``C'C``); a covariate counts as
    constant when its variance over the phenotype's samples is not resolved above the fixed-point error
    of the sums (:func:`engine.cohort.standardise.refine`'s rule)."""
    k = len(cohort.covariates) + 1
    cc = np.zeros((k, k))
    cc[np.triu_indices(k)] = totals[: k * (k + 1) // 2]
    n_triu = k * (k + 1) // 2
    moments = np.concatenate([[cc[0, 0], totals[n_triu]], cc[0, 1:], [totals[-1]], np.diag(cc)[1:]])  # n, sums, squares
    constant = ~refine(identity(k - 1), moments, _resolution(executor), scale_phenotype=True).resolved[1:]
    dropped = tuple(covariate for covariate, flag in zip(cohort.covariates, constant) if flag)
    if dropped:
        log.warning("not including covariate(s) %s in the regression on phenotype %r: constant over its samples "
                    "(as PLINK 2 does)", ", ".join(dropped), name)
    return np.flatnonzero(np.r_[True, ~constant]), dropped


def run_logistic(executor: RoundExecutor, cohort: CohortRequest) -> ModelFit:
    """Logistic regression with PLINK 2's firth-fallback (see :mod:`engine.stats.logistic.solve`)."""
    return _run_case_control(executor, cohort, always_firth=False)


def run_firth(executor: RoundExecutor, cohort: CohortRequest) -> ModelFit:
    """Firth-penalised logistic regression for every variant (PLINK 2's ``--glm firth``)."""
    return _run_case_control(executor, cohort, always_firth=True)


class _SitesChanged(Exception):
    """A site dropped out during an iterative fit: its earlier rounds no longer match the cohort."""


def _run_case_control(executor: RoundExecutor, cohort: CohortRequest, always_firth: bool) -> ModelFit:
    """The rounds of :class:`engine.stats.logistic.solve.BinaryTraitFit` until every variant is decided.

    A site that drops out of the first round (before anything was released) is left out and the fit
    starts without it. A site lost later ends the study: restarting the fit would recompute released
    statistics over another set of sites, whose difference is the lost site's (the sites refuse it)."""
    if cohort.phenotype_coding == "quantitative":
        raise InputError(f"--glm {'firth' if always_firth else 'logistic'} needs a case/control phenotype: "
                         f"{cohort.phenotype!r} is read as quantitative")
    sites = executor.live_sites
    try:
        return _fit_case_control(executor, cohort, always_firth, sites)
    except _SitesChanged:
        lost = sorted(set(sites) - set(executor.live_sites))
        raise StudyFailed(f"site(s) {lost} dropped out during the iterative {'firth' if always_firth else 'logistic'} "
                          f"fit; the fit cannot be restarted over another set of sites without revealing their "
                          f"statistics by difference (rerun the study once the sites are back, under a study id "
                          f"they approve)", failures=tuple(executor.failures.values())) from None


def _fit_case_control(executor: RoundExecutor, cohort: CohortRequest, always_firth: bool,
                      sites: tuple[str, ...]) -> ModelFit:
    standard = study_standardisation(executor, cohort, scale_phenotype=False)
    table, cohort = standard.table, standard.cohort
    fit = BinaryTraitFit(len(executor.harmonised.variants), len(cohort.covariates) + 1, always_firth=always_firth)
    keep = {KEEP_GENOTYPES_PARAMETER: "1"}  # every round reads the same samples: sites may keep them in memory
    first = True
    while requests := fit.requests():
        for request in requests:
            totals = executor.run(request.analysis, request.width, cohort=cohort, variants=request.variants,
                                  inputs={**request.inputs, STANDARDISE_INPUT: table}, parameters=keep)
            if executor.live_sites != sites:
                if not first:
                    raise _SitesChanged
                sites = executor.live_sites  # lost in the first round: every round is over the new set
            first = False
            started = time.perf_counter()
            try:
                fit.update(request, totals)
            except NoCasesOrControls as error:
                hint = ("; with 1/2 coding 0 means missing: for a 0/1 column use --1 (study file: case_control = \"0/1\")"
                        if cohort.phenotype_coding == "case-control" else "")
                raise InputError(f"phenotype {cohort.phenotype!r} has no {error.absent} among the analysed samples of "
                                 f"the {len(sites)} sites: logistic regression needs both{hint}") from None
            log.debug("round %d: solved in %.2f s", executor.rounds, time.perf_counter() - started)
            _log_round(executor, request.analysis, len(request.variants))
    counts = {} if standard.case_control is None else {cohort.phenotype: standard.case_control}
    return ModelFit({cohort.phenotype: fit.result(executor.harmonised.variants)}, standard.excluded_covariates, counts)


def _log_round(executor: RoundExecutor, analysis: str, n_variants: int) -> None:
    log.info("round %d (%s): %d variants, bytes per site %s", executor.rounds, analysis, n_variants,
             {name: done.bytes_sent for name, done in sorted(executor.last_done.items())})


Driver = Callable[[RoundExecutor, CohortRequest], ModelFit]


@dataclass(frozen=True)
class ModelDriver:
    """How a model is run: ``one`` fits one phenotype; ``many``, when the model has it, fits every
    phenotype of a cohort from one pass over the genotypes (used when no DP release needs each
    phenotype's rounds planned and charged on their own)."""

    one: Driver
    many: Driver | None = None


DRIVERS: dict[str, ModelDriver] = {
    "linear": ModelDriver(run_linear, many=run_linear_phenotypes),
    "logistic": ModelDriver(run_logistic), "firth": ModelDriver(run_firth)}
