"""chrX (both sexes, PARs as XY), chrY and MT in --glm linear/logistic equal PLINK 2 on the pooled data.

Hand-made sites: males haploid-looking on X/Y (0/2 calls, 1 % heterozygous errors), MT haploid for
everyone, females mostly uncalled on Y, a few samples of unknown sex. PLINK 2's default (males 0/2 on
chrX with the .fam sex as a covariate), ``no-x-sex`` and ``--xchr-model 0`` and ``1`` (males 0/1) are
compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.io.bed_writer import BedWriter, write_bim, write_fam
from engine.cohort.sex_chromosomes import chromosome_class, haploid_males_on_x, males_only_on_y
from tests.plink_tools import read_plink_table, run_plink2

CHROMOSOMES = ["1"] * 30 + ["X"] * 30 + ["XY"] * 10 + ["Y"] * 30 + ["MT"] * 30


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sexchr")
    rng = np.random.default_rng(2)
    n, chrom = 600, np.array(CHROMOSOMES)
    m = len(chrom)
    sex = rng.integers(1, 3, n).astype(np.int8)
    sex[:6] = 0
    male = sex == 1
    maf = rng.uniform(0.05, 0.5, m)
    g = rng.binomial(2, maf, size=(n, m)).astype(np.int8)
    for j in range(m):
        haploid = rng.binomial(1, maf[j], n).astype(np.int8) * 2
        if chrom[j] in ("X", "Y"):
            g[male, j] = haploid[male]
            g[male & (rng.random(n) < 0.01), j] = 1
        if chrom[j] == "MT":
            g[:, j] = haploid
            g[rng.random(n) < 0.01, j] = 1
        if chrom[j] == "Y":
            g[~male & (rng.random(n) < 0.97), j] = -127
    g[rng.random((n, m)) < 0.01] = -127
    ids = np.array([f"v{j}" for j in range(m)])
    fid, iid = np.array([f"F{i}" for i in range(n)]), np.array([f"I{i}" for i in range(n)])
    age = rng.uniform(20, 70, n).round(1)
    qt = 0.02 * age + 0.5 * male + 0.3 * np.where(g[:, 30] >= 0, g[:, 30], 0) + rng.normal(size=n)
    bt = np.where(qt > np.quantile(qt, 0.6), 2, 1)
    qt2 = 1e3 * (0.5 * qt + rng.normal(size=n)) + 1e6  # other units and its own missingness
    qt2_text = np.where(rng.random(n) < 0.1, "NA", np.char.mod("%.3f", qt2))
    for name, rows in (("s1", slice(0, 300)), ("s2", slice(300, 600)), ("pooled", slice(0, 600))):
        write_fam(root / f"{name}.fam", fid[rows], iid[rows], sex[rows])
        write_bim(root / f"{name}.bim", chrom, ids, np.arange(m) * 1000 + 3_000_000, np.array(["A"] * m),
                  np.array(["G"] * m))
        with BedWriter(root / f"{name}.bed", len(fid[rows])) as writer:
            writer.write_block(np.asfortranarray(g[rows]))
    (root / "pheno.txt").write_text("#FID IID QT BT QT2\n" + "".join(
        f"{a} {b} {c:.5f} {d} {e}\n" for a, b, c, d, e in zip(fid, iid, qt, bt, qt2_text)))
    (root / "covar.txt").write_text("#FID IID AGE\n" + "".join(f"{a} {b} {c}\n" for a, b, c in zip(fid, iid, age)))
    return root


def _compare(sites: Path, tmp_path: Path, phenotype: str, glm: str, ours_extra: list[str],
             plink_modifiers: list[str], plink_extra: list[str]) -> None:
    """One run of ours (``phenotype`` may list several: one genotype pass), each phenotype against its
    own PLINK 2 run."""
    out = tmp_path / "out"
    code = main(["local", "--bfile", str(sites / "s1"), "--bfile", str(sites / "s2"), "--pheno", str(sites / "pheno.txt"),
                 "--pheno-name", phenotype, "--covar", str(sites / "covar.txt"), "--covar-name", "AGE", "--glm", glm,
                 "--out", str(out), "--no-progress", "--insecure-transport", *ours_extra])
    assert code == 0
    for name in phenotype.split(","):
        ours = read_gwas_ssf(out / f"{name}.{glm}.tsv.gz")
        run_plink2(["--bfile", str(sites / "pooled"), "--pheno", str(sites / "pheno.txt"), "--pheno-name", name,
                    "--covar", str(sites / "covar.txt"), "--covar-name", "AGE", "--glm", "omit-ref", "hide-covar",
                    *plink_modifiers, *plink_extra, "--out", str(tmp_path / f"ref_{name}")], cwd=tmp_path)
        ref = read_plink_table(next(tmp_path.glob(f"ref_{name}.{name}.glm.*")))
        assert list(ours["variant_id"]) == list(ref["ID"])
        np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
        assert list(ours["errcode"]) == list(ref["ERRCODE"])
        beta, se = (ref["BETA"], ref["SE"]) if "BETA" in ref else (np.log(ref["OR"]), ref["LOG(OR)_SE"])
        ok = np.isfinite(ref["P"])
        assert np.max(np.abs(ours["beta"][ok] - beta[ok]) / se[ok]) < 1e-3
        np.testing.assert_allclose(ours["standard_error"][ok], se[ok], rtol=1e-3)
        assert np.max(np.abs(ours["neg_log10_p"][ok] + np.log10(ref["P"][ok]))) < 1e-3


@pytest.mark.parametrize("no_x_sex", [False, True])
def test_linear_on_x_y_mt_as_plink2(sites: Path, tmp_path: Path, no_x_sex: bool) -> None:
    _compare(sites, tmp_path, "QT", "linear", ["--no-x-sex"] if no_x_sex else [],
             ["no-x-sex"] if no_x_sex else [], [])


@pytest.mark.parametrize("no_x_sex", [False, True])
def test_several_phenotypes_in_one_pass_on_x_y_mt_as_plink2(sites: Path, tmp_path: Path, no_x_sex: bool) -> None:
    """The one-pass driver of several phenotypes runs per chromosome class too (chrX with the sex covariate)."""
    _compare(sites, tmp_path, "QT,QT2", "linear", ["--no-x-sex"] if no_x_sex else [],
             ["no-x-sex"] if no_x_sex else [], [])


def test_logistic_on_x_y_mt_as_plink2(sites: Path, tmp_path: Path) -> None:
    _compare(sites, tmp_path, "BT", "logistic", [], [], [])


def test_xchr_model_0_skips_chrx_and_counts_it(sites: Path, tmp_path: Path) -> None:
    _compare(sites, tmp_path, "QT", "linear", ["--xchr-model", "0"], [], ["--xchr-model", "0"])
    summary = (tmp_path / "out" / "QT.linear.summary.json").read_text()
    assert '"chrX (--xchr-model 0)": 30' in summary


@pytest.mark.parametrize("glm,phenotype,no_x_sex", [("linear", "QT", False), ("linear", "QT", True),
                                                     ("logistic", "BT", False), ("logistic", "BT", True)])
def test_xchr_model_1_codes_males_0_1_as_plink2(sites: Path, tmp_path: Path, glm: str, phenotype: str,
                                                no_x_sex: bool) -> None:
    """Males' non-PAR chrX calls coded 0/1 (heterozygous male calls 0.5), PARs and other chromosomes as usual."""
    modifiers = ["no-x-sex"] if no_x_sex else []
    _compare(sites, tmp_path, phenotype, glm, ["--xchr-model", "1", *(["--no-x-sex"] if no_x_sex else [])],
             modifiers, ["--xchr-model", "1"])


def test_xchr_model_1_with_several_phenotypes_in_one_pass_as_plink2(sites: Path, tmp_path: Path) -> None:
    _compare(sites, tmp_path, "QT,QT2", "linear", ["--xchr-model", "1"], [], ["--xchr-model", "1"])


def test_xchr_model_1_differs_from_model_2_on_x_only(sites: Path, tmp_path: Path) -> None:
    """The coding reaches the sites: chrX betas change between the models, every other variant is identical."""
    results = {}
    for model in ("1", "2"):
        out = tmp_path / model
        assert main(["local", "--bfile", str(sites / "s1"), "--bfile", str(sites / "s2"), "--pheno",
                     str(sites / "pheno.txt"), "--pheno-name", "QT", "--glm", "linear", "--xchr-model", model,
                     "--out", str(out), "--no-progress", "--insecure-transport", "--privacy", "plaintext"]) == 0
        results[model] = read_gwas_ssf(out / "QT.linear.tsv.gz")
    on_x = np.array([CHROMOSOMES[int(v[1:])] == "X" for v in results["1"]["variant_id"]])
    assert on_x.sum() == 30
    np.testing.assert_array_equal(results["1"]["beta"][~on_x], results["2"]["beta"][~on_x])
    assert np.all(results["1"]["beta"][on_x] != results["2"]["beta"][on_x])


def test_haploid_males_on_x_flips_then_halves() -> None:
    g = np.array([[0, 2, 1], [1, 2, -127], [2, 0, 2]], dtype=np.int8, order="F")
    coded, flip = haploid_males_on_x(g, np.array([False, True, True]), np.array([True, True, False]),
                                     np.array([True, False, True]))
    assert coded.dtype == np.float32 and not flip.any()
    np.testing.assert_array_equal(coded, [[0, 0, 1], [1, 0, np.nan], [1, 1, 0]])
    same, unflipped = haploid_males_on_x(g, np.array([True, False, False]), np.zeros(3, dtype=bool), np.ones(3, dtype=bool))
    assert same is g and unflipped[0]


def test_chromosome_classes_and_y_masking() -> None:
    names = np.array(["1", "chrX", "23", "XY", "25", "Y", "24", "MT", "M", "26", "chr22"])
    assert list(chromosome_class(names)) == ["autosomal", "X", "X", "autosomal", "autosomal", "Y", "Y", "MT",
                                             "MT", "MT", "autosomal"]
    g = np.array([[0, 2], [1, 2], [2, 0]], dtype=np.int8, order="F")
    masked = males_only_on_y(g, np.array([False, True]), np.array([True, False, True]))
    np.testing.assert_array_equal(masked, [[0, 2], [1, -127], [2, 0]])


def test_qc_reports_on_x_y_mt_equal_plink2(sites: Path, tmp_path: Path) -> None:
    """``.afreq``/``.acount``/``.gcount``/``.vmiss``/``.hardy``/``.hardy.x`` byte-identical to PLINK 2's:
    haploid counts (male X, Y over males, MT), heterozygous haploid calls as PLINK 2 counts them,
    females-and-males chrX HWE test, X/Y/MT left out of ``.hardy``."""
    out = tmp_path / "out"
    for outputs in (["--freq", "--hardy", "--missing", "--geno-counts"], ["--freq", "counts"]):
        code = main(["local", "--bfile", str(sites / "s1"), "--bfile", str(sites / "s2"), *outputs, "--out", str(out),
                     "--no-progress", "--insecure-transport"])
        assert code == 0
        run_plink2(["--bfile", str(sites / "pooled"), *outputs, "--out", str(tmp_path / "ref")], cwd=tmp_path)
    for extension in ("afreq", "acount", "gcount", "vmiss", "hardy", "hardy.x"):
        assert (out / f"fedgwas.{extension}").read_text() == (tmp_path / f"ref.{extension}").read_text(), extension


@pytest.mark.parametrize("filters", [["--hwe", "1e-3", "--geno", "0.02", "--maf", "0.1"],
                                     ["--hwe", "0.05", "midp", "--geno", "0.01"]])
def test_filters_on_x_y_mt_as_plink2(sites: Path, tmp_path: Path, filters: list[str]) -> None:
    run_plink2(["--bfile", str(sites / "pooled"), *filters, "--write-snplist", "--out", str(tmp_path / "ref")],
               cwd=tmp_path)
    code = main(["local", "--bfile", str(sites / "s1"), "--bfile", str(sites / "s2"), "--pheno", str(sites / "pheno.txt"),
                 "--pheno-name", "QT", "--glm", "linear", *filters, "--out", str(tmp_path / "out"), "--no-progress",
                 "--insecure-transport"])
    assert code == 0
    kept = read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz")["variant_id"]
    expected = (tmp_path / "ref.snplist").read_text().split()
    assert sorted(kept) == sorted(expected)
    assert {"X", "Y", "MT"} <= {CHROMOSOMES[int(v[1:])] for v in expected}
