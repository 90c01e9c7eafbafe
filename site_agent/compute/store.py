"""The spill store: one cohort's genotypes on site-local disk, for analyses that read them several times.

Logistic regression's Newton rounds and PCA's passes read the same genotypes of the same samples
again and again. Decoding them from the .bed/.pgen each time costs more than the kernels, and keeping
them in memory costs ``samples x variants`` bytes. The store keeps them instead in a site-local int8
file, variant-major (variant ``j`` is bytes ``[j n, (j + 1) n)``: a block of consecutive variants is
one contiguous read that lands directly in a Fortran-ordered ``(n, m)`` array), with a companion file
of one byte per variant saying which variants are already there.

Reads and writes use positioned I/O (``os.preadv``/``os.pwrite``) rather than a long-lived memory
map: the kernel's page cache keeps the file in memory while memory is free and drops it when it is
not, and none of it counts towards the process's resident memory, so a process's peak RSS stays set
by its block size. Several processes (the agent and its Dask workers on the same machine) may share a
store: each writes whole variants, then marks them; two writers of one variant write the same bytes.

The file is keyed by the genotype file's identity (path, size, modification time) and the cohort's
sample rows, so a changed file or another sample set never reads stale genotypes. Files are created
sparse (a variant takes disk space once written); :func:`prepare_store` removes a directory's other
stores, so a site keeps one cohort on disk at a time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.errors import ConfigError

_PREFIX, _DATA, _FLAGS = "genotypes-", ".int8", ".loaded"


class BlockReader(Protocol):
    """What the store reads missing variants from (a genotype source: ``read_block``)."""

    def read_block(self, variant_index: np.ndarray, sample_index: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class StoreSpec:
    """Where one cohort's store lives and its shape: ``n_samples`` bytes per variant, ``n_variants`` variants."""

    path: Path  # the int8 data file; the flags file is path.with_suffix(".loaded")
    n_samples: int
    n_variants: int

    @property
    def flags_path(self) -> Path:
        return self.path.with_suffix(_FLAGS)


def source_identity(path: Path) -> str:
    """The identity of a genotype file for store keys: resolved path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def store_spec(directory: Path, identity: str, sample_index: np.ndarray, n_variants: int) -> StoreSpec:
    """The store of the samples ``sample_index`` ``(n,)`` of the genotype file ``identity`` (see
    :func:`source_identity`) in ``directory``."""
    digest = hashlib.blake2b(identity.encode(), digest_size=16)
    digest.update(np.ascontiguousarray(sample_index, dtype=np.int64).tobytes())
    return StoreSpec(directory / f"{_PREFIX}{digest.hexdigest()}{_DATA}", len(sample_index), n_variants)


def prepare_store(spec: StoreSpec) -> None:
    """Create ``spec``'s files (sparse) if missing and remove the directory's other stores."""
    directory = spec.path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"[compute] spill_dir {str(directory)!r} cannot be created: {exc.strerror}") from None
    for old in directory.glob(f"{_PREFIX}*"):
        if old.stem != spec.path.stem:
            old.unlink(missing_ok=True)
    _open(spec.path, spec.n_samples * spec.n_variants).close()
    _open(spec.flags_path, spec.n_variants).close()


class _File:
    """An open store file (a file descriptor, closed with :meth:`close`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)


def _open(path: Path, size: int) -> _File:
    """``path`` opened read-write, created and extended (sparse) to ``size`` bytes if shorter."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"spill store {str(path)!r} cannot be opened: {exc.strerror}") from None
    if os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)
    return _File(fd)


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` positions in ``index`` of its runs of consecutive values."""
    return _joint_runs(np.arange(len(index)), index)


def _joint_runs(positions: np.ndarray, variants: np.ndarray) -> list[tuple[int, int]]:
    """Runs over which both output ``positions`` and stored ``variants`` go up by one: each is one read."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero((np.diff(positions) != 1) | (np.diff(variants) != 1)) + 1
    bounds = np.r_[0, breaks, len(positions)]
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _pread_exact(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            raise OSError(f"spill store truncated at byte {offset + done}")
        done += got


def _pwrite_exact(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def read_through(spec: StoreSpec, source: BlockReader, variant_index: np.ndarray,
                 sample_index: np.ndarray) -> np.ndarray:
    """int8 genotypes ``(n, m)`` (Fortran order) of ``variant_index`` for the store's samples
    ``sample_index``: variants already stored come from the store, the others from ``source``
    (and are stored for the next read)."""
    n = spec.n_samples
    if len(sample_index) != n:
        raise ValueError(f"store holds {n} samples, asked for {len(sample_index)}")
    variant_index = np.asarray(variant_index, dtype=np.int64)
    out = np.empty((n, len(variant_index)), dtype=np.int8, order="F")
    if len(variant_index) == 0:
        return out
    data, flags = _open(spec.path, n * spec.n_variants), _open(spec.flags_path, spec.n_variants)
    try:
        low, high = int(variant_index.min()), int(variant_index.max()) + 1
        span = bytearray(high - low)
        _pread_exact(flags.fd, memoryview(span), low)
        loaded = np.frombuffer(span, dtype=np.uint8)[variant_index - low] == 1
        absent = np.flatnonzero(~loaded)
        if len(absent):
            read = np.asfortranarray(source.read_block(variant_index[absent], sample_index))
            out[:, absent] = read
            raw = read.reshape(-1, order="F").data.cast("B")
            for start, stop in _runs(variant_index[absent]):
                first = int(variant_index[absent[start]])
                _pwrite_exact(data.fd, raw[start * n: stop * n], first * n)
            for start, stop in _runs(variant_index[absent]):  # after the data: a reader never sees a mark first
                first = int(variant_index[absent[start]])
                _pwrite_exact(flags.fd, memoryview(b"\x01" * (stop - start)), first)
        present = np.flatnonzero(loaded)
        target = out.reshape(-1, order="F").data.cast("B")
        for start, stop in _joint_runs(present, variant_index[present]):
            j0, v0 = int(present[start]), int(variant_index[present[start]])
            _pread_exact(data.fd, target[j0 * n: (j0 + stop - start) * n], v0 * n)
    finally:
        data.close()
        flags.close()
    return out
