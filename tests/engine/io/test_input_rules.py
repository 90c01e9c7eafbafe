"""PLINK 2's input rules: missing phenotype spellings, duplicate sample IDs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError
from engine.io.plink import read_fam
from engine.io.tables import read_sample_table


def test_every_spelling_of_minus_nine_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "pheno.txt"
    path.write_text("#FID IID QT\n" + "".join(f"f{i} i{i} {v}\n" for i, v in
                                               enumerate(["-9", "-9.0", "-9.000", "-9e0", "NA", "nan", "1.5", "-9.5", "0"])))
    values = read_sample_table(path).numeric("QT")
    np.testing.assert_array_equal(np.isnan(values), [True] * 6 + [False] * 3)
    np.testing.assert_array_equal(values[6:], [1.5, -9.5, 0.0])


def test_duplicate_sample_in_a_fam_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.fam"
    path.write_text("F1 I1 0 0 1 -9\nF1 I2 0 0 2 -9\nF1 I1 0 0 1 -9\n")
    with pytest.raises(InputError, match=r"duplicate sample ID FID 'F1' IID 'I1' in .*site\.fam"):
        read_fam(path)


def test_same_iid_in_two_families_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "site.fam"
    path.write_text("F1 I1 0 0 1 -9\nF2 I1 0 0 2 -9\n")
    assert len(read_fam(path)) == 2
