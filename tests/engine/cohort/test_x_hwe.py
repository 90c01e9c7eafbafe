"""The chrX exact Hardy-Weinberg test against a brute-force enumeration of every table.

PLINK 2's own ``.hardy.x`` is the oracle of tests/federated/test_sex_chromosomes.py; here the pruned
row-by-row enumeration of :func:`engine.cohort.sex_chromosomes.x_hwe_neg_log10_p` is checked against
the full sum over all (male count, female heterozygote count) tables, on counts where the full sum is
cheap, including far tails (where the pruning threshold matters) and midp.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.cohort.sex_chromosomes import x_hwe_neg_log10_p


def _brute_force(f11: int, h: int, f22: int, m1: int, m2: int, midp: bool) -> float:
    n_f, n_m = f11 + h + f22, m1 + m2
    n1 = 2 * f11 + h + m1

    def log_p(males: int, hets: int) -> float:
        a11 = (n1 - males - hets) // 2
        return (math.lgamma(n_m + 1) - math.lgamma(males + 1) - math.lgamma(n_m - males + 1) + math.lgamma(n_f + 1)
                - math.lgamma(a11 + 1) - math.lgamma(hets + 1) - math.lgamma(n_f - a11 - hets + 1) + hets * math.log(2))

    tables = [log_p(a, het) for a in range(n_m + 1) for het in range(n_f + 1)
              if n1 - a - het >= 0 and (n1 - a - het) % 2 == 0 and n_f - (n1 - a - het) // 2 - het >= 0]
    observed = log_p(m1, h)
    top = max(tables)
    tol = 1e-9 * max(1.0, abs(observed))
    less = sum(math.exp(t - top) for t in tables if t < observed - tol)
    equal = sum(math.exp(t - top) for t in tables if abs(t - observed) <= tol)
    total = sum(math.exp(t - top) for t in tables)
    return -math.log10(min((less + (equal / 2 if midp else equal)) / total, 1.0))


CASES = [(0, 40, 0, 30, 0), (30, 0, 30, 0, 40), (50, 10, 48, 30, 32), (7, 20, 3, 12, 5), (0, 0, 5, 0, 0),
         (0, 0, 0, 3, 0), (1, 0, 0, 0, 0), (120, 5, 110, 90, 95), (20, 60, 20, 0, 100)]


@pytest.mark.parametrize("midp", [False, True])
def test_equals_the_sum_over_every_table(midp: bool) -> None:
    rng = np.random.default_rng(11)
    cases = list(CASES)
    for _ in range(60):
        n_f, n_m, p = int(rng.integers(0, 40)), int(rng.integers(0, 40)), rng.uniform(0.02, 0.98)
        f = rng.multinomial(n_f, [p * p, 2 * p * (1 - p), (1 - p) ** 2])
        m1 = int(rng.binomial(n_m, p))
        if n_f + n_m:
            cases.append((int(f[0]), int(f[1]), int(f[2]), m1, n_m - m1))
    columns = [np.array(column) for column in zip(*cases)]
    ours = x_hwe_neg_log10_p(*columns, midp=midp)
    for case, value in zip(cases, ours):
        assert value == pytest.approx(_brute_force(*case, midp=midp), rel=1e-9, abs=1e-12), case


def test_no_allele_observed_is_nan_and_biobank_counts_need_no_full_grid() -> None:
    assert np.isnan(x_hwe_neg_log10_p(*(np.zeros(1, int) for _ in range(5)))[0])
    # 30,000 females and 30,000 males: the full table grid would hold ~9e8 cells per array.
    value = x_hwe_neg_log10_p(np.array([7400]), np.array([15000]), np.array([7600]), np.array([14800]),
                              np.array([15200]))[0]
    assert np.isfinite(value) and 0.0 <= value < 5.0
