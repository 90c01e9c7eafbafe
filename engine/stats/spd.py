"""Batched linear algebra on many small symmetric positive definite matrices, vectorised over the batch.

The coordinator's per-variant fits handle 10^5-10^6 matrices of size P x P (P = covariates + 2, so
usually below 20) at every round. ``numpy.linalg`` calls LAPACK once per matrix, which costs
microseconds each; :class:`Cholesky` instead loops over the P x P entries, each step one numpy
operation on a contiguous vector over the whole batch (the arithmetic of LAPACK's unblocked
``dpotf2``, in the same order). Matrices are ``(m, P, P)`` outside and ``(P, P, m)`` inside.
"""

from __future__ import annotations

import numpy as np


class Cholesky:
    """Cholesky factors ``L L' = A`` of a batch ``A`` ``(m, P, P)``.

    A matrix that is not numerically positive definite gets a pivot <= 0 (or NaN) where the
    factorisation breaks down (:attr:`pivots`), and NaN factors from there on; never an exception.
    """

    def __init__(self, matrices: np.ndarray) -> None:
        m, p, _ = matrices.shape
        a = matrices.reshape(m, p * p).T.reshape(p, p, m)  # one transposing copy
        low = np.empty((p, p, m))
        pivots = np.empty((p, m))
        with np.errstate(invalid="ignore", divide="ignore"):
            for j in range(p):
                low[j, j + 1:] = 0.0
                pivot = a[j, j] - _dot(low[j, :j], low[j, :j])
                pivots[j] = pivot
                diagonal = np.sqrt(np.where(pivot > 0, pivot, np.nan))
                low[j, j] = diagonal
                for i in range(j + 1, p):
                    low[i, j] = (a[i, j] - _dot(low[i, :j], low[j, :j])) / diagonal
        self._low = low
        self.pivots = pivots.T  # (m, P): the squared diagonal of L

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``A^-1 rhs`` for ``rhs`` ``(m, P)`` or ``(m, P, r)``."""
        low = self._low
        p, m = low.shape[0], low.shape[2]
        vector = rhs.ndim == 2
        columns = 1 if vector else rhs.shape[2]
        x = rhs.reshape(m, p * columns).T.reshape(p, columns, m).copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            for i in range(p):  # forward: L z = rhs
                for k in range(i):
                    x[i] -= low[i, k] * x[k]
                x[i] /= low[i, i]
            for i in reversed(range(p)):  # backward: L' x = z
                for k in range(i + 1, p):
                    x[i] -= low[k, i] * x[k]
                x[i] /= low[i, i]
        out = x.reshape(p * columns, m).T.reshape(m, p, columns)
        return out[:, :, 0] if vector else out

    def inverse(self) -> np.ndarray:
        """``A^-1`` ``(m, P, P)``."""
        p, m = self._low.shape[0], self._low.shape[2]
        return self.solve(np.broadcast_to(np.eye(p), (m, p, p)))


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Batched dot products of ``(k, m)`` row blocks: ``sum_k a[k] * b[k]`` ``(m,)``, 0 when k = 0."""
    if len(a) == 0:
        return 0.0
    return np.einsum("km,km->m", a, b)
