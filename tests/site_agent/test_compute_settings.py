"""``[compute]`` of site.toml, ``fedgwas-site init --workers/--scheduler`` and ``fedgwas local
--site-workers/--dask-scheduler``: what each writes, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgwas.cli import main as fedgwas_main
from engine.errors import ConfigError
from engine.simulate import SimulatedStudy, SimulationSpec, simulate_study
from site_agent.cli import main as site_main
from site_agent.compute.settings import available_cores
from site_agent.config import load_site_config
from site_agent.provision import init_site


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedStudy:
    return simulate_study(SimulationSpec(site_sizes=(40, 40), n_variants=50, seed=3, write_pooled=False),
                          tmp_path_factory.mktemp("sim"))


def config_with(study: SimulatedStudy, directory: Path, compute: str) -> Path:
    path = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), None, directory, "127.0.0.1:0")
    path.write_text(path.read_text() + f"\n[compute]\n{compute}\n")
    return path


def test_without_compute_keys_blocks_are_computed_in_the_agent(study, tmp_path) -> None:
    settings = load_site_config(init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), None,
                                          tmp_path, "127.0.0.1:0")).compute
    assert settings.backend == "inline" and settings.spill_dir == (tmp_path / "cache").resolve()


@pytest.mark.parametrize("compute, backend, workers, threads, scheduler", [
    ("workers = 2", "dask", 2, 1, None),
    ("workers = 3\nthreads_per_worker = 2", "dask", 3, 2, None),
    ('workers = "auto"', "dask", available_cores(), 1, None),
    ("workers = 0", "inline", 0, 1, None),
    ('backend = "inline"', "inline", 0, 1, None),
    ('scheduler = "tcp://10.0.0.5:8786"', "dask", 0, 1, "tcp://10.0.0.5:8786"),
    ('backend = "dask"\nworkers = 1', "dask", 1, 1, None),
])
def test_compute_keys(study, tmp_path, compute, backend, workers, threads, scheduler) -> None:
    settings = load_site_config(config_with(study, tmp_path, compute)).compute
    assert (settings.backend, settings.workers, settings.threads_per_worker, settings.scheduler) == \
        (backend, workers, threads, scheduler)


@pytest.mark.parametrize("compute, message", [
    ("workers = -1", "[compute] workers must be an integer >= 0 or \"auto\", got -1"),
    ('workers = "many"', "[compute] workers must be an integer >= 0 or \"auto\", got 'many'"),
    ("workers = true", "[compute] workers must be an integer >= 0"),
    ('scheduler = "10.0.0.5:8786"', "[compute] scheduler must be a Dask scheduler address \"tcp://host:port\", "
                                    "got '10.0.0.5:8786'"),
    ('scheduler = "tls://10.0.0.5:8786"', "[compute] scheduler must be a Dask scheduler address"),
    ('scheduler = "tcp://h:1"\nworkers = 2', "[compute] scheduler and [compute] workers exclude each other"),
    ('scheduler = "tcp://h:1"\nthreads_per_worker = 2', "[compute] threads_per_worker applies to a local cluster"),
    ("workers = 2\nthreads_per_worker = 0", "[compute] threads_per_worker must be an integer >= 1, got 0"),
    ("threads_per_worker = 2", "[compute] threads_per_worker needs [compute] workers >= 1"),
    ('backend = "spark"', "[compute] backend must be one of ['inline', 'dask'], got 'spark'"),
    ('backend = "inline"\nworkers = 2', "[compute] backend = \"inline\" cannot be combined with workers = 2"),
    ('backend = "dask"', "[compute] backend = \"dask\" needs [compute] workers >= 1"),
    ("worker = 2", "[compute] worker: unknown key"),
    ("spill_dir = 3", "[compute] spill_dir must be a path (string), got 3"),
])
def test_compute_errors_name_the_key(study, tmp_path, compute, message) -> None:
    path = config_with(study, tmp_path, compute)
    with pytest.raises(ConfigError) as error:
        load_site_config(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_site_init_writes_a_machine_sized_cluster_by_default(study, tmp_path, capsys) -> None:
    base = ["init", "--name", "site1", "--bfile", str(study.site_bfiles[0]), "--pheno", str(study.pheno_path),
            "--insecure"]
    assert site_main([*base, "--dir", str(tmp_path / "a")]) == 0
    assert load_site_config(tmp_path / "a" / "site.toml").compute.workers == available_cores()
    assert site_main([*base, "--dir", str(tmp_path / "b"), "--workers", "2"]) == 0
    assert load_site_config(tmp_path / "b" / "site.toml").compute.workers == 2
    assert site_main([*base, "--dir", str(tmp_path / "c"), "--workers", "0"]) == 0
    assert load_site_config(tmp_path / "c" / "site.toml").compute.backend == "inline"
    assert site_main([*base, "--dir", str(tmp_path / "d"), "--scheduler", "tcp://127.0.0.1:8786"]) == 0
    assert load_site_config(tmp_path / "d" / "site.toml").compute.scheduler == "tcp://127.0.0.1:8786"
    capsys.readouterr()
    assert site_main([*base, "--dir", str(tmp_path / "e"), "--scheduler", "127.0.0.1:8786"]) == 2
    assert "--scheduler must be a Dask scheduler address \"tcp://host:port\", got '127.0.0.1:8786'" in \
        capsys.readouterr().err
    assert site_main([*base, "--dir", str(tmp_path / "f"), "--workers", "two"]) == 2
    assert "--workers must be a number >= 0 or auto, got 'two'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


def test_local_compute_options_are_checked_before_any_site_starts(study, tmp_path, capsys) -> None:
    argv = ["local", "--bfile", str(study.site_bfiles[0]), "--bfile", str(study.site_bfiles[1]), "--pheno",
            str(study.pheno_path), "--pheno-name", "QT", "--out", str(tmp_path / "out"), "--no-progress"]
    assert fedgwas_main([*argv, "--dask-scheduler", "localhost"]) == 2
    assert "--dask-scheduler must be a Dask scheduler address \"tcp://host:port\", got 'localhost'" in \
        capsys.readouterr().err
    assert fedgwas_main([*argv, "--site-workers", "-1"]) == 2
    assert "--site-workers must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out" / "sites").exists()
