"""Case/control input handling of ``--glm logistic|firth`` through the real command lines.

Bad phenotype values are refused with one line naming the file, column and value (exit 2), before
any site starts when running locally, and by the site itself (reported as bad input) otherwise. A
pooled cohort without cases or without controls is refused; a single site with only cases is fine
(see tests/test_federated_logistic_vs_plink2.py for that case against PLINK 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from fedgwas.cli import main as fedgwas_main
from coordinator.results.gwas_ssf import read_gwas_ssf
from coordinator.study import StudyConfig
from coordinator.study_file import load_study
from coordinator.client import SiteEndpoint
from engine.errors import ConfigError
from engine.simulate import SimulatedStudy, SimulationSpec, simulate_study
from engine.tasks import CohortRequest
from site_agent.provision import init_site, provision_roster
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.server import make_server


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedStudy:
    spec = SimulationSpec(site_sizes=(80, 80), n_variants=150, seed=5, write_pooled=False)
    return simulate_study(spec, tmp_path_factory.mktemp("sim"))


def rewrite_bt(study: SimulatedStudy, path: Path, recode: Callable[[str], str]) -> Path:
    """The study's phenotype file with the BT column passed through ``recode``."""
    lines = study.pheno_path.read_text().splitlines()
    column = lines[0].split("\t").index("BT")
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split("\t")
        fields[column] = recode(fields[column])
        out.append("\t".join(fields))
    path.write_text("\n".join(out) + "\n")
    return path


def local(study: SimulatedStudy, out: Path, pheno: Path, *extra: str) -> int:
    argv = ["local"]
    for prefix in study.site_bfiles:
        argv += ["--bfile", str(prefix)]
    return fedgwas_main([*argv, "--pheno", str(pheno), "--pheno-name", "BT", "--covar", str(study.covar_path),
                         "--covar-name", "SEX_MALE,AGE", "--privacy", "plaintext", "--out", str(out),
                         "--no-progress", *extra])


def error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedgwas: error: "), captured.err
    return lines[0]


def test_case_control_value_other_than_1_2_is_refused(study, tmp_path, capsys) -> None:
    pheno = rewrite_bt(study, tmp_path / "pheno.txt", lambda v: "3" if v == "2" else v)
    line = error_line(capsys, local(study, tmp_path / "out", pheno, "--glm", "logistic"))
    assert "pheno.txt" in line and "'BT'" in line and "value 3" in line and "1/2" in line


def test_zero_one_column_without_flag_1_says_so(study, tmp_path, capsys) -> None:
    pheno = rewrite_bt(study, tmp_path / "pheno.txt", lambda v: {"1": "0", "2": "1"}.get(v, v))
    line = error_line(capsys, local(study, tmp_path / "out", pheno, "--glm", "firth"))
    assert "--1" in line


def test_flag_1_is_for_case_control_models_only(study, tmp_path, capsys) -> None:
    line = error_line(capsys, local(study, tmp_path / "out", study.pheno_path, "--glm", "linear", "--1"))
    assert "--1" in line and "logistic" in line


def test_pooled_cohort_without_controls_is_refused(study, tmp_path, capsys) -> None:
    pheno = rewrite_bt(study, tmp_path / "pheno.txt", lambda v: "2" if v == "1" else v)
    line = error_line(capsys, local(study, tmp_path / "out", pheno, "--glm", "logistic"))
    assert "'BT'" in line and "no controls" in line


def test_one_zero_coded_run_with_flag_1_equals_the_one_two_coded_run(study, tmp_path, capsys) -> None:
    assert local(study, tmp_path / "a", study.pheno_path, "--glm", "logistic") == 0
    pheno = rewrite_bt(study, tmp_path / "pheno01.txt", lambda v: {"1": "0", "2": "1"}.get(v, v))
    assert local(study, tmp_path / "b", pheno, "--glm", "logistic", "--1") == 0
    a = (tmp_path / "a" / "BT.logistic.tsv.gz").read_bytes()
    assert a == (tmp_path / "b" / "BT.logistic.tsv.gz").read_bytes()
    assert "logistic regression of BT" in capsys.readouterr().out


# --- study TOML and configuration -------------------------------------------------------------------

STUDY = """\
[study]
id = "cc"

[analysis]
glm = "{glm}"
phenotype = "BT"
covariates = ["SEX_MALE", "AGE"]
{extra}

[privacy]
mode = "plaintext"

[network]
timeout_seconds = 30

[[sites]]
name = "site1"
address = "{a}"

[[sites]]
name = "site2"
address = "{b}"
"""


def test_study_file_reads_the_case_control_coding(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(glm="logistic", extra="", a="h:1", b="h:2"))
    assert load_study(path).cohort.phenotype_coding == "case-control"
    path.write_text(STUDY.format(glm="firth", extra='case_control = "0/1"', a="h:1", b="h:2"))
    assert load_study(path).cohort.phenotype_coding == "case-control-01"
    path.write_text(STUDY.format(glm="linear", extra="", a="h:1", b="h:2"))
    assert load_study(path).cohort.phenotype_coding == "quantitative"
    path.write_text(STUDY.format(glm="logistic", extra='case_control = "yes"', a="h:1", b="h:2"))
    with pytest.raises(ConfigError, match="case_control"):
        load_study(path)
    path.write_text(STUDY.format(glm="linear", extra='case_control = "0/1"', a="h:1", b="h:2"))
    with pytest.raises(ConfigError, match="applies to glm"):
        load_study(path)


def test_study_config_refuses_a_model_that_does_not_fit_the_coding(tmp_path: Path) -> None:
    sites = (SiteEndpoint("a", "h:1"), SiteEndpoint("b", "h:2"))
    with pytest.raises(ConfigError, match="logistic"):
        StudyConfig(study_id="x", glm="logistic", cohort=CohortRequest("BT"), privacy="secagg", sites=sites,
                    out_dir=tmp_path)
    with pytest.raises(ConfigError, match="linear"):
        StudyConfig(study_id="x", glm="linear", cohort=CohortRequest("BT", (), "case-control"), privacy="secagg",
                    sites=sites, out_dir=tmp_path)


@pytest.fixture()
def serve_site(tmp_path: Path) -> Iterator[Callable[[str, Path, Path, Path], str]]:
    """An in-process site agent on a free port; returns its address."""
    servers = []
    # every site these tests start is one of site1, site2, site3: they pin one roster of the three
    roster = provision_roster({n: tmp_path / "agents" / n for n in ("site1", "site2", "site3")},
                              tmp_path / "agents" / "roster.toml")

    def start(name: str, prefix: Path, pheno: Path, covar: Path) -> str:
        config = init_site(name, str(prefix), str(pheno), str(covar), tmp_path / "agents" / name, "127.0.0.1:0",
                           allow_plaintext=True, roster=roster)
        server, port = make_server(load_site_data(load_site_config(config)), "127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None)


def test_site_with_bad_case_control_values_is_bad_input(study, tmp_path, capsys, serve_site) -> None:
    """The remote path: the site finds the bad value itself and refuses; the study exits 2."""
    bad = rewrite_bt(study, tmp_path / "bad.txt", lambda v: "7" if v == "2" else v)
    a = serve_site("site1", study.site_bfiles[0], study.pheno_path, study.covar_path)
    b = serve_site("site2", study.site_bfiles[1], bad, study.covar_path)
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(glm="logistic", extra="", a=a, b=b))
    line = error_line(capsys, fedgwas_main(["run", str(path), "--no-progress"]))
    assert "'site2'" in line and "value 7" in line


def test_results_of_a_site_with_only_cases_add_up(study, tmp_path, capsys, serve_site) -> None:
    """Site 2 keeps only its cases: allowed, the pooled cohort has both; N adds up over the sites."""
    only_cases = rewrite_bt(study, tmp_path / "cases.txt", lambda v: "NA" if v == "1" else v)
    a = serve_site("site1", study.site_bfiles[0], study.pheno_path, study.covar_path)
    b = serve_site("site2", study.site_bfiles[1], only_cases, study.covar_path)
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(glm="logistic", extra="", a=a, b=b))
    assert fedgwas_main(["run", str(path), "--no-progress", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "BT.logistic.summary.json").read_text())
    sizes = {site["name"]: site["n_samples"] for site in summary["sites"]}
    assert 0 < sizes["site2"] < sizes["site1"] and all(site["contributed"] for site in summary["sites"])
    result = read_gwas_ssf(tmp_path / "out" / "BT.logistic.tsv.gz")
    assert len(result["n"]) == 150 and result["n"].max() == sizes["site1"] + sizes["site2"]
    assert np.isfinite(result["beta"]).sum() > 100


def test_gwas_ssf_case_control_columns_round_trip(tmp_path: Path) -> None:
    from coordinator.results.gwas_ssf import CASE_CONTROL_COLUMNS, COLUMNS, write_gwas_ssf
    from engine.stats.association import AssociationResult, VariantTable

    variants = VariantTable(np.array(["1", "1", "2"]), np.array([10, 20, 30]), np.array(["a", "b", "c"]),
                            np.array(["A", "C", "G"]), np.array(["G", "T", "A"]))
    result = AssociationResult(test="logistic", variants=variants, beta=np.array([0.5, np.nan, -1.0]),
                               se=np.array([0.1, np.nan, 0.4]), stat=np.array([5.0, np.nan, -2.5]),
                               neg_log10_p=np.array([6.24, np.nan, 1.9]), n=np.array([100, 100, 90]),
                               effect_allele_count=np.array([20.0, 0.0, 3.0]),
                               errcode=np.array([".", "CONST_OMITTED_ALLELE", "UNFINISHED"]),
                               firth=np.array([False, False, True]))
    path = write_gwas_ssf(result, tmp_path / "BT.logistic.tsv.gz")
    back = read_gwas_ssf(path)
    assert list(back) == [*COLUMNS, *CASE_CONTROL_COLUMNS, "neg_log10_p"]
    np.testing.assert_allclose(back["odds_ratio"], [np.exp(0.5), np.nan, np.exp(-1.0)], rtol=1e-5)
    assert list(back["firth"]) == ["N", "N", "Y"] and list(back["errcode"])[2] == "UNFINISHED"
