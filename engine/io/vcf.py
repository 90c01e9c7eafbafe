"""Reading VCF/BCF files with cyvcf2: sample IDs and records, malformed records as InputError.

Shared by the hard-call import (:mod:`engine.io.genotype_sources`) and the dosage import
(:mod:`engine.io.dosage`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engine.errors import InputError
from engine.io.plink import FamTable


def vcf_samples(path: Path) -> FamTable:
    """Sample IDs of a VCF/BCF header (FID = IID, sex unknown)."""
    from cyvcf2 import VCF

    try:
        reader = VCF(str(path), lazy=True)
    except OSError as exc:
        raise InputError(f"cannot open VCF/BCF {str(path)!r}: {exc}") from None
    samples = np.array(reader.samples, dtype=str)
    reader.close()
    if len(samples) == 0:
        raise InputError(f"VCF/BCF {str(path)!r} has no samples")
    return FamTable(fid=samples.copy(), iid=samples, sex=np.zeros(len(samples), np.int8))


def vcf_records(path: Path, gts012: bool = False) -> Iterator[Any]:
    """cyvcf2 records of a VCF/BCF; a malformed record is an InputError naming the file and position."""
    from cyvcf2 import VCF  # only sites with VCF data need it

    try:
        reader = VCF(str(path), gts012=gts012, lazy=True, threads=1)
    except OSError as exc:
        raise InputError(f"cannot open VCF/BCF {str(path)!r}: {exc}") from None
    last = "the header"
    records = iter(reader)
    try:
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as exc:  # htslib parse errors surface from cyvcf2 as a bare Exception
                raise InputError(f"VCF {str(path)!r}: malformed record after {last}: {exc}") from None
            last = f"{record.CHROM}:{record.POS}"
            yield record
    finally:
        reader.close()
