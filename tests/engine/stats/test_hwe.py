"""The vectorised HWE exact test against exact rational arithmetic and against PLINK 2's .hardy files."""

from __future__ import annotations

import math
import time
from fractions import Fraction
from math import factorial
from pathlib import Path

import numpy as np
import pytest

from engine.stats.qc.hwe import hwe_exact_neg_log10_p
from tests.plink_tools import DATA, read_plink_table

#: Every PLINK 2 .hardy report in tests/data (HapMap3, 1000 Genomes x2, regenie, hail).
HARDY_FILES = sorted(DATA.glob("*/plink_reference_outputs/plink2/*.hardy"))


def test_every_reference_dataset_has_a_hardy_report() -> None:
    """The parametrised comparison below must never silently collect nothing."""
    assert {p.parts[-4] for p in HARDY_FILES} >= {"hapmap3_hm3_thinned", "1kg_phase1_thinned", "1kg_phase3_chr21_start",
                                                   "regenie_example", "hail_1kg_chr22_epacts"}


def naive_hwe_p(het: int, hom1: int, hom2: int, midp: bool) -> Fraction:
    """Wigginton et al.'s p-value by enumerating every table, in exact rational arithmetic."""
    n, homr = het + hom1 + hom2, min(hom1, hom2)
    rare = 2 * homr + het
    probs = []
    for h in range(rare // 2 + 1):
        k, hc = rare - 2 * h, n - rare + h
        probs.append(Fraction(2 ** k * factorial(n) * factorial(rare) * factorial(2 * n - rare),
                              factorial(k) * factorial(h) * factorial(hc) * factorial(2 * n)))
    assert sum(probs) == 1
    observed = probs[homr]
    p = sum(q for q in probs if q <= observed)
    if midp:
        p -= Fraction(1, 2) * observed * sum(1 for q in probs if q == observed)
    return p


@pytest.mark.parametrize("midp", [False, True])
def test_every_table_up_to_30_genotypes_matches_exact_arithmetic(midp: bool) -> None:
    """Exhaustive: all 5,456 genotype tables with n <= 30, ties (symmetric tables) included."""
    tables = [(het, a, n - het - a) for n in range(31) for het in range(n + 1) for a in range(n - het + 1)]
    het, hom1, hom2 = (np.array(column) for column in zip(*tables))
    ours = hwe_exact_neg_log10_p(het, hom1, hom2, midp=midp)
    exact = np.array([-np.log10(float(naive_hwe_p(*t, midp))) for t in tables])
    np.testing.assert_allclose(ours, exact, rtol=0, atol=1e-9)


def neg_log10(p: Fraction) -> float:
    """-log10 of an exact fraction, however small (math.log10 takes big integers)."""
    return math.log10(p.denominator) - math.log10(p.numerator)


def test_larger_tables_match_exact_arithmetic() -> None:
    rng = np.random.default_rng(5)
    tables = [(int(h), int(a), int(b)) for h, a, b in rng.integers(0, 250, size=(20, 3))]
    tables += [(0, 200, 200), (400, 0, 0), (1, 399, 0), (2, 0, 398), (30, 300, 70)]
    het, hom1, hom2 = (np.array(column) for column in zip(*tables))
    for midp in (False, True):
        exact = np.array([neg_log10(naive_hwe_p(*t, midp)) for t in tables])
        np.testing.assert_allclose(hwe_exact_neg_log10_p(het, hom1, hom2, midp=midp), exact, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", HARDY_FILES, ids=lambda p: p.name)
def test_plink2_hardy_reports(path: Path) -> None:
    """PLINK 2 prints 6 significant digits; its p underflows to 0 below ~1e-308 (ours does not)."""
    table = read_plink_table(path)
    ours = hwe_exact_neg_log10_p(table["HET_A1_CT"], table["HOM_A1_CT"], table["TWO_AX_CT"])
    printed = table["P"] > 0
    assert printed.sum() > 0
    np.testing.assert_allclose(ours[printed], -np.log10(table["P"][printed]), rtol=0, atol=1e-5)
    assert np.all(ours[~printed] > 300)


def test_degenerate_variants_as_plink2() -> None:
    """No calls, monomorphic, a singleton: p = 1 (mid-p 0.5), as PLINK 2 reports them."""
    het, hom1, hom2 = np.array([0, 0, 0, 1]), np.array([0, 957, 0, 951]), np.array([0, 0, 957, 0])
    np.testing.assert_array_equal(hwe_exact_neg_log10_p(het, hom1, hom2), 0.0)
    np.testing.assert_allclose(hwe_exact_neg_log10_p(het, hom1, hom2, midp=True), np.log10(2.0))
    # PLINK 2 v2.00a3.5: all 957 heterozygous -> 4.50175e-287 (mid-p 2.25088e-287).
    assert hwe_exact_neg_log10_p([957], [0], [0])[0] == pytest.approx(-np.log10(4.50175e-287), abs=1e-5)
    assert hwe_exact_neg_log10_p([957], [0], [0], midp=True)[0] == pytest.approx(-np.log10(2.25088e-287), abs=1e-5)
    with pytest.raises(ValueError, match="non-negative"):
        hwe_exact_neg_log10_p([1], [-1], [3])


def test_extreme_deviation_below_float64_range() -> None:
    """20,000 heterozygotes and nothing else: p ~ 1e-2700, returned as -log10 p."""
    value = hwe_exact_neg_log10_p([20_000], [0], [0])[0]
    assert np.isfinite(value) and value > 2000


def test_speed_100k_variants() -> None:
    """1e5 variants of 2,000 genotypes each in well under a few seconds (vectorised, no per-variant loop)."""
    rng = np.random.default_rng(1)
    freq = rng.uniform(0.01, 0.5, size=100_000)
    n = 2000
    hom1 = rng.binomial(n, (1 - freq) ** 2)
    het = rng.binomial(n - hom1, 2 * freq * (1 - freq) / (1 - (1 - freq) ** 2))
    started = time.perf_counter()
    result = hwe_exact_neg_log10_p(het, hom1, n - hom1 - het)
    elapsed = time.perf_counter() - started
    assert np.all(np.isfinite(result))
    assert elapsed < 5.0, f"{elapsed:.2f} s"
