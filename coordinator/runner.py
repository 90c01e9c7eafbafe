"""Running a study: describe the sites, harmonise variants, run association rounds, solve, write.

Rounds are dispatched to all sites concurrently; each site's result blocks are folded into per-block
aggregators as they stream in, so the coordinator holds one running sum per block, never a site's
statistics in the clear (in secure-aggregation mode it only ever sees masked vectors and the total).
If a site fails mid-round and the study allows dropout, the round restarts without it, under a new
round number and therefore fresh masks; the result records which sites contributed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coordinator.client import SiteClient
from coordinator.results import ResultPaths, write_results
from coordinator.study import StudyConfig
from coordinator.summary import RunSummary, SiteSummary
from engine.association import AssociationResult
from engine.errors import SiteFailure, StudyFailed
from engine.harmonise import Harmonisation, VariantManifest, harmonise
from engine.linear import LinearLayout
from engine.linear_solve import solve_linear
from engine.protection import BlockAggregator
from engine.tasks import ResultBlock, SiteDescription, TaskDone, TaskSpec
from engine.version import __version__

log = logging.getLogger("coordinator")


@dataclass(frozen=True)
class StudyOutcome:
    result: AssociationResult
    summary: RunSummary
    paths: ResultPaths


@dataclass(frozen=True)
class _RoundResult:
    packed: np.ndarray  # (M, Q) aggregated statistics
    done: dict[str, TaskDone]


def _describe_all(clients: Sequence[SiteClient], config: StudyConfig,
                  pool: ThreadPoolExecutor) -> tuple[dict[str, tuple[SiteDescription, VariantManifest]], dict[str, SiteFailure]]:
    def one(client: SiteClient) -> tuple[SiteDescription, VariantManifest]:
        client.wait_healthy()
        description, manifest = client.describe(config.study_id, config.cohort)
        if description.site_name != client.name:
            raise SiteFailure(client.name, f"answers as {description.site_name!r}: check the address in the study")
        if config.privacy not in description.privacy_modes:
            raise SiteFailure(client.name, f"does not accept privacy mode {config.privacy!r} "
                                           f"(accepts {list(description.privacy_modes)})", kind="PrivacyError")
        return description, manifest

    futures = {client.name: pool.submit(one, client) for client in clients}
    described: dict[str, tuple[SiteDescription, VariantManifest]] = {}
    failed: dict[str, SiteFailure] = {}
    for name, future in futures.items():
        try:
            described[name] = future.result()
        except SiteFailure as failure:
            failed[name] = failure
    return described, failed


def _run_round(clients: Sequence[SiteClient], tasks: dict[str, TaskSpec], n_values_per_variant: int,
               pool: ThreadPoolExecutor, on_block: Callable[[], None]) -> _RoundResult:
    """One round at every site in ``clients``; raises the first SiteFailure (others are cancelled)."""
    first_task = next(iter(tasks.values()))
    n_parties = len(clients)
    aggregators = {b: BlockAggregator(first_task.privacy, n_parties,
                                      (first_task.block_bounds(b)[1] - first_task.block_bounds(b)[0]) * n_values_per_variant)
                   for b in range(first_task.n_blocks)}
    packed = np.empty((first_task.n_variants, n_values_per_variant))
    lock = threading.Lock()
    abort = threading.Event()
    done: dict[str, TaskDone] = {}

    def consume(client: SiteClient) -> None:
        task = tasks[client.name]
        for event in client.run_task(task):
            if abort.is_set():
                return
            if isinstance(event, ResultBlock):
                start, stop = task.block_bounds(event.block) if event.block < task.n_blocks else (-1, -1)
                if (event.first_variant, event.first_variant + event.n_variants) != (start, stop) \
                        or event.width != n_values_per_variant:
                    raise SiteFailure(client.name, f"sent block {event.block} with an unexpected shape", kind="ProtocolError")
                with lock:
                    aggregator = aggregators[event.block]
                    aggregator.add(client.name, event.encoding, event.payload)
                    if aggregator.complete:
                        packed[start:stop] = aggregator.total().reshape(stop - start, n_values_per_variant)
                        del aggregators[event.block]
                on_block()
            elif isinstance(event, TaskDone):
                done[client.name] = event
        if client.name not in done:
            raise SiteFailure(client.name, "ended the task stream without a summary", kind="ProtocolError")

    futures = {client.name: pool.submit(consume, client) for client in clients}
    try:
        for name, future in futures.items():
            future.result()
    except Exception:
        abort.set()
        raise
    if aggregators:
        raise StudyFailed(f"blocks {sorted(aggregators)[:5]} were not received from every site")
    n_design = {d.n_design for d in done.values()}
    if len(n_design) != 1:
        raise StudyFailed(f"sites disagree on the number of design columns: {n_design}")
    return _RoundResult(packed=packed, done=done)


def run_study(config: StudyConfig) -> StudyOutcome:
    """Run ``config`` end to end and write the results; raises StudyFailed with a clear reason."""
    started = time.perf_counter()
    phases: dict[str, float] = {}
    mark = [started]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - mark[0]
        mark[0] = now
        log.info("%s done in %.2f s", name, phases[name])

    clients = [SiteClient(endpoint, timeout=config.timeout_seconds) for endpoint in config.sites]
    pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(clients)), thread_name_prefix="coordinator")
    try:
        described, failures = _describe_all(clients, config, pool)
        phase("describe")
        _check_enough(config, described, failures, "describing the sites")
        live = [c for c in clients if c.name in described]
        harmonised = harmonise([described[c.name][1] for c in live], [c.name for c in live], config.match_by)
        phase("harmonise")
        log.info("harmonised %d variants across %d sites (dropped: %s)", len(harmonised.variants), len(live),
                 harmonised.dropped or "none")
        layout = LinearLayout(len(config.cohort.covariates) + 1)
        round_number, outcome = 0, None
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True, disable=not config.show_progress) as progress:
            while outcome is None:
                round_number += 1
                tasks = _tasks_for(config, harmonised, live, described, round_number, layout)
                total_blocks = next(iter(tasks.values())).n_blocks * len(live)
                bar = progress.add_task(f"round {round_number}: {len(live)} sites", total=total_blocks)
                try:
                    outcome = _run_round(live, tasks, layout.width, pool, lambda: progress.advance(bar))
                except SiteFailure as failure:
                    failures[failure.site] = failure
                    log.warning("round %d failed: %s", round_number, failure)
                    progress.remove_task(bar)
                    if not config.allow_dropout:
                        raise StudyFailed(f"{failure} (the study does not allow dropping sites)", failures=(failure,)) from None
                    index = [c.name for c in live].index(failure.site)
                    live = [c for c in live if c.name != failure.site]
                    harmonised = _drop_site(harmonised, index)
                    _check_enough(config, {c.name: described[c.name] for c in live}, failures, f"round {round_number}")
        phase("rounds")
        result = solve_linear(outcome.packed, layout.n_design, harmonised.variants)
        phase("solve")
        summary = RunSummary(
            study_id=config.study_id, test=config.glm, phenotype=config.cohort.phenotype,
            covariates=config.cohort.covariates, privacy=config.privacy,
            sites=tuple(_site_summary(c, described, failures, outcome) for c in clients),
            n_variants_tested=len(result.variants), variants_dropped=dict(harmonised.dropped),
            rounds=round_number, wall_seconds=time.perf_counter() - started, software_version=__version__,
            notes=tuple(f"{harmonised.id_mismatches} variants matched on position and alleles have different IDs"
                        for _ in [0] if harmonised.id_mismatches),
        )
        paths = write_results(result, summary, config.out_dir, config.output_name)
        phase("write")
        summary = dataclasses.replace(summary, phase_seconds=dict(phases),
                                      wall_seconds=time.perf_counter() - started)
        summary.write_json(config.out_dir / f"{config.output_name}.{config.glm}.summary.json")
        return StudyOutcome(result=result, summary=summary, paths=paths)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for client in clients:
            client.close()


def _check_enough(config: StudyConfig, live: dict, failures: dict[str, SiteFailure], stage: str) -> None:
    reasons = "; ".join(str(f) for f in failures.values())
    if failures and not config.allow_dropout:
        raise StudyFailed(f"while {stage}: {reasons}", failures=tuple(failures.values()))
    if len(live) < config.min_sites:
        raise StudyFailed(f"while {stage}: only {len(live)} site(s) left, the study needs {config.min_sites}: {reasons}",
                          failures=tuple(failures.values()))


def _tasks_for(config: StudyConfig, harmonised: Harmonisation, live: Sequence[SiteClient],
               described: dict, round_number: int, layout: LinearLayout) -> dict[str, TaskSpec]:
    participants = tuple((c.name, described[c.name][0].secagg_public_key) for c in live)
    return {
        client.name: TaskSpec(
            study_id=config.study_id, round=round_number, analysis=config.glm, cohort=config.cohort,
            privacy=config.privacy, participants=participants, block_size=config.block_size,
            variant_index=alignment.index, flip=alignment.flip, requester=config.requester,
        )
        for client, alignment in zip(live, harmonised.alignments)
    }


def _drop_site(harmonised: Harmonisation, index: int) -> Harmonisation:
    """The same harmonised variants without one site's alignment (variants stay those all had)."""
    alignments = tuple(a for i, a in enumerate(harmonised.alignments) if i != index)
    return Harmonisation(variants=harmonised.variants, alignments=alignments, dropped=harmonised.dropped,
                         id_mismatches=harmonised.id_mismatches)


def _site_summary(client: SiteClient, described: dict, failures: dict[str, SiteFailure],
                  outcome: _RoundResult) -> SiteSummary:
    description = described.get(client.name, (None, None))[0]
    return SiteSummary(
        name=client.name,
        n_samples=description.n_samples_analysed if description else 0,
        n_variants=description.n_variants if description else 0,
        contributed=client.name in outcome.done,
        failure=str(failures.get(client.name, "")),
        bytes_sent=client.bytes_received,
    )
