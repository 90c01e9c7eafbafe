"""Linear statistics of many phenotypes from one pass over a block of genotypes or dosages.

For each phenotype ``p`` and variant ``j``, PLINK 2 fits ``y_p = C b + g_j beta + e`` over the samples
that have phenotype ``p`` (and every covariate) and an observed genotype at ``j``. The statistics are
those of :mod:`engine.stats.linear.kernel` (``X'X``, ``X'y``, ``y'y`` packed in :class:`engine.stats.linear.kernel.LinearLayout`
order), one row of ``Q`` values per phenotype, so a block's output is ``(m, P * Q)``: phenotype-major.

The site's cohort is the union of the phenotypes' samples. Phenotypes with the same missingness
pattern form a *group* (PLINK 2 groups them the same way) and share everything that depends on the
sample set. The genotype block is converted to float64 once, a cache-sized chunk at a time, and one
thin GEMM ``G'[C, Y, C restricted to each group]`` serves every phenotype (phenotype values are 0
where missing, so ``g'y_p`` and ``C'y_p`` need no further restriction), with one more for ``g'g``
per group. A group costs ``K + 1`` more GEMM columns; a phenotype one.

Genotypes are int8 hard calls (-127 missing) or float dosages (NaN missing, as PLINK 2's dosages);
a sample missing the genotype is left out of that variant only (the sparse correction of
:mod:`engine.stats.linear.kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.stats.linear.kernel import LinearLayout, flip_effect_allele, missing_call_indicator, pack_statistics

#: float64 values converted per GEMM chunk (~8 MiB: stays in cache between conversion and GEMM).
_GEMM_CHUNK_VALUES = 1 << 20


@dataclass(frozen=True)
class PhenotypeGroups:
    """Phenotypes of a cohort grouped by missingness, with the per-sample rows the kernel needs.

    ``y`` ``(n, P)`` phenotypes with 0 where missing; ``group_of`` ``(P,)`` each phenotype's group;
    ``present`` ``(n, G)`` 0/1, the samples of each group (groups whose samples are the whole cohort
    use the cohort's sums directly); ``per_sample`` ``(n, T + K P + P + G T)``:
    ``[triu(c c'), c y_1 .. c y_P, y_1^2 .. y_P^2, triu(c c') in group 1 .. G]`` with ``T = K(K+1)/2``;
    ``totals`` its column sums over the cohort.
    """

    design: np.ndarray
    y: np.ndarray
    group_of: np.ndarray
    complete: np.ndarray  # bool (G,): the group has every sample of the cohort
    present: np.ndarray
    per_sample: np.ndarray
    totals: np.ndarray

    @property
    def n_phenotypes(self) -> int:
        return self.y.shape[1]

    @property
    def layout(self) -> LinearLayout:
        return LinearLayout(self.design.shape[1])


def group_phenotypes(design: np.ndarray, phenotypes: np.ndarray) -> PhenotypeGroups:
    """Group ``phenotypes`` ``(n, P)`` (NaN missing) by missingness and precompute per-sample rows."""
    present = np.isfinite(phenotypes)
    patterns, group_of = np.unique(present.T, axis=0, return_inverse=True)
    y = np.where(present, phenotypes, 0.0)
    k = design.shape[1]
    rows, cols = np.triu_indices(k)
    pairs = design[:, rows] * design[:, cols]
    in_group = patterns.T.astype(np.float64)  # (n, G)
    per_sample = np.column_stack([pairs, (design[:, :, None] * y[:, None, :]).transpose(0, 2, 1).reshape(len(y), -1),
                                  y * y, (pairs[:, None, :] * in_group[:, :, None]).reshape(len(y), -1)])
    return PhenotypeGroups(design=design, y=y, group_of=np.asarray(group_of).ravel(),
                           complete=np.all(patterns, axis=1), present=in_group, per_sample=per_sample,
                           totals=per_sample.sum(axis=0))


def _filled(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``raw`` as float64 in ``out`` with missing calls set to 0 (in one pass: ``fmax`` maps NaN to 0
    and keeps dosages, which are >= 0; ``maximum`` maps the int8 code -127 to 0)."""
    np.copyto(out, raw, casting="unsafe")
    (np.fmax if raw.dtype.kind == "f" else np.maximum)(out, 0.0, out=out)
    return out


def phenotype_statistics(genotypes: np.ndarray, groups: PhenotypeGroups, flip: np.ndarray | None = None) -> np.ndarray:
    """Packed linear statistics ``(m, P * Q)`` of every phenotype for a block of variants.

    One conversion of each cache-sized chunk of genotypes to float64 and two GEMMs on it serve every
    phenotype: ``G'[C, Y, C in group 1 .. G]`` and ``(G o G)'[1, group 1 .. G]``; the missing calls'
    share of the per-sample sums comes from one sparse product (as in :mod:`engine.stats.linear.kernel`).

    Parameters
    ----------
    genotypes
        ``(n, m)`` int8 allele counts (-127 missing) or float dosages (NaN missing) of the counted allele.
    groups
        :func:`group_phenotypes` of the cohort's design and phenotypes (same rows as ``genotypes``).
    flip
        ``(m,)`` bool: variants whose statistics are returned for the other allele.
    """
    design, y = groups.design, groups.y
    layout = groups.layout
    k, n_pheno = design.shape[1], y.shape[1]
    n, m = genotypes.shape
    n_triu = k * (k + 1) // 2
    partial = np.flatnonzero(~groups.complete)  # groups that lack some of the cohort's samples
    raw = np.asfortranarray(genotypes)
    missing = np.asarray(missing_call_indicator(raw) @ groups.per_sample)
    present = groups.present[:, partial]
    weights = np.ascontiguousarray(np.column_stack([design, y, (design[:, None, :] * present[:, :, None])
                                                    .reshape(n, -1)]).T)  # (K + P + |partial| K, n)
    squares = np.ascontiguousarray(np.column_stack([np.ones(n), present]).T)
    cross = np.empty((m, weights.shape[0]))
    gg = np.empty((m, squares.shape[0]))
    chunk = max(1, min(m, _GEMM_CHUNK_VALUES // max(n, 1)))
    buffer = np.empty((n, chunk), order="F")
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        view = _filled(raw[:, start:stop], buffer[:, : stop - start])
        cross[start:stop] = (weights @ view).T
        view *= view
        gg[start:stop] = (squares @ view).T
    where = {int(g): i for i, g in enumerate(partial)}
    out = np.empty((m, n_pheno * layout.width))
    for p in range(n_pheno):
        group = int(groups.group_of[p])
        if group in where:
            i = where[group]
            cc_columns = slice(n_triu + n_pheno * (k + 1) + group * n_triu, n_triu + n_pheno * (k + 1) + (group + 1) * n_triu)
            cc = groups.totals[cc_columns] - missing[:, cc_columns]
            cg = cross[:, k + n_pheno + i * k: k + n_pheno + (i + 1) * k]
            g2 = gg[:, 1 + i]
        else:
            cc = groups.totals[:n_triu] - missing[:, :n_triu]
            cg, g2 = cross[:, :k], gg[:, 0]
        cy_columns = slice(n_triu + p * k, n_triu + (p + 1) * k)
        yy_column = n_triu + n_pheno * k + p
        stats = pack_statistics(layout, cc, cg, g2, groups.totals[cy_columns] - missing[:, cy_columns],
                                cross[:, k + p], groups.totals[yy_column] - missing[:, yy_column])
        if flip is not None:
            stats = flip_effect_allele(stats, flip, k)
        out[:, p * layout.width: (p + 1) * layout.width] = stats
    return out
