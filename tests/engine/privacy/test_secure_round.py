"""The secure-aggregation round protocol without transport: masks, dropout recovery, consistency check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.privacy import ring
from engine.errors import PrivacyError, ProtocolError, RingOverflowError
from engine.privacy import roster as roster_module
from engine.privacy.roster import Roster, RosterEntry
from engine.privacy.secure_round import SiteRound, encode, recover, round_context
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


def _rounds(consortium, digest: bytes = b"d" * 32, threshold: int = 0) -> dict[str, SiteRound]:
    keys, roster = consortium
    return {n: SiteRound(n, keys[n], roster, NAMES, threshold, digest, 2) for n in NAMES}


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
    with pytest.raises(PrivacyError, match="between a majority"):
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
