"""QC and allelic-test result files in PLINK's own formats, so existing tools read them unchanged.

PLINK 2 text reports (tab-separated, header line starting with ``#``, 6 significant digits):

* ``.afreq`` ``#CHROM ID REF ALT ALT_FREQS OBS_CT`` (``--freq``); ``.acount`` with ``ALT_CTS``
  (``--freq counts``);
* ``.gcount`` ``#CHROM ID REF ALT HOM_REF_CT HET_REF_ALT_CTS TWO_ALT_GENO_CTS HAP_REF_CT
  HAP_ALT_CTS MISSING_CT`` (``--geno-counts``);
* ``.hardy`` ``#CHROM ID A1 AX HOM_A1_CT HET_A1_CT TWO_AX_CT O(HET_A1) E(HET_A1) P`` (``MIDP``
  with ``midp``), where A1 is REF (``--hardy``);
* ``.vmiss`` ``#CHROM ID MISSING_CT OBS_CT F_MISS`` (``--missing``).

For ``.bed`` input PLINK 2 reads .bim column 6 as REF and column 5 as ALT; here REF is the study's
``other_allele`` and ALT its ``effect_allele`` (both from the first site's .bim). The allelic test
goes to PLINK 1.9's fixed-width ``.assoc`` (``CHR SNP BP A1 F_A F_U A2 CHISQ P OR``, 4 significant
digits, A1 = minor allele). p-values are written from -log10 p, so values below 1e-308 keep their
magnitude. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt

from engine.stats.qc.allelic import AllelicTest
from engine.stats.association import VariantTable
from engine.errors import InputError
from engine.stats.qc.counts import GenotypeCounts

#: Header of each PLINK 2 report, by file extension.
HEADERS = {
    "afreq": ("#CHROM", "ID", "REF", "ALT", "ALT_FREQS", "OBS_CT"),
    "acount": ("#CHROM", "ID", "REF", "ALT", "ALT_CTS", "OBS_CT"),
    "gcount": ("#CHROM", "ID", "REF", "ALT", "HOM_REF_CT", "HET_REF_ALT_CTS", "TWO_ALT_GENO_CTS",
               "HAP_REF_CT", "HAP_ALT_CTS", "MISSING_CT"),
    "hardy": ("#CHROM", "ID", "A1", "AX", "HOM_A1_CT", "HET_A1_CT", "TWO_AX_CT", "O(HET_A1)", "E(HET_A1)", "P"),
    "vmiss": ("#CHROM", "ID", "MISSING_CT", "OBS_CT", "F_MISS"),
}
ASSOC_COLUMNS = ("CHR", "SNP", "BP", "A1", "F_A", "F_U", "A2", "CHISQ", "P", "OR")


def _floats(values: npt.ArrayLike, digits: int, missing: str) -> list[str]:
    arr = np.asarray(values, dtype=np.float64)
    out = list(map(format, arr.tolist(), itertools.repeat(f".{digits}g", len(arr))))
    for i in np.flatnonzero(np.isnan(arr)).tolist():
        out[i] = missing
    return out


def _plink19_floats(values: npt.ArrayLike) -> list[str]:
    """4 significant digits (``%.4g``), ``NA`` for missing. PLINK 1.9's own formatter rounds a few
    decimal ties the other way (about 1 row in 3,000 differs in the last digit)."""
    return _floats(values, 4, "NA")


def _ints(values: npt.ArrayLike) -> list[str]:
    return list(map(str, np.asarray(values, dtype=np.int64).tolist()))


def p_strings(neg_log10_p: npt.ArrayLike, digits: int, missing: str) -> list[str]:
    """p-values with ``digits`` significant digits from -log10 p, exact below the float64 range."""
    x = np.array(neg_log10_p, dtype=np.float64)
    x[x < 0.0] = 0.0  # p > 1 from round-off; NaN stays missing
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out = _floats(np.power(10.0, -x), digits, missing)
    for i in np.flatnonzero(x >= 300.0).tolist():
        xi = float(x[i])
        if math.isinf(xi):
            out[i] = "0"
            continue
        exponent = math.floor(-xi)
        mantissa = format(10.0 ** (-xi - exponent), f".{digits}g")
        if float(mantissa) >= 10.0:  # rounding carried into the next decade
            mantissa, exponent = "1", exponent + 1
        out[i] = f"{mantissa}e{exponent}"
    return out


def _check_text(values: Sequence[str], field: str) -> None:
    joined = "".join(values)
    if any(c in joined for c in "\t\n\r "):
        row = next(i for i, s in enumerate(values) if any(c in s for c in "\t\n\r "))
        raise InputError(f"{field} {values[row]!r} (row {row}) contains whitespace")


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _table(path: Path, header: Sequence[str], columns: Sequence[Sequence[str]]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(row) for row in zip(*columns)]
    return _write_atomic(path, "\n".join(lines) + "\n")


def _variant_columns(variants: VariantTable) -> tuple[list[str], list[str], list[str], list[str]]:
    chrom, ids, ref, alt = (list(map(str, np.asarray(a).tolist())) for a in
                            (variants.chrom, variants.variant_id, variants.other_allele, variants.effect_allele))
    for name, values in (("chromosome", chrom), ("ID", ids), ("REF", ref), ("ALT", alt)):
        _check_text(values, name)
    return chrom, ids, ref, alt


def write_afreq(path: Path, variants: VariantTable, counts: GenotypeCounts, *, as_counts: bool = False) -> Path:
    """PLINK 2 ``.afreq`` (ALT frequency), or ``.acount`` (ALT count) with ``as_counts``."""
    chrom, ids, ref, alt = _variant_columns(variants)
    value = _ints(counts.effect_allele_count) if as_counts else _floats(counts.effect_allele_frequency, 6, "nan")
    return _table(path, HEADERS["acount" if as_counts else "afreq"],
                  [chrom, ids, ref, alt, value, _ints(counts.allele_observations)])


def write_gcount(path: Path, variants: VariantTable, counts: GenotypeCounts) -> Path:
    """PLINK 2 ``.gcount``: hom-REF, het, hom-ALT, haploid (always 0: every call is diploid), missing."""
    chrom, ids, ref, alt = _variant_columns(variants)
    zeros = ["0"] * len(ids)
    return _table(path, HEADERS["gcount"], [chrom, ids, ref, alt, _ints(counts.hom_other), _ints(counts.het),
                                            _ints(counts.hom_effect), zeros, zeros, _ints(counts.missing)])


def write_hardy(path: Path, variants: VariantTable, counts: GenotypeCounts, *, midp: bool = False) -> Path:
    """PLINK 2 ``.hardy`` with A1 = REF; observed and expected het frequency and the exact test p."""
    chrom, ids, ref, alt = _variant_columns(variants)
    n = counts.n_observed.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed_het = counts.het / n
        freq_a1 = np.where(n > 0, (2 * counts.hom_other + counts.het) / (2 * n), 0.0)
    expected_het = 2.0 * freq_a1 * (1.0 - freq_a1)
    header = HEADERS["hardy"][:-1] + ("MIDP" if midp else "P",)
    return _table(path, header, [chrom, ids, ref, alt, _ints(counts.hom_other), _ints(counts.het),
                                 _ints(counts.hom_effect), _floats(observed_het, 6, "nan"),
                                 _floats(expected_het, 6, "nan"),
                                 p_strings(counts.hwe_neg_log10_p(midp=midp), 6, "nan")])


def write_vmiss(path: Path, variants: VariantTable, counts: GenotypeCounts) -> Path:
    """PLINK 2 ``.vmiss``: missing calls, samples, missing rate."""
    chrom, ids, _, _ = _variant_columns(variants)
    return _table(path, HEADERS["vmiss"], [chrom, ids, _ints(counts.missing), _ints(counts.n_samples),
                                           _floats(counts.missing_rate, 6, "nan")])


def write_assoc(path: Path, variants: VariantTable, positions: npt.ArrayLike, test: AllelicTest) -> Path:
    """PLINK 1.9 ``.assoc`` (fixed-width, space-padded, each line ending in a space)."""
    chrom, ids, other, effect = _variant_columns(variants)
    a1 = np.where(test.a1_is_effect, effect, other).tolist()
    a2 = np.where(test.a1_is_effect, other, effect).tolist()
    longest = max((len(s) for s in ids), default=0)
    width = longest + 1 if longest > 4 else 4  # PLINK 1.9's ID column width
    columns = [chrom, ids, _ints(positions), a1, _plink19_floats(test.freq_cases),
               _plink19_floats(test.freq_controls), a2, _plink19_floats(test.chisq),
               p_strings(test.neg_log10_p, 4, "NA"), _plink19_floats(test.odds_ratio)]
    widths = (4, width, 10, 4, 8, 8, 4, 12, 12, 12)
    header = " ".join(name.rjust(w) for name, w in zip(ASSOC_COLUMNS, widths)) + " "
    lines = [header] + [" ".join(f.rjust(w) for f, w in zip(row, widths)) + " " for row in zip(*columns)]
    return _write_atomic(path, "\n".join(lines) + "\n")
