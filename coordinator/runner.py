"""Running a study: describe the sites, harmonise variants, QC, filter, association, write.

Rounds go through :class:`coordinator.rounds.RoundExecutor` (concurrent dispatch, streaming
aggregation under the study's privacy mode, dropout restarts with fresh masks). The phases:

1. QC (:mod:`coordinator.qc`), when the study asks for QC reports, filters or the allelic test:
   one round of genotype counts over every sample; reports written; ``--geno``/``--hwe``/``--maf``
   evaluated and the harmonised variant set restricted to the variants that pass;
2. LD pruning and PCA (:mod:`coordinator.structure`), when asked for: the PCs then serve as
   covariates ``PC1..PCk`` of the association, each site using its own rows;
3. the allelic test (``assoc``), one more round of counts split by case/control status;
4. the model's driver (:mod:`coordinator.drivers`), which decides which rounds to run and solves.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.audit.coordinator_log import LOG_NAME, CoordinatorLog
from coordinator.client import SiteClient
from coordinator.dp_options import restrict_to_ids
from coordinator.dp_plan import DpSession
from coordinator.drivers import DRIVERS, run_linear_phenotypes
from coordinator.qc import QcOutcome, restrict, run_assoc, run_qc
from coordinator.structure import StructureOutcome, run_structure
from coordinator.results import ResultPaths, write_results
from coordinator.results.panels import write_phenotype_report
from coordinator.rounds import RoundExecutor, describe_sites, require_enough
from coordinator.overlap import pairwise_overlaps
from coordinator.sex_chromosomes import by_chromosome_class, by_chromosome_class_phenotypes
from coordinator.study import StudyConfig
from coordinator.summary import RunSummary, SiteSummary
from engine.stats.association import AssociationResult
from engine.errors import InputError, StudyFailed
from engine.cohort.harmonise import harmonise
from engine.io.genotype_sources import DOSAGE_FORMATS
from engine.tasks import CohortRequest
from engine.version import __version__

log = logging.getLogger("coordinator")


@dataclass(frozen=True)
class StudyOutcome:
    """What a study produced: the regression result and its files (if a model was run), the run
    summary, and the QC and allelic-test files by output name (``freq``, ``hardy``, ``assoc``...)."""

    result: AssociationResult | None
    summary: RunSummary
    paths: ResultPaths | None
    files: dict[str, Path] = field(default_factory=dict)
    #: Every phenotype's result and files (one entry for a single-phenotype study; ``result`` and
    #: ``paths`` are the first phenotype's).
    results: dict[str, AssociationResult] = field(default_factory=dict)
    all_paths: dict[str, ResultPaths] = field(default_factory=dict)


class _PhaseTimer:
    """Wall time per study phase, for the summary and ``--verbose`` logs."""

    def __init__(self) -> None:
        self.started = self._mark = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._mark
        self._mark = now
        log.info("%s done in %.2f s", name, self.seconds[name])


def run_study(config: StudyConfig) -> StudyOutcome:
    """Run ``config`` end to end and write the results; raises StudyFailed with a clear reason."""
    phase = _PhaseTimer()
    driver = None
    if config.glm:
        driver = DRIVERS.get(config.glm)
        if driver is None:
            raise StudyFailed(f"no driver for model {config.glm!r}")
    clients = [SiteClient(endpoint, timeout=config.timeout_seconds, tls=config.tls) for endpoint in config.sites]
    pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(clients)), thread_name_prefix="coordinator")
    try:
        described, failures = describe_sites(clients, config, pool, config.describe_cohort)
        phase("describe")
        live = [c for c in clients if c.name in described]
        require_enough(config, len(live), failures, "describing the sites")
        harmonised = harmonise([described[c.name][1] for c in live], [c.name for c in live], config.match_by)
        if config.extract is not None:
            harmonised = restrict_to_ids(harmonised, config.extract)
        log.info("harmonised %d variants across %d sites (dropped: %s)", len(harmonised.variants), len(live),
                 harmonised.dropped or "none")
        phase("harmonise")
        config.out_dir.mkdir(parents=True, exist_ok=True)
        qc: QcOutcome | None = None
        structure: StructureOutcome | None = None
        files: dict[str, Path] = {}
        result = None
        results: dict[str, AssociationResult] = {}
        case_controls: dict[str, tuple[int, int]] = {}  # per case/control phenotype
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True, disable=not config.show_progress) as progress:
            descriptions = {n: d for n, (d, _) in described.items()}
            audit = CoordinatorLog(config.out_dir / LOG_NAME)
            dp = None if config.dp is None else DpSession(
                config.dp, descriptions, config.privacy, pool, log=audit,
                announce=lambda text: progress.console.print(text, highlight=False, markup=False, soft_wrap=True))
            executor = RoundExecutor(config=config, clients=live, descriptions=descriptions, harmonised=harmonised,
                                     pool=pool, progress=progress, audit=audit, dp=dp, failures=failures)
            cohort = config.cohort
            overlaps = pairwise_overlaps(executor) if config.overlap_check else {}
            if overlaps:
                phase("overlap check")
            if config.qc.active or config.assoc:
                qc = run_qc(executor, config.qc, config.out_dir)
                files.update(qc.files)
                if qc.filter is not None:
                    if not qc.keep.any() and (config.assoc or driver is not None):
                        raise InputError(f"no variant passes the QC filters {config.qc.filters} "
                                         f"(dropped: {qc.filter.dropped}): nothing left to test")
                    executor.harmonised = restrict(executor.harmonised, qc.keep)
                phase("qc")
            if config.ld_prune is not None or config.pca is not None:  # before association: PCs as covariates
                structure = run_structure(executor, config, qc.counts.take(qc.keep) if qc is not None else None)
                files.update(structure.files)
                cohort = dataclasses.replace(cohort, pca_run=structure.run_id)  # PC1.. from each site's own scores
                phase("population structure")
            if config.assoc and qc is not None:
                _, files["assoc"] = run_assoc(executor, config, qc.counts.take(qc.keep))
                phase("allelic test")
            if driver is not None:
                results = _associate(executor, config, cohort, case_controls)
                if not any(d.genotype_format in DOSAGE_FORMATS for d in executor.descriptions.values()):
                    results = {name: dataclasses.replace(one, info=None) for name, one in results.items()}
                result = next(iter(results.values()))
                phase("rounds and solve")
        summary = RunSummary(
            study_id=config.study_id, test=config.test_name, phenotype=config.cohort.phenotype,
            covariates=tuple(c for c in config.cohort.covariates if c not in executor.excluded_covariates),
            privacy=config.privacy,
            sites=tuple(_site_summary(c, described, executor) for c in clients),
            n_variants_tested=len(result.variants) if result is not None else len(executor.harmonised.variants),
            variants_dropped={**harmonised.dropped, **(qc.filter.dropped if qc and qc.filter else {}),
                              **executor.variants_skipped, **_multiallelic(described)},
            rounds=executor.rounds, software_version=__version__,
            notes=_notes(config, harmonised.id_mismatches, qc) + (structure.notes if structure is not None else ())
            + ((f"covariate(s) {', '.join(executor.excluded_covariates)} excluded: constant over the pooled "
                "cohort (as PLINK 2 excludes them)",) if executor.excluded_covariates else ())
            + ((f"participants shared between sites (private set intersection on IIDs): "
                + ", ".join(f"{pair}: {n}" for pair, n in overlaps.items()),) if overlaps else ()),
            insecure_transport=config.tls is None,
            excluded_covariates=executor.excluded_covariates,
            case_count=None if executor.case_control is None else executor.case_control[0],
            control_count=None if executor.case_control is None else executor.case_control[1],
            genome_build=config.genome_build,
            genotyping_technology=_technologies(described) or config.genotyping_technology,
            ancestry_category=config.ancestry_category, participant_overlaps=overlaps,
        )
        if executor.dp is not None:
            summary = dataclasses.replace(summary, notes=summary.notes + executor.dp.notes())
        paths = None
        all_paths: dict[str, ResultPaths] = {}
        if results:
            # The report shows the wall time: measured up to here (writing the files is in the JSON's).
            summary = dataclasses.replace(summary, phase_seconds=dict(phase.seconds),
                                          wall_seconds=time.perf_counter() - phase.started)
        for name, one in results.items():
            counts = case_controls.get(name)
            per_phenotype = dataclasses.replace(summary, phenotype=name, test=one.test,
                                                case_count=None if counts is None else counts[0],
                                                control_count=None if counts is None else counts[1])
            all_paths[name] = write_results(one, per_phenotype, config.out_dir, name)
            if len(results) > 1:
                per_phenotype.write_json(config.out_dir / f"{name}.{one.test}.summary.json")
        if len(results) > 1:
            files["report"] = write_phenotype_report(results, all_paths, summary, config.out_dir /
                                                     f"{config.output_name}.{config.test_name}.report.html")
        if results:
            paths = next(iter(all_paths.values()))
            phase("write")
        summary = dataclasses.replace(summary, phase_seconds=dict(phase.seconds),
                                      wall_seconds=time.perf_counter() - phase.started)
        summary.write_json(config.out_dir / f"{config.output_name}.{config.test_name}.summary.json")
        return StudyOutcome(result=result, summary=summary, paths=paths, files=files, results=results,
                            all_paths=all_paths)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for client in clients:
            client.close()


def _associate(executor: RoundExecutor, config: StudyConfig, cohort: CohortRequest,
               case_controls: dict[str, tuple[int, int]]) -> dict[str, AssociationResult]:
    """Every phenotype's association result, in the study's order (:meth:`StudyConfig.model_cohorts`).

    ``cohort`` is the study's cohort as the run has it (with the PCA's ``pca_run``). The quantitative
    phenotypes share one round of ``--glm linear`` (one genotype pass at each site); with differential
    privacy, and for the iterative case/control fits, each phenotype has its own rounds (so each release
    is planned and charged to the sites' budgets on its own). Every driver runs per chromosome class
    (:mod:`coordinator.sex_chromosomes`). Each case/control phenotype's case and control counts are
    put in ``case_controls``.
    """
    results: dict[str, AssociationResult] = {}
    for model, model_cohort in config.model_cohorts():
        model_cohort = dataclasses.replace(model_cohort, pca_run=cohort.pca_run)
        if len(model_cohort.phenotypes) > 1 and config.dp is None:
            results.update(by_chromosome_class_phenotypes(run_linear_phenotypes)(executor, model_cohort))
            continue
        driver = by_chromosome_class(DRIVERS[model])  # chrX/Y/MT as PLINK 2 codes them
        for name in model_cohort.phenotypes:
            executor.case_control = None
            results[name] = driver(executor, dataclasses.replace(model_cohort, phenotype=name))
            if executor.case_control is not None:
                case_controls[name] = executor.case_control
    return {name: results[name] for name in config.cohort.phenotypes}


def _notes(config: StudyConfig, id_mismatches: int, qc: QcOutcome | None) -> tuple[str, ...]:
    notes = []
    if id_mismatches:
        notes.append(f"{id_mismatches} variants matched on position and alleles have different IDs")
    if qc is not None and qc.filter is not None:
        flags = " ".join(f"--{name} {value:g}" for name, value in config.qc.filters.items())
        midp = " (HWE mid-p)" if config.qc.hwe_midp and config.qc.hwe is not None else ""
        notes.append(f"QC filters before association, PLINK 2 semantics over all samples: {flags}{midp}; "
                     f"{int(qc.keep.sum())} of {len(qc.keep)} variants kept")
    if qc is not None and qc.files:
        notes.append("QC reports (pooled per-variant counts only; per-sample missingness stays at each site): "
                     + ", ".join(path.name for path in qc.files.values()))
    return tuple(notes)


def _multiallelic(described: dict) -> dict[str, int]:
    """Multi-allelic records the sites' readers left out (they cannot be harmonised as biallelic)."""
    skipped = sum(description.multiallelic_skipped for description, _ in described.values())
    return {"multi_allelic_records_at_sites": skipped} if skipped else {}


def _technologies(described: dict) -> tuple[str, ...]:
    """The genotyping technologies the sites declare (GWAS-SSF metadata), sorted; () when none does."""
    return tuple(sorted({d.genotyping_technology for d, _ in described.values() if d.genotyping_technology}))


def _site_summary(client: SiteClient, described: dict, executor: RoundExecutor) -> SiteSummary:
    description = described.get(client.name, (None, None))[0]
    return SiteSummary(
        name=client.name,
        n_samples=description.n_samples_analysed if description else 0,
        n_variants=description.n_variants if description else 0,
        contributed=client.name in executor.live_sites and client.name in executor.last_done,
        failure=str(executor.failures.get(client.name, "")),
        bytes_sent=client.bytes_received,
        genotyping_technology=description.genotyping_technology if description else "",
    )
