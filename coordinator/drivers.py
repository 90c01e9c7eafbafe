"""Coordinator-side drivers: turn aggregated site outputs into results, one function per model.

A driver receives a :class:`RoundExecutor` and asks it for as many rounds as its algorithm needs
(one for linear regression; several for iterative fits), then solves. Adding a model means a site
analysis in :mod:`engine.stats.registry` and a driver registered here.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from coordinator.rounds import RoundExecutor
from engine.stats.association import AssociationResult
from engine.errors import InputError
from engine.stats.linear.compact import complete_width, expand_complete, totals_width
from engine.stats.linear.kernel import LinearLayout
from engine.stats.linear.solve import solve_linear
from engine.stats.logistic.solve import BinaryTraitFit, NoCasesOrControls
from engine.tasks import KEEP_GENOTYPES_PARAMETER

log = logging.getLogger("coordinator")


def run_linear(executor: RoundExecutor) -> AssociationResult:
    """Exact per-variant OLS: one round of sufficient statistics, then the batched solve."""
    layout = LinearLayout(len(executor.config.cohort.covariates) + 1)
    totals = executor.run("linear", layout.width)
    return solve_linear(totals, layout.n_design, executor.harmonised.variants)


def run_linear_phenotypes(executor: RoundExecutor) -> dict[str, AssociationResult]:
    """Exact per-variant OLS of every phenotype of the study's cohort from one pass over the genotypes.

    The sites read each genotype block once for all phenotypes (:mod:`engine.stats.linear.phenotypes`)
    and send the compact layout of :mod:`engine.stats.linear.compact` (``K + 3`` values per phenotype
    and variant, plus each phenotype's totals once); the variants where a phenotype's samples miss a
    call (``N`` below the phenotype's total) get the full statistics in one more round. Each phenotype
    is then solved on its own slice.
    """
    cohort = executor.config.cohort
    k, n_pheno = len(cohort.covariates) + 1, len(cohort.phenotypes)
    layout = LinearLayout(k)
    totals = executor.run("linear_totals", totals_width(k) * n_pheno, variants=np.arange(1))[0]
    compact = executor.run("linear_complete", complete_width(k) * n_pheno)
    full, incomplete = expand_complete(compact, totals, k, n_pheno)
    if np.any(incomplete):
        full[incomplete] = executor.run("linear", layout.width * n_pheno, variants=np.flatnonzero(incomplete))
    log.info("linear: %d of %d variants complete in every phenotype's samples", int((~incomplete).sum()),
             len(incomplete))
    return {name: solve_linear(full[:, i * layout.width:(i + 1) * layout.width], layout.n_design,
                               executor.harmonised.variants)
            for i, name in enumerate(cohort.phenotypes)}


def run_logistic(executor: RoundExecutor) -> AssociationResult:
    """Logistic regression with PLINK 2's firth-fallback (see :mod:`engine.stats.logistic.solve`)."""
    return _run_case_control(executor, always_firth=False)


def run_firth(executor: RoundExecutor) -> AssociationResult:
    """Firth-penalised logistic regression for every variant (PLINK 2's ``--glm firth``)."""
    return _run_case_control(executor, always_firth=True)


class _SitesChanged(Exception):
    """A site dropped out during an iterative fit: its earlier rounds no longer match the cohort."""


def _run_case_control(executor: RoundExecutor, always_firth: bool) -> AssociationResult:
    """The rounds of :class:`engine.stats.logistic.solve.BinaryTraitFit` until every variant is decided. If a
    site drops out (``allow_dropout``), the fit restarts without it."""
    cohort = executor.config.cohort
    if cohort.phenotype_coding == "quantitative":
        raise InputError(f"--glm {'firth' if always_firth else 'logistic'} needs a case/control phenotype: "
                         f"{cohort.phenotype!r} is read as quantitative")
    while True:
        sites = executor.live_sites
        try:
            return _fit_case_control(executor, always_firth, sites)
        except _SitesChanged:
            log.warning("sites changed from %s to %s during the fit: restarting it", sites, executor.live_sites)


def _fit_case_control(executor: RoundExecutor, always_firth: bool, sites: tuple[str, ...]) -> AssociationResult:
    cohort = executor.config.cohort
    fit = BinaryTraitFit(len(executor.harmonised.variants), len(cohort.covariates) + 1, always_firth=always_firth)
    keep = {KEEP_GENOTYPES_PARAMETER: "1"}  # every round reads the same samples: sites may keep them in memory
    while requests := fit.requests():
        for request in requests:
            totals = executor.run(request.analysis, request.width, variants=request.variants,
                                  inputs=request.inputs, parameters=keep)
            if executor.live_sites != sites:
                raise _SitesChanged
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
    return fit.result(executor.harmonised.variants)


def _log_round(executor: RoundExecutor, analysis: str, n_variants: int) -> None:
    log.info("round %d (%s): %d variants, bytes per site %s", executor.rounds, analysis, n_variants,
             {name: done.bytes_sent for name, done in sorted(executor.last_done.items())})


DRIVERS: dict[str, Callable[[RoundExecutor], AssociationResult]] = {
    "linear": run_linear, "logistic": run_logistic, "firth": run_firth}
