"""Every attack of docs/threat-model.md by a malicious coordinator, over real gRPC to real site agents.

Three real sites (in-process servers on port 0) pin a roster that also lists sites the coordinator
plays itself (colluders whose identity keys it holds). Each attack is refused with a clear error,
recorded in the attacked site's ledger, and nothing it could unmask is released.
"""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest

from engine.cohort.consent import DataUse
from engine.privacy.dp_release import DpRequest, plan_release
from engine.errors import PrivacyError
from engine.io.plink import MISSING_INT8
from engine.privacy import roster as roster_module
from engine.privacy.secure_round import KeyAdvertisement
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, TaskSpec
from site_agent import handlers
from engine.privacy.budget import BudgetPolicy
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.policy import AccessPolicy, StudyApproval
from site_agent.provision import init_site
from site_agent.server import make_server
from tests.adversarial.harness import Coordinator, client_for, write_roster

REAL = ("site1", "site2", "site3")
PLAYED = ("site4", "site5", "site6")
N_VARIANTS = 120


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("consortium")
    study = simulate_study(SimulationSpec(site_sizes=(140, 120, 110), n_variants=N_VARIANTS, seed=11,
                                          write_pooled=False), root / "sim")
    played = {name: roster_module.generate_identity_key() for name in PLAYED}
    roster = write_roster(root / "roster.toml", {n: root / n for n in REAL}, played)
    access = AccessPolicy(any_study=True, studies=(StudyApproval("pinned", purpose="HMB"),),
                          allow_cohort_differencing=False)
    extra = {"site1": {"he_context_sha256": "0" * 64},
             "site3": {"budget": BudgetPolicy(epsilon=1000.0), "access": dataclasses.replace(access, min_allele_count=1000)}}
    servers, clients, datas = [], {}, {}
    for index, name in enumerate(REAL):
        kwargs = {"access": access, **extra.get(name, {})}
        config = init_site(name, str(study.site_bfiles[index]), str(study.pheno_path), str(study.covar_path),
                           root / name, "127.0.0.1:0", roster=root / "roster.toml", **kwargs)
        data = load_site_data(load_site_config(config))
        server, port = make_server(data, "127.0.0.1:0")
        server.start()
        servers.append(server)
        clients[name], datas[name] = client_for(name, port), data
    yield Coordinator(clients, roster, played), datas
    for client in clients.values():
        client.close()
    for server in servers:
        server.stop(grace=None)


def _tasks(names, study: str, **changes) -> dict[str, TaskSpec]:
    fields = dict(study_id=study, round=1, analysis="qc", cohort=CohortRequest(""), privacy="secagg",
                  participants=tuple(names), block_size=50, variant_index=np.arange(N_VARIANTS),
                  flip=np.zeros(N_VARIANTS, bool), requester="mallory",
                  parameters={"audit.request_id": uuid.uuid4().hex})
    fields.update(changes)
    return {name: TaskSpec(**fields) for name in names}


def _counts(data, cohort=CohortRequest("")) -> np.ndarray:
    """Naive genotype counts (hom A1, het, hom A2, missing) of one site: the oracle."""
    selected = data.cohort(cohort)
    g = data.genotypes.read_block(np.arange(N_VARIANTS), selected.sample_index)
    return np.stack([(g == 2).sum(0), (g == 1).sum(0), (g == 0).sum(0), (g == MISSING_INT8).sum(0)], axis=1)


def _last(data, **match):
    entries = [e for e in data.ledger.entries() if all(getattr(e, k) == v for k, v in match.items())]
    return entries[-1] if entries else None


def _released(data, study: str) -> list:
    return [e for e in data.ledger.entries() if e.study == study and e.kind == "released"]


def test_an_honest_round_with_played_colluders_is_exact(consortium) -> None:
    coordinator, datas = consortium
    result = coordinator.run(_tasks(("site1", "site2", "site4"), "honest"))
    assert not result.errors
    expected = _counts(datas["site1"]) + _counts(datas["site2"])
    np.testing.assert_array_equal(result.total.reshape(N_VARIANTS, 4), expected)
    assert result.done["site1"].contributors == ("site1", "site2", "site4")


def test_a_sybil_participant_is_refused_before_any_genotype(consortium) -> None:
    coordinator, datas = consortium
    tasks = _tasks(("site1", "sybil"), "sybil")
    result = coordinator.run({"site1": tasks["site1"]})
    assert "'sybil', which is not in its consortium roster" in str(result.errors["site1"])
    entry = _last(datas["site1"], study="sybil")
    assert entry.kind == "refused" and "not in its consortium roster" in entry.message
    assert not result.blocks and not _released(datas["site1"], "sybil")


def test_an_impersonated_roster_member_is_refused(consortium) -> None:
    coordinator, datas = consortium
    forger = roster_module.generate_identity_key()  # the coordinator's own key, claiming to be site2

    def forge(ads: list[KeyAdvertisement]) -> list[KeyAdvertisement]:
        out = []
        for ad in ads:
            if ad.site == "site2":
                ad = dataclasses.replace(ad, mask_key=b"\x09" * 32)
                ad = dataclasses.replace(ad, signature=roster_module.sign(forger, ad.signed_bytes()))
            out.append(ad)
        return out

    result = coordinator.run(_tasks(("site1", "site2", "site4"), "impersonation"), advertisements=forge)
    assert "keys of 'site2' are not signed by its roster identity key" in str(result.errors["site1"])
    assert "not the ones it advertised" in str(result.errors["site2"])
    assert _last(datas["site1"], study="impersonation").kind == "refused"
    assert result.total is None and not _released(datas["site1"], "impersonation")


def test_he_tasks_naming_a_sybil_are_refused_too(consortium) -> None:
    coordinator, datas = consortium
    task = _tasks(("site1", "sybil"), "he-sybil", privacy="he", privacy_material={"he_context": b"x"})["site1"]
    result = coordinator.run({"site1": task})
    assert "not in its consortium roster" in str(result.errors["site1"])
    assert _last(datas["site1"], study="he-sybil").kind == "refused"


def test_restart_differencing_is_refused(consortium) -> None:
    coordinator, datas = consortium
    first = coordinator.run(_tasks(("site1", "site2", "site4"), "restart"))
    assert first.total is not None
    # The "restart after a dropout" over {site1, site4}: its difference with the first total would be site2's counts.
    again = coordinator.run(_tasks(("site1", "site4"), "restart", round=2))
    assert "already released 120 of these statistics" in str(again.errors["site1"])
    assert _last(datas["site1"], study="restart").kind == "refused"
    # A subset of the variants, another round number or block size: still the same statistics.
    subset = _tasks(("site1", "site4"), "restart", round=3, block_size=7,
                    variant_index=np.arange(10), flip=np.zeros(10, bool))
    assert "already released 10 of these statistics" in str(coordinator.run(subset).errors["site1"])
    # The same set again is harmless (the same total) and allowed.
    assert coordinator.run(_tasks(("site1", "site2", "site4"), "restart", round=4)).total is not None


def test_a_survivor_set_without_threshold_signatures_unmasks_nothing(consortium) -> None:
    coordinator, datas = consortium
    names = ("site1", "site2", "site3", "site4")  # threshold 3; the coordinator colludes with site4 only
    sets = {"site1": ("site1", "site2", "site4"), "site2": names, "site3": ("site1", "site3", "site4"),
            "site4": names}
    result = coordinator.run(_tasks(names, "consistency"), survivors=sets)
    for site in REAL:
        assert "valid survivor signature(s) over the set it signed, threshold 3" in str(result.errors[site])
        assert _last(datas[site], study="consistency").kind == "aborted"
    assert not [r for n, r in result.reveals.items() if n in REAL] and result.total is None


def test_a_round_recovers_a_dropped_site_and_is_never_rerun_over_another_set(consortium) -> None:
    coordinator, datas = consortium
    names = ("site1", "site2", "site4", "site5")
    result = coordinator.run(_tasks(names, "dropout"), drop_after_shares=["site2"])
    # site2's pairwise masks were removed with its mask key, revealed by the survivors: the total is exact.
    np.testing.assert_array_equal(result.total.reshape(N_VARIANTS, 4), _counts(datas["site1"]))
    assert result.done["site1"].contributors == ("site1", "site4", "site5")
    assert "summed over site1, site4, site5" in _last(datas["site1"], study="dropout", kind="released").message
    # Re-running the study over all four would reveal site2 by difference: refused.
    rerun = coordinator.run(_tasks(names, "dropout", round=2))
    assert "already released" in str(rerun.errors["site1"])


def test_request_ids_are_single_use_and_masks_never_repeat(consortium) -> None:
    coordinator, datas = consortium
    tasks = _tasks(("site1", "site4"), "reuse")
    first = coordinator.run(tasks)
    assert not first.errors, first.errors
    flipped = {n: dataclasses.replace(t, flip=np.ones(N_VARIANTS, bool)) for n, t in tasks.items()}
    again = coordinator.run(flipped)  # re-sent request id with flipped alleles
    assert "has already seen request" in str(again.errors["site1"])
    assert _last(datas["site1"], study="reuse").kind == "refused" and len(_released(datas["site1"], "reuse")) == 1
    # Identical tasks under two request ids: the masked blocks share nothing (fresh keys, seeds and nonces).
    a = coordinator.run(_tasks(("site1", "site4"), "fresh"))
    b = coordinator.run(_tasks(("site1", "site4"), "fresh"))
    np.testing.assert_array_equal(a.total, b.total)
    assert not np.any(a.blocks["site1"][0] == b.blocks["site1"][0])
    # The old context collision (study "S#R" without request id vs study "S" with R) has no request id to omit.
    blank = _tasks(("site1", "site4"), "S#R", parameters={})
    assert "request_id is empty" in str(coordinator.run(blank).errors["site1"])


def test_dp_noise_shares_are_sized_by_the_site_not_the_coordinator(consortium) -> None:
    coordinator, datas = consortium
    request = DpRequest(epsilon=2.0, delta=1e-6, mechanism="gaussian")
    plan = plan_release(request, "qc", CohortRequest(""), N_VARIANTS)
    # Three colluding roster members: an honest-coordinator split would give site3 a third of the variance.
    names = ("site3", "site4", "site5", "site6")
    result = coordinator.run(_tasks(names, "dp-share", parameters={"audit.request_id": uuid.uuid4().hex,
                                                                   **request.to_parameters()}))
    done = result.done["site3"]
    assert done.noise_scale == pytest.approx(plan.calibration.scale) and done.rho_spent == pytest.approx(plan.calibration.rho)
    accepted = _last(datas["site3"], study="dp-share", kind="accepted")
    assert accepted.rho == pytest.approx(plan.calibration.rho) and accepted.mechanism == "gaussian"
    noise = result.total.reshape(N_VARIANTS, 4) - _counts(datas["site3"])
    assert 0.7 < noise.std() / plan.calibration.scale < 1.3  # the full noise, from site3 alone
    # Laplace with site3 sorting last among the participants: never a zero share.
    laplace = DpRequest(epsilon=2.0, mechanism="laplace")
    result = coordinator.run(_tasks(("site4", "site5", "site3"), "dp-laplace", parameters={
        "audit.request_id": uuid.uuid4().hex, **laplace.to_parameters()}))
    assert result.done["site3"].noise_scale == pytest.approx(
        plan_release(laplace, "qc", CohortRequest(""), N_VARIANTS).calibration.scale)
    # Invented participants are refused outright.
    sybils = coordinator.run({"site3": _tasks(("!sybil", "site3"), "dp-sybil", parameters={
        "audit.request_id": uuid.uuid4().hex, **laplace.to_parameters()})["site3"]})
    assert "not in its consortium roster" in str(sybils.errors["site3"])


def test_dp_releases_are_not_suppressed_before_noise(consortium) -> None:
    coordinator, datas = consortium
    exact = coordinator.run(_tasks(("site3", "site4"), "suppress"))  # min_allele_count 1000: every row abstains
    assert not exact.total.any()
    request = DpRequest(epsilon=500.0, delta=1e-6, mechanism="gaussian")
    few = dict(variant_index=np.arange(3), flip=np.zeros(3, bool))
    result = coordinator.run(_tasks(("site3", "site4"), "suppress-dp", parameters={
        "audit.request_id": uuid.uuid4().hex, **request.to_parameters()}, **few))
    truth = _counts(datas["site3"])[:3]
    scale = plan_release(request, "qc", CohortRequest(""), 3).calibration.scale
    np.testing.assert_allclose(result.total.reshape(3, 4), truth, atol=8 * scale)
    assert truth.sum() > 100 * scale  # the rows carry the real counts plus noise, not zeros plus noise


def test_cohort_differencing_is_refused(consortium) -> None:
    coordinator, datas = consortium
    names = ("site1", "site4")
    # Purpose pinned in the approval: the DS-vs-HMB difference is one consent group.
    ds = _tasks(names, "pinned", cohort=CohortRequest("", data_use=DataUse("DS:MONDO:0005148")))
    assert "approved study 'pinned' for purpose 'HMB' only" in str(coordinator.run(ds).errors["site1"])
    assert _last(datas["site1"], study="pinned").kind == "refused"
    # Inclusion-exclusion over U+S1+S2 (everyone), U+S1 (with a phenotype), U+S2 (with an age) and U (both).
    everyone, phenotyped, aged, both = (CohortRequest(""), CohortRequest("QT"), CohortRequest("", ("AGE",)),
                                        CohortRequest("QT", ("AGE",)))
    assert [datas["site1"].cohort(c).n_samples for c in (everyone, phenotyped, aged, both)] == [140, 138, 139, 137]
    assert coordinator.run(_tasks(names, "ie", cohort=everyone)).total is not None
    one_apart = coordinator.run(_tasks(names, "ie", cohort=aged, round=2))  # differs by one participant
    assert "differs from one it released by 1 sample(s)" in str(one_apart.errors["site1"])
    assert coordinator.run(_tasks(names, "ie", analysis="linear", cohort=phenotyped, round=3)).total is not None
    third = coordinator.run(_tasks(names, "ie", analysis="linear", cohort=both, round=4))
    assert "refuses another sample set for study 'ie'" in str(third.errors["site1"])
    assert _last(datas["site1"], study="ie").kind == "refused"


def test_describe_is_authorised_ledgered_and_bounded(consortium) -> None:
    _, datas = consortium
    data = datas["site1"]
    hmb = CohortRequest("QT", data_use=DataUse("HMB"))
    description = handlers.describe_recorded(data, hmb, "pinned", "mallory")
    assert _last(data, study="pinned", analysis="describe").kind == "described"
    assert description.n_samples_analysed > 0
    with pytest.raises(PrivacyError, match="for purpose 'HMB' only"):
        handlers.describe_recorded(data, CohortRequest("QT", data_use=DataUse("DS:MONDO:1")), "pinned", "mallory")
    assert _last(data, study="pinned", analysis="describe").kind == "refused"
    strict = dataclasses.replace(data, config=dataclasses.replace(
        data.config, access=dataclasses.replace(data.config.access, min_cohort=10_000)))
    with pytest.raises(PrivacyError, match="its minimum is 10000"):
        handlers.describe_recorded(strict, hmb, "pinned", "mallory")
