"""Denial of service against a site agent, from the attacker's side, over real mutual TLS on port 0.

An intruder (a certificate of the consortium CA that no ``[access]`` rule lists) streams a quarter
of a gigabyte behind a task header; callers open streams and stall; an authorised caller declares
more than the site accepts. The site refuses on the header before buffering any payload (and
ledgers it), caps what it buffers, cuts stalled calls, and keeps serving the authorised analyst.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Iterator

import grpc
import numpy as np
import pytest

from coordinator.client import SiteClient, SiteEndpoint
from engine.privacy import secagg
from engine.audit.records import REQUEST_ID_KEY
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, ResultBlock, TaskSpec
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from protos.guards import ServerMeter
from protos.limits import ServerLimits
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from protos.pki import dev_pki
from site_agent.policy import AccessPolicy, StudyApproval
from site_agent.provision import init_site
from site_agent.server import make_server
from protos.tls import secure_channel

COVARIATES = ("SEX_MALE", "AGE")
APPROVED = AccessPolicy(any_study=False, studies=(StudyApproval("approved", ("linear",), ("analyst",)),),
                        requesters=("analyst",))
CHUNK = 4 << 20


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return dev_pki(tmp_path_factory.mktemp("pki"), ["site1", "analyst", "intruder"])


@pytest.fixture(scope="module")
def site_data(pki, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim")
    study = simulate_study(SimulationSpec(site_sizes=(150, 120), n_variants=200, seed=4, write_pooled=False), out)
    config = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), str(study.covar_path),
                       tmp_path_factory.mktemp("site1"), "127.0.0.1:0", tls=pki["site1"], access=APPROVED)
    return load_site_data(load_site_config(config))


CHANNELS: list[grpc.Channel] = []


@pytest.fixture
def serve(site_data):
    servers = []

    def _serve(limits: ServerLimits = ServerLimits()) -> tuple[str, ServerMeter]:
        meter = ServerMeter()
        server, port = make_server(site_data, "127.0.0.1:0", limits=limits, meter=meter)
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", meter

    yield _serve
    while CHANNELS:
        CHANNELS.pop().close()
    for server in servers:
        server.stop(grace=None)


def _stub(address: str, pki, who: str) -> pb_grpc.SiteAgentStub:
    CHANNELS.append(secure_channel(address, pki[who], "site1"))
    return pb_grpc.SiteAgentStub(CHANNELS[-1])


def _task(data) -> TaskSpec:
    other = secagg.public_key_bytes(secagg.generate_private_key())
    n = data.genotypes.n_variants
    return TaskSpec(study_id="approved", round=1, analysis="linear", cohort=CohortRequest("QT", COVARIATES),
                    privacy="secagg", participants=(("site1", data.secagg_public_key), ("site2", other)),
                    block_size=64, variant_index=np.arange(n), flip=np.zeros(n, bool), requester="analyst",
                    parameters={REQUEST_ID_KEY: uuid.uuid4().hex})


def _header(request_id: str) -> pb.TaskMessage:
    return pb.TaskMessage(header=pb.TaskHeader(
        study_id="approved", round=1, analysis="linear", privacy="secagg", n_variants=200, block_size=64,
        cohort=pb.CohortSpec(phenotype="QT", covariates=list(COVARIATES)), parameters={REQUEST_ID_KEY: request_id}))


def test_an_unauthorised_certificate_is_refused_on_its_header_before_any_payload(serve, site_data, pki) -> None:
    address, meter = serve()
    sent = []

    def flood() -> Iterator[pb.TaskMessage]:
        yield _header("flood")
        for index in range(64):  # 64 x 4 MiB declared as one float64 array of 256 MiB
            sent.append(index)
            yield pb.TaskMessage(array=pb.ArrayChunk(name="covariate_betas", dtype="<f8", shape=[(64 * CHUNK) // 8],
                                                     total_bytes=64 * CHUNK, offset=index * CHUNK, data=bytes(CHUNK)))

    before = len(site_data.ledger.entries())
    with pytest.raises(grpc.RpcError) as info:
        list(_stub(address, pki, "intruder").RunTask(flood(), timeout=60))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not accept requests from 'intruder'" in info.value.details()
    assert meter.buffered_bytes == 0  # not one payload byte was taken into the site's buffers
    assert len(sent) <= 4  # and gRPC flow control stopped the sender long before its 256 MiB
    entries = site_data.ledger.entries()[before:]
    assert [(e.kind, e.requester, e.study, e.analysis, e.request_id) for e in entries] == [
        ("refused", "intruder", "approved", "linear", "flood")]
    assert "before its payload was read" in entries[0].parameters and "does not accept" in entries[0].message


def test_declared_sizes_cap_what_an_authorised_caller_can_make_the_site_buffer(serve, pki) -> None:
    address, meter = serve(ServerLimits(max_payload_bytes=1 << 20))
    analyst = _stub(address, pki, "analyst")

    def stream(*chunks: pb.ArrayChunk) -> Iterator[pb.TaskMessage]:
        yield _header(uuid.uuid4().hex)
        for chunk in chunks:
            yield pb.TaskMessage(array=chunk)

    cases = {  # more than the server's maximum declared; more sent than declared; a second array past the maximum
        "declare 2097152 bytes, more than this site accepts (1048576 bytes)":
            [pb.ArrayChunk(name="flip", dtype="|u1", shape=[2 << 20], total_bytes=2 << 20, offset=0, data=b"\0")],
        "chunk at offset 0 is out of sequence or too long":
            [pb.ArrayChunk(name="flip", dtype="|u1", shape=[200], total_bytes=200, offset=0, data=bytes(400))],
        "declare 1048776 bytes":
            [pb.ArrayChunk(name="flip", dtype="|u1", shape=[200], total_bytes=200, offset=0, data=bytes(200)),
             pb.ArrayChunk(name="x", dtype="|u1", shape=[1 << 20], total_bytes=1 << 20, offset=0, data=b"\0")],
    }
    for message, chunks in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            list(analyst.RunTask(stream(*chunks), timeout=30))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()
    assert meter.buffered_bytes == 200  # only the one well-formed 200-byte array was ever buffered


def _stall(stub: pb_grpc.SiteAgentStub, first: list[pb.TaskMessage], release: threading.Event,
           outcomes: list[str]) -> None:
    def messages() -> Iterator[pb.TaskMessage]:
        yield from first
        release.wait(60)

    try:
        list(stub.RunTask(messages(), timeout=60))
        outcomes.append("OK")
    except grpc.RpcError as error:
        outcomes.append(error.code().name)


def test_stalled_streams_do_not_block_an_authorised_call(serve, site_data, pki) -> None:
    address, meter = serve(ServerLimits(header_seconds=30, idle_seconds=30, untrusted_rpcs=2))
    release, outcomes = threading.Event(), []
    # Four stalls from the intruder and four from the analyst's own certificate: none sends a header.
    stalls = [threading.Thread(target=_stall, args=(_stub(address, pki, who), [], release, outcomes))
              for who in ["intruder"] * 4 + ["analyst"] * 4]
    for thread in stalls:
        thread.start()
    time.sleep(0.5)
    client = SiteClient(SiteEndpoint("site1", address), timeout=20, connect_timeout=5, tls=pki["analyst"])
    try:
        blocks = [e for e in client.run_task(_task(site_data)) if isinstance(e, ResultBlock)]
        description, _ = client.describe("approved", CohortRequest("QT", COVARIATES))
    finally:
        client.close()
    assert len(blocks) == 4 and description.n_samples_analysed > 0
    # Served while every stall was still open (the header deadline, 30 s, had not cut any).
    assert meter.cut == 0 and sum(t.is_alive() for t in stalls) == 6
    assert sorted(outcomes) == ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]  # the intruder gets two slots only
    release.set()
    for thread in stalls:
        thread.join(30)


def test_stalled_streams_are_cut(serve, site_data, pki) -> None:
    address, meter = serve(ServerLimits(header_seconds=1, idle_seconds=1, upload_seconds=3))
    release, outcomes = threading.Event(), []
    request_id = uuid.uuid4().hex
    first_chunk = pb.TaskMessage(array=pb.ArrayChunk(name="flip", dtype="|u1", shape=[200], total_bytes=200,
                                                     offset=0, data=bytes(100)))
    threads = [threading.Thread(target=_stall, args=(_stub(address, pki, "analyst"), first, release, outcomes))
               for first in ([], [_header(request_id), first_chunk])]  # no header; half an array, then silence
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - started < 15
    release.set()
    assert outcomes == ["CANCELLED", "CANCELLED"] and meter.cut == 2
    assert meter.buffered_bytes == 100
    assert request_id not in {e.request_id for e in site_data.ledger.entries()}  # never admitted, nothing to charge


def test_a_trickled_upload_is_cut_at_the_upload_deadline(serve, pki) -> None:
    address, meter = serve(ServerLimits(idle_seconds=1, upload_seconds=2))

    def trickle() -> Iterator[pb.TaskMessage]:
        yield _header(uuid.uuid4().hex)
        for offset in range(200):  # one byte every 0.4 s: always within the idle deadline
            time.sleep(0.4)
            yield pb.TaskMessage(array=pb.ArrayChunk(name="flip", dtype="|u1", shape=[200], total_bytes=200,
                                                     offset=offset, data=b"\0"))

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        list(_stub(address, pki, "analyst").RunTask(trickle(), timeout=60))
    assert info.value.code() == grpc.StatusCode.CANCELLED and meter.cut == 1
    assert 1.5 < time.monotonic() - started < 10 and meter.buffered_bytes <= 6


def test_a_caller_that_stops_reading_its_replies_is_cut(pki, tmp_path) -> None:
    """A Describe whose manifest (400,000 variants, ~16 MB) outgrows the transport's windows."""
    study = simulate_study(SimulationSpec(site_sizes=(60, 40), n_variants=400_000, seed=4, write_pooled=False),
                           tmp_path)
    config = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), str(study.covar_path),
                       tmp_path / "site1", "127.0.0.1:0", tls=pki["site1"], access=APPROVED)
    meter = ServerMeter()
    server, port = make_server(load_site_data(load_site_config(config)), "127.0.0.1:0",
                               limits=ServerLimits(idle_seconds=1), meter=meter)
    server.start()
    channel = secure_channel(f"127.0.0.1:{port}", pki["analyst"], "site1")
    try:
        replies = pb_grpc.SiteAgentStub(channel).Describe(
            pb.DescribeRequest(study_id="approved", cohort=pb.CohortSpec(phenotype="QT", covariates=list(COVARIATES))),
            timeout=60)
        assert next(replies).HasField("info")
        time.sleep(4)  # the caller stops reading; the site blocks on the full window, then the watchdog cuts it
        assert meter.cut == 1
        with pytest.raises(grpc.RpcError) as info:
            list(replies)
        assert info.value.code() == grpc.StatusCode.CANCELLED
    finally:
        channel.close()
        server.stop(grace=None)
