"""Blocks cut into pieces for computing: the whole block's values, up to rounding (BLAS groups columns
differently); logistic regression's Newton round is exact."""

from __future__ import annotations

import numpy as np
import pytest

from engine.stats.registry import get_statistic
from engine.cohort.cohort import build_cohort
from engine.io.plink import BedFile
from engine.simulate import SimulationSpec, simulate_study
from engine.io.tables import read_sample_table
from site_agent.compute.jobs import BlockJob, SourceSpec, TaskContext, block_values
from site_agent.compute.pieces import join_pieces, piece_bounds

COVARIATES = ("SEX_MALE", "AGE", "ANC1")


def test_piece_bounds_cover_the_block_in_order() -> None:
    assert piece_bounds(0, 10, 100, 300) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert piece_bounds(5, 7, 100, 10 ** 9) == [(5, 7)]
    assert piece_bounds(0, 3, 10 ** 6, 10) == [(0, 1), (1, 2), (2, 3)], "at least one variant per piece"
    blocks = iter([np.zeros((2, 3)), np.ones((1, 3)), np.full((4, 3), 2.0)])
    joined = list(join_pieces(blocks, [2, 1]))
    assert [j.shape for j in joined] == [(3, 3), (4, 3)] and joined[0][2, 0] == 1.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    study = simulate_study(SimulationSpec(site_sizes=(400,), n_variants=600, seed=21),
                           tmp_path_factory.mktemp("pieces"))
    bed = BedFile(study.site_bfiles[0])
    return study, bed


@pytest.mark.parametrize("name, phenotype, coding", [("linear", "QT", "quantitative"),
                                                     ("qc", "BT", "case-control"),
                                                     ("logistic", "BT", "case-control"),
                                                     ("logistic_start", "BT", "case-control")])
def test_pieces_give_the_whole_blocks_values(site, name, phenotype, coding) -> None:
    study, bed = site
    cohort = build_cohort(bed.fam, read_sample_table(study.pheno_path), phenotype,
                          read_sample_table(study.covar_path), COVARIATES, coding)
    analysis = get_statistic(name)
    k = len(COVARIATES) + 1
    rng = np.random.default_rng(4)
    inputs = {"coef": np.c_[rng.normal(0, 0.1, (600, k)), rng.normal(0, 0.2, 600)]} if name == "logistic" else \
        {"null_coef": rng.normal(0, 0.1, k)} if name == "logistic_start" else {}
    state = analysis.prepare(cohort, inputs)
    context = TaskContext(SourceSpec("plink1", bed.bed_path, bed.bed_path.parent), cohort.sample_index, name, state, 0)
    rows = np.arange(600)
    flip = rng.random(600) < 0.3
    genotypes = bed.read_block(rows, cohort.sample_index)
    per_variant = {key: value for key, value in inputs.items() if analysis.inputs[key].per_variant}

    def job(a: int, b: int) -> BlockJob:
        return BlockJob(0, rows[a:b], flip[a:b], {**inputs, **{key: v[a:b] for key, v in per_variant.items()}})

    whole = block_values(context, job(0, 600), genotypes)
    pieces = [block_values(context, job(a, b), genotypes[:, a:b]) for a, b in piece_bounds(0, 600, 400, 400 * 77)]
    assert len(pieces) == 8
    joined = np.concatenate(pieces)
    assert np.array_equal(np.isnan(joined), np.isnan(whole))
    if name in ("logistic", "qc"):
        assert np.array_equal(joined, whole, equal_nan=True)
    else:  # a thin GEMM over fewer columns: the same sums in another order
        np.testing.assert_allclose(joined, whole, rtol=1e-10, atol=0)
