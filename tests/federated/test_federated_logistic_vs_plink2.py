"""Acceptance: federated logistic regression with Firth fallback equals PLINK 2 on the pooled data.

Real site processes over gRPC under secure aggregation, compared with ``plink2 --glm omit-ref``
(firth-fallback, the default; or ``firth``) on the pooled files: |delta beta|/SE < 1e-3 and
|delta -log10 p| < 1e-3 for every variant, N, the FIRTH? flag and the ERRCODE equal.

A quirk of the reference: PLINK 2 v2.00a3.5 computes the logistic/Firth standard error of a variant
with missing calls from buffers that depend on the variant analysed before it (the same variant gives
SE 0.0968 among the others and 0.0972, as PLINK 1.9 and we do, alone with ``--extract``). So variants
with missing calls are compared with PLINK 2 run on those variants only (``--extract``), where the
results are consistent; complete variants with the shared reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from tests.plink_tools import (
    DATA,
    HM3,
    HM3_BFILE,
    HM3_COVARIATES,
    hm3_population_groups,
    read_plink_table,
    run_plink2,
    split_by_groups,
)

PHENO = HM3 / "sim_pheno.txt"
COVAR = HM3 / "sim_covar.txt"
REFERENCE = HM3 / "plink_reference_outputs" / "plink2"
CHR21 = DATA / "1kg_phase3_chr21_start"
CHR21_COVARIATES = ("SEX_MALE", "SP_AFR", "SP_AMR", "SP_EAS", "SP_SAS")
TOLERANCE = 1e-3


def run_local(sites: tuple[Path, ...], out: Path, pheno: Path, phenotype: str, covar: Path,
              covariates: str, glm: str, *extra: str) -> dict[str, np.ndarray]:
    argv = [a for s in sites for a in ("--bfile", str(s))]
    code = main(["local", *argv, "--pheno", str(pheno), "--pheno-name", phenotype, "--covar", str(covar),
                 "--covar-name", covariates, "--glm", glm, "--out", str(out), "--no-progress", *extra])
    assert code == 0
    return read_gwas_ssf(out / f"{phenotype}.{glm}.tsv.gz")


def assert_matches(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], rows: np.ndarray,
                   *, firth_column: bool = True) -> None:
    """``rows`` of ``ours`` against ``ref`` (same variants, in order), aligned on A1."""
    assert list(ours["variant_id"][rows]) == _text(ref["ID"])
    a1 = np.array(_text(ref["A1"]))
    same = ours["effect_allele"][rows] == a1
    assert np.all(same | (ours["other_allele"][rows] == a1))
    sign = np.where(same, 1.0, -1.0)
    np.testing.assert_array_equal(ours["n"][rows], ref["OBS_CT"])
    assert list(ours["errcode"][rows]) == list(ref["ERRCODE"])
    if firth_column:
        assert list(ours["firth"][rows]) == list(ref["FIRTH?"])
    ok = np.isfinite(ref["P"])
    assert np.array_equal(np.isfinite(ours["beta"][rows]), ok)
    beta_err = np.abs(ours["beta"][rows][ok] - sign[ok] * ref["BETA"][ok]) / ref["SE"][ok]
    logp_err = np.abs(ours["neg_log10_p"][rows][ok] + np.log10(ref["P"][ok]))
    assert beta_err.max(initial=0) < TOLERANCE, f"max |dbeta|/SE = {beta_err.max():.3g}"
    assert logp_err.max(initial=0) < TOLERANCE, f"max |d -log10 p| = {logp_err.max():.3g}"
    np.testing.assert_allclose(ours["odds_ratio"][rows][ok], np.exp(ours["beta"][rows][ok]), rtol=1e-5)


def _text(column: np.ndarray) -> list[str]:
    """A PLINK table column as text (read_plink_table parses numeric IDs and alleles such as 1/2 as floats)."""
    return [f"{v:g}" for v in column] if column.dtype.kind == "f" else [str(v) for v in column]


def hm3_missing_call_reference(variant_ids: np.ndarray, tmp_path: Path, modifier: str) -> dict[str, np.ndarray]:
    """PLINK 2 on the HapMap3 variants with missing calls only (see the module docstring)."""
    (tmp_path / "extract.txt").write_text("\n".join(variant_ids) + "\n")
    out = tmp_path / "missing_calls"
    run_plink2(["--bfile", str(HM3_BFILE), "--pheno", str(PHENO), "--pheno-name", "BT", "--covar", str(COVAR),
                "--covar-name", *HM3_COVARIATES, "--covar-variance-standardize",
                "--extract", str(tmp_path / "extract.txt"),
                "--glm", "hide-covar", modifier, "cols=+a1count,+a1freq,+beta,+se,+firth", "--out", str(out)],
               cwd=tmp_path)
    suffix = "glm.firth" if modifier == "firth" else "glm.logistic.hybrid"
    return read_plink_table(Path(f"{out}.BT.{suffix}"))


def compare_hm3(ours: dict[str, np.ndarray], reference: Path, tmp_path: Path, modifier: str) -> None:
    ref = read_plink_table(reference)
    rows = np.isin(ref["ID"], ours["variant_id"])
    ref = {k: v[rows] for k, v in ref.items()}
    firth_column = modifier != "firth"
    complete = ref["OBS_CT"] == ref["OBS_CT"].max()
    assert 1000 < complete.sum() < len(complete)
    assert_matches(ours, {k: v[complete] for k, v in ref.items()}, np.flatnonzero(complete), firth_column=firth_column)
    missing = hm3_missing_call_reference(ref["ID"][~complete], tmp_path, modifier)
    assert_matches(ours, missing, np.flatnonzero(~complete), firth_column=firth_column)


def test_hm3_logistic_with_firth_fallback_equals_plink2(hm3_split, tmp_path: Path) -> None:
    ours = run_local(hm3_split.site_bfiles, tmp_path / "out", PHENO, "BT", COVAR, "SEX_MALE,AGE,PC1-PC4", "logistic")
    compare_hm3(ours, REFERENCE / "hm3_cov_omitref.BT.glm.logistic.hybrid", tmp_path, "firth-fallback")
    meta = (tmp_path / "out" / "BT.logistic.tsv.gz-meta.yaml").read_text()
    assert "test: logistic" in meta and "privacy: secagg" in meta


def test_hm3_forced_firth_equals_plink2(tmp_path: Path) -> None:
    """Chromosomes 1-4 (Firth rounds cost ~4x logistic ones). The shared ``--glm firth`` reference is
    not omit-ref (A1 is the minor allele), so the comparison aligns on A1."""
    run_plink2(["--bfile", str(HM3_BFILE), "--chr", "1-4", "--make-bed", "--out", str(tmp_path / "chr1_4")],
               cwd=tmp_path)
    split = split_by_groups(tmp_path / "chr1_4", hm3_population_groups(), tmp_path / "split")
    ours = run_local(split.site_bfiles, tmp_path / "out", PHENO, "BT", COVAR, "SEX_MALE,AGE,PC1-PC4", "firth")
    assert set(ours["firth"]) == {"Y"} and len(ours["variant_id"]) > 3000
    compare_hm3(ours, REFERENCE / "hm3_cov_firth.BT.glm.firth", tmp_path, "firth")


@pytest.fixture(scope="module")
def chr21_bfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1000 Genomes chr21 VCF as PLINK 1 files (fedgwas reads .bed; PLINK converts)."""
    out = tmp_path_factory.mktemp("chr21")
    run_plink2(["--vcf", str(CHR21 / "1kg_phase3_chr21_start.vcf.gz"), "--make-bed", "--out", str(out / "chr21")],
               cwd=out)
    return out / "chr21"


def chr21_sites(bfile: Path) -> dict[str, np.ndarray]:
    """Three sites: AFR+AMR, EAS+SAS+most of EUR, and 120 EUR samples that are all cases."""
    iids = [line.split()[1] for line in Path(f"{bfile}.fam").read_text().splitlines()]
    psam = (CHR21 / "1kg_phase3_samples.psam").read_text().splitlines()[1:]
    superpop = {row.split()[0]: row.split()[4] for row in psam}
    status = {row.split()[0]: row.split()[2] for row in (CHR21 / "sim_pheno.txt").read_text().splitlines()[1:]}
    pops = np.array([superpop[i] for i in iids])
    eur_cases = np.flatnonzero((pops == "EUR") & (np.array([status[i] for i in iids]) == "2"))[:120]
    rest = np.setdiff1d(np.flatnonzero(np.isin(pops, ("EAS", "SAS", "EUR"))), eur_cases)
    return {"afr_amr": np.flatnonzero(np.isin(pops, ("AFR", "AMR"))), "asia_eur": rest, "eur_cases": eur_cases}


def test_1kg_chr21_rare_variants_with_firth_fallback_equal_plink2(chr21_bfile: Path, tmp_path: Path) -> None:
    """Many singletons and rare variants (Firth rows), indels, constant variants; one site has only
    cases, which is fine because the fit is of the pooled cohort."""
    split = split_by_groups(chr21_bfile, chr21_sites(chr21_bfile), tmp_path / "split")
    ours = run_local(split.site_bfiles, tmp_path / "out", CHR21 / "sim_pheno.txt", "BT", CHR21 / "sim_covar.txt",
                     ",".join(CHR21_COVARIATES), "logistic")
    run_plink2(["--bfile", str(split.pooled_bfile), "--pheno", str(CHR21 / "sim_pheno.txt"), "--pheno-name", "BT",
                "--covar", str(CHR21 / "sim_covar.txt"), "--covar-name", *CHR21_COVARIATES,
                "--glm", "omit-ref", "hide-covar", "firth-fallback", "cols=+a1count,+a1freq,+beta,+se,+firth",
                "--out", str(tmp_path / "plink")], cwd=tmp_path)
    ref = read_plink_table(tmp_path / "plink.BT.glm.logistic.hybrid")
    assert (ref["FIRTH?"] == "Y").sum() > 300 and "CONST_OMITTED_ALLELE" in set(ref["ERRCODE"])
    assert_matches(ours, ref, np.arange(len(ref["ID"])))


def test_zero_one_coding_with_flag_1_equals_plink2(tmp_path: Path) -> None:
    """regenie's example: Y1 coded 0/1, PLINK's --1 (reference run with --1)."""
    regenie = DATA / "regenie_example"
    bfile = regenie / "example"
    fam_rows = len(Path(f"{bfile}.fam").read_text().splitlines())
    split = split_by_groups(bfile, {"a": np.arange(0, 230), "b": np.arange(230, fam_rows)}, tmp_path / "split")
    ours = run_local(split.site_bfiles, tmp_path / "out", regenie / "phenotype_bin.txt", "Y1",
                     regenie / "covariates.txt", "V1,V2,V3", "logistic", "--1")
    ref = read_plink_table(regenie / "plink_reference_outputs/plink2/example_bt_cov_omitref.Y1.glm.logistic.hybrid")
    assert_matches(ours, ref, np.arange(len(ref["ID"])))
