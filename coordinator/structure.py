"""Population structure across sites: LD pruning, PCA, and the PCs as association covariates.

Phases, after QC (whose pooled counts give the allele frequencies) and before any association:

1. ``--indep-pairwise`` (:mod:`engine.stats.ld.kernel`, :mod:`engine.stats.ld.prune`): one ``ld_pairs`` round returns the
   pooled pair sums of every variant with its window neighbours; the coordinator replays PLINK 2's
   pruning and writes ``fedgwas.prune.in``/``.prune.out``. Pruning selects the PCA's variants only:
   association still tests every variant that passed QC, as with PLINK (prune, then ``--extract``
   for the PCA).
2. ``--pca`` (:mod:`engine.stats.pca.kernel`, :mod:`engine.stats.pca.solve`): ``pca`` rounds of block Krylov iteration on
   the pooled standardised genotypes, then one round with the final loadings in which every site
   keeps its own rows of the sample eigenvectors (they never leave it). ``pca.eigenval`` and
   ``pca.eigenvec.var`` are written; later association tasks carry the PCA run's identifier, so
   each site uses its own scores as covariates ``PC1..PCk``.

If a site drops out (``allow_dropout``) the PCA restarts without it, as its earlier rounds no
longer describe the remaining cohort.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator.qc import pooled_counts
from coordinator.results.pca_files import write_eigenval, write_eigenvec_var, write_prune_lists
from coordinator.rounds import RoundExecutor
from coordinator.study import QC_OUTPUT_NAME, PcaSettings, StudyConfig
from engine.stats.ld.kernel import PAIR_FIELDS
from engine.stats.ld.prune import PruneSettings, band_width, exceeds, indep_pairwise, windows
from engine.stats.pca.kernel import COVARIATES_PARAMETER, SCORES_PARAMETER
from engine.stats.pca.solve import (BlockKrylov, PcaResult, finish, krylov_plan, major_is_effect, score_inputs,
                              standardisation)
from engine.stats.qc.counts import GenotypeCounts
from engine.tasks import CohortRequest

log = logging.getLogger("coordinator")

#: File names (in the output directory) of the PCA's released results.
EIGENVAL_FILE = "pca.eigenval"
EIGENVEC_VAR_FILE = "pca.eigenvec.var"


@dataclass(frozen=True)
class StructureOutcome:
    """What the phase produced: the PCA's variants (indices into the executor's harmonised variants),
    the pruning mask, the PCA result and its run identifier, the files written, and notes."""

    pca_variants: np.ndarray
    removed: np.ndarray | None = None
    pca: PcaResult | None = None
    run_id: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class _SitesChanged(Exception):
    """A site dropped out between rounds: the rounds so far no longer describe one cohort."""


def structure_cohort(config: StudyConfig) -> CohortRequest:
    """Every sample (no phenotype, no covariates), with the study's declared data use."""
    return dataclasses.replace(config.cohort, phenotype="", covariates=(), phenotype_coding="quantitative")


def run_structure(executor: RoundExecutor, config: StudyConfig, counts: GenotypeCounts | None = None) -> StructureOutcome:
    """LD pruning and/or PCA on the executor's variants; ``counts`` are the pooled QC counts of those
    variants if the study already has them (one ``qc`` round otherwise)."""
    while True:
        sites = executor.live_sites
        try:
            return _run(executor, config, counts, sites)
        except _SitesChanged:
            log.warning("sites changed from %s to %s: restarting LD pruning / PCA", sites, executor.live_sites)
            counts = None


def _run(executor: RoundExecutor, config: StudyConfig, counts: GenotypeCounts | None,
         sites: tuple[str, ...]) -> StructureOutcome:
    cohort = structure_cohort(config)
    if counts is None:
        (counts,) = pooled_counts(executor, cohort)
        _check(executor, sites)
    variants = executor.harmonised.variants
    selected = np.arange(len(variants))
    files: dict[str, Path] = {}
    notes: list[str] = []
    removed = None
    if config.ld_prune is not None:
        removed, processed = run_ld_prune(executor, counts, config.ld_prune, cohort, sites)
        files["prune.in"], files["prune.out"] = write_prune_lists(config.out_dir, QC_OUTPUT_NAME, variants,
                                                                  removed, processed)
        selected = np.flatnonzero(processed & ~removed)
        settings = config.ld_prune
        notes.append(f"LD pruning (PLINK 2 --indep-pairwise {settings.window:g}{'kb' if settings.kb else ''} "
                     f"{settings.step} {settings.r2:g}, pooled over all samples): {len(selected)} of "
                     f"{len(variants)} variants kept for the PCA")
    result, run_id = None, ""
    if config.pca is not None:
        result, run_id = run_pca(executor, counts.take(selected), selected, config.pca, cohort, sites)
        files["eigenval"] = write_eigenval(config.out_dir / EIGENVAL_FILE, result)
        files["eigenvec.var"] = write_eigenvec_var(config.out_dir / EIGENVEC_VAR_FILE, variants.take(selected),
                                                   result, major_is_effect(counts.take(selected)))
        executor.parameters[COVARIATES_PARAMETER] = run_id
        status = ("PLINK 2's approx budget" if config.pca.approx else
                  "converged" if result.converged else "NOT converged: raise [pca] max_rounds")
        notes.append(f"PCA ({config.pca.components} PCs, {result.n_variants} "
                     f"variants, {result.rounds} rounds, {status}; largest relative residual "
                     f"{float(np.max(result.residuals)):.2g}); each site keeps its own sample scores (pca.eigenvec)")
    return StructureOutcome(pca_variants=selected, removed=removed, pca=result, run_id=run_id, files=files,
                            notes=tuple(notes))


def _check(executor: RoundExecutor, sites: tuple[str, ...]) -> None:
    if executor.live_sites != sites:
        raise _SitesChanged


def run_ld_prune(executor: RoundExecutor, counts: GenotypeCounts, settings: PruneSettings,
                 cohort: CohortRequest, sites: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One ``ld_pairs`` round and PLINK 2's pruning: (removed, processed) bool ``(m,)`` masks over the
    executor's variants (``processed`` is False for chromosome 0, which PLINK leaves out)."""
    variants = executor.harmonised.variants
    chrom = np.asarray(variants.chrom).astype(str)
    all_windows = windows(chrom, np.asarray(variants.pos), settings)
    band = band_width(all_windows)
    m = len(variants)
    if all_windows:
        totals = executor.run("ld_pairs", len(PAIR_FIELDS) * band, cohort=cohort,
                              inputs={"band": np.array([band], dtype=np.int64), "position": np.arange(m, dtype=np.int64)})
        _check(executor, sites)
        removed = indep_pairwise(exceeds(totals, band, settings.r2), counts, all_windows)
    else:
        removed = np.zeros(m, dtype=bool)
    processed = chrom != "0"
    log.info("LD pruning: band %d, %d windows, %d of %d variants removed", band, len(all_windows),
             int(removed.sum()), m)
    return removed, processed


def run_pca(executor: RoundExecutor, counts: GenotypeCounts, selected: np.ndarray, settings: PcaSettings,
            cohort: CohortRequest, sites: tuple[str, ...]) -> tuple[PcaResult, str]:
    """Krylov rounds until converged (or PLINK's approx budget), then the score round."""
    n_samples = sum(executor.descriptions[name].n_samples_total for name in executor.live_sites)
    plan = krylov_plan(settings.components, n_samples, len(selected), approx=settings.approx,
                       block=settings.block, max_rounds=settings.max_rounds, tolerance=settings.tolerance)
    standard = standardisation(counts)
    krylov = BlockKrylov(len(selected), plan, np.random.default_rng(settings.seed))
    while (block := krylov.request()) is not None:
        product = executor.run("pca", block.shape[1], cohort=cohort, variants=selected,
                               inputs={"standard": standard, "v": block})
        _check(executor, sites)
        krylov.update(product)
        residuals = krylov.result().residuals
        log.info("PCA round %d: Krylov dimension %d, largest relative residual %.3g", krylov.rounds,
                 krylov.dimension, float(np.max(residuals)))
    ritz = krylov.result()
    run_id = uuid.uuid4().hex
    final = executor.run("pca", settings.components, cohort=cohort, variants=selected,
                         inputs={"standard": standard, "v": score_inputs(ritz)},
                         parameters={SCORES_PARAMETER: run_id})
    _check(executor, sites)
    return finish(ritz, final, len(selected), krylov.rounds + 1, plan.tolerance), run_id
