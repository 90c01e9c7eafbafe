"""Acceptance: federated QC, filters and the allelic test equal PLINK on the pooled data.

HapMap3 (957 founders x 14,079 SNPs) is split by continental group into 4 sites, each a real
``fedgwas-site`` process, one of them storing every variant with its alleles swapped. QC reports are
compared with PLINK 2's (shared references, counts exactly, HWE p to 1e-4 in log10), the allelic test
with PLINK 1.9's ``--assoc`` (which prints 4 significant digits), and the variants left for
association after ``--maf/--geno/--hwe`` with ``plink2 ... --write-snplist`` run here on the pooled
files. Bad input (a non case/control phenotype, no cases or no controls) fails with one clear line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.simulate import SimulatedStudy, SimulationSpec, simulate_study
from engine.io.tables import read_sample_table
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.provision import init_site
from site_agent.server import make_server
from tests.plink_tools import (
    DATA,
    HM3,
    HM3_BFILE,
    hm3_population_groups,
    read_plink_table,
    run_plink2,
    split_by_groups,
)

PHENO = HM3 / "sim_pheno.txt"
COVAR = HM3 / "sim_covar.txt"
PLINK2 = HM3 / "plink_reference_outputs" / "plink2"
PLINK19 = HM3 / "plink_reference_outputs" / "plink1.9"
MISSING_RATES = {"africa": 0.002, "europe": 0.03, "eastasia": 0.0, "southasia": 0.08}


def site_args(bfiles: tuple[Path, ...]) -> list[str]:
    return [a for prefix in bfiles for a in ("--bfile", str(prefix))]


@pytest.fixture(scope="module")
def clean_split(tmp_path_factory: pytest.TempPathFactory):
    return split_by_groups(HM3_BFILE, hm3_population_groups(), tmp_path_factory.mktemp("clean"),
                           swapped_sites=("eastasia",))


@pytest.fixture(scope="module")
def messy_split(tmp_path_factory: pytest.TempPathFactory):
    return split_by_groups(HM3_BFILE, hm3_population_groups(), tmp_path_factory.mktemp("messy"),
                           missing_rates=MISSING_RATES, swapped_sites=("eastasia",))


def assert_same_table(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], p_column: str = "P") -> None:
    """Same columns; text and counts equal; frequencies to PLINK's 6 digits; p to 1e-4 in log10."""
    assert list(ours) == list(ref)
    for name, expected in ref.items():
        actual = ours[name]
        if expected.dtype.kind != "f":
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        elif name == p_column:
            np.testing.assert_allclose(np.log10(actual), np.log10(expected), rtol=0, atol=1e-4, err_msg=name)
        elif name.endswith("_CT") or name.endswith("_CTS"):
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        else:
            np.testing.assert_allclose(actual, expected, rtol=5e-6, atol=0, equal_nan=True, err_msg=name)


def test_qc_reports_and_allelic_test_equal_plink(clean_split, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["local", *site_args(clean_split.site_bfiles), "--pheno", str(PHENO), "--pheno-name", "BT",
                 "--assoc", "--freq", "--hardy", "--missing", "--geno-counts", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "allelic test of BT on 14079 variants" in printed and "fedgwas.hardy" in printed
    for ext in ("afreq", "hardy", "vmiss", "gcount"):
        assert_same_table(read_plink_table(out / f"fedgwas.{ext}"), read_plink_table(PLINK2 / f"hm3.{ext}"))
    ours, ref = read_plink_table(out / "BT.assoc"), read_plink_table(PLINK19 / "hm3_BT.assoc")
    assert list(ours) == list(ref)
    for name in ("CHR", "SNP", "BP", "A1", "A2"):  # A1 = minor allele, despite the swapped site
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)
    for name in ("F_A", "F_U", "CHISQ", "OR"):  # PLINK 1.9 prints 4 significant digits
        np.testing.assert_allclose(ours[name], ref[name], rtol=5e-4, atol=5e-5, err_msg=name)
    np.testing.assert_allclose(np.log10(ours["P"]), np.log10(ref["P"]), rtol=0, atol=3e-4)
    # Only pooled per-variant counts are released: no per-sample report anywhere in the results.
    assert not list(out.rglob("*.smiss")) and not list(out.rglob("*.imiss"))
    summary = json.loads((out / "BT.assoc.summary.json").read_text())
    assert summary["test"] == "assoc" and summary["privacy"] == "secagg"


def test_regenie_example_with_01_coding(tmp_path: Path) -> None:
    """regenie's example (500 x 1,000, alleles '1'/'2'), 2 sites, one swapped; phenotype coded 0/1 (--1)."""
    data = DATA / "regenie_example"
    split = split_by_groups(data / "example", {"a": np.arange(0, 230), "b": np.arange(230, 500)}, tmp_path / "split",
                            swapped_sites=("b",))
    out = tmp_path / "out"
    assert main(["local", *site_args(split.site_bfiles), "--pheno", str(data / "phenotype_bin.txt"),
                 "--pheno-name", "Y1", "--1", "--assoc", "--freq", "--hardy", "--missing", "--out", str(out),
                 "--no-progress"]) == 0
    reference = data / "plink_reference_outputs"
    for ext in ("afreq", "hardy", "vmiss"):
        assert_same_table(read_plink_table(out / f"fedgwas.{ext}"), read_plink_table(reference / "plink2" / f"example.{ext}"))
    ours, ref = read_plink_table(out / "Y1.assoc"), read_plink_table(reference / "plink1.9" / "example_Y1_bt.assoc")
    for name in ("SNP", "A1", "A2"):
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)
    for name in ("F_A", "F_U", "CHISQ", "OR"):
        np.testing.assert_allclose(ours[name], ref[name], rtol=5e-4, atol=5e-5, err_msg=name)
    np.testing.assert_allclose(np.log10(ours["P"]), np.log10(ref["P"]), rtol=0, atol=3e-4)


def plink2_filtered(pooled: Path, flags: list[str], out: Path, *reports: str) -> tuple[list[str], dict[str, int]]:
    """Variants ``plink2 FLAGS --write-snplist`` keeps on the pooled files, and its removal counts."""
    run_plink2(["--bfile", str(pooled), *flags, *reports, "--write-snplist", "--out", str(out)], cwd=out.parent)
    log = Path(f"{out}.log").read_text()
    counts = {"geno": r"(\d+) variants? removed due to missing genotype data", "hwe": r"--hwe[^:]*: (\d+) variant",
              "maf": r"(\d+) variants? removed due to allele frequency"}
    removed = {k: int(m.group(1)) for k, pattern in counts.items() if (m := re.search(pattern, log))}
    return Path(f"{out}.snplist").read_text().split(), removed


def test_filters_keep_exactly_plink2s_variants(messy_split, tmp_path: Path) -> None:
    flags = ["--maf", "0.05", "--geno", "0.02", "--hwe", "1e-6"]
    kept, removed = plink2_filtered(messy_split.pooled_bfile, flags, tmp_path / "plink2")
    assert removed["geno"] > 1000 and removed["maf"] > 100, removed  # the injected missingness bites
    out = tmp_path / "out"
    assert main(["local", *site_args(messy_split.site_bfiles), "--pheno", str(PHENO), "--pheno-name", "QT",
                 "--covar", str(COVAR), "--covar-name", "SEX_MALE,AGE,PC1-PC4", "--glm", "linear", *flags,
                 "--out", str(out), "--no-progress"]) == 0
    results = read_gwas_ssf(out / "QT.linear.tsv.gz")
    assert list(results["variant_id"]) == kept
    summary = json.loads((out / "QT.linear.summary.json").read_text())
    assert {k: summary["variants_dropped"][k] for k in removed} == removed
    assert summary["n_variants_tested"] == len(kept)
    assert any("--geno 0.02 --hwe 1e-06 --maf 0.05" in note for note in summary["notes"])
    assert f"geno: {removed['geno']:,}" in (out / "QT.linear.report.html").read_text()
    assert f'"geno": {removed["geno"]}' in (out / "QT.linear.tsv.gz-meta.yaml").read_text()


def test_midp_hwe_filter_hardy_after_geno_and_assoc(messy_split, tmp_path: Path) -> None:
    """--hwe midp removes variants here; .hardy lists the variants passing --geno, as PLINK 2's does."""
    flags = ["--maf", "0.2", "--geno", "0.02", "--hwe", "1e-3", "midp"]
    kept, removed = plink2_filtered(messy_split.pooled_bfile, flags, tmp_path / "plink2", "--hardy")
    assert removed["hwe"] > 100, removed
    out = tmp_path / "out"
    assert main(["local", *site_args(messy_split.site_bfiles), "--pheno", str(PHENO), "--pheno-name", "BT",
                 "--assoc", "--hardy", *flags, "--out", str(out), "--no-progress"]) == 0
    assert list(read_plink_table(out / "BT.assoc")["SNP"]) == kept
    assert_same_table(read_plink_table(out / "fedgwas.hardy"), read_plink_table(tmp_path / "plink2.hardy"))


# --- fedgwas run STUDY.toml with a [qc] table, in-process agents ---------------------------------------

@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedStudy:
    spec = SimulationSpec(site_sizes=(150, 120), n_variants=600, seed=21, write_pooled=True)
    return simulate_study(spec, tmp_path_factory.mktemp("sim"))


@pytest.fixture()
def agents(small_study: SimulatedStudy, tmp_path: Path):
    servers, endpoints = [], []
    for index, bfile in enumerate(small_study.site_bfiles):
        name = f"hosp{index + 1}"
        config = init_site(name, str(bfile), str(small_study.pheno_path), str(small_study.covar_path),
                           tmp_path / name, "127.0.0.1:0")
        server, port = make_server(load_site_data(load_site_config(config)), "127.0.0.1:0")
        server.start()
        servers.append(server)
        endpoints.append((name, f"127.0.0.1:{port}"))
    yield endpoints
    for server in servers:
        server.stop(grace=None)


def study_toml(endpoints: list[tuple[str, str]], analysis: str, qc: str) -> str:
    sites = "".join(f'[[sites]]\nname = "{n}"\naddress = "{a}"\n\n' for n, a in endpoints)
    return (f'[study]\nid = "qc-run"\n[analysis]\n{analysis}\n[qc]\n{qc}\n[network]\ntimeout_seconds = 60\n'
            f'[output]\ndir = "out"\n\n{sites}')


def test_run_study_file_with_qc_table(small_study, agents, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(study_toml(agents, 'phenotype = "BT"\nassoc = true',
                               'outputs = ["freq", "missing"]\nmaf = 0.05\ngeno = 0.05\nhwe = 1e-4'))
    assert main(["run", str(path), "--no-progress"]) == 0
    out = tmp_path / "out"
    kept, _ = plink2_filtered(small_study.pooled_bfile, ["--maf", "0.05", "--geno", "0.05", "--hwe", "1e-4"],
                              tmp_path / "plink2", "--freq", "--missing", "variant-only")
    assert_same_table(read_plink_table(out / "fedgwas.afreq"), read_plink_table(tmp_path / "plink2.afreq"))
    assert_same_table(read_plink_table(out / "fedgwas.vmiss"), read_plink_table(tmp_path / "plink2.vmiss"))
    assert list(read_plink_table(out / "BT.assoc")["SNP"]) == kept


def test_run_study_file_refused_phenotype_is_bad_input(agents, tmp_path: Path, capsys) -> None:
    """No pre-flight check here: the sites refuse a quantitative column for the allelic test."""
    path = tmp_path / "study.toml"
    path.write_text(study_toml(agents, 'phenotype = "QT"\nassoc = true', 'outputs = ["freq"]'))
    assert main(["run", str(path), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "case/control value" in error[0] and "'QT'" in error[0]


# --- bad input through fedgwas local -------------------------------------------------------------------

def error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedgwas: error: ") and "Traceback" not in captured.err
    return lines[0]


def test_quantitative_column_for_allelic_test(small_study, tmp_path: Path, capsys) -> None:
    code = main(["local", *site_args(small_study.site_bfiles), "--pheno", str(small_study.pheno_path),
                 "--pheno-name", "QT", "--assoc", "--out", str(tmp_path / "out"), "--no-progress"])
    line = error_line(capsys, code)
    assert str(small_study.pheno_path) in line and "'QT'" in line and "case/control value" in line


@pytest.mark.parametrize("status", ["1", "2"], ids=["all-controls", "all-cases"])
def test_pooled_phenotype_without_cases_or_controls(small_study, tmp_path: Path, capsys, status: str) -> None:
    table = read_sample_table(small_study.pheno_path)
    pheno = tmp_path / "pheno.txt"
    pheno.write_text("FID IID BT\n" + "".join(f"{f} {i} {status}\n" for f, i in zip(table.fid, table.iid)))
    code = main(["local", *site_args(small_study.site_bfiles), "--pheno", str(pheno), "--pheno-name", "BT",
                 "--assoc", "--out", str(tmp_path / "out"), "--no-progress"])
    line = error_line(capsys, code)
    expected = "0 cases" if status == "1" else "0 controls"
    assert "'BT'" in line and expected in line and "needs both" in line


@pytest.mark.parametrize("extra, message", [
    ((), "nothing to do"),
    (("--maf", "0.01"), "nothing to do"),
    (("--freq", "--pheno-name", "BT", "--pheno", "PHENO"), "only used by an association test"),
    (("--assoc",), "need --pheno and --pheno-name"),
    (("--hardy", "--hwe", "1e-6", "mid"), "--hwe"),
])
def test_local_usage_errors(small_study, tmp_path: Path, capsys, extra: tuple[str, ...], message: str) -> None:
    extra = tuple(str(small_study.pheno_path) if a == "PHENO" else a for a in extra)
    code = main(["local", *site_args(small_study.site_bfiles), *extra, "--out", str(tmp_path / "out"),
                 "--no-progress"])
    assert message in error_line(capsys, code)
