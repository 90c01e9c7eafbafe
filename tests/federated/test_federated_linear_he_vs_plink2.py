"""Acceptance: federated linear GWAS under homomorphic encryption (``--privacy he``) equals PLINK 2.

HapMap3 (957 founders x 14,079 SNPs) is split by continental group into 4 sites, each a real
``fedgwas-site`` process, with a real key-holder process; the coordinator only sums ciphertexts.
Results are compared with ``plink2 --glm omit-ref`` on the pooled files: |delta -log10 p| < 1e-3,
|delta beta|/SE < 1e-3, N equal for every variant (mirrors tests/test_federated_linear_vs_plink2.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.plink_tools import HM3, read_plink_table
from tests.federated.test_federated_linear_vs_plink2 import run_local

TOLERANCE = 1e-3


def test_he_equals_shared_plink2_reference(hm3_split, tmp_path: Path) -> None:
    ours = run_local(hm3_split.site_bfiles, tmp_path / "out", "--privacy", "he")
    ref = read_plink_table(HM3 / "plink_reference_outputs/plink2/hm3_cov_omitref.QT.glm.linear")
    assert list(ours["variant_id"]) == list(ref["ID"])
    assert list(ours["effect_allele"]) == list(ref["A1"])
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    ok = np.isfinite(ref["P"])
    assert np.array_equal(np.isfinite(ours["beta"]), np.isfinite(ref["BETA"]))
    beta_err = np.abs(ours["beta"][ok] - ref["BETA"][ok]) / ref["SE"][ok]
    logp_err = np.abs(ours["neg_log10_p"][ok] - -np.log10(ref["P"][ok]))
    assert beta_err.max() < TOLERANCE, f"max |dbeta|/SE = {beta_err.max():.3g}"
    assert logp_err.max() < TOLERANCE, f"max |d -log10 p| = {logp_err.max():.3g}"
    np.testing.assert_allclose(ours["standard_error"][ok], ref["SE"][ok], rtol=1e-4)
    summary = json.loads((tmp_path / "out" / "QT.linear.summary.json").read_text())
    assert summary["privacy"] == "he" and len(summary["contributing_sites"]) == 4
    log = (tmp_path / "out" / "keyholder" / "keyholder.log").read_text()
    assert "4 sites" in log and ": released block" in log
