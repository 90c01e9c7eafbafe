"""The logistic/Firth kernel and solver against naive per-variant numpy oracles kept here, and PLINK 2.

The oracles fit each variant on its own (complete cases only) with textbook Newton-Raphson for the
logistic MLE and logistf-style penalised Newton with step halving for Firth's estimate, iterated to
machine precision. The federated solver stops by PLINK 2's rules, so estimates agree to ~1e-6 SE.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from engine.stats.registry import REGISTRY
from engine.stats.statistic import flip_genotypes
from engine.stats.association import VariantTable
from engine.cohort.cohort import Cohort
from engine.errors import InputError, ProtocolError
from engine.stats.linear.kernel import block_statistics
from engine.stats.logistic.kernel import LogisticLayout, covariate_statistics, design_products, logistic_statistics
from engine.stats.logistic.start import StartLayout, start_statistics
from engine.stats.logistic.solve import BinaryTraitFit
from engine.stats.pvalues import z_test_neg_log10_p


def _variants(m: int) -> VariantTable:
    ids = np.array([f"v{i}" for i in range(m)])
    return VariantTable(np.full(m, "1"), np.arange(1, m + 1), ids, np.full(m, "A"), np.full(m, "G"))


def _complete(genotypes: np.ndarray, design: np.ndarray, y: np.ndarray, j: int):
    keep = genotypes[:, j] >= 0
    return np.column_stack([design[keep], genotypes[keep, j]]).astype(float), y[keep]


def naive_logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logistic MLE by Newton-Raphson to machine precision: (coefficients, covariance)."""
    b = np.zeros(x.shape[1])
    for _ in range(100):
        step = np.linalg.solve(_information(x, b), x.T @ (y - expit(x @ b)))
        b += step
        if np.abs(step).max() < 1e-13:
            break
    return b, np.linalg.inv(_information(x, b))


def _information(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    eta = x @ b
    return x.T @ (x * (expit(eta) * expit(-eta))[:, None])


def naive_firth(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Firth's penalised MLE (logistf: modified score, Fisher-information steps, step halving)."""

    def penalised(b: np.ndarray) -> float:
        eta = x @ b
        loglik = -np.sum(np.where(y == 1, np.logaddexp(0, -eta), np.logaddexp(0, eta)))
        return float(loglik + 0.5 * np.linalg.slogdet(_information(x, b))[1])

    b = np.zeros(x.shape[1])
    for _ in range(500):
        eta = x @ b
        p, w = expit(eta), expit(eta) * expit(-eta)
        cov = np.linalg.inv(_information(x, b))
        h = w * np.einsum("ia,ab,ib->i", x, cov, x)
        step = cov @ (x.T @ (y - p + h * (0.5 - p)))
        step *= min(1.0, 5.0 / np.abs(step).max())
        current = penalised(b)
        for _ in range(30):
            if penalised(b + step) >= current - 1e-12:
                break
            step /= 2
        b += step
        if np.abs(step).max() < 1e-12:
            break
    return b, np.linalg.inv(_information(x, b))


def simulate(rng: np.random.Generator, n: int = 600, m: int = 40, missing: float = 0.03):
    """Common variants, a causal one, rare ones, and separated ones (see the comments)."""
    freqs = rng.uniform(0.05, 0.5, size=m)
    genotypes = rng.binomial(2, freqs, size=(n, m)).astype(np.int8)
    covariates = np.column_stack([rng.normal(45, 12, n), rng.integers(0, 2, n), rng.normal(0, 1, n)])
    design = np.column_stack([np.ones(n), covariates])
    liability = 0.8 * genotypes[:, 0] + 0.02 * (covariates[:, 0] - 45) + 0.5 * covariates[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-(liability - 1.0)))).astype(float)
    cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    genotypes[:, 1] = 0
    genotypes[rng.choice(cases, 3, replace=False), 1] = 1  # carriers are all cases: zero-cell, Firth
    genotypes[:, 2] = 0
    genotypes[rng.choice(controls, 2, replace=False), 2] = 1  # carriers are all controls
    genotypes[:, 3] = 0
    genotypes[np.r_[cases[:2], controls[:2]], 3] = 1  # rare, in cases and controls: logistic
    genotypes[:, 4] = 0
    genotypes[rng.choice(cases, 5, replace=False), 4] = 2  # homozygous carriers, all cases
    genotypes[:, 5] = 1  # constant: CONST_OMITTED_ALLELE
    # Complete separation by genotype 6 and the binary covariate together (cases: g + 2 sex >= 3),
    # with both alleles among cases and controls: logistic regression diverges, PLINK uses Firth.
    y_sep = (genotypes[:, 6] + 2 * covariates[:, 1] >= 3).astype(float)
    genotypes[rng.random((n, m)) < missing] = -127
    genotypes[:, 5] = 1
    return np.asfortranarray(genotypes), design, y, y_sep


def fit(genotypes: np.ndarray, design: np.ndarray, y: np.ndarray, *, always_firth: bool = False,
        sites: int = 1, warm_start: bool = True, solver_out: list | None = None):
    """The federated solver, with each round's statistics summed over ``sites`` sample splits."""
    splits = np.array_split(np.arange(len(y)), sites)

    def totals(kernel):
        return sum(kernel(np.asfortranarray(genotypes[rows]), design[rows], y[rows]) for rows in splits)

    solver = BinaryTraitFit(genotypes.shape[1], design.shape[1], always_firth=always_firth, warm_start=warm_start)
    if solver_out is not None:
        solver_out.append(solver)
    rounds = 0
    while requests := solver.requests():
        for request in requests:
            rounds += 1
            inputs = request.inputs
            if request.analysis == "covariate_fit":
                solver.update(request, totals(lambda g, d, yy: covariate_statistics(d, yy, inputs["coef"])))
            elif request.analysis == "linear":
                solver.update(request, totals(block_statistics))
            elif request.analysis == "logistic_start":
                solver.update(request, totals(lambda g, d, yy: start_statistics(g, d, yy, inputs["null_coef"])))
            else:
                solver.update(request, totals(lambda g, d, yy: logistic_statistics(
                    g[:, request.variants], d, yy, inputs["coef"], firth=request.analysis == "firth",
                    exact=request.analysis == "logistic_exact")))
    return solver.result(_variants(genotypes.shape[1])), rounds


def test_kernel_matches_naive_sums_and_is_additive() -> None:
    rng = np.random.default_rng(11)
    genotypes, design, y, _ = simulate(rng, n=300, m=12)
    coef = rng.normal(scale=0.3, size=(12, design.shape[1] + 1))
    coef[:, 1] *= 0.05  # AGE is in years
    layout = LogisticLayout(design.shape[1], firth=True)
    packed = logistic_statistics(genotypes, design, y, coef, firth=True)
    for j in range(genotypes.shape[1]):
        x, yj = _complete(genotypes, design, y, j)
        p = 1 / (1 + np.exp(-x @ coef[j]))
        w = p * (1 - p)
        np.testing.assert_allclose(layout.unpack_info(packed[j:j + 1])[0], x.T @ (x * w[:, None]), rtol=1e-10)
        np.testing.assert_allclose(packed[j, layout.grad_slice], x.T @ (yj - p), rtol=1e-9, atol=1e-9)
        loglik = np.sum(yj * np.log(p) + (1 - yj) * np.log1p(-p))
        assert packed[j, layout.loglik_column] == pytest.approx(loglik, rel=1e-12)
        np.testing.assert_allclose(layout.unpack_tensor(packed[j:j + 1])[0],
                                   np.einsum("i,ia,ib,ic->abc", w * (0.5 - p), x, x, x), rtol=1e-9, atol=1e-9)
    halves = [logistic_statistics(np.asfortranarray(genotypes[rows]), design[rows], y[rows], coef, firth=True)
              for rows in (slice(0, 140), slice(140, None))]
    np.testing.assert_allclose(halves[0] + halves[1], packed, rtol=1e-12, atol=1e-9)
    # Newton's statistics use float32 probabilities (relative error ~1e-7 per sample), summed in float64.
    plain = logistic_statistics(genotypes, design, y, coef)
    newton = LogisticLayout(design.shape[1])
    for j in range(genotypes.shape[1]):
        x, _ = _complete(genotypes, design, y, j)
        p = 1 / (1 + np.exp(-x @ coef[j]))
        # bounds from a relative error of 1e-6 in each sample's p, 1 - p and w
        info_bound = 1e-6 * np.abs(x).T @ (np.abs(x) * (p * (1 - p))[:, None])
        assert np.all(np.abs(newton.unpack_info(plain[j:j + 1])[0] - layout.unpack_info(packed[j:j + 1])[0])
                      <= info_bound)
        score_bound = 1e-6 * np.abs(x).T @ np.minimum(p, 1 - p)
        assert np.all(np.abs(plain[j, newton.grad_slice] - packed[j, layout.grad_slice]) <= score_bound)
        assert not np.array_equal(plain[j, newton.grad_slice], packed[j, layout.grad_slice])


def test_start_statistics_match_naive_sums() -> None:
    """The start round: linear statistics, then the logistic statistics and genotype third moments at the
    covariate-only fit, where every variant shares the linear predictor (no exp per variant)."""
    rng = np.random.default_rng(12)
    genotypes, design, y, _ = simulate(rng, n=300, m=12, missing=0.1)
    b = np.array([-1.2, 0.02, 0.3, -0.4])
    layout, start = LogisticLayout(design.shape[1], firth=True), StartLayout(design.shape[1])
    packed = start_statistics(genotypes, design, y, b)
    assert packed.shape == (12, start.width) and len(start.genotype_triples) == 35 - 20  # of (P + 2 choose 3), P = 5
    np.testing.assert_allclose(packed[:, start.linear], block_statistics(genotypes, design, y), rtol=1e-12, atol=1e-9)
    for j in range(genotypes.shape[1]):
        x, yj = _complete(genotypes, design, y, j)
        p = expit(x[:, :-1] @ b)
        w = p * (1 - p)
        logistic = packed[j:j + 1, start.logistic]
        np.testing.assert_allclose(LogisticLayout(design.shape[1]).unpack_info(logistic)[0],
                                   x.T @ (x * w[:, None]), rtol=1e-10)
        np.testing.assert_allclose(logistic[0, layout.grad_slice], x.T @ (yj - p), rtol=1e-9, atol=1e-9)
        tensor = np.einsum("i,ia,ib,ic->abc", w * (0.5 - p), x, x, x)
        unique = tensor[tuple(layout.triples.T)]
        np.testing.assert_allclose(packed[j, start.moments], unique[start.genotype_triples], rtol=1e-9, atol=1e-9)


def test_site_analysis_flips_to_the_study_allele_and_checks_inputs() -> None:
    rng = np.random.default_rng(3)
    genotypes, design, y, _ = simulate(rng, n=200, m=8)
    coef = rng.normal(scale=0.2, size=(8, design.shape[1] + 1))
    flip = np.zeros(8, dtype=bool)
    flip[[1, 4, 6]] = True
    cohort = Cohort(np.arange(200), y, design[:, 1:], "BT", ("A", "B", "C"), 200, 0)
    for name in ("logistic", "logistic_exact", "firth"):
        analysis = REGISTRY[name]
        state = analysis.prepare(cohort, {"coef": coef})
        stored = flip_genotypes(genotypes, flip)  # how a site holding the other allele stores them
        out = analysis.block(state, stored, flip, {"coef": coef})
        np.testing.assert_allclose(out, logistic_statistics(genotypes, design, y, coef, firth=name == "firth",
                                                            exact=name == "logistic_exact"))
        with pytest.raises(ProtocolError, match="columns"):
            analysis.prepare(cohort, {"coef": coef[:, :3]})
    exact = logistic_statistics(genotypes, design, y, coef, exact=True)
    np.testing.assert_array_equal(exact, logistic_statistics(genotypes, design, y, coef, firth=True)[:, :exact.shape[1]])
    quantitative = Cohort(np.arange(200), y + 0.5, design[:, 1:], "QT", ("A", "B", "C"), 200, 0)
    with pytest.raises(ProtocolError, match="case/control"):
        REGISTRY["logistic"].prepare(quantitative, {"coef": coef})


@pytest.mark.parametrize("sites", [1, 3])
def test_logistic_with_firth_fallback_matches_naive_fits(sites: int) -> None:
    rng = np.random.default_rng(2026)
    genotypes, design, y, y_sep = simulate(rng)
    result, rounds = fit(genotypes, design, y, sites=sites)
    assert result.test == "logistic"
    assert result.errcode[5] == "CONST_OMITTED_ALLELE" and np.isnan(result.beta[5])
    assert list(np.flatnonzero(result.firth)) == [1, 2, 4], "zero-cell variants go straight to Firth"
    for j in range(genotypes.shape[1]):
        if j == 5:
            continue
        x, yj = _complete(genotypes, design, y, j)
        coef, cov = (naive_firth if result.firth[j] else naive_logistic)(x, yj)
        se = np.sqrt(cov[-1, -1])
        assert result.n[j] == len(yj)
        assert abs(result.beta[j] - coef[-1]) < 1e-5 * se, j
        assert result.se[j] == pytest.approx(se, rel=1e-4), j
        assert result.neg_log10_p[j] == pytest.approx(z_test_neg_log10_p(np.array([coef[-1] / se]))[0], abs=2e-4)
    assert result.neg_log10_p[0] > 3, "the causal variant"
    assert rounds <= 30


def test_warm_start_decides_like_plinks_path_from_zero_in_fewer_evaluations() -> None:
    """Newton from the covariate-only fit: same estimates and decisions as PLINK's path from 0.

    Variant 7 is quasi-separated by genotype (genotype 0 only in controls, 2 only in cases, 1 in both),
    so both alleles occur among cases and controls: Newton creeps towards infinity from either start,
    and the warm fit is refitted from 0, whose path ends it as PLINK's does (``UNFINISHED``).
    """
    rng = np.random.default_rng(7)
    genotypes, design, y, _ = simulate(rng, n=800, m=60)
    cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    genotypes[:, 7] = 1
    genotypes[controls[: len(controls) // 2], 7] = 0
    genotypes[cases[: len(cases) // 2], 7] = 2
    solvers: list = []
    cold, _ = fit(genotypes, design, y, warm_start=False, solver_out=solvers)
    warm, _ = fit(genotypes, design, y, sites=2, solver_out=solvers)
    np.testing.assert_array_equal(warm.errcode, cold.errcode)
    np.testing.assert_array_equal(warm.firth, cold.firth)
    assert warm.errcode[7] == "UNFINISHED" and solvers[1].refitted[7] and solvers[1].refitted.sum() == 1
    ok = np.isfinite(cold.beta)
    assert np.all(np.abs(warm.beta[ok] - cold.beta[ok]) < 1e-6 * cold.se[ok])
    np.testing.assert_allclose(warm.se[ok], cold.se[ok], rtol=1e-4)
    # Per-variant evaluations: from 0 iteration 0 is free (linear statistics), the later ones are full;
    # warm, iteration 0 is the shared-predictor round and every later one is full.
    fitted = (solvers[0].newton.status >= 0) & ~solvers[1].refitted
    full_cold, full_warm = (solver.newton.iteration[fitted].sum() for solver in solvers)
    assert full_warm <= 0.6 * full_cold


def test_covariates_that_separate_the_phenotype_mean_firth_for_every_variant() -> None:
    rng = np.random.default_rng(2026)
    genotypes, design, _, y_sep = simulate(rng, missing=0.0)
    result, _ = fit(genotypes, design, y_sep, sites=2)
    assert np.all(result.firth[result.errcode != "CONST_OMITTED_ALLELE"]), "PLINK's separation_found"
    for j in (0, 3, 7):
        x, yj = _complete(genotypes, design, y_sep, j)
        coef, cov = naive_firth(x, yj)
        assert abs(result.beta[j] - coef[-1]) < 1e-3 * np.sqrt(cov[-1, -1])
        assert result.se[j] == pytest.approx(np.sqrt(cov[-1, -1]), rel=1e-3)


def test_covariate_only_firth_failure_is_refused() -> None:
    rng = np.random.default_rng(1)
    n = 200
    x = np.r_[np.zeros(n // 2), np.ones(n // 2)]
    design = np.column_stack([np.ones(n), x, x])  # separating and collinear: no Firth fit either
    y = x.copy()
    genotypes = np.asfortranarray(rng.binomial(2, 0.3, size=(n, 3)).astype(np.int8))
    with pytest.raises(InputError, match="covariate-only Firth regression converges"):
        fit(genotypes, design, y)


def test_forced_firth_matches_naive_firth() -> None:
    rng = np.random.default_rng(7)
    genotypes, design, y, _ = simulate(rng, n=400, m=16)
    result, _ = fit(genotypes, design, y, always_firth=True, sites=2)
    assert result.test == "firth"
    for j in range(genotypes.shape[1]):
        if j == 5:
            assert result.errcode[j] == "CONST_OMITTED_ALLELE" and not result.firth[j]
            continue
        assert result.firth[j]
        x, yj = _complete(genotypes, design, y, j)
        coef, cov = naive_firth(x, yj)
        se = np.sqrt(cov[-1, -1])
        assert abs(result.beta[j] - coef[-1]) < 1e-4 * se, j
        assert result.se[j] == pytest.approx(se, rel=1e-4), j


def test_design_products_layout() -> None:
    design = np.random.default_rng(0).normal(size=(5, 3))
    products = design_products(design, firth=True)
    assert products.pairs.shape == (5, 6) and products.triples is not None and products.triples.shape == (5, 10)
    layout = LogisticLayout(3, firth=True)
    assert layout.width == 10 + 4 + 1 + 20
    assert layout.triple_of[1, 3, 0] == layout.triple_of[0, 1, 3] == layout.triple_of[3, 0, 1]


def test_edge_cases_match_plink2(tmp_path) -> None:
    """Zero-cell, rare, strong and constant variants, and covariates that separate the phenotype,
    against PLINK 2 itself on the pooled data (the federated fit sums three sample splits)."""
    from engine.io.bed_writer import BedWriter, write_bim, write_fam
    from tests.plink_tools import read_plink_table, run_plink2

    rng = np.random.default_rng(2026)
    genotypes, design, y, y_sep = simulate(rng, missing=0.0)
    genotypes = np.array(genotypes)
    cases, controls = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for j, (in_cases, in_controls) in zip(range(7, 13), [(15, 1), (25, 1), (8, 1), (40, 2), (12, 0), (30, 1)]):
        genotypes[:, j] = 0  # strong rare effects: large but finite odds ratios
        genotypes[rng.choice(cases, in_cases, replace=False), j] = 1
        genotypes[rng.choice(controls, in_controls, replace=False), j] = 1
    genotypes = np.asfortranarray(genotypes)
    n, m = genotypes.shape
    ids = np.array([f"s{i}" for i in range(n)])
    write_fam(tmp_path / "d.fam", ids, ids, np.zeros(n, dtype=int))
    write_bim(tmp_path / "d.bim", np.full(m, "1"), np.array([f"v{j}" for j in range(m)]), np.arange(1, m + 1),
              np.full(m, "A"), np.full(m, "G"))
    with BedWriter(tmp_path / "d.bed", n) as writer:
        writer.write_block(genotypes)
    rows = ["FID\tIID\tY\tYS"] + [f"{i}\t{i}\t{int(a) + 1}\t{int(b) + 1}" for i, a, b in zip(ids, y, y_sep)]
    (tmp_path / "p.txt").write_text("\n".join(rows) + "\n")
    rows = ["FID\tIID\tAGE\tSEX\tX"] + [f"{i}\t{i}\t{a:.17g}\t{b:.17g}\t{c:.17g}"
                                           for i, (a, b, c) in zip(ids, design[:, 1:])]
    (tmp_path / "c.txt").write_text("\n".join(rows) + "\n")
    run_plink2(["--bfile", str(tmp_path / "d"), "--pheno", str(tmp_path / "p.txt"),
                "--covar", str(tmp_path / "c.txt"),
                "--glm", "omit-ref", "hide-covar", "cols=+a1count,+firth,+beta,+se", "--out", str(tmp_path / "r")],
               cwd=tmp_path)
    for name, phenotype in (("Y", y), ("YS", y_sep)):
        ref = read_plink_table(tmp_path / f"r.{name}.glm.logistic.hybrid")
        result, _ = fit(genotypes, design, phenotype, sites=3)
        assert list(result.errcode) == list(ref["ERRCODE"]), name
        assert list(np.where(result.firth, "Y", "N")) == list(ref["FIRTH?"]), name
        # Under covariate separation, the penalised likelihood of a variant with 1-2 carriers can have
        # several stationary points; single- and double-precision paths may stop at different ones.
        ok = np.isfinite(ref["P"]) & ((ref["A1_CT"] >= 3) | (name == "Y"))
        assert np.max(np.abs(result.beta[ok] - ref["BETA"][ok]) / ref["SE"][ok]) < 1e-3, name
        assert np.max(np.abs(result.neg_log10_p[ok] + np.log10(ref["P"][ok]))) < 1e-3, name
    assert "UNFINISHED" in set(ref["ERRCODE"])
    assert np.all(ref["FIRTH?"][ref["ERRCODE"] != "CONST_OMITTED_ALLELE"] == "Y"), "separation: Firth everywhere"
