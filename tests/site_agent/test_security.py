"""Mutual TLS, site-side authorisation and attacks tried on purpose, against real in-process servers on port 0."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from pathlib import Path

import numpy as np
import pytest

from coordinator.client import SiteClient, SiteEndpoint
from engine.privacy import secagg
from engine.audit.records import REQUEST_ID_KEY
from engine.errors import PrivacyError, SiteFailure
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, ResultBlock, TaskSpec
from site_agent import handlers
from site_agent.cohort_guard import check_and_record_cohort, suppress_rare
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from protos.pki import create_ca, dev_pki, issue
from site_agent.policy import AccessPolicy, StudyApproval
from site_agent.provision import init_site
from site_agent.server import make_server

COVARIATES = ("SEX_MALE", "AGE")
APPROVED = AccessPolicy(any_study=False, studies=(StudyApproval("approved", ("linear",), ("analyst",)),),
                        requesters=("analyst",))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    good = tmp_path_factory.mktemp("pki")
    files = dev_pki(good, ["site1", "analyst", "intruder"])
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    files["expired"] = issue(good, "expired", not_before=past, days=1)
    other = tmp_path_factory.mktemp("other-ca")
    create_ca(other, "someone-else")
    files["foreign"] = issue(other, "analyst")  # the right name, the wrong CA
    return files


@pytest.fixture(scope="module")
def served(pki, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim")
    study = simulate_study(SimulationSpec(site_sizes=(150, 120), n_variants=200, seed=4, write_pooled=False), out)
    config = init_site("site1", str(study.site_bfiles[0]), str(study.pheno_path), str(study.covar_path),
                       tmp_path_factory.mktemp("site1"), "127.0.0.1:0", tls=pki["site1"], access=APPROVED)
    data = load_site_data(load_site_config(config))
    server, port = make_server(data, "127.0.0.1:0")
    server.start()
    yield data, f"127.0.0.1:{port}"
    server.stop(grace=None)


def _client(address: str, tls, name: str = "site1") -> SiteClient:
    return SiteClient(SiteEndpoint(name, address), timeout=20, connect_timeout=2, tls=tls)


def _task(data, study_id: str = "approved", analysis: str = "linear", request_id: str | None = None,
          cohort: CohortRequest = CohortRequest("QT", COVARIATES)) -> TaskSpec:
    other = secagg.public_key_bytes(secagg.generate_private_key())
    n = data.genotypes.n_variants
    return TaskSpec(study_id=study_id, round=1, analysis=analysis, cohort=cohort, privacy="secagg",
                    participants=(("site1", data.secagg_public_key), ("site2", other)), block_size=64,
                    variant_index=np.arange(n), flip=np.zeros(n, bool), requester="mallory",
                    parameters={REQUEST_ID_KEY: request_id or uuid.uuid4().hex})


def test_mutual_tls_serves_the_right_client(served, pki) -> None:
    data, address = served
    client = _client(address, pki["analyst"])
    client.wait_healthy()
    description, _ = client.describe("approved", CohortRequest("QT", COVARIATES))
    assert description.site_name == "site1"
    client.close()


@pytest.mark.parametrize("who", ["plaintext", "foreign", "expired", "wrong-server-name"])
def test_connections_without_a_valid_certificate_are_refused(served, pki, who: str) -> None:
    data, address = served
    if who == "plaintext":
        client = _client(address, None)
    elif who == "wrong-server-name":  # a certificate from the CA, but not the site we asked for
        client = _client(address, pki["analyst"], name="site2")
    else:
        client = _client(address, pki[who])
    with pytest.raises(SiteFailure, match="unreachable"):
        client.wait_healthy()
    client.close()


def test_a_site_trusting_another_ca_is_refused_by_the_coordinator(served, pki, tmp_path: Path) -> None:
    _, address = served
    # The coordinator trusts only its own (other) CA: the site's certificate does not verify.
    client = _client(address, dataclasses.replace(pki["analyst"], ca=pki["foreign"].ca))
    with pytest.raises(SiteFailure, match="unreachable"):
        client.wait_healthy()
    client.close()


def test_authorisation_refusals_name_the_rule_and_are_logged_with_the_certificate_identity(served, pki) -> None:
    data, address = served
    analyst, intruder = _client(address, pki["analyst"]), _client(address, pki["intruder"])
    before = len(data.ledger.entries())
    with pytest.raises(SiteFailure, match="has not approved study 'unapproved'") as info:
        list(analyst.run_task(_task(data, study_id="unapproved")))
    assert info.value.kind == "PrivacyError" and not info.value.transient
    with pytest.raises(SiteFailure, match="approved study 'approved' for \\['linear'\\], whose rounds do not include 'qc'"):
        list(analyst.run_task(_task(data, analysis="qc", cohort=CohortRequest(""))))
    with pytest.raises(SiteFailure, match="does not accept requests from 'intruder'"):
        list(intruder.run_task(_task(data)))
    with pytest.raises(SiteFailure, match="does not accept requests from 'intruder'"):
        intruder.describe("approved", CohortRequest("QT", COVARIATES))
    data.config = dataclasses.replace(data.config, access=dataclasses.replace(APPROVED, min_cohort=10_000))
    try:
        with pytest.raises(SiteFailure, match="refuses a cohort of \\d+ samples: its minimum is 10000"):
            list(analyst.run_task(_task(data)))
    finally:
        data.config = dataclasses.replace(data.config, access=APPROVED)
    refused = data.ledger.entries()[before:]
    assert [e.kind for e in refused] == ["refused"] * 5
    # The identity is the certificate's, not the header's "mallory".
    assert [e.requester for e in refused] == ["analyst", "analyst", "intruder", "intruder", "analyst"]
    assert "not approved study" in refused[0].message and "min_cohort" in refused[4].message
    analyst.close()
    intruder.close()


def test_a_replayed_task_is_refused_and_masks_depend_on_the_request(served, pki) -> None:
    data, address = served
    client = _client(address, pki["analyst"])
    task = _task(data, request_id="round-once")
    first = [e for e in client.run_task(task) if isinstance(e, ResultBlock)]
    assert len(first) == 4
    with pytest.raises(SiteFailure, match="a replayed task is refused"):
        list(client.run_task(task))
    # A restarted coordinator (same study and round, a new request id) gets a fresh mask.
    again = [e for e in client.run_task(_task(data, request_id="after-restart")) if isinstance(e, ResultBlock)]
    assert first[0].payload != again[0].payload
    assert data.ledger.entries()[-1].requester == "analyst"
    client.close()


def test_differencing_two_cohorts_one_participant_apart_is_refused(served, tmp_path: Path) -> None:
    data, _ = served
    base = data.cohort(CohortRequest("QT", COVARIATES)).sample_index
    registry = tmp_path / "cohorts.sqlite"
    check_and_record_cohort(registry, "site1", base, 150, 5)
    check_and_record_cohort(registry, "site1", base, 150, 5)  # the same cohort again is fine
    with pytest.raises(PrivacyError, match="differs from one it already released by 1 sample"):
        check_and_record_cohort(registry, "site1", base[1:], 150, 5)
    check_and_record_cohort(registry, "site1", base[5:], 150, 5)  # 5 apart: allowed at minimum 5
    # End to end through the handler: every sample (QC) after the cohort without the few missing QT is refused.
    a = data.cohort(CohortRequest("QT", COVARIATES)).sample_index
    b = data.cohort(CohortRequest("", COVARIATES)).sample_index
    differ = len(set(a.tolist()) ^ set(b.tolist()))
    assert 0 < differ < 20
    original = data.config
    data.config = dataclasses.replace(original, access=dataclasses.replace(
        APPROVED, min_cohort_difference=20, studies=(StudyApproval("approved"),)))
    try:
        list(handlers.run_task(data, _task(data), requester="analyst"))
        with pytest.raises(PrivacyError, match=f"differs from one it already released by {differ} sample"):
            list(handlers.run_task(data, _task(data, analysis="qc", cohort=CohortRequest("", COVARIATES)),
                                   requester="analyst"))
    finally:
        data.config = original
    assert data.ledger.entries()[-1].kind == "refused"


def test_rare_variants_are_suppressed_below_the_minimum_allele_count() -> None:
    genotypes = np.array([[0, 1, 2, -127], [0, 0, 2, 1], [0, 0, 2, 1]], dtype=np.int8)  # 3 samples x 4 variants
    values = np.ones((4, 3))
    out = suppress_rare(values, genotypes, 2)
    # MACs: 0, 1, 0 (all ALT: 6 of 6), 2 -> only the last variant is released.
    np.testing.assert_array_equal(out, [[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]])
    assert suppress_rare(values, genotypes, 0) is values


def test_site_config_refuses_a_missing_tls_section(tmp_path: Path) -> None:
    from engine.errors import ConfigError

    path = tmp_path / "site.toml"
    path.write_text('[site]\nname = "a"\nlisten = "127.0.0.1:0"\n[data]\nbfile = "x"\npheno = "p"\n'
                    '[keys]\nsecagg_private_key = "k"\n')
    with pytest.raises(ConfigError, match="\\[tls\\] ca, cert, key missing: the site serves only mutual TLS"):
        load_site_config(path)


def test_site_check_refuses_a_certificate_for_another_site(served, pki, tmp_path: Path, capsys) -> None:
    from fedgwas.site_command import main as site_main

    data, _ = served
    text = data.config.path.read_text().replace(str(pki["site1"].cert), str(pki["analyst"].cert)) \
        .replace(str(pki["site1"].key), str(pki["analyst"].key))
    config = data.config.path.with_name("wrong-cert.toml")
    config.write_text(text)
    assert site_main(["check", "--config", str(config)]) == 2
    assert "names ['analyst'], not this site 'site1'" in capsys.readouterr().err
