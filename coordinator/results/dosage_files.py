"""PLINK 2's ``.afreq``/``.acount`` of dosage data: frequencies from dosages, optionally with MaCH R2.

Same layouts as :mod:`coordinator.results.qc_files` (``#CHROM ID REF ALT ALT_FREQS OBS_CT``; ``ALT_CTS``
for counts, a dosage sum printed with 8 significant digits, as PLINK 2 prints most of them), plus PLINK 2's ``--freq cols=+machr2``
layout ``#CHROM ID REF ALT ALT_FREQS MACH_R2 OBS_CT``. ``OBS_CT`` counts the allele observations of
the samples with a dosage (a haploid one counts once, its dosage half: chrX males, chrY, MT).
"""

from __future__ import annotations

from pathlib import Path

from coordinator.results.qc_files import HEADERS, _floats, _ints, _table, _variant_columns
from engine.stats.association import VariantTable
from engine.stats.qc.dosage import DosageSums

#: ``--freq cols=+machr2``.
MACHR2_HEADER = ("#CHROM", "ID", "REF", "ALT", "ALT_FREQS", "MACH_R2", "OBS_CT")


def write_dosage_afreq(path: Path, variants: VariantTable, sums: DosageSums, *, as_counts: bool = False,
                       mach_r2: bool = False) -> Path:
    """``.afreq`` from pooled dosage sums (``.acount`` with ``as_counts``; with ``mach_r2`` the MaCH R2 column)."""
    chrom, ids, ref, alt = _variant_columns(variants)
    if as_counts:
        return _table(path, HEADERS["acount"], [chrom, ids, ref, alt, _floats(sums.effect_allele_count, 8, "nan"),
                                                _ints(sums.allele_observations)])
    columns = [chrom, ids, ref, alt, _floats(sums.effect_allele_frequency, 6, "nan")]
    if mach_r2:
        columns.append(_floats(sums.mach_r2, 6, "NA"))
    return _table(path, MACHR2_HEADER if mach_r2 else HEADERS["afreq"], columns + [_ints(sums.allele_observations)])
