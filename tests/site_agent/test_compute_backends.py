"""Federated studies with sites computing on Dask: results equal the in-process path bit for bit.

Three ways a site computes its blocks are run on the same simulated study (2 sites, blocks of 256
variants) and compared exactly, column by column, for linear and logistic regression (logistic's
Newton rounds read the genotypes through the spill store):

* in the agent process, one block at a time (the reference: the path before compute backends);
* a site on a local 2-worker Dask cluster that its agent starts (the other site: in-process threads);
* both sites attached to an external ``dask scheduler`` + ``dask worker`` started here on loopback.

One more run, ``fedgwas local --site-workers 2`` (real agent processes, each with its own cluster),
is compared with PLINK 2 on the pooled data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from fedgwas.cli import main
from coordinator.results.gwas_ssf import read_gwas_ssf
from engine.simulate import SimulatedStudy, SimulationSpec, simulate_study
from site_agent.compute.backend import in_order
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from tests.consortium import provision_sites
from site_agent.server import make_server
from tests.plink_tools import plink2_glm_linear

ROOT = Path(__file__).resolve().parents[2]
COVARIATES = ("SEX_MALE", "AGE", "ANC1")
PHENOTYPE = {"linear": "QT", "logistic": "BT"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SimulatedStudy:
    spec = SimulationSpec(site_sizes=(320, 280), n_variants=2000, seed=15, write_pooled=True)
    return simulate_study(spec, tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="module", autouse=True)
def small_pieces() -> Iterator[None]:
    """Blocks cut into pieces of 48 variants at the in-process agents, as a biobank's blocks are cut (the
    `fedgwas local` test's agent processes keep the default, whole blocks at this size)."""
    from site_agent.compute.settings import ComputeSettings

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ComputeSettings, "chunk_bytes", property(lambda self: 320 * 48))
        yield


@contextmanager
def serving(study: SimulatedStudy, directory: Path, compute: list[dict]) -> Iterator[list[tuple[str, str]]]:
    """In-process site agents (one per site, ``compute[i]`` as init_site's workers/scheduler/threads)."""
    servers, datas, endpoints = [], [], []
    try:
        names = [f"site{index + 1}" for index in range(len(study.site_bfiles))]
        configs = provision_sites(directory, dict(zip(names, study.site_bfiles)), study.pheno_path, study.covar_path,
                                  per_site={name: compute[index] for index, name in enumerate(names)})
        for name, config in configs.items():
            data = load_site_data(load_site_config(config))
            datas.append(data)
            server, port = make_server(data, "127.0.0.1:0")
            server.start()
            servers.append(server)
            endpoints.append((name, f"127.0.0.1:{port}"))
        yield endpoints
    finally:
        for server in servers:
            server.stop(grace=None)
        for data in datas:
            data.close()


def run_study(endpoints: list[tuple[str, str]], directory: Path, model: str) -> dict[str, np.ndarray]:
    sites = "".join(f'[[sites]]\nname = "{n}"\naddress = "{a}"\n\n' for n, a in endpoints)
    path = directory / f"study-{model}.toml"
    path.write_text(f'[study]\nid = "compute-{model}"\n[analysis]\nglm = "{model}"\nphenotype = "{PHENOTYPE[model]}"\n'
                    f'covariates = {json.dumps(list(COVARIATES))}\nblock_size = 256\n[network]\ntimeout_seconds = 120\n'
                    f'[output]\ndir = "out-{model}"\n\n{sites}')
    assert main(["run", str(path), "--no-progress"]) == 0
    return read_gwas_ssf(directory / f"out-{model}" / f"{PHENOTYPE[model]}.{model}.tsv.gz")


def assert_identical(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert ours.keys() == reference.keys()
    for column, values in reference.items():
        if values.dtype.kind == "f":
            assert np.array_equal(ours[column], values, equal_nan=True), column
        else:
            assert list(ours[column]) == list(values), column


@pytest.fixture(scope="module")
def reference(study: SimulatedStudy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """Both models computed in the agent processes, one block at a time."""
    directory = tmp_path_factory.mktemp("inline")
    with serving(study, directory, [{"threads": 1}, {"threads": 1}]) as endpoints:
        return {model: run_study(endpoints, directory, model) for model in PHENOTYPE}


def test_a_site_on_a_local_dask_cluster_gives_the_in_process_results(study, reference, tmp_path, caplog) -> None:
    caplog.set_level("INFO", logger="site_agent")
    with serving(study, tmp_path, [{"workers": 2}, {"threads": 2}]) as endpoints:
        for model in PHENOTYPE:
            assert_identical(run_study(endpoints, tmp_path, model), reference[model])
    tasks = [r.getMessage() for r in caplog.records if "variants in" in r.getMessage()]
    assert any("local dask cluster (2 workers x 1 threads)" in line for line in tasks)
    assert any("inline, 2 threads" in line for line in tasks)
    stores = list((tmp_path / "site1" / "cache").glob("genotypes-*.int8"))
    assert len(stores) == 1, "logistic's rounds read the genotypes through the spill store"
    assert set(stores[0].with_suffix(".loaded").read_bytes()) == {1}, "every variant was stored by the workers"
    assert stores[0].stat().st_size % 2000 == 0 and 300 < stores[0].stat().st_size // 2000 <= 320


@contextmanager
def external_cluster(directory: Path, workers: int) -> Iterator[str]:
    """``dask scheduler --port 0`` and ``dask worker`` processes on loopback, run from another directory."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler_file = directory / "scheduler.json"
    processes = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], cwd=directory, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and processes[0].poll() is None, "dask scheduler did not start"
            time.sleep(0.05)
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", str(workers), "--nthreads",
             "1", "--host", "127.0.0.1", "--no-dashboard"], cwd=directory, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


def test_sites_attached_to_an_external_scheduler_give_the_in_process_results(study, reference, tmp_path,
                                                                              caplog) -> None:
    caplog.set_level("INFO", logger="site_agent")
    (tmp_path / "cluster").mkdir()
    with external_cluster(tmp_path / "cluster", workers=2) as address:
        with serving(study, tmp_path, [{"scheduler": address}, {"scheduler": address}]) as endpoints:
            for model in PHENOTYPE:
                assert_identical(run_study(endpoints, tmp_path, model), reference[model])
    tasks = [r.getMessage() for r in caplog.records if "variants in" in r.getMessage()]
    assert tasks and all(f"dask cluster at {address}" in line for line in tasks)


def test_local_with_site_workers_equals_plink2(study, tmp_path) -> None:
    """``fedgwas local --site-workers 2``: two agent processes, each with a 2-worker cluster, against PLINK 2."""
    argv = [a for bfile in study.site_bfiles for a in ("--bfile", str(bfile))]
    assert main(["local", *argv, "--pheno", str(study.pheno_path), "--pheno-name", "QT", "--covar",
                 str(study.covar_path), "--covar-name", ",".join(COVARIATES), "--glm", "linear", "--block-size",
                 "256", "--out", str(tmp_path / "out"), "--no-progress", "--site-workers", "2"]) == 0
    for site in ("site1", "site2"):
        log = (tmp_path / "out" / "sites" / site / "agent.log").read_text()
        assert "compute local dask cluster (2 workers x 1 threads)" in log
    ours = read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz")
    ref = plink2_glm_linear(study.pooled_bfile, study.pheno_path, "QT", study.covar_path, COVARIATES, tmp_path)
    assert list(ours["variant_id"]) == list(ref["ID"])
    np.testing.assert_array_equal(ours["n"], ref["OBS_CT"])
    ok = np.isfinite(ref["P"])
    assert ok.sum() > 1900 and np.array_equal(np.isfinite(ours["beta"]), ok)
    assert (np.abs(ours["beta"][ok] - ref["BETA"][ok]) / ref["SE"][ok]).max() < 1e-4
    assert np.abs(ours["neg_log10_p"][ok] + np.log10(ref["P"][ok])).max() < 1e-4


def test_blocks_in_flight_are_bounded_and_cancelled_when_the_consumer_stops() -> None:
    submitted: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        def submit(job: int):
            submitted.append(job)
            return pool.submit(lambda: np.full(1, job))
        futures: list = []
        results = in_order(lambda job: futures.append(submit(job)) or futures[-1], iter(range(100)), 4,
                           lambda future: future.result(), lambda future: future.cancel())
        assert [int(next(results)[0]) for _ in range(3)] == [0, 1, 2]
        assert len(submitted) == 6, "at most 4 blocks in flight beyond those consumed"
        results.close()
        assert all(future.done() for future in futures)
    assert len(submitted) == 6


def test_an_unreachable_scheduler_is_a_config_error_naming_the_key(monkeypatch) -> None:
    import socket

    from engine.errors import ConfigError
    from site_agent.compute import dask_backend
    from site_agent.compute.settings import ComputeSettings

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(dask_backend, "CONNECT_TIMEOUT_SECONDS", 1)
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ConfigError, match=rf"\[compute\] scheduler '{address}': cannot connect"):
        dask_backend.DaskBackend(ComputeSettings(backend="dask", scheduler=address))


def test_the_local_cluster_admits_only_the_agent() -> None:
    """The agent's cluster carries phenotypes and covariates: its scheduler speaks mutual TLS under a CA
    that only the agent holds, so another process on the machine cannot join it."""
    import asyncio
    import ssl

    from distributed.comm import connect

    from site_agent.compute.dask_backend import DaskBackend
    from site_agent.compute.settings import ComputeSettings

    async def handshake(address: str, **connection_args: object) -> None:
        # What a Client does first, without its own event-loop thread (whose start can time out under load).
        comm = await connect(address, timeout=5, **connection_args)
        await comm.write({"op": "identity"})
        await comm.read()

    # A TLS client that accepts any server but has no certificate of its own: only the scheduler's
    # demand for a client certificate from the agent's CA can refuse it.
    anonymous = ssl.create_default_context()
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    backend = DaskBackend(ComputeSettings(backend="dask", workers=1))
    try:
        assert backend.scheduler_address.startswith("tls://127.0.0.1:")
        with pytest.raises(OSError):  # no certificate from the agent's CA
            asyncio.run(handshake(backend.scheduler_address, ssl_context=anonymous))
        plain = backend.scheduler_address.replace("tls://", "tcp://")
        with pytest.raises(OSError):  # not TLS at all
            asyncio.run(handshake(plain))
    finally:
        backend.close()
