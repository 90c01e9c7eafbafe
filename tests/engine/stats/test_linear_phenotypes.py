"""The multi-phenotype, dosage-aware linear kernel against naive per-phenotype, per-variant sums."""

from __future__ import annotations

import numpy as np
import pytest

from engine.stats.linear.kernel import LinearLayout, block_statistics
from engine.stats.linear.phenotypes import group_phenotypes, phenotype_statistics


def _naive(genotypes: np.ndarray, design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per variant: X'X (upper triangle), X'y, y'y over samples with y and the genotype observed."""
    layout = LinearLayout(design.shape[1])
    rows, cols = layout.triu
    out = []
    for j in range(genotypes.shape[1]):
        g = genotypes[:, j].astype(np.float64)
        keep = np.isfinite(y) & (np.isfinite(g) if genotypes.dtype.kind == "f" else g >= 0)
        x = np.column_stack([design[keep], g[keep]])
        xtx = x.T @ x
        out.append(np.concatenate([xtx[rows, cols], x.T @ y[keep], [y[keep] @ y[keep]]]))
    return np.array(out)


def _compact_rows(full: np.ndarray, k: int, n_pheno: int) -> np.ndarray:
    """The ``linear_complete`` columns (N, C'g, g'g, g'y) of each phenotype, picked from the full layout."""
    layout = LinearLayout(k)
    columns = [layout.column(0, 0), *(layout.column(a, k) for a in range(k)), layout.column(k, k),
               layout.xty_slice.start + k]
    return full[:, np.concatenate([p * layout.width + np.array(columns) for p in range(n_pheno)])]


def _data(seed: int, dosage: bool):
    rng = np.random.default_rng(seed)
    n, m, k = 300, 40, 3
    design = np.column_stack([np.ones(n), rng.normal(size=(n, k - 1))])
    if dosage:
        genotypes = np.round(rng.uniform(0, 2, size=(n, m)) * 16384) / 16384
        genotypes[rng.random((n, m)) < 0.05] = np.nan
        genotypes = np.asfortranarray(genotypes.astype(np.float32))
    else:
        genotypes = rng.integers(0, 3, size=(n, m)).astype(np.int8)
        genotypes[rng.random((n, m)) < 0.05] = -127
        genotypes = np.asfortranarray(genotypes)
    y = rng.normal(size=(n, 5))
    y[rng.random(n) < 0.1, 1] = np.nan  # its own pattern
    y[rng.random(n) < 0.2, 2] = np.nan
    y[:, 3] = np.where(np.isnan(y[:, 2]), np.nan, y[:, 3])  # same pattern as phenotype 2: one group
    return genotypes, design, y


@pytest.mark.parametrize("dosage", [False, True])
def test_every_phenotype_equals_naive_sums(dosage: bool) -> None:
    genotypes, design, y = _data(3, dosage)
    groups = group_phenotypes(design, y)
    assert len(groups.complete) == 3 and groups.complete.sum() == 1  # complete; phenotype 1; phenotypes 2 and 3
    width = LinearLayout(design.shape[1]).width
    stats = phenotype_statistics(genotypes, groups)
    for p in range(y.shape[1]):
        np.testing.assert_allclose(stats[:, p * width:(p + 1) * width], _naive(genotypes, design, y[:, p]),
                                   rtol=1e-10, atol=1e-8)


def test_hard_calls_as_floats_equal_the_int8_kernel() -> None:
    genotypes, design, y = _data(4, dosage=False)
    floats = np.where(genotypes < 0, np.nan, genotypes).astype(np.float32)
    groups = group_phenotypes(design, y[:, :1])
    expected = block_statistics(genotypes, design, y[:, 0])
    np.testing.assert_allclose(phenotype_statistics(floats, groups), expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(phenotype_statistics(genotypes, groups), expected, rtol=1e-12, atol=1e-9)


def test_flip_counts_the_other_allele() -> None:
    genotypes, design, y = _data(5, dosage=True)
    flip = np.zeros(genotypes.shape[1], bool)
    flip[::3] = True
    other = np.where(flip[None, :], 2 - genotypes, genotypes).astype(np.float32)
    groups = group_phenotypes(design, y)
    np.testing.assert_allclose(phenotype_statistics(genotypes, groups, flip), phenotype_statistics(other, groups),
                               rtol=1e-10, atol=1e-7)


def test_a_dp_release_of_several_phenotypes_is_refused() -> None:
    """Even with a clipping bound declared under the joined name, a site never plans one release for
    several phenotypes (its noise would be calibrated for one)."""
    from engine.privacy.dp_release import DpRequest, SENSITIVITY
    from engine.errors import ProtocolError
    from engine.tasks import CohortRequest

    request = DpRequest(epsilon=1.0, delta=1e-6, bounds=(("A,B", -3.0, 3.0), ("A", -3.0, 3.0)))
    SENSITIVITY["linear"](CohortRequest("A"), request)
    with pytest.raises(ProtocolError, match="a DP release covers one phenotype"):
        SENSITIVITY["linear"](CohortRequest("A,B"), request)


def test_compact_layout_solves_as_the_full_statistics_on_complete_variants() -> None:
    """``linear_complete`` rows plus ``linear_totals`` flag the variants where some phenotype's sample misses
    the call, and elsewhere give the same fit as the full statistics (the covariate system solved once)."""
    from engine.stats.association import VariantTable
    from engine.stats.linear.compact import compact_statistics, incomplete_variants, totals_row
    from engine.stats.linear.solve import solve_linear, solve_linear_sums, sums_from_compact, sums_from_packed

    genotypes, design, y = _data(6, dosage=True)
    genotypes[:, ::2] = np.nan_to_num(genotypes[:, ::2], nan=1.0)  # even variants: no missing dosage
    genotypes[:, 4] = 1.0  # a constant one: CONST_OMITTED_ALLELE both ways
    flip = np.zeros(genotypes.shape[1], bool)
    flip[::3] = True
    groups = group_phenotypes(design, y)
    k, n_pheno = design.shape[1], y.shape[1]
    full = phenotype_statistics(genotypes, groups, flip)
    compact = compact_statistics(genotypes, groups, flip)
    np.testing.assert_allclose(compact, _compact_rows(full, k, n_pheno), rtol=1e-12, atol=1e-9)
    totals = totals_row(groups)
    incomplete = incomplete_variants(compact, totals, k, n_pheno)
    np.testing.assert_array_equal(incomplete, np.any(np.isnan(genotypes), axis=0))
    m = genotypes.shape[1]
    variants = VariantTable(chrom=np.array(["1"] * m, dtype=object), pos=np.arange(m), variant_id=np.array(["v"] * m, dtype=object),
                            effect_allele=np.array(["A"] * m, dtype=object), other_allele=np.array(["G"] * m, dtype=object))
    width, cw, tw = LinearLayout(k).width, k + 3, len(totals) // n_pheno
    done, rest = np.flatnonzero(~incomplete), np.flatnonzero(incomplete)
    for p in range(n_pheno):
        expected = solve_linear(full[:, p * width:(p + 1) * width], k, variants)
        got = solve_linear_sums([(done, sums_from_compact(compact[done, p * cw:(p + 1) * cw], totals[p * tw:(p + 1) * tw], k)),
                                 (rest, sums_from_packed(full[rest, p * width:(p + 1) * width], k))], variants)
        np.testing.assert_array_equal(got.errcode, expected.errcode)
        assert got.errcode[4] == "CONST_OMITTED_ALLELE"
        for field in ("beta", "se", "stat", "neg_log10_p", "effect_allele_count", "info"):
            np.testing.assert_allclose(getattr(got, field), getattr(expected, field), rtol=1e-9, atol=1e-12,
                                       equal_nan=True, err_msg=field)
        np.testing.assert_array_equal(got.n, expected.n)


def test_a_phenotype_missing_in_most_samples_sums_its_own_rows() -> None:
    """A missingness pattern lacking most of the cohort is summed over its own samples (not corrected
    from the cohort's): both ways equal the naive sums."""
    genotypes, design, y = _data(7, dosage=True)
    rng = np.random.default_rng(8)
    y[rng.random(len(y)) < 0.7, 4] = np.nan
    groups = group_phenotypes(design, y)
    assert not groups.subtract.all() and groups.subtract.any()
    width = LinearLayout(design.shape[1]).width
    stats = phenotype_statistics(genotypes, groups)
    for p in range(y.shape[1]):
        np.testing.assert_allclose(stats[:, p * width:(p + 1) * width], _naive(genotypes, design, y[:, p]),
                                   rtol=1e-10, atol=1e-8)
