"""Variant QC from genotype counts: the site kernel, the pooled counts, and PLINK 2's filters.

Everything PLINK 2 reports per variant in ``.afreq``, ``.acount``, ``.gcount``, ``.hardy`` and
``.vmiss``, and everything its ``--maf``/``--geno``/``--hwe`` filters look at, is a function of four
counts over samples: homozygotes of the counted (effect) allele, heterozygotes, homozygotes of the
other allele, and missing calls. Counts are sums over samples, so the pooled counts are the sums of
the sites' counts and the federated QC is exact. A site sends only these per-variant counts;
per-sample missingness (PLINK's ``.smiss``) never leaves the site.

With a case/control phenotype the counts are split by status (controls, then cases), which is what
the allelic test (:mod:`engine.stats.qc.allelic`) needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.stats.statistic import InputSpec
from engine.errors import InputError


#: Optional ``qc`` input (float64 ``(1,)``): split the counts by .fam sex (males, females, unknown), for
#: the sex chromosomes' haploid rules (:func:`engine.cohort.sex_chromosomes.counts_by_class`).
BY_SEX_INPUT = "by_sex"
#: Values per variant and status group, in this order.
COUNT_COLUMNS = ("hom_effect", "het", "hom_other", "missing")
#: Relative tolerance PLINK 2 applies to filter thresholds (2^-44, its ``kSmallEpsilon``).
SMALL_EPSILON = _SMALL_EPSILON = 2.0 ** -44


def genotype_counts(genotypes: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Per-variant genotype counts of one block, in the study's allele orientation.

    Parameters
    ----------
    genotypes
        int8 ``(n, m)``: counts of the site's allele1 (0, 1, 2), ``-127`` for missing.
    flip
        bool ``(m,)``: variants whose counted allele is the study's other allele.

    Returns
    -------
    numpy.ndarray
        float64 ``(m, 4)``: :data:`COUNT_COLUMNS` (effect-allele homozygotes, heterozygotes,
        other-allele homozygotes, missing calls).
    """
    n = genotypes.shape[0]
    two = np.count_nonzero(genotypes == 2, axis=0)
    one = np.count_nonzero(genotypes == 1, axis=0)
    missing = np.count_nonzero(genotypes < 0, axis=0)
    zero = n - two - one - missing
    hom_effect = np.where(flip, zero, two)
    hom_other = np.where(flip, two, zero)
    return np.column_stack([hom_effect, one, hom_other, missing]).astype(np.float64)


def genotype_counts_by_status(genotypes: np.ndarray, flip: np.ndarray, groups: tuple[np.ndarray, ...]) -> np.ndarray:
    """:func:`genotype_counts` for each group of sample rows, side by side: ``(m, 4 * len(groups))``."""
    if len(groups) == 1 and len(groups[0]) == genotypes.shape[0]:
        return genotype_counts(genotypes, flip)
    return np.hstack([genotype_counts(genotypes[rows], flip) for rows in groups])


@dataclass(frozen=True)
class _QcState:
    groups: tuple[np.ndarray, ...]  # rows of the cohort's samples per status group


class QcStatistic:
    """Site analysis ``qc``: genotype counts per variant (:data:`COUNT_COLUMNS`), float64.

    Without a phenotype in the cohort request, every sample is counted: width 4. With one, the
    phenotype must be case/control coded (0 control, 1 case after coding) and the counts are split
    into controls then cases: width 8.
    """

    name = "qc"
    needs_phenotype = False
    inputs: Mapping[str, InputSpec] = {BY_SEX_INPUT: InputSpec("float64", per_variant=False, trailing=(1,), optional=True)}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _QcState:
        if BY_SEX_INPUT in inputs:  # sex-chromosome variants: counts of males, females, unknown sex
            if cohort.phenotype_name or cohort.sex is None:
                raise InputError(f"input {BY_SEX_INPUT!r}: counts by sex need a cohort without phenotype and the .fam sex")
            return _QcState(groups=tuple(np.flatnonzero(cohort.sex == code) for code in (1, 2, 0)))
        if not cohort.phenotype_name:
            return _QcState(groups=(np.arange(cohort.n_samples),))
        status = cohort.phenotype
        bad = ~np.isin(status, (0.0, 1.0))
        if np.any(bad):
            raise InputError(f"phenotype {cohort.phenotype_name!r} is not case/control: value "
                             f"{status[np.flatnonzero(bad)[0]]:g} after coding (expected 0 control / 1 case)")
        return _QcState(groups=(np.flatnonzero(status == 0.0), np.flatnonzero(status == 1.0)))

    def width(self, state: _QcState) -> int:
        return len(COUNT_COLUMNS) * len(state.groups)

    def block(self, state: _QcState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return genotype_counts_by_status(genotypes, flip, state.groups)


_NONE = np.zeros(0, dtype=np.int64)  # placeholder default of the haploid counts (replaced by zeros)


class AlleleFrequencies(ABC):
    """Frequencies derived from a class's ``effect_allele_count`` and ``allele_observations`` ``(m,)``
    (hard-call counts and dosage sums alike)."""

    @property
    @abstractmethod
    def effect_allele_count(self) -> np.ndarray:
        """Effect allele copies (or dosage) per variant."""

    @property
    @abstractmethod
    def allele_observations(self) -> np.ndarray:
        """Alleles observed per variant (2 per diploid call, 1 per haploid one)."""

    @property
    def effect_allele_frequency(self) -> np.ndarray:
        """Effect (ALT) allele frequency among the observed alleles; NaN where none was observed."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.effect_allele_count / self.allele_observations

    @property
    def nonmajor_frequency(self) -> np.ndarray:
        """PLINK 2's MAF: the frequency of the less common allele; NaN where none was observed."""
        freq = self.effect_allele_frequency
        return np.minimum(freq, 1.0 - freq)


@dataclass(frozen=True)
class GenotypeCounts(AlleleFrequencies):
    """Pooled genotype counts per variant, shapes ``(m,)`` int64, in the study's orientation.

    ``hom_effect`` counts samples homozygous for the effect allele (PLINK 2's ALT for ``.bed``
    input: .bim column 5 of the first site), ``hom_other`` those homozygous for the other allele
    (REF, column 6).
    """

    hom_effect: np.ndarray
    het: np.ndarray
    hom_other: np.ndarray
    missing: np.ndarray
    # Haploid calls (chrX males, chrY, MT; engine.sex_chromosomes): effect/other allele, and
    # heterozygous haploid calls (one observation, half an effect allele; missing in .gcount).
    hap_effect: np.ndarray = field(default_factory=lambda: _NONE)
    hap_other: np.ndarray = field(default_factory=lambda: _NONE)
    hap_het: np.ndarray = field(default_factory=lambda: _NONE)

    def __post_init__(self) -> None:
        for name in ("hap_effect", "hap_other", "hap_het"):
            if getattr(self, name) is _NONE:  # not given: no haploid calls
                object.__setattr__(self, name, np.zeros(len(self.het), dtype=np.int64))

    @classmethod
    def from_totals(cls, totals: np.ndarray, group: int = 0) -> "GenotypeCounts":
        """Counts from aggregated totals ``(m, 4 * groups)`` (group 0 = controls when split by status).

        Raises
        ------
        InputError
            If a total is not a non-negative whole number (the aggregate cannot be counts).
        """
        block = np.asarray(totals, dtype=np.float64)[:, 4 * group: 4 * group + 4]
        rounded = np.rint(block)
        if block.shape[1] != 4 or not np.all(np.isfinite(block)) or np.any(rounded < 0) or \
                np.any(np.abs(block - rounded) > 1e-6):
            raise InputError("aggregated genotype counts are not non-negative whole numbers")
        columns = rounded.astype(np.int64).T
        return cls(hom_effect=columns[0], het=columns[1], hom_other=columns[2], missing=columns[3])

    def __len__(self) -> int:
        return len(self.het)

    def take(self, index: np.ndarray) -> "GenotypeCounts":
        """Rows ``index`` (integer or boolean array)."""
        return GenotypeCounts(self.hom_effect[index], self.het[index], self.hom_other[index], self.missing[index],
                              self.hap_effect[index], self.hap_other[index], self.hap_het[index])

    @property
    def n_observed(self) -> np.ndarray:
        """Samples with a diploid genotype call, ``(m,)`` (what the autosomal HWE test counts)."""
        return self.hom_effect + self.het + self.hom_other

    @property
    def n_haploid(self) -> np.ndarray:
        """Samples with a haploid call (heterozygous haploid calls included), ``(m,)``."""
        return self.hap_effect + self.hap_other + self.hap_het

    @property
    def n_samples(self) -> np.ndarray:
        """Samples counted, called or not, ``(m,)`` (PLINK 2's ``.vmiss`` OBS_CT)."""
        return self.n_observed + self.n_haploid + self.missing

    @property
    def effect_allele_count(self) -> np.ndarray:
        """Effect allele copies (float64 when a heterozygous haploid call counts half)."""
        count = 2 * self.hom_effect + self.het + self.hap_effect
        return count + 0.5 * self.hap_het if np.any(self.hap_het) else count

    @property
    def allele_observations(self) -> np.ndarray:
        return 2 * self.n_observed + self.n_haploid

    @property
    def missing_rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.missing / self.n_samples

    def hwe_neg_log10_p(self, midp: bool = False) -> np.ndarray:
        """-log10 of the exact HWE test p-value (PLINK 2's ``--hardy``), ``(m,)``."""
        from engine.stats.qc.hwe import hwe_exact_neg_log10_p  # scipy.special: coordinator side only, kept off site start-up

        return hwe_exact_neg_log10_p(self.het, self.hom_effect, self.hom_other, midp=midp)

    def __add__(self, other: "GenotypeCounts") -> "GenotypeCounts":
        return GenotypeCounts(self.hom_effect + other.hom_effect, self.het + other.het,
                              self.hom_other + other.hom_other, self.missing + other.missing,
                              self.hap_effect + other.hap_effect, self.hap_other + other.hap_other,
                              self.hap_het + other.hap_het)


@dataclass(frozen=True)
class VariantFilter:
    """Which variants pass PLINK 2's main variant filters, and why the others failed.

    ``keep`` is bool ``(m,)``; ``failed`` maps ``geno``, ``hwe`` and ``maf`` (PLINK 2's order: a
    variant is counted under the first filter it fails) to bool ``(m,)`` masks, for the filters
    that were requested.
    """

    keep: np.ndarray
    failed: dict[str, np.ndarray]

    @property
    def dropped(self) -> dict[str, int]:
        return {reason: int(mask.sum()) for reason, mask in self.failed.items()}


def variant_filter(counts: GenotypeCounts, *, maf: float | None = None, geno: float | None = None,
                   hwe: float | None = None, hwe_midp: bool = False,
                   hwe_neg_log10_p: np.ndarray | None = None) -> VariantFilter:
    """PLINK 2's ``--geno``, ``--hwe`` and ``--maf`` on pooled counts over all samples.

    * ``--geno``: drop when the missing calls exceed ``floor(geno * (1 + 2^-44) * n_samples)``;
    * ``--hwe``: drop when the exact test p (or mid-p) is below ``hwe * (1 - 2^-44)``; variants
      with no calls are never dropped (PLINK 2 has no special handling of case/control phenotypes
      here: every sample counts);
    * ``--maf``: drop when the non-major allele frequency is below ``maf * (1 - 2^-44)``
      (a variant with no calls has no frequency and is kept, as in PLINK 2).

    Parameters
    ----------
    counts
        Pooled counts over every sample, ``(m,)`` per field.
    maf, geno, hwe
        Thresholds; ``None`` skips the filter.
    hwe_midp
        Use the mid-p HWE test (PLINK's ``--hwe ... midp``).
    hwe_neg_log10_p
        Precomputed -log10 p of the HWE test per variant (NaN: not tested, kept), for the sex
        chromosomes: chrX's test counts males (:func:`engine.cohort.sex_chromosomes.x_hwe_neg_log10_p`),
        chrY and MT are not tested, as in PLINK 2.
    """
    m = len(counts)
    keep = np.ones(m, dtype=bool)
    failed: dict[str, np.ndarray] = {}
    if geno is not None:
        max_missing = np.floor(geno * (1.0 + _SMALL_EPSILON) * counts.n_samples)
        failed["geno"] = keep & (counts.missing > max_missing)
        keep &= ~failed["geno"]
    if hwe is not None:
        threshold = hwe * (1.0 - _SMALL_EPSILON)
        fails = np.zeros(m, dtype=bool)
        rows = np.flatnonzero(keep & (counts.n_observed > 0))
        if hwe_neg_log10_p is not None:
            rows = np.flatnonzero(keep & np.isfinite(hwe_neg_log10_p))
        if rows.size and threshold > 0:
            neg_log10_p = counts.take(rows).hwe_neg_log10_p(midp=hwe_midp) if hwe_neg_log10_p is None \
                else hwe_neg_log10_p[rows]
            fails[rows] = neg_log10_p > -np.log10(threshold)
        failed["hwe"] = fails
        keep &= ~fails
    if maf is not None:
        with np.errstate(invalid="ignore"):
            failed["maf"] = keep & (counts.nonmajor_frequency < maf * (1.0 - _SMALL_EPSILON))
        keep &= ~failed["maf"]
    return VariantFilter(keep=keep, failed=failed)
