"""Running a study: describe the sites, harmonise variants, run the model's rounds, solve, write.

Rounds go through :class:`coordinator.rounds.RoundExecutor` (concurrent dispatch, streaming
aggregation under the study's privacy mode, dropout restarts with fresh masks); the model's driver
(:mod:`coordinator.drivers`) decides which rounds to run and solves from the totals.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coordinator.client import SiteClient
from coordinator.drivers import DRIVERS
from coordinator.results import ResultPaths, write_results
from coordinator.rounds import RoundExecutor, describe_sites, require_enough
from coordinator.study import StudyConfig
from coordinator.summary import RunSummary, SiteSummary
from engine.association import AssociationResult
from engine.errors import StudyFailed
from engine.harmonise import harmonise
from engine.version import __version__

log = logging.getLogger("coordinator")


@dataclass(frozen=True)
class StudyOutcome:
    result: AssociationResult
    summary: RunSummary
    paths: ResultPaths


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
    driver = DRIVERS.get(config.glm)
    if driver is None:
        raise StudyFailed(f"no driver for model {config.glm!r}")
    clients = [SiteClient(endpoint, timeout=config.timeout_seconds) for endpoint in config.sites]
    pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(clients)), thread_name_prefix="coordinator")
    try:
        described, failures = describe_sites(clients, config, pool, config.cohort)
        phase("describe")
        live = [c for c in clients if c.name in described]
        require_enough(config, len(live), failures, "describing the sites")
        harmonised = harmonise([described[c.name][1] for c in live], [c.name for c in live], config.match_by)
        log.info("harmonised %d variants across %d sites (dropped: %s)", len(harmonised.variants), len(live),
                 harmonised.dropped or "none")
        phase("harmonise")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True, disable=not config.show_progress) as progress:
            executor = RoundExecutor(config=config, clients=live,
                                     descriptions={n: d for n, (d, _) in described.items()},
                                     harmonised=harmonised, pool=pool, progress=progress, failures=failures)
            result = driver(executor)
        phase("rounds and solve")
        summary = RunSummary(
            study_id=config.study_id, test=config.glm, phenotype=config.cohort.phenotype,
            covariates=config.cohort.covariates, privacy=config.privacy,
            sites=tuple(_site_summary(c, described, executor) for c in clients),
            n_variants_tested=len(result.variants), variants_dropped=dict(harmonised.dropped),
            rounds=executor.rounds, software_version=__version__,
            notes=tuple(f"{harmonised.id_mismatches} variants matched on position and alleles have different IDs"
                        for _ in [0] if harmonised.id_mismatches),
        )
        paths = write_results(result, summary, config.out_dir, config.output_name)
        phase("write")
        summary = dataclasses.replace(summary, phase_seconds=dict(phase.seconds),
                                      wall_seconds=time.perf_counter() - phase.started)
        summary.write_json(config.out_dir / f"{config.output_name}.{config.glm}.summary.json")
        return StudyOutcome(result=result, summary=summary, paths=paths)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for client in clients:
            client.close()


def _site_summary(client: SiteClient, described: dict, executor: RoundExecutor) -> SiteSummary:
    description = described.get(client.name, (None, None))[0]
    return SiteSummary(
        name=client.name,
        n_samples=description.n_samples_analysed if description else 0,
        n_variants=description.n_variants if description else 0,
        contributed=client.name in executor.live_sites and client.name in executor.last_done,
        failure=str(executor.failures.get(client.name, "")),
        bytes_sent=client.bytes_received,
    )
