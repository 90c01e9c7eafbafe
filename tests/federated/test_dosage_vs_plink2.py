"""Acceptance: imputed dosages in three formats, many phenotypes in one run, equal PLINK 2 on the pooled .pgen.

A simulated imputed cohort (:mod:`tests.dosage_cohort`) is split over three real site processes, one
per format: a BGEN 1.2 with a .sample file, a .pgen with dosages, and a dosage-only VCF (``DS``; or
``GP``). The oracle is ``plink2 --glm`` on the pooled dosage .pgen (made by PLINK 2's own BGEN import),
run once per phenotype. Linear rows agree to |dbeta|/SE and |d log10 p| < 1e-4, logistic and Firth
rows to 1e-3, N and the Firth flags exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from tests.dosage_cohort import BINARY, COVARIATES, QUANTITATIVE, DosageCohort, plink2_glm, simulate_dosage_cohort
from tests.plink_tools import read_plink_table, run_plink2


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> DosageCohort:
    return simulate_dosage_cohort(tmp_path_factory.mktemp("dosage_cohort"))


def run_local(cohort: DosageCohort, out: Path, *extra: str, vcf_field: str = "DS") -> None:
    code = main(["local", *cohort.local_args(vcf_field), "--pheno", str(cohort.pheno), "--covar", str(cohort.covar),
                 "--covar-name", ",".join(COVARIATES), "--out", str(out), "--no-progress", *extra])
    assert code == 0


def assert_matches(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], tolerance: float) -> None:
    assert list(ours["variant_id"]) == list(ref["ID"])
    assert list(ours["effect_allele"]) == list(ref["A1"])  # the BGEN's second allele = PLINK 2's ALT
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    assert np.array_equal(np.isfinite(ours["beta"]), np.isfinite(ref["BETA"]))
    if "FIRTH?" in ref:
        np.testing.assert_array_equal(ours["firth"] == "Y", ref["FIRTH?"] == "Y")
    ok = np.isfinite(ref["P"])
    beta_err = np.abs(ours["beta"][ok] - ref["BETA"][ok]) / ref["SE"][ok]
    logp_err = np.abs(ours["neg_log10_p"][ok] + np.log10(ref["P"][ok]))
    assert beta_err.max() < tolerance, f"max |dbeta|/SE = {beta_err.max():.3g}"
    assert logp_err.max() < tolerance, f"max |d -log10 p| = {logp_err.max():.3g}"
    np.testing.assert_allclose(ours["effect_allele_frequency"][ok], ref["A1_FREQ"][ok], atol=2e-6)
    # MaCH R2 over each regression's samples, as PLINK 2's --glm cols=+machr2 (6 significant digits)
    np.testing.assert_allclose(ours["info"], ref["MACH_R2"], rtol=5e-6, equal_nan=True)


def test_ten_phenotypes_in_one_run_equal_ten_plink2_runs(cohort: DosageCohort, tmp_path: Path) -> None:
    """No --pheno-name and no --glm: every column, linear for the quantitative ones and logistic with
    Firth fallback for the case/control ones, as PLINK 2 decides; one file per phenotype."""
    run_local(cohort, tmp_path / "out")
    for name in QUANTITATIVE:
        assert_matches(read_gwas_ssf(tmp_path / "out" / f"{name}.linear.tsv.gz"),
                       plink2_glm(cohort, name, "linear", tmp_path), 1e-4)
    firth_rows = 0
    for name in BINARY:
        ref = plink2_glm(cohort, name, "logistic", tmp_path)
        firth_rows += int(np.sum(ref["FIRTH?"] == "Y"))
        assert_matches(read_gwas_ssf(tmp_path / "out" / f"{name}.logistic.tsv.gz"), ref, 1e-3)
    assert firth_rows > 0  # the simulation's rare variants exercise PLINK 2's fallback
    report = (tmp_path / "out" / "fedgwas.logistic.report.html").read_text()
    assert all(f'<section id="{name}">' in report for name in QUANTITATIVE + BINARY)
    # each phenotype's GWAS-SSF metadata describe its own test (case counts only for case/control ones)
    for name in QUANTITATIVE:
        assert "case_control_study: false" in (tmp_path / "out" / f"{name}.linear.tsv.gz-meta.yaml").read_text()
    for name in BINARY:
        assert "case_control_study: true" in (tmp_path / "out" / f"{name}.logistic.tsv.gz-meta.yaml").read_text()


def test_forced_firth_on_dosages_equals_plink2(cohort: DosageCohort, tmp_path: Path) -> None:
    run_local(cohort, tmp_path / "out", "--pheno-name", "BT1,BT4", "--glm", "firth")
    for name in ("BT1", "BT4"):
        assert_matches(read_gwas_ssf(tmp_path / "out" / f"{name}.firth.tsv.gz"),
                       plink2_glm(cohort, name, "firth", tmp_path), 1e-3)


def test_vcf_gp_probabilities_and_a_phenotype_range(cohort: DosageCohort, tmp_path: Path) -> None:
    run_local(cohort, tmp_path / "out", "--pheno-name", "QT2-QT4", "--glm", "linear", vcf_field="GP")
    for name in ("QT2", "QT3", "QT4"):
        assert_matches(read_gwas_ssf(tmp_path / "out" / f"{name}.linear.tsv.gz"),
                       plink2_glm(cohort, name, "linear", tmp_path), 1e-4)


def test_qc_on_dosages_equals_plink2(cohort: DosageCohort, tmp_path: Path) -> None:
    """.afreq (with MaCH R2) from dosages, .vmiss/.gcount from hard calls: byte-identical to PLINK 2's on
    the pooled .pgen; .hardy's counts equal and its values to the printed digits; .acount's dosage sums
    equal to its printed digits."""
    out = tmp_path / "out"
    assert main(["local", *cohort.local_args(), "--freq", "cols=+machr2", "--hardy", "--missing", "--geno-counts",
                 "--out", str(out), "--no-progress"]) == 0
    run_plink2(["--pfile", str(cohort.pooled), "--freq", "cols=+machr2", "--hardy", "--missing", "--geno-counts",
                "--out", "ref"], cwd=tmp_path)
    for ext in ("afreq", "vmiss", "gcount"):
        assert (out / f"fedgwas.{ext}").read_text() == (tmp_path / f"ref.{ext}").read_text(), ext
    ours, ref = (read_plink_table(path) for path in (out / "fedgwas.hardy", tmp_path / "ref.hardy"))
    assert list(ours) == list(ref)  # the hard-call counts exactly; E(HET) may round the other way in its 6th digit
    for column in ("HOM_A1_CT", "HET_A1_CT", "TWO_AX_CT"):
        np.testing.assert_array_equal(ours[column], ref[column])
    for column in ("O(HET_A1)", "E(HET_A1)", "P"):
        np.testing.assert_allclose(ours[column], ref[column], rtol=3e-6)
    assert main(["local", *cohort.local_args(), "--freq", "counts", "--out", str(tmp_path / "counts"),
                 "--no-progress"]) == 0
    run_plink2(["--pfile", str(cohort.pooled), "--freq", "counts", "--out", "ref"], cwd=tmp_path)
    ours, ref = (read_plink_table(path) for path in (tmp_path / "counts" / "fedgwas.acount", tmp_path / "ref.acount"))
    np.testing.assert_array_equal(ours["OBS_CT"], ref["OBS_CT"])
    np.testing.assert_allclose(ours["ALT_CTS"], ref["ALT_CTS"], rtol=1e-6)


def test_mach_r2_and_maf_filters_keep_plink2s_variants(cohort: DosageCohort, tmp_path: Path) -> None:
    run_local(cohort, tmp_path / "out", "--pheno-name", "QT1", "--glm", "linear", "--mach-r2-filter", "0.5", "1.5",
              "--maf", "0.05")
    run_plink2(["--pfile", str(cohort.pooled), "--mach-r2-filter", "0.5", "1.5", "--maf", "0.05", "--write-snplist",
                "--out", "kept"], cwd=tmp_path)
    kept = (tmp_path / "kept.snplist").read_text().split()
    ours = read_gwas_ssf(tmp_path / "out" / "QT1.linear.tsv.gz")
    assert list(ours["variant_id"]) == kept
    assert 0 < len(kept) < len(cohort.ids)  # the filters removed some variants and kept others


def test_a_covariate_constant_over_one_phenotypes_samples_is_left_out_of_that_phenotype_only(
        cohort: DosageCohort, tmp_path: Path) -> None:
    """PLINK 2 leaves a covariate constant over one phenotype's non-missing samples out of that phenotype's
    regression only ("Not including covariate ... on phenotype ..."): QTM is QT1 of the males only."""
    table = read_plink_table(cohort.pheno)
    covar = read_plink_table(cohort.covar)
    assert list(table["IID"]) == list(covar["IID"])
    males = np.asarray(covar["SEX_MALE"], dtype=np.float64) == 1
    pheno = tmp_path / "pheno_males.txt"
    text = lambda value: "NA" if np.isnan(value) else f"{value:.10g}"  # noqa: E731
    pheno.write_text("#FID\tIID\tQT1\tQTM\n" + "".join(
        f"{f}\t{i}\t{text(q)}\t{text(q if m else np.nan)}\n"
        for f, i, q, m in zip(table["FID"], table["IID"], table["QT1"], males)))
    code = main(["local", *cohort.local_args(), "--pheno", str(pheno), "--pheno-name", "QT1,QTM", "--covar",
                 str(cohort.covar), "--covar-name", ",".join(COVARIATES), "--glm", "linear", "--out",
                 str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    for name in ("QT1", "QTM"):
        ref = plink2_glm(dataclasses.replace(cohort, pheno=pheno), name, "linear", tmp_path)
        assert_matches(read_gwas_ssf(tmp_path / "out" / f"{name}.linear.tsv.gz"), ref, 1e-4)
    assert "Not including covariate 'SEX_MALE'" in (tmp_path / "plink2_QTM.log").read_text()
    # ... and says so: in QTM's summary (and the study's notes), not in QT1's.
    summaries = {name: json.loads((tmp_path / "out" / f"{name}.linear.summary.json").read_text())
                 for name in ("QT1", "QTM")}
    assert summaries["QTM"]["excluded_covariates"] == ["SEX_MALE"] and "SEX_MALE" not in summaries["QTM"]["covariates"]
    assert summaries["QT1"]["excluded_covariates"] == [] and "SEX_MALE" in summaries["QT1"]["covariates"]
    assert any("left out of phenotype 'QTM' only" in note for note in summaries["QTM"]["notes"])
