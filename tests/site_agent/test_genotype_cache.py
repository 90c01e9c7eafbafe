"""The site's genotype cache: same genotypes as reading the file, disk read once, memory bounded."""

from __future__ import annotations

import numpy as np
import pytest

from engine.io.plink import BedFile
from engine.simulate import SimulationSpec, simulate_study
from site_agent.data import GenotypeCache


class CountingSource:
    """A genotype source that counts the variants read from disk."""

    def __init__(self, bed: BedFile) -> None:
        self.bed = bed
        self.n_variants = bed.n_variants
        self.variants_read = 0

    def read_block(self, variant_index: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
        self.variants_read += len(variant_index)
        return self.bed.read_block(variant_index, sample_index)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> BedFile:
    study = simulate_study(SimulationSpec(site_sizes=(300,), n_variants=500, seed=5),
                           tmp_path_factory.mktemp("cache"))
    return BedFile(study.site_bfiles[0])


def test_rounds_read_the_disk_once_and_return_the_same_genotypes(bed: BedFile) -> None:
    source = CountingSource(bed)
    cache = GenotypeCache(max_bytes=1 << 20)
    samples = np.arange(3, 290, 2)
    blocks = [np.arange(start, min(start + 128, 500)) for start in range(0, 500, 128)]
    for block in blocks:  # round 1: contiguous blocks, read from disk
        np.testing.assert_array_equal(cache.read(source, block, samples), bed.read_block(block, samples))
    assert source.variants_read == 500
    subset = np.array([2, 7, 130, 131, 499])  # round 2: the variants still iterating
    got = cache.read(source, subset, samples)
    np.testing.assert_array_equal(got, bed.read_block(subset, samples))
    view = cache.read(source, blocks[1], samples)
    assert source.variants_read == 500, "later rounds come from memory"
    assert not got.flags.writeable and not view.flags.writeable, "callers cannot alter the cache"
    assert got.flags.f_contiguous and view.flags.f_contiguous


def test_capacity_bounds_memory_and_other_samples_replace_the_cohort(bed: BedFile) -> None:
    source = CountingSource(bed)
    samples = np.arange(100)
    cache = GenotypeCache(max_bytes=100 * 200)  # room for 200 of the 500 variants
    every = np.arange(500)
    np.testing.assert_array_equal(cache.read(source, every, samples), bed.read_block(every, samples))
    np.testing.assert_array_equal(cache.read(source, every, samples), bed.read_block(every, samples))
    assert source.variants_read == 500 + 300, "variants beyond the capacity are read each time"
    others = np.arange(100, 200)
    np.testing.assert_array_equal(cache.read(source, every[:10], others), bed.read_block(every[:10], others))
    assert source.variants_read == 810, "another cohort starts a new cache"
    disabled = GenotypeCache(max_bytes=0)
    disabled.read(source, every[:10], samples)
    disabled.read(source, every[:10], samples)
    assert source.variants_read == 830
