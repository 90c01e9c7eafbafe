"""Linear statistics of many phenotypes from one pass over a block of genotypes or dosages.

For each phenotype ``p`` and variant ``j``, PLINK 2 fits ``y_p = C b + g_j beta + e`` over the samples
that have phenotype ``p`` (and every covariate) and an observed genotype at ``j``. The statistics are
those of :mod:`engine.stats.linear.kernel` (``X'X``, ``X'y``, ``y'y`` packed in :class:`engine.stats.linear.kernel.LinearLayout`
order), one row of ``Q`` values per phenotype, so a block's output is ``(m, P * Q)``: phenotype-major.

The site's cohort is the union of the phenotypes' samples. Phenotypes with the same missingness
pattern form a *group* (PLINK 2 groups them the same way) and share everything that depends on the
sample set. The genotype block is converted to float64 once, a cache-sized chunk at a time, and one
thin GEMM ``G'[C, Y]`` serves every phenotype (phenotype values are 0 where missing, so ``g'y_p`` and
``C'y_p`` need no further restriction). A group that lacks some of the cohort's samples corrects the
cohort's ``C'g`` and ``g'g`` by the rows it lacks (or sums its own rows, if fewer): a phenotype costs
one GEMM row, a missingness pattern ``K + 1`` products over the samples it lacks.

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


#: A partial group's sums come from the samples it lacks (cohort sums minus theirs) when it lacks at
#: most this fraction of the cohort, else from its own samples: either way a gather of the smaller set.
_SUBTRACT_UP_TO = 0.5


@dataclass(frozen=True)
class PhenotypeGroups:
    """Phenotypes of a cohort grouped by missingness, with the per-sample rows the kernel needs.

    ``y`` ``(n, P)`` phenotypes with 0 where missing; ``group_of`` ``(P,)`` each phenotype's group
    (groups whose samples are the whole cohort use the cohort's sums directly); ``per_sample`` ``(n, T + K P + P + G T)``:
    ``[triu(c c'), c y_1 .. c y_P, y_1^2 .. y_P^2, triu(c c') in group 1 .. G]`` with ``T = K(K+1)/2``;
    ``totals`` its column sums over the cohort. ``gather`` (one per group): the sample rows whose
    genotypes give the group's ``C'g`` and ``g'g`` (none for a complete group); ``subtract`` ``(G,)``:
    those rows are the samples the group lacks (its sums are the cohort's minus theirs), else its own.
    """

    design: np.ndarray
    y: np.ndarray
    group_of: np.ndarray
    complete: np.ndarray  # bool (G,): the group has every sample of the cohort
    per_sample: np.ndarray
    totals: np.ndarray
    gather: tuple[np.ndarray, ...]
    subtract: np.ndarray

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
    n = len(y)
    lacking = [np.flatnonzero(~pattern) for pattern in patterns]
    subtract = np.array([len(rows_lacked) <= _SUBTRACT_UP_TO * n for rows_lacked in lacking])
    gather = tuple(rows_lacked if sub else np.flatnonzero(pattern)
                   for rows_lacked, sub, pattern in zip(lacking, subtract, patterns))
    return PhenotypeGroups(design=design, y=y, group_of=np.asarray(group_of).ravel(),
                           complete=np.all(patterns, axis=1), per_sample=per_sample,
                           totals=per_sample.sum(axis=0), gather=gather, subtract=subtract)


def _filled(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``raw`` as float64 in ``out`` with missing calls set to 0 (in one pass: ``fmax`` maps NaN to 0
    and keeps dosages, which are >= 0; ``maximum`` maps the int8 code -127 to 0)."""
    np.copyto(out, raw, casting="unsafe")
    (np.fmax if raw.dtype.kind == "f" else np.maximum)(out, 0.0, out=out)
    return out


@dataclass(frozen=True)
class PhenotypeSums:
    """Per variant and phenotype, sums over the samples with the phenotype and an observed call:
    ``cc`` ``(m, P, K(K+1)/2)`` (``np.triu_indices(K)`` order), ``cg`` ``(m, P, K)``, ``gg`` ``(m, P)``,
    ``cy`` ``(m, P, K)``, ``gy`` ``(m, P)``, ``yy`` ``(m, P)``."""

    cc: np.ndarray
    cg: np.ndarray
    gg: np.ndarray
    cy: np.ndarray
    gy: np.ndarray
    yy: np.ndarray


def phenotype_sums(genotypes: np.ndarray, groups: PhenotypeGroups) -> PhenotypeSums:
    """The sums of every phenotype for a block of variants, from one pass over the genotypes.

    Each cache-sized chunk of genotypes is converted to float64 once. One thin GEMM ``G'[C, Y]`` over
    the cohort gives ``C'g`` and every phenotype's ``g'y`` (phenotypes are 0 where missing), one GEMV
    ``g'g``; a group that lacks samples gets its ``C'g`` and ``g'g`` from a gather of the rows it lacks
    (subtracted from the cohort's) or of its own rows, whichever is fewer: ``K + 1`` products over that
    many samples per missingness pattern instead of ``K + 1`` over the cohort. The missing calls' share
    of ``C'C``, ``C'y``, ``y'y`` comes from one sparse product (:mod:`engine.stats.linear.kernel`).

    Parameters
    ----------
    genotypes
        ``(n, m)`` int8 allele counts (-127 missing) or float dosages (NaN missing) of the counted allele.
    groups
        :func:`group_phenotypes` of the cohort's design and phenotypes (same rows as ``genotypes``).
    """
    design, y = groups.design, groups.y
    k, n_pheno, n_groups = design.shape[1], y.shape[1], len(groups.complete)
    n, m = genotypes.shape
    n_triu = k * (k + 1) // 2
    raw = np.asfortranarray(genotypes)
    missing = np.asarray(missing_call_indicator(raw) @ groups.per_sample)
    weights = np.ascontiguousarray(np.column_stack([design, y]).T)  # (K + P, n)
    partial = np.flatnonzero(~groups.complete)
    gathered_design = {int(g): np.ascontiguousarray(design[groups.gather[g]].T) for g in partial}
    cross = np.empty((m, k + n_pheno))
    gg_all = np.empty(m)
    group_cg = np.empty((m, n_groups, k))
    group_gg = np.empty((m, n_groups))
    ones = np.ones(n)
    chunk = max(1, min(m, _GEMM_CHUNK_VALUES // max(n, 1)))
    buffer = np.empty((n, chunk), order="F")
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        view = _filled(raw[:, start:stop], buffer[:, : stop - start])
        cross[start:stop] = (weights @ view).T
        for g, rows_design in gathered_design.items():
            sub = view[groups.gather[g]]
            group_cg[start:stop, g] = (rows_design @ sub).T
            group_gg[start:stop, g] = np.einsum("ij,ij->j", sub, sub)
        view *= view
        gg_all[start:stop] = ones @ view
    for g in range(n_groups):
        if groups.complete[g]:
            group_cg[:, g], group_gg[:, g] = cross[:, :k], gg_all
        elif groups.subtract[g]:
            group_cg[:, g] = cross[:, :k] - group_cg[:, g]
            group_gg[:, g] = gg_all - group_gg[:, g]
    of = groups.group_of
    cc_columns = n_triu + n_pheno * (k + 1) + of[:, None] * n_triu + np.arange(n_triu)[None, :]  # (P, T)
    cy_columns = n_triu + np.arange(n_pheno)[:, None] * k + np.arange(k)[None, :]  # (P, K)
    yy_columns = n_triu + n_pheno * k + np.arange(n_pheno)
    return PhenotypeSums(cc=groups.totals[cc_columns] - missing[:, cc_columns], cg=group_cg[:, of], gg=group_gg[:, of],
                         cy=groups.totals[cy_columns] - missing[:, cy_columns], gy=cross[:, k:],
                         yy=groups.totals[yy_columns] - missing[:, yy_columns])


def phenotype_statistics(genotypes: np.ndarray, groups: PhenotypeGroups, flip: np.ndarray | None = None) -> np.ndarray:
    """Packed linear statistics ``(m, P * Q)`` of every phenotype for a block of variants: ``genotypes`` and
    ``groups`` as for :func:`phenotype_sums`, and

    Parameters
    ----------
    flip
        ``(m,)`` bool: variants whose statistics are returned for the other allele.
    """
    sums = phenotype_sums(genotypes, groups)
    layout = groups.layout
    k = layout.n_design
    out = np.empty((genotypes.shape[1], groups.n_phenotypes * layout.width))
    for p in range(groups.n_phenotypes):
        stats = pack_statistics(layout, sums.cc[:, p], sums.cg[:, p], sums.gg[:, p], sums.cy[:, p], sums.gy[:, p],
                                sums.yy[:, p])
        if flip is not None:
            stats = flip_effect_allele(stats, flip, k)
        out[:, p * layout.width: (p + 1) * layout.width] = stats
    return out
