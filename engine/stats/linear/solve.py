"""Per-variant OLS estimates, SEs and p-values from aggregated linear statistics (coordinator side).

Given the packed sums of :mod:`engine.stats.linear.kernel` over all sites, each variant's fit follows from the
Frisch-Waugh-Lovell theorem: residualise g and y on the covariates through the K x K system
``C'C w = [C'g, C'y]`` (Jacobi-scaled, batched over variants; solved once for all the variants that
share a phenotype's ``C'C``, those where every sample of the phenotype has a call), then
``beta = s_gy / s_gg``, ``SE^2 = (s_yy - beta s_gy) / (n - K - 1) / s_gg``, and a two-sided t test.
PLINK 2's per-variant checks (constant genotype, correlation > 0.999 or VIF > 50 with the
covariates) give its ERRCODEs and NaN estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.stats.association import ERRCODE_OK, AssociationResult, VariantTable
from engine.stats.linear.kernel import LinearLayout
from engine.stats.pvalues import t_test_neg_log10_p
from engine.stats.qc.dosage import mach_r2

#: PLINK 2 --glm defaults: variance inflation factor and maximum predictor correlation.
MAX_VIF = 50.0
MAX_CORR = 0.999
#: ERRCODEs of the failed checks, in PLINK 2's order (see :func:`_fit`).
_ERRCODES = ("CONST_OMITTED_ALLELE", "CORR_TOO_HIGH", "VIF_TOO_HIGH", "DF_TOO_SMALL", "VIF_INFINITE")


@dataclass(frozen=True)
class LinearSums:
    """One phenotype's aggregated sums for ``m`` variants: ``n`` ``(m,)`` samples, ``cc`` ``C'C``, ``cg`` ``C'g``
    ``(m, K)``, ``gg`` ``g'g`` ``(m,)``, ``cy`` ``C'y``, ``gy`` ``g'y`` ``(m,)`` and ``yy`` ``y'y``.

    ``cc``, ``cy`` and ``yy`` are per variant (``(m, K, K)``, ``(m, K)``, ``(m,)``) or, for variants where
    every sample of the phenotype has a call, the phenotype's own totals, shared by every variant
    (``(K, K)``, ``(K,)``, ``()``): the covariate system is then solved once, not once per variant.
    """

    n: np.ndarray
    cc: np.ndarray
    cg: np.ndarray
    gg: np.ndarray
    cy: np.ndarray
    gy: np.ndarray
    yy: np.ndarray

    @property
    def shared(self) -> bool:
        return self.cc.ndim == 2

    def design_columns(self, keep: np.ndarray) -> "LinearSums":
        """The sums of the model with only the design columns ``keep`` (indices, the intercept 0 among them)."""
        return LinearSums(n=self.n, cc=self.cc[..., keep[:, None], keep[None, :]], cg=self.cg[:, keep], gg=self.gg,
                          cy=self.cy[..., keep], gy=self.gy, yy=self.yy)


def sums_from_packed(packed: np.ndarray, n_design: int) -> LinearSums:
    """:class:`LinearSums` (per variant) of packed statistics ``(m, Q)`` (:class:`engine.stats.linear.kernel.LinearLayout`)."""
    layout = LinearLayout(n_design)
    k = n_design
    xtx, xty, yty = layout.unpack(packed)
    return LinearSums(n=xtx[:, 0, 0], cc=xtx[:, :k, :k], cg=xtx[:, :k, k], gg=xtx[:, k, k], cy=xty[:, :k],
                      gy=xty[:, k], yy=yty)


def sums_from_compact(compact: np.ndarray, totals: np.ndarray, n_design: int) -> LinearSums:
    """:class:`LinearSums` of one phenotype's ``linear_complete`` rows ``(m, K + 3)`` (``N``, ``C'g``, ``g'g``,
    ``g'y``) and ``linear_totals`` ``(K(K+1)/2 + K + 1,)`` (:mod:`engine.stats.linear.compact`), for variants
    where every sample of the phenotype has a call (the totals are then every variant's ``C'C``, ``C'y``, ``y'y``)."""
    k = n_design
    n_triu = k * (k + 1) // 2
    rows, cols = np.triu_indices(k)
    cc = np.empty((k, k))
    cc[rows, cols] = totals[:n_triu]
    cc[cols, rows] = totals[:n_triu]
    return LinearSums(n=compact[:, 0], cc=cc, cg=compact[:, 1:k + 1], gg=compact[:, k + 1], cy=totals[n_triu:n_triu + k],
                      gy=compact[:, k + 2], yy=np.asarray(totals[-1]))


@dataclass(frozen=True)
class _Fit:
    beta: np.ndarray
    se: np.ndarray
    t: np.ndarray
    df: np.ndarray
    errcode: np.ndarray


def _covariate_weights(sums: LinearSums) -> tuple[np.ndarray, np.ndarray]:
    """``(C'C)^-1 C'g`` ``(m, K)`` and ``(C'C)^-1 C'y`` (``(m, K)``, or ``(K,)`` for shared totals), Jacobi-scaled
    (the solve stays well conditioned when covariates have very different scales)."""
    a = sums.cc
    diag = np.einsum("...ii->...i", a)
    scale = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    a_scaled = a * scale[..., :, None] * scale[..., None, :]
    if sums.shared:  # one K x K system, right-hand sides [C'g of every variant, C'y]
        rhs = np.column_stack([sums.cg.T, sums.cy]) * scale[:, None]
        try:
            solved = np.linalg.solve(a_scaled, rhs)
        except np.linalg.LinAlgError:
            solved = np.linalg.lstsq(a_scaled, rhs, rcond=None)[0]
        solved *= scale[:, None]
        return solved[:, :-1].T, solved[:, -1]
    rhs = np.stack([sums.cg, sums.cy], axis=2) * scale[:, :, None]  # (m, K, 2)
    try:
        solved = np.linalg.solve(a_scaled, rhs)
    except np.linalg.LinAlgError:
        solved = np.stack([np.linalg.lstsq(ai, ri, rcond=None)[0] for ai, ri in zip(a_scaled, rhs)])
    solved *= scale[:, :, None]
    return solved[:, :, 0], solved[:, :, 1]


def _fit(sums: LinearSums) -> _Fit:
    w_g, w_y = _covariate_weights(sums)
    c_g, c_y = sums.cg, sums.cy
    s_gg = sums.gg - np.einsum("mi,mi->m", c_g, w_g)  # residual g'g after covariates
    s_gy = sums.gy - np.sum(c_g * w_y, axis=-1)
    s_yy = sums.yy - np.sum(c_y * w_y, axis=-1)
    n = sums.n
    k = c_g.shape[1]
    df = n - k - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = s_gy / s_gg
        sigma2 = (s_yy - beta * s_gy) / df
        se = np.sqrt(sigma2 / s_gg)
        t = beta / se
    # PLINK 2's checks, in its order (the first failed one names the variant's ERRCODE): constant
    # genotype, then collinearity with the covariates, then degrees of freedom and a finite SE.
    sum_g = c_g[:, 0]
    centred_gg = sums.gg - sum_g * sum_g / np.where(n > 0, n, 1.0)
    # A biallelic variant's constant genotype is CONST_OMITTED_ALLELE in PLINK 2 whichever allele is
    # fixed (its CONST_ALLELE is for one allele of a multi-allelic variant).
    constant = ~(centred_gg > 1e-8 * np.maximum(sums.gg, 1.0))
    sum_c = sums.cc[..., 0, :]
    diag = np.einsum("...ii->...i", sums.cc)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov_gc = c_g - sum_g[:, None] * sum_c / n[:, None]
        var_c = diag - sum_c * sum_c / n[:, None]
        corr = np.abs(cov_gc) / np.sqrt(var_c * centred_gg[:, None])
        vif = centred_gg / s_gg
    corr = np.where(var_c > 1e-12 * np.maximum(diag, 1.0), corr, 0.0)
    failed = [constant, np.nanmax(corr, axis=1, initial=0.0) > MAX_CORR, ~(vif <= MAX_VIF), ~(df > 0),
              ~(np.isfinite(se) & (se > 0))]
    code = np.select(failed, np.arange(1, len(failed) + 1), 0)
    errcode = np.array([ERRCODE_OK, *_ERRCODES], dtype=object)[code]
    bad = code != 0
    for array in (beta, se, t):
        array[bad] = np.nan
    return _Fit(beta=beta, se=se, t=t, df=df, errcode=errcode)


def solve_linear(packed: np.ndarray, n_design: int, variants: VariantTable) -> AssociationResult:
    """Per-variant OLS estimates from aggregated packed statistics ``(M, Q)``.

    Returns beta, SE, t, two-sided p (as -log10), N and effect-allele count per variant, with
    PLINK 2's ERRCODEs (and NaN estimates) for constant or collinear genotypes.
    """
    layout = LinearLayout(n_design)
    if packed.shape != (len(variants), layout.width):
        raise ValueError(f"packed statistics have shape {packed.shape}, expected {(len(variants), layout.width)}")
    return solve_linear_sums([(np.arange(len(variants)), sums_from_packed(packed, n_design))], variants)


def solve_linear_sums(parts: list[tuple[np.ndarray, LinearSums]], variants: VariantTable) -> AssociationResult:
    """:func:`solve_linear` of sums given in parts: each ``(rows, sums)`` covers the variants ``rows`` (together
    every variant of ``variants`` once), e.g. the variants complete in the phenotype's samples with its shared
    totals (:func:`sums_from_compact`) and the others with their own (:func:`sums_from_packed`)."""
    m = len(variants)
    beta, se, t, df, n, sum_g, gg = (np.full(m, np.nan) for _ in range(7))
    errcode = np.full(m, ERRCODE_OK, dtype=object)
    for rows, sums in parts:
        fit = _fit(sums)
        beta[rows], se[rows], t[rows], df[rows], errcode[rows] = fit.beta, fit.se, fit.t, fit.df, fit.errcode
        n[rows], sum_g[rows], gg[rows] = sums.n, sums.cg[:, 0], sums.gg
    return AssociationResult(
        test="linear",
        variants=variants,
        beta=beta,
        se=se,
        stat=t,
        neg_log10_p=t_test_neg_log10_p(t, df),
        n=np.rint(n).astype(np.int64),
        effect_allele_count=sum_g,
        errcode=errcode.astype(str),
        info=mach_r2(n, sum_g, gg),
    )
