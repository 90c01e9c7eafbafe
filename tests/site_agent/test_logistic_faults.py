"""A site that crashes in the middle of an iterative logistic fit.

Earlier rounds summed over a cohort that included the lost site, so with ``allow_dropout`` the
coordinator restarts the whole fit without it; the result must equal a clean study of the others.
"""

from __future__ import annotations

from concurrent import futures
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from coordinator.client import SiteEndpoint
from coordinator.runner import run_study
from coordinator.study import StudyConfig
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.provision import init_site
from site_agent.servicer import SiteAgentServicer

COHORT = CohortRequest("BT", ("SEX_MALE", "AGE"), "case-control")


class CrashesInANewtonRound(SiteAgentServicer):
    """Crashes (UNAVAILABLE) in its first ``logistic`` round, after streaming part of it."""

    def __init__(self, data) -> None:
        super().__init__(data)
        self.seen: list[str] = []

    def RunTask(self, request_iterator, context) -> Iterator[pb.TaskEvent]:
        first = next(request_iterator)
        self.seen.append(first.header.analysis)

        def replay():
            yield first
            yield from request_iterator

        for message in super().RunTask(replay(), context):
            yield message
            if first.header.analysis == "logistic" and message.WhichOneof("payload") == "chunk":
                context.abort(grpc.StatusCode.UNAVAILABLE, "site process crashed")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return simulate_study(SimulationSpec(site_sizes=(150, 130, 120), n_variants=300, seed=9, write_pooled=False),
                          tmp_path_factory.mktemp("sim"))


@pytest.fixture
def sites(study, tmp_path: Path):
    served = []
    for index in range(3):
        name = f"site{index + 1}"
        config = init_site(name, str(study.site_bfiles[index]), str(study.pheno_path), str(study.covar_path),
                           tmp_path / name, "127.0.0.1:0")
        data = load_site_data(load_site_config(config))
        servicer = CrashesInANewtonRound(data) if index == 2 else SiteAgentServicer(data)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_SiteAgentServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        served.append((server, servicer, SiteEndpoint(name, f"127.0.0.1:{port}")))
    yield served
    for server, _, _ in served:
        server.stop(grace=None)


def _config(endpoints, out: Path, **changes) -> StudyConfig:
    fields = dict(study_id="logistic-faults", glm="logistic", cohort=COHORT, privacy="secagg",
                  sites=tuple(endpoints), out_dir=out, block_size=64, show_progress=False, timeout_seconds=30)
    fields.update(changes)
    return StudyConfig(**fields)


def test_site_lost_mid_fit_restarts_the_fit_without_it(sites, tmp_path: Path) -> None:
    endpoints = [s[2] for s in sites]
    outcome = run_study(_config(endpoints, tmp_path / "out", allow_dropout=True))
    assert outcome.summary.contributing_sites == ("site1", "site2")
    seen = sites[2][1].seen
    assert seen[0] == "covariate_fit" and "logistic_start" in seen, seen
    assert seen[-1] == "logistic" and seen.count("logistic") == 1, seen
    clean = run_study(_config(endpoints[:2], tmp_path / "clean"))
    assert outcome.summary.rounds > clean.summary.rounds
    np.testing.assert_allclose(outcome.result.beta, clean.result.beta, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(outcome.result.se, clean.result.se, rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(outcome.result.n, clean.result.n)
    np.testing.assert_array_equal(outcome.result.errcode, clean.result.errcode)
