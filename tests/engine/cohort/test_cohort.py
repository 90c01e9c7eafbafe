"""Cohort selection and PLINK 2 phenotype coding (quantitative, case/control 1/2, --1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.cohort.cohort import build_cohort, code_phenotype
from engine.errors import InputError
from engine.io.plink import FamTable
from engine.io.tables import read_sample_table


def test_case_control_codings() -> None:
    values = np.array([1, 2, 0, np.nan, 2])
    np.testing.assert_array_equal(code_phenotype(values, "case-control", "f"), [0, 1, np.nan, np.nan, 1])
    np.testing.assert_array_equal(code_phenotype(np.array([0, 1, np.nan]), "case-control-01", "f"), [0, 1, np.nan])
    with pytest.raises(InputError, match="'pheno.txt' column 'BT': case/control value 3 is not one of 1/2"):
        code_phenotype(np.array([1, 3]), "case-control", "'pheno.txt' column 'BT'")
    with pytest.raises(InputError, match="value 2 is not one of 0/1"):
        code_phenotype(np.array([0, 2]), "case-control-01", "f")


def test_build_cohort_drops_missing_and_matches_ids(tmp_path: Path) -> None:
    pheno = tmp_path / "pheno.txt"
    pheno.write_text("#FID\tIID\tBT\tQT\nf1\ta\t2\t1.5\nf1\tb\t0\t2.0\nf2\tc\t1\tNA\nf9\tz\t2\t0.1\n")
    covar = tmp_path / "covar.txt"
    covar.write_text("#IID\tAGE\na\t40\nb\t50\nc\t-9\n")
    fam = FamTable(fid=np.array(["f1", "f1", "f2"]), iid=np.array(["a", "b", "c"]), sex=np.array([1, 2, 1], np.int8))
    cohort = build_cohort(fam, read_sample_table(pheno), "BT", read_sample_table(covar), ["AGE"], "case-control")
    assert cohort.sample_index.tolist() == [0] and cohort.phenotype.tolist() == [1.0]
    everyone = build_cohort(fam, read_sample_table(pheno), "", None, [])
    assert everyone.n_samples == 3 and not everyone.phenotype.any()
    quantitative = build_cohort(fam, read_sample_table(pheno), "QT")
    assert quantitative.sample_index.tolist() == [0, 1] and quantitative.n_dropped == 1


def test_missing_value_applies_to_every_phenotype_of_a_multi_phenotype_cohort(tmp_path: Path) -> None:
    """PLINK 2's --input-missing-phenotype holds for each column of --pheno-name A,B."""
    pheno = tmp_path / "pheno.txt"
    pheno.write_text("#FID\tIID\tA\tB\nf1\ta\t-9\t5\nf1\tb\t2.5\t-1\nf2\tc\t-1\t-1\nf3\td\t1.0\t-9\n")
    fam = FamTable(fid=np.array(["f1", "f1", "f2", "f3"]), iid=np.array(["a", "b", "c", "d"]),
                   sex=np.array([1, 2, 1, 2], np.int8))
    cohort = build_cohort(fam, read_sample_table(pheno), "A,B", missing_value=-1.0)
    assert cohort.sample_index.tolist() == [0, 1, 3]  # c misses both
    np.testing.assert_array_equal(cohort.phenotype_matrix, [[-9.0, 5.0], [2.5, np.nan], [1.0, -9.0]])
    default = build_cohort(fam, read_sample_table(pheno), "A,B")
    assert default.sample_index.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(default.phenotype_matrix, [[np.nan, 5.0], [2.5, -1.0], [-1.0, -1.0], [1.0, np.nan]])
