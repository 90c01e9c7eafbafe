"""A compact layout of the linear statistics of many phenotypes, for variants without missing calls.

For phenotype ``p`` and variant ``j`` the statistics are sums over ``A = s_p ∩ obs_j`` (the samples
with the phenotype and a call at ``j``). Where no sample of ``s_p`` misses the call, ``A = s_p`` and
``C'C``, ``C'y`` and ``y'y`` are the same for every variant: the phenotype's *totals*, sent once
(statistic ``linear_totals``, one row). Per variant only ``N``, ``C'g``, ``g'g`` and ``g'y`` remain
(statistic ``linear_complete``): ``K + 3`` values per phenotype instead of ``Q = P(P+1)/2 + P + 1``
(9 instead of 36 with 5 covariates). ``N`` tells the coordinator which variants had a missing call
in some phenotype's samples (``N < n_p``, as the released per-variant N shows anyway); those get the
full statistics in one more ``linear`` round. The layout is per phenotype, never per missingness
group, since groups are a site's own: every site sends the same shape.

Rows are phenotype-major: ``[N, C'g (K), g'g, g'y]`` per phenotype (``linear_complete``) and
``[triu(C'C) (K(K+1)/2), C'y (K), y'y]`` per phenotype (``linear_totals``).
"""

from __future__ import annotations

import numpy as np

from engine.stats.linear.phenotypes import PhenotypeGroups, phenotype_sums


def complete_width(n_design: int) -> int:
    """Values per phenotype per variant of ``linear_complete``: ``N``, ``C'g``, ``g'g``, ``g'y``."""
    return n_design + 3


def totals_width(n_design: int) -> int:
    """Values per phenotype of ``linear_totals``: ``triu(C'C)``, ``C'y``, ``y'y``."""
    return n_design * (n_design + 1) // 2 + n_design + 1


def compact_statistics(genotypes: np.ndarray, groups: PhenotypeGroups, flip: np.ndarray | None = None) -> np.ndarray:
    """``linear_complete`` rows ``(m, P (K + 3))`` of a block of variants, straight from the kernel's sums
    (:func:`engine.stats.linear.phenotypes.phenotype_sums`), for the other allele where ``flip``: with ``N``
    and ``C'1`` the observed samples' count and covariate sums (row 0 of ``C'C``), ``C'(2 - g) = 2 C'1 - C'g``,
    ``(2 - g)'(2 - g) = 4 N - 4 sum(g) + g'g`` and ``(2 - g)'y = 2 sum(y) - g'y``, as
    :func:`engine.stats.linear.kernel.flip_effect_allele` does for the full layout."""
    sums = phenotype_sums(genotypes, groups)
    k = groups.design.shape[1]
    n_obs, cg, gg, gy = sums.cc[:, :, 0], sums.cg, sums.gg, sums.gy
    if flip is not None and np.any(flip):
        cg, gg, gy = cg.copy(), gg.copy(), gy.copy()
        sum_g = sums.cg[flip, :, 0]
        cg[flip] = 2.0 * sums.cc[flip, :, :k] - sums.cg[flip]
        gg[flip] = 4.0 * n_obs[flip] - 4.0 * sum_g + sums.gg[flip]
        gy[flip] = 2.0 * sums.cy[flip, :, 0] - sums.gy[flip]
    m, n_pheno = gg.shape
    return np.concatenate([n_obs[:, :, None], cg, gg[:, :, None], gy[:, :, None]], axis=2).reshape(m, n_pheno * (k + 3))


def totals_row(groups: PhenotypeGroups) -> np.ndarray:
    """The ``linear_totals`` row ``(P (K(K+1)/2 + K + 1),)`` of a cohort: each phenotype's sums over its samples."""
    k, n_pheno = groups.design.shape[1], groups.n_phenotypes
    n_triu = k * (k + 1) // 2
    parts = []
    for p in range(n_pheno):
        group = int(groups.group_of[p])
        start = n_triu + n_pheno * (k + 1) + group * n_triu
        parts += [groups.totals[start: start + n_triu], groups.totals[n_triu + p * k: n_triu + (p + 1) * k],
                  groups.totals[n_triu + n_pheno * k + p: n_triu + n_pheno * k + p + 1]]
    return np.concatenate(parts)


def incomplete_variants(compact: np.ndarray, totals: np.ndarray, n_design: int, n_phenotypes: int) -> np.ndarray:
    """bool ``(m,)``: the variants of pooled ``linear_complete`` rows ``(m, P (K + 3))`` where some phenotype's
    samples miss a call (its ``N`` is below the phenotype's total, the first value of its ``linear_totals``
    ``(P (K(K+1)/2 + K + 1),)``); their ``C'C``, ``C'y``, ``y'y`` are not the totals, so they need the full
    ``linear`` statistics (:func:`engine.stats.linear.solve.sums_from_compact` takes the others)."""
    cw, tw = complete_width(n_design), totals_width(n_design)
    incomplete = np.zeros(len(compact), dtype=bool)
    for p in range(n_phenotypes):
        incomplete |= np.rint(compact[:, p * cw]) != np.rint(totals[p * tw])
    return incomplete
