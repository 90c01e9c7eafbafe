"""A small BGEN v1.2 writer for tests (layout 2, zlib, unphased diploid, biallelic).

Written from the format specification, independently of :mod:`engine.io.bgen`; PLINK 2 reads what
it writes (``plink2 --bgen FILE ref-first``), which is how the tests check both.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _text(value: str, length_format: str = "<H") -> bytes:
    data = value.encode()
    return struct.pack(length_format, len(data)) + data


def write_bgen(path: Path, sample_ids: list[str], variants: list[tuple[str, int, str, str, str]],
               probabilities: np.ndarray, bits: int = 16, embed_samples: bool = True,
               missing: np.ndarray | None = None, layout: int = 2) -> None:
    """Write ``probabilities`` ``(m, n, 2)`` = (P(hom first allele), P(het)) per variant and sample.

    ``variants`` are ``(chrom, pos, rsid, first allele, second allele)``; ``missing`` ``(m, n)`` bool
    flags missing samples. Probabilities are rounded to ``bits``-bit integers so that the three of
    each sample sum to ``2^bits - 1`` (the implied third is never negative). ``layout`` only sets the
    header flag (tests of a refused layout).
    """
    n = len(sample_ids)
    scale = (1 << bits) - 1
    header_flags = 1 | (layout << 2) | ((1 << 31) if embed_samples else 0)
    sample_block = b""
    if embed_samples:
        ids = b"".join(_text(s) for s in sample_ids)
        sample_block = struct.pack("<II", 8 + len(ids), n) + ids
    header = struct.pack("<IIII", 20, len(variants), n, int.from_bytes(b"bgen", "little")) + struct.pack("<I", header_flags)
    out = [struct.pack("<I", len(header) + len(sample_block)), header, sample_block]
    for j, (chrom, pos, rsid, first, second) in enumerate(variants):
        p = probabilities[j]
        hom = np.rint(p[:, 0] * scale).astype(np.int64)
        het = np.minimum(np.rint(p[:, 1] * scale).astype(np.int64), scale - hom)
        flags = np.full(n, 2, dtype=np.uint8)
        if missing is not None:
            flags[missing[j]] = 2 | 128
            hom[missing[j]] = 0
            het[missing[j]] = 0
        values = np.column_stack([hom, het]).ravel()
        bitstream = ((values[:, None] >> np.arange(bits)) & 1).astype(np.uint8).ravel()
        packed = np.packbits(bitstream, bitorder="little").tobytes()
        raw = struct.pack("<IHBB", n, 2, 2, 2) + flags.tobytes() + struct.pack("<BB", 0, bits) + packed
        compressed = zlib.compress(raw)
        out.append(_text(f"{chrom}:{pos}") + _text(rsid) + _text(chrom) + struct.pack("<IH", pos, 2)
                   + _text(first, "<I") + _text(second, "<I")
                   + struct.pack("<II", len(compressed) + 4, len(raw)) + compressed)
    Path(path).write_bytes(b"".join(out))


def write_sample_file(path: Path, fid: list[str], iid: list[str], sex: list[int] | None = None) -> None:
    """An Oxford .sample file (``ID_1 ID_2 missing sex``)."""
    sex = sex or [0] * len(iid)
    lines = ["ID_1 ID_2 missing sex", "0 0 0 D"] + [f"{f} {i} 0 {s}" for f, i, s in zip(fid, iid, sex)]
    Path(path).write_text("\n".join(lines) + "\n")


def write_bgen_v11(path: Path, variants: list[tuple[str, int, str, str, str]], probabilities: np.ndarray,
                   compressed: bool = True) -> None:
    """Write a BGEN v1.1 (layout 1) file: ``probabilities`` ``(m, n, 3)`` uint16 ``P(AA), P(AB), P(BB)`` in
    units of 1/32768 per variant and sample (stored as given, all zero = missing); no sample IDs (v1.1 has
    none: give a .sample file). ``variants`` as for :func:`write_bgen`."""
    m, n, _ = probabilities.shape
    header = struct.pack("<IIII", 20, m, n, int.from_bytes(b"bgen", "little")) + struct.pack("<I", (1 << 2) | int(compressed))
    out = [struct.pack("<I", len(header)), header]
    for j, (chrom, pos, rsid, first, second) in enumerate(variants):
        raw = np.ascontiguousarray(probabilities[j], dtype="<u2").tobytes()
        data = struct.pack("<I", len(zlib.compress(raw))) + zlib.compress(raw) if compressed else raw
        out.append(struct.pack("<I", n) + _text(f"{chrom}:{pos}") + _text(rsid) + _text(chrom) + struct.pack("<I", pos)
                   + _text(first, "<I") + _text(second, "<I") + data)
    Path(path).write_bytes(b"".join(out))
