"""``[compute]`` backend keys of site.toml, validated into :class:`ComputeSettings`.

::

    [compute]
    workers = "auto"             # Dask worker processes on this machine: a number, "auto" (one per core
                                 # given to the agent), or 0 to compute in the agent process itself
    threads_per_worker = 1
    # scheduler = "tcp://10.1.2.3:8786"   # instead of workers: use the site's running Dask cluster
    # backend = "inline"         # the same as workers = 0
    spill_dir = "cache"          # site-local disk for the genotypes of multi-round analyses
    chunk_mib = 32               # int8 genotypes computed at once per piece of a block

Without ``workers``, ``scheduler`` and ``backend`` the agent computes in its own process
(``backend = "inline"``) with ``threads`` threads; ``fedgwas-site init`` writes ``workers = "auto"``.
Errors name the key.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

BACKENDS = ("inline", "dask")
KNOWN_KEYS = frozenset({"threads", "genotype_cache_mib", "backend", "workers", "threads_per_worker", "scheduler",
                        "spill_dir", "chunk_mib"})
DEFAULT_CHUNK_MIB = 32
_SCHEDULER = re.compile(r"^tcp://[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ComputeSettings:
    """Where a site's blocks are computed.

    ``backend`` "inline": in the agent process, ``threads`` blocks at a time (None: every core);
    "dask": on a Dask cluster, either a local one the agent starts (``workers`` processes of
    ``threads_per_worker`` threads) or the one at ``scheduler``. ``spill_dir``: the spill store's
    directory (site_agent/compute/store.py).
    """

    backend: str = "inline"
    workers: int = 0
    threads_per_worker: int = 1
    scheduler: str | None = None
    threads: int | None = None
    spill_dir: Path | None = None
    chunk_mib: int = DEFAULT_CHUNK_MIB

    @property
    def chunk_bytes(self) -> int:
        """int8 genotype bytes computed at once per piece (site_agent/compute/pieces.py)."""
        return self.chunk_mib << 20

    @property
    def parallel_blocks(self) -> int:
        """Blocks computed at once (the bound on blocks in flight is twice this)."""
        if self.backend == "inline":
            return self.threads or available_cores()
        if self.scheduler is not None:
            return 2 * available_cores()  # unknown cluster size: enough to keep a few workers busy
        return self.workers * self.threads_per_worker

    def describe(self) -> str:
        if self.backend == "inline":
            return f"inline ({self.parallel_blocks} threads in the agent process)"
        if self.scheduler is not None:
            return f"dask cluster at {self.scheduler}"
        return f"local dask cluster ({self.workers} workers x {self.threads_per_worker} threads)"


def check_scheduler_address(value: str, where: str) -> str:
    """``value`` if it is a Dask scheduler address ``tcp://host:port``; a ConfigError naming ``where`` otherwise."""
    if not isinstance(value, str) or not _SCHEDULER.match(value):
        raise ConfigError(f"{where} must be a Dask scheduler address \"tcp://host:port\", got {value!r}")
    return value


def _where(path: Path, key: str) -> str:
    return f"{str(path)!r}: [compute] {key}"


def compute_from_toml(compute: dict[str, Any], path: Path, threads: int | None, spill_dir: Path) -> ComputeSettings:
    """Validate the backend keys of ``[compute]`` (``threads`` is validated by the caller)."""
    unknown = sorted(set(compute) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{_where(path, unknown[0])}: unknown key; [compute] takes {sorted(KNOWN_KEYS)}")
    backend = compute.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"{_where(path, 'backend')} must be one of {list(BACKENDS)}, got {backend!r}")
    workers_raw = compute.get("workers")
    if workers_raw is None:
        workers = None
    elif workers_raw == "auto":
        workers = available_cores()
    elif isinstance(workers_raw, int) and not isinstance(workers_raw, bool) and workers_raw >= 0:
        workers = workers_raw
    else:
        raise ConfigError(f"{_where(path, 'workers')} must be an integer >= 0 or \"auto\", got {workers_raw!r}")
    scheduler = compute.get("scheduler")
    if scheduler is not None:
        check_scheduler_address(scheduler, _where(path, "scheduler"))
    tpw = compute.get("threads_per_worker", 1)
    if not isinstance(tpw, int) or isinstance(tpw, bool) or tpw < 1:
        raise ConfigError(f"{_where(path, 'threads_per_worker')} must be an integer >= 1, got {tpw!r}")
    if scheduler is not None and workers_raw is not None:
        raise ConfigError(f"{_where(path, 'scheduler')} and [compute] workers exclude each other: workers start "
                          f"a local cluster, scheduler uses a running one")
    if scheduler is not None and "threads_per_worker" in compute:
        raise ConfigError(f"{_where(path, 'threads_per_worker')} applies to a local cluster; the cluster at "
                          f"{scheduler} sizes its own workers")
    spill = compute.get("spill_dir")
    if spill is not None and not isinstance(spill, str):
        raise ConfigError(f"{_where(path, 'spill_dir')} must be a path (string), got {spill!r}")
    spill_path = spill_dir if spill is None else (path.parent / spill).resolve()
    chunk = compute.get("chunk_mib", DEFAULT_CHUNK_MIB)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or not 1 <= chunk <= 4096:
        raise ConfigError(f"{_where(path, 'chunk_mib')} must be an integer from 1 to 4096 (MiB), got {chunk!r}")
    dask_wanted = scheduler is not None or (workers or 0) > 0
    if backend == "inline" and dask_wanted:
        raise ConfigError(f"{_where(path, 'backend')} = \"inline\" cannot be combined with "
                          f"{'scheduler' if scheduler else 'workers = ' + repr(workers_raw)}")
    if backend == "dask" and not dask_wanted:
        raise ConfigError(f"{_where(path, 'backend')} = \"dask\" needs [compute] workers >= 1 (a local cluster) "
                          f"or [compute] scheduler (a running one)")
    if not dask_wanted:
        if "threads_per_worker" in compute:
            raise ConfigError(f"{_where(path, 'threads_per_worker')} needs [compute] workers >= 1")
        return ComputeSettings(threads=threads, spill_dir=spill_path, chunk_mib=chunk)
    return ComputeSettings(backend="dask", workers=workers or 0, threads_per_worker=tpw, scheduler=scheduler,
                           threads=threads, spill_dir=spill_path, chunk_mib=chunk)


def render_compute(threads: int | None, workers: int | str | None, scheduler: str | None) -> list[str]:
    """The ``[compute]`` lines ``fedgwas-site init`` writes (none when nothing is set)."""
    lines = [f"threads = {threads}"] if threads is not None else []
    if workers is not None:
        lines.append(f"workers = {json.dumps(workers)}")  # a number, or "auto"
    if scheduler is not None:
        lines.append(f"scheduler = {json.dumps(scheduler)}")
    return ["", "[compute]", *lines] if lines else []
