"""Acceptance: federated secure-aggregation linear GWAS equals PLINK 2 on the pooled data.

HapMap3 (957 founders x 14,079 SNPs) is split by continental group into 4 sites, each served by a real
``fedgwas-site`` process over gRPC; results are compared with ``plink2 --glm omit-ref`` on the pooled
files: |delta beta|/SE < 1e-4, |delta -log10 p| < 1e-4, N equal for every variant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from tests.plink_tools import (
    HM3,
    HM3_BFILE,
    HM3_COVARIATES,
    assert_matches_plink,
    hm3_population_groups,
    plink2_glm_linear,
    read_plink_table,
    split_by_groups,
)

PHENO = HM3 / "sim_pheno.txt"
COVAR = HM3 / "sim_covar.txt"
TOLERANCE = 1e-4


def run_local(sites: tuple[Path, ...], out: Path, *extra: str) -> dict[str, np.ndarray]:
    argv = [a for s in sites for a in ("--bfile", str(s))]
    code = main(["local", *argv, "--pheno", str(PHENO), "--pheno-name", "QT", "--covar", str(COVAR),
                 "--covar-name", "SEX_MALE,AGE,PC1-PC4", "--glm", "linear", "--out", str(out),
                 "--no-progress", *extra])
    assert code == 0
    return read_gwas_ssf(out / "QT.linear.tsv.gz")


def test_secagg_equals_shared_plink2_reference(hm3_split, tmp_path: Path) -> None:
    ours = run_local(hm3_split.site_bfiles, tmp_path / "out")
    ref = read_plink_table(HM3 / "plink_reference_outputs/plink2/hm3_cov_omitref.QT.glm.linear")
    assert_matches_plink(ours, ref)
    summary = (tmp_path / "out" / "QT.linear.summary.json").read_text()
    assert '"privacy": "secagg"' in summary


def test_secagg_with_uneven_missingness_and_swapped_alleles(tmp_path: Path) -> None:
    """Missing calls injected unevenly per site and one site storing every variant's alleles swapped."""
    split = split_by_groups(
        HM3_BFILE, hm3_population_groups(), tmp_path / "split",
        missing_rates={"africa": 0.002, "europe": 0.03, "eastasia": 0.0, "southasia": 0.08},
        swapped_sites=("eastasia",),
    )
    ref = plink2_glm_linear(split.pooled_bfile, PHENO, "QT", COVAR, HM3_COVARIATES, tmp_path)
    assert np.ptp(ref["OBS_CT"]) > 20, "injected missingness should make N vary by variant"
    ours = run_local(split.site_bfiles, tmp_path / "out")
    assert_matches_plink(ours, ref)


def test_plaintext_mode_matches_and_is_labelled(hm3_split, tmp_path: Path) -> None:
    ours = run_local(hm3_split.site_bfiles, tmp_path / "out", "--privacy", "plaintext")
    ref = read_plink_table(HM3 / "plink_reference_outputs/plink2/hm3_cov_omitref.QT.glm.linear")
    assert_matches_plink(ours, ref)
    meta = (tmp_path / "out" / "QT.linear.tsv.gz-meta.yaml").read_text()
    report = (tmp_path / "out" / "QT.linear.report.html").read_text()
    assert "plaintext" in meta.lower() and "PLAINTEXT" in report
