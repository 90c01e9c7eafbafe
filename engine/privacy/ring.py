"""Fixed-point encoding of float64 statistics in the ring Z_(2^128), vectorised with numpy.

Secure aggregation adds masked integers modulo 2^128, so statistics are first encoded as fixed-point
integers: ``round(x * 2^FRACTION_BITS)``, two's complement in 128 bits. An element is stored as two
little-endian uint64 limbs, i.e. an array of shape ``(n, 2)`` ``[low, high]`` whose raw bytes are the
128-bit little-endian integers.

Why 128 bits: with 40 fractional bits (absolute precision 9e-13) there remain 87 integer bits, so sums
up to ~7e25 fit. A biobank of 10^7 participants with statistics of size 10^12 each is far inside that.
Overflow is refused at encoding time: every site's value is bounded so that the sum over all sites can
never wrap (``max_abs_for``), and decoding checks the sum against the same bound.
"""

from __future__ import annotations

import math

import numpy as np

from engine.errors import RingOverflowError

FRACTION_BITS = 40
_SCALE = float(2**FRACTION_BITS)
_TWO32 = float(2**32)
_TWO64 = float(2**64)
_MASK32 = np.uint64(0xFFFFFFFF)


def max_abs_for(n_parties: int) -> float:
    """Largest |x| one party may encode so that a sum over ``n_parties`` cannot wrap mod 2^128.

    Values in (-2^126, 2^126) decode unambiguously (with a bit to spare); each of ``n_parties``
    contributes at most 2^126 / n_parties in absolute value.
    """
    if n_parties < 1:
        raise ValueError(f"n_parties must be >= 1, got {n_parties}")
    slack = math.ceil(math.log2(n_parties)) if n_parties > 1 else 0
    return float(2 ** (126 - slack - FRACTION_BITS))


def _float_to_u64(values: np.ndarray) -> np.ndarray:
    """Exact conversion of integral float64 values in [0, 2^64) to uint64 (via two 32-bit halves)."""
    high = np.floor(values / _TWO32)
    low = values - high * _TWO32
    return (high.astype(np.uint64) << np.uint64(32)) | low.astype(np.uint64)


def negate(elements: np.ndarray) -> np.ndarray:
    """Additive inverse mod 2^128 of ``elements`` (shape ``(n, 2)`` uint64)."""
    return subtract(np.zeros_like(elements), elements)


#: |round(x * 2^FRACTION_BITS)| below this fits an int64: its 128-bit two's complement is the int64's
#: bits (low limb) and their sign extension (high limb), three numpy passes instead of ~15.
_INT64_BOUND = float(2**63)


def encode(values: np.ndarray, n_parties: int) -> np.ndarray:
    """Encode float64 ``values`` (any shape, flattened) as ring elements, shape ``(n, 2)`` uint64.

    Raises
    ------
    RingOverflowError
        If a value is NaN/inf or larger than ``max_abs_for(n_parties)``: refused, never wrapped.
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise RingOverflowError(f"statistic #{bad} is {flat[bad]!r}; only finite values can be aggregated")
    limit = max_abs_for(n_parties)
    if flat.size and float(np.max(np.abs(flat))) >= limit:
        bad = int(np.argmax(np.abs(flat)))
        raise RingOverflowError(
            f"statistic #{bad} = {flat[bad]:.6g} exceeds the fixed-point range +-{limit:.3g} "
            f"for {n_parties} parties; refusing rather than wrapping"
        )
    scaled = np.rint(flat * _SCALE)
    elements = np.empty((len(flat), 2), dtype=np.uint64)
    large = np.abs(scaled) >= _INT64_BOUND
    small = scaled if not np.any(large) else np.where(large, 0.0, scaled)
    as_int = small.astype(np.int64)
    elements[:, 0] = as_int.view(np.uint64)
    elements[:, 1] = (as_int >> 63).view(np.uint64)  # 0, or all ones for a negative value
    if np.any(large):
        elements[large] = _encode_large(scaled[large])
    return elements


def _encode_large(scaled: np.ndarray) -> np.ndarray:
    """Two's complement limbs of integral floats of any magnitude below 2^127, shape ``(n, 2)``."""
    magnitude = np.abs(scaled)
    high = np.floor(magnitude / _TWO64)
    low = magnitude - high * _TWO64  # exact: both are integral floats
    elements = np.stack([_float_to_u64(low), _float_to_u64(high)], axis=1)
    negative = scaled < 0
    elements[negative] = negate(elements[negative])
    return elements


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum mod 2^128 of two element arrays of shape ``(n, 2)`` (a new array)."""
    out = a + b  # both limbs, each mod 2^64
    out[:, 1] += out[:, 0] < a[:, 0]  # carry out of the low limb
    return out


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Difference mod 2^128, ``a - b``, shapes ``(n, 2)`` (a new array)."""
    out = a - b
    out[:, 1] -= a[:, 0] < b[:, 0]  # borrow from the high limb
    return out


def decode(elements: np.ndarray, n_parties: int) -> np.ndarray:
    """Decode ring elements (shape ``(n, 2)``) to float64, checking the no-wrap bound.

    Raises
    ------
    RingOverflowError
        If an element lies outside the range a sum of ``n_parties`` valid encodings can reach, which
        means some party sent garbage or a mask did not cancel.
    """
    low = elements[:, 0].view(np.int64)
    fits = elements[:, 1] == (low >> 63).view(np.uint64)  # the high limb only extends the low one's sign
    out = low.astype(np.float64) / _SCALE  # valid sums of int64 size are always within the bound
    if not np.all(fits):
        out[~fits] = _decode_large(elements[~fits], n_parties)
    return out


def _decode_large(elements: np.ndarray, n_parties: int) -> np.ndarray:
    negative = (elements[:, 1] >> np.uint64(63)).astype(bool)
    magnitude = elements.copy()
    if np.any(negative):
        magnitude[negative] = negate(elements[negative])
    as_float = magnitude[:, 1].astype(np.float64) * _TWO64 + magnitude[:, 0].astype(np.float64)
    limit = max_abs_for(n_parties) * n_parties * _SCALE
    if as_float.size and float(as_float.max()) >= limit:
        raise RingOverflowError(
            "aggregate is outside the range of valid sums: a site sent malformed statistics "
            "or the masks of the round did not cancel"
        )
    out = as_float / _SCALE
    out[negative] *= -1.0
    return out


def from_bytes(data: bytes) -> np.ndarray:
    """Ring elements from their 16-byte little-endian wire form."""
    if len(data) % 16:
        raise ValueError(f"ring data length {len(data)} is not a multiple of 16 bytes")
    return np.frombuffer(data, dtype="<u8").reshape(-1, 2).astype(np.uint64, copy=True)


def to_bytes(elements: np.ndarray) -> bytes:
    """16-byte little-endian wire form of ring elements (shape ``(n, 2)``)."""
    return np.ascontiguousarray(elements, dtype="<u8").tobytes()
