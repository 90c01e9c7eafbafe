"""Vectorised text of TSV columns: numbers formatted as Python's ``%.6g`` and ``%d``, rows joined, in numpy.

Writing a GWAS-SSF file of 100,000 rows with Python's ``format`` per value costs about 0.6 s, most of it in
float formatting; a study of many phenotypes writes one file per phenotype. Here each column becomes a
*character block*: a ``uint8`` array ``(n_rows, width)`` holding the value's bytes, where 0 means "no
character" (anywhere in the row, not only at the end). Rows are joined by laying the blocks side by
side with tab and newline columns and dropping the zeros, in one pass over memory.

The text is the same as Python's, byte for byte: :func:`g6_block` computes the six significant digits
from ``|x| 10^(5 - e)``, which is correctly rounded for ``|5 - e| <= 22`` (10^k is exact there), and
hands the rare values it cannot decide that way (a digit string within 1e-6 of a rounding tie, a scale
beyond 10^22, zero, NaN and infinities) to Python's ``format``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

#: Missing-value marker recommended by GWAS-SSF.
NA = "#NA"

_ZERO = ord("0")
#: Rows wider than this (long alleles) are joined by Python instead of through a (rows, width) array.
_MAX_MATRIX_WIDTH = 2048


def text_block(strings: Sequence[str] | npt.ArrayLike) -> np.ndarray:
    """The UTF-8 bytes of ``strings`` as a character block ``(n, max length)`` (0 after each string's end).

    The strings must not contain NUL (a NUL byte would be read as "no character")."""
    values = list(strings) if not isinstance(strings, np.ndarray) else np.asarray(strings).tolist()
    try:
        raw = np.array(values, dtype="S")
    except UnicodeEncodeError:
        raw = np.array([str(s).encode("utf-8") for s in values], dtype="S")
    if raw.dtype.itemsize == 0 or raw.size == 0:
        return np.zeros((len(values), 0), dtype=np.uint8)
    return raw.view(np.uint8).reshape(len(values), raw.dtype.itemsize)


def int_block(values: npt.ArrayLike) -> np.ndarray:
    """``%d`` of integers as a character block (negative values too)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    magnitude = np.abs(v)
    width = len(str(int(magnitude.max())))
    digits = ((magnitude[:, None] // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)) % 10 + _ZERO).astype(np.uint8)
    lengths = np.ones(len(v), dtype=np.int64)
    for j in range(1, width):
        lengths += magnitude >= 10 ** j
    keep = np.arange(width)[None, :] >= (width - lengths)[:, None]
    out = np.zeros((len(v), width + 1), dtype=np.uint8)
    out[:, 0] = np.where(v < 0, ord("-"), 0)
    out[:, 1:] = np.where(keep, digits, 0)
    return out


#: Columns of the per-value source row that :func:`g6_block` gathers from: the six digits, then constants,
#: then the two exponent digits and a NUL ("no character").
_POINT, _NOUGHT, _MINUS, _E, _PLUS, _EXP, _NUL = 6, 7, 8, 9, 10, 11, 13
_G6_WIDTH = 12  # "-0.000123456" and "-1.23456e-17" are the longest


def _g6_patterns() -> np.ndarray:
    """Gather indices ``(14 * 6 * 2, 12)`` of each text shape: fixed notation with exponent -4..5 (modes 0-9)
    or scientific with a positive or negative exponent (10, 11); times the significant digits (1..6) and
    the sign."""
    patterns = []
    for mode in range(12):
        for sig in range(1, 7):
            for negative in (0, 1):
                out = [_MINUS] if negative else []
                if mode <= 9 and mode >= 4:  # e = 0..5: digits, a point after digit e + 1
                    e = mode - 4
                    out += list(range(e + 1)) + ([_POINT, *range(e + 1, sig)] if sig > e + 1 else [])
                elif mode < 4:  # e = -4..-1: 0.000ddd
                    out += [_NOUGHT, _POINT] + [_NOUGHT] * (3 - mode) + list(range(sig))
                else:  # d.ddddde+XX
                    out += [0] + ([_POINT, *range(1, sig)] if sig > 1 else [])
                    out += [_E, _MINUS if mode == 11 else _PLUS, _EXP, _EXP + 1]
                patterns.append(out + [_NUL] * (_G6_WIDTH - len(out)))
    return np.array(patterns, dtype=np.intp)


_PATTERNS = _g6_patterns()


def g6_block(values: npt.ArrayLike, missing: str = NA) -> np.ndarray:
    """``format(x, ".6g")`` of each value as a character block; NaN and infinities are ``missing``.

    Each value's six significant digits ``d`` and decimal exponent ``e`` are computed in numpy, its text
    is gathered from a source row ``[digits, ".", "0", "-", "e", "+", exponent digits]`` by one of a small
    table of index patterns (one per notation, number of significant digits and sign).

    Parameters
    ----------
    values
        float64, shape ``(n,)``.
    missing
        Text of a NaN or infinite value.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = len(x)
    a = np.abs(x)
    regular = np.isfinite(x) & (a > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.floor(np.log10(np.where(regular, a, 1.0))).astype(np.int64)
        q = _scaled(a, 5 - e)
        # log10 may be off by one next to a power of ten: bring q into [1e5, 1e6).
        e = np.where(q >= 1e6, e + 1, np.where(q < 1e5, e - 1, e))
        q = _scaled(a, 5 - e)
        fraction = q - np.floor(q)
    regular &= (np.abs(5 - e) <= 22) & (np.abs(fraction - 0.5) > 1e-6) & (q >= 1e5) & (q < 1e6)
    d = np.rint(np.where(regular, q, 1e5)).astype(np.int32)
    carry = d == 1_000_000  # 999999.5 rounds into the next decade
    d[carry] = 100_000
    e = np.where(carry, e + 1, e)
    regular &= np.abs(e) < 100  # two exponent digits (always so here: |5 - e| <= 22)
    source = np.empty((n, _NUL + 1), dtype=np.uint8)
    source[:, :6] = (d[:, None] // 10 ** np.arange(5, -1, -1, dtype=np.int32)) % 10 + _ZERO
    source[:, _POINT:_EXP] = np.frombuffer(b".0-e+", dtype=np.uint8)
    magnitude = np.abs(e)
    source[:, _EXP] = magnitude // 10 + _ZERO
    source[:, _EXP + 1] = magnitude % 10 + _ZERO
    source[:, _NUL] = 0
    trailing = np.zeros(n, dtype=np.intp)
    for j in range(1, 6):
        trailing += (d % 10 ** j == 0)
    mode = np.where((e >= -4) & (e <= 5), e + 4, np.where(e < 0, 11, 10))
    key = (mode * 6 + (5 - trailing)) * 2 + (x < 0)
    out = np.take_along_axis(source, _PATTERNS[np.where(regular, key, 0)], axis=1)
    others = np.flatnonzero(~regular)
    if others.size:
        texts = [format(v, ".6g") if np.isfinite(v) else missing for v in x[others].tolist()]
        special = text_block(texts)
        if special.shape[1] > _G6_WIDTH:
            out = np.concatenate([out, np.zeros((n, special.shape[1] - _G6_WIDTH), dtype=np.uint8)], axis=1)
        out[others] = 0
        out[others, : special.shape[1]] = special
    return out


def _scaled(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``a 10^k`` with one correctly rounded operation by an exact power of ten (``|k| <= 22``)."""
    k = np.clip(k, -22, 22)
    return np.where(k >= 0, a * 10.0 ** np.maximum(k, 0), a / 10.0 ** np.maximum(-k, 0))


def block_strings(block: np.ndarray) -> list[str]:
    """The text of each row of a character block (its non-zero bytes, in order)."""
    return [bytes(row[row != 0]).decode("utf-8") for row in block]


def join_rows(columns: Sequence[np.ndarray]) -> bytes:
    """Rows of tab-separated fields, each ending in a newline, from character blocks ``(n, w_i)``."""
    n = columns[0].shape[0] if columns else 0
    width = sum(c.shape[1] for c in columns) + len(columns)
    if n == 0:
        return b""
    if width > _MAX_MATRIX_WIDTH:  # a long allele: one wide matrix would be large
        fields = [[bytes(row[row != 0]) for row in column] for column in columns]
        return b"".join(b"\t".join(row) + b"\n" for row in zip(*fields))
    matrix = np.empty((n, width), dtype=np.uint8)
    at = 0
    for i, column in enumerate(columns):
        matrix[:, at: at + column.shape[1]] = column
        at += column.shape[1]
        matrix[:, at] = ord("\t") if i < len(columns) - 1 else ord("\n")
        at += 1
    flat = matrix.ravel()
    return flat[flat != 0].tobytes()
