"""Acceptance: federated linear GWAS under homomorphic encryption (``--privacy he``) equals PLINK 2.

HapMap3 (957 founders x 14,079 SNPs) is split by continental group into 4 sites, each a real
``fedgwas-site`` process, with a real key-holder process; the coordinator only sums ciphertexts.
Results are compared with ``plink2 --glm omit-ref`` on the pooled files: |delta -log10 p| < 1e-3,
|delta beta|/SE < 1e-3, N equal for every variant (mirrors tests/test_federated_linear_vs_plink2.py).
"""

from __future__ import annotations

import json
from pathlib import Path


from tests.plink_tools import HM3, assert_matches_plink, read_plink_table
from tests.federated.test_federated_linear_vs_plink2 import run_local

TOLERANCE = 1e-3


def test_he_equals_shared_plink2_reference(hm3_split, tmp_path: Path) -> None:
    ours = run_local(hm3_split.site_bfiles, tmp_path / "out", "--privacy", "he")
    ref = read_plink_table(HM3 / "plink_reference_outputs/plink2/hm3_cov_omitref.QT.glm.linear")
    assert_matches_plink(ours, ref, TOLERANCE, se_rtol=1e-4, freq_atol=1e-5)
    summary = json.loads((tmp_path / "out" / "QT.linear.summary.json").read_text())
    assert summary["privacy"] == "he" and len(summary["contributing_sites"]) == 4
    log = (tmp_path / "out" / "keyholder" / "keyholder.log").read_text()
    assert "4 sites" in log and ": released block" in log
