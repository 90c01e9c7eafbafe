"""Every results file passes EBI's ``gwas-ssf validate`` (gwas-sumstats-tools), metadata included.

Small hand-made sites whose variants include untestable ones (constant over the pooled cohort): their
rows go to the companion ``.untested.tsv`` file with PLINK 2's ERRCODE, never as ``#NA`` rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.io.bed_writer import BedWriter, write_bim, write_fam
from tests.plink_tools import gwas_ssf_validate, read_plink_table, run_plink2


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sites of 150 samples, 88 variants on chromosomes 1-22 (two of them constant), pheno, covar.

    (The validator requires every autosome.)"""
    root = tmp_path_factory.mktemp("ssf")
    rng = np.random.default_rng(21)
    n, m = 300, 88
    g = rng.binomial(2, rng.uniform(0.05, 0.5, m), size=(n, m)).astype(np.int8)
    g[:, 10] = 0  # constant at every site
    g[:, 40] = 2
    g[rng.random((n, m)) < 0.01] = -127
    chrom = np.repeat([str(c) for c in range(1, 23)], 4)
    pos = np.tile(np.arange(1, 5) * 1000, 22)
    ids = np.array([f"rs{j}" for j in range(m)])
    fid = np.array([f"F{i}" for i in range(n)])
    iid = np.array([f"I{i}" for i in range(n)])
    sex = rng.integers(1, 3, n).astype(np.int8)
    for name, rows in (("siteA", slice(0, 150)), ("siteB", slice(150, 300)), ("pooled", slice(0, 300))):
        write_fam(root / f"{name}.fam", fid[rows], iid[rows], sex[rows])
        write_bim(root / f"{name}.bim", chrom, ids, pos, np.array(["A"] * m), np.array(["G"] * m))
        with BedWriter(root / f"{name}.bed", len(fid[rows])) as writer:
            writer.write_block(np.asfortranarray(g[rows]))
    age = rng.uniform(20, 70, n).round(1)
    qt = 0.02 * age + rng.normal(size=n)
    bt = np.where(qt > np.quantile(qt, 0.6), 2, 1)
    (root / "pheno.txt").write_text("#FID IID QT BT\n" + "".join(
        f"{f} {i} {q:.6f} {b}\n" for f, i, q, b in zip(fid, iid, qt, bt)))
    (root / "covar.txt").write_text("#FID IID AGE\n" + "".join(f"{f} {i} {a}\n" for f, i, a in zip(fid, iid, age)))
    return root


@pytest.mark.parametrize(("phenotype", "glm"), [("QT", "linear"), ("BT", "logistic"), ("BT", "firth")])
def test_results_pass_the_gwas_ssf_validator(sites: Path, tmp_path: Path, phenotype: str, glm: str) -> None:
    out = tmp_path / "out"
    code = main(["local", "--bfile", str(sites / "siteA"), "--bfile", str(sites / "siteB"),
                 "--pheno", str(sites / "pheno.txt"), "--pheno-name", phenotype, "--covar", str(sites / "covar.txt"),
                 "--covar-name", "AGE", "--glm", glm, "--genome-build", "GRCh37", "--out", str(out), "--no-progress",
                 "--insecure-transport"])
    assert code == 0
    data = out / f"{phenotype}.{glm}.tsv.gz"
    gwas_ssf_validate(data)
    meta = (out / f"{phenotype}.{glm}.tsv.gz-meta.yaml").read_text()
    assert "genome_assembly: GRCh37\n" in meta and "is_sorted: true\n" in meta
    assert ("case_control_study: true" in meta) == (glm != "linear")
    untested = read_plink_table(out / f"{phenotype}.{glm}.untested.tsv")
    assert list(untested["ID"]) == ["rs10", "rs40"]
    # PLINK 2's ERRCODE for the same variants on the pooled data.
    run_plink2(["--bfile", str(sites / "pooled"), "--pheno", str(sites / "pheno.txt"), "--pheno-name", phenotype,
                "--covar", str(sites / "covar.txt"), "--covar-name", "AGE", "--glm", "omit-ref", "hide-covar",
                *(["firth"] if glm == "firth" else []), "--out", str(tmp_path / "ref")], cwd=tmp_path)
    suffix = "linear" if glm == "linear" else ("firth" if glm == "firth" else "logistic.hybrid")
    ref = read_plink_table(tmp_path / f"ref.{phenotype}.glm.{suffix}")
    ref_errcode = dict(zip(ref["ID"], ref["ERRCODE"]))
    assert [ref_errcode[v] for v in untested["ID"]] == list(untested["ERRCODE"])
    full = read_gwas_ssf(data)  # the companion rows back in place
    assert list(full["variant_id"]) == list(ref["ID"])
    rows = np.isin(full["variant_id"], untested["ID"])
    assert list(full["errcode"][rows]) == list(untested["ERRCODE"]) and np.all(np.isnan(full["beta"][rows]))


def test_minus_nine_point_zero_and_a_constant_covariate_as_plink2(sites: Path, tmp_path: Path) -> None:
    """A phenotype of -9.0 is missing and a covariate constant over the pooled cohort is excluded, as
    PLINK 2 does: N and p-values equal PLINK 2's on the pooled data."""
    pheno = (sites / "pheno.txt").read_text().splitlines()
    rows = [line.split() for line in pheno[1:]]
    for row in rows[::10]:
        row[2] = "-9.0"
    (tmp_path / "pheno.txt").write_text(pheno[0] + "\n" + "".join(" ".join(r) + "\n" for r in rows))
    covar = (sites / "covar.txt").read_text().splitlines()
    (tmp_path / "covar.txt").write_text(covar[0] + " BATCH\n" + "".join(line + " 5\n" for line in covar[1:]))
    out = tmp_path / "out"
    code = main(["local", "--bfile", str(sites / "siteA"), "--bfile", str(sites / "siteB"),
                 "--pheno", str(tmp_path / "pheno.txt"), "--pheno-name", "QT", "--covar", str(tmp_path / "covar.txt"),
                 "--covar-name", "AGE,BATCH", "--glm", "linear", "--out", str(out), "--no-progress",
                 "--insecure-transport"])
    assert code == 0
    ours = read_gwas_ssf(out / "QT.linear.tsv.gz")
    run_plink2(["--bfile", str(sites / "pooled"), "--pheno", str(tmp_path / "pheno.txt"), "--pheno-name", "QT",
                "--covar", str(tmp_path / "covar.txt"), "--covar-name", "AGE,BATCH", "--glm", "omit-ref", "hide-covar",
                "--out", str(tmp_path / "ref")], cwd=tmp_path)
    ref = read_plink_table(tmp_path / "ref.QT.glm.linear")
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    ok = np.isfinite(ref["P"]) & np.isfinite(ours["neg_log10_p"])
    assert ok.sum() > 70
    assert np.max(np.abs(ours["neg_log10_p"][ok] + np.log10(ref["P"][ok]))) < 1e-4
    meta = (out / "QT.linear.tsv.gz-meta.yaml").read_text()
    assert "  excluded_covariates:\n    - BATCH\n" in meta
    assert "adjusted_covariates:\n  - AGE\n" in meta


def test_input_missing_phenotype_as_plink2(sites: Path, tmp_path: Path) -> None:
    """``--input-missing-phenotype -7``: -7 is missing in the phenotype and the covariates (and -9 is a value)."""
    rows = [line.split() for line in (sites / "pheno.txt").read_text().splitlines()]
    for row in rows[1:21]:
        row[2] = "-7"
    (tmp_path / "pheno.txt").write_text("".join(" ".join(r) + "\n" for r in rows))
    covar = [line.split() for line in (sites / "covar.txt").read_text().splitlines()]
    for row in covar[15:30]:
        row[2] = "-7.0"
    for row in covar[40:45]:
        row[2] = "-9"
    (tmp_path / "covar.txt").write_text("".join(" ".join(r) + "\n" for r in covar))
    out = tmp_path / "out"
    code = main(["local", "--bfile", str(sites / "siteA"), "--bfile", str(sites / "siteB"),
                 "--pheno", str(tmp_path / "pheno.txt"), "--pheno-name", "QT", "--covar", str(tmp_path / "covar.txt"),
                 "--covar-name", "AGE", "--glm", "linear", "--input-missing-phenotype", "-7", "--out", str(out),
                 "--no-progress", "--insecure-transport"])
    assert code == 0
    ours = read_gwas_ssf(out / "QT.linear.tsv.gz")
    run_plink2(["--bfile", str(sites / "pooled"), "--pheno", str(tmp_path / "pheno.txt"), "--pheno-name", "QT",
                "--covar", str(tmp_path / "covar.txt"), "--covar-name", "AGE", "--input-missing-phenotype", "-7",
                "--glm", "omit-ref", "hide-covar", "--out", str(tmp_path / "ref")], cwd=tmp_path)
    ref = read_plink_table(tmp_path / "ref.QT.glm.linear")
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    ok = np.isfinite(ref["P"]) & np.isfinite(ours["neg_log10_p"])
    assert np.max(np.abs(ours["neg_log10_p"][ok] + np.log10(ref["P"][ok]))) < 1e-4
