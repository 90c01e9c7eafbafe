"""QC of dosage data on chrX, chrY and MT equals PLINK 2 on the pooled dosage ``.pgen``.

PLINK 2 counts a haploid dosage (chrX males, chrY males only, MT everyone) as one allele observation
and half a dosage in ``.afreq``/``.acount``, reports no MaCH R2 on chrX and MT and the haploid one on
chrY; its hard-call reports (``.gcount``, ``.vmiss``, ``.hardy``, ``.hardy.x``) use the hard calls of the
dosages with the same haploid rules. Three sites (``plink2 --keep ... --make-pgen`` of the pooled file),
samples of both sexes and a few of unknown sex, dosages with some missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from tests.plink_tools import read_plink_table, run_plink2

CHROMOSOMES = ["1"] * 6 + ["X"] * 8 + ["Y"] * 5 + ["MT"] * 5


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pgenlib

    root = tmp_path_factory.mktemp("dosage_sexchr")
    rng = np.random.default_rng(16)
    n, m = 240, len(CHROMOSOMES)
    sex = rng.integers(1, 3, n)
    sex[:8] = 0
    male = sex == 1
    freq = rng.uniform(0.05, 0.6, m)
    truth = rng.binomial(2, freq[:, None], size=(m, n)).astype(np.float64)
    haploid = np.array([c in ("Y", "MT") for c in CHROMOSOMES])[:, None] | \
        (np.array([c == "X" for c in CHROMOSOMES])[:, None] & male[None, :])
    truth = np.where(haploid, 2.0 * rng.binomial(1, freq[:, None], size=(m, n)), truth)  # haploid: 0 or 2
    pull = rng.uniform(0.5, 1.0, size=(m, n))  # imputation uncertainty: towards the mean
    dosages = np.round((pull * truth + (1 - pull) * 2 * freq[:, None]) * 16384) / 16384
    dosages[rng.random((m, n)) < 0.03] = -9  # missing
    dosages[np.array([c == "Y" for c in CHROMOSOMES])[:, None] & ~male[None, :] & (rng.random((m, n)) < 0.8)] = -9
    writer = pgenlib.PgenWriter(bytes(root / "pooled.pgen"), n, variant_ct=m, nonref_flags=False,
                                hardcall_phase_present=False, dosage_present=True)
    writer.append_dosages_batch(dosages)
    writer.close()
    alleles = [("A", "G"), ("C", "T"), ("G", "A"), ("T", "C")]
    (root / "pooled.pvar").write_text("#CHROM\tPOS\tID\tREF\tALT\n" + "".join(
        f"{c}\t{3_000_000 + 1000 * j}\tv{j}\t{alleles[j % 4][0]}\t{alleles[j % 4][1]}\n"
        for j, c in enumerate(CHROMOSOMES)))
    (root / "pooled.psam").write_text("#IID\tSEX\n" + "".join(f"s{i}\t{s if s else 'NA'}\n" for i, s in enumerate(sex)))
    for k in range(3):
        (root / f"keep{k}.txt").write_text("".join(f"s{i}\n" for i in range(k, n, 3)))
        run_plink2(["--pfile", "pooled", "--keep", f"keep{k}.txt", "--make-pgen", "--out", f"site{k}"], cwd=root)
    return root


def _local(sites: Path, out: Path, *flags: str) -> None:
    args = [a for k in range(3) for a in ("--pfile", str(sites / f"site{k}"))]
    assert main(["local", *args, *flags, "--out", str(out), "--no-progress"]) == 0


def test_dosage_qc_on_x_y_mt_equals_plink2(sites: Path, tmp_path: Path) -> None:
    flags = ["--freq", "cols=+machr2", "--missing", "--geno-counts", "--hardy"]
    _local(sites, tmp_path / "out", *flags)
    run_plink2(["--pfile", str(sites / "pooled"), *flags, "--out", "ref"], cwd=tmp_path)
    for ext in ("afreq", "vmiss", "gcount"):
        assert (tmp_path / "out" / f"fedgwas.{ext}").read_text() == (tmp_path / f"ref.{ext}").read_text(), ext
    afreq = read_plink_table(tmp_path / "ref.afreq")
    r2 = np.asarray(afreq["MACH_R2"], dtype=np.float64)
    assert np.all(np.isnan(r2[np.isin(afreq["CHROM"], ("X", "MT"))]))  # the sex-chromosome rules were exercised
    assert np.all(np.isfinite(r2[afreq["CHROM"] == "Y"])) and np.all(afreq["OBS_CT"][afreq["CHROM"] == "Y"] < 240)
    for ext in ("hardy", "hardy.x"):
        ours, ref = (read_plink_table(path) for path in (tmp_path / "out" / f"fedgwas.{ext}", tmp_path / f"ref.{ext}"))
        assert list(ours) == list(ref), ext
        for column in ref:
            if ref[column].dtype.kind == "f":
                np.testing.assert_allclose(ours[column], ref[column], rtol=3e-6, err_msg=f"{ext} {column}")
            else:
                np.testing.assert_array_equal(ours[column], ref[column], err_msg=f"{ext} {column}")


def test_dosage_allele_counts_on_x_y_mt_equal_plink2(sites: Path, tmp_path: Path) -> None:
    _local(sites, tmp_path / "counts", "--freq", "counts")
    run_plink2(["--pfile", str(sites / "pooled"), "--freq", "counts", "--out", "ref"], cwd=tmp_path)
    ours, ref = (read_plink_table(path) for path in (tmp_path / "counts" / "fedgwas.acount", tmp_path / "ref.acount"))
    np.testing.assert_array_equal(ours["OBS_CT"], ref["OBS_CT"])
    np.testing.assert_allclose(ours["ALT_CTS"], ref["ALT_CTS"], rtol=1e-6)
