"""`fedgwas run STUDY.toml` against already-running site agents, and the documented study example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from coordinator.study_file import load_study
from engine.simulate import SimulationSpec, simulate_study
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from tests.consortium import provision_sites
from site_agent.server import make_server

ROOT = Path(__file__).resolve().parents[2]


def test_documented_study_example_is_valid() -> None:
    config = load_study(ROOT / "docs" / "study-example.toml")
    assert config.cohort.covariates == ("SEX_MALE", "AGE", "PC1", "PC2", "PC3", "PC4")
    assert [s.name for s in config.sites] == ["hospital-a", "biobank-b", "cohort-c"]
    assert config.privacy == "secagg" and config.out_dir == ROOT / "docs" / "results"


@pytest.fixture
def running_sites(tmp_path: Path):
    study = simulate_study(SimulationSpec(site_sizes=(150, 130), n_variants=500, seed=9, write_pooled=True),
                           tmp_path / "sim")
    servers, endpoints = [], []
    configs = provision_sites(tmp_path, {f"hosp{i + 1}": b for i, b in enumerate(study.site_bfiles)},
                              study.pheno_path, study.covar_path)
    for name, config in configs.items():
        server, port = make_server(load_site_data(load_site_config(config)), "127.0.0.1:0")
        server.start()
        servers.append(server)
        endpoints.append((name, f"127.0.0.1:{port}"))
    yield study, endpoints
    for server in servers:
        server.stop(grace=None)


def test_run_study_file_against_running_agents(running_sites, tmp_path: Path, capsys) -> None:
    study, endpoints = running_sites
    sites = "".join(f'[[sites]]\nname = "{n}"\naddress = "{a}"\n\n' for n, a in endpoints)
    path = tmp_path / "study.toml"
    path.write_text(f"""
[study]
id = "run-test"
[analysis]
phenotype = "QT"
covariates = ["SEX_MALE", "AGE", "ANC1"]
[network]
timeout_seconds = 60
[output]
dir = "out"

{sites}""")
    assert main(["run", str(path), "--no-progress"]) == 0
    assert "2 sites (hosp1, hosp2)" in capsys.readouterr().out
    results = read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz")
    assert len(results["variant_id"]) == 500
    assert np.isfinite(results["beta"]).sum() > 450


def test_demo_runs_end_to_end_with_real_site_processes(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative --out, as the README's `fedgwas demo` uses
    out = tmp_path / "demo"
    assert main(["demo", "--out", "demo", "--samples", "300", "--variants", "3000", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 sites (site1, site2, site3)" in printed and "secure aggregation" in printed
    for name in ("QT.linear.tsv.gz", "QT.linear.tsv.gz-meta.yaml", "QT.linear.manhattan.png", "QT.linear.qq.png",
                 "QT.linear.report.html", "QT.linear.summary.json"):
        assert (out / name).stat().st_size > 0
    # Each site's directory holds only its own samples' phenotype rows.
    rows = [len((out / "sites" / s / "pheno.txt").read_text().splitlines()) - 1 for s in ("site1", "site2", "site3")]
    assert rows == [300, 300, 300]
    causal = {line.split()[0] for line in (out / "data" / "causal.txt").read_text().splitlines()[1:]}
    results = read_gwas_ssf(out / "QT.linear.tsv.gz")
    top = set(results["variant_id"][np.argsort(-results["neg_log10_p"])[:10]])
    assert top & causal, "the strongest hits should include simulated causal variants"


def test_study_file_with_several_phenotypes_and_dosage_qc(tmp_path: Path) -> None:
    """``[analysis] phenotype`` as a list (ranges expanded, as --pheno-name), and ``[qc] mach_r2_filter``."""
    from engine.errors import ConfigError

    sites = '[[sites]]\nname = "a"\naddress = "x:1"\n[[sites]]\nname = "b"\naddress = "y:1"\n'
    path = tmp_path / "study.toml"
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = ["LDL", "Y1-Y3"]\n'
                    '[qc]\noutputs = ["freq-machr2"]\nmach_r2_filter = [0.3]\n' + sites)
    config = load_study(path)
    assert config.cohort.phenotypes == ("LDL", "Y1", "Y2", "Y3") and config.glm == "linear"
    assert config.qc.mach_r2 == (0.3, 2.0) and config.qc.outputs == ("freq-machr2",)
    assert [model for model, _ in config.model_cohorts()] == ["linear"]
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = ["LDL", "LDL"]\n' + sites)
    with pytest.raises(ConfigError, match="repeats a name"):
        load_study(path)
    path.write_text('[study]\nid = "s"\n[analysis]\nphenotype = ["A", "B"]\nassoc = true\nglm = "none"\n' + sites)
    with pytest.raises(ConfigError, match="allelic test .* takes one phenotype"):
        load_study(path)
