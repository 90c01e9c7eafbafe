"""Selecting the analysed samples of one site, as PLINK 2 does.

A sample is analysed when it is in the .fam and has a non-missing phenotype and every requested
covariate; everyone else is dropped for the whole analysis. (Samples missing a genotype are dropped
per variant later, by the statistics kernel.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.errors import InputError
from engine.cohort.sex_chromosomes import FAM_SEX_COVARIATE, fam_sex_covariate
from engine.io.plink import FamTable
from engine.io.tables import SampleTable


@dataclass(frozen=True)
class Cohort:
    """The analysed samples of one site and their phenotype and covariates.

    ``sample_index`` holds rows of the .fam, ascending, shape ``(n,)``; ``phenotype`` ``(n,)``;
    ``covariates`` ``(n, k)``.
    """

    sample_index: np.ndarray
    phenotype: np.ndarray
    covariates: np.ndarray
    phenotype_name: str
    covariate_names: tuple[str, ...]
    n_in_fam: int
    n_dropped: int
    sex: np.ndarray | None = None  # int8 (n,) .fam sex codes of the analysed samples (1 male, 2 female, 0 unknown)
    #: ``(n, P)`` every requested phenotype, NaN where a sample lacks it (a multi-phenotype request:
    #: the cohort is then the samples with every covariate and at least one of the phenotypes).
    phenotype_matrix: np.ndarray | None = None

    @property
    def phenotypes(self) -> np.ndarray:
        """``(n, P)`` phenotypes, NaN where missing (one column for a single-phenotype cohort)."""
        return self.phenotype[:, None] if self.phenotype_matrix is None else self.phenotype_matrix

    @property
    def n_samples(self) -> int:
        return len(self.sample_index)

    @property
    def design(self) -> np.ndarray:
        """Intercept plus covariates, shape ``(n, k + 1)``, float64, C-contiguous."""
        return np.column_stack([np.ones(self.n_samples), self.covariates])


def _sample_keys(fid: np.ndarray | None, iid: np.ndarray) -> np.ndarray:
    return iid if fid is None else np.char.add(np.char.add(fid.astype(str), "\t"), iid.astype(str))


def _align(fam: FamTable, table: SampleTable, values: np.ndarray) -> np.ndarray:
    """Values of ``table`` reordered to the .fam (NaN for samples the table does not list)."""
    if table.fid is None and len(np.unique(fam.iid)) != len(fam.iid):
        raise InputError(
            f"{str(table.path)!r} is keyed by IID only but the .fam has repeated IIDs; add an FID column"
        )
    fam_keys = _sample_keys(None if table.fid is None else fam.fid, fam.iid)
    table_keys = _sample_keys(table.fid, table.iid)
    order = np.argsort(table_keys)
    sorted_keys = table_keys[order]
    where = np.searchsorted(sorted_keys, fam_keys)
    where = np.clip(where, 0, max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[where] == fam_keys) if len(sorted_keys) else np.zeros(len(fam_keys), bool)
    out = np.full(len(fam_keys), np.nan)
    out[found] = values[order[where[found]]]
    return out


def code_phenotype(values: np.ndarray, coding: str, where: str) -> np.ndarray:
    """Phenotype values as analysed: unchanged for ``quantitative``; 0 control / 1 case otherwise.

    ``case-control`` is PLINK's 1 = control, 2 = case with 0 (and -9/NA) missing; ``case-control-01``
    is PLINK's ``--1``: 0 = control, 1 = case, -9/NA missing. Any other value is an error naming
    ``where`` (file and column), never silently treated as missing.
    """
    if coding == "quantitative":
        return values
    if coding == "case-control":
        values = np.where(values == 0, np.nan, values)
        allowed, offset = (1.0, 2.0), 1.0
    elif coding == "case-control-01":
        allowed, offset = (0.0, 1.0), 0.0
    else:
        raise InputError(f"unknown phenotype coding {coding!r}")
    present = np.isfinite(values)
    bad = present & ~np.isin(values, allowed)
    if np.any(bad):
        example = values[np.flatnonzero(bad)[0]]
        raise InputError(f"{where}: case/control value {example:g} is not one of {allowed[0]:g}/{allowed[1]:g} "
                         f"(missing: {'0, ' if coding == 'case-control' else ''}-9 or NA"
                         f"{'; use --1 for 0/1 coding' if coding == 'case-control' and example in (0.0, 1.0) else ''})")
    return values - offset


def build_cohort(
    fam: FamTable,
    pheno: SampleTable,
    phenotype: str,
    covar: SampleTable | None = None,
    covariates: Sequence[str] = (),
    coding: str = "quantitative",
    include: np.ndarray | None = None,
    extra: SampleTable | None = None,
    missing_value: float = -9.0,
) -> Cohort:
    """Analysed samples: in the .fam, with the phenotype (unless ``phenotype`` is empty) and every
    covariate present. Without a phenotype, ``Cohort.phenotype`` is all zeros.

    ``phenotype`` may name several phenotypes separated by commas: the cohort is then every sample with
    the covariates and at least one of them, ``Cohort.phenotype_matrix`` holds them (NaN where missing)
    and ``Cohort.phenotype`` is all zeros.

    ``include`` (bool ``(n_fam,)``), when given, restricts the cohort further before any statistic
    (the site's consent filter, engine/cohort/consent.py); excluded samples count as dropped.
    ``missing_value`` is PLINK 2's ``--input-missing-phenotype`` (phenotype and covariates).

    A covariate that is a column of ``extra`` (the site's PCA scores, site_agent/scores.py) is taken
    from it, :data:`engine.cohort.sex_chromosomes.FAM_SEX_COVARIATE` from the .fam (PLINK 2's sex covariate
    on chrX), the others from ``covar``.

    Raises
    ------
    InputError
        Unknown phenotype/covariate name, non-numeric values, covariates requested without a file.
    """
    from_extra = set(extra.columns) if extra is not None else set()
    if covar is None and any(name not in from_extra and name != FAM_SEX_COVARIATE for name in covariates):
        raise InputError(f"covariates {list(covariates)} requested but no covariate file was given")
    matrix = None
    if "," in phenotype:  # several phenotypes (PHENOTYPE_SEPARATOR): each analysed over its own samples
        matrix = np.column_stack([_align(fam, pheno, code_phenotype(pheno.numeric(name, missing_value), coding,
                                                                    f"{str(pheno.path)!r} column {name!r}"))
                                  for name in phenotype.split(",")])
        y = np.where(np.any(np.isfinite(matrix), axis=1), 0.0, np.nan)
    elif phenotype:
        raw = code_phenotype(pheno.numeric(phenotype, missing_value), coding, f"{str(pheno.path)!r} column {phenotype!r}")
        y = _align(fam, pheno, raw)
    else:
        y = np.zeros(len(fam))
    def column(name: str) -> np.ndarray:
        if name == FAM_SEX_COVARIATE:
            return fam_sex_covariate(fam.sex)
        table = extra if extra is not None and name in from_extra else covar
        assert table is not None  # checked above
        return _align(fam, table, table.numeric(name, missing_value))

    columns = [column(name) for name in covariates]
    covariate_matrix = np.column_stack(columns) if columns else np.empty((len(fam), 0))
    keep = np.isfinite(y) & np.all(np.isfinite(covariate_matrix), axis=1)
    if include is not None:
        if include.shape != (len(fam),) or include.dtype != np.bool_:
            raise InputError(f"cohort include mask must be bool of shape ({len(fam)},), got {include.dtype} {include.shape}")
        keep &= include
    index = np.flatnonzero(keep)
    return Cohort(
        sample_index=index,
        phenotype=y[index],
        covariates=np.ascontiguousarray(covariate_matrix[index]),
        phenotype_name=phenotype,
        covariate_names=tuple(covariates),
        n_in_fam=len(fam),
        n_dropped=int(len(fam) - len(index)),
        sex=fam.sex[index],
        phenotype_matrix=None if matrix is None else matrix[index],
    )
