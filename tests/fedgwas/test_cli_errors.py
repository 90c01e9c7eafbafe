"""User errors through the real command lines: one clear line naming the file, field or site.

Each case calls ``main([...])`` of ``fedgwas`` or ``fedgwas-site`` directly and checks the exit code
(2 bad input or configuration, 3 a site failed or could not be reached) and that stderr is exactly one
line, ``<prog>: error: ...``, naming what is wrong, with no traceback. Input errors are caught before
any site-agent process starts; cases that need a site to answer use in-process agents on port 0.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from fedgwas.cli import main as fedgwas_main
from coordinator.client import SiteClient, SiteEndpoint
from engine.io.bed_writer import write_bim
from engine.errors import SiteFailure, StudyFailed
from engine.io.plink import bfile_paths, read_bim
from engine.simulate import SimulatedStudy, SimulationSpec, simulate_study
from engine.tasks import CohortRequest
from site_agent.provision import init_site
from fedgwas.site_command import main as site_main
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.server import make_server


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedStudy:
    """Two small simulated sites (60 samples each, 200 variants); tests copy before they break anything."""
    spec = SimulationSpec(site_sizes=(60, 60), n_variants=200, seed=11, write_pooled=False)
    return simulate_study(spec, tmp_path_factory.mktemp("sim"))


def copy_bfile(prefix: Path, directory: Path) -> Path:
    """Copy a .bed/.bim/.fam fileset into ``directory``; returns the new prefix."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in bfile_paths(prefix):
        shutil.copy(path, directory / path.name)
    return directory / Path(prefix).name


def error_line(capsys: pytest.CaptureFixture[str], code: int, expected_code: int, prog: str = "fedgwas") -> str:
    """Assert the exit code and a one-line, traceback-free error on stderr; returns that line."""
    captured = capsys.readouterr()
    assert code == expected_code, captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


def local_argv(study: SimulatedStudy, out: Path, *, bfiles: tuple[Path, ...] | None = None,
               pheno: Path | None = None, pheno_name: str = "QT", extra: tuple[str, ...] = ()) -> list[str]:
    argv = ["local"]
    for prefix in study.site_bfiles if bfiles is None else bfiles:
        argv += ["--bfile", str(prefix)]
    argv += ["--pheno", str(pheno or study.pheno_path), "--pheno-name", pheno_name, "--glm", "linear",
             "--privacy", "plaintext", "--out", str(out), "--no-progress", *extra]
    return argv


def run_local(capsys: pytest.CaptureFixture[str], study: SimulatedStudy, tmp_path: Path, **kwargs: object) -> str:
    """``fedgwas local`` on (possibly broken) inputs: must exit 2 with one line; returns that line."""
    code = fedgwas_main(local_argv(study, tmp_path / "out", **kwargs))  # type: ignore[arg-type]
    return error_line(capsys, code, 2)


# --- genotype filesets (fedgwas local) -------------------------------------------------------------

def test_missing_bed_file(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[1], tmp_path / "broken")
    Path(f"{broken}.bed").unlink()
    line = run_local(capsys, study, tmp_path, bfiles=(study.site_bfiles[0], broken))
    assert f"{broken}.bed" in line and "does not exist" in line


def test_missing_fam_file(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[0], tmp_path / "broken")
    Path(f"{broken}.fam").unlink()
    line = run_local(capsys, study, tmp_path, bfiles=(broken, study.site_bfiles[1]))
    assert f"{broken}.fam" in line and "does not exist" in line


def test_truncated_bed(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[1], tmp_path / "broken")
    bed = Path(f"{broken}.bed")
    bed.write_bytes(bed.read_bytes()[:-7])
    line = run_local(capsys, study, tmp_path, bfiles=(study.site_bfiles[0], broken))
    assert str(bed) in line and "truncated" in line


def test_bed_size_does_not_match_bim(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[0], tmp_path / "broken")
    bim = Path(f"{broken}.bim")
    bim.write_text(bim.read_text() + "22\textra_variant\t0\t99999999\tA\tG\n")
    line = run_local(capsys, study, tmp_path, bfiles=(broken, study.site_bfiles[1]))
    assert f"{broken}.bed" in line and "201 variants" in line and "site1.bim" in line


def test_bed_with_wrong_magic_bytes(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[0], tmp_path / "broken")
    bed = Path(f"{broken}.bed")
    bed.write_bytes(b"\x00\x00\x00" + bed.read_bytes()[3:])
    line = run_local(capsys, study, tmp_path, bfiles=(broken, study.site_bfiles[1]))
    assert str(bed) in line and "magic" in line


def test_truncated_fam(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[0], tmp_path / "broken")
    fam = Path(f"{broken}.fam")
    fam.write_text(fam.read_text().rstrip("\n")[:-5] + "\n")  # the last line loses its final columns
    line = run_local(capsys, study, tmp_path, bfiles=(broken, study.site_bfiles[1]))
    assert str(fam) in line and "line 60" in line and "expected 6 columns" in line


def test_bim_with_non_integer_position(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[1], tmp_path / "broken")
    bim = Path(f"{broken}.bim")
    rows = [line.split("\t") for line in bim.read_text().splitlines()]
    rows[2][3] = "12x45"
    bim.write_text("".join("\t".join(row) + "\n" for row in rows))
    line = run_local(capsys, study, tmp_path, bfiles=(study.site_bfiles[0], broken))
    assert str(bim) in line and "line 3" in line and "'12x45'" in line


def test_fewer_than_two_sites(study, tmp_path, capsys) -> None:
    line = run_local(capsys, study, tmp_path, bfiles=(study.site_bfiles[0],))
    assert "at least two" in line and "--bfile" in line


# --- phenotype and covariate files (fedgwas local) -------------------------------------------------

def test_missing_pheno_file(study, tmp_path, capsys) -> None:
    missing = tmp_path / "no-such-pheno.txt"
    line = run_local(capsys, study, tmp_path, pheno=missing)
    assert str(missing) in line and "does not exist" in line


def test_pheno_with_bad_header(study, tmp_path, capsys) -> None:
    pheno = tmp_path / "pheno.txt"
    pheno.write_text("#SAMPLE\tQT\ns1_000001\t1.5\n")
    line = run_local(capsys, study, tmp_path, pheno=pheno)
    assert str(pheno) in line and "'#SAMPLE'" in line and "#FID IID" in line


def test_pheno_with_ragged_row(study, tmp_path, capsys) -> None:
    pheno = tmp_path / "pheno.txt"
    lines = study.pheno_path.read_text().splitlines()
    lines[4] = lines[4].rsplit("\t", 1)[0]
    pheno.write_text("\n".join(lines) + "\n")
    line = run_local(capsys, study, tmp_path, pheno=pheno)
    assert str(pheno) in line and "line 5" in line and "expected 4 columns, found 3" in line


def test_pheno_with_duplicate_samples(study, tmp_path, capsys) -> None:
    pheno = tmp_path / "pheno.txt"
    lines = study.pheno_path.read_text().splitlines()
    pheno.write_text("\n".join(lines + [lines[3]]) + "\n")
    line = run_local(capsys, study, tmp_path, pheno=pheno)
    assert str(pheno) in line and "more than once" in line


def test_unknown_phenotype_name(study, tmp_path, capsys) -> None:
    line = run_local(capsys, study, tmp_path, pheno_name="QTT")
    assert "'QTT'" in line and str(study.pheno_path) in line and "available: QT, BT" in line


def test_unknown_covariate_name(study, tmp_path, capsys) -> None:
    line = run_local(capsys, study, tmp_path, extra=("--covar", str(study.covar_path), "--covar-name", "AGE,PC1-PC2"))
    assert "'PC1'" in line and str(study.covar_path) in line and "AGE" in line


def test_non_numeric_phenotype_value(study, tmp_path, capsys) -> None:
    pheno = tmp_path / "pheno.txt"
    lines = study.pheno_path.read_text().splitlines()
    fields = lines[7].split("\t")
    fields[2] = "high"
    lines[7] = "\t".join(fields)
    pheno.write_text("\n".join(lines) + "\n")
    line = run_local(capsys, study, tmp_path, pheno=pheno)
    assert str(pheno) in line and "data row 7" in line and "'QT'" in line and "'high'" in line


def test_non_numeric_covariate_value(study, tmp_path, capsys) -> None:
    covar = tmp_path / "covar.txt"
    lines = study.covar_path.read_text().splitlines()
    header = lines[0].split("\t")
    fields = lines[2].split("\t")
    fields[header.index("AGE")] = "forty"
    lines[2] = "\t".join(fields)
    covar.write_text("\n".join(lines) + "\n")
    line = run_local(capsys, study, tmp_path, extra=("--covar", str(covar), "--covar-name", "SEX_MALE,AGE"))
    assert str(covar) in line and "'AGE'" in line and "'forty'" in line


def test_covar_name_without_covar_file(study, tmp_path, capsys) -> None:
    line = run_local(capsys, study, tmp_path, extra=("--covar-name", "AGE"))
    assert "--covar-name" in line and "--covar" in line


# --- study TOML (fedgwas run) ----------------------------------------------------------------------

STUDY_TOML = """\
[study]
id = "errors"

[analysis]
glm = "linear"
phenotype = "QT"
covariates = ["SEX_MALE", "AGE"]
block_size = 64

[privacy]
mode = "secagg"

[network]
timeout_seconds = 5

[output]
dir = "results"
"""


def sites_toml(*sites: tuple[str, str]) -> str:
    return "".join(f'\n[[sites]]\nname = "{name}"\naddress = "{address}"\n' for name, address in sites)


TWO_SITES = sites_toml(("site-a", "127.0.0.1:1"), ("site-b", "127.0.0.1:2"))


def run_study_file(capsys: pytest.CaptureFixture[str], path: Path, text: str, expected_code: int = 2) -> str:
    path.write_text(text)
    return error_line(capsys, fedgwas_main(["run", str(path), "--no-progress"]), expected_code)


def test_study_file_missing(tmp_path, capsys) -> None:
    path = tmp_path / "nope.toml"
    line = error_line(capsys, fedgwas_main(["run", str(path), "--no-progress"]), 2)
    assert str(path) in line and "does not exist" in line


def test_study_file_not_toml(tmp_path, capsys) -> None:
    path = tmp_path / "study.toml"
    line = run_study_file(capsys, path, "[study\nid = 1\n")
    assert str(path) in line and "not valid TOML" in line


def test_study_missing_key(tmp_path, capsys) -> None:
    path = tmp_path / "study.toml"
    line = run_study_file(capsys, path, STUDY_TOML.replace('phenotype = "QT"\n', "") + TWO_SITES)
    assert str(path) in line and "[analysis]" in line and "'phenotype'" in line


def test_study_site_missing_address(tmp_path, capsys) -> None:
    path = tmp_path / "study.toml"
    text = STUDY_TOML + sites_toml(("site-a", "127.0.0.1:1")) + '\n[[sites]]\nname = "site-b"\n'
    line = run_study_file(capsys, path, text)
    assert str(path) in line and "[[sites]] #2" in line and "'address'" in line


def test_study_wrong_type(tmp_path, capsys) -> None:
    path = tmp_path / "study.toml"
    line = run_study_file(capsys, path, STUDY_TOML.replace("block_size = 64", 'block_size = "big"') + TWO_SITES)
    assert str(path) in line and "block_size" in line and "'big'" in line and "wrong type" in line


def test_study_unknown_privacy_mode(tmp_path, capsys) -> None:
    path = tmp_path / "study.toml"
    line = run_study_file(capsys, path, STUDY_TOML.replace('mode = "secagg"', 'mode = "homomorphic"') + TWO_SITES)
    assert str(path) in line and "'homomorphic'" in line and "secagg" in line


def test_study_with_one_site(tmp_path, capsys) -> None:
    path = tmp_path / "study.toml"
    line = run_study_file(capsys, path, STUDY_TOML + sites_toml(("site-a", "127.0.0.1:1")))
    assert str(path) in line and "at least two sites" in line and "got 1" in line


def test_unreachable_sites_exit_3_naming_the_site(tmp_path, capsys) -> None:
    line = run_study_file(capsys, tmp_path / "study.toml", STUDY_TOML + TWO_SITES, expected_code=3)
    assert "'site-a'" in line and "127.0.0.1:1" in line and "unreachable" in line
    assert "'site-b'" in line and "127.0.0.1:2" in line


# --- studies that sites answer (in-process agents on port 0) ---------------------------------------

@pytest.fixture()
def serve_site(tmp_path: Path) -> Iterator[Callable[[str, Path, SimulatedStudy], str]]:
    """Start an in-process site agent on a free port for a fileset; returns its address."""
    servers = []

    def start(name: str, prefix: Path, study: SimulatedStudy) -> str:
        config = init_site(name, str(prefix), str(study.pheno_path), str(study.covar_path),
                           tmp_path / "agents" / name, "127.0.0.1:0")
        server, port = make_server(load_site_data(load_site_config(config)), "127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None)


def test_sites_with_no_variants_in_common(study, tmp_path, capsys, serve_site) -> None:
    shifted = copy_bfile(study.site_bfiles[1], tmp_path / "shifted")
    bim = read_bim(Path(f"{shifted}.bim"))
    write_bim(f"{shifted}.bim", bim.chrom, bim.variant_id, bim.pos + 1, bim.allele1, bim.allele2)
    text = STUDY_TOML + sites_toml(("site1", serve_site("site1", study.site_bfiles[0], study)),
                                   ("site2", serve_site("site2", shifted, study)))
    line = run_study_file(capsys, tmp_path / "study.toml", text)
    assert "no variants in common" in line and "'site1'" in line and "'site2'" in line
    assert "200 variants share" in line  # the hint: matching by ID would have found them


def test_site_refusal_is_marked_as_bad_request(study, serve_site) -> None:
    """What the CLI's exit code rests on: a site refusing a request is told apart from a site that is down."""
    address = serve_site("site1", study.site_bfiles[0], study)
    client = SiteClient(SiteEndpoint("site1", address), timeout=5)
    try:
        with pytest.raises(SiteFailure, match="column 'QTT' not found") as refused:
            client.describe("errors", CohortRequest("QTT"))
    finally:
        client.close()
    assert refused.value.refused and refused.value.bad_request
    assert StudyFailed("both refused", failures=(refused.value, refused.value)).bad_request
    down = SiteFailure("site2", "unreachable at 127.0.0.1:2", kind="UNAVAILABLE", transient=True)
    assert not down.bad_request and not StudyFailed("mixed", failures=(refused.value, down)).bad_request
    assert not StudyFailed("no site failure recorded").bad_request


def test_site_refusing_an_unknown_phenotype_is_bad_input(study, tmp_path, capsys, serve_site) -> None:
    text = STUDY_TOML.replace('phenotype = "QT"', 'phenotype = "QTT"') + sites_toml(
        ("site1", serve_site("site1", study.site_bfiles[0], study)),
        ("site2", serve_site("site2", study.site_bfiles[1], study)))
    line = run_study_file(capsys, tmp_path / "study.toml", text)
    assert "'site1'" in line and "column 'QTT' not found" in line


# --- fedgwas-site check ----------------------------------------------------------------------------

def test_site_check_truncated_bed(study, tmp_path, capsys) -> None:
    broken = copy_bfile(study.site_bfiles[0], tmp_path / "broken")
    bed = Path(f"{broken}.bed")
    bed.write_bytes(bed.read_bytes()[:100])
    config = init_site("site1", str(broken), str(study.pheno_path), None, tmp_path / "site", "127.0.0.1:0")
    capsys.readouterr()
    line = error_line(capsys, site_main(["check", "--config", str(config)]), 2, prog="fedgwas-site")
    assert str(bed) in line and "truncated" in line


def test_site_check_config_missing_key(study, tmp_path, capsys) -> None:
    config = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), None, tmp_path / "site",
                       "127.0.0.1:0")
    config.write_text("\n".join(line for line in config.read_text().splitlines() if not line.startswith("pheno")))
    line = error_line(capsys, site_main(["check", "--config", str(config)]), 2, prog="fedgwas-site")
    assert str(config) in line and "[data]: missing key 'pheno'" in line


def test_site_check_negative_genotype_cache(study, tmp_path, capsys) -> None:
    config = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), None, tmp_path / "site",
                       "127.0.0.1:0")
    config.write_text(config.read_text() + "\n[compute]\ngenotype_cache_mib = -1\n")
    line = error_line(capsys, site_main(["check", "--config", str(config)]), 2, prog="fedgwas-site")
    assert str(config) in line and "[compute] genotype_cache_mib must be >= 0, got -1" in line


def test_site_check_missing_pheno_file(study, tmp_path, capsys) -> None:
    missing = tmp_path / "gone.txt"
    config = init_site("site1", str(study.site_bfiles[0]), str(missing), None, tmp_path / "site", "127.0.0.1:0")
    line = error_line(capsys, site_main(["check", "--config", str(config)]), 2, prog="fedgwas-site")
    assert str(missing) in line and "does not exist" in line
