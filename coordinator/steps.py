"""A study's steps, in the order they run: each one a driver over the same :class:`RoundExecutor`.

A step says when the study wants it (:attr:`Step.wanted`, read from the :class:`StudyConfig`) and
turns the study's state so far into the next (:attr:`Step.run`). The runner
(:mod:`coordinator.runner`) runs the wanted steps in order and times each as a phase. The state is
frozen: a step returns a new :class:`StudyState` with what it found (files, notes, the QC filter, the
PCA run whose scores become covariates, the association fit); the one thing a step changes on the
executor is the variant set later rounds use (QC filters restrict it).

Adding a step means a function ``(executor, config, state) -> state`` and a line in :data:`STEPS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from coordinator.drivers import DRIVERS, ModelFit
from coordinator.overlap import describe_after_drop, overlap_notes, pairwise_overlaps
from coordinator.qc import QcOutcome, restrict, run_assoc, run_qc
from coordinator.rounds import RoundExecutor
from coordinator.sex_chromosomes import by_chromosome_class
from coordinator.structure import StructureOutcome, run_structure
from coordinator.study import StudyConfig
from engine.errors import InputError
from engine.io.genotype_sources import DOSAGE_FORMATS
from engine.tasks import CohortRequest


@dataclass(frozen=True)
class StudyState:
    """What the steps have produced so far."""

    cohort: CohortRequest  # the association's cohort (with the PCA's ``pca_run`` once it ran)
    files: Mapping[str, Path] = field(default_factory=dict)  # output name -> file (freq, hardy, assoc...)
    notes: tuple[str, ...] = ()
    overlaps: Mapping[str, int] = field(default_factory=dict)  # "A+B" -> participants shared
    qc: QcOutcome | None = None
    structure: StructureOutcome | None = None
    fit: ModelFit | None = None

    def with_files(self, files: Mapping[str, Path], **changes: object) -> "StudyState":
        return dataclasses.replace(self, files={**self.files, **files}, **changes)


@dataclass(frozen=True)
class Step:
    """One phase of a study: its name (in the summary's ``phase_seconds``), when it runs, what it does."""

    name: str
    wanted: Callable[[StudyConfig], bool]
    run: Callable[[RoundExecutor, StudyConfig, StudyState], StudyState]


def overlap_check(executor: RoundExecutor, config: StudyConfig, state: StudyState) -> StudyState:
    """How many participants each pair of sites shares (private set intersection; never which); with
    ``drop_shared_from``, that site leaves them out (and is described again: the summary's counts)."""
    overlaps = pairwise_overlaps(executor)
    if config.drop_shared_from:
        describe_after_drop(executor)
    return dataclasses.replace(state, overlaps=overlaps, notes=state.notes + overlap_notes(config, overlaps))


def quality_control(executor: RoundExecutor, config: StudyConfig, state: StudyState) -> StudyState:
    """QC reports and filters over every sample; later rounds see only the variants that pass."""
    qc = run_qc(executor, config.qc, config.out_dir)
    if qc.filter is not None:
        if not qc.keep.any() and (config.assoc or config.glm):
            raise InputError(f"no variant passes the QC filters {config.qc.filters} "
                             f"(dropped: {qc.filter.dropped}): nothing left to test")
        executor.harmonised = restrict(executor.harmonised, qc.keep)
    return state.with_files(qc.files, qc=qc, notes=state.notes + _qc_notes(config, qc))


def population_structure(executor: RoundExecutor, config: StudyConfig, state: StudyState) -> StudyState:
    """LD pruning and/or PCA; the association's ``PC1..PCk`` then come from each site's own scores."""
    counts = state.qc.counts.take(state.qc.keep) if state.qc is not None else None
    structure = run_structure(executor, config, counts)
    return state.with_files(structure.files, structure=structure, notes=state.notes + structure.notes,
                            cohort=dataclasses.replace(state.cohort, pca_run=structure.run_id))


def allelic_test(executor: RoundExecutor, config: StudyConfig, state: StudyState) -> StudyState:
    """PLINK 1.9's allelic test on the variants that passed QC (its A1 from the pooled QC counts)."""
    assert state.qc is not None  # the QC step runs whenever the study asks for the allelic test
    _, path = run_assoc(executor, config, state.qc.counts.take(state.qc.keep))
    return state.with_files({"assoc": path})


def association(executor: RoundExecutor, config: StudyConfig, state: StudyState) -> StudyState:
    """Every phenotype's regression, model by model (:meth:`StudyConfig.model_cohorts`), per
    chromosome class (:mod:`coordinator.sex_chromosomes`).

    Phenotypes of a model that has a one-pass driver share one genotype pass unless the study is
    DP: then each phenotype has its own rounds, so each release is planned and charged on its own.
    """
    fit = ModelFit({})
    for model, cohort in config.model_cohorts():
        cohort = dataclasses.replace(cohort, pca_run=state.cohort.pca_run)
        driver = DRIVERS[model]
        if len(cohort.phenotypes) > 1 and config.dp is None and driver.many is not None:
            fit = fit + by_chromosome_class(driver.many)(executor, cohort)
            continue
        one = by_chromosome_class(driver.one)  # chrX/Y/MT as PLINK 2 codes them
        for name in cohort.phenotypes:
            fit = fit + one(executor, dataclasses.replace(cohort, phenotype=name))
    results = {name: fit.results[name] for name in config.cohort.phenotypes}
    if not any(d.genotype_format in DOSAGE_FORMATS for d in executor.descriptions.values()):
        results = {name: dataclasses.replace(one, info=None) for name, one in results.items()}
    excluded = ", ".join(fit.excluded_covariates)
    notes = (f"covariate(s) {excluded} excluded: constant over the pooled cohort (as PLINK 2 excludes them)",) \
        if fit.excluded_covariates else ()
    notes += tuple(f"covariate(s) {', '.join(covariates)} left out of phenotype {name!r} only: constant over its "
                   f"samples (as PLINK 2 does)" for name, covariates in fit.phenotype_excluded.items())
    return dataclasses.replace(state, fit=dataclasses.replace(fit, results=results), notes=state.notes + notes)


STEPS: tuple[Step, ...] = (
    Step("overlap check", lambda config: config.overlap_check or bool(config.drop_shared_from), overlap_check),
    Step("qc", lambda config: config.qc.active or config.assoc, quality_control),
    Step("population structure", lambda config: config.ld_prune is not None or config.pca is not None,
         population_structure),
    Step("allelic test", lambda config: config.assoc, allelic_test),
    Step("rounds and solve", lambda config: bool(config.glm), association),
)


def _qc_notes(config: StudyConfig, qc: QcOutcome) -> tuple[str, ...]:
    notes = []
    if qc.filter is not None:
        flags = " ".join(f"--{name} {value:g}" for name, value in config.qc.filters.items())
        midp = " (HWE mid-p)" if config.qc.hwe_midp and config.qc.hwe is not None else ""
        notes.append(f"QC filters before association, PLINK 2 semantics over all samples: {flags}{midp}; "
                     f"{int(qc.keep.sum())} of {len(qc.keep)} variants kept")
    if qc.files:
        notes.append("QC reports (pooled per-variant counts only; per-sample missingness stays at each site): "
                     + ", ".join(path.name for path in qc.files.values()))
    return tuple(notes)
