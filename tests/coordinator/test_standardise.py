"""Affine-invariant numerics: results do not depend on the units of the phenotype and covariates.

The coordinator's drivers run against an in-process executor that computes each site's statistics
with the registered site analyses and aggregates them exactly as the privacy modes do (the secagg
fixed-point ring encoding per site, decoded after summing; float64 for plaintext: the pairwise masks
cancel exactly and do not change the numbers). Oracle: statsmodels on the pooled data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest

from coordinator.drivers import run_firth, run_linear, run_linear_phenotypes, run_logistic
from engine.privacy import ring
from engine.stats.registry import REGISTRY
from engine.stats.association import VariantTable
from engine.cohort.cohort import Cohort
from engine.errors import InputError
from engine.cohort.standardise import identity, refine, standardise_cohort
from engine.tasks import CohortRequest

import statsmodels.api as sm  # noqa: E402  (a test dependency: pyproject [test])


@dataclass
class _Harmonised:
    variants: VariantTable


@dataclass
class _Config:
    cohort: CohortRequest
    privacy: str


@dataclass
class InProcessExecutor:
    """The :class:`coordinator.rounds.RoundExecutor` interface the drivers use, without the network."""

    config: _Config
    cohorts: list[Cohort]
    genotypes: list[np.ndarray]  # per site, int8 (n_site, M), -127 missing
    harmonised: _Harmonised
    dp: None = None
    rounds: int = 0
    last_done: dict = field(default_factory=dict)

    @property
    def clients(self) -> list[Cohort]:
        return self.cohorts

    @property
    def live_sites(self) -> tuple[str, ...]:
        return tuple(f"site{i}" for i in range(len(self.cohorts)))

    def run(self, analysis: str, width: int, *, cohort=None, variants=None, inputs=None,
            parameters=None) -> np.ndarray:
        self.rounds += 1
        spec = REGISTRY[analysis]
        selected = np.arange(len(self.harmonised.variants)) if variants is None else np.asarray(variants)
        inputs = dict(inputs or {})
        names = (cohort or self.config.cohort).covariates
        per_site = []
        for cohort, genotypes in zip(self.cohorts, self.genotypes):
            keep = [cohort.covariate_names.index(name) for name in names]
            site_cohort = dataclasses.replace(cohort, covariates=np.ascontiguousarray(cohort.covariates[:, keep]),
                                              covariate_names=tuple(names))
            state = spec.prepare(site_cohort, inputs)
            block = spec.block(state, np.asfortranarray(genotypes[:, selected]), np.zeros(len(selected), bool), inputs)
            assert block.shape == (len(selected), width)
            per_site.append(block)
        if self.config.privacy == "plaintext":
            return np.sum(per_site, axis=0)
        n = len(per_site)
        total = ring.encode(per_site[0], n)
        for block in per_site[1:]:
            total = ring.add(total, ring.encode(block, n))
        return ring.decode(total, n).reshape(len(selected), width)


def _simulate(seed: int, n_sites: int = 3, n_per_site: int = 250, n_variants: int = 40,
              binary: bool = False) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per-site genotypes, pooled phenotype ``(n,)`` and covariates ``(n, 3)`` (AGE, SEX, ANC)."""
    rng = np.random.default_rng(seed)
    n = n_sites * n_per_site
    anc = rng.uniform(-1, 1, n)
    freq = np.clip(0.3 + 0.15 * anc[:, None] * rng.uniform(-1, 1, n_variants), 0.05, 0.95)
    g = rng.binomial(2, freq).astype(np.int8)
    g[rng.random(g.shape) < 0.02] = -127
    age = np.round(rng.uniform(20, 70, n), 1)
    sex = rng.integers(0, 2, n).astype(float)
    covariates = np.column_stack([age, sex, anc])
    liability = 0.3 * anc + 0.01 * (age - 45) + 0.2 * sex + 0.25 * np.where(g[:, 0] >= 0, g[:, 0], 0) \
        + rng.normal(size=n)
    y = (liability > np.quantile(liability, 0.6)).astype(float) if binary else liability
    return [g[i * n_per_site:(i + 1) * n_per_site] for i in range(n_sites)], y, covariates


def _executor(genotypes, y, covariates, privacy: str, names=("AGE", "SEX", "ANC")) -> InProcessExecutor:
    cohorts, start = [], 0
    for block in genotypes:
        rows = slice(start, start + len(block))
        start += len(block)
        cohorts.append(Cohort(sample_index=np.arange(len(block)), phenotype=y[rows].copy(),
                              covariates=np.ascontiguousarray(covariates[rows]), phenotype_name="Y",
                              covariate_names=tuple(names), n_in_fam=len(block), n_dropped=0))
    m = genotypes[0].shape[1]
    variants = VariantTable(chrom=np.array(["1"] * m), pos=np.arange(1, m + 1), variant_id=np.array([f"v{j}" for j in range(m)]),
                            effect_allele=np.array(["A"] * m), other_allele=np.array(["G"] * m))
    coding = "case-control" if set(np.unique(y)) <= {0.0, 1.0} else "quantitative"
    return InProcessExecutor(_Config(CohortRequest("Y", tuple(names), coding), privacy), cohorts, genotypes,
                             _Harmonised(variants))


def _run(driver, executor: InProcessExecutor):
    """A driver on the study's cohort, as the runner calls it: its one phenotype's result."""
    fit = driver(executor, executor.config.cohort)
    (result,) = fit.results.values()
    return result


def _oracle_neg_log10_p(genotypes, y, covariates, binary: bool) -> np.ndarray:
    g = np.concatenate(genotypes)
    out = np.full(g.shape[1], np.nan)
    for j in range(g.shape[1]):
        ok = g[:, j] >= 0
        x = sm.add_constant(np.column_stack([covariates[ok], g[ok, j].astype(float)]))
        fit = (sm.Logit(y[ok], x).fit(disp=0, tol=1e-12, maxiter=100) if binary else sm.OLS(y[ok], x).fit())
        out[j] = -np.log10(fit.pvalues[-1])
    return out


# (phenotype SD, phenotype offset, AGE scale, AGE offset): the ranges.
SCALES = [(1e-8, 0.0, 1.0, 0.0), (1e6, 1e7, 1.0, 0.0), (1.0, 1e7, 1.0, 0.0), (1e-6, 0.0, 1e-9, 0.0),
          (1.0, 0.0, 1.0, 1e7), (3e3, -2e6, 1e-9, 0.0), (1.0, 0.0, 1e3, 1e7)]


@pytest.mark.parametrize("privacy", ["secagg", "plaintext"])
def test_several_phenotypes_are_standardised_each_over_its_own_samples(privacy: str) -> None:
    """One pass for phenotypes in extreme, different units and with their own missingness: each equals
    its own OLS (statsmodels), so each phenotype's centre and scale come from its own samples."""
    genotypes, y, covariates = _simulate(4)
    rng = np.random.default_rng(11)
    n = len(y)
    matrix = np.column_stack([y * 1e-8, y * 1e6 + 1e7, 3e3 * (y + rng.normal(size=n)) - 2e6])
    matrix[rng.random(matrix.shape) < 0.15] = np.nan
    matrix[np.all(np.isnan(matrix), axis=1), 0] = 1e-8  # the cohort: samples with at least one phenotype
    covariates = covariates.copy()
    covariates[:, 0] = covariates[:, 0] * 1e-9
    executor = _executor(genotypes, np.zeros(n), covariates, privacy)
    start = 0
    for i, cohort in enumerate(executor.cohorts):
        rows = slice(start, start + cohort.n_samples)
        start += cohort.n_samples
        executor.cohorts[i] = dataclasses.replace(cohort, phenotype_matrix=matrix[rows])
    names = ("P1", "P2", "P3")
    results = run_linear_phenotypes(executor, CohortRequest(",".join(names), ("AGE", "SEX", "ANC"))).results
    assert list(results) == list(names)
    g = np.concatenate(genotypes)
    for p, name in enumerate(names):
        result = results[name]
        assert np.all(result.errcode == "."), name
        for j in range(g.shape[1]):
            ok = (g[:, j] >= 0) & np.isfinite(matrix[:, p])
            fit = sm.OLS(matrix[ok, p], sm.add_constant(np.column_stack([covariates[ok], g[ok, j].astype(float)]))).fit()
            assert result.n[j] == ok.sum()
            np.testing.assert_allclose(result.beta[j], fit.params[-1], rtol=1e-6, err_msg=name)
            np.testing.assert_allclose(result.se[j], fit.bse[-1], rtol=1e-6, err_msg=name)
            assert abs(result.neg_log10_p[j] + np.log10(fit.pvalues[-1])) < 1e-4, name


@pytest.mark.parametrize("privacy", ["secagg", "plaintext"])
def test_linear_is_invariant_to_phenotype_and_covariate_units(privacy: str) -> None:
    genotypes, y, covariates = _simulate(3)
    reference = None
    for sd, offset, age_scale, age_offset in SCALES:
        y_t = y * sd + offset
        c_t = covariates.copy()
        c_t[:, 0] = c_t[:, 0] * age_scale + age_offset
        result = _run(run_linear, _executor(genotypes, y_t, c_t, privacy))
        oracle = _oracle_neg_log10_p(genotypes, y_t, c_t, binary=False)
        assert np.all(result.errcode == "."), (sd, offset, age_scale, age_offset)
        assert np.max(np.abs(result.neg_log10_p - oracle)) < 1e-4, (sd, offset, age_scale, age_offset)
        base = _run(run_linear, _executor(genotypes, y, covariates, privacy)) if reference is None else reference
        reference = base
        # beta and SE on the original scale: those of the unscaled phenotype times its SD.
        np.testing.assert_allclose(result.beta, base.beta * sd, rtol=1e-6)
        np.testing.assert_allclose(result.se, base.se * sd, rtol=1e-6)


def test_secagg_equals_plaintext_to_float64_precision() -> None:
    genotypes, y, covariates = _simulate(5)
    c_t = covariates.copy()
    c_t[:, 0] = c_t[:, 0] * 1e-9
    c_t[:, 2] = c_t[:, 2] + 1e7
    plain = _run(run_linear, _executor(genotypes, y * 1e-7 + 30, c_t, "plaintext"))
    masked = _run(run_linear, _executor(genotypes, y * 1e-7 + 30, c_t, "secagg"))
    np.testing.assert_allclose(masked.beta, plain.beta, rtol=1e-10)
    np.testing.assert_allclose(masked.se, plain.se, rtol=1e-10)
    np.testing.assert_allclose(masked.neg_log10_p, plain.neg_log10_p, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model", [run_logistic, run_firth])
def test_logistic_is_invariant_to_covariate_units(model) -> None:
    genotypes, y, covariates = _simulate(9, binary=True)
    base = _run(model, _executor(genotypes, y, covariates, "secagg"))
    oracle = _oracle_neg_log10_p(genotypes, y, covariates, binary=True)
    if model is run_logistic:
        assert np.max(np.abs(base.neg_log10_p - oracle)) < 1e-3
    for age_scale, age_offset in [(1e-9, 0.0), (1.0, 1e7), (1e3, -1e7)]:
        c_t = covariates.copy()
        c_t[:, 0] = c_t[:, 0] * age_scale + age_offset
        result = _run(model, _executor(genotypes, y, c_t, "secagg"))
        assert list(result.errcode) == list(base.errcode)
        assert np.max(np.abs(result.neg_log10_p - base.neg_log10_p)) < 1e-3, (age_scale, age_offset)
        np.testing.assert_allclose(result.beta, base.beta, rtol=1e-4, atol=1e-6)
        if model is run_logistic:
            assert np.max(np.abs(result.neg_log10_p - oracle)) < 1e-3


def test_constant_covariate_is_excluded_and_reported() -> None:
    genotypes, y, covariates = _simulate(4)
    with_constant = np.column_stack([covariates, np.full(len(y), 7.25)])
    executor = _executor(genotypes, y, with_constant, "secagg", names=("AGE", "SEX", "ANC", "SITEFLAG"))
    fit = run_linear(executor, executor.config.cohort)
    assert fit.excluded_covariates == ("SITEFLAG",)
    (result,) = fit.results.values()
    without = _run(run_linear, _executor(genotypes, y, covariates, "secagg"))
    np.testing.assert_allclose(result.se, without.se, rtol=1e-12)


def test_constant_phenotype_is_refused() -> None:
    genotypes, y, covariates = _simulate(4)
    with pytest.raises(InputError, match="constant"):
        _run(run_linear, _executor(genotypes, np.full(len(y), 3.5), covariates, "secagg"))


def test_refine_bounds_a_column_lost_to_the_fixed_point_resolution() -> None:
    """SD 1e-9 is below secagg's resolution in the first round: the bound rescales it into range."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1000, 1)) * 1e-9
    table = identity(0)
    resolution = 2 * 2.0 ** -41
    for rounds in range(1, 6):
        cohort = Cohort(np.arange(1000), z[:, 0], np.empty((1000, 0)), "Y", (), 1000, 0)
        moved = standardise_cohort(cohort, table, scale_phenotype=True)
        values = np.array([1000.0, moved.phenotype.sum(), (moved.phenotype ** 2).sum()])
        encoded = ring.decode(ring.encode(values[None], 2), 2).reshape(-1)
        step = refine(table, encoded, resolution, scale_phenotype=True)
        table = step.table
        if step.settled:
            break
    assert step.settled and rounds <= 4
    assert 0.5 < table[1, 0] / 1e-9 < 2.0
