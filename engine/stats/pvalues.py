"""Two-sided p-values as -log10(p), exact below the float64 range.

scipy's ``t.logsf`` returns -inf once p < 1e-308. Genome-wide studies of biobanks produce such
p-values, so the tail is continued analytically: for the t distribution
``sf(t) = I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``, and
``I_x(a, b) = x^a (1-x)^b 2F1(a+b, 1; a+1; x) / (a B(a, b))``, evaluated in log space. Where the
hypergeometric series fails (very large df), Wallace's (1959) normal approximation of t is used.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

_LN10 = float(np.log(10.0))


def _t_log_sf_tail(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    a = df / 2.0
    x = df / (df + t * t)
    with np.errstate(all="ignore"):
        series = special.hyp2f1(a + 0.5, 1.0, a + 1.0, x)
        log_sf = a * np.log(x) + 0.5 * np.log1p(-x) - np.log(a) - special.betaln(a, 0.5) + np.log(series) - np.log(2.0)
    bad = ~np.isfinite(log_sf)
    if np.any(bad):
        z = np.sqrt(df[bad] * np.log1p(t[bad] ** 2 / df[bad])) * (8 * df[bad] + 1) / (8 * df[bad] + 3)
        log_sf[bad] = stats.norm.logsf(z)
    return log_sf


def t_test_neg_log10_p(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """-log10 of the two-sided p-value of t statistics with ``df`` degrees of freedom (NaN stays NaN)."""
    t = np.abs(np.asarray(t, dtype=np.float64))
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape).copy()
    out = np.full(t.shape, np.nan)
    valid = np.isfinite(t) & (df > 0)
    with np.errstate(all="ignore"):
        log_sf = stats.t.logsf(t[valid], df[valid])
    underflow = ~np.isfinite(log_sf)
    if np.any(underflow):
        log_sf[underflow] = _t_log_sf_tail(t[valid][underflow], df[valid][underflow])
    out[valid] = -(log_sf + np.log(2.0)) / _LN10
    return np.maximum(out, 0.0, where=np.isfinite(out), out=out)


def z_test_neg_log10_p(z: np.ndarray) -> np.ndarray:
    """-log10 of the two-sided normal p-value of ``z`` (exact far into the tail via ``norm.logsf``)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        out = -(stats.norm.logsf(z) + np.log(2.0)) / _LN10
    return np.maximum(out, 0.0, where=np.isfinite(out), out=out)
