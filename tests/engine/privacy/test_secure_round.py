"""The secure-aggregation round protocol without transport: masks, dropout recovery, consistency check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from engine.privacy import ring
from engine.errors import PrivacyError, ProtocolError, RingOverflowError
from engine.privacy import roster as roster_module
from engine.privacy.roster import Roster, RosterEntry
from engine.privacy import secagg, shamir
from engine.privacy.secure_round import (MASK_KEY, SELF_MASK, SiteRound, SurvivorSignature, encode, recover,
                                         round_context, safe_threshold, survivors_message)
from engine.tasks import CohortRequest, TaskSpec

NAMES = ("a", "b", "c", "d")


def _task(**changes) -> TaskSpec:
    fields = dict(study_id="s", round=1, analysis="qc", cohort=CohortRequest(""), privacy="secagg",
                  participants=NAMES, block_size=4, variant_index=np.arange(6), flip=np.zeros(6, bool))
    fields.update(changes)
    return TaskSpec(**fields)


@pytest.fixture
def consortium():
    keys = {name: roster_module.generate_identity_key() for name in NAMES}
    roster = Roster(tuple(RosterEntry(n, roster_module.public_bytes(k)) for n, k in keys.items()))
    return keys, roster


def _rounds(consortium, digest: bytes = b"d" * 32, threshold: int = 0, colluders: int = 0) -> dict[str, SiteRound]:
    keys, roster = consortium
    return {n: SiteRound(n, keys[n], roster, NAMES, threshold, digest, 2, colluders) for n in NAMES}


def _exchange(rounds: dict[str, SiteRound]) -> None:
    ads = [r.advertisement for r in rounds.values()]
    for r in rounds.values():
        r.receive_keys(ads)
    outgoing = {n: r.shares() for n, r in rounds.items()}
    for n, r in rounds.items():
        r.receive_shares([s for shares in outgoing.values() for s in shares if s.recipient == n])


def test_recovery_of_a_dropped_site_gives_the_survivors_exact_sum(consortium) -> None:
    rng = np.random.default_rng(1)
    rounds = _rounds(consortium)
    _exchange(rounds)
    values = {n: rng.normal(size=(2, 10)) for n in NAMES}
    masked = {n: r.masker().mask(ring.encode(values[n], 4), block=0) for n, r in rounds.items()}
    survivors = ("a", "b", "d")  # c dropped after the shares were exchanged
    signatures = [rounds[n].sign_survivors(survivors) for n in survivors]
    reveals = [rounds[n].reveal(signatures) for n in survivors]
    ads = {n: r.advertisement for n, r in rounds.items()}
    unmasker = recover(rounds["a"].context, ads, survivors, reveals, rounds["a"].threshold)
    total = masked["a"]
    for n in ("b", "d"):
        total = ring.add(total, masked[n])
    np.testing.assert_allclose(ring.decode(unmasker.unmask(total, 0), 4).reshape(2, 10),
                               values["a"] + values["b"] + values["d"], rtol=0, atol=1e-9)
    # Without the reveals the survivors' sum is still masked (uniform in the ring): it does not decode.
    with pytest.raises(RingOverflowError):
        ring.decode(total, 4)
    # Nobody revealed both a site's seed and its mask key.
    for reveal in reveals:
        kinds = {(s.owner, s.secret) for s in reveal.shares}
        assert ("c", "mask_key") in kinds and ("c", "self_mask") not in kinds
        assert all((o, "mask_key") not in kinds for o in survivors)


def test_a_forged_signature_or_a_foreign_site_is_refused(consortium) -> None:
    keys, roster = consortium
    rounds = _rounds(consortium)
    ads = [r.advertisement for r in rounds.values()]
    forged = dataclasses.replace(ads[1], mask_key=b"\x01" * 32)
    with pytest.raises(PrivacyError, match="not signed by its roster identity key"):
        rounds["a"].receive_keys([ads[0], forged, *ads[2:]])
    with pytest.raises(PrivacyError, match="not in its consortium roster"):
        SiteRound("a", keys["a"], roster, ("a", "sybil"), 0, b"d" * 32, 2)
    other = SiteRound("b", keys["b"], roster, NAMES, 0, b"x" * 32, 2)  # shown another task
    with pytest.raises(PrivacyError, match="signed another task"):
        rounds["a"].receive_keys([ads[0], other.advertisement, *ads[2:]])


def test_unmasking_needs_threshold_signatures_over_the_same_set(consortium) -> None:
    rounds = _rounds(consortium)
    _exchange(rounds)
    survivors = ("a", "b", "c")
    signature_a = rounds["a"].sign_survivors(survivors)
    with pytest.raises(PrivacyError, match="1 valid survivor signature"):
        rounds["a"].reveal([signature_a])
    other_set = rounds["b"].sign_survivors(("a", "b", "d"))
    with pytest.raises(PrivacyError, match="2 valid survivor signature"):
        rounds["a"].reveal([signature_a, other_set, rounds["c"].sign_survivors(survivors)][::2] + [other_set])
    with pytest.raises(PrivacyError, match="needs at least 3"):
        rounds["d"].sign_survivors(("a", "d"))
    with pytest.raises(PrivacyError, match="already signed another survivor set"):
        rounds["b"].sign_survivors(survivors)


def test_thresholds_below_a_majority_are_refused(consortium) -> None:
    with pytest.raises(PrivacyError, match="between 3"):
        _rounds(consortium, threshold=2)
    keys, roster = consortium
    with pytest.raises(ProtocolError, match="not among"):
        SiteRound("a", keys["a"], roster, ("b", "c"), 0, b"d" * 32, 2)


def test_the_canonical_encoding_separates_what_string_joins_confuse() -> None:
    assert encode(("S#R", "")) != encode(("S", "R"))
    assert encode((1,)) != encode(("1",)) and encode([b"ab", b"c"]) != encode([b"a", b"bc"])


def test_context_depends_on_every_field_of_the_task() -> None:
    from engine.privacy.secure_round import task_digest

    base = task_digest(_task(parameters={"audit.request_id": "R"}))
    assert task_digest(_task(study_id="s#R")) != base
    assert task_digest(_task(round=2, parameters={"audit.request_id": "R"})) != base
    assert task_digest(_task(threshold=3, parameters={"audit.request_id": "R"})) != base
    assert task_digest(_task(parameters={"audit.request_id": "R2"})) != base
    # The site's own rows and flips are bound separately (site_arrays_digest), not into the shared digest.
    assert task_digest(_task(flip=np.ones(6, bool), parameters={"audit.request_id": "R"})) == base
    assert round_context(base, []) != round_context(base + b"x", [])


def _equivocate(rounds: dict[str, SiteRound], keys, colluders: tuple[str, ...], victim: str, honest: str):
    """A coordinator with ``colluders`` shows ``honest`` a survivor set without ``victim`` and ``victim``
    a set with it; the colluders sign both sets and hand over every share they hold. Returns the
    reveals each honest site made (or the PrivacyError it raised) and the colluders' shares."""
    context = rounds[victim].context
    without = tuple(sorted({honest, *colluders}))
    with_victim = tuple(sorted({victim, *colluders}))
    outcome = {}
    for site, shown in ((honest, without), (victim, with_victim)):
        forged = [SurvivorSignature(c, shown, roster_module.sign(keys[c], survivors_message(context, shown)))
                  for c in colluders]
        try:
            outcome[site] = rounds[site].reveal([rounds[site].sign_survivors(shown), *forged])
        except PrivacyError as error:
            outcome[site] = error
    held = {c: rounds[c]._held[victim] for c in colluders}  # a colluder's own memory: (x, seed share, key share)
    return outcome, held


def test_colluders_signing_two_survivor_sets_unmask_a_live_site_below_the_safe_threshold(consortium) -> None:
    """The attack the threshold rule stops: 4 sites, 2 colluding (c, d), threshold 3 (a majority, below
    safe_threshold(4, 2) = 4). Shown {b, c, d}, b reveals a's mask key; shown {a, c, d}, a reveals its
    own self-mask seed; with the colluders' shares the coordinator has both, hence a's input alone."""
    keys, _ = consortium
    rounds = _rounds(consortium)
    _exchange(rounds)
    value = np.random.default_rng(3).normal(size=(2, 10))
    masked = rounds["a"].masker().mask(ring.encode(value, 4), block=0)
    outcome, held = _equivocate(rounds, keys, ("c", "d"), victim="a", honest="b")
    seed_shares = [shamir.Share(s.x, shamir.from_bytes(s.y)) for s in outcome["a"].shares
                   if s.owner == "a" and s.secret == SELF_MASK]
    key_shares = [shamir.Share(s.x, shamir.from_bytes(s.y)) for s in outcome["b"].shares
                  if s.owner == "a" and s.secret == MASK_KEY]
    seed_shares += [shamir.Share(x, seed) for x, seed, _ in held.values()]
    key_shares += [shamir.Share(x, key) for x, _, key in held.values()]
    seed = shamir.combine(seed_shares, 3).to_bytes(32, "big")
    mask_key = X25519PrivateKey.from_private_bytes(shamir.combine(key_shares, 3).to_bytes(32, "big"))
    context = rounds["a"].context
    pairs = {("a", peer): secagg.pair_key(mask_key, "a", peer, rounds[peer].advertisement.mask_key, context)
             for peer in ("b", "c", "d")}
    alone = secagg.Unmasker({"a": secagg.self_key(seed, "a", context)}, pairs).unmask(masked, 0)
    np.testing.assert_allclose(ring.decode(alone, 4).reshape(2, 10), value, rtol=0, atol=1e-9)


def test_a_site_assuming_colluders_refuses_a_threshold_they_could_defeat(consortium) -> None:
    assert [safe_threshold(4, c) for c in range(3)] == [3, 3, 4]
    assert [safe_threshold(3, c) for c in range(3)] == [2, 3, 3]
    with pytest.raises(PrivacyError, match="between 4 .*assumes up to 2 colluding"):
        _rounds(consortium, threshold=3, colluders=2)
    keys, _ = consortium
    rounds = _rounds(consortium, threshold=4, colluders=2)
    _exchange(rounds)
    outcome, _ = _equivocate(rounds, keys, ("c", "d"), victim="a", honest="b")
    for site in ("a", "b"):  # neither honest site reveals anything: 3 signers cannot make 4 signatures
        assert isinstance(outcome[site], PrivacyError), site
