"""Running a study: describe the sites, harmonise variants, run the study's steps, write.

Rounds go through :class:`coordinator.rounds.RoundExecutor` (concurrent dispatch, streaming
aggregation under the study's privacy mode, same-round dropout recovery). The steps between
harmonising and writing are :data:`coordinator.steps.STEPS`, each timed as a phase: the overlap check,
QC (reports, and filters that restrict later rounds' variants), LD pruning and PCA (whose scores
become covariates), the allelic test, and the association models' drivers.
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
from coordinator.results import ResultPaths, write_results
from coordinator.results.panels import write_phenotype_report
from coordinator.rounds import RoundExecutor, describe_sites, require_enough
from coordinator.drivers import DRIVERS, ModelFit
from coordinator.steps import STEPS, StudyState
from coordinator.study import StudyConfig
from coordinator.summary import RunSummary, SiteSummary
from engine.stats.association import AssociationResult
from engine.errors import StudyFailed
from engine.cohort.harmonise import harmonise
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
    if config.glm and config.glm not in DRIVERS:
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
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True, disable=not config.show_progress) as progress:
            descriptions = {n: d for n, (d, _) in described.items()}
            audit = CoordinatorLog(config.out_dir / LOG_NAME)
            dp = None if config.dp is None else DpSession(
                config.dp, descriptions, config.privacy, pool, log=audit,
                announce=lambda text: progress.console.print(text, highlight=False, markup=False, soft_wrap=True))
            executor = RoundExecutor(config=config, clients=live, descriptions=descriptions, harmonised=harmonised,
                                     pool=pool, progress=progress, audit=audit, dp=dp, failures=failures)
            state = StudyState(cohort=config.cohort, notes=_id_notes(harmonised.id_mismatches))
            for step in STEPS:
                if step.wanted(config):
                    state = step.run(executor, config, state)
                    phase(step.name)
        fit = state.fit or ModelFit({})
        results = dict(fit.results)
        result = next(iter(results.values()), None)
        first_counts = fit.case_controls.get(config.cohort.phenotypes[0]) if config.cohort.phenotypes else None
        summary = RunSummary(
            study_id=config.study_id, test=config.test_name, phenotype=config.cohort.phenotype,
            covariates=tuple(c for c in config.cohort.covariates if c not in fit.excluded_covariates),
            privacy=config.privacy,
            sites=tuple(_site_summary(c, executor) for c in clients),
            n_variants_tested=len(result.variants) if result is not None else len(executor.harmonised.variants),
            variants_dropped={**harmonised.dropped,
                              **(state.qc.filter.dropped if state.qc and state.qc.filter else {}),
                              **fit.variants_skipped, **_multiallelic(described)},
            rounds=executor.rounds, software_version=__version__,
            notes=state.notes + (executor.dp.notes() if executor.dp is not None else ()),
            insecure_transport=config.tls is None,
            excluded_covariates=fit.excluded_covariates,
            case_count=None if first_counts is None else first_counts[0],
            control_count=None if first_counts is None else first_counts[1],
            genome_build=config.genome_build,
            genotyping_technology=_technologies(described) or config.genotyping_technology,
            ancestry_category=config.ancestry_category, participant_overlaps=dict(state.overlaps),
        )
        files = dict(state.files)
        paths = None
        all_paths: dict[str, ResultPaths] = {}
        if results:
            # The report shows the wall time: measured up to here (writing the files is in the JSON's).
            summary = dataclasses.replace(summary, phase_seconds=dict(phase.seconds),
                                          wall_seconds=time.perf_counter() - phase.started)
        for name, one in results.items():
            counts = fit.case_controls.get(name)
            excluded = fit.excluded_from(name)
            per_phenotype = dataclasses.replace(summary, phenotype=name, test=one.test,
                                                case_count=None if counts is None else counts[0],
                                                control_count=None if counts is None else counts[1],
                                                excluded_covariates=excluded,
                                                covariates=tuple(c for c in config.cohort.covariates
                                                                 if c not in excluded))
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


def _id_notes(id_mismatches: int) -> tuple[str, ...]:
    if id_mismatches:
        return (f"{id_mismatches} variants matched on position and alleles have different IDs",)
    return ()


def _multiallelic(described: dict) -> dict[str, int]:
    """Multi-allelic records the sites' readers left out (they cannot be harmonised as biallelic)."""
    skipped = sum(description.multiallelic_skipped for description, _ in described.values())
    return {"multi_allelic_records_at_sites": skipped} if skipped else {}


def _technologies(described: dict) -> tuple[str, ...]:
    """The genotyping technologies the sites declare (GWAS-SSF metadata), sorted; () when none does."""
    return tuple(sorted({d.genotyping_technology for d, _ in described.values() if d.genotyping_technology}))


def _site_summary(client: SiteClient, executor: RoundExecutor) -> SiteSummary:
    description = executor.descriptions.get(client.name)  # the dropping site's after it left out shared participants
    return SiteSummary(
        name=client.name,
        n_samples=description.n_samples_analysed if description else 0,
        n_variants=description.n_variants if description else 0,
        contributed=client.name in executor.live_sites and client.name in executor.last_done,
        failure=str(executor.failures.get(client.name, "")),
        bytes_sent=client.bytes_received,
        genotyping_technology=description.genotyping_technology if description else "",
    )
