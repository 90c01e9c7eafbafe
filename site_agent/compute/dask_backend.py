"""The Dask backend: a site's blocks as tasks on a ``dask.distributed`` cluster.

The agent starts a local cluster (``[compute] workers`` processes on this machine, on loopback, its
connections mutual TLS under a temporary CA that only the agent process holds) or connects to the site's running cluster (``[compute] scheduler``). For each task it
broadcasts the :class:`~site_agent.compute.jobs.TaskContext` (sample rows, prepared state: sizes in
samples x covariates, no genotypes) to the workers once, then submits one small task per block: the
block's variant rows and per-variant inputs. Each worker opens the site's genotype files itself and
reads its blocks by index (:func:`~site_agent.compute.jobs.run_block`), so genotypes never pass
through the scheduler or the agent; what comes back is each block's sums, ``(m, width)`` float64. The
context does hold the cohort's phenotype and covariates (individual-level data), so the cluster must be
one that only the site controls.
Noise and masks are added afterwards by the agent: neither the budget ledger nor the site's
secure-aggregation key is ever sent to the cluster.

This is the only module that imports ``distributed``.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterable, Iterator

import numpy as np
from distributed import Client, Future, LocalCluster
from distributed.security import Security

from engine.errors import ConfigError
from site_agent.compute.backend import Reader, in_order, is_sequential, one_by_one
from site_agent.compute.jobs import BlockJob, BlockOutput, TaskContext, run_block
from site_agent.compute.settings import ComputeSettings

log = logging.getLogger("site_agent")

CONNECT_TIMEOUT_SECONDS = 30


class DaskBackend:
    """Blocks on a Dask cluster (see the module docstring)."""

    def __init__(self, settings: ComputeSettings) -> None:
        self.settings = settings
        self.description = settings.describe()
        self._cluster = None
        if settings.scheduler is not None:
            try:
                self._client = Client(settings.scheduler, timeout=CONNECT_TIMEOUT_SECONDS, set_as_default=False)
            except OSError as exc:
                raise ConfigError(f"[compute] scheduler {settings.scheduler!r}: cannot connect: {exc}") from None
        else:
            # Mutual TLS with a throwaway CA held only by this process: the cluster carries the cohort's
            # phenotype and covariates, and other users of the machine must not be able to join it.
            security = Security.temporary()
            self._cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                                         processes=True, host="127.0.0.1", scheduler_port=0, dashboard_address=":0",
                                         silence_logs=logging.WARNING, security=security, protocol="tls://")
            self._client = Client(self._cluster, set_as_default=False, security=security)
        self._peak_kib = 0
        self._lock = threading.Lock()
        log.info("compute backend: %s", self.description)

    @property
    def scheduler_address(self) -> str:
        return str(self._client.scheduler.address)

    def run(self, context: TaskContext, jobs: Iterable[BlockJob], read: Reader) -> Iterator[np.ndarray]:
        if is_sequential(context):  # LD's carried window, PCA's passes: one block after the other, here
            yield from one_by_one(context, jobs, read)
            return
        shared = self._client.scatter(context, broadcast=True, hash=False)
        window = 2 * max(1, self._parallel())
        client = self._client

        def result(future: Future) -> np.ndarray:
            output: BlockOutput = future.result()
            with self._lock:
                self._peak_kib = max(self._peak_kib, output.peak_rss_kib)
            return output.values

        try:
            yield from in_order(lambda job: client.submit(run_block, shared, job, pure=False), jobs, window,
                                result, lambda future: future.cancel())
        finally:
            shared.release()

    def _parallel(self) -> int:
        if self.settings.scheduler is None:
            return self.settings.parallel_blocks
        threads = sum(self._client.nthreads().values())  # the running cluster's size, asked each task
        return threads or self.settings.parallel_blocks

    def worker_peak_rss_mib(self) -> float:
        with self._lock:
            return self._peak_kib / 1024

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
