"""Per-variant OLS estimates, SEs and p-values from aggregated linear statistics (coordinator side).

Given the packed sums of :mod:`engine.stats.linear.kernel` over all sites, each variant's fit follows from the
Frisch-Waugh-Lovell theorem: residualise g and y on the covariates through the K x K system
``C'C w = [C'g, C'y]`` (Jacobi-scaled, batched over variants), then
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


@dataclass(frozen=True)
class _Fit:
    beta: np.ndarray
    se: np.ndarray
    t: np.ndarray
    df: np.ndarray
    errcode: np.ndarray


def _fit(packed: np.ndarray, n_design: int) -> _Fit:
    layout = LinearLayout(n_design)
    k = n_design
    xtx, xty, yty = layout.unpack(packed)
    n = xtx[:, 0, 0]
    a = xtx[:, :k, :k]
    rhs = np.stack([xtx[:, :k, k], xty[:, :k]], axis=2)  # (m, K, 2): C'g, C'y
    # Jacobi scaling keeps the solve well conditioned when covariates have very different scales.
    diag = np.einsum("mii->mi", a)
    scale = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    a_scaled = a * scale[:, :, None] * scale[:, None, :]
    errcode = np.full(len(packed), ERRCODE_OK, dtype=object)
    try:
        solved = np.linalg.solve(a_scaled, rhs * scale[:, :, None]) * scale[:, :, None]
    except np.linalg.LinAlgError:
        solved = np.stack([np.linalg.lstsq(ai, ri, rcond=None)[0] for ai, ri in
                           zip(a_scaled, rhs * scale[:, :, None])]) * scale[:, :, None]
    w_g, w_y = solved[:, :, 0], solved[:, :, 1]
    c_g, c_y = rhs[:, :, 0], rhs[:, :, 1]
    s_gg = xtx[:, k, k] - np.einsum("mi,mi->m", c_g, w_g)  # residual g'g after covariates
    s_gy = xty[:, k] - np.einsum("mi,mi->m", c_g, w_y)
    s_yy = yty - np.einsum("mi,mi->m", c_y, w_y)
    df = n - k - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = s_gy / s_gg
        sigma2 = (s_yy - beta * s_gy) / df
        se = np.sqrt(sigma2 / s_gg)
        t = beta / se
    # PLINK 2's checks, in its order: constant genotype, then collinearity with the covariates.
    sum_g = xtx[:, 0, k]
    centred_gg = xtx[:, k, k] - sum_g * sum_g / np.where(n > 0, n, 1.0)
    constant = ~(centred_gg > 1e-8 * np.maximum(xtx[:, k, k], 1.0))
    # A biallelic variant's constant genotype is CONST_OMITTED_ALLELE in PLINK 2 whichever allele is
    # fixed (its CONST_ALLELE is for one allele of a multi-allelic variant).
    errcode[constant] = "CONST_OMITTED_ALLELE"
    sum_c = xtx[:, 0, :k]
    with np.errstate(divide="ignore", invalid="ignore"):
        cov_gc = c_g - sum_g[:, None] * sum_c / n[:, None]
        var_c = np.einsum("mii->mi", a) - sum_c * sum_c / n[:, None]
        corr = np.abs(cov_gc) / np.sqrt(var_c * centred_gg[:, None])
        vif = centred_gg / s_gg
    corr = np.where(var_c[:, :] > 1e-12 * np.maximum(np.einsum("mii->mi", a), 1.0), corr, 0.0)
    ok = errcode == ERRCODE_OK
    errcode[ok & (np.nanmax(corr, axis=1, initial=0.0) > MAX_CORR)] = "CORR_TOO_HIGH"
    ok = errcode == ERRCODE_OK
    errcode[ok & ~(vif <= MAX_VIF)] = "VIF_TOO_HIGH"
    ok = errcode == ERRCODE_OK
    errcode[ok & ~(df > 0)] = "DF_TOO_SMALL"
    ok = errcode == ERRCODE_OK
    errcode[ok & ~(np.isfinite(se) & (se > 0))] = "VIF_INFINITE"
    bad = errcode != ERRCODE_OK
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
    fit = _fit(packed, n_design)
    return AssociationResult(
        test="linear",
        variants=variants,
        beta=fit.beta,
        se=fit.se,
        stat=fit.t,
        neg_log10_p=t_test_neg_log10_p(fit.t, fit.df),
        n=np.rint(packed[:, layout.column(0, 0)]).astype(np.int64),
        effect_allele_count=packed[:, layout.column(0, n_design)],
        errcode=fit.errcode.astype(str),
        info=mach_r2(packed[:, layout.column(0, 0)], packed[:, layout.column(0, n_design)],
                     packed[:, layout.column(n_design, n_design)]),
    )
