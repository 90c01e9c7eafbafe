"""Exact fixed-point packing for HE mode (engine.privacy.he_encoding), checked without any encryption.

The oracle is exact rational arithmetic: each site's value rounded to the 2^-24 grid, summed exactly.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from engine.privacy import he_encoding as H
from engine.errors import PrivacyError, RingOverflowError


def _tags(n_parties: int, n_ct: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Zero-sum tags, as sites derive them from pairwise masks (here: random, last one closes the sum)."""
    tags = [rng.integers(0, 2**H.TAG_BITS, size=(n_ct, 2), dtype=np.uint64) for _ in range(n_parties - 1)]
    closing = (-sum(t.astype(np.int64) for t in tags)) % 2**H.TAG_BITS if tags else np.zeros((n_ct, 2), np.int64)
    return tags + [closing.astype(np.uint64)]


def _aggregate(values: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    packed = [H.encode(v, n) for v in values]
    return sum(H.attach_tags(p, t) for p, t in zip(packed, _tags(n, packed[0].shape[0], rng)))


@pytest.mark.parametrize("n_parties", [2, 3, 4, 7, 32])
def test_sum_is_the_exact_fixed_point_sum(n_parties: int) -> None:
    rng = np.random.default_rng(n_parties)
    n_values = 9000  # three ciphertexts, the last one partly padding
    values = [rng.normal(size=n_values) * 10.0 ** rng.integers(-9, 11, size=n_values) for _ in range(n_parties)]
    limit = H.max_abs_for(n_parties)
    values[0][:4] = [limit * 0.999999, -limit * 0.999999, 2.0**-25, -(2.0**-25)]
    decoded = H.decode(_aggregate(values, rng), n_values, n_parties)
    grid = 2**H.FRACTION_BITS
    for k in list(range(12)) + list(rng.integers(0, n_values, size=200)):
        exact = sum(Fraction(round(Fraction(float(v[k])) * grid), grid) for v in values)
        assert decoded.values[k] == float(exact), k
    assert decoded.max_deviation == 0.0


def test_precision_of_realistic_statistics() -> None:
    """Sums of ~1e9 keep ~1e-16 relative precision; every value >= 1 keeps 1e-7; tiny ones 1e-7 absolute."""
    rng = np.random.default_rng(1)
    values = [np.concatenate([rng.uniform(1e8, 4e8, 1000), rng.uniform(1, 10, 1000), rng.normal(0, 1e-3, 1000)])
              for _ in range(4)]
    total = H.decode(_aggregate(values, rng), 3000, 4).values
    exact = np.array([math.fsum(column) for column in zip(*values)])
    assert np.all(np.abs(total - exact) <= 4 * 2.0**-25 + 2.0**-52 * np.abs(exact))
    big = np.abs(exact) >= 1
    assert np.max(np.abs(total - exact)[big] / np.abs(exact[big])) < 1.2e-7


def test_out_of_range_and_non_finite_values_are_refused_not_wrapped() -> None:
    limit = H.max_abs_for(3)
    with pytest.raises(RingOverflowError, match="exceeds the homomorphic-encryption fixed-point range"):
        H.encode(np.array([1.0, -limit]), 3)
    with pytest.raises(RingOverflowError, match="only finite"):
        H.encode(np.array([np.inf]), 3)
    with pytest.raises(PrivacyError, match="supports 1 to 32 sites"):
        H.encode(np.ones(3), 33)


def test_layout_uses_every_slot_but_one_per_ciphertext() -> None:
    assert H.n_ciphertexts(4095) == 1 and H.n_ciphertexts(4096) == 2 and H.n_ciphertexts(8192 * 36) == 73
    slots = H.encode(np.arange(5000.0), 2)
    assert slots.shape == (2, H.SLOTS_PER_CIPHERTEXT)
    assert slots[0, 4] == 0 + 1j * 4 * 2**24 and slots[:, H.DATA_SLOTS].tolist() == [0, 0]


def _honest(n_parties: int = 3, n_values: int = 5000) -> tuple[np.ndarray, int, int]:
    rng = np.random.default_rng(7)
    values = [rng.normal(size=n_values) * 1e3 for _ in range(n_parties)]
    return _aggregate(values, rng), n_values, n_parties


def test_noise_below_tolerance_is_rounded_away() -> None:
    slots, n_values, n_parties = _honest()
    noise = np.random.default_rng(8).uniform(-0.1, 0.1, size=slots.shape * np.array([1, 1]))
    exact = H.decode(slots, n_values, n_parties).values
    noisy = H.decode(slots + noise + 1j * noise[::-1], n_values, n_parties)
    np.testing.assert_array_equal(noisy.values, exact)
    assert 0.09 < noisy.max_deviation <= 0.1


def test_decoder_refuses_imprecise_partial_or_malformed_aggregates() -> None:
    slots, n_values, n_parties = _honest()
    imprecise = slots.copy()
    imprecise[1, 10] += 0.3
    with pytest.raises(PrivacyError, match="precision check") as info:
        H.decode(imprecise, n_values, n_parties)
    assert "0.3" not in str(info.value)  # the refusal does not reveal the size of the deviation
    rng = np.random.default_rng(9)
    one_site = H.attach_tags(H.encode(rng.normal(size=n_values), n_parties), _tags(n_parties, 2, rng)[0])
    with pytest.raises(PrivacyError, match="tag check"):
        H.decode(one_site, n_values, n_parties)
    padded = slots.copy()
    padded[-1, H.DATA_SLOTS - 1] += 1
    with pytest.raises(PrivacyError, match="padding"):
        H.decode(padded, n_values, n_parties)
    huge = slots.copy()
    huge[0, 0] += 2.0**40
    with pytest.raises(PrivacyError, match="outside the range"):
        H.decode(huge, n_values, n_parties)
    with pytest.raises(PrivacyError, match="shape"):
        H.decode(slots[:1], n_values, n_parties)
    with pytest.raises(PrivacyError, match="precision check"):
        H.decode(slots * np.nan, n_values, n_parties)


def test_tags_must_sum_to_the_stated_offsets() -> None:
    """Double-masked tags: a block opens only if each tag sum equals its offset modulo 2^30."""
    rng = np.random.default_rng(4)
    n_parties, n_values = 3, 5000
    values = [rng.normal(size=n_values) for _ in range(n_parties)]
    tags = [rng.integers(0, 2**H.TAG_BITS, size=(2, 2), dtype=np.uint64) for _ in range(n_parties)]
    slots = sum(H.attach_tags(H.encode(v, n_parties), t) for v, t in zip(values, tags))
    offsets = (sum(t.astype(np.int64) for t in tags)) % 2**H.TAG_BITS
    np.testing.assert_allclose(H.decode(slots, n_values, n_parties, offsets).values, np.sum(values, axis=0),
                               atol=n_parties * 2.0**-24)
    for wrong in (None, (offsets + 1) % 2**H.TAG_BITS, np.roll(offsets, 1)):
        with pytest.raises(PrivacyError, match="tag check"):
            H.decode(slots, n_values, n_parties, wrong)
    for malformed in (offsets[:1], offsets + 2**H.TAG_BITS, -offsets - 1):
        with pytest.raises(PrivacyError, match="tag offsets must be 2 x 2 integers below 2"):
            H.decode(slots, n_values, n_parties, malformed)
