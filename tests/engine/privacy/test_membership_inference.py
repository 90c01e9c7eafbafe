"""Membership inference on released allele frequencies (Homer et al. 2008), exact versus DP.

A study pool of 100 people is drawn from a population whose allele frequencies an attacker knows
from 1,000 reference genomes. For 2,000 variants, the pool's allele frequencies are released either
exactly or through fedgwas's DP release of genotype counts (:mod:`engine.privacy.dp_release`, epsilon 1 at
delta 1e-6, the figure documented in docs/privacy.md). For each target genome the attacker computes
Homer's statistic ``D_j = |Y_j - ref_j| - |Y_j - mix_j|`` per variant (``Y_j`` the target's allele
dosage / 2) and its t statistic over variants, and declares membership above the 95th percentile of
that statistic among genomes known not to be in the pool (a 5 % false-positive rate). Power is the
fraction of pool members so declared.

The data are seeded; OpenDP's noise is not (it is cryptographic). Over 100 noise draws the DP attack
had power 0.057 +- 0.023 and AUC 0.53 +- 0.03, so the DP assertions (power <= 0.2, |AUC - 0.5| <= 0.15)
sit 4-6 standard deviations away: a chance failure is below ~1e-4.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from engine.privacy import dp
from engine.privacy.dp_release import DpRequest, plan_release, postprocess
from engine.stats.qc.counts import GenotypeCounts, genotype_counts
from engine.tasks import CohortRequest

N_VARIANTS, N_POOL, N_OTHERS, N_REFERENCE = 2_000, 100, 300, 1_000
ALPHA = 0.05
DOCUMENTED_EPSILON, DOCUMENTED_DELTA = 1.0, 1e-6


def _population(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool, calibration non-members, other non-members, reference frequencies)."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.5, N_VARIANTS)

    def genomes(n: int) -> np.ndarray:
        return rng.binomial(2, freq, size=(n, N_VARIANTS)).astype(np.int8)

    pool, calibration, others, reference = genomes(N_POOL), genomes(N_OTHERS), genomes(N_OTHERS), genomes(N_REFERENCE)
    return pool, calibration, others, reference.mean(axis=0) / 2.0


def _released_frequencies(pool: np.ndarray, epsilon: float | None) -> np.ndarray:
    """The pool's allele frequencies as fedgwas releases them (counts -> DP noise -> frequencies)."""
    counts = genotype_counts(pool, np.zeros(N_VARIANTS, dtype=bool))
    if epsilon is not None:
        plan = plan_release(DpRequest(epsilon=epsilon, delta=DOCUMENTED_DELTA), "qc", CohortRequest(""), N_VARIANTS)
        counts = postprocess("qc", dp.sample_noise("gaussian", plan.share_scale("site", ["site"], "secagg"), counts))
    frequency = GenotypeCounts.from_totals(counts).effect_allele_frequency
    return np.clip(np.nan_to_num(frequency, nan=0.5), 0.0, 1.0)


def homer_statistic(targets: np.ndarray, reference: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """Homer's t statistic of each target genome ``(n, m)``: large when the target is in the mixture."""
    y = targets / 2.0
    d = np.abs(y - reference) - np.abs(y - mixture)
    return d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(d.shape[1]))


def attack(pool: np.ndarray, calibration: np.ndarray, others: np.ndarray, reference: np.ndarray,
           released: np.ndarray) -> tuple[float, float, float]:
    """(power, false-positive rate, AUC) of Homer's test at a 5 % false-positive threshold.

    The attacker sets the threshold at the 95th percentile of the statistic over genomes known not
    to be in the pool (``calibration``); ``others`` (other non-members) give the false-positive rate.
    AUC is the probability that a member scores above a non-member (0.5: guessing).
    """
    threshold = np.quantile(homer_statistic(calibration, reference, released), 1 - ALPHA)
    members, outsiders = homer_statistic(pool, reference, released), homer_statistic(others, reference, released)
    auc = stats.mannwhitneyu(members, outsiders, alternative="greater").statistic / (len(members) * len(outsiders))
    return float((members > threshold).mean()), float((outsiders > threshold).mean()), float(auc)


def test_homer_attack_has_power_on_exact_frequencies_and_none_on_dp_frequencies() -> None:
    pool, calibration, others, reference = _population(seed=2008)
    power, false_positives, auc = attack(pool, calibration, others, reference, _released_frequencies(pool, None))
    assert power >= 0.9 and false_positives <= 0.15 and auc >= 0.95  # exact releases expose the members
    power, false_positives, auc = attack(pool, calibration, others, reference,
                                         _released_frequencies(pool, DOCUMENTED_EPSILON))
    # With DP the attack is guessing: members score like anyone else (chance: power = 5 %, AUC = 0.5).
    assert power <= 0.2 and false_positives <= 0.2 and abs(auc - 0.5) <= 0.15
