"""Batched Cholesky of many small SPD matrices against numpy.linalg (one LAPACK call per matrix)."""

from __future__ import annotations

import numpy as np

from engine.stats.spd import Cholesky


def _spd(rng: np.random.Generator, m: int, p: int) -> np.ndarray:
    x = rng.normal(size=(m, 3 * p, p)) * rng.uniform(0.01, 100.0, size=(m, 1, p))  # badly scaled columns
    return np.einsum("mia,mib->mab", x, x)


def test_factor_solve_and_inverse_match_lapack() -> None:
    rng = np.random.default_rng(5)
    matrices = _spd(rng, 500, 7)
    factor = Cholesky(matrices)
    lapack = np.linalg.cholesky(matrices)
    np.testing.assert_allclose(factor.pivots, np.einsum("mii->mi", lapack) ** 2, rtol=1e-10)
    rhs = rng.normal(size=(500, 7))
    np.testing.assert_allclose(factor.solve(rhs), np.linalg.solve(matrices, rhs[:, :, None])[:, :, 0], rtol=1e-8,
                               atol=1e-12)
    np.testing.assert_allclose(factor.inverse(), np.linalg.inv(matrices), rtol=1e-8, atol=1e-14)
    several = rng.normal(size=(500, 7, 3))
    np.testing.assert_allclose(factor.solve(several), np.linalg.solve(matrices, several), rtol=1e-8, atol=1e-12)


def test_a_matrix_that_is_not_positive_definite_is_flagged_alone() -> None:
    rng = np.random.default_rng(6)
    matrices = _spd(rng, 4, 5)
    matrices[1, 2, 2] = -1.0  # indefinite
    matrices[2] = np.outer(np.arange(1.0, 6.0), np.arange(1.0, 6.0))  # rank one: singular
    pivots = Cholesky(matrices).pivots
    with np.errstate(invalid="ignore"):
        smallest = np.nanmin(np.where(np.isnan(pivots), -np.inf, pivots), axis=1)
    assert smallest[0] > 0 and smallest[3] > 0
    assert smallest[1] <= 0 and smallest[2] <= 1e-12 * matrices[2, 4, 4]
