"""Study-level centring and scaling of the phenotype and covariates (affine-invariant numerics).

Regression estimates of the genotype effect do not depend on affine changes of the covariates, and
change with the phenotype's scale only by that scale; the arithmetic does. A phenotype in tiny units
(SD 1e-8) or with a large offset (1e7), or a covariate scaled by 1e-9, makes the sums that sites send
badly conditioned, and under secure aggregation lost in the fixed-point encoding (resolution 2^-40).

So every association analysis works on ``z = (x - centre) / scale`` for the phenotype and for each
covariate, with one ``(2, 1 + k)`` table of constants (row 0 centres, row 1 scales; column 0 the
phenotype, then the covariates) that the coordinator sends to every site in the task
(:data:`STANDARDISE_INPUT`). The constants are study-level: they come from the ``moments`` analysis
(:class:`engine.stats.moments.MomentsStatistic`), the pooled ``n, sum z, sum z^2`` of each column
over the analysed samples, securely aggregated like any statistic. Those pooled sums are what the
coordinator already sees in the covariate-only part of the linear statistics of any variant without
missing calls, so they release nothing new. A few rounds refine the constants until every column has
mean ~0 and SD ~1 in the transformed units (:func:`refine`), whatever the original scale: the first
round in the original units may lose a tiny column's second moment to the fixed-point resolution, and
then bounds it, so the next round rescales it into range.

A cohort of ``P`` phenotypes (one genotype pass for all, :mod:`engine.stats.linear.phenotypes`) has a
``(2, P + k)`` table: one column per phenotype, centred and scaled over that phenotype's own samples,
then the covariates once, over the union of the phenotypes' samples (any affine change of the
covariates leaves every phenotype's genotype effect unchanged). Its ``moments`` row counts each column's
samples: ``[n (P + k), sum z (P + k), sum z^2 (P + k)]`` (:func:`moments_row`; ``refine(...,
per_column_n=True)``).

Results come back on the original scale exactly: the genotype's beta and SE of a linear model are
multiplied by the phenotype's scale; logistic models leave the 0/1 phenotype untransformed (the
genotype's log odds ratio is invariant to affine changes of the covariates).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from engine.cohort.cohort import Cohort
from engine.errors import ProtocolError

#: Task input name of the ``(2, 1 + k)`` float64 table (row 0 centres, row 1 scales).
STANDARDISE_INPUT = "standardise"
#: At most this many ``moments`` rounds (each gains ~2^20 in a column's scale when its second moment
#: was lost to the fixed-point resolution; three suffice from SD 1e-12 upwards under secagg).
MAX_ROUNDS = 6
#: A column counts as settled when its transformed mean is within this of 0 and its SD within a
#: factor of this of 1 (only conditioning matters: results are mapped back exactly).
_SETTLED = 4.0
#: A column's variance is resolved when it exceeds this many times its error bound.
_RESOLVED = 100.0
#: A column's variance is known to ~1e-8 relative when it exceeds this many times its error bound: the
#: constants it gives standardise it without a confirming round.
_PRECISE = 1e8
#: An unresolved column whose SD bound is below this fraction of its mean is constant.
_CONSTANT = 1e-11


def identity(n_covariates: int, n_phenotypes: int = 1) -> np.ndarray:
    """The table that leaves the phenotype(s) and ``n_covariates`` covariates unchanged, ``(2, P + k)``."""
    return np.vstack([np.zeros(n_phenotypes + n_covariates), np.ones(n_phenotypes + n_covariates)])


def table_phenotypes(cohort: Cohort) -> int:
    """Phenotype columns of ``cohort``'s table: ``P`` for a multi-phenotype cohort, else 1."""
    return 1 if cohort.phenotype_matrix is None else cohort.phenotype_matrix.shape[1]


def standardise_cohort(cohort: Cohort, table: np.ndarray | None, scale_phenotype: bool) -> Cohort:
    """``cohort`` with ``(x - centre) / scale`` applied to its phenotype(s) and covariates.

    ``table`` ``(2, 1 + k)``, or ``(2, P + k)`` for a cohort of ``P`` phenotypes (None: unchanged). ``scale_phenotype`` False (case/control models)
    requires the phenotype column to be the identity: a 0/1 phenotype is never transformed.

    Raises
    ------
    ProtocolError
        The table has the wrong shape, a non-positive or non-finite scale, or transforms a
        case/control phenotype.
    """
    if table is None:
        return cohort
    k, n_pheno = cohort.covariates.shape[1], table_phenotypes(cohort)
    if table.shape != (2, n_pheno + k):
        raise ProtocolError(f"input {STANDARDISE_INPUT!r} has shape {table.shape}, expected (2, {n_pheno + k}) "
                            "(centres and scales of the phenotype(s) and each covariate)")
    centre, scale = table
    if not (np.all(np.isfinite(table)) and np.all(scale > 0)):
        raise ProtocolError(f"input {STANDARDISE_INPUT!r}: scales must be finite and positive")
    if not scale_phenotype and (centre[0] != 0.0 or scale[0] != 1.0):
        raise ProtocolError(f"input {STANDARDISE_INPUT!r}: a case/control phenotype is not rescaled "
                            f"(got centre {centre[0]!r}, scale {scale[0]!r})")
    if cohort.phenotype_matrix is not None:
        return dataclasses.replace(
            cohort,
            phenotype_matrix=(cohort.phenotype_matrix - centre[:n_pheno]) / scale[:n_pheno],
            covariates=np.ascontiguousarray((cohort.covariates - centre[n_pheno:]) / scale[n_pheno:]),
        )
    return dataclasses.replace(
        cohort,
        phenotype=(cohort.phenotype - centre[0]) / scale[0],
        covariates=np.ascontiguousarray((cohort.covariates - centre[1:]) / scale[1:]),
    )


def moments_row(cohort: Cohort) -> np.ndarray:
    """``[n, sum z (1 + k), sum z^2 (1 + k)]`` over the cohort, z = [phenotype, covariates]; ``(1 + 2(1 + k),)``.

    For a cohort of ``P`` phenotypes: ``[n (P + k), sum z (P + k), sum z^2 (P + k)]``, z = [phenotypes,
    covariates], each phenotype's sums over its own samples (``n`` per column); ``(3(P + k),)``.
    """
    if cohort.phenotype_matrix is not None:
        values = np.column_stack([cohort.phenotype_matrix, cohort.covariates])
        present = np.isfinite(values)
        filled = np.where(present, values, 0.0)
        return np.concatenate([present.sum(axis=0).astype(np.float64), filled.sum(axis=0), (filled * filled).sum(axis=0)])
    values = np.column_stack([cohort.phenotype, cohort.covariates])
    return np.concatenate([[float(cohort.n_samples)], values.sum(axis=0), (values * values).sum(axis=0)])


def moments_width(n_columns: int, per_column_n: bool) -> int:
    """Width of a ``moments`` row for a table of ``n_columns`` columns."""
    return 3 * n_columns if per_column_n else 1 + 2 * n_columns


@dataclass(frozen=True)
class Refinement:
    """One step of :func:`refine`: the next table, whether it is final, and the constant columns."""

    table: np.ndarray  # (2, 1 + k)
    settled: bool
    constant: np.ndarray  # bool (1 + k,): columns with no variance over the pooled cohort
    resolved: np.ndarray  # bool (1 + k,): columns whose variance these totals resolved


def refine(table: np.ndarray, totals: np.ndarray, resolution: float, scale_phenotype: bool,
           per_column_n: bool = False) -> Refinement:
    """The next standardisation from pooled ``moments`` ``totals`` computed under ``table``.

    Parameters
    ----------
    table
        ``(2, 1 + k)`` the constants the totals were computed with.
    totals
        ``(1 + 2(1 + k),)`` pooled :func:`moments_row` values.
    resolution
        Absolute error bound of each aggregated sum from the privacy mode's encoding
        (``n_sites * 2^-41`` under secagg; 0 in float64); float64 rounding is added here.
    scale_phenotype
        False: the phenotype column stays the identity (case/control).
    per_column_n
        The totals count each column's samples (``(3(P + k),)``, a multi-phenotype cohort).
    """
    k1 = table.shape[1]
    if per_column_n:
        n = np.asarray(totals[:k1], dtype=np.float64)
        s1, s2 = totals[k1: 2 * k1], totals[2 * k1: 3 * k1]
    else:
        n = np.full(k1, float(totals[0]))
        s1, s2 = totals[1: 1 + k1], totals[1 + k1: 1 + 2 * k1]
    if not np.all(n > 0):
        raise ValueError("the pooled cohort is empty")
    mean = s1 / n
    var = s2 / n - mean * mean
    error = (resolution * (1.0 + 2.0 * np.abs(mean)) + 8.0 * np.finfo(float).eps * np.abs(s2)) / n
    resolved = var > _RESOLVED * error + 1e-300
    # A resolved column is recentred and rescaled by its SD. For an unresolved one every |z| is at
    # most sqrt(sum z^2 + error bound): recentre, and rescale by that bound (into range next round).
    bound = np.sqrt(np.maximum(s2, 0.0) / n + error)
    sd = np.where(resolved, np.sqrt(np.maximum(var, 1e-300)), bound)
    centre = table[0] + table[1] * mean
    scale = table[1] * sd
    # Settled: already in range, or resolved so precisely that the new constants put it in range.
    precise = var > _PRECISE * error
    settled_cols = resolved & (((np.abs(mean) <= _SETTLED) & (sd <= _SETTLED) & (sd >= 1.0 / _SETTLED)) | precise)
    # Constant: its spread is below float64's precision around its value (or was never resolved).
    constant = ~resolved & (scale <= _CONSTANT * np.abs(centre))
    if not scale_phenotype:
        centre[0], scale[0] = 0.0, 1.0
        settled_cols[0], constant[0] = True, False
    centre = np.where(constant, table[0], centre)
    scale = np.where(constant | ~(scale > 0), table[1], scale)
    return Refinement(np.vstack([centre, scale]), bool(np.all(settled_cols | constant)), constant, resolved)
