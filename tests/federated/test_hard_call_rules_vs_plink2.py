"""``fedgwas local --hard-call-threshold X --dosage-erase-threshold Y`` equals PLINK 2 run with the same flags.

Two real site processes, a BGEN site and a dosage-VCF (``DS``) site of the simulated imputed cohort
(:mod:`tests.dosage_cohort`), import their dosages with non-default rules. The oracle is PLINK 2's own
import of the pooled BGEN with the same flags, restricted to the two sites' samples: ``--freq``
(dosages, so erased dosages count as their hard calls), ``--missing`` and ``--geno-counts`` (hard
calls) must be byte-identical, ``--glm linear`` equal to 1e-4. The default oracle differs in every one
of these outputs, so ignoring either threshold fails the test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from coordinator.results.gwas_ssf import read_gwas_ssf
from fedgwas.cli import main
from tests.dosage_cohort import COVARIATES, SITE_SIZES, DosageCohort, plink2_glm, simulate_dosage_cohort
from tests.plink_tools import run_plink2

HARD, ERASE = "0.3", "0.2"
QC = ["--freq", "cols=+machr2", "--missing", "--geno-counts"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> DosageCohort:
    return simulate_dosage_cohort(tmp_path_factory.mktemp("hard_call_cohort"), n_variants=80)


def _sites(cohort: DosageCohort) -> list[str]:
    return ["--bgen", str(cohort.bgen), "--sample", str(cohort.sample), "--vcf", str(cohort.vcf), "--vcf-dosage", "DS",
            "--hard-call-threshold", HARD, "--dosage-erase-threshold", ERASE]


def _oracle(cohort: DosageCohort, directory: Path, *flags: str) -> DosageCohort:
    """PLINK 2's import of the pooled BGEN with ``flags``, of the BGEN and VCF sites' samples."""
    directory.mkdir(exist_ok=True)
    keep = directory / "sites.keep"
    bgen_ids = cohort.ids[:SITE_SIZES["bgen"]]
    vcf_ids = cohort.ids[len(cohort.ids) - SITE_SIZES["vcf"]:]
    keep.write_text("".join(f"{s}\t{s}\n" for s in [*bgen_ids, *vcf_ids]))
    run_plink2(["--bgen", str(cohort.directory / "pooled.bgen"), "ref-first", "--sample",
                str(cohort.directory / "pooled.sample"), "--keep", keep.name, *flags, "--make-pgen", "--out", "oracle"],
               cwd=directory)
    return dataclasses.replace(cohort, pooled=directory / "oracle")


def test_qc_with_hard_call_rules_equals_plink2(cohort: DosageCohort, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["local", *_sites(cohort), *QC, "--out", str(out), "--no-progress"]) == 0
    outputs = {}
    for name, flags in (("rules", ["--hard-call-threshold", HARD, "--dosage-erase-threshold", ERASE]), ("default", [])):
        oracle = _oracle(cohort, tmp_path / name, *flags)
        run_plink2(["--pfile", str(oracle.pooled), *QC, "--out", "ref"], cwd=tmp_path / name)
        outputs[name] = {ext: (tmp_path / name / f"ref.{ext}").read_text() for ext in ("afreq", "vmiss", "gcount")}
    for ext, text in outputs["rules"].items():
        assert (out / f"fedgwas.{ext}").read_text() == text, ext
        assert text != outputs["default"][ext], ext  # each output depends on the rules


def test_glm_linear_with_hard_call_rules_equals_plink2(cohort: DosageCohort, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["local", *_sites(cohort), "--pheno", str(cohort.pheno), "--covar", str(cohort.covar),
                 "--covar-name", ",".join(COVARIATES), "--pheno-name", "QT1", "--glm", "linear", "--out", str(out),
                 "--no-progress"]) == 0
    ours = read_gwas_ssf(out / "QT1.linear.tsv.gz")
    ref = plink2_glm(_oracle(cohort, tmp_path / "rules", "--hard-call-threshold", HARD, "--dosage-erase-threshold",
                             ERASE), "QT1", "linear", tmp_path / "rules")
    default = plink2_glm(_oracle(cohort, tmp_path / "default"), "QT1", "linear", tmp_path / "default")
    assert list(ours["variant_id"]) == list(ref["ID"])
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    ok = np.isfinite(ref["P"])
    assert np.max(np.abs(ours["beta"][ok] - ref["BETA"][ok]) / ref["SE"][ok]) < 1e-4
    assert np.max(np.abs(ours["neg_log10_p"][ok] + np.log10(ref["P"][ok]))) < 1e-4
    np.testing.assert_allclose(ours["info"], ref["MACH_R2"], rtol=5e-6, equal_nan=True)
    # erased dosages move the estimates well beyond the tolerance: ignoring the rule would fail above
    assert np.max(np.abs(default["BETA"][ok] - ref["BETA"][ok]) / ref["SE"][ok]) > 1e-2
