"""Dosage sums per variant: PLINK 2's dosage-based allele frequencies and MaCH imputation quality.

PLINK 2 computes ``.afreq`` (and ``--maf``) from dosages, and its MaCH R2 (``--freq cols=+machr2``,
``--glm cols=+machr2``, ``--mach-r2-filter``) from the dosages of the samples with one:
``R2 = var(d) / (2 p (1 - p))`` with ``var(d) = mean(d^2) - mean(d)^2`` and ``p = mean(d) / 2``.
Both need only three sums over samples per variant: the number of samples with a dosage, the sum
of dosages and the sum of squared dosages. They are additive, so a site sends them like any other
statistic (site statistic ``dosage_sums``) and the pooled R2 is exact. At a site with hard calls the
dosage is the call (0/1/2), as for PLINK 2 on a ``.bed``.

Hard-call QC (``.gcount``, ``.hardy``, ``.vmiss``, ``--geno``, ``--hwe``) stays on hard calls, as in
PLINK 2: a dosage further than 0.1 from an integer has no hard call (:mod:`engine.io.dosage`).

On the sex chromosomes PLINK 2 counts haploid dosages as one allele observation and half a dosage
(chrX males, chrY males only, MT everyone; measured on PLINK 2 with a dosage ``.pgen``): the sites
send the sums split by .fam sex (input ``by_sex``, as the ``qc`` round) and :func:`sums_by_class`
maps them. PLINK 2 reports no MaCH R2 on chrX and MT (``NA``); on chrY it is the haploid
``var(d / 2) / (p (1 - p))``, half the diploid formula on the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.errors import InputError
from engine.stats.linear.kernel import missing_calls
from engine.cohort.sex_chromosomes import MT, X, Y
from engine.stats.qc.counts import BY_SEX_INPUT, SMALL_EPSILON, AlleleFrequencies, VariantFilter
from engine.stats.statistic import InputSpec

#: Values per variant: samples with a dosage, sum of dosages, sum of squared dosages.
SUM_COLUMNS = ("n_observed", "dosage_sum", "dosage_squares")


def mach_r2(n_observed: np.ndarray, dosage_sum: np.ndarray, dosage_squares: np.ndarray) -> np.ndarray:
    """MaCH R2 ``(m,)`` from per-variant sums; NaN for a monomorphic variant (or no dosage), as PLINK 2."""
    n = np.asarray(n_observed, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = dosage_sum / n
        variance = dosage_squares / n - mean * mean
        p = mean / 2.0
        expected = 2.0 * p * (1.0 - p)
        return np.where(expected > 0, variance / expected, np.nan)


def dosage_sums(genotypes: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """``(m, 3)`` :data:`SUM_COLUMNS` of a block (int8 calls, -127 missing, or float dosages, NaN missing),
    for the study's effect allele (``2 - d`` where ``flip``)."""
    raw = np.asarray(genotypes)
    observed = ~missing_calls(raw)
    values = np.where(observed, raw, 0).astype(np.float64)
    n = observed.sum(axis=0).astype(np.float64)
    s1 = values.sum(axis=0)
    s2 = np.einsum("ij,ij->j", values, values)
    s2 = np.where(flip, 4.0 * n - 4.0 * s1 + s2, s2)
    s1 = np.where(flip, 2.0 * n - s1, s1)
    return np.column_stack([n, s1, s2])


@dataclass(frozen=True)
class DosageSums(AlleleFrequencies):
    """Pooled dosage sums per variant, shapes ``(m,)``, in the study's allele orientation: of the samples
    counted as diploid (``n_observed``, ``dosage_sum``, ``dosage_squares``) and, on the sex chromosomes, of
    those counted as haploid (``hap_*``; zeros elsewhere). ``r2_reported`` is False where PLINK 2 reports
    no MaCH R2 (chrX, MT)."""

    n_observed: np.ndarray
    dosage_sum: np.ndarray
    dosage_squares: np.ndarray
    hap_observed: np.ndarray | None = None
    hap_sum: np.ndarray | None = None
    hap_squares: np.ndarray | None = None
    r2_reported: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = len(self.n_observed)
        for name, default in (("hap_observed", np.zeros(m, dtype=np.int64)), ("hap_sum", np.zeros(m)),
                              ("hap_squares", np.zeros(m)), ("r2_reported", np.ones(m, dtype=bool))):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @classmethod
    def from_totals(cls, totals: np.ndarray) -> "DosageSums":
        """From aggregated totals ``(m, 3)``; refuses what cannot be sums of dosages."""
        n, s1, s2 = _checked(totals)
        return cls(n, s1, s2)

    def __len__(self) -> int:
        return len(self.n_observed)

    def take(self, index: np.ndarray) -> "DosageSums":
        return DosageSums(self.n_observed[index], self.dosage_sum[index], self.dosage_squares[index],
                          self.hap_observed[index], self.hap_sum[index], self.hap_squares[index],  # type: ignore[index]
                          self.r2_reported[index])  # type: ignore[index]

    @property
    def allele_observations(self) -> np.ndarray:
        return 2 * self.n_observed + self.hap_observed

    @property
    def effect_allele_count(self) -> np.ndarray:
        """Effect allele dosage (``ALT_CTS``): a haploid dosage counts half."""
        return self.dosage_sum + 0.5 * self.hap_sum  # type: ignore[operator]

    @property
    def mach_r2(self) -> np.ndarray:
        haploid = (self.hap_observed > 0) & (self.n_observed == 0)  # type: ignore[operator]
        r2 = np.where(haploid, 0.5 * mach_r2(self.hap_observed, self.hap_sum, self.hap_squares),  # type: ignore[arg-type]
                      mach_r2(self.n_observed, self.dosage_sum, self.dosage_squares))
        return np.where(self.r2_reported, r2, np.nan)  # type: ignore[arg-type]


def _checked(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, sums, sums of squares) of aggregated :data:`SUM_COLUMNS` totals ``(m, 3)``.

    Raises
    ------
    InputError
        The totals cannot be counts and sums of dosages in 0..2.
    """
    totals = np.asarray(totals, dtype=np.float64)
    n = np.rint(totals[:, 0]) if totals.ndim == 2 and totals.shape[1] == 3 else None
    if n is None or not np.all(np.isfinite(totals)) or np.any(n < 0) or np.any(np.abs(totals[:, 0] - n) > 1e-6) \
            or np.any(totals[:, 1] < -1e-6) or np.any(totals[:, 1] > 2 * n + 1e-6):
        raise InputError("aggregated dosage sums are not counts and sums of dosages in 0..2")
    return n.astype(np.int64), totals[:, 1], totals[:, 2]


def sums_by_class(sums: DosageSums, rows: np.ndarray, kind: np.ndarray, by_sex: np.ndarray) -> DosageSums:
    """``sums`` with the sex-chromosome variants ``rows`` recounted by PLINK 2's haploid rules.

    ``kind`` ``(len(rows),)`` their chromosome classes (:func:`engine.cohort.sex_chromosomes.chromosome_class`);
    ``by_sex`` ``(len(rows), 9)`` their pooled :data:`SUM_COLUMNS` of males, females and unknown sex. chrX:
    females and unknown sex diploid, males haploid; chrY: males only, haploid; MT: everyone haploid
    (as :func:`engine.cohort.sex_chromosomes.counts_by_class` for hard calls).
    """
    male, female, unknown = (np.column_stack(_checked(by_sex[:, 3 * g: 3 * g + 3])) for g in range(3))
    x, y, mt = (kind == X)[:, None], (kind == Y)[:, None], (kind == MT)[:, None]
    zero = np.zeros_like(male)
    diploid = np.where(x, female + unknown, np.where(y | mt, zero, male + female + unknown))
    haploid = np.where(x | y, male, np.where(mt, male + female + unknown, zero))
    out = {name: np.array(getattr(sums, name), copy=True) for name in
           ("n_observed", "dosage_sum", "dosage_squares", "hap_observed", "hap_sum", "hap_squares", "r2_reported")}
    for column, (dip, hap) in enumerate((("n_observed", "hap_observed"), ("dosage_sum", "hap_sum"),
                                        ("dosage_squares", "hap_squares"))):
        out[dip][rows] = diploid[:, column]
        out[hap][rows] = haploid[:, column]
    out["r2_reported"][rows] = ~(x | mt)[:, 0]
    return DosageSums(**out)


class DosageSumsStatistic:
    """Site statistic ``dosage_sums``: :data:`SUM_COLUMNS` per variant over the cohort, from dosages
    where the site has them (hard calls otherwise)."""

    name = "dosage_sums"
    needs_phenotype = False
    dosage = True
    inputs: Mapping[str, InputSpec] = {BY_SEX_INPUT: InputSpec("float64", per_variant=False, trailing=(1,), optional=True)}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...] | None:
        """None (every sample), or with input ``by_sex`` the rows of males, females and unknown sex."""
        if BY_SEX_INPUT not in inputs:
            return None
        if cohort.phenotype_name or cohort.sex is None:
            raise InputError(f"input {BY_SEX_INPUT!r}: dosage sums by sex need a cohort without phenotype and the .fam sex")
        return tuple(np.flatnonzero(cohort.sex == code) for code in (1, 2, 0))

    def width(self, state: tuple[np.ndarray, ...] | None) -> int:
        return len(SUM_COLUMNS) * (1 if state is None else len(state))

    def block(self, state: tuple[np.ndarray, ...] | None, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        if state is None:
            return dosage_sums(genotypes, flip)
        return np.hstack([dosage_sums(genotypes[rows], flip) for rows in state])


def dosage_filters(hard_calls: VariantFilter, sums: DosageSums, maf: float | None,
                   mach_r2_range: tuple[float, float] | None) -> VariantFilter:
    """PLINK 2's ``--maf`` on dosage-based frequencies and ``--mach-r2-filter MIN MAX``, after the
    hard-call filters ``hard_calls`` (``--geno``, ``--hwe``; computed without ``maf``).

    A variant is counted under the first filter it fails, in the order geno, hwe, maf, mach-r2. The
    MaCH filter drops R2 outside ``[MIN, MAX]``; monomorphic variants (R2 NaN) are kept, as PLINK 2.
    """
    keep = hard_calls.keep.copy()
    failed = dict(hard_calls.failed)
    with np.errstate(invalid="ignore"):
        if maf is not None:
            failed["maf"] = keep & (sums.nonmajor_frequency < maf * (1.0 - SMALL_EPSILON))
            keep &= ~failed["maf"]
        if mach_r2_range is not None:
            r2 = sums.mach_r2
            failed["mach-r2"] = keep & ((r2 < mach_r2_range[0]) | (r2 > mach_r2_range[1]))
            keep &= ~failed["mach-r2"]
    return VariantFilter(keep=keep, failed=failed)
