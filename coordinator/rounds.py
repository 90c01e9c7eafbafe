"""Executing rounds across sites: dispatch, aggregation, dropouts.

An analysis driver asks the :class:`RoundExecutor` for "the total over all sites of analysis A on
these harmonised variants with these inputs"; the executor sends one task per live site and returns
the float64 totals. Secure rounds (secagg, he) run the signed key exchange and, for secagg, recover a
site that fails after the shares were exchanged in the *same* round (coordinator/secure_rounds.py):
the result is over the survivors, and the site is gone from later rounds. A site that fails before
anything was computed (or in a plaintext round) ends the round: if the study allows dropout, it is
re-run without it under a new round number, otherwise the failure ends the study.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
from rich.progress import Progress

from engine.audit.coordinator_log import CoordinatorLog, audited_events
from coordinator.client import SiteClient
from coordinator.dp_plan import DpSession
from coordinator.privacy_session import PrivacySession
from coordinator.secure_rounds import run_secure_round
from coordinator.study import StudyConfig
from engine.audit.records import REQUEST_ID_KEY
from engine.errors import SiteFailure, StudyFailed
from engine.cohort.harmonise import Harmonisation
from engine.tasks import CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskSpec

log = logging.getLogger("coordinator")


@dataclass
class RoundExecutor:
    """Runs rounds for one study over the sites that are still live.

    Everything about the study is given at construction (the study config, the sites' descriptions,
    the coordinator's log, the DP session); each round's cohort, variants, inputs and parameters are
    explicit arguments of :meth:`run`, so nothing one phase sets rides along on a later task. What
    changes over a study is only what the sites do: which are live, their failures, and the round
    counter (each dispatched round gets a fresh number, hence fresh masks).
    """

    config: StudyConfig
    clients: list[SiteClient]  # live sites, study order
    descriptions: dict[str, SiteDescription]
    harmonised: Harmonisation
    pool: ThreadPoolExecutor
    progress: Progress
    audit: CoordinatorLog | None  # what was requested and received (engine/audit/coordinator_log.py)
    dp: DpSession | None = None  # DP studies: task options, preview and budget pre-check per round
    failures: dict[str, SiteFailure] = field(default_factory=dict)
    rounds: int = 0
    last_done: dict[str, TaskDone] = field(default_factory=dict)
    privacy: PrivacySession | None = None  # opened on the first round (for "he": key holder connection)
    protocol_bytes: int = 0  # bytes the secure rounds' key phases added (keys, shares, signatures, reveals)

    @property
    def live_sites(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clients)

    def run(self, analysis: str, width: int, *, cohort: CohortRequest,
            variants: np.ndarray | None = None, inputs: Mapping[str, np.ndarray] | None = None,
            parameters: Mapping[str, str] | None = None) -> np.ndarray:
        """Aggregated output ``(len(variants), width)`` of statistic ``analysis`` over all live sites.

        ``cohort`` is the round's cohort (the study's, or a phase's own: QC, PCA, the allelic test);
        ``variants`` are indices into the harmonised variant table (default: all); per-variant
        ``inputs`` are given in the same order; ``parameters`` go into this round's task header only.
        """
        selected = np.arange(len(self.harmonised.variants)) if variants is None else np.asarray(variants)
        while True:
            self.rounds += 1
            tasks = self._tasks(analysis, cohort, selected, dict(inputs or {}), dict(parameters or {}))
            if self.dp is not None:  # the analyst sees the preview, then every site checks its budget
                self.dp.before_round(self.clients, tasks)
            bar = self.progress.add_task(f"round {self.rounds} ({analysis}): {len(self.clients)} sites",
                                         total=next(iter(tasks.values())).n_blocks * len(self.clients))
            try:
                if self.config.privacy in ("secagg", "he"):
                    outcome = run_secure_round(self.clients, tasks, width, self.pool, self._privacy(), self.audit,
                                               lambda: self.progress.advance(bar), self.config.allow_dropout)
                    self.last_done, self.protocol_bytes = outcome.done, self.protocol_bytes + outcome.protocol_bytes
                    for name, failure in outcome.dropped.items():  # recovered in this round: gone for the next
                        self.failures[name] = failure
                        self._drop(name)
                    if outcome.dropped:
                        self.require_enough(f"round {self.rounds}")
                    totals = outcome.totals
                else:
                    totals = self._dispatch(tasks, width, lambda: self.progress.advance(bar))
                return totals if self.dp is None else self.dp.after_round(analysis, totals, self.last_done)
            except SiteFailure as failure:  # before any block was computed (or plaintext): restart without it
                self.failures[failure.site] = failure
                log.warning("round %d failed: %s", self.rounds, failure)
                if not self.config.allow_dropout:
                    raise StudyFailed(f"{failure} (the study does not allow dropping sites)", failures=(failure,)) from None
                self._drop(failure.site)
                self.require_enough(f"round {self.rounds}")
            finally:
                self.progress.remove_task(bar)

    def _drop(self, site: str) -> None:
        """Remove a failed site from the live sites and the harmonisation of later rounds."""
        index = self.live_sites.index(site)
        self.clients = [c for c in self.clients if c.name != site]
        self.harmonised = Harmonisation(
            variants=self.harmonised.variants,
            alignments=tuple(a for i, a in enumerate(self.harmonised.alignments) if i != index),
            dropped=self.harmonised.dropped, id_mismatches=self.harmonised.id_mismatches)

    def require_enough(self, stage: str) -> None:
        require_enough(self.config, len(self.clients), self.failures, stage)

    def _privacy(self) -> PrivacySession:
        if self.privacy is None:
            self.privacy = PrivacySession(self.config)
        return self.privacy

    def _tasks(self, analysis: str, cohort: CohortRequest, selected: np.ndarray,
               inputs: dict[str, np.ndarray], extra: dict[str, str] | None = None) -> dict[str, TaskSpec]:
        participants = tuple(c.name for c in self.clients)
        if cohort.data_use is None:  # every cohort of the study (QC, allelic test...) declares its data use
            cohort = dataclasses.replace(cohort, data_use=self.config.cohort.data_use)
        parameters = {REQUEST_ID_KEY: uuid.uuid4().hex, **(extra or {}),
                      **(self.dp.parameters() if self.dp is not None else {})}
        return {
            client.name: TaskSpec(
                study_id=self.config.study_id, round=self.rounds, analysis=analysis, cohort=cohort,
                privacy=self.config.privacy, participants=participants, block_size=self.config.block_size,
                variant_index=alignment.index[selected], flip=alignment.flip[selected],
                requester=self.config.requester, inputs=inputs, privacy_material=self._privacy().task_material(),
                parameters=parameters, threshold=_threshold(self.config.threshold, len(participants)),
            )
            for client, alignment in zip(self.clients, self.harmonised.alignments)
        }

    def _dispatch(self, tasks: dict[str, TaskSpec], width: int, on_block: Callable[[], None]) -> np.ndarray:
        """One plaintext round at every live site; raises the first SiteFailure (the others are abandoned)."""
        first = next(iter(tasks.values()))
        aggregators = self._privacy().aggregators(first, width)
        totals = np.empty((first.n_variants, width))
        lock = threading.Lock()
        abort = threading.Event()
        done: dict[str, TaskDone] = {}

        def consume(client: SiteClient) -> None:
            task = tasks[client.name]
            for event in audited_events(self.audit, client.name, task, client.run_task(task)):
                if abort.is_set():
                    return
                if isinstance(event, ResultBlock):
                    bounds = task.block_bounds(event.block) if 0 <= event.block < task.n_blocks else (-1, -1)
                    if (event.first_variant, event.first_variant + event.n_variants) != bounds or event.width != width:
                        raise SiteFailure(client.name, f"sent block {event.block} with an unexpected shape",
                                          kind="ProtocolError")
                    with lock:
                        aggregator = aggregators[event.block]
                        aggregator.add(client.name, event.encoding, event.payload)
                        finished = aggregator.complete  # true for exactly one thread per block
                        if finished:
                            del aggregators[event.block]
                    if finished:  # outside the lock: under "he" this asks the key holder
                        totals[bounds[0]:bounds[1]] = aggregator.total().reshape(-1, width)
                    on_block()
                elif isinstance(event, TaskDone):
                    done[client.name] = event
            if client.name not in done:
                raise SiteFailure(client.name, "ended the task stream without a summary", kind="ProtocolError")

        futures = [self.pool.submit(consume, client) for client in self.clients]
        try:
            for future in futures:
                future.result()
        except Exception:
            abort.set()
            raise
        if aggregators:
            raise StudyFailed(f"blocks {sorted(aggregators)[:5]} were not received from every site")
        self.last_done = done
        return totals


def _threshold(configured: int, n_sites: int) -> int:
    """The round's Shamir threshold: the study's (0: a majority), never above the sites left nor below a majority."""
    return max(min(configured, n_sites), n_sites // 2 + 1) if configured else 0


def require_enough(config: StudyConfig, n_live: int, failures: Mapping[str, SiteFailure], stage: str) -> None:
    """Fail the study if a site failure is not tolerated or too few sites are left."""
    reasons = "; ".join(str(f) for f in failures.values())
    if failures and not config.allow_dropout:
        raise StudyFailed(f"while {stage}: {reasons}", failures=tuple(failures.values()))
    if n_live < config.min_sites:
        raise StudyFailed(f"while {stage}: only {n_live} site(s) left, the study needs {config.min_sites}: "
                          f"{reasons}", failures=tuple(failures.values()))


def describe_sites(clients: Sequence[SiteClient], config: StudyConfig, pool: ThreadPoolExecutor,
                   cohort: CohortRequest) -> tuple[dict, dict[str, SiteFailure]]:
    """Health-check and describe every site concurrently: ({name: (description, manifest)}, failures)."""

    def one(client: SiteClient):
        client.wait_healthy()
        description, manifest = client.describe(config.study_id, cohort)
        if description.site_name != client.name:
            raise SiteFailure(client.name, f"answers as {description.site_name!r}: check the address in the study")
        if config.privacy not in description.privacy_modes:
            raise SiteFailure(client.name, f"does not accept privacy mode {config.privacy!r} "
                                           f"(accepts {list(description.privacy_modes)})", kind="PrivacyError")
        return description, manifest

    futures = {client.name: pool.submit(one, client) for client in clients}
    described, failed = {}, {}
    for name, future in futures.items():
        try:
            described[name] = future.result()
        except SiteFailure as failure:
            failed[name] = failure
    return described, failed
