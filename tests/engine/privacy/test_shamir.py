"""Shamir secret sharing over GF(2^521 - 1), against a naive reference and from the attacker's side."""

from __future__ import annotations

import itertools
import secrets

import pytest

from engine.errors import PrivacyError
from engine.privacy import shamir


def _naive_lagrange(points: list[tuple[int, int]]) -> int:
    """Lagrange interpolation at 0 with Python fractions (independent of the module's modular inverse)."""
    from fractions import Fraction

    total = Fraction(0)
    for i, (xi, yi) in enumerate(points):
        term = Fraction(yi)
        for j, (xj, _) in enumerate(points):
            if i != j:
                term *= Fraction(-xj, xi - xj)
        total += term
    # the polynomial lives in GF(p): reduce the rational result there
    return (total.numerator * pow(total.denominator, -1, shamir.PRIME)) % shamir.PRIME


@pytest.mark.parametrize("n, t", [(2, 2), (3, 2), (5, 3), (7, 7)])
def test_every_t_subset_reconstructs_and_matches_naive_interpolation(n: int, t: int) -> None:
    secret = int.from_bytes(secrets.token_bytes(32), "big")
    shares = shamir.split(secret, n, t)
    assert [s.x for s in shares] == list(range(1, n + 1))
    for subset in itertools.combinations(shares, t):
        assert shamir.combine(list(subset), t) == secret
        assert _naive_lagrange([(s.x, s.y) for s in subset]) == secret


def test_fewer_than_t_shares_are_refused_and_reveal_nothing_systematic() -> None:
    shares = shamir.split(12345, 5, 3)
    with pytest.raises(PrivacyError, match="cannot reconstruct"):
        shamir.combine(shares[:2], 3)
    # Interpolating t - 1 shares as if t were t - 1 gives a value unrelated to the secret.
    assert shamir.combine(shares[:2], 2) != 12345
    # Two sharings of the same secret differ (fresh random coefficients).
    assert shamir.split(12345, 5, 3)[0].y != shares[0].y


def test_repeated_points_and_out_of_field_values_are_refused() -> None:
    shares = shamir.split(7, 3, 2)
    with pytest.raises(PrivacyError, match="repeat"):
        shamir.combine([shares[0], shares[0]], 2)
    with pytest.raises(PrivacyError, match="outside the field"):
        shamir.from_bytes((shamir.PRIME).to_bytes(shamir.SHARE_BYTES, "big"))
    assert shamir.from_bytes(shamir.to_bytes(shares[1].y)) == shares[1].y
    with pytest.raises(ValueError):
        shamir.split(7, 3, 4)
