"""Acceptance: a study declaring HMB on the HapMap3 4-site split analyses exactly the GRU and HMB participants.

The consent table is drawn from the pooled .fam with a seeded mix of GRU/HMB/DS/NPU/NONE (and some
participants left out); ``fedgwas local --consent --purpose HMB`` over mutual TLS must equal
``plink2 --glm --keep`` on the pooled data restricted to the GRU and HMB participants.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.io.plink import read_fam
from tests.plink_tools import HM3_BFILE, HM3_COVARIATES, hm3_population_groups, read_plink_table, run_plink2, \
    split_by_groups
from tests.federated.test_federated_linear_vs_plink2 import COVAR, PHENO, run_local
from tests.plink_tools import assert_matches_plink

CODES = np.array(["GRU", "HMB", "DS:MONDO:0005148", "NPU", "NONE", "HMB;NPU", "GRU;NPU", "UNLISTED"])


def test_hmb_study_includes_exactly_gru_and_hmb_participants(tmp_path: Path) -> None:
    split = split_by_groups(HM3_BFILE, hm3_population_groups(), tmp_path / "split")
    fam = read_fam(Path(f"{split.pooled_bfile}.fam"))
    rng = np.random.default_rng(2024)
    codes = rng.choice(CODES, size=len(fam.iid), p=[0.3, 0.25, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05])
    listed = codes != "UNLISTED"
    consent = tmp_path / "consent.txt"
    consent.write_text("#FID\tIID\tDUO\n" + "".join(f"{f}\t{i}\t{c}\n" for f, i, c in
                                                    zip(fam.fid[listed], fam.iid[listed], codes[listed])))
    # A non-commercial HMB study: GRU and HMB, with or without NPU; never DS, NPU alone, NONE or unlisted.
    covered = np.isin(codes, ["GRU", "HMB", "HMB;NPU", "GRU;NPU"])
    keep = tmp_path / "keep.txt"
    keep.write_text("".join(f"{f}\t{i}\n" for f, i in zip(fam.fid[covered], fam.iid[covered])))

    out = tmp_path / "out"
    ours = run_local(split.site_bfiles, out, "--consent", str(consent), "--purpose", "HMB")
    run_plink2(["--bfile", str(split.pooled_bfile), "--keep", str(keep), "--pheno", str(PHENO), "--pheno-name", "QT",
                "--covar", str(COVAR), "--covar-name", *HM3_COVARIATES, "--covar-variance-standardize",
                "--glm", "omit-ref", "hide-covar", "cols=+a1count,+a1freq,+beta,+se", "--out",
                str(tmp_path / "ref")], cwd=tmp_path)
    ref = read_plink_table(tmp_path / "ref.QT.glm.linear")
    assert_matches_plink(ours, ref)
    summary = json.loads((out / "QT.linear.summary.json").read_text())
    assert "INSECURE" not in summary["privacy_label"]  # local runs use mutual TLS by default
    # Each site received only its own consent rows.
    for site in split.site_bfiles:
        site_fam = read_fam(Path(f"{site}.fam"))
        rows = (out / "sites" / site.name / "consent.txt").read_text().splitlines()[1:]
        assert {r.split()[1] for r in rows} <= set(site_fam.iid)

    # A commercial HMB study drops the NPU participants as well.
    commercial = run_local(split.site_bfiles, tmp_path / "commercial", "--consent", str(consent), "--purpose", "HMB",
                           "--commercial")
    assert commercial["n"].max() <= int(np.isin(codes, ["GRU", "HMB"]).sum())
    assert commercial["n"].max() < ours["n"].max()


@pytest.mark.parametrize("text, purpose, commercial, expected", [
    ("GRU", "POA", False, True), ("HMB", "POA", False, False), ("HMB", "DS:MONDO:0005148", False, True),
    ("DS:MONDO:0005148", "DS:MONDO:0005148", False, True), ("DS:MONDO:0005148", "HMB", False, False),
    ("DS:MONDO:0005148", "DS:MONDO:0004975", False, False), ("NPU", "HMB", False, False),
    ("GRU;NPU", "GRU", True, False), ("GRU;NPU", "GRU", False, True), ("NONE", "GRU", False, False),
    ("withdrawn", "GRU", False, False), ("HMB", "GRU", False, False),
])
def test_duo_matching_rules(text: str, purpose: str, commercial: bool, expected: bool) -> None:
    from engine.cohort.consent import DataUse, parse_duo

    assert parse_duo(text).covers(DataUse(purpose, commercial)) is expected


def test_unknown_duo_code_is_refused() -> None:
    from engine.cohort.consent import parse_duo
    from engine.errors import InputError

    with pytest.raises(InputError, match="unknown DUO code 'HBM'"):
        parse_duo("HBM")
