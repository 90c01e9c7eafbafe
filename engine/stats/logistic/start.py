"""The round that starts a case/control fit: one pass per block at the covariate-only fit ``[b, 0]``.

Every variant shares the linear predictor ``C b`` there, so there is no ``exp`` per variant: every sum is a
thin GEMM of ``g`` or ``g^2`` (``g^3`` for the third moments). :class:`StartLayout` names the columns;
the Newton and Firth rounds that follow are in :mod:`engine.stats.logistic.kernel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from engine.stats.linear.kernel import LinearLayout, missing_call_indicator, pack_statistics
from engine.stats.logistic.kernel import ETA_LIMIT, GEMM_PANEL_VALUES, LogisticLayout, fill_statistics


@dataclass(frozen=True)
class StartLayout:
    """Columns of :func:`start_statistics` for ``n_design`` design columns (intercept included).

    ``linear``: the linear statistics of the 0/1 phenotype (:class:`engine.stats.linear.kernel.LinearLayout`);
    ``logistic``: ``X'WX`` and ``X'(y - p)`` at the covariate-only fit (:class:`LogisticLayout`);
    ``moments``: the third moments ``T_abc`` there that involve the genotype, in the order of
    ``LogisticLayout(K, firth=True).triples`` (:attr:`genotype_triples`).
    """

    n_design: int

    @property
    def linear(self) -> slice:
        return slice(0, LinearLayout(self.n_design).width)

    @property
    def logistic(self) -> slice:
        start = self.linear.stop
        return slice(start, start + LogisticLayout(self.n_design).width)

    @cached_property
    def genotype_triples(self) -> np.ndarray:
        """Columns of the Firth layout's third moments whose triple contains the genotype."""
        counts, _ = LogisticLayout(self.n_design, firth=True)._triple_sources
        return np.flatnonzero(counts > 0)

    @property
    def moments(self) -> slice:
        start = self.logistic.stop
        return slice(start, start + len(self.genotype_triples))

    @property
    def width(self) -> int:
        return self.moments.stop


def start_statistics(genotypes: np.ndarray, design: np.ndarray, y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-variant sums of the round that starts a case/control fit, at the covariate-only fit ``b``.

    One pass over the block gives what the coordinator needs before any per-variant fit: the linear
    statistics of the 0/1 phenotype (PLINK's pre-fit checks, and the first iteration of its path
    from 0), and the logistic statistics and genotype third moments at coefficients ``[b, 0]``, from
    which the coordinator takes a second-order step towards each variant's estimate.

    Every variant shares the linear predictor ``C b`` there, so ``p``, ``w = p (1 - p)``,
    ``u = w (1/2 - p)`` and ``r = y - p`` are per sample: no ``exp`` per variant. With ``g`` in
    {0, 1, 2}, every per-variant sum is a thin GEMM of ``g`` or ``g^2`` against per-sample rows
    (``g^3 = 3 g^2 - 2 g``), done on the raw codes (missing = -127) with each missing call's share
    added back, plus the covariate-only sums minus those of each variant's missing calls (a sparse
    product, as in :func:`engine.stats.linear.kernel.block_statistics`). Exact in float64; one conversion of the
    genotypes, one GEMM of 35 rows and one of 8 (for 5 covariates).

    Parameters
    ----------
    genotypes
        int8 ``(n, m)`` counts of the study's effect allele, -127 for a missing call; or float dosages,
        NaN for a missing dosage (then without the add-back, and with ``g^3`` summed directly).
    design, y
        ``(n, K)`` intercept and covariates; ``(n,)`` phenotype 0/1.
    b
        ``(K,)`` coefficients of the covariate-only fit.

    Returns
    -------
    numpy.ndarray
        ``(m, StartLayout(K).width)`` float64.
    """
    n, m = genotypes.shape
    k = design.shape[1]
    if b.shape != (k,):
        raise ValueError(f"b has shape {b.shape}, expected {(k,)}")
    neg_eta = np.minimum(-(design @ b), ETA_LIMIT)
    z = np.exp(neg_eta)
    p = 1.0 / (1.0 + z)
    w = z * p * p
    u = w * (0.5 - p)
    r = y - p
    rows, cols = np.triu_indices(k)
    pairs = design[:, rows] * design[:, cols]
    n_pairs = len(rows)
    # Per-sample rows: summed over the observed samples (covariate-only), against g, against g^2.
    covariate_only = np.column_stack([pairs, design * y[:, None], y * y, w[:, None] * pairs, design * r[:, None]])
    by_g_rows = np.column_stack([design, y, w[:, None] * design, r, u[:, None] * pairs])
    by_g2_rows = np.column_stack([np.ones(n), w, u[:, None] * design])
    raw = np.asfortranarray(genotypes)
    missing = missing_call_indicator(raw) @ np.column_stack([covariate_only, by_g_rows, by_g2_rows])
    n_cov, n_g = covariate_only.shape[1], by_g_rows.shape[1]
    observed = covariate_only.sum(axis=0) - missing[:, :n_cov]
    against_g, against_g2 = np.ascontiguousarray(by_g_rows.T), np.ascontiguousarray(by_g2_rows.T)
    by_g, by_g2 = np.empty((m, n_g)), np.empty((m, against_g2.shape[0]))
    chunk = max(1, min(m, GEMM_PANEL_VALUES // max(n, 1)))
    buffer = np.empty((n, chunk), order="F")
    dosages = raw.dtype.kind == "f"
    by_g3 = np.empty(m) if dosages else None  # sum u g^3: dosages are not in {0, 1, 2}
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        view = buffer[:, : stop - start]
        np.copyto(view, raw[:, start:stop], casting="unsafe")
        if dosages:
            np.nan_to_num(view, copy=False, nan=0.0)
        by_g[start:stop] = (against_g @ view).T
        if by_g3 is not None:
            by_g3[start:stop] = u @ (view * view * view)
        view *= view
        by_g2[start:stop] = (against_g2 @ view).T
    if not dosages:
        by_g += 127.0 * missing[:, n_cov: n_cov + n_g]  # a missing call entered as -127, and as 127^2 squared
        by_g2 -= 127.0 ** 2 * missing[:, n_cov + n_g:]

    layout = StartLayout(k)
    out = np.empty((m, layout.width))
    c_y = n_pairs + k  # columns of covariate_only: pairs, c y, y^2, w pairs, c r
    out[:, layout.linear] = pack_statistics(LinearLayout(k), observed[:, :n_pairs], by_g[:, :k], by_g2[:, 0],
                                            observed[:, n_pairs:c_y], by_g[:, k], observed[:, c_y])
    logistic = LogisticLayout(k)
    values = np.empty((m, logistic.width))
    fill_statistics(values, logistic, observed[:, c_y + 1: c_y + 1 + n_pairs], by_g[:, k + 1: 2 * k + 1], by_g2[:, 1],
          observed[:, c_y + 1 + n_pairs:], by_g[:, 2 * k + 1])
    out[:, layout.logistic] = values
    u_g = by_g[:, 2 * k + 2:]  # sum u c_a c_b g, pairs order (the first is sum u g)
    u_g2 = by_g2[:, 2:]  # sum u c_a g^2
    u_g3 = by_g3 if by_g3 is not None else 3.0 * u_g2[:, 0] - 2.0 * u_g[:, 0]  # g^3 = 3 g^2 - 2 g in {0, 1, 2}
    families = {1: u_g, 2: u_g2, 3: u_g3[:, None]}
    counts, source = LogisticLayout(k, firth=True)._triple_sources
    genotype = counts > 0  # the columns of StartLayout.genotype_triples, in that order
    counts, source = counts[genotype], source[genotype]
    for family, family_values in families.items():
        columns = np.flatnonzero(counts == family)
        out[:, layout.moments.start + columns] = family_values[:, source[columns]]
    return out
