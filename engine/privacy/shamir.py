"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

A secret is an integer below :data:`PRIME` (the protocol shares 32-byte values: seeds and X25519
private keys). :func:`split` evaluates a random polynomial of degree ``t - 1`` whose constant term is
the secret at the points ``1..n``; any ``t`` shares give the secret back by Lagrange interpolation at
0 (:func:`combine`), and any ``t - 1`` shares are uniformly distributed whatever the secret. The
coefficients come from the OS CSPRNG (:mod:`secrets`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Sequence

from engine.errors import PrivacyError

#: The Mersenne prime 2^521 - 1: every 32-byte secret is a field element.
PRIME = (1 << 521) - 1
#: Bytes of a share value (big-endian), enough for any field element.
SHARE_BYTES = 66


@dataclass(frozen=True)
class Share:
    """One share: the evaluation point ``x`` (1..n) and the polynomial's value ``y`` there."""

    x: int
    y: int


def split(secret: int, n: int, t: int) -> list[Share]:
    """``n`` shares of ``secret`` of which any ``t`` reconstruct it (``1 <= t <= n``)."""
    if not 0 <= secret < PRIME:
        raise ValueError("the secret must be a field element (0 <= secret < 2^521 - 1)")
    if not 1 <= t <= n:
        raise ValueError(f"threshold {t} must be between 1 and the number of shares {n}")
    coefficients = [secret] + [secrets.randbelow(PRIME) for _ in range(t - 1)]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares.append(Share(x, y))
    return shares


def combine(shares: Sequence[Share], t: int) -> int:
    """The secret from at least ``t`` shares with distinct points (the first ``t`` are used).

    Raises
    ------
    PrivacyError
        Fewer than ``t`` shares, repeated points, or a point outside the field.
    """
    distinct = {share.x: share for share in shares}
    if len(distinct) != len(shares):
        raise PrivacyError("Shamir shares repeat an evaluation point")
    if len(shares) < t:
        raise PrivacyError(f"{len(shares)} Shamir share(s) cannot reconstruct a secret with threshold {t}")
    used = list(shares)[:t]
    if any(not 0 < s.x < PRIME or not 0 <= s.y < PRIME for s in used):
        raise PrivacyError("a Shamir share lies outside the field")
    secret = 0
    for i, share in enumerate(used):
        numerator, denominator = 1, 1
        for j, other in enumerate(used):
            if i != j:
                numerator = numerator * (-other.x) % PRIME
                denominator = denominator * (share.x - other.x) % PRIME
        secret = (secret + share.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret


def to_bytes(value: int) -> bytes:
    """A field element as :data:`SHARE_BYTES` big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def from_bytes(data: bytes) -> int:
    """Inverse of :func:`to_bytes`; refuses a value outside the field."""
    if len(data) != SHARE_BYTES:
        raise PrivacyError(f"a Shamir share value has {len(data)} bytes, expected {SHARE_BYTES}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise PrivacyError("a Shamir share value lies outside the field")
    return value
