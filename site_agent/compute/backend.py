"""Compute backends: where a site's blocks are computed, results returned in block order.

Both backends run the same :func:`site_agent.compute.jobs.block_values` on the same genotypes, so
their outputs are identical bit for bit; they differ in where and how many blocks run at once.

* :class:`InlineBackend`: in the agent process, a pool of threads. Reads are serialised (genotype
  readers keep state and hold the GIL); the kernels (numpy, BLAS) run concurrently.
* :class:`site_agent.compute.dask_backend.DaskBackend`: tasks on a Dask cluster whose workers read
  the genotypes themselves.

Either keeps at most ``2 x parallel`` blocks in flight: while the agent noises, protects and sends
block ``b``, blocks ``b + 1 ..`` are being read and computed, and memory stays bounded by the block
size times the blocks in flight, whatever the number of variants. Analyses whose blocks share state
(``sequential_blocks``: LD's carried window, PCA's two passes) run one block at a time in order.
"""

from __future__ import annotations

import resource
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

import numpy as np

from engine.stats.registry import get_statistic
from site_agent.compute.jobs import BlockJob, TaskContext, block_values

F = TypeVar("F")  # a future: concurrent.futures' or distributed's

#: Reads one block: int8 genotypes ``(n, m)`` of the given site variant rows for the task's samples.
Reader = Callable[[np.ndarray], np.ndarray]


class ComputeBackend(Protocol):
    description: str

    def run(self, context: TaskContext, jobs: Iterable[BlockJob], read: Reader) -> Iterator[np.ndarray]:
        """The values ``(m, width)`` of each job, in the order of ``jobs``."""

    def worker_peak_rss_mib(self) -> float:
        """The largest peak RSS of the processes that computed blocks, MiB (the agent's own when inline)."""

    def close(self) -> None:
        """Stop what the backend started (a local cluster); a backend is not used after ``close``."""


def in_order(submit: Callable[[BlockJob], F], jobs: Iterable[BlockJob], window: int,
             result: Callable[[F], np.ndarray], cancel: Callable[[F], object]) -> Iterator[np.ndarray]:
    """Submit ``jobs`` keeping at most ``window`` in flight and yield their results in order; whatever is
    still pending when the consumer stops (or a block fails) is cancelled."""
    pending: deque[F] = deque()
    try:
        for job in jobs:
            pending.append(submit(job))
            if len(pending) >= window:
                yield result(pending.popleft())
        while pending:
            yield result(pending.popleft())
    finally:
        for future in pending:
            cancel(future)


class InlineBackend:
    """Blocks computed in the agent process by ``threads`` threads (1: the calling thread, in order)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self.description = f"inline, {self.threads} thread{'s' if self.threads > 1 else ''}"
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="site-block") if self.threads > 1 else None
        self._read_lock = threading.Lock()

    def run(self, context: TaskContext, jobs: Iterable[BlockJob], read: Reader) -> Iterator[np.ndarray]:
        if self._pool is None or is_sequential(context):
            yield from one_by_one(context, jobs, read)
            return

        def compute(job: BlockJob) -> np.ndarray:
            with self._read_lock:
                genotypes = read(job.variant_index)
            return block_values(context, job, genotypes)

        pool = self._pool
        yield from in_order(lambda job: pool.submit(compute, job), jobs, 2 * self.threads,
                            lambda future: future.result(), lambda future: future.cancel())

    def worker_peak_rss_mib(self) -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def is_sequential(context: TaskContext) -> bool:
    """True for analyses whose blocks share state (``sequential_blocks``): computed in order, in the agent."""
    return bool(getattr(get_statistic(context.analysis), "sequential_blocks", False))


def one_by_one(context: TaskContext, jobs: Iterable[BlockJob], read: Reader) -> Iterator[np.ndarray]:
    """The jobs computed in order in the calling thread, reading with ``read``."""
    for job in jobs:
        yield block_values(context, job, read(job.variant_index))
