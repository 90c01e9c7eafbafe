"""Kernels of federated LD pruning and PCA against naive reference implementations kept here.

* the site PCA products against dense numpy (flips, missing calls, constant variants, both precisions);
* block Lanczos against ``numpy.linalg.eigh``;
* the LD pair sums against a per-pair loop, across blocks;
* PLINK's pruning pass against a plain transcription of PLINK 1.9 / PLINK 2 v2.00a3's loop
  (``_plink_order_reference``), on simulated data with windows in variants and in kb;
* configuration and command-line parsing.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.structure_cli import pca_table, prune_table
from coordinator.study import PcaSettings
from coordinator.study_file import load_study, pca_settings, prune_settings
from engine.errors import ConfigError, InputError, ProtocolError
from engine.stats.ld.kernel import LdPairsStatistic, band_statistics
from engine.stats.ld.prune import (SMALL_EPSILON, PruneSettings, Window, band_width, constant_at_load, exceeds,
                             indep_pairwise, major_frequency, windows)
from engine.stats.pca.kernel import PcaStatistic, back_project, project
from engine.stats.pca.solve import BlockKrylov, finish, krylov_plan, score_inputs, standardisation
from engine.stats.qc.counts import GenotypeCounts, genotype_counts
from site_agent import scores


def _genotypes(rng: np.random.Generator, n: int, m: int, missing: float = 0.05) -> np.ndarray:
    freq = rng.uniform(0.05, 0.95, m)
    g = rng.binomial(2, freq, (n, m)).astype(np.int8)
    g[rng.random((n, m)) < missing] = -127
    g[:, 3] = np.where(g[:, 3] < 0, g[:, 3], 1)  # constant (all heterozygous)
    return np.asfortranarray(g)


def _dense_z(g: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Study-oriented standardised genotypes (missing = 0) and the standardisation, the slow way."""
    study = np.where(g < 0, -1, np.where(flip, 2 - g, g)).astype(float)
    counts = GenotypeCounts.from_totals(genotype_counts(g, flip))
    standard = standardisation(counts)
    z = np.where(study < 0, 0.0, (study - standard[:, 0]) * standard[:, 1])
    return z, standard


def _dot_bounds(g: np.ndarray, flip: np.ndarray, standard: np.ndarray, v: np.ndarray,
                dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise error bounds of ``z @ v`` and ``z.T @ (z @ v)`` computed in ``dtype``.

    The kernels multiply the raw genotypes and centre afterwards, so the terms summed are those of
    ``a = (|g| + |mean|) * |scale|``, not of ``z``. The classical bound for a dot product of length
    n, |error| <= n * eps * sum |a_k b_k| (with a margin for the casts), holds whatever order BLAS
    sums in (threads, blocking), unlike a tolerance relative to the largest value.
    """
    study = np.where(g < 0, 0, np.where(flip, 2 - g, g)).astype(float)
    a = (study + np.abs(standard[:, 0])) * np.abs(standard[:, 1])
    n_terms, eps = sum(g.shape), float(np.finfo(dtype).eps)
    first = 4 * n_terms * eps * (a @ np.abs(v))
    return first, 8 * n_terms * eps * (a.T @ (a @ np.abs(v)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pca_products_equal_dense(dtype: type) -> None:
    rng = np.random.default_rng(1)
    g = _genotypes(rng, 60, 40)
    flip = rng.random(40) < 0.5
    z, standard = _dense_z(g, flip)
    v = rng.standard_normal((40, 5))
    first_bound, second_bound = _dot_bounds(g, flip, standard, v, dtype)
    u = project(g, flip, standard, v, dtype)
    assert np.all(np.abs(u - z @ v) <= first_bound)
    back = back_project(g, flip, standard, u, dtype)
    assert np.all(np.abs(back - z.T @ (z @ v)) <= second_bound)
    assert np.all(np.abs(back[3]) <= second_bound[3])  # all heterozygous: z = 0 for everyone


def test_pca_analysis_two_passes_over_blocks() -> None:
    rng = np.random.default_rng(2)
    g = _genotypes(rng, 30, 50)
    flip = np.zeros(50, dtype=bool)
    z, standard = _dense_z(g, flip)
    v = rng.standard_normal((50, 4))
    analysis = PcaStatistic()
    state = analysis.prepare(SimpleNamespace(n_samples=30), {"standard": standard, "v": v})
    blocks = [slice(0, 17), slice(17, 34), slice(34, 50)]
    for b in blocks:
        analysis.scan(state, g[:, b], flip[b], {"standard": standard[b], "v": v[b]})
    out = np.vstack([analysis.block(state, g[:, b], flip[b], {"standard": standard[b], "v": v[b]}) for b in blocks])
    first_bound, second_bound = _dot_bounds(g, flip, standard, v, analysis.dtype)  # float32 GEMMs (PcaStatistic.dtype)
    assert np.all(np.abs(analysis.sample_values(state) - z @ v) <= first_bound)
    assert np.all(np.abs(out - z.T @ z @ v) <= second_bound)
    with pytest.raises(ProtocolError, match="standard"):
        analysis.prepare(SimpleNamespace(n_samples=30), {"standard": -standard, "v": v})


def test_block_krylov_finds_the_top_eigenpairs() -> None:
    rng = np.random.default_rng(3)
    n, m, k = 200, 500, 6
    z = rng.standard_normal((n, 8)) @ (rng.standard_normal((8, m)) * np.linspace(6, 2, 8)[:, None]) \
        + rng.standard_normal((n, m))
    theta, vectors = np.linalg.eigh(z.T @ z)
    theta, vectors = theta[::-1][:k], vectors[:, ::-1][:, :k]
    plan = krylov_plan(k, n, m)
    krylov = BlockKrylov(m, plan, np.random.default_rng(0))
    while (block := krylov.request()) is not None:
        krylov.update(z.T @ (z @ block))
    ritz = krylov.result()
    assert krylov.rounds < plan.max_rounds and np.all(ritz.residuals <= plan.tolerance)
    np.testing.assert_allclose(ritz.theta, theta, rtol=1e-8)
    assert np.min(np.abs(np.sum(ritz.loadings * vectors, axis=0))) > 1 - 1e-8
    inputs = score_inputs(ritz)
    result = finish(ritz, z.T @ (z @ inputs), m, krylov.rounds + 1, plan.tolerance)
    np.testing.assert_allclose(np.linalg.norm(z @ inputs, axis=0), 1.0, rtol=1e-8)  # unit sample eigenvectors
    np.testing.assert_allclose(result.eigenvalues, theta / m, rtol=1e-8)
    assert result.converged and result.residuals.max() < 1e-5
    approx = krylov_plan(k, n, m, approx=True)
    assert (approx.block, approx.max_rounds, approx.tolerance) == (2 * k, k + 1, None)
    with pytest.raises(InputError, match="too few samples"):
        krylov_plan(10, 5, 100)


def test_block_krylov_stops_when_the_space_is_exhausted() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((30, 12))
    krylov = BlockKrylov(12, krylov_plan(3, 30, 12, block=5), np.random.default_rng(1))
    while (block := krylov.request()) is not None:
        krylov.update(a.T @ (a @ block))
    assert krylov.dimension <= 12
    np.testing.assert_allclose(krylov.result().theta, np.linalg.eigvalsh(a.T @ a)[::-1][:3], rtol=1e-9)


def _pair_sums_reference(g: np.ndarray, band: int) -> np.ndarray:
    n, m = g.shape
    out = np.zeros((m, 6, band))
    for t in range(m):
        for d in range(1, band + 1):
            if t - d < 0:
                continue
            both = (g[:, t] >= 0) & (g[:, t - d] >= 0)
            a, b = g[both, t].astype(float), g[both, t - d].astype(float)
            out[t, :, d - 1] = [both.sum(), a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()]
    return out


def test_ld_pair_sums_equal_per_pair_loop_across_blocks() -> None:
    rng = np.random.default_rng(5)
    g = _genotypes(rng, 40, 70, missing=0.1)
    flip = rng.random(70) < 0.3
    study = np.where(g < 0, g, np.where(flip, 2 - g, g)).astype(np.int8)
    band = 7
    expected = _pair_sums_reference(study, band)
    np.testing.assert_array_equal(band_statistics(np.asfortranarray(study), study[:, :0], band), expected)
    analysis = LdPairsStatistic()
    position = np.arange(70, dtype=np.int64)
    state = analysis.prepare(SimpleNamespace(n_samples=40), {"band": np.array([band]), "position": position})
    parts = [analysis.block(state, g[:, a:b], flip[a:b], {"position": position[a:b]})
             for a, b in ((0, 5), (5, 31), (31, 70))]
    np.testing.assert_array_equal(np.vstack(parts).reshape(70, 6, band), expected)
    with pytest.raises(ProtocolError, match="task order"):
        analysis.block(state, g[:, :5], flip[:5], {"position": position[:5]})


def _plink_order_reference(above: np.ndarray, counts: GenotypeCounts, all_windows: list[Window]) -> np.ndarray:
    """PLINK 1.9's / PLINK 2 v2.00a3's --indep-pairwise loop, pair by pair (slow, plain)."""
    m, band = above.shape
    removed = np.zeros(m, dtype=bool)
    constant, freq = constant_at_load(counts), major_frequency(counts)
    unchecked = np.arange(m) + 1
    for window in all_windows:
        removed[window.first_new: window.stop] |= constant[window.first_new: window.stop]
        end = window.stop
        while True:
            before = removed.sum()
            for first in range(window.start, end):
                if removed[first] or unchecked[first] == end:
                    continue
                second = first + 1
                while second < end and (removed[second] or second < unchecked[first]):
                    second += 1
                while second < end:
                    d = second - first
                    if d <= band and above[second, d - 1]:
                        if freq[first] > freq[second] * (1 + SMALL_EPSILON):
                            removed[first] = True
                        else:
                            removed[second] = True
                            later = second + 1
                            while later < end and removed[later]:
                                later += 1
                            unchecked[first] = later
                        break
                    second += 1
                    while second < end and removed[second]:
                        second += 1
                else:
                    unchecked[first] = end
            if removed.sum() == before:
                break
    return removed


@pytest.mark.parametrize("settings", [PruneSettings(10, 3, 0.05), PruneSettings(25, 25, 0.02),
                                      PruneSettings(40, 1, 0.1), PruneSettings(3.5, 1, 0.03, kb=True)])
def test_pruning_pass_equals_plink_loop(settings: PruneSettings) -> None:
    rng = np.random.default_rng(6)
    n, m = 80, 300
    latent = rng.standard_normal((n, 6))
    freq = rng.uniform(0.1, 0.9, m)
    liability = latent @ rng.standard_normal((6, m)) * 0.6 + rng.standard_normal((n, m))
    threshold = np.sort(liability, axis=0)[((1 - freq) * (n - 1)).astype(int), np.arange(m)]
    g = (liability > threshold).astype(np.int8) + \
        (rng.random((n, m)) < freq).astype(np.int8)
    g[rng.random((n, m)) < 0.03] = -127
    g[:, 50] = 0  # constant
    chrom = np.array(["1"] * 120 + ["2"] * 1 + ["3"] * 170 + ["0"] * 9)
    pos = np.concatenate([np.sort(rng.choice(40_000, 120, replace=False)), [5],
                          np.sort(rng.choice(60_000, 170, replace=False)), np.arange(9)])
    all_windows = windows(chrom, pos, settings)
    band = band_width(all_windows)
    totals = band_statistics(np.asfortranarray(g), g[:, :0], band).reshape(m, -1)
    counts = GenotypeCounts.from_totals(genotype_counts(g, np.zeros(m, dtype=bool)))
    above = exceeds(totals, band, settings.r2)
    removed = indep_pairwise(above, counts, all_windows)
    np.testing.assert_array_equal(removed, _plink_order_reference(above, counts, all_windows))
    assert 0 < removed.sum() < m
    assert not removed[120] and not removed[-9:].any()  # a one-variant chromosome and chromosome 0 are left alone


def test_windows_follow_plink() -> None:
    chrom = np.array(["1"] * 11)
    counted = windows(chrom, np.arange(11), PruneSettings(5, 2, 0.5))
    assert [(w.start, w.stop, w.first_new) for w in counted] == [(0, 5, 0), (2, 7, 5), (4, 9, 7), (6, 11, 9)]
    pos = np.array([0, 400, 900, 1000, 3500, 3600, 9000])
    in_kb = windows(np.array(["1"] * 7), pos, PruneSettings(1, 1, 0.5, kb=True))
    assert [(w.start, w.stop) for w in in_kb] == [(0, 4), (4, 6)]  # split where a gap exceeds 1 kb; 9000 alone
    assert band_width(in_kb) == 3


def test_settings_and_command_line() -> None:
    def prune(tokens: list[str]) -> PruneSettings | None:
        return prune_settings(prune_table(tokens), "command line")

    def pca(tokens: list[str]) -> PcaSettings | None:
        return pca_settings(pca_table(tokens), "command line")

    assert prune(["500", "kb", "0.2"]) == PruneSettings(500, 1, 0.2, kb=True)
    assert prune(["500kb", "1", "0.2"]) == PruneSettings(500, 1, 0.2, kb=True)
    assert prune(["50", "5", "0.2"]) == PruneSettings(50, 5, 0.2)
    assert pca([]) == PcaSettings() and pca(["approx", "4"]) == PcaSettings(4, approx=True)
    for bad in (["50"], ["50", "x", "0.2"], ["50kb", "5", "0.2"], ["50", "60", "0.2"], ["50", "5", "1.5"]):
        with pytest.raises((InputError, ConfigError)):
            prune(bad)
    with pytest.raises(InputError, match="--pca"):
        pca(["ten"])
    with pytest.raises(ConfigError, match="components"):
        PcaSettings(0)


def test_study_file_tables(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\ncovariates = ["AGE", "PC1-PC3"]\n'
                    '[ld_prune]\nwindow = 50\nstep = 5\nr2 = 0.2\n[pca]\ncomponents = 3\n[tls]\ninsecure = true\n'
                    '[[sites]]\nname = "a"\naddress = "h:1"\n[[sites]]\nname = "b"\naddress = "h:2"\n')
    config = load_study(path)
    assert config.ld_prune == PruneSettings(50, 5, 0.2) and config.pca == PcaSettings(3)
    assert config.pca_covariates == ("PC1", "PC2", "PC3") and config.describe_cohort.covariates == ("AGE",)
    path.write_text(path.read_text().replace("components = 3", "components = 3\nrounds = 2"))
    with pytest.raises(ConfigError, match=r"\[pca\].*rounds"):
        load_study(path)


def test_site_refuses_scores_it_does_not_hold(tmp_path: Path) -> None:
    data = SimpleNamespace(name="a", config=SimpleNamespace(path=tmp_path / "site.toml"))
    with pytest.raises(InputError, match="holds no PCA scores"):
        scores.load(data, "run1")
    (tmp_path / scores.SCORES_FILE).write_text("#FID\tIID\tPC1\nf\ti\t0.5\n")
    (tmp_path / scores.META_FILE).write_text('{"run": "run0", "study": "old"}')
    with pytest.raises(InputError, match="run 'run0'"):
        scores.load(data, "run1")
    (tmp_path / scores.META_FILE).write_text('{"run": "run1", "study": "s"}')
    assert scores.load(data, "run1").numeric("PC1").tolist() == [0.5]


def test_covariates_outside_the_pca_need_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["local", "--bfile", str(tmp_path / "a"), "--bfile", str(tmp_path / "b"), "--pheno", "p.txt",
                 "--pheno-name", "QT", "--covar-name", "AGE,PC1-PC2", "--pca", "2", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--covar-name given without --covar (AGE do not come from --pca)" in capsys.readouterr().err
