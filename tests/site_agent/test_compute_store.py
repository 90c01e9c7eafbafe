"""The spill store: the same genotypes as the file, read from disk once, shared by processes, bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.io.plink import BedFile
from engine.simulate import SimulationSpec, simulate_study
from site_agent.compute.store import prepare_store, read_through, source_identity, store_spec
from site_agent.data import GenotypeCache

ROOT = Path(__file__).resolve().parents[2]


class CountingSource:
    """A genotype source that counts the variants read from it."""

    def __init__(self, bed: BedFile) -> None:
        self.bed, self.n_variants, self.variants_read = bed, bed.n_variants, 0

    def read_block(self, variant_index: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
        self.variants_read += len(variant_index)
        return self.bed.read_block(variant_index, sample_index)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> BedFile:
    study = simulate_study(SimulationSpec(site_sizes=(300,), n_variants=500, seed=11),
                           tmp_path_factory.mktemp("store"))
    return BedFile(study.site_bfiles[0])


def test_store_returns_the_files_genotypes_and_reads_each_variant_once(bed: BedFile, tmp_path: Path) -> None:
    samples = np.arange(5, 290, 3)
    spec = store_spec(tmp_path, source_identity(bed.bed_path), samples, bed.n_variants)
    prepare_store(spec)
    source = CountingSource(bed)
    for start in range(0, 500, 128):  # round 1: contiguous blocks
        block = np.arange(start, min(start + 128, 500))
        got = read_through(spec, source, block, samples)
        np.testing.assert_array_equal(got, bed.read_block(block, samples))
        assert got.flags.f_contiguous
    assert source.variants_read == 500
    # later rounds: subsets, out of order, repeated, and a mix with unread variants never happens here
    for subset in (np.array([2, 7, 130, 131, 499]), np.array([400, 10, 11, 12, 3]), np.array([9, 9, 8]),
                   np.arange(250, 260)[::-1], np.array([], dtype=np.int64)):
        np.testing.assert_array_equal(read_through(spec, source, subset, samples), bed.read_block(subset, samples))
    assert source.variants_read == 500, "stored variants are never read from the genotype file again"
    assert spec.path.stat().st_size == len(samples) * 500


def test_store_mixes_stored_and_unread_variants(bed: BedFile, tmp_path: Path) -> None:
    samples = np.arange(300)
    spec = store_spec(tmp_path, source_identity(bed.bed_path), samples, bed.n_variants)
    prepare_store(spec)
    source = CountingSource(bed)
    read_through(spec, source, np.arange(100, 200), samples)
    mixed = np.array([50, 150, 151, 300, 152, 99, 100])
    np.testing.assert_array_equal(read_through(spec, source, mixed, samples), bed.read_block(mixed, samples))
    assert source.variants_read == 100 + 3, "only the three unread variants come from the genotype file"


def test_another_cohort_or_a_changed_file_gets_another_store(bed: BedFile, tmp_path: Path) -> None:
    identity = source_identity(bed.bed_path)
    first = store_spec(tmp_path, identity, np.arange(100), bed.n_variants)
    prepare_store(first)
    read_through(first, CountingSource(bed), np.arange(10), np.arange(100))
    other = store_spec(tmp_path, identity, np.arange(1, 101), bed.n_variants)
    changed = store_spec(tmp_path, identity.replace(str(bed.bed_path.stat().st_size), "1"), np.arange(100),
                         bed.n_variants)
    assert len({first.path, other.path, changed.path}) == 3
    prepare_store(other)
    assert not first.path.exists() and not first.flags_path.exists(), "a site keeps one cohort's store at a time"
    source = CountingSource(bed)
    np.testing.assert_array_equal(read_through(other, source, np.arange(10), np.arange(1, 101)),
                                  bed.read_block(np.arange(10), np.arange(1, 101)))
    assert source.variants_read == 10


def test_a_second_process_reads_what_the_first_stored(bed: BedFile, tmp_path: Path) -> None:
    """Dask workers on one machine share the agent's store: a variant stored by one is read by the others."""
    samples = np.arange(0, 300, 2)
    spec = store_spec(tmp_path, source_identity(bed.bed_path), samples, bed.n_variants)
    prepare_store(spec)
    read_through(spec, CountingSource(bed), np.arange(200), samples)
    script = f"""
import numpy as np
from pathlib import Path
from site_agent.compute.store import StoreSpec, read_through
class Refuse:
    def read_block(self, v, s):
        raise AssertionError("read from the genotype file")
spec = StoreSpec(Path({str(spec.path)!r}), {len(samples)}, {bed.n_variants})
got = read_through(spec, Refuse(), np.arange(40, 160), np.arange(0, 300, 2))
np.save({str(tmp_path / 'got.npy')!r}, got)
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), bed.read_block(np.arange(40, 160), samples))


def test_genotype_cache_spills_beyond_its_memory_instead_of_rereading(bed: BedFile, tmp_path: Path) -> None:
    samples = np.arange(100)
    spec = store_spec(tmp_path, source_identity(bed.bed_path), samples, bed.n_variants)
    prepare_store(spec)
    cache = GenotypeCache(max_bytes=100 * 200, spill=lambda rows: spec)  # memory for 200 of the 500 variants
    source = CountingSource(bed)
    every = np.arange(500)
    for _ in range(3):
        np.testing.assert_array_equal(cache.read(source, every, samples), bed.read_block(every, samples))
    assert source.variants_read == 500, "variants beyond the memory are read once, then come from the store"
    assert spec.path.stat().st_blocks * 512 < 100 * 500, "only the spilled variants take disk space"
