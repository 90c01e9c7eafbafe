"""Hardy-Weinberg equilibrium exact test, vectorised over variants (PLINK 2's ``--hardy``/``--hwe``).

The test is the one of Wigginton, Cutler & Abecasis (2005), as PLINK 2 computes it: given ``n``
genotypes holding ``r`` copies of the rarer allele, the table with ``h`` rare homozygotes (so
``k = r - 2h`` heterozygotes and ``n - r + h`` common homozygotes) has probability

    P(h) = 2^k n! r! (2n - r)! / (k! h! (n - r + h)! (2n)!),

and the p-value is the total probability of the tables no more likely than the observed one. The
mid-p variant (Graffelman & Moreno 2013, PLINK's ``midp``) counts the tables exactly as likely as
the observed one (itself included) at half weight.

``log P`` is unimodal in ``h``, so the tables more likely than the observed one form one interval
around the mode (the *centre*) and the p-value is everything outside it. For all variants at once:

1. bisections find the mode, the centre ``[cL, cR]``, and how far each tail must be followed
   (until tables are e^-30 times less likely than the observed one);
2. the shorter of the two sums is taken: ``p = 1 - Σ centre / Σ all`` when the observed table is
   near the mode (the normalising sum has a closed form), otherwise ``p = Σ tails / Σ all``.
   The centre form is only kept where p >= 1e-4, so cancellation costs at most ~1e-8 relative.

Work per variant is therefore about ``min(centre, tails)`` tables, a few standard deviations of
the heterozygote count. Log-factorials come from one table, p-values are returned as -log10 p
(exact far below the float64 range). Two tables count as tied when their log-probabilities agree
to 1e-11 of the log-factorials involved, i.e. within rounding noise, as PLINK 2 treats near-ties.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln

_LN10 = float(np.log(10.0))
_LN2 = float(np.log(2.0))
#: Tail tables less likely than the observed one by more than this (natural log) are ignored.
_DROP = 30.0
#: The centre form 1 - C/T is used only where it gives p >= this (else the tails are summed).
_CENTRE_MIN_P = 1e-4
#: Elements per padded work array (rows x interval length): small enough to stay in cache.
_CHUNK_ELEMENTS = 1 << 16


class _Tables:
    """Per-variant constants and ``log P(h)`` (unnormalised) through a log-factorial table."""

    def __init__(self, r: np.ndarray, n: np.ndarray) -> None:
        self.r, self.n = r, n
        self.hmax = r // 2
        self.log_fact = gammaln(np.arange(int(n.max()) + 1, dtype=np.float64) + 1.0)

    def log_prob(self, h: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``log(2^k / (k! h! (n-r+h)!))`` for ``h`` of shape ``(rows,)`` or ``(rows, w)``."""
        r, n = self.r[rows], self.n[rows]
        if h.ndim == 2:
            r, n = r[:, None], n[:, None]
        k = r - 2 * h
        return k * _LN2 - self.log_fact[k] - self.log_fact[h] - self.log_fact[n - r + h]


def _first_true(lo: np.ndarray, hi: np.ndarray, hmax: np.ndarray,
                predicate: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Smallest ``h`` in ``[lo, hi]`` where ``predicate`` holds (``hi + 1`` if nowhere).

    ``predicate`` must be False then True along ``[lo, hi]``; it is evaluated at ``h`` clipped
    to ``[0, hmax]`` for every row on each step (rows already settled are ignored).
    """
    lo, end = lo.copy(), hi + 1
    while True:
        active = lo < end
        if not np.any(active):
            return lo
        mid = (lo + end) // 2
        holds = predicate(np.clip(mid, 0, hmax))
        end = np.where(active & holds, mid, end)
        lo = np.where(active & ~holds, mid + 1, lo)


def _window_log_sums(tables: _Tables, rows: np.ndarray, start: np.ndarray, length: np.ndarray,
                     ref: np.ndarray) -> np.ndarray:
    """``log Σ_{h=start}^{start+length-1} exp(log P(h) - ref)`` per row (-inf for empty windows)."""
    out = np.full(len(rows), -np.inf)
    keep = np.flatnonzero(length > 0)
    if keep.size == 0:
        return out
    # Windows of similar length are padded together (at most ~40% padding), in cache-sized chunks.
    group = np.floor(2.0 * np.log2(length[keep])).astype(np.int64)
    order = keep[np.argsort(length[keep], kind="stable")]
    for members in np.split(order, np.flatnonzero(np.diff(np.sort(group))) + 1):
        width = int(length[members].max())
        step = max(1, _CHUNK_ELEMENTS // width)
        for first in range(0, len(members), step):
            idx = members[first:first + step]
            h = np.add.outer(start[idx], np.arange(width))
            last = (start[idx] + length[idx] - 1)[:, None]
            pad = h > last
            np.minimum(h, last, out=h)
            terms = tables.log_prob(h, rows[idx])
            terms -= ref[idx, None]
            np.exp(terms, out=terms)
            terms[pad] = 0.0
            with np.errstate(divide="ignore"):
                out[idx] = np.log(terms.sum(axis=1))
    return out


def hwe_exact_neg_log10_p(het: npt.ArrayLike, hom1: npt.ArrayLike, hom2: npt.ArrayLike, *,
                          midp: bool = False) -> np.ndarray:
    """-log10 of the Hardy-Weinberg exact test p-value (or mid-p) for each variant.

    Parameters
    ----------
    het, hom1, hom2
        Genotype counts, shape ``(m,)``: heterozygotes and the two homozygotes (either order).
        Whole numbers; float64 sums from aggregation are accepted and rounded.
    midp
        PLINK's ``midp`` modifier: tables as likely as the observed one count half.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` float64, -log10 p >= 0. Variants with fewer than two copies of the rarer allele
        (including those with no genotypes) have p = 1, or mid-p = 0.5, as in PLINK 2.

    Raises
    ------
    ValueError
        If a count is negative.
    """
    het_a = np.rint(np.asarray(het, dtype=np.float64)).astype(np.int64)
    hom_a = np.rint(np.asarray(hom1, dtype=np.float64)).astype(np.int64)
    hom_b = np.rint(np.asarray(hom2, dtype=np.float64)).astype(np.int64)
    if np.any(het_a < 0) or np.any(hom_a < 0) or np.any(hom_b < 0):
        raise ValueError("genotype counts must be non-negative")
    out = np.full(het_a.shape, np.log10(2.0) if midp else 0.0)
    homr_all = np.minimum(hom_a, hom_b)
    rare_all = 2 * homr_all + het_a
    test = np.flatnonzero(rare_all >= 2)
    if test.size == 0:
        return out
    r, h_obs = rare_all[test], homr_all[test]
    n = het_a[test] + hom_a[test] + hom_b[test]
    tables = _Tables(r, n)
    hmax, zero, everyone = tables.hmax, np.zeros_like(r), np.arange(len(r))
    log_total = (gammaln(2.0 * n + 1) - gammaln(n + 1.0) - gammaln(r + 1.0) - gammaln(2.0 * n - r + 1))
    log_total = np.asarray(log_total, dtype=np.float64)
    # Mode: first h with P(h + 1) < P(h), compared exactly in integers.
    mode = _first_true(zero, hmax - 1, hmax, lambda h: (r - 2 * h) * (r - 2 * h - 1) < 4 * (h + 1) * (n - r + h + 1))
    lp_obs = tables.log_prob(h_obs)
    lp_mode = tables.log_prob(mode)
    tol = 1e-11 * (1.0 + tables.log_fact[n] + tables.log_fact[r])
    above = lp_obs + tol  # tables more likely than this are in the centre
    floor = lp_obs - _DROP
    c_left = _first_true(zero, mode, hmax, lambda h: tables.log_prob(h) > above)
    c_right = _first_true(mode, hmax, hmax, lambda h: tables.log_prob(h) <= above) - 1
    t_left = _first_true(zero, c_left - 1, hmax, lambda h: tables.log_prob(h) >= floor)
    t_right = _first_true(c_right + 1, hmax, hmax, lambda h: tables.log_prob(h) < floor) - 1
    centre_len = np.maximum(c_right - c_left + 1, 0)
    tail_len = (c_left - t_left) + (t_right - c_right)

    log_p = np.empty(len(r))
    use_centre = centre_len <= tail_len
    rows = np.flatnonzero(use_centre)
    if rows.size:
        log_centre = _window_log_sums(tables, rows, c_left[rows], centre_len[rows], lp_mode[rows])
        with np.errstate(divide="ignore"):
            log_p[rows] = np.log(-np.expm1(np.minimum(log_centre + lp_mode[rows] - log_total[rows], 0.0)))
        use_centre[rows[log_p[rows] < np.log(_CENTRE_MIN_P)]] = False
    rows = np.flatnonzero(~use_centre)
    if rows.size:
        left = _window_log_sums(tables, rows, t_left[rows], c_left[rows] - t_left[rows], lp_obs[rows])
        right = _window_log_sums(tables, rows, c_right[rows] + 1, t_right[rows] - c_right[rows], lp_obs[rows])
        log_p[rows] = lp_obs[rows] - log_total[rows] + np.logaddexp(left, right)
    if midp:
        # Ties sit next to the observed table (a flat mode) or at the other end of the centre.
        candidates = np.stack([h_obs - 1, h_obs + 1, c_left - 1, c_right + 1], axis=1)
        valid = (candidates >= 0) & (candidates <= hmax[:, None]) & (candidates != h_obs[:, None])
        valid[:, 1:] &= candidates[:, 1:] != candidates[:, :1]
        valid[:, 2:] &= candidates[:, 2:] != candidates[:, 1:2]
        valid[:, 3] &= candidates[:, 3] != candidates[:, 2]
        lp_candidates = tables.log_prob(np.clip(candidates, 0, hmax[:, None]), everyone)
        ties = 1 + np.count_nonzero(valid & (np.abs(lp_candidates - lp_obs[:, None]) <= tol[:, None]), axis=1)
        half = np.log(0.5 * ties) + lp_obs - log_total
        with np.errstate(divide="ignore", invalid="ignore"):
            log_p = log_p + np.log1p(-np.exp(np.minimum(half - log_p, 0.0)))
    out[test] = np.maximum(-log_p / _LN10, 0.0)
    return out
