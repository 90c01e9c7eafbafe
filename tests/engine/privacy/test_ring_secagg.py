"""Fixed-point ring and pairwise masking: exact cancellation, refusal of overflow, key handling."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from engine.privacy import ring, secagg
from engine.errors import InputError, PrivacyError, ProtocolError, RingOverflowError
from engine.privacy.protection import BlockAggregator, make_protector


def test_encode_decode_round_trip_to_fixed_point_precision() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=10_000) * 10.0 ** rng.integers(-6, 20, size=10_000)
    decoded = ring.decode(ring.encode(values, 4), 4)
    assert np.max(np.abs(decoded - values) - 1e-15 * np.abs(values)) <= 2.0 ** -ring.FRACTION_BITS


def test_encoding_is_the_exact_twos_complement_on_both_paths() -> None:
    """Values whose fixed-point integer fits an int64 (the fast path) and larger ones, both signs."""
    values = np.array([0.0, 1.5, -1.5, 2.0**-40, -(2.0**-40), 8e6, -8e6, 2.0**22 * 3, 2.0**23, -(2.0**23),
                       1e12, -1e12, 3.7e20, -3.7e20])
    elements = ring.encode(values, 2)
    for value, (low, high) in zip(values, elements.tolist()):
        fixed = round(value * 2**ring.FRACTION_BITS) % 2**128
        assert low + (high << 64) == fixed, value
    sums = ring.add(elements, elements)  # crosses the int64 boundary both ways
    np.testing.assert_array_equal(ring.decode(sums, 2), 2 * values)


def test_ring_arithmetic_wraps_like_python_integers() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 2**63, size=(1000, 2), dtype=np.uint64) * np.uint64(2)
    b = rng.integers(0, 2**63, size=(1000, 2), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    as_int = lambda e: [int(lo) + (int(hi) << 64) for lo, hi in e]  # noqa: E731
    expected = [(x + y) % 2**128 for x, y in zip(as_int(a), as_int(b))]
    assert as_int(ring.add(a, b)) == expected
    assert as_int(ring.subtract(ring.add(a, b), b)) == as_int(a)


def test_overflow_and_non_finite_values_are_refused_not_wrapped() -> None:
    limit = ring.max_abs_for(3)
    with pytest.raises(RingOverflowError, match="exceeds the fixed-point range"):
        ring.encode(np.array([1.0, limit * 1.01]), 3)
    with pytest.raises(RingOverflowError, match="only finite"):
        ring.encode(np.array([np.nan]), 3)
    # Values just inside the bound sum without wrapping over the maximum number of parties.
    near = np.array([limit * 0.999, -limit * 0.999])
    total = ring.add(ring.add(ring.encode(near, 3), ring.encode(near, 3)), ring.encode(near, 3))
    np.testing.assert_allclose(ring.decode(total, 3), 3 * near, rtol=1e-12)


def test_decode_rejects_sums_outside_the_valid_range() -> None:
    garbage = np.array([[0, 2**62]], dtype=np.uint64)
    with pytest.raises(RingOverflowError, match="outside the range"):
        ring.decode(garbage, 2)


def _sites(n: int) -> tuple[list[str], list, dict[str, bytes]]:
    names = [f"site{i}" for i in range(n)]
    keys = [secagg.generate_private_key() for _ in names]
    return names, keys, {name: secagg.public_key_bytes(key) for name, key in zip(names, keys)}


def test_masks_cancel_only_in_the_full_sum() -> None:
    names, keys, peers = _sites(4)
    rng = np.random.default_rng(3)
    values = [rng.normal(size=500) * 100 for _ in names]
    masked = [secagg.PairwiseMasker(n, k, peers).mask(ring.encode(v, 4), "study", 1, 0)
              for n, k, v in zip(names, keys, values)]
    np.testing.assert_allclose(ring.decode(secagg.unmask_sum(masked), 4), np.sum(values, axis=0), atol=1e-9)
    # One site's masked vector looks nothing like its values, and a partial sum does not unmask.
    one = ring.from_bytes(ring.to_bytes(masked[0]))
    assert not np.allclose(one[:, 0].astype(float), ring.encode(values[0], 4)[:, 0].astype(float))
    partial = secagg.unmask_sum(masked[:3])
    with pytest.raises(RingOverflowError):
        ring.decode(partial, 4)


def test_masks_are_bound_to_round_and_block() -> None:
    names, keys, peers = _sites(2)
    masker = secagg.PairwiseMasker(names[0], keys[0], peers)
    zeros = ring.encode(np.zeros(64), 2)
    streams = {(r, b): masker.mask(zeros, "s", r, b).tobytes() for r in (1, 2) for b in (0, 1)}
    assert len(set(streams.values())) == 4


def test_masker_refuses_inconsistent_participants() -> None:
    names, keys, peers = _sites(3)
    with pytest.raises(PrivacyError, match="not this site's key"):
        secagg.PairwiseMasker(names[0], keys[1], peers)
    with pytest.raises(PrivacyError, match="not among"):
        secagg.PairwiseMasker("elsewhere", keys[0], peers)
    with pytest.raises(PrivacyError, match="at least two"):
        secagg.PairwiseMasker(names[0], keys[0], {names[0]: peers[names[0]]})


def test_private_key_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    key = secagg.generate_private_key()
    path = tmp_path / "keys" / "secagg.key"
    secagg.save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secagg.public_key_bytes(secagg.load_private_key(path)) == secagg.public_key_bytes(key)
    with pytest.raises(FileExistsError):
        secagg.save_private_key(secagg.generate_private_key(), path)
    path.write_bytes(b"short")
    with pytest.raises(InputError, match="expected 32"):
        secagg.load_private_key(path)


def test_block_aggregator_checks_encoding_duplicates_and_sizes() -> None:
    names, keys, peers = _sites(2)
    values = [np.arange(6.0), np.ones(6)]
    protectors = [make_protector("secagg", masker=secagg.PairwiseMasker(n, k, peers), study_id="s", round_=1)
                  for n, k in zip(names, keys)]
    aggregator = BlockAggregator("secagg", 2, 6)
    aggregator.add(names[0], protectors[0].encoding, protectors[0].protect(0, values[0]))
    with pytest.raises(ProtocolError, match="twice"):
        aggregator.add(names[0], protectors[0].encoding, protectors[0].protect(0, values[0]))
    with pytest.raises(ProtocolError, match="expected 'ring128-masked'"):
        aggregator.add(names[1], "float64", np.ones(6).tobytes())
    with pytest.raises(ProtocolError, match="1 of 2"):
        aggregator.total()
    aggregator.add(names[1], protectors[1].encoding, protectors[1].protect(0, values[1]))
    np.testing.assert_allclose(aggregator.total(), values[0] + values[1], atol=1e-9)
    with pytest.raises(PrivacyError, match="no masker"):
        make_protector("secagg")
    with pytest.raises(PrivacyError, match="not implemented"):
        make_protector("rot13")
    with pytest.raises(PrivacyError, match="homomorphic encryption requested but the key holder's public context"):
        make_protector("he", masker=secagg.PairwiseMasker(names[0], keys[0], peers))
