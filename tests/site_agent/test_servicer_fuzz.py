"""Property tests: random and hostile TaskMessage streams never crash the servicer or surface as INTERNAL.

Every stream, however malformed, must end in success or in a status that names bad input or a refusal
(INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

from typing import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos import serde
from engine.privacy import secagg
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, TaskSpec
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.provision import init_site
from site_agent.server import make_server

ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
           grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pb_grpc.SiteAgentStub, list[pb.TaskMessage]]]:
    out = tmp_path_factory.mktemp("sim")
    study = simulate_study(SimulationSpec(site_sizes=(40, 40), n_variants=30, seed=9, write_pooled=False), out)
    config = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), str(study.covar_path),
                       tmp_path_factory.mktemp("site1"), "127.0.0.1:0")  # in-process: [tls] insecure = true
    data = load_site_data(load_site_config(config))
    server, port = make_server(data, "127.0.0.1:0")
    server.start()
    other = secagg.public_key_bytes(secagg.generate_private_key())
    good = TaskSpec(study_id="fuzz", round=1, analysis="linear", cohort=CohortRequest("QT", ("SEX_MALE",)),
                    privacy="secagg", participants=(("site1", data.secagg_public_key), ("site2", other)),
                    block_size=16, variant_index=np.arange(30), flip=np.zeros(30, bool))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.SiteAgentStub(channel), list(serde.task_to_messages(good))
    channel.close()
    server.stop(grace=None)


text = st.text(max_size=12)
header = st.builds(
    pb.TaskHeader, study_id=text, round=st.integers(0, 2**32 - 1),
    analysis=st.sampled_from(["linear", "logistic", "qc", "pca", "ld_pairs", "covariate_fit", "nope", ""]),
    cohort=st.builds(pb.CohortSpec, phenotype=st.sampled_from(["QT", "BT", "", "NOPE"]),
                     covariates=st.lists(st.sampled_from(["SEX_MALE", "AGE", "PC1", "X"]), max_size=3),
                     phenotype_coding=st.sampled_from(["", "quantitative", "case-control", "bogus"]),
                     data_use=st.builds(pb.DataUse, purpose=st.sampled_from(["", "HMB", "DS:X:1", "bad"]),
                                        commercial=st.booleans())),
    privacy=st.sampled_from(["secagg", "plaintext", "he", "x"]), block_size=st.integers(0, 70_000),
    n_variants=st.integers(0, 100), requester=text,
    parameters=st.dictionaries(st.sampled_from(["audit.request_id", "dp.epsilon", "dp.delta", "dp.phase", "k"]),
                               text, max_size=3))
chunk = st.builds(pb.ArrayChunk, name=st.sampled_from(["variant_index", "flip", "coef", "privacy:he_context", "z"]),
                  dtype=st.sampled_from(["<i8", "|u1", "<f8", ">i8", "O", "xx", ""]),
                  total_bytes=st.integers(0, 1 << 20), offset=st.integers(0, 1 << 20), data=st.binary(max_size=64),
                  shape=st.lists(st.integers(0, 1 << 40), max_size=5))
message = st.one_of(st.builds(pb.TaskMessage, header=header), st.builds(pb.TaskMessage, array=chunk))


def _status(stub: pb_grpc.SiteAgentStub, messages: list[pb.TaskMessage]) -> grpc.StatusCode:
    try:
        for _ in stub.RunTask(iter(messages), timeout=30):
            pass
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(message, max_size=6))
def test_random_streams_are_refused_cleanly(agent, messages: list[pb.TaskMessage]) -> None:
    stub, _ = agent
    assert _status(stub, messages) in ALLOWED | {grpc.StatusCode.OK}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_valid_streams_are_refused_cleanly(agent, data: st.DataObject) -> None:
    """A valid task with one message replaced, dropped, duplicated or a chunk's bytes corrupted."""
    stub, good = agent
    messages = list(good)
    index = data.draw(st.integers(0, len(messages) - 1))
    action = data.draw(st.sampled_from(["replace", "drop", "duplicate", "corrupt"]))
    if action == "replace":
        messages[index] = data.draw(message)
    elif action == "drop":
        del messages[index]
    elif action == "duplicate":
        messages.insert(index, messages[index])
    elif messages[index].WhichOneof("payload") == "array":
        corrupted = pb.TaskMessage()
        corrupted.CopyFrom(messages[index])
        corrupted.array.data = data.draw(st.binary(max_size=300))
        messages[index] = corrupted
    assert _status(stub, messages) in ALLOWED | {grpc.StatusCode.OK}
