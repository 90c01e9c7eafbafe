"""Linear statistics of many phenotypes from one pass over a block of genotypes or dosages.

For each phenotype ``p`` and variant ``j``, PLINK 2 fits ``y_p = C b + g_j beta + e`` over the samples
that have phenotype ``p`` (and every covariate) and an observed genotype at ``j``. The statistics are
those of :mod:`engine.linear` (``X'X``, ``X'y``, ``y'y`` packed in :class:`engine.linear.LinearLayout`
order), one row of ``Q`` values per phenotype, so a block's output is ``(m, P * Q)``: phenotype-major.

The site's cohort is the union of the phenotypes' samples. Phenotypes with the same missingness
pattern form a *group* (PLINK 2 groups them the same way) and share everything that depends on the
sample set. The genotype block is converted to float64 once, a cache-sized chunk at a time, and one
thin GEMM ``G'[C, Y]`` serves every phenotype (phenotype values are 0 where missing, so ``g'y_p``
and ``C'y_p`` need no further restriction). What depends on a group's sample set, ``C'g``, ``g'g``
and ``C'C``, is the union's value minus the contribution of the few samples the group lacks
(``E_g``), computed from those rows only: the cost of a group is proportional to its missing
phenotypes, not to the cohort.

Genotypes are int8 hard calls (-127 missing) or float dosages (NaN missing, as PLINK 2's dosages);
a sample missing the genotype is left out of that variant only (the sparse correction of
:mod:`engine.linear`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.linear import LinearLayout, flip_effect_allele, missing_call_indicator, missing_calls, pack_statistics

#: float64 values converted per GEMM chunk (~8 MiB: stays in cache between conversion and GEMM).
_GEMM_CHUNK_VALUES = 1 << 20


@dataclass(frozen=True)
class PhenotypeGroups:
    """Phenotypes of a cohort grouped by missingness, with the per-sample products they need.

    ``y`` ``(n, P)`` phenotypes with 0 where missing; ``group_of`` ``(P,)`` each phenotype's group;
    ``excluded[g]`` the cohort rows group ``g`` lacks; ``per_sample`` ``(n, T + K P + P)``:
    ``[triu(c c'), c y_1 .. c y_P, y_1^2 .. y_P^2]`` with ``T = K(K+1)/2``; ``totals`` its column
    sums over the cohort.
    """

    design: np.ndarray
    y: np.ndarray
    group_of: np.ndarray
    excluded: tuple[np.ndarray, ...]
    per_sample: np.ndarray
    totals: np.ndarray

    @property
    def n_phenotypes(self) -> int:
        return self.y.shape[1]

    @property
    def layout(self) -> LinearLayout:
        return LinearLayout(self.design.shape[1])


def group_phenotypes(design: np.ndarray, phenotypes: np.ndarray) -> PhenotypeGroups:
    """Group ``phenotypes`` ``(n, P)`` (NaN missing) by missingness and precompute per-sample products."""
    present = np.isfinite(phenotypes)
    patterns, group_of = np.unique(present.T, axis=0, return_inverse=True)
    excluded = tuple(np.flatnonzero(~pattern) for pattern in patterns)
    y = np.where(present, phenotypes, 0.0)
    k = design.shape[1]
    rows, cols = np.triu_indices(k)
    per_sample = np.column_stack([design[:, rows] * design[:, cols],
                                  (design[:, :, None] * y[:, None, :]).transpose(0, 2, 1).reshape(len(y), -1),
                                  y * y])
    return PhenotypeGroups(design=design, y=y, group_of=np.asarray(group_of).ravel(), excluded=excluded,
                           per_sample=per_sample, totals=per_sample.sum(axis=0))


def _filled(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``raw`` as float64 in ``out`` with missing calls set to 0."""
    np.copyto(out, raw, casting="unsafe")
    if raw.dtype.kind == "f":
        np.nan_to_num(out, copy=False, nan=0.0)
    else:
        np.maximum(out, 0.0, out=out)
    return out


def phenotype_statistics(genotypes: np.ndarray, groups: PhenotypeGroups, flip: np.ndarray | None = None) -> np.ndarray:
    """Packed linear statistics ``(m, P * Q)`` of every phenotype for a block of variants.

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
    raw = np.asfortranarray(genotypes)
    missing = np.asarray(missing_call_indicator(raw) @ groups.per_sample)  # (m, T + K P + P)
    weights = np.ascontiguousarray(np.column_stack([design, y]).T)  # (K + P, n)
    cross = np.empty((m, k + n_pheno))
    gg = np.empty(m)
    chunk = max(1, min(m, _GEMM_CHUNK_VALUES // max(n, 1)))
    buffer = np.empty((n, chunk), order="F")
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        view = _filled(raw[:, start:stop], buffer[:, : stop - start])
        cross[start:stop] = (weights @ view).T
        gg[start:stop] = np.einsum("ij,ij->j", view, view)
    # Per group: what the samples it lacks contribute to C'g, g'g and (where missing) C'C.
    lacking = []
    triu_rows, triu_cols = np.triu_indices(k)
    for rows in groups.excluded:
        if len(rows) == 0:
            lacking.append(None)
            continue
        sub = raw[rows]
        filled = _filled(sub, np.empty(sub.shape))
        cc_rows = design[rows][:, triu_rows] * design[rows][:, triu_cols]
        lacking.append((filled.T @ design[rows], np.einsum("ij,ij->j", filled, filled),
                        missing_calls(sub).astype(np.float64).T @ cc_rows, cc_rows.sum(axis=0)))
    out = np.empty((m, n_pheno * layout.width))
    for p in range(n_pheno):
        cc = groups.totals[:n_triu] - missing[:, :n_triu]
        cg, g2 = cross[:, :k], gg
        part = lacking[groups.group_of[p]]
        if part is not None:
            cg_lack, gg_lack, cc_missing_lack, cc_lack = part
            cc = cc - cc_lack + cc_missing_lack
            cg, g2 = cg - cg_lack, g2 - gg_lack
        cy_columns = slice(n_triu + p * k, n_triu + (p + 1) * k)
        yy_column = n_triu + n_pheno * k + p
        stats = pack_statistics(layout, cc, cg, g2, groups.totals[cy_columns] - missing[:, cy_columns],
                                cross[:, k + p], groups.totals[yy_column] - missing[:, yy_column])
        if flip is not None:
            stats = flip_effect_allele(stats, flip, k)
        out[:, p * layout.width: (p + 1) * layout.width] = stats
    return out
