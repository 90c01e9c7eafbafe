"""One study builder: ``fedgwas local``'s flags and a study TOML give the same ``StudyConfig``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from coordinator.client import SiteEndpoint
from coordinator.study_file import load_study
from engine.errors import ConfigError
from fedgwas.cli import _local_plan, _parser
from fedgwas.local import LOCAL_COORDINATOR
from fedgwas.study_args import local_study, study_tables, with_endpoints
from engine.io.tables import expand_names
from protos.pki import TlsFiles

SITES = (SiteEndpoint("site1", "127.0.0.1:5001"), SiteEndpoint("site2", "127.0.0.1:5002"))


def _from_flags(tmp_path: Path, *flags: str):
    args = _parser().parse_args(["local", "--bfile", "a", "--bfile", "b", "--out", str(tmp_path / "out"), *flags])
    covariates = expand_names(args.covar_name) if args.covar_name else []
    qc = _local_plan(args, covariates)
    tables = study_tables(args, covariates, qc, tmp_path / "out")
    tls = TlsFiles(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "c.key")
    return local_study(with_endpoints(tables, SITES, tls, ""), tmp_path / "out")


def _from_file(tmp_path: Path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text + "".join(f'\n[[sites]]\nname = "{s.name}"\naddress = "{s.address}"\n' for s in SITES))
    return load_study(path, tmp_path / "out")


TLS = '[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "c.key"\n'


def test_flags_and_study_file_build_the_same_study(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("rs1 rs2\n")
    flags = _from_flags(tmp_path, "--pheno", "p.txt", "--pheno-name", "BT", "--glm", "firth", "--1",
                        "--covar", "c.txt", "--covar-name", "AGE,PC1-PC3", "--pca", "3", "--indep-pairwise", "50",
                        "5", "0.2", "--freq", "--hwe", "1e-6", "midp", "--maf", "0.05", "--study-id", "s1",
                        "--purpose", "hmb", "--genome-build", "GRCh38", "--xchr-model", "0", "--no-x-sex",
                        "--extract", str(tmp_path / "ids.txt"), "--min-sites", "2", "--allow-dropout")
    study = _from_file(tmp_path, f"""
[study]
id = "s1"
requester = "{LOCAL_COORDINATOR}"
purpose = "HMB"
genome_build = "GRCh38"
[analysis]
glm = "firth"
phenotype = "BT"
case_control = "0/1"
covariates = ["AGE", "PC1", "PC2", "PC3"]
xchr_model = 0
x_sex = false
extract = "ids.txt"
[privacy]
allow_dropout = true
[qc]
outputs = ["freq"]
maf = 0.05
hwe = 1e-6
hwe_midp = true
[pca]
components = 3
[ld_prune]
window = 50
step = 5
r2 = 0.2
{TLS}""")
    assert flags == study
    assert flags.cohort.phenotype_coding == "case-control-01" and flags.extract == ("rs1", "rs2")


def test_flags_and_study_file_agree_on_the_default_model(tmp_path: Path) -> None:
    flags = _from_flags(tmp_path, "--pheno", "p.txt", "--pheno-name", "QT", "--covar", "c.txt", "--covar-name", "AGE")
    study = _from_file(tmp_path, f'[study]\nid = "local-study"\nrequester = "{LOCAL_COORDINATOR}"\n'
                                 f'[analysis]\nphenotype = "QT"\ncovariates = "AGE"\n{TLS}')
    assert flags.glm == study.glm == "linear"
    assert dataclasses.replace(flags, show_progress=True) == study


@pytest.mark.parametrize("text, key", [
    ('[study]\nid = "s"\nphenotpye = "QT"\n[analysis]\nphenotype = "QT"\n', "phenotpye"),
    ('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\ncovariate = ["AGE"]\n', "covariate"),
    ('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\n[privacy]\nmode = "secagg"\nthreshhold = 2\n', "threshhold"),
    ('[study]\nid = "s"\n[analysis]\nphenotype = "QT"\n[analysys]\nglm = "linear"\n', "analysys"),
])
def test_a_misspelt_key_is_refused_with_its_name(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"study.toml.*unknown.*{key}"):
        _from_file(tmp_path, text)
