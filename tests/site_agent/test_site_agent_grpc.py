"""The site agent over real gRPC (in-process server on port 0): describe, tasks, refusals, deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import serde
from coordinator.client import SiteClient, SiteEndpoint
from engine.privacy import secagg
from engine.errors import SiteFailure
from engine.io.plink import read_bim
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, ResultBlock, TaskDone, TaskSpec
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from site_agent.provision import init_site
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.server import make_server

COVARIATES = ("SEX_MALE", "AGE")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim")
    return simulate_study(SimulationSpec(site_sizes=(150, 120), n_variants=300, seed=3, write_pooled=False), out)


@pytest.fixture(scope="module")
def site(study, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SiteClient, object]]:
    directory = tmp_path_factory.mktemp("site1")
    config_path = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), str(study.covar_path),
                            directory, "127.0.0.1:0")
    data = load_site_data(load_site_config(config_path))
    server, port = make_server(data, "127.0.0.1:0")
    server.start()
    client = SiteClient(SiteEndpoint("site1", f"127.0.0.1:{port}"), timeout=30)
    yield client, data
    client.close()
    server.stop(grace=None)


def _task(data, **changes) -> TaskSpec:
    other = secagg.public_key_bytes(secagg.generate_private_key())
    n = data.genotypes.n_variants
    fields = dict(study_id="s1", round=1, analysis="linear", cohort=CohortRequest("QT", COVARIATES),
                  privacy="secagg", participants=(("site1", data.secagg_public_key), ("site2", other)),
                  block_size=128, variant_index=np.arange(n), flip=np.zeros(n, bool))
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
    assert description.secagg_public_key == data.secagg_public_key


def test_describe_unknown_phenotype_is_invalid_argument(site) -> None:
    client, _ = site
    with pytest.raises(SiteFailure, match="column 'NOPE' not found") as info:
        client.describe("s1", CohortRequest("NOPE"))
    assert info.value.kind == "InputError" and not info.value.transient


def test_task_streams_masked_blocks(site) -> None:
    client, data = site
    events = list(client.run_task(_task(data)))
    blocks = [e for e in events if isinstance(e, ResultBlock)]
    assert [b.block for b in blocks] == [0, 1, 2] and all(b.encoding == "ring128-masked" for b in blocks)
    assert isinstance(events[-1], TaskDone) and events[-1].n_design == 3
    assert sum(len(b.payload) for b in blocks) == 300 * 15 * 16  # 15 values per variant, 16 bytes each


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
        list(client.run_task(_task(data, participants=(("site1", data.secagg_public_key),))))


def _raw_call(client: SiteClient, messages: list[pb.TaskMessage]) -> grpc.RpcError:
    stub = pb_grpc.SiteAgentStub(grpc.insecure_channel(client.endpoint.address))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.RunTask(iter(messages), timeout=10))
    return info.value


def test_hostile_streams_are_invalid_argument(site) -> None:
    client, data = site
    good = list(serde.task_to_messages(_task(data)))
    no_header = _raw_call(client, good[1:])
    assert no_header.code() == grpc.StatusCode.INVALID_ARGUMENT and "must start with a TaskHeader" in no_header.details()
    truncated = _raw_call(client, good[:-1])
    assert truncated.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing or incomplete" in truncated.details()
    bad_flip = good[:-1] + [pb.TaskMessage(array=pb.ArrayChunk(name="flip", dtype="|u1", total_bytes=300,
                                                                 offset=0, data=bytes([7]) * 300, shape=[300]))]
    assert "only 0 and 1" in _raw_call(client, bad_flip).details()
    unknown = good + [pb.TaskMessage(array=pb.ArrayChunk(name="samples", dtype="<i8", total_bytes=8, data=b"0" * 8,
                                                         shape=[1]))]
    assert "takes no input 'samples'" in _raw_call(client, unknown).details()
    shapeless = good + [pb.TaskMessage(array=pb.ArrayChunk(name="beta", dtype="<f8", total_bytes=16, data=b"0" * 8,
                                                           shape=[2]))]
    assert "incomplete" in _raw_call(client, shapeless).details()
    big_endian = good + [pb.TaskMessage(array=pb.ArrayChunk(name="beta", dtype=">f8", total_bytes=8, data=b"0" * 8,
                                                            shape=[1]))]
    assert "not a little-endian number type" in _raw_call(client, big_endian).details()
    header = pb.TaskMessage()
    header.CopyFrom(good[0])
    header.header.analysis = "delete_everything"
    assert "is not one of" in _raw_call(client, [header, *good[1:]]).details()


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
