"""Allelic chi-square test for case/control studies, as PLINK 1.9's ``--assoc``.

Per variant, a 2x2 table of allele counts (cases/controls x A1/A2) over samples with a genotype
call and a case/control status, built from pooled genotype counts (:class:`engine.stats.qc.counts.GenotypeCounts`),
so the federated test is exact. PLINK 1.9's conventions:

* ``A1`` is the minor allele over *all* samples with a call (phenotype missing or not); when the
  frequencies are exactly equal, .bim column 5 (the study's effect allele) stays A1;
* ``F_A``/``F_U``: A1 frequency in cases/controls (missing when the group has no calls);
* ``CHISQ``: Pearson's statistic without continuity correction, ``N (ad - bc)^2 / (r1 r2 c1 c2)``;
  missing when one allele is absent from cases and controls, 0 when a status group has no calls;
* ``P``: upper tail of chi-square with 1 df (carried as -log10 p);
* ``OR``: ``(a d) / (b c)`` for A1, missing when ``b c = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.stats.pvalues import z_test_neg_log10_p
from engine.stats.qc.counts import GenotypeCounts


@dataclass(frozen=True)
class AllelicTest:
    """Allelic test results, shapes ``(m,)``; NaN where PLINK 1.9 prints ``NA``.

    ``a1_is_effect`` is True where A1 is the study's effect allele (else A1 is the other allele).
    ``case_a1``.. ``control_a2`` are the allele counts of the 2x2 table.
    """

    a1_is_effect: np.ndarray
    freq_cases: np.ndarray
    freq_controls: np.ndarray
    chisq: np.ndarray
    neg_log10_p: np.ndarray
    odds_ratio: np.ndarray
    case_a1: np.ndarray
    case_a2: np.ndarray
    control_a1: np.ndarray
    control_a2: np.ndarray


def minor_is_effect(all_samples: GenotypeCounts) -> np.ndarray:
    """PLINK 1.9's A1 choice: True where the effect allele is the minor one (ties and no calls: True)."""
    return ~(all_samples.effect_allele_frequency > 0.5)


def _a1_counts(counts: GenotypeCounts, a1_is_effect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a1 = np.where(a1_is_effect, 2 * counts.hom_effect, 2 * counts.hom_other) + counts.het
    return a1.astype(np.float64), (counts.allele_observations - a1).astype(np.float64)


def allelic_test(cases: GenotypeCounts, controls: GenotypeCounts, a1_is_effect: np.ndarray) -> AllelicTest:
    """PLINK 1.9 ``--assoc`` statistics from pooled case and control genotype counts.

    Parameters
    ----------
    cases, controls
        Pooled counts over the cases and the controls, ``(m,)`` per field.
    a1_is_effect
        bool ``(m,)``, from :func:`minor_is_effect` on the counts over all samples.
    """
    a, b = _a1_counts(cases, a1_is_effect)
    c, d = _a1_counts(controls, a1_is_effect)
    row_cases, row_controls = a + b, c + d
    col_a1, col_a2 = a + c, b + d
    total = row_cases + row_controls
    with np.errstate(invalid="ignore", divide="ignore"):
        freq_cases = np.where(row_cases > 0, a / row_cases, np.nan)
        freq_controls = np.where(row_controls > 0, c / row_controls, np.nan)
        denominator = row_cases * row_controls * col_a1 * col_a2
        chisq = np.where(denominator > 0, total * (a * d - b * c) ** 2 / denominator, 0.0)
        chisq = np.where((col_a1 > 0) & (col_a2 > 0), chisq, np.nan)
        odds_ratio = np.where(b * c > 0, (a * d) / (b * c), np.nan)
    neg_log10_p = np.full(len(a), np.nan)
    valid = np.isfinite(chisq)
    neg_log10_p[valid] = z_test_neg_log10_p(np.sqrt(chisq[valid]))
    return AllelicTest(a1_is_effect=np.asarray(a1_is_effect, dtype=bool), freq_cases=freq_cases,
                       freq_controls=freq_controls, chisq=chisq, neg_log10_p=neg_log10_p, odds_ratio=odds_ratio,
                       case_a1=a, case_a2=b, control_a1=c, control_a2=d)
