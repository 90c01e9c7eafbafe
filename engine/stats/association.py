"""Result containers shared by every association test (linear now, logistic later).

Kernels return these frozen dataclasses; writers (GWAS-SSF, plots, report) consume them. All arrays
are in harmonised variant order and have shape ``(n_variants,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: ERRCODE used for a variant with a usable estimate (PLINK 2 prints ``.``).
ERRCODE_OK = "."


@dataclass(frozen=True)
class VariantTable:
    """Variant descriptions in harmonised order.

    ``effect_allele`` is the allele whose count is regressed on (PLINK 2's A1 with ``omit-ref``: column 5
    of the first site's .bim); ``other_allele`` is the remaining allele. Shapes ``(n_variants,)``.
    """

    chrom: np.ndarray  # str
    pos: np.ndarray  # int64
    variant_id: np.ndarray  # str
    effect_allele: np.ndarray  # str
    other_allele: np.ndarray  # str

    def __post_init__(self) -> None:
        n = len(self.chrom)
        for name in ("pos", "variant_id", "effect_allele", "other_allele"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"VariantTable.{name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.chrom)

    def take(self, index: np.ndarray) -> "VariantTable":
        """Rows ``index`` (an integer or boolean array) as a new table."""
        return VariantTable(
            chrom=self.chrom[index],
            pos=self.pos[index],
            variant_id=self.variant_id[index],
            effect_allele=self.effect_allele[index],
            other_allele=self.other_allele[index],
        )


@dataclass(frozen=True)
class AssociationResult:
    """Per-variant association statistics, shapes ``(n_variants,)``; NaN where not estimable.

    ``neg_log10_p`` carries the p-value as -log10(p) so that p-values below the float64 range
    (1e-308) are still exact; ``p_value`` is derived from it. ``stat`` is the test statistic (t for
    linear regression, z for logistic). ``errcode`` is PLINK 2's ERRCODE vocabulary (``.`` = ok).
    ``firth`` (case/control tests only, else ``None``) marks the variants fitted by Firth regression
    (PLINK 2's ``FIRTH?`` column); for those tests ``beta`` is the log odds ratio.
    """

    test: str  # "linear", "logistic", ...
    variants: VariantTable
    beta: np.ndarray
    se: np.ndarray
    stat: np.ndarray
    neg_log10_p: np.ndarray
    n: np.ndarray  # int64, observations used per variant
    effect_allele_count: np.ndarray  # float64 (counts, may be fractional for dosages later)
    errcode: np.ndarray  # str
    firth: np.ndarray | None = None  # bool, logistic/Firth only
    #: MaCH R2 (imputation quality) over the samples of each variant's regression, as PLINK 2's
    #: ``--glm cols=+machr2``; set for studies with dosage data, else ``None``.
    info: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = len(self.variants)
        for name in ("beta", "se", "stat", "neg_log10_p", "n", "effect_allele_count", "errcode"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"AssociationResult.{name} has {len(getattr(self, name))} rows, expected {m}")
        for name in ("firth", "info"):
            values = getattr(self, name)
            if values is not None and len(values) != m:
                raise ValueError(f"AssociationResult.{name} has {len(values)} rows, expected {m}")

    @property
    def odds_ratio(self) -> np.ndarray:
        """``exp(beta)``: the odds ratio per effect allele for a case/control test."""
        with np.errstate(over="ignore"):
            return np.exp(self.beta)

    @property
    def p_value(self) -> np.ndarray:
        """p-values as float64 (underflows to 0.0 below ~1e-308; use ``neg_log10_p`` for those)."""
        return np.power(10.0, -self.neg_log10_p)

    @property
    def effect_allele_frequency(self) -> np.ndarray:
        """Effect-allele frequency among the observations used, ``count / (2 n)``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.effect_allele_count / (2.0 * self.n)
