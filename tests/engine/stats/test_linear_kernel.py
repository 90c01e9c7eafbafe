"""The linear sufficient-statistics kernel and solver against a naive per-variant numpy OLS oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from engine.stats.association import VariantTable
from engine.stats.linear.kernel import LinearLayout, block_statistics, flip_effect_allele
from engine.stats.linear.solve import solve_linear
from engine.stats.pvalues import t_test_neg_log10_p


def _variants(m: int) -> VariantTable:
    ids = np.array([f"v{i}" for i in range(m)])
    return VariantTable(np.full(m, "1"), np.arange(1, m + 1), ids, np.full(m, "A"), np.full(m, "G"))


def naive_ols(genotypes: np.ndarray, covariates: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per variant: drop samples missing the genotype, fit y ~ 1 + covariates + g by lstsq."""
    out = np.full((genotypes.shape[1], 4), np.nan)
    for j in range(genotypes.shape[1]):
        keep = genotypes[:, j] >= 0
        x = np.column_stack([np.ones(keep.sum()), covariates[keep], genotypes[keep, j]])
        coef, *_ = np.linalg.lstsq(x, y[keep], rcond=None)
        resid = y[keep] - x @ coef
        df = keep.sum() - x.shape[1]
        cov = resid @ resid / df * np.linalg.inv(x.T @ x)
        se = np.sqrt(cov[-1, -1])
        out[j] = coef[-1], se, keep.sum(), -np.log10(2 * stats.t.sf(abs(coef[-1] / se), df))
    return out


def simulate(rng: np.random.Generator, n: int = 400, m: int = 60, k: int = 3, missing: float = 0.05):
    freqs = rng.uniform(0.05, 0.5, size=m)
    genotypes = rng.binomial(2, freqs, size=(n, m)).astype(np.int8)
    genotypes[rng.random((n, m)) < missing] = -127
    covariates = np.column_stack([rng.normal(45, 12, n), rng.integers(0, 2, n), rng.normal(0, 0.03, n)])[:, :k]
    y = 0.3 * np.where(genotypes[:, 0] < 0, 0, genotypes[:, 0]) + covariates @ rng.normal(size=k) * 0.1 + rng.normal(size=n)
    return genotypes, covariates, y


def test_block_statistics_and_solver_match_naive_ols() -> None:
    rng = np.random.default_rng(4)
    genotypes, covariates, y = simulate(rng)
    design = np.column_stack([np.ones(len(y)), covariates])
    packed = block_statistics(genotypes, design, y)
    result = solve_linear(packed, design.shape[1], _variants(genotypes.shape[1]))
    oracle = naive_ols(genotypes, covariates, y)
    np.testing.assert_allclose(result.beta, oracle[:, 0], rtol=1e-9)
    np.testing.assert_allclose(result.se, oracle[:, 1], rtol=1e-9)
    np.testing.assert_array_equal(result.n, oracle[:, 2])
    np.testing.assert_allclose(result.neg_log10_p, oracle[:, 3], rtol=1e-8)
    assert result.neg_log10_p[0] > 3  # the causal variant


def test_statistics_are_additive_across_sample_splits() -> None:
    rng = np.random.default_rng(5)
    genotypes, covariates, y = simulate(rng)
    design = np.column_stack([np.ones(len(y)), covariates])
    parts = [slice(0, 90), slice(90, 250), slice(250, None)]
    summed = sum(block_statistics(genotypes[p], design[p], y[p]) for p in parts)
    np.testing.assert_allclose(summed, block_statistics(genotypes, design, y), rtol=1e-12, atol=1e-10)


def test_flip_on_statistics_equals_recoding_genotypes() -> None:
    rng = np.random.default_rng(6)
    genotypes, covariates, y = simulate(rng)
    design = np.column_stack([np.ones(len(y)), covariates])
    flip = rng.random(genotypes.shape[1]) < 0.5
    recoded = genotypes.copy()
    recoded[:, flip] = np.where(genotypes[:, flip] < 0, genotypes[:, flip], 2 - genotypes[:, flip])
    np.testing.assert_allclose(flip_effect_allele(block_statistics(recoded, design, y), flip, design.shape[1]),
                               block_statistics(genotypes, design, y), rtol=1e-12, atol=1e-9)


def test_constant_and_collinear_variants_get_plink_errcodes() -> None:
    rng = np.random.default_rng(7)
    n = 200
    covariates = rng.normal(size=(n, 1))
    y = rng.normal(size=n)
    genotypes = np.column_stack([
        np.zeros(n), np.full(n, 2), rng.binomial(2, 0.3, n),
        np.clip(np.rint(covariates[:, 0] + 1), 0, 2),  # collinear-ish with the covariate
    ]).astype(np.int8)
    design = np.column_stack([np.ones(n), covariates])
    result = solve_linear(block_statistics(genotypes, design, y), 2, _variants(4))
    assert list(result.errcode[:3]) == ["CONST_OMITTED_ALLELE", "CONST_ALLELE", "."]
    assert np.isnan(result.beta[:2]).all() and np.isfinite(result.beta[2])


def test_layout_width_does_not_depend_on_samples() -> None:
    assert LinearLayout(7).width == 45  # intercept + 6 covariates
    assert LinearLayout(1).width == 3 + 2 + 1


@pytest.mark.parametrize("df", [5.0, 900.0, 1e5])
def test_tiny_p_values_stay_exact_beyond_float_range(df: float) -> None:
    t = np.array([3.0, 8.0, 20.0, 200.0])
    ours = t_test_neg_log10_p(t, np.full(4, df))
    with np.errstate(divide="ignore"):
        scipy_value = -(stats.t.logsf(t, df) + np.log(2)) / np.log(10)
    finite = np.isfinite(scipy_value)
    np.testing.assert_allclose(ours[finite], scipy_value[finite], rtol=1e-9)
    assert np.all(np.isfinite(ours)) and np.all(np.diff(ours) > 0)
