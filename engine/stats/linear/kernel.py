"""Exact per-variant linear regression from additive sufficient statistics.

Model for variant j, over the samples observed at j (PLINK 2's convention: a sample missing a
genotype is left out of that variant's regression only)::

    y = C b + g_j beta_j + e,    C = [1, covariates]  (n x K)

With X = [C, g_j] (P = K + 1 predictors) the fit needs only X'X, X'y and y'y over the observed
samples, and these are sums over samples, hence additive across sites. Per variant they are packed
into one row of ``Q = P(P+1)/2 + P + 1`` float64 values (upper triangle of X'X row-major, X'y, y'y),
so a block of variants is an ``(m, Q)`` array: 45 values per variant for 6 covariates, whatever the
number of samples.

The kernel needs one thin GEMM ``G' [C, y]``, one pass for ``g'g``, and a sparse correction that
removes each missing call's contribution from the per-sample cross-products ``c c'``, ``c y``, ``y^2``.
The solver that turns aggregated statistics into estimates is in :mod:`engine.stats.linear.solve` (it is
the coordinator's job; sites never import it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

from engine.stats.statistic import DesignLayout


#: float64 values converted per GEMM chunk (~8 MiB: stays in cache between conversion and GEMM).
_GEMM_CHUNK_VALUES = 1 << 20


@dataclass(frozen=True)
class LinearLayout(DesignLayout):
    """Column layout of packed statistics for ``n_design`` design columns (intercept included)."""


    @property
    def width(self) -> int:  # Q
        p = self.n_predictors
        return p * (p + 1) // 2 + p + 1

    @property
    def xty_slice(self) -> slice:
        start = len(self.triu[0])
        return slice(start, start + self.n_predictors)

    @property
    def yty_column(self) -> int:
        return self.width - 1

    def column(self, a: int, b: int) -> int:
        """Packed column of X'X[a, b]."""
        a, b = min(a, b), max(a, b)
        rows, cols = self.triu
        return int(np.flatnonzero((rows == a) & (cols == b))[0])

    @cached_property
    def design_triu_columns(self) -> np.ndarray:
        """Packed columns of the C'C entries, in ``np.triu_indices(K)`` order."""
        rows, cols = np.triu_indices(self.n_design)
        return np.array([self.column(int(a), int(b)) for a, b in zip(rows, cols)], dtype=np.int64)

    def unpack(self, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X'X ``(m, P, P)`` symmetric, X'y ``(m, P)``, y'y ``(m,)``) from packed ``(m, Q)``."""
        m, p = len(packed), self.n_predictors
        rows, cols = self.triu
        xtx = np.empty((m, p, p))
        xtx[:, rows, cols] = packed[:, : len(rows)]
        xtx[:, cols, rows] = packed[:, : len(rows)]
        return xtx, packed[:, self.xty_slice], packed[:, self.yty_column]


def sample_cross_products(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample ``[triu(c c'), c y, y^2]``, shape ``(n, K(K+1)/2 + K + 1)``.

    Summed over samples these are the covariate-only parts of the statistics; summed over the
    samples missing at a variant they are what that variant's regression must leave out.
    """
    rows, cols = np.triu_indices(design.shape[1])
    return np.column_stack([design[:, rows] * design[:, cols], design * y[:, None], y * y])


def missing_calls(genotypes: np.ndarray) -> np.ndarray:
    """Bool mask of the missing calls: negative int8 codes, or NaN float dosages."""
    return np.isnan(genotypes) if genotypes.dtype.kind == "f" else genotypes < 0


def missing_call_indicator(genotypes: np.ndarray) -> sparse.csr_matrix:
    """Sparse ``(m, n)`` 0/1 matrix of the missing calls of int8 ``(n, m)`` genotypes (negative codes), or
    of float dosages (NaN).

    Found on the raw Fortran (variant-major) memory in one pass over int8; the flat indices come out
    sorted by variant, so the CSR matrix is built directly. ``indicator @ per_sample`` gives, per
    variant, the sums of per-sample quantities over the samples it must leave out.
    """
    raw = np.asfortranarray(genotypes)
    n, m = raw.shape
    flat = np.flatnonzero(missing_calls(raw.ravel(order="F")))
    variant_of = flat // n
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(variant_of, minlength=m), out=indptr[1:])
    return sparse.csr_matrix((np.ones(len(flat)), flat - variant_of * n, indptr), shape=(m, n))


def block_statistics(genotypes: np.ndarray, design: np.ndarray, y: np.ndarray,
                     per_sample: np.ndarray | None = None) -> np.ndarray:
    """Packed sufficient statistics of a block of variants at one site.

    Parameters
    ----------
    genotypes
        int8 ``(n, m)`` allele counts (0/1/2) of the effect allele, -127 for a missing call.
    design
        ``(n, K)`` intercept and covariates of the analysed samples (same rows as ``genotypes``).
    y
        ``(n,)`` phenotype.
    per_sample
        ``sample_cross_products(design, y)`` if already computed (it is the same for every block).

    Returns
    -------
    numpy.ndarray
        ``(m, Q)`` float64, layout of :class:`LinearLayout`.
    """
    layout = LinearLayout(design.shape[1])
    k = layout.n_design
    n, m = genotypes.shape
    if per_sample is None:
        per_sample = sample_cross_products(design, y)
    n_triu_c = k * (k + 1) // 2
    # Columns of per_sample that equal [C, y]: row 0 of triu(c c') is c (c_0 = 1), and c_0 y = y.
    design_and_y = np.r_[np.arange(k), n_triu_c]
    raw = np.asfortranarray(genotypes)
    missing_sums = missing_call_indicator(raw) @ per_sample
    observed = per_sample.sum(axis=0) - missing_sums
    # Thin GEMM on the raw codes (missing = -127), converted to float64 a cache-sized chunk at a time
    # into one reused buffer (a fresh (n, m) float64 copy costs more in page faults than the GEMM).
    # Adding back 127 x each missing sample's row of [C, y] (already in the sparse product) is
    # cheaper than clamping the missing codes to 0.
    w_t = np.ascontiguousarray(per_sample[:, design_and_y].T)  # (K+1, n)
    cross = np.empty((m, k + 1))
    chunk = max(1, min(m, _GEMM_CHUNK_VALUES // max(n, 1)))
    buffer = np.empty((n, chunk), order="F")
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        view = buffer[:, : stop - start]
        np.copyto(view, raw[:, start:stop], casting="unsafe")
        cross[start:stop] = (w_t @ view).T
    cross += 127.0 * missing_sums[:, design_and_y]  # (m, K+1): C'g and g'y over observed samples
    gg = cross[:, 0] + 2.0 * np.count_nonzero(raw == 2, axis=0)  # g^2 = g + 2[g = 2] for g in {0,1,2}
    return pack_statistics(layout, observed[:, :n_triu_c], cross[:, :k], gg, observed[:, n_triu_c: n_triu_c + k],
                           cross[:, k], observed[:, -1])


def pack_statistics(layout: LinearLayout, cc: np.ndarray, cg: np.ndarray, gg: np.ndarray, cy: np.ndarray,
                    gy: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Rows ``(m, Q)`` of :class:`LinearLayout` from per-variant sums over the observed samples:
    ``C'C`` ``(m, K(K+1)/2)`` (``np.triu_indices(K)`` order), ``C'g`` ``(m, K)``, ``g'g``, ``C'y`` ``(m, K)``,
    ``g'y`` and ``y'y`` ``(m,)``."""
    k = layout.n_design
    packed = np.empty((len(gg), layout.width))
    packed[:, layout.design_triu_columns] = cc
    for a in range(k):
        packed[:, layout.column(a, k)] = cg[:, a]
    packed[:, layout.column(k, k)] = gg
    xty = layout.xty_slice
    packed[:, xty.start: xty.start + k] = cy
    packed[:, xty.start + k] = gy
    packed[:, layout.yty_column] = yy
    return packed


def flip_effect_allele(packed: np.ndarray, flip: np.ndarray, n_design: int) -> np.ndarray:
    """Statistics as if the other allele were counted (g -> 2 - g on observed samples) where ``flip``.

    Exact, and done on the statistics rather than the genotypes: with ``1_obs`` the observed samples,
    ``C'(2 - g) = 2 C'1_obs - C'g``, ``(2-g)'(2-g) = 4 n - 4 sum(g) + g'g``, ``(2-g)'y = 2 sum(y) - g'y``.
    """
    if not np.any(flip):
        return packed
    layout = LinearLayout(n_design)
    k = n_design
    out = packed.copy()
    rows = out[flip]
    n_obs = rows[:, layout.column(0, 0)]
    sum_g = rows[:, layout.column(0, k)].copy()
    gg = rows[:, layout.column(k, k)]
    for a in range(k):
        rows[:, layout.column(a, k)] = 2.0 * rows[:, layout.column(0, a)] - rows[:, layout.column(a, k)]
    rows[:, layout.column(k, k)] = 4.0 * n_obs - 4.0 * sum_g + gg
    xty = layout.xty_slice
    rows[:, xty.start + k] = 2.0 * rows[:, xty.start] - rows[:, xty.start + k]
    out[flip] = rows
    return out
