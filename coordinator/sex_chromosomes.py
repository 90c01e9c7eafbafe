"""Association on sex chromosomes as PLINK 2's ``--glm``: one pass per chromosome class.

The model's driver (:mod:`coordinator.drivers`) runs once for the autosomal (and pseudo-autosomal)
variants, once for chrY, once for MT, and once for chrX with the .fam sex as an extra covariate
(PLINK 2's default; ``no-x-sex`` leaves it out, ``--xchr-model 0`` skips chrX). Each pass is an
ordinary run of the driver on a restricted variant set; chrY and MT estimates are then put on PLINK
2's haploid dosage scale (:data:`engine.sex_chromosomes.HAPLOID_SCALE`). A study of several phenotypes
runs its one-pass driver the same way. See
:mod:`engine.sex_chromosomes` for the coding rules and how they were measured.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from coordinator.drivers import Driver, ModelFit
from coordinator.qc import restrict
from coordinator.rounds import RoundExecutor
from engine.stats.association import AssociationResult
from engine.errors import ConfigError
from engine.tasks import CohortRequest
from engine.cohort.harmonise import Harmonisation
from engine.cohort.sex_chromosomes import AUTOSOMAL, FAM_SEX_COVARIATE, HAPLOID_SCALE, MT, X, Y, chromosome_class

log = logging.getLogger("coordinator")


def by_chromosome_class(driver: Driver) -> Driver:
    """``driver`` applied per chromosome class; each phenotype's results are merged in harmonised
    order (a skipped chrX is left out and counted in the fit's ``variants_skipped``)."""

    def run(executor: RoundExecutor, cohort: CohortRequest) -> ModelFit:
        classes = chromosome_class(executor.harmonised.variants.chrom)
        if np.all(classes == AUTOSOMAL):
            return driver(executor, cohort)
        config = executor.config
        parts: list[tuple[np.ndarray, ModelFit]] = []
        skipped: dict[str, int] = {}
        for kind in (AUTOSOMAL, X, Y, MT):
            rows = np.flatnonzero(classes == kind)
            if len(rows) == 0:
                continue
            if kind == X and config.xchr_model == 0:
                skipped["chrX (--xchr-model 0)"] = len(rows)
                continue
            covariates = cohort.covariates
            if kind == X and config.x_sex:
                if config.dp is not None:
                    raise ConfigError("differential privacy on chrX needs no-x-sex or --xchr-model 0: the .fam sex "
                                      "covariate has no declared clipping range")
                covariates = covariates + (FAM_SEX_COVARIATE,)
            fit = _on_subset(executor, driver, rows, dataclasses.replace(cohort, covariates=covariates))
            if kind in (Y, MT):
                fit = dataclasses.replace(fit, results={
                    name: dataclasses.replace(result, beta=result.beta * HAPLOID_SCALE, se=result.se * HAPLOID_SCALE)
                    for name, result in fit.results.items()})
            parts.append((rows, fit))
        kept = np.sort(np.concatenate([rows for rows, _ in parts]))
        variants = executor.harmonised.variants.take(kept)
        facts = ModelFit({}, variants_skipped=skipped)
        for _, fit in parts:
            facts = facts + dataclasses.replace(fit, results={})
        return dataclasses.replace(facts, results={
            name: _merge([(rows, fit.results[name]) for rows, fit in parts], kept, variants)
            for name in parts[0][1].results})

    return run


def _on_subset(executor: RoundExecutor, driver: Driver, rows: np.ndarray, cohort: CohortRequest) -> ModelFit:
    """``driver`` on the harmonised variants ``rows`` and ``cohort``; the executor's variant table is
    restored afterwards (without any site that dropped out meanwhile)."""
    full = executor.harmonised
    names = executor.live_sites
    keep = np.zeros(len(full.variants), dtype=bool)
    keep[rows] = True
    executor.harmonised = restrict(full, keep)
    try:
        return driver(executor, cohort)
    finally:
        executor.harmonised = Harmonisation(
            variants=full.variants,
            alignments=tuple(a for name, a in zip(names, full.alignments) if name in executor.live_sites),
            dropped=full.dropped, id_mismatches=full.id_mismatches)


def _merge(parts: list[tuple[np.ndarray, AssociationResult]], kept: np.ndarray, variants) -> AssociationResult:
    """One result over ``kept`` harmonised rows from per-class results over ``rows`` each."""
    position = np.full(int(kept.max()) + 1, -1, dtype=np.int64)
    position[kept] = np.arange(len(kept))
    first = parts[0][1]

    def gather(field: str) -> np.ndarray:
        out = np.empty(len(kept), dtype=np.result_type(*[getattr(r, field).dtype for _, r in parts]))
        for rows, result in parts:
            out[position[rows]] = getattr(result, field)
        return out

    return AssociationResult(
        test=first.test, variants=variants, beta=gather("beta"), se=gather("se"), stat=gather("stat"),
        neg_log10_p=gather("neg_log10_p"), n=gather("n"), effect_allele_count=gather("effect_allele_count"),
        errcode=gather("errcode"), firth=None if first.firth is None else gather("firth"),
        info=None if any(result.info is None for _, result in parts) else gather("info"))
