"""Reading PLINK 1 binary filesets (.bed/.bim/.fam) in blocks of variants.

The .fam and .bim are parsed once (they are small); genotypes are read per block of variants through
bed-reader, so a site never holds an ``(n_samples, n_variants)`` matrix of a large dataset. Every
structural problem (missing file, wrong column count, a .bed whose size does not match the .bim/.fam,
a bad magic number) is an :class:`InputError` that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bed_reader import open_bed

from engine.errors import InputError
from engine.cohort.harmonise import VariantManifest

#: bed-reader's int8 code for a missing call.
MISSING_INT8 = -127
_BED_MAGIC = b"\x6c\x1b\x01"


@dataclass(frozen=True)
class FamTable:
    """Sample identifiers from a .fam, shapes ``(n_samples,)``."""

    fid: np.ndarray  # str
    iid: np.ndarray  # str
    sex: np.ndarray  # int8: 1 male, 2 female, 0 unknown

    def __len__(self) -> int:
        return len(self.iid)


def bfile_paths(prefix: Path | str) -> tuple[Path, Path, Path]:
    """(.bed, .bim, .fam) paths of a PLINK 1 prefix; a prefix given with an extension is accepted."""
    prefix = Path(prefix)
    if prefix.suffix in (".bed", ".bim", ".fam"):
        prefix = prefix.with_suffix("")
    return tuple(Path(f"{prefix}{ext}") for ext in (".bed", ".bim", ".fam"))  # type: ignore[return-value]


def _read_columns(path: Path, n_columns: int, what: str) -> np.ndarray:
    """Whitespace-separated table with exactly ``n_columns`` per line, shape ``(n_lines, n_columns)`` str."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} file {str(path)!r}: {exc}") from exc
    tokens = text.split()
    n_lines = sum(1 for line in text.splitlines() if line.strip())
    if len(tokens) != n_lines * n_columns:  # find the offending line only when something is wrong
        for number, line in enumerate((ln for ln in text.splitlines() if ln.strip()), start=1):
            if len(line.split()) != n_columns:
                raise InputError(
                    f"{what} file {str(path)!r} line {number}: expected {n_columns} columns, found {len(line.split())}"
                )
    if not tokens:
        raise InputError(f"{what} file {str(path)!r} is empty")
    return np.array(tokens, dtype=str).reshape(n_lines, n_columns)


def read_fam(path: Path) -> FamTable:
    """Parse a .fam (6 whitespace-separated columns: FID IID father mother sex phenotype)."""
    columns = _read_columns(path, 6, ".fam").T
    sex_text = columns[4]
    sex = np.where(sex_text == "1", 1, np.where(sex_text == "2", 2, 0)).astype(np.int8)
    return FamTable(fid=columns[0].copy(), iid=columns[1].copy(), sex=sex)


def read_bim(path: Path) -> VariantManifest:
    """Parse a .bim (CHROM ID CM POS ALLELE1 ALLELE2) into a manifest; allele1 is the counted allele."""
    columns = _read_columns(path, 6, ".bim").T
    try:
        pos = columns[3].astype(np.int64)
    except ValueError:
        bad = next(i for i, v in enumerate(columns[3], start=1) if not v.lstrip("-").isdigit())
        raise InputError(f".bim file {str(path)!r} line {bad}: position {columns[3][bad - 1]!r} is not an integer") from None
    return VariantManifest(
        chrom=columns[0].copy(),
        pos=pos,
        variant_id=columns[1].copy(),
        allele1=columns[4].copy(),
        allele2=columns[5].copy(),
    )


def _count_lines(path: Path, what: str) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from None
    return sum(1 for line in data.splitlines() if line.strip())


def check_bed_size(bed_path: Path, n_samples: int, n_variants: int, fam_path: Path, bim_path: Path) -> None:
    """Refuse a .bed that is missing, not variant-major PLINK 1, or whose size does not match."""
    if not bed_path.exists():
        raise InputError(f".bed file {str(bed_path)!r} does not exist")
    with open(bed_path, "rb") as handle:
        magic = handle.read(3)
    if magic != _BED_MAGIC:
        raise InputError(
            f".bed file {str(bed_path)!r} does not start with the PLINK 1 variant-major magic bytes "
            f"6c 1b 01 (found {magic.hex(' ') or 'nothing'})"
        )
    expected = 3 + n_variants * ((n_samples + 3) // 4)
    actual = bed_path.stat().st_size
    if actual != expected:
        raise InputError(
            f".bed file {str(bed_path)!r} has {actual} bytes but {n_variants} variants in "
            f"{bim_path.name} x {n_samples} samples in {fam_path.name} need {expected}: "
            "the files do not belong together or the .bed is truncated"
        )


def check_bfile(prefix: Path | str) -> None:
    """Cheap structural check of a fileset (files exist, magic bytes, sizes agree) without parsing it.

    Column-level problems are found when the fileset is opened (:class:`BedFile`).
    """
    bed_path, bim_path, fam_path = bfile_paths(prefix)
    n_samples = _count_lines(fam_path, ".fam")
    n_variants = _count_lines(bim_path, ".bim")
    check_bed_size(bed_path, n_samples, n_variants, fam_path, bim_path)


class BedFile:
    """A PLINK 1 fileset opened for block reads (allele1 = .bim column 5 is counted).

    Parameters
    ----------
    prefix
        Path prefix (``data/site1`` for ``data/site1.bed/.bim/.fam``).
    num_threads
        Threads bed-reader may use (None: its default).
    """

    genotype_format = "plink1"

    def __init__(self, prefix: Path | str, num_threads: int | None = None) -> None:
        self.bed_path, self.bim_path, self.fam_path = bfile_paths(prefix)
        self.fam = read_fam(self.fam_path)
        self.manifest = read_bim(self.bim_path)
        check_bed_size(self.bed_path, self.n_samples, self.n_variants, self.fam_path, self.bim_path)
        self._num_threads = num_threads
        self._bed = open_bed(
            self.bed_path,
            iid_count=len(self.fam),
            sid_count=len(self.manifest.variant_id),
            num_threads=num_threads,
            properties={"iid": self.fam.iid, "sid": self.manifest.variant_id},
        )

    @property
    def n_samples(self) -> int:
        return len(self.fam)

    @property
    def n_variants(self) -> int:
        return len(self.manifest.variant_id)

    def read_block(self, variant_index: np.ndarray | slice, sample_index: np.ndarray | None = None) -> np.ndarray:
        """Genotypes as int8 counts of allele1 (bim column 5), -127 = missing.

        Returns an array of shape ``(n_selected_samples, n_selected_variants)`` in Fortran order
        (each variant's column contiguous, as the .bed stores it).
        """
        samples = slice(None) if sample_index is None else sample_index
        return self._bed.read(index=np.s_[samples, variant_index], dtype="int8", order="F")

    def close(self) -> None:
        self._bed.__exit__(None, None, None)
