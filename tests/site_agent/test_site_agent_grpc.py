"""The site agent over real gRPC (in-process server on port 0): describe, tasks, refusals, deadlines."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import serde
from coordinator.client import SiteClient, SiteEndpoint
from engine.errors import SiteFailure
from engine.io.plink import read_bim
from engine.privacy import roster as roster_module
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, TaskSpec
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from site_agent.provision import init_site
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.server import make_server
from tests.adversarial.harness import Coordinator, write_roster

COVARIATES = ("SEX_MALE", "AGE")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim")
    return simulate_study(SimulationSpec(site_sizes=(150, 120), n_variants=300, seed=3, write_pooled=False), out)


@pytest.fixture(scope="module")
def site(study, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SiteClient, object]]:
    directory = tmp_path_factory.mktemp("site1")
    write_roster(directory / "roster.toml", {"site1": directory}, {"site2": PEER})
    config_path = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), str(study.covar_path),
                            directory, "127.0.0.1:0", roster=directory / "roster.toml")
    data = load_site_data(load_site_config(config_path))
    server, port = make_server(data, "127.0.0.1:0")
    server.start()
    client = SiteClient(SiteEndpoint("site1", f"127.0.0.1:{port}"), timeout=30)
    yield client, data
    client.close()
    server.stop(grace=None)


PEER = roster_module.generate_identity_key()  # site2, played by the test


def _task(data, **changes) -> TaskSpec:
    n = data.genotypes.n_variants
    fields = dict(study_id="s1", round=1, analysis="linear", cohort=CohortRequest("QT", COVARIATES),
                  privacy="secagg", participants=("site1", "site2"),
                  block_size=128, variant_index=np.arange(n), flip=np.zeros(n, bool),
                  parameters={"audit.request_id": uuid.uuid4().hex})
    fields.update(changes)
    return TaskSpec(**fields)


def test_health_and_describe(site, study) -> None:
    client, data = site
    client.wait_healthy()
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(client.endpoint.address))
    assert stub.Check(health_pb2.HealthCheckRequest(service="protos.site_agent.SiteAgent"), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    description, manifest = client.describe("s1", CohortRequest("QT", COVARIATES))
    bim = read_bim(Path(f"{study.site_bfiles[0]}.bim"))
    assert description.site_name == "site1" and description.n_samples_total == 150
    assert 0 < description.n_samples_analysed < 150  # simulated NA phenotypes/ages are dropped
    assert list(manifest.variant_id) == list(bim.variant_id) and list(manifest.allele1) == list(bim.allele1)
    assert description.identity_public_key == data.identity_public_key


def test_describe_unknown_phenotype_is_invalid_argument(site) -> None:
    client, _ = site
    with pytest.raises(SiteFailure, match="column 'NOPE' not found") as info:
        client.describe("s1", CohortRequest("NOPE"))
    assert info.value.kind == "InputError" and not info.value.transient


def test_task_streams_masked_blocks(site) -> None:
    client, data = site
    task = _task(data)
    coordinator = Coordinator({"site1": client}, data.roster, {"site2": PEER})
    result = coordinator.run({"site1": task, "site2": task})
    assert sorted(result.blocks["site1"]) == [0, 1, 2]
    assert result.done["site1"].n_design == 3 and result.done["site1"].contributors == ("site1", "site2")
    assert sum(b.size * 8 for b in result.blocks["site1"].values()) == 300 * 15 * 16  # 15 values per variant, 16 bytes
    assert result.total is not None and result.total.shape == (300 * 15,)


@pytest.mark.parametrize("changes, code, message", [
    ({"privacy": "plaintext"}, grpc.StatusCode.PERMISSION_DENIED, "does not accept privacy mode 'plaintext'"),
    ({"variant_index": np.arange(1, 301)}, grpc.StatusCode.INVALID_ARGUMENT, "variant_index must lie in"),
])
def test_refused_tasks(site, changes, code, message) -> None:
    client, data = site
    with pytest.raises(SiteFailure, match=message):
        list(client.run_task(_task(data, **changes)))


def test_too_few_participants_is_refused(site) -> None:
    client, data = site
    with pytest.raises(SiteFailure, match="requires at least 2 participating sites"):
        list(client.run_task(_task(data, participants=("site1",))))


def _raw_call(client: SiteClient, messages: list[pb.TaskMessage]) -> grpc.RpcError:
    stub = pb_grpc.SiteAgentStub(grpc.insecure_channel(client.endpoint.address))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.RunTask(iter(messages), timeout=10))
    return info.value


def test_hostile_streams_are_invalid_argument(site) -> None:
    client, data = site
    good = list(serde.task_to_messages(_task(data)))
    body, end = good[:-1], good[-1]  # the task's messages, then inputs_end
    no_header = _raw_call(client, good[1:])
    assert no_header.code() == grpc.StatusCode.INVALID_ARGUMENT and "must start with a TaskHeader" in no_header.details()
    truncated = _raw_call(client, body[:-1] + [end])
    assert truncated.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing or incomplete" in truncated.details()
    assert "ended before inputs_end" in _raw_call(client, body).details()
    bad_flip = body[:-1] + [pb.TaskMessage(array=pb.ArrayChunk(name="flip", dtype="|u1", total_bytes=300,
                                                                 offset=0, data=bytes([7]) * 300, shape=[300])), end]
    assert "only 0 and 1" in _raw_call(client, bad_flip).details()
    unknown = body + [pb.TaskMessage(array=pb.ArrayChunk(name="samples", dtype="<i8", total_bytes=8, data=b"0" * 8,
                                                         shape=[1])), end]
    assert "takes no input 'samples'" in _raw_call(client, unknown).details()
    shapeless = body + [pb.TaskMessage(array=pb.ArrayChunk(name="beta", dtype="<f8", total_bytes=16, data=b"0" * 8,
                                                           shape=[2])), end]
    assert "incomplete" in _raw_call(client, shapeless).details()
    big_endian = body + [pb.TaskMessage(array=pb.ArrayChunk(name="beta", dtype=">f8", total_bytes=8, data=b"0" * 8,
                                                            shape=[1])), end]
    assert "not a little-endian number type" in _raw_call(client, big_endian).details()
    header = pb.TaskMessage()
    header.CopyFrom(good[0])
    header.header.analysis = "delete_everything"
    assert "is not one of" in _raw_call(client, [header, *good[1:]]).details()
    untyped = pb.TaskMessage()
    untyped.CopyFrom(good[0])
    untyped.header.parameters["dp.epsilon"] = "1000"
    assert "are not accepted" in _raw_call(client, [untyped, *good[1:]]).details()
    # A valid task whose coordinator then goes silent: the site waits for the keys, then refuses.
    assert "ended the task stream while the site waited for peer_keys" in _raw_call(client, good).details()


def test_deadline_exceeded_is_a_transient_failure(site) -> None:
    client, data = site
    hurried = SiteClient(client.endpoint, timeout=0.001)
    with pytest.raises(SiteFailure) as info:
        list(hurried.run_task(_task(data, block_size=1)))
    assert info.value.transient
    hurried.close()


def test_unreachable_site_names_the_site_and_address() -> None:
    client = SiteClient(SiteEndpoint("ghost", "127.0.0.1:1"), timeout=2, connect_timeout=1)
    with pytest.raises(SiteFailure, match="site 'ghost': unreachable at 127.0.0.1:1"):
        client.wait_healthy(attempts=2, backoff=0.05)
    client.close()
