"""The unit of site compute: one block of variants of one task, computed wherever a backend runs it.

A :class:`TaskContext` is what every block of a task shares (where the genotypes are, the cohort's
sample rows, the analysis and its prepared state); a :class:`BlockJob` is one block (its variant rows,
orientation and per-variant inputs). :func:`block_values` is the computation itself: the registered
analysis's ``block`` and the site's rare-variant suppression, on the block's int8 genotypes. Both
backends call it, the in-process one on genotypes read by the agent, a Dask worker on genotypes it
reads itself (:func:`run_block`) from the site's files by block index, so genotypes never travel
through the scheduler. Noise and protection are not here: they stay in the agent process, which
holds the budget ledger and the secure-aggregation key.
"""

from __future__ import annotations

import resource
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from engine.stats.registry import get_statistic
from engine.io.genotype_sources import GenotypeSource, open_genotypes
from engine.io.hard_calls import HardCallRules
from engine.cohort.sex_chromosomes import haploid_males_on_x, males_only_on_y
from site_agent.cohort_guard import suppress_rare
from site_agent.compute.store import StoreSpec, read_through


@dataclass(frozen=True)
class SourceSpec:
    """How to open the site's genotype files (as the agent does, :func:`engine.genotype_sources.open_genotypes`)."""

    genotype_format: str
    path: Path
    cache_dir: Path  # the VCF import cache
    num_threads: int | None = None
    sample: Path | None = None  # a BGEN's .sample file
    vcf_dosage: str | None = None  # "DS"/"GP": a VCF's dosages
    hard_calls: HardCallRules = HardCallRules()  # a dosage import's hard-call rules


@dataclass(frozen=True)
class TaskContext:
    """What every block of one task shares.

    ``sample_index`` ``(n,)``: the cohort's rows of the genotype file; ``state``: the analysis's
    prepared state (``analysis.prepare``); ``store``: the spill store to read through (multi-round
    tasks), or None to read the genotype file directly.
    """

    source: SourceSpec
    sample_index: np.ndarray
    analysis: str
    state: Any
    min_allele_count: int
    store: StoreSpec | None = None
    #: For statistics with ``males_only_on_y``: the cohort's males ``(n,)`` and the site rows on chrY
    #: ``(M,)``; non-males' chrY calls are set missing before the block (PLINK 2's --glm).
    males: np.ndarray | None = None
    on_y_rows: np.ndarray | None = None
    #: ``--xchr-model 1`` (association statistics): the site rows on non-PAR chrX ``(M,)``, whose males'
    #: dosages are halved before the block (with ``males``); None: males coded 0/2 there.
    haploid_x_rows: np.ndarray | None = None
    #: Read float32 dosages (NaN missing) instead of int8 hard calls (statistics with ``dosage`` at a
    #: site whose files have dosages); dosages never go through the int8 spill store.
    dosage: bool = False


@dataclass(frozen=True)
class BlockJob:
    """One block of a task: ``variant_index`` ``(m,)`` site rows, ``flip`` ``(m,)``, and the analysis's
    inputs with the per-variant ones sliced to the block."""

    block: int
    variant_index: np.ndarray
    flip: np.ndarray
    inputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class BlockOutput:
    """A worker's result: the block's values ``(m, width)`` and the worker's peak RSS so far (KiB)."""

    values: np.ndarray
    peak_rss_kib: int


def block_values(context: TaskContext, job: BlockJob, genotypes: np.ndarray) -> np.ndarray:
    """The analysis's values ``(m, width)`` for the block's int8 genotypes ``(n, m)``, rare variants
    suppressed (``min_allele_count`` 0: none, as in every DP release)."""
    analysis = get_statistic(context.analysis)
    if context.males is not None and context.on_y_rows is not None:
        genotypes = males_only_on_y(genotypes, context.on_y_rows[job.variant_index], context.males)
    coded, flip = genotypes, job.flip
    if context.males is not None and context.haploid_x_rows is not None:
        coded, flip = haploid_males_on_x(genotypes, flip, context.haploid_x_rows[job.variant_index], context.males)
    values = analysis.block(context.state, coded, flip, job.inputs)
    return suppress_rare(values, genotypes, context.min_allele_count)


class _Sources:
    """Genotype sources opened once per worker process (and a lock each: readers such as pgenlib's
    keep a current sample subset, so reads of one source are serialised)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[SourceSpec, tuple[GenotypeSource, threading.Lock]] = {}

    def get(self, spec: SourceSpec) -> tuple[GenotypeSource, threading.Lock]:
        with self._lock:
            if spec not in self._open:
                source = open_genotypes(spec.genotype_format, spec.path, spec.cache_dir, num_threads=spec.num_threads,
                                        sample=spec.sample, vcf_dosage=spec.vcf_dosage,
                                        hard_calls=spec.hard_calls)
                self._open[spec] = (source, threading.Lock())
            return self._open[spec]


_SOURCES = _Sources()


class _LockedSource:
    """A source whose reads hold its lock."""

    def __init__(self, source: GenotypeSource, lock: threading.Lock) -> None:
        self.source, self.lock = source, lock

    def read_block(self, variant_index: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.source.read_block(variant_index, sample_index)

    def read_dosages(self, variant_index: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.source.read_dosages(variant_index, sample_index)  # type: ignore[attr-defined]


def read_genotypes(context: TaskContext, variant_index: np.ndarray) -> np.ndarray:
    """A worker's read of one block: int8 ``(n, m)`` from the spill store or the genotype file (float32
    dosages with ``context.dosage``)."""
    source = _LockedSource(*_SOURCES.get(context.source))
    if context.dosage:
        return source.read_dosages(variant_index, context.sample_index)
    if context.store is not None:
        return read_through(context.store, source, variant_index, context.sample_index)
    return source.read_block(variant_index, context.sample_index)


def run_block(context: TaskContext, job: BlockJob) -> BlockOutput:
    """What a Dask worker runs: read the block's genotypes itself, then :func:`block_values`."""
    values = block_values(context, job, read_genotypes(context, job.variant_index))
    return BlockOutput(values, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
