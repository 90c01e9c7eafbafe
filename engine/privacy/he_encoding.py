"""Exact fixed-point packing of statistic blocks into CKKS complex slots (pure numpy, no TenSEAL).

CKKS decrypts to ``m + e``: the message plus a small noise ``e`` that depends on the secret key.
Releasing ``m + e`` lets whoever sees it recover the key (Li & Micciancio, EUROCRYPT 2021). We
therefore only ever encrypt **integers** and release ``round(m + e)``, which equals ``m`` exactly
while ``|e| < 1/2``: what leaves the key holder is a function of the plaintext sum alone, not of the
noise. With the protocol's parameters (:mod:`engine.privacy.he`: N = 8192, q = 2^60, scale 2^22) a sum of
fresh encryptions has ``|e|`` of a few 1e-3 on integers up to 2^35 in absolute value; the decoder
refuses any slot further than :data:`TOLERANCE` from an integer, so a bad ciphertext is refused,
never released.

Each statistic ``x`` becomes the fixed-point integer ``X = round(x * 2^FRACTION_BITS)`` split into
two limbs, ``X = hi * 2^LOW_BITS + lo`` with ``0 <= lo < 2^LOW_BITS``, carried by one complex slot
``hi + 1j * lo``: both halves of the slot hold data, so a ciphertext of 4096 slots carries 4095
statistics (the last slot holds two tags, below). Summing over sites adds limbs slot-wise; the key
holder rounds each limb sum and recombines ``HI * 2^(LOW_BITS - FRACTION_BITS) + LO * 2^-FRACTION_BITS``
in float64. Precision is absolute, ``2^-24 ~ 6e-8`` per site (the relative error is below 1e-7
for every statistic of magnitude >= 1); the range is ``|x| < 2^41 / n_sites`` per site (about 5e11
for 4 sites), checked at encoding time (refused, never wrapped) and again at decoding.

Tags: the last slot of every ciphertext carries two integers in ``[0, 2^LOW_BITS)`` derived from
the site's secure-aggregation keys of the round (:meth:`engine.privacy.secagg.RoundMasker.tags`): its
self mask plus its pairwise masks, as in double-masked secure aggregation. Over the survivors of a
round they sum, modulo ``2^LOW_BITS``, to the *tag offsets* that only the survivors' revealed seeds
and the dropped sites' revealed mask keys give (:meth:`engine.privacy.secagg.Unmasker.tag_offsets`);
over any other set of sites (one site's block, a partial sum) the sum is uniformly random. The key
holder releases a block only if every tag sum equals its offset modulo ``2^LOW_BITS``, so a single
site's ciphertext (or any partial sum) is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.errors import PrivacyError, RingOverflowError

#: Wire encoding of a block protected this way (``BlockHeader.encoding``).
ENCODING = "ckks-int2-v1"
SLOTS_PER_CIPHERTEXT = 4096
DATA_SLOTS = SLOTS_PER_CIPHERTEXT - 1
FRACTION_BITS = 24
LOW_BITS = 30
#: Largest |limb sum| (as a power of two) that decrypts exactly with the protocol's parameters.
CAPACITY_BITS = 35
#: lo limbs are < 2^LOW_BITS per site, so at most 2^(CAPACITY_BITS - LOW_BITS) sites fit.
MAX_PARTIES = 2 ** (CAPACITY_BITS - LOW_BITS)
#: A decrypted slot further than this from an integer is refused (honest sums stay below ~0.01).
TOLERANCE = 0.125
TAGS_PER_CIPHERTEXT = 2
TAG_BITS = LOW_BITS

_HI_SCALE = 2.0 ** (FRACTION_BITS - LOW_BITS)
_LO_SCALE = 2.0 ** FRACTION_BITS


def n_ciphertexts(n_values: int) -> int:
    """Ciphertexts needed for ``n_values`` statistics (4095 per ciphertext; at least one)."""
    if n_values < 1:
        raise ValueError(f"n_values must be >= 1, got {n_values}")
    return -(-n_values // DATA_SLOTS)


def _check_parties(n_parties: int) -> None:
    if not 1 <= n_parties <= MAX_PARTIES:
        raise PrivacyError(f"homomorphic-encryption mode supports 1 to {MAX_PARTIES} sites per round, got {n_parties}")


def max_abs_for(n_parties: int) -> float:
    """Largest |x| one party may encode so that the sum over ``n_parties`` still decodes exactly.

    The hi limb of each party is bounded by ``2^(CAPACITY_BITS - ceil(log2 n))``, so the hi sum stays
    below ``2^CAPACITY_BITS``; the lo sum is below ``n * 2^LOW_BITS <= 2^CAPACITY_BITS``.
    """
    _check_parties(n_parties)
    slack = math.ceil(math.log2(n_parties)) if n_parties > 1 else 0
    return float(2.0 ** (CAPACITY_BITS - slack + LOW_BITS - FRACTION_BITS))


def encode(values: np.ndarray, n_parties: int) -> np.ndarray:
    """Pack float64 ``values`` (any shape, flattened to ``n``) into complex slots, tags left at zero.

    Returns
    -------
    numpy.ndarray
        ``(n_ciphertexts(n), SLOTS_PER_CIPHERTEXT)`` complex128; slot ``k`` of the flattened data
        area holds ``hi_k + 1j * lo_k`` (exact integers), padding slots and tag slots are 0.

    Raises
    ------
    RingOverflowError
        If a value is not finite or ``|x| >= max_abs_for(n_parties)``: refused, never wrapped.
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise RingOverflowError(f"statistic #{bad} is {flat[bad]!r}; only finite values can be encrypted")
    limit = max_abs_for(n_parties)
    if flat.size and float(np.max(np.abs(flat))) >= limit:
        bad = int(np.argmax(np.abs(flat)))
        raise RingOverflowError(
            f"statistic #{bad} = {flat[bad]:.6g} exceeds the homomorphic-encryption fixed-point range "
            f"+-{limit:.3g} for {n_parties} sites; refusing rather than wrapping"
        )
    hi = np.floor(flat * _HI_SCALE)  # exact: a power-of-two scaling, then floor
    lo = np.rint((flat - hi / _HI_SCALE) * _LO_SCALE)  # the low bits of x, in [0, 2^LOW_BITS]
    carry = lo >= 2.0**LOW_BITS
    hi[carry] += 1.0
    lo[carry] -= 2.0**LOW_BITS
    slots = np.zeros((n_ciphertexts(max(flat.size, 1)), SLOTS_PER_CIPHERTEXT), dtype=np.complex128)
    data = slots[:, :DATA_SLOTS].reshape(-1)  # a copy: write it back below
    data[: flat.size] = hi + 1j * lo
    slots[:, :DATA_SLOTS] = data.reshape(-1, DATA_SLOTS)
    return slots


def attach_tags(slots: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """``slots`` with each ciphertext's last slot set to its two tags (a new array).

    ``tags`` has shape ``(n_ciphertexts, 2)``, integers in ``[0, 2^TAG_BITS)``.
    """
    tags = np.asarray(tags)
    if tags.shape != (slots.shape[0], TAGS_PER_CIPHERTEXT) or (tags.size and int(tags.max()) >= 2**TAG_BITS):
        raise ValueError(f"tags must be ({slots.shape[0]}, 2) integers below 2^{TAG_BITS}, got {tags.shape}")
    out = slots.copy()
    out[:, DATA_SLOTS] = tags[:, 0].astype(np.float64) + 1j * tags[:, 1].astype(np.float64)
    return out


@dataclass(frozen=True)
class DecodedBlock:
    """A released block: float64 ``values`` ``(n_values,)`` and the largest distance of a decrypted
    slot from its integer (kept at the key holder, for its log; never sent to the aggregator)."""

    values: np.ndarray
    max_deviation: float


def decode(slots: np.ndarray, n_values: int, n_parties: int, tag_offsets: np.ndarray | None = None) -> DecodedBlock:
    """Exact totals from the decrypted sum over ``n_parties`` sites of :func:`encode` blocks.

    ``slots`` ``(n_ciphertexts(n_values), SLOTS_PER_CIPHERTEXT)`` complex128, as decrypted;
    ``tag_offsets`` ``(n_ciphertexts(n_values), TAGS_PER_CIPHERTEXT)`` integers in ``[0, 2^TAG_BITS)``,
    what the tags must sum to modulo ``2^TAG_BITS`` (``None``: zero, tags of pairwise masks only).

    Raises
    ------
    PrivacyError
        If a slot is not within :data:`TOLERANCE` of an integer (a corrupt ciphertext or lost
        precision), a tag sum is not its offset modulo ``2^TAG_BITS`` (not the aggregate of every
        survivor of the round), padding is not zero, or a limb sum is outside the range honest sums reach.
        The message says which check failed but not by how much: deviations depend on the noise.
    """
    _check_parties(n_parties)
    expected = (n_ciphertexts(n_values), SLOTS_PER_CIPHERTEXT)
    if slots.shape != expected:
        raise PrivacyError(f"decrypted block has shape {slots.shape}, expected {expected}")
    parts = np.stack([slots.real, slots.imag])  # (2, n_ct, SLOTS)
    rounded = np.rint(parts)
    deviation = float(np.max(np.abs(parts - rounded))) if parts.size else 0.0
    if not np.isfinite(deviation) or deviation > TOLERANCE:
        raise PrivacyError("the aggregate failed the precision check (decrypted values are not integers): "
                           "a ciphertext was corrupt or not produced by the protocol; nothing is released")
    tags = rounded[:, :, DATA_SLOTS]
    offsets = np.zeros(tags.shape) if tag_offsets is None else np.asarray(tag_offsets, dtype=np.float64).T
    if offsets.shape != tags.shape or np.any(offsets < 0) or np.any(offsets >= 2.0**TAG_BITS):
        raise PrivacyError(f"the tag offsets must be {expected[0]} x {TAGS_PER_CIPHERTEXT} integers below 2^{TAG_BITS}")
    if np.any(tags < 0) or np.any(tags >= n_parties * 2.0**TAG_BITS) or \
            np.any(np.mod(tags - offsets, 2.0**TAG_BITS) != 0):
        raise PrivacyError("the aggregate failed the tag check: it is not the sum of every registered "
                           "participant's block for this round; nothing is released")
    data = rounded[:, :, :DATA_SLOTS].reshape(2, -1)
    hi, lo = data[0, :n_values], data[1, :n_values]
    if np.any(data[:, n_values:] != 0):
        raise PrivacyError("the aggregate failed the padding check; nothing is released")
    if np.any(np.abs(hi) > 2.0**CAPACITY_BITS) or np.any(lo < 0) or np.any(lo >= n_parties * 2.0**LOW_BITS):
        raise PrivacyError("the aggregate is outside the range of valid sums; nothing is released")
    return DecodedBlock(values=hi / _HI_SCALE + lo / _LO_SCALE, max_deviation=deviation)
