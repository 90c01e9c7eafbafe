"""The dropout recovery under ``--privacy he`` attacked by a malicious coordinator, over real gRPC.

Three real sites (in-process servers on port 0) pin a real key holder's context (its own gRPC server).
The coordinator claims that a live site dropped out: the survivors reveal the "dropped" site's mask key
(never its self-tag seed: Bonawitz's rule), which lets the coordinator compute that site's pairwise tags,
but not its self tags, so the key holder still refuses its block alone or in any sum but the survivors'.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from coordinator.key_holder_client import KeyHolderClient, RoundDecryptor
from engine.errors import StudyFailed
from engine.io.plink import MISSING_INT8
from engine.privacy import he_encoding, secagg, shamir
from engine.privacy.he import PublicContext
from engine.privacy.he_rounds import RoundRegistration
from engine.privacy.secure_round import MASK_KEY, SELF_MASK, round_context
from engine.simulate import SimulationSpec, simulate_study
from engine.tasks import CohortRequest, TaskSpec
from key_holder.keys import REFUSAL, KeyHolder, load_key_files, write_key_files
from key_holder.server import make_server as make_key_holder_server
from key_holder.store import STORE_FILE, KeyHolderStore
from site_agent.config import load_site_config
from site_agent.data import load_site_data
from site_agent.policy import AccessPolicy
from site_agent.provision import init_site
from site_agent.server import make_server
from tests.adversarial.harness import Coordinator, client_for, write_roster

REAL = ("site1", "site2", "site3")
N_VARIANTS, BLOCK_SIZE, WIDTH = 120, 50, 4


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("he-consortium")
    study = simulate_study(SimulationSpec(site_sizes=(140, 120, 110), n_variants=N_VARIANTS, seed=12,
                                          write_pooled=False), root / "sim")
    pin = write_key_files(root / "kh")
    holder = KeyHolder(*load_key_files(root / "kh"), KeyHolderStore(root / "kh" / STORE_FILE), coordinators=("*",),
                       refusal_budget=10)
    holder_server, holder_port = make_key_holder_server(holder, "127.0.0.1:0")
    holder_server.start()
    key_holder = KeyHolderClient(f"127.0.0.1:{holder_port}", timeout=60)
    roster = write_roster(root / "roster.toml", {n: root / n for n in REAL}, {})
    servers, clients, datas = [holder_server], {}, {}
    for index, name in enumerate(REAL):
        config = init_site(name, str(study.site_bfiles[index]), str(study.pheno_path), str(study.covar_path),
                           root / name, "127.0.0.1:0", roster=root / "roster.toml", he_context_sha256=pin,
                           access=AccessPolicy(any_study=True, allow_cohort_differencing=False))
        data = load_site_data(load_site_config(config))
        server, port = make_server(data, "127.0.0.1:0")
        server.start()
        servers.append(server)
        clients[name], datas[name] = client_for(name, port), data
    yield Coordinator(clients, roster), datas, key_holder, root / "kh" / STORE_FILE
    key_holder.close()
    for client in clients.values():
        client.close()
    for server in servers:
        server.stop(grace=None)


def _tasks(key_holder: KeyHolderClient, study: str, **changes) -> dict[str, TaskSpec]:
    fields = dict(study_id=study, round=1, analysis="qc", cohort=CohortRequest(""), privacy="he",
                  participants=REAL, block_size=BLOCK_SIZE, variant_index=np.arange(N_VARIANTS),
                  flip=np.zeros(N_VARIANTS, bool), requester="mallory",
                  parameters={"audit.request_id": uuid.uuid4().hex},
                  privacy_material={"he_context": key_holder.public_context()})
    fields.update(changes)
    return {name: TaskSpec(**fields) for name in REAL}


def _counts(data) -> np.ndarray:
    """Naive genotype counts (hom A1, het, hom A2, missing) of one site: the oracle."""
    g = data.genotypes.read_block(np.arange(N_VARIANTS), data.cohort(CohortRequest("")).sample_index)
    return np.stack([(g == 2).sum(0), (g == 1).sum(0), (g == 0).sum(0), (g == MISSING_INT8).sum(0)], axis=1)


def _aggregate(public: PublicContext, result, members, block: int) -> bytes:
    n = he_encoding.n_ciphertexts(_values(block))
    total = public.load(result.blocks[members[0]][block], n)
    for name in members[1:]:
        total.add(public.load(result.blocks[name][block], n))
    return total.to_bytes()


def _values(block: int) -> int:
    return (min(N_VARIANTS, (block + 1) * BLOCK_SIZE) - block * BLOCK_SIZE) * WIDTH


def _register(key_holder: KeyHolderClient, public: PublicContext, study: str, participants) -> RoundDecryptor:
    n_blocks = -(-N_VARIANTS // BLOCK_SIZE)
    registration = RoundRegistration(study, 1, tuple(participants), tuple(_values(b) for b in range(n_blocks)),
                                     he_encoding.ENCODING, public.fingerprint)
    return RoundDecryptor(key_holder, study, 1, key_holder.register_round(registration))


def test_a_live_site_claimed_dropped_is_never_released_alone(consortium) -> None:
    coordinator, datas, key_holder, store = consortium
    tasks = _tasks(key_holder, "he-false-dropout")
    public = PublicContext(tasks["site1"].privacy_material["he_context"])
    survivors = ("site1", "site2")  # site3 is alive and delivered every block: the claim is false
    result = coordinator.run(tasks, survivors=survivors)
    assert set(result.blocks["site3"]) == {0, 1, 2}  # the coordinator holds site3's ciphertexts
    assert "refuses the survivor set ['site1', 'site2']" in str(result.errors["site3"])

    # Bonawitz's rule: the survivors revealed site3's mask key, never its self-tag seed.
    for name in survivors:
        kinds = {(share.owner, share.secret) for share in result.reveals[name].shares}
        assert ("site3", MASK_KEY) in kinds and ("site3", SELF_MASK) not in kinds
    # What the claim legitimately buys: the survivors' sum (the same a real dropout would give).
    unmasker = coordinator.recover(result, survivors, tasks["site1"], len(REAL))
    legit = _register(key_holder, public, "he-false-dropout", survivors)
    totals = [legit.decrypt(b, _values(b), _aggregate(public, result, survivors, b),
                            he_encoding_offsets(unmasker, b)) for b in range(3)]
    np.testing.assert_array_equal(np.concatenate(totals).reshape(N_VARIANTS, WIDTH),
                                  _counts(datas["site1"]) + _counts(datas["site2"]))

    # The attack: rebuild site3's mask key from the reveals and compute its pairwise tags exactly ...
    pieces = [shamir.Share(s.x, shamir.from_bytes(s.y)) for name in survivors
              for s in result.reveals[name].shares if (s.owner, s.secret) == ("site3", MASK_KEY)]
    mask_key = X25519PrivateKey.from_private_bytes(shamir.combine(pieces, 2).to_bytes(32, "big"))
    ads = result.advertisements
    assert secagg.public_key_bytes(mask_key) == ads["site3"].mask_key
    context = round_context(ads["site1"].task_digest, list(ads.values()))
    pairs = {s: secagg.pair_key(mask_key, "site3", s, ads[s].mask_key, context) for s in survivors}
    pairwise_only = secagg.RoundMasker("site3", None, pairs, context)  # its self seed was never revealed
    n_tags = he_encoding.n_ciphertexts(_values(0)) * he_encoding.TAGS_PER_CIPHERTEXT
    offsets = pairwise_only.tags(0, n_tags, he_encoding.TAG_BITS).reshape(-1, 2)
    # ... then ask for site3's block 0 alone, and for the sum of all three with every offset it knows.
    alone = _register(key_holder, public, "he-site3-alone", ("site3", "site1"))
    with pytest.raises(StudyFailed, match=REFUSAL):
        alone.decrypt(0, _values(0), result.blocks["site3"][0], offsets)
    everyone = _register(key_holder, public, "he-all-three", REAL)
    known = (he_encoding_offsets(unmasker, 1) + pairwise_only.tags(1, n_tags, he_encoding.TAG_BITS).reshape(-1, 2)
             ) % 2**he_encoding.TAG_BITS  # every tag but site3's self tags: a pairwise tag of 3 with 1 or 2 is known
    with pytest.raises(StudyFailed, match=REFUSAL):
        everyone.decrypt(1, _values(1), _aggregate(public, result, REAL, 1), known)
    events = KeyHolderStore(store).events()
    assert [e.study for e in events if e.kind == "released"] == ["he-false-dropout"] * 3
    assert {e.study for e in events if e.kind == "refused"} == {"he-site3-alone", "he-all-three"}
    assert all("tag check" in e.detail for e in events if e.kind == "refused")

    # Nor can a later round over all three difference site3 out: its statistics were released over
    # {site1, site2}, and the survivors refuse them over another set.
    rerun = coordinator.run(_tasks(key_holder, "he-false-dropout", round=2))
    assert "already released" in str(rerun.errors["site1"])


def he_encoding_offsets(unmasker, block: int) -> np.ndarray:
    """The tag offsets of the survivors' sum of ``block`` (what the honest coordinator states)."""
    n = he_encoding.n_ciphertexts(_values(block))
    return unmasker.tag_offsets(block, n * he_encoding.TAGS_PER_CIPHERTEXT, he_encoding.TAG_BITS).reshape(n, 2)
