"""DP mechanisms deliver the noise the accounting claims; sensitivities hold against brute force.

Calibration tests draw OpenDP noise and test its variance with a stated false-alarm rate: a
chi-square variance test (Gaussian) or a large-sample z test of the sample variance (Laplace, whose
fourth moment is known), two-sided at ``ALPHA = 1e-5`` (CI runs every check; a variance off by ~5% still fails). Each draws 10,000-30,000 values (~20 us each).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from engine.privacy import dp
from engine.cohort.cohort import Cohort
from engine.privacy.dp_release import DpRequest, clip_cohort, plan_release, postprocess
from engine.errors import ProtocolError
from engine.stats.linear.kernel import block_statistics
from engine.stats.linear.solve import solve_linear
from engine.stats.association import VariantTable
from engine.stats.qc.counts import genotype_counts
from engine.tasks import CohortRequest

ALPHA = 1e-5  # per-check false-alarm rate; with 20,000 draws a variance off by ~5% still fails


def _chi2_variance_test(sample: np.ndarray, variance: float) -> tuple[float, float, float]:
    """(statistic, lower, upper): reject when the statistic is outside [lower, upper]."""
    n = sample.size
    statistic = (n - 1) * sample.var(ddof=1) / variance
    return statistic, stats.chi2.ppf(ALPHA / 2, n - 1), stats.chi2.ppf(1 - ALPHA / 2, n - 1)


def test_gaussian_share_has_the_claimed_variance() -> None:
    plan = plan_release(DpRequest(epsilon=1.0, delta=1e-6), "qc", CohortRequest(""), 50)
    scale = plan.share_scale("a", ["a", "b"], "secagg")
    assert scale == pytest.approx(plan.calibration.scale / math.sqrt(2))
    noise = dp.sample_noise("gaussian", scale, np.zeros((5_000, 4)))
    statistic, lower, upper = _chi2_variance_test(noise.ravel(), scale ** 2)
    assert lower < statistic < upper
    assert abs(noise.mean()) < stats.norm.ppf(1 - ALPHA / 2) * scale / math.sqrt(noise.size)


def test_honest_shares_add_up_to_the_calibrated_noise() -> None:
    """With t = 1 of 3 sites colluding, any 2 honest shares sum to N(0, sigma^2)."""
    plan = plan_release(DpRequest(epsilon=0.5, delta=1e-6, collusion=1), "qc", CohortRequest(""), 20)
    sites = ["a", "b", "c"]
    shares = [dp.sample_noise("gaussian", plan.share_scale(s, sites, "secagg"), np.zeros(10_000)) for s in sites]
    honest = shares[0] + shares[1]
    statistic, lower, upper = _chi2_variance_test(honest, plan.calibration.variance)
    assert lower < statistic < upper
    everything = honest + shares[2]
    statistic, lower, upper = _chi2_variance_test(everything, plan.total_variance(3, "secagg"))
    assert lower < statistic < upper
    assert plan.total_variance(3, "secagg") == pytest.approx(1.5 * plan.calibration.variance)


def test_laplace_noise_has_the_claimed_variance() -> None:
    plan = plan_release(DpRequest(epsilon=1.0, mechanism="laplace"), "qc", CohortRequest(""), 10)
    b = plan.calibration.scale
    assert plan.calibration.epsilon_achieved <= 1.0 and b == pytest.approx(10.0, rel=1e-4)  # L1 = 10 variants x 1
    noise = dp.sample_noise("laplace", b, np.zeros(20_000))
    n = noise.size
    # Laplace(b): variance 2 b^2, fourth central moment 24 b^4, so Var(s^2) ~ 20 b^4 / n.
    z = (noise.var(ddof=1) - 2 * b * b) / math.sqrt(20 * b ** 4 / n)
    assert abs(z) < stats.norm.ppf(1 - ALPHA / 2)
    assert plan.calibration.variance == pytest.approx(2 * b * b)


def test_laplace_noise_comes_from_the_first_t_plus_one_sites() -> None:
    plan = plan_release(DpRequest(epsilon=1.0, mechanism="laplace", collusion=1), "qc", CohortRequest(""), 5)
    scales = [plan.share_scale(s, ["c", "a", "b"], "secagg") for s in ("a", "b", "c")]
    assert scales == [plan.calibration.scale, plan.calibration.scale, 0.0]
    assert plan.rho_if_colluding(2, 3, "secagg") == math.inf
    # In plaintext the coordinator sees every share: every site carries the full noise.
    assert all(plan.share_scale(s, ["a", "b", "c"], "plaintext") == plan.calibration.scale for s in "abc")


def _exact_gaussian_epsilon(sigma: float, sensitivity: float, delta: float) -> float:
    """Tight (epsilon, delta) of the Gaussian mechanism (Balle & Wang 2018), by bisection."""
    a = sensitivity / sigma

    def delta_of(eps: float) -> float:
        return stats.norm.cdf(a / 2 - eps / a) - math.exp(eps) * stats.norm.cdf(-a / 2 - eps / a)

    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if delta_of(mid) <= delta else (mid, hi)
    return hi


@pytest.mark.parametrize("epsilon,delta,sensitivity", [(1.0, 1e-6, 10.0), (0.3, 1e-8, 1.0), (4.0, 1e-5, 50.0)])
def test_gaussian_accounting_matches_independent_formulas(epsilon: float, delta: float, sensitivity: float) -> None:
    c = dp.calibrate("gaussian", epsilon, delta, sensitivity, 100)
    assert 0.99 * epsilon <= c.epsilon_achieved <= epsilon
    # rho = Delta^2 / (2 sigma^2) (OpenDP rounds Delta up by the 2^-20 grid, so slightly above).
    assert c.rho == pytest.approx(sensitivity ** 2 / (2 * c.scale ** 2), rel=1e-4)
    # zCDP -> (eps, delta) is sound (above the tight Gaussian curve) and tighter than the textbook bound.
    textbook = c.rho + 2 * math.sqrt(c.rho * math.log(1 / delta))
    assert _exact_gaussian_epsilon(c.scale, sensitivity, delta) <= dp.epsilon_from_rho(c.rho, delta) <= textbook
    assert dp.rho_from_epsilon(epsilon, delta) == pytest.approx(c.rho, rel=1e-6)


def test_composition_of_charges_is_a_sum_of_rho() -> None:
    one = dp.calibrate("gaussian", 1.0, 1e-6, 1.0, 1).rho
    # Two releases at epsilon 1 cost less than epsilon 2 under zCDP, more than epsilon 1.
    assert 1.0 < dp.epsilon_from_rho(2 * one, 1e-6) < 2.0
    # Pure epsilon-DP is charged epsilon^2 / 2.
    assert dp.calibrate("laplace", 0.5, 0.0, 1.0, 1).rho == pytest.approx(0.125, rel=1e-4)


def test_qc_counts_change_by_one_per_variant() -> None:
    rng = np.random.default_rng(1)
    genotypes = rng.integers(0, 3, size=(40, 25)).astype(np.int8)
    genotypes[rng.random(genotypes.shape) < 0.1] = -127
    flip = rng.random(25) < 0.5
    plan = plan_release(DpRequest(epsilon=1.0), "qc", CohortRequest(""), 25)
    for person in range(40):
        without = np.delete(genotypes, person, axis=0)
        difference = genotype_counts(genotypes, flip) - genotype_counts(without, flip)
        assert np.all(np.abs(difference).sum(axis=1) == 1)
        assert np.linalg.norm(difference) == pytest.approx(plan.calibration.sensitivity)


def _cohort(rng: np.random.Generator, n: int) -> Cohort:
    covariates = np.column_stack([rng.integers(0, 2, n), rng.uniform(20, 70, n)]).astype(float)
    return Cohort(sample_index=np.arange(n), phenotype=rng.normal(0, 1, n).clip(-3, 3), covariates=covariates,
                  phenotype_name="QT", covariate_names=("SEX", "AGE"), n_in_fam=n, n_dropped=0)


BOUNDS = (("AGE", 20.0, 70.0), ("QT", -3.0, 3.0), ("SEX", 0.0, 1.0))


def test_linear_sensitivity_bounds_every_participant_and_is_reached() -> None:
    rng = np.random.default_rng(2)
    request = DpRequest(epsilon=1.0, bounds=BOUNDS)
    cohort = clip_cohort(_cohort(rng, 60), request)
    m = 8
    genotypes = rng.integers(0, 3, size=(61, m)).astype(np.int8)
    genotypes[rng.random(genotypes.shape) < 0.05] = -127
    # Participant 60 sits at a corner of the box: the bound must be reached exactly there.
    corner = Cohort(sample_index=np.arange(61), phenotype=np.append(cohort.phenotype, 3.0),
                    covariates=np.vstack([cohort.covariates, [1.0, 1.0]]), phenotype_name="QT",
                    covariate_names=("SEX", "AGE"), n_in_fam=61, n_dropped=0)
    genotypes[60] = 2
    plan = plan_release(request, "linear", CohortRequest("QT", ("SEX", "AGE")), m)
    full = block_statistics(genotypes, corner.design, corner.phenotype)
    for person in range(61):
        keep = np.arange(61) != person
        without = block_statistics(np.ascontiguousarray(genotypes[keep]), corner.design[keep], corner.phenotype[keep])
        assert np.linalg.norm(full - without) <= plan.calibration.sensitivity * (1 + 1e-12)
        assert np.abs(full - without).sum(axis=1).max() <= plan.row.l1 * (1 + 1e-12)
    keep = np.arange(60)
    without = block_statistics(np.ascontiguousarray(genotypes[keep]), corner.design[keep], corner.phenotype[keep])
    assert np.linalg.norm(full - without) == pytest.approx(plan.calibration.sensitivity, rel=1e-9)


def test_clipping_and_rescaling_leave_the_genotype_estimate_unchanged() -> None:
    rng = np.random.default_rng(3)
    cohort = _cohort(rng, 300)
    genotypes = rng.integers(0, 3, size=(300, 6)).astype(np.int8)
    variants = VariantTable(chrom=np.array(["1"] * 6), pos=np.arange(6), variant_id=np.array([f"v{i}" for i in range(6)]),
                            effect_allele=np.array(["A"] * 6), other_allele=np.array(["G"] * 6))
    exact = solve_linear(block_statistics(genotypes, cohort.design, cohort.phenotype), 3, variants)
    clipped = clip_cohort(cohort, DpRequest(epsilon=1.0, bounds=BOUNDS))
    assert np.all(np.abs(clipped.covariates) <= 1.0)
    again = solve_linear(block_statistics(genotypes, clipped.design, clipped.phenotype), 3, variants)
    np.testing.assert_allclose(again.beta, exact.beta, rtol=1e-9)
    np.testing.assert_allclose(again.se, exact.se, rtol=1e-9)


def test_request_round_trips_through_task_parameters_and_refuses_bad_values() -> None:
    request = DpRequest(epsilon=0.7, delta=1e-7, mechanism="gaussian", collusion=2, bounds=BOUNDS)
    assert DpRequest.from_parameters(request.to_parameters()) == request
    assert DpRequest.from_parameters({"audit.request_id": "x"}) is None
    for bad in ({"dp.epsilon": "-1"}, {"dp.epsilon": "abc"}, {"dp.epsilon": "1", "dp.mechanism": "exponential"},
                {"dp.epsilon": "1", "dp.bounds": "[1, 2]"}, {"dp.delta": "1e-6"},
                {"dp.epsilon": "1", "dp.bounds": '{"QT": [3, -3]}'}):
        with pytest.raises(ProtocolError):
            DpRequest.from_parameters(bad)
    with pytest.raises(ProtocolError, match="no clipping range for 'AGE'"):
        plan_release(DpRequest(epsilon=1.0, bounds=(("QT", -1.0, 1.0),)), "linear", CohortRequest("QT", ("AGE",)), 3)
    with pytest.raises(ProtocolError, match="no differentially private release"):
        plan_release(request, "logistic", CohortRequest("QT"), 3)


def test_noisy_counts_are_post_processed_into_counts() -> None:
    noisy = np.array([[3.4, -2.2, 0.5, 7.9]])
    np.testing.assert_array_equal(postprocess("qc", noisy), [[3.0, 0.0, 0.0, 8.0]])
    assert postprocess("linear", noisy) is noisy
    assert dataclasses.is_dataclass(plan_release(DpRequest(epsilon=1.0), "qc", CohortRequest(""), 1))


def test_calibration_spans_one_variant_to_genome_wide_releases() -> None:
    """OpenDP's own search for the scale overflows on large sensitivities; ours is bounded."""
    for n_variants in (1, 10_000, 1_000_000):
        plan = plan_release(DpRequest(epsilon=1.0, delta=1e-6), "qc", CohortRequest(""), n_variants)
        assert plan.calibration.sensitivity == pytest.approx(math.sqrt(n_variants))
        assert plan.calibration.scale == pytest.approx(4.531 * math.sqrt(n_variants), rel=1e-3)
        assert 0.99 <= plan.calibration.epsilon_achieved <= 1.0
    laplace = plan_release(DpRequest(epsilon=0.1, mechanism="laplace"), "qc", CohortRequest(""), 1_000_000)
    assert laplace.calibration.scale == pytest.approx(1e7, rel=1e-4)
