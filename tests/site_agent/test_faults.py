"""Faults on purpose: a site that crashes mid-round or hangs past its deadline, a restarted coordinator,
a corrupted chunk.

Sites are real gRPC servers on port 0 in this process; the faulty one wraps the real servicer and
fails after streaming part of its result, as a crashed or hung process would look to the coordinator.
"""

from __future__ import annotations

import time
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
from engine.errors import StudyFailed
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from site_agent.provision import init_site, provision_roster
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.servicer import SiteAgentServicer

COHORT = CohortRequest("QT", ("SEX_MALE", "AGE", "BMI"))


class FaultyServicer(SiteAgentServicer):
    """Streams two chunks of round 1, then crashes (UNAVAILABLE) or hangs (sleeps past the deadline)."""

    def __init__(self, data, fault: str) -> None:
        super().__init__(data)
        self.fault = fault
        self.rounds_seen: list[int] = []

    def RunTask(self, request_iterator, context) -> Iterator[pb.TaskEvent]:
        first = next(request_iterator)
        self.rounds_seen.append(first.header.round)

        def replay():
            yield first
            yield from request_iterator

        chunks = 0
        for message in super().RunTask(replay(), context):
            if self.fault == "corrupt" and message.WhichOneof("payload") == "chunk" and chunks == 0:
                damaged = pb.TaskEvent()
                damaged.CopyFrom(message)
                data = bytearray(damaged.chunk.data)
                data[::7] = bytes((x ^ 0x5A) for x in data[::7])  # same length, different bytes
                damaged.chunk.data = bytes(data)
                message = damaged
            if self.fault == "corrupt":
                yield message
                chunks += message.WhichOneof("payload") == "chunk"
                continue
            yield message
            chunks += message.WhichOneof("payload") == "chunk"
            if chunks == 2:
                if self.fault == "crash":
                    context.abort(grpc.StatusCode.UNAVAILABLE, "site process crashed")
                time.sleep(10)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return simulate_study(SimulationSpec(site_sizes=(120, 100, 90), n_variants=400, seed=5, write_pooled=False),
                          tmp_path_factory.mktemp("sim"))


def _serve(study, tmp: Path, index: int, fault: str | None, roster: Path):
    name = f"site{index + 1}"
    config = init_site(name, str(study.site_bfiles[index]), str(study.pheno_path), str(study.covar_path),
                       tmp / name, "127.0.0.1:0", roster=roster)
    data = load_site_data(load_site_config(config))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = FaultyServicer(data, fault) if fault else SiteAgentServicer(data)
    pb_grpc.add_SiteAgentServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, servicer, SiteEndpoint(name, f"127.0.0.1:{port}")


@pytest.fixture
def sites(study, tmp_path: Path, request):
    faults = request.param
    roster = provision_roster({f"site{i + 1}": tmp_path / f"site{i + 1}" for i in range(len(faults))},
                              tmp_path / "roster.toml")
    served = [_serve(study, tmp_path, i, fault, roster) for i, fault in enumerate(faults)]
    yield served
    for server, _, _ in served:
        server.stop(grace=None)


def _config(endpoints, out: Path, **changes) -> StudyConfig:
    fields = dict(study_id="faults", glm="linear", cohort=COHORT, privacy="secagg", sites=tuple(endpoints),
                  out_dir=out, block_size=50, show_progress=False, timeout_seconds=20)
    fields.update(changes)
    return StudyConfig(**fields)


@pytest.mark.parametrize("sites", [(None, None, "crash")], indirect=True)
def test_crashed_site_is_recovered_in_the_same_round(sites, tmp_path: Path) -> None:
    endpoints = [s[2] for s in sites]
    outcome = run_study(_config(endpoints, tmp_path / "out", allow_dropout=True))
    summary = outcome.summary
    assert summary.contributing_sites == ("site1", "site2")
    failed = summary.sites[2]
    assert not failed.contributed and "crashed" in failed.failure
    # It fails in the association round (after the standardisation rounds), which the survivors finish
    # (no re-run: they reveal what removes site3's masks); the failed site is not asked again.
    assert sites[2][1].rounds_seen[-1] == summary.rounds
    released = [e for e in sites[0][1].data.ledger.entries() if e.kind == "released"]
    assert "summed over site1, site2" in released[-1].message
    assert all("summed over site1, site2, site3" in e.message for e in released[:-1])
    # Nothing lost or double counted: equal to a clean two-site study (another study: its standardisation
    # rounds over the two sites would repeat this study's over another set of sites, which they refuse).
    clean = run_study(_config(endpoints[:2], tmp_path / "clean", study_id="faults-clean"))
    assert summary.rounds == clean.summary.rounds
    np.testing.assert_allclose(outcome.result.beta, clean.result.beta, rtol=1e-10, equal_nan=True)
    np.testing.assert_array_equal(outcome.result.n, clean.result.n)
    assert summary.n_samples == clean.summary.n_samples


@pytest.mark.parametrize("sites", [(None, None, "crash")], indirect=True)
def test_crashed_site_fails_the_study_when_dropout_is_not_allowed(sites, tmp_path: Path) -> None:
    with pytest.raises(StudyFailed, match="site 'site3'.*crashed.*does not allow dropping"):
        run_study(_config([s[2] for s in sites], tmp_path / "out"))
    assert not (tmp_path / "out" / "QT.linear.tsv.gz").exists()


@pytest.mark.parametrize("sites", [(None, "hang", None)], indirect=True)
def test_hung_site_past_its_deadline_is_dropped(sites, tmp_path: Path) -> None:
    outcome = run_study(_config([s[2] for s in sites], tmp_path / "out", allow_dropout=True, timeout_seconds=3))
    assert outcome.summary.contributing_sites == ("site1", "site3")
    assert "deadline" in outcome.summary.sites[1].failure


@pytest.mark.parametrize("sites", [(None, "crash")], indirect=True)
def test_dropout_below_the_minimum_number_of_sites_fails(sites, tmp_path: Path) -> None:
    with pytest.raises(StudyFailed, match="only 1 of 2 sites delivered every block, below the threshold 2: "
                                          "the round is abandoned and nothing was unmasked"):
        run_study(_config([s[2] for s in sites], tmp_path / "out", allow_dropout=True))
    ledger = sites[0][1].data.ledger
    deadline = time.monotonic() + 10  # the site records the abort when it notices the cancelled call
    while "aborted" not in [e.kind for e in ledger.entries()] and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = [e for e in ledger.entries() if e.kind != "described"]
    # The standardisation rounds were released; the association round was accepted, then aborted.
    assert [e.kind for e in entries[-2:]] == ["accepted", "aborted"] and entries[-1].analysis == "linear"
    assert {e.analysis for e in entries if e.kind == "released"} == {"moments"}


@pytest.mark.parametrize("sites", [(None, None, "crash")], indirect=True)
def test_a_restarted_coordinator_reruns_the_study_without_loss_or_double_counting(sites, tmp_path: Path) -> None:
    endpoints = [s[2] for s in sites]
    with pytest.raises(StudyFailed, match="crashed"):  # the first coordinator stops mid-round
        run_study(_config(endpoints, tmp_path / "first"))
    # Restarted with the same study id and round numbers: new request ids, so fresh masks and no replay refusal.
    outcome = run_study(_config(endpoints, tmp_path / "second", allow_dropout=True))
    clean = run_study(_config(endpoints[:2], tmp_path / "clean", study_id="faults-clean"))
    np.testing.assert_allclose(outcome.result.beta, clean.result.beta, rtol=1e-10, equal_nan=True)
    np.testing.assert_array_equal(outcome.result.n, clean.result.n)
    assert outcome.summary.contributing_sites == ("site1", "site2")
    ledger = sites[0][1].data.ledger.entries()
    released = [e for e in ledger if e.kind == "released" and e.study == "faults"]
    assert len({e.request_id for e in released}) == len(released)  # no request released twice


@pytest.mark.parametrize("sites", [(None, None, "corrupt")], indirect=True)
def test_a_corrupted_chunk_fails_the_study_clearly(sites, tmp_path: Path) -> None:
    from engine.errors import RingOverflowError

    # Under secure aggregation no single block can be checked, but the total leaves the honest range.
    with pytest.raises(RingOverflowError, match="outside the range of valid sums"):
        run_study(_config([s[2] for s in sites], tmp_path / "out"))
    assert not (tmp_path / "out" / "QT.linear.tsv.gz").exists()


def test_a_site_killed_mid_round_leaves_the_survivors_result_equal_to_plink2(tmp_path: Path) -> None:
    """Acceptance: a site dies mid-round; the same round finishes over the survivors, equal to PLINK 2 on
    the survivors' pooled data, and the summary names who contributed."""
    from coordinator.results.gwas_ssf import read_gwas_ssf
    from tests.plink_tools import plink2_glm_linear, run_plink2
    from tests.plink_tools import assert_matches_plink

    study = simulate_study(SimulationSpec(site_sizes=(150, 130, 120), n_variants=300, seed=21, write_pooled=True),
                           tmp_path / "sim")
    roster = provision_roster({f"site{i}": tmp_path / f"site{i}" for i in (1, 2, 3)}, tmp_path / "roster.toml")
    served = [_serve(study, tmp_path, i, fault, roster) for i, fault in enumerate((None, "crash", None))]
    try:
        outcome = run_study(_config([s[2] for s in served], tmp_path / "out", allow_dropout=True))
    finally:
        for server, _, _ in served:
            server.stop(grace=None)
    released = [e for e in served[0][1].data.ledger.entries() if e.kind == "released"]
    # The standardisation rounds (all three sites), then the association round, finished by the survivors.
    assert [e.analysis for e in released][-1] == "linear" and outcome.summary.rounds == len(released)
    assert "summed over site1, site3" in released[-1].message
    assert outcome.summary.contributing_sites == ("site1", "site3")
    assert not outcome.summary.sites[1].contributed and "crashed" in outcome.summary.sites[1].failure
    survivors = [line.split()[:2] for i in (0, 2) for line in Path(f"{study.site_bfiles[i]}.fam").read_text().splitlines()]
    (tmp_path / "keep.txt").write_text("".join(f"{fid}\t{iid}\n" for fid, iid in survivors))
    run_plink2(["--bfile", str(study.pooled_bfile), "--keep", str(tmp_path / "keep.txt"), "--make-bed",
                "--out", str(tmp_path / "survivors")], cwd=tmp_path)
    reference = plink2_glm_linear(tmp_path / "survivors", study.pheno_path, "QT", study.covar_path,
                                  list(COHORT.covariates), tmp_path)
    assert_matches_plink(read_gwas_ssf(tmp_path / "out" / "QT.linear.tsv.gz"), reference)
