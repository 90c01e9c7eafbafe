"""BGEN v1.1 (layout 1) and v1.2 / v1.3 (layout 2) files: header, sample IDs and per-variant ALT dosages.

The reader is plain Python over :mod:`struct`, :mod:`zlib` and ``zstandard`` with vectorised numpy
decoding of the probabilities, so that every structural problem (a truncated file, a sample count
that disagrees with the ``.sample`` file, an unsupported layout or ploidy) is an :class:`InputError`
naming the file and what was expected. (The C reader ``cbgen`` crashes the process on a truncated
file; a site agent must not.)

Layout (https://www.well.ox.ac.uk/~gav/bgen_format/spec/latest.html): 4 bytes offset of the first
variant block, a header block (length, variants M, samples N, magic, free data, flags), an optional
sample-identifier block, then M variant blocks (IDs, chromosome, position, alleles, and the
genotype probabilities, zlib- or zstd-compressed). Probabilities are B-bit integers divided by
``2^B - 1``; per sample, ``ploidy`` values are stored (the last probability is implied).

The counted allele is the *second* allele (PLINK 2's ``--bgen ... ref-first``, UK Biobank's
convention): its dosage is ``P(het) + 2 P(hom second)`` for a diploid sample, ``2 P(second)`` for a
haploid one (PLINK 2's 0..2 coding of haploid calls), rounded to PLINK 2's grid of 1/16384 exactly as
``plink2 --bgen`` does. A sample flagged missing has dosage NaN.

BGEN v1.1 (layout 1) stores, per variant, the sample count, two alleles, and per sample three 16-bit
probabilities ``P(AA), P(AB), P(BB)`` (units of 1/32768; zlib-compressed with a length field, or
not compressed); all three 0 is a missing sample. The dosage of the second allele is
``(P(AB) + 2 P(BB)) / (P(AA) + P(AB) + P(BB))``, rounded to 1/16384 with ties to even, as PLINK 2
imports it. v1.1 files carry no sample IDs: they need their ``.sample`` file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from engine.errors import InputError
from engine.io.plink import FamTable

_COMPRESSION = {0: "none", 1: "zlib", 2: "zstd"}


@dataclass(frozen=True)
class BgenHeader:
    """What the header says: ``first_variant`` is the byte offset of the first variant block."""

    path: Path
    first_variant: int
    n_variants: int
    n_samples: int
    compression: int
    layout: int
    sample_ids: np.ndarray | None  # str (n_samples,), when the file embeds them


@dataclass(frozen=True)
class BgenVariantInfo:
    """One variant block's identifiers and where its genotype data lie (``data_offset``, ``data_size``)."""

    index: int
    chrom: str
    pos: int
    variant_id: str
    rsid: str
    alleles: tuple[str, ...]
    data_offset: int
    data_size: int


class _Reader:
    """Exact reads from a BGEN file, naming the file and what was being read when it ends early."""

    def __init__(self, path: Path, handle: BinaryIO, size: int) -> None:
        self.path, self.handle, self.size = path, handle, size

    def read(self, n: int, what: str) -> bytes:
        start = self.handle.tell()
        data = self.handle.read(n)
        if len(data) != n:
            raise InputError(f"BGEN {str(self.path)!r} is truncated: {what} needs {n} bytes at offset {start}, "
                             f"the file ends at {self.size}")
        return data

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))

    def text(self, length_fmt: str, what: str) -> str:
        (length,) = self.unpack(length_fmt, f"the length of {what}")
        return self.read(length, what).decode("utf-8", errors="replace")


def read_header(path: Path) -> BgenHeader:
    """Parse and check the header (and the embedded sample IDs, if any) of a BGEN file."""
    if not path.exists():
        raise InputError(f"BGEN {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        reader = _Reader(path, handle, size)
        (offset,) = reader.unpack("<I", "the offset of the first variant block")
        header_length, n_variants, n_samples, magic = reader.unpack("<IIII", "the header block")
        if magic not in (0, int.from_bytes(b"bgen", "little")):
            raise InputError(f"BGEN {str(path)!r}: magic number {magic:#010x} is not 'bgen': not a BGEN file")
        if header_length < 20 or header_length > offset:
            raise InputError(f"BGEN {str(path)!r}: header length {header_length} must be between 20 and the first "
                             f"variant block's offset {offset}")
        reader.read(header_length - 20, "the header's free data")
        (flags,) = reader.unpack("<I", "the header flags")
        compression, layout = flags & 3, (flags >> 2) & 15
        if compression not in _COMPRESSION:
            raise InputError(f"BGEN {str(path)!r}: compression code {compression} is not 0 (none), 1 (zlib) or 2 (zstd)")
        if layout not in (1, 2):
            raise InputError(f"BGEN {str(path)!r} is layout {layout}: only BGEN v1.1 (layout 1) and v1.2/v1.3 "
                             f"(layout 2) are supported")
        if layout == 1 and compression == 2:
            raise InputError(f"BGEN {str(path)!r}: a v1.1 (layout 1) file cannot be zstd-compressed (compression 2)")
        sample_ids = None
        if flags >> 31:
            block_length, n_listed = reader.unpack("<II", "the sample identifier block")
            if n_listed != n_samples:
                raise InputError(f"BGEN {str(path)!r}: the sample identifier block lists {n_listed} samples, "
                                 f"the header says {n_samples}")
            sample_ids = np.array([reader.text("<H", f"sample identifier {i + 1}") for i in range(n_samples)],
                                  dtype=str)
            if header_length + block_length > offset:
                raise InputError(f"BGEN {str(path)!r}: the sample identifier block ({block_length} bytes) "
                                 f"overlaps the first variant block at offset {offset + 4}")
    if offset + 4 > size:
        raise InputError(f"BGEN {str(path)!r} is truncated: the first variant block is at offset {offset + 4}, "
                         f"the file ends at {size}")
    return BgenHeader(path, offset + 4, n_variants, n_samples, compression, layout, sample_ids)


def read_sample_file(path: Path, n_samples: int | None = None, bgen: Path | None = None) -> FamTable:
    """An Oxford ``.sample`` file (``ID_1 ID_2 missing [sex ...]``, a type line, then one row per
    sample): FID = ID_1, IID = ID_2, sex from a ``sex`` column (1/2) when present. With
    ``n_samples``, the row count must match the BGEN's (``bgen`` names it in the error)."""
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise InputError(f".sample file {str(path)!r} does not exist") from None
    if len(lines) < 2 or len(lines[0]) < 2 or [c.upper() for c in lines[0][:2]] != ["ID_1", "ID_2"]:
        raise InputError(f".sample file {str(path)!r}: expected a header 'ID_1 ID_2 missing ...' and a type line")
    header, rows = lines[0], lines[2:]
    for number, row in enumerate(rows, start=3):
        if len(row) != len(header):
            raise InputError(f".sample file {str(path)!r} line {number}: expected {len(header)} columns, found {len(row)}")
    if n_samples is not None and len(rows) != n_samples:
        raise InputError(f".sample file {str(path)!r} lists {len(rows)} samples but BGEN "
                         f"{str(bgen) if bgen else ''!r} has {n_samples}: the files do not belong together")
    table = np.array(rows, dtype=str).reshape(len(rows), len(header))
    lower = [c.lower() for c in header]
    sex_text = table[:, lower.index("sex")] if "sex" in lower else np.full(len(rows), "0")
    sex = np.where(sex_text == "1", 1, np.where(sex_text == "2", 2, 0)).astype(np.int8)
    return FamTable(fid=table[:, 0].copy(), iid=table[:, 1].copy(), sex=sex)


def bgen_samples(path: Path, sample: Path | None = None) -> FamTable:
    """Sample IDs of a BGEN: from ``sample`` if given, else the embedded IDs (FID = IID)."""
    header = read_header(path)
    if sample is not None:
        return read_sample_file(sample, header.n_samples, path)
    if header.sample_ids is None:
        raise InputError(f"BGEN {str(path)!r} embeds no sample IDs: give its .sample file (--sample)")
    return FamTable(fid=header.sample_ids.copy(), iid=header.sample_ids, sex=np.zeros(header.n_samples, np.int8))


def scan_variants(header: BgenHeader) -> Iterator[BgenVariantInfo]:
    """Every variant block's identifiers, without decoding probabilities (checks that each block
    lies inside the file, so a truncated file is found before anything is imported)."""
    path = header.path
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(header.first_variant)
        reader = _Reader(path, handle, size)
        for index in range(header.n_variants):
            what = f"variant {index + 1} of {header.n_variants}"
            if header.layout == 1:  # v1.1: the sample count first, two alleles, then the probabilities
                (n_listed,) = reader.unpack("<I", f"the sample count of {what}")
                if n_listed != header.n_samples:
                    raise InputError(f"BGEN {str(path)!r}: {what} lists {n_listed} samples, the header {header.n_samples}")
            variant_id = reader.text("<H", f"the ID of {what}")
            rsid = reader.text("<H", f"the rsID of {what}")
            chrom = reader.text("<H", f"the chromosome of {what}")
            if header.layout == 1:
                (pos,) = reader.unpack("<I", f"the position of {what}")
                n_alleles = 2
            else:
                (pos, n_alleles) = reader.unpack("<IH", f"the position of {what}")
            alleles = tuple(reader.text("<I", f"allele {k + 1} of {what}") for k in range(n_alleles))
            if header.layout == 1 and header.compression == 0:
                data_size = 6 * header.n_samples  # three 16-bit probabilities per sample
            else:
                (data_size,) = reader.unpack("<I", f"the genotype data length of {what}")
            data_offset = handle.tell()
            if data_offset + data_size > size:
                raise InputError(f"BGEN {str(path)!r} is truncated: {what} needs {data_size} bytes of genotype data "
                                 f"at offset {data_offset}, the file ends at {size}")
            handle.seek(data_size, 1)
            yield BgenVariantInfo(index, chrom, pos, variant_id, rsid, alleles, data_offset, data_size)


def _decompress(header: BgenHeader, info: BgenVariantInfo, data: bytes) -> bytes:
    if header.compression == 0:
        return data
    where = f"BGEN {str(header.path)!r} variant {info.index + 1} ({info.variant_id or info.rsid})"
    if len(data) < 4:
        raise InputError(f"{where}: compressed genotype data of {len(data)} bytes has no length field")
    (expected,) = struct.unpack_from("<I", data)
    if header.compression == 1:
        try:
            out = zlib.decompress(data[4:])
        except zlib.error as exc:
            raise InputError(f"{where}: cannot decompress the genotype data (zlib): {exc}") from None
    else:
        import zstandard  # only BGEN v1.3 files with zstd compression need it

        try:
            out = zstandard.ZstdDecompressor().decompress(data[4:], max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise InputError(f"{where}: cannot decompress the genotype data (zstd): {exc}") from None
    if len(out) != expected:
        raise InputError(f"{where}: decompressed genotype data has {len(out)} bytes, the block says {expected}")
    return out


def _unpack_bits(buffer: np.ndarray, bits: int, count: int) -> np.ndarray:
    """``count`` little-endian ``bits``-bit unsigned integers packed in ``buffer`` (uint8), as uint64."""
    if bits == 8:
        return buffer[:count].astype(np.uint64)
    if bits in (16, 32):
        return buffer[: count * bits // 8].view(f"<u{bits // 8}").astype(np.uint64)
    flat = np.unpackbits(buffer, bitorder="little")[: count * bits].reshape(count, bits).astype(np.uint64)
    return flat @ (np.uint64(1) << np.arange(bits, dtype=np.uint64))


def _decode_layout1(header: BgenHeader, info: BgenVariantInfo, data: bytes, where: str) -> np.ndarray:
    """v1.1 (layout 1): per sample three 16-bit probabilities ``P(AA), P(AB), P(BB)`` in units of 1/32768,
    zlib-compressed without a length field; all three 0 means missing."""
    n = header.n_samples
    if header.compression == 1:
        try:
            raw = zlib.decompress(data)
        except zlib.error as exc:
            raise InputError(f"{where}: cannot decompress the genotype data (zlib): {exc}") from None
    else:
        raw = data
    if len(raw) != 6 * n:
        raise InputError(f"{where}: {len(raw)} bytes of v1.1 probabilities, expected {6 * n} for {n} samples")
    probabilities = np.frombuffer(raw, dtype="<u2").reshape(n, 3).astype(np.int64)
    total = probabilities.sum(axis=1)
    # PLINK 2 normalises by the three probabilities' sum and rounds to its grid of 1/16384, ties to
    # even (checked against plink2 --bgen on sums other than 32768 and on exact ties).
    quotient, remainder = np.divmod((probabilities[:, 1] + 2 * probabilities[:, 2]) * 16384, np.maximum(total, 1))
    up = (2 * remainder > total) | ((2 * remainder == total) & (quotient % 2 == 1))
    dosage = (quotient + up).astype(np.float64) / 16384.0
    dosage[total == 0] = np.nan
    return dosage


def decode_dosages(header: BgenHeader, info: BgenVariantInfo, data: bytes) -> np.ndarray:
    """ALT (second allele) dosages ``(n_samples,)`` float64 of a biallelic variant, NaN where missing."""
    where = f"BGEN {str(header.path)!r} variant {info.index + 1} ({info.variant_id or info.rsid})"
    if header.layout == 1:
        return _decode_layout1(header, info, data, where)
    raw = _decompress(header, info, data)
    n = header.n_samples
    if len(raw) < 10 + n:
        raise InputError(f"{where}: genotype data of {len(raw)} bytes is too short for {n} samples")
    n_listed, n_alleles, ploidy_min, ploidy_max = struct.unpack_from("<IHBB", raw)
    if n_listed != n or n_alleles != len(info.alleles):
        raise InputError(f"{where}: genotype data lists {n_listed} samples and {n_alleles} alleles, expected {n} "
                         f"and {len(info.alleles)}")
    flags = np.frombuffer(raw, dtype=np.uint8, count=n, offset=8)
    ploidy = (flags & 63).astype(np.int64)
    missing = (flags & 128) != 0
    phased, bits = raw[8 + n], raw[9 + n]
    if phased > 1 or not 1 <= bits <= 32:
        raise InputError(f"{where}: phased flag {phased} and bits {bits} must be 0/1 and 1..32")
    if np.any((ploidy < 1) | (ploidy > 2)) or not 1 <= ploidy_min <= ploidy_max <= 2:
        raise InputError(f"{where}: ploidy {int(ploidy.min())}..{int(ploidy.max())} is not supported "
                         f"(haploid and diploid samples only)")
    count = int(ploidy.sum())  # stored values per sample: ploidy, phased or not, for two alleles
    payload = np.frombuffer(raw, dtype=np.uint8, offset=10 + n)
    if len(payload) != (count * bits + 7) // 8:
        raise InputError(f"{where}: {len(payload)} bytes of probabilities, expected {(count * bits + 7) // 8} "
                         f"for {count} values of {bits} bits")
    values = _unpack_bits(payload, bits, count).astype(np.int64)
    if ploidy_min == ploidy_max == 2:
        first, second = values[0::2], values[1::2]
    else:
        starts = np.concatenate([[0], np.cumsum(ploidy)[:-1]])
        first = values[starts]
        second = np.where(ploidy == 2, values[np.minimum(starts + 1, count - 1)], 0)
    top = (1 << bits) - 1
    if phased:  # P(haplotype carries the first allele), per haplotype
        numerator = np.where(ploidy == 2, 2 * top - first - second, 2 * (top - first))
    else:  # P(hom first), P(het) (diploid); P(first) (haploid)
        numerator = np.where(ploidy == 2, 2 * top - 2 * first - second, 2 * (top - first))
    if np.any(numerator < 0):
        raise InputError(f"{where}: probabilities of a sample sum to more than 1")
    # PLINK 2's conversion to its dosage grid of 1/16384 (integer arithmetic; the rounding of ties
    # checked against plink2 --bgen for 8 to 23 bits).
    dosage = ((numerator * 16384 + top // 2 - 1) // top).astype(np.float64) / 16384.0
    dosage[missing] = np.nan
    return dosage


def iter_dosages(header: BgenHeader, variants: list[BgenVariantInfo]) -> Iterator[np.ndarray]:
    """Dosages of ``variants`` (biallelic, from :func:`scan_variants`) in order, one ``(n,)`` array each."""
    with open(header.path, "rb") as handle:
        for info in variants:
            handle.seek(info.data_offset)
            yield decode_dosages(header, info, handle.read(info.data_size))
