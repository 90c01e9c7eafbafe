"""GWAS-SSF v1.0 summary statistics: the gzipped TSV, its ``-meta.yaml`` sidecar, and a reader.

The data file has the mandatory GWAS-SSF columns in their defined order, then ``variant_id`` and ``n``
(encouraged), then fedgwas extras ``test_statistic`` and ``errcode`` (the format allows extra columns
after the mandatory ones); case/control tests add ``odds_ratio`` and ``firth`` (``Y`` where Firth
regression was used, as PLINK 2's ``FIRTH?``); studies with dosage data end with ``info``, the MaCH R2
over each variant's regression samples (PLINK 2's ``MACH_R2``). Missing values are ``#NA``.

A variant that could not be tested (a constant genotype, a failed fit: no beta, SE or p) is not a row
of the GWAS-SSF file, whose mandatory columns may not be missing (EBI's ``gwas-ssf validate`` rejects
such rows): it goes to the companion file ``NAME.<test>.untested.tsv``, PLINK-style
(``#CHROM POS ID REF ALT A1 OBS_CT ERRCODE``, ``FIRTH?`` for case/control tests, and ``ROW``, its
1-based row in the full harmonised table). :func:`read_gwas_ssf` puts them back in place.

p-values are written from ``neg_log10_p``, never from a float64 p, so a p of ``1e-400`` is written as
``1e-400`` rather than ``0``. Formatting is vectorised (:mod:`coordinator.results.tsv_text`: the same
text as Python's ``%.6g``, built in numpy) and overlaps with gzip compression in a second thread; the
variant columns (chromosome, position, alleles, ID) are formatted once per variant table and reused by
every phenotype of a study.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from coordinator.results.tsv_text import NA, block_strings, g6_block, int_block, join_rows, text_block
from coordinator.summary import RunSummary
from engine.stats.association import AssociationResult, VariantTable
from engine.errors import InputError

#: Column order of the data file: the GWAS-SSF mandatory columns, encouraged ones, then fedgwas extras.
COLUMNS = (
    "chromosome",
    "base_pair_location",
    "effect_allele",
    "other_allele",
    "beta",
    "standard_error",
    "effect_allele_frequency",
    "p_value",
    "variant_id",
    "n",
    "test_statistic",
    "errcode",
)

#: Extra columns of case/control results (logistic or Firth regression), after :data:`COLUMNS`.
CASE_CONTROL_COLUMNS = ("odds_ratio", "firth")

_FLOAT_COLUMNS = ("beta", "standard_error", "effect_allele_frequency", "p_value", "test_statistic", "odds_ratio",
                  "info")
_INT_COLUMNS = ("base_pair_location", "n")

#: Above this -log10(p), float64 10**-x loses precision (and below 1e-308 underflows), so the
#: mantissa and exponent are taken from the logarithm instead.
_LOG_FORMAT_FROM = 300.0

#: Rows formatted per block: small enough to overlap formatting with compression and bound memory.
_BLOCK_ROWS = 16_384

#: Chromosome names (after stripping ``chr``, upper-cased) that GWAS-SSF codes as integers.
#: Numeric 25 and 26 are PLINK 1 codes (XY pseudo-autosomal, MT), as variants come from .bim files.
_CHROM_CODES = {"X": "23", "Y": "24", "XY": "23", "PAR1": "23", "PAR2": "23", "M": "25", "MT": "25",
                "25": "23", "26": "25"}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def gwas_ssf_file_name(name: str, test: str) -> str:
    """Data file name ``NAME.<test>.tsv.gz``; both parts must be safe file-name components.

    Raises
    ------
    InputError
        If ``name`` or ``test`` is empty or contains path separators or other unsafe characters.
    """
    for label, value in (("name", name), ("test", test)):
        if not _SAFE_NAME.match(value):
            raise InputError(f"result {label} {value!r} is not a safe file name (letters, digits, '._+-')")
    return f"{name}.{test}.tsv.gz"


def meta_path_for(data_path: Path) -> Path:
    """The GWAS-SSF metadata sidecar of a data file: ``<data file name>-meta.yaml`` beside it."""
    return data_path.with_name(data_path.name + "-meta.yaml")


def fedgwas_version(summary: RunSummary | None = None) -> str:
    """Software version for provenance: the study's own record, else the installed package, else ``unknown``."""
    if summary is not None and summary.software_version:
        return summary.software_version
    try:
        return importlib.metadata.version("fedgwas")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def gwas_ssf_chromosome(chrom: npt.ArrayLike) -> list[str]:
    """Chromosome labels as GWAS-SSF writes them: ``chr`` stripped, X/Y/MT as 23/24/25.

    Parameters
    ----------
    chrom
        Chromosome names as read from the input, shape ``(n_variants,)``.

    Returns
    -------
    list of str
        Length ``n_variants``. Autosomes keep their spelling (``chr01`` -> ``01``); X, XY and PAR
        are coded 23, Y 24, M/MT 25. Numeric ``25``/``26`` are read as PLINK 1's XY and MT codes
        (23 and 25 here), since variants come from .bim files. Anything else (contigs, ``0``) is
        passed through unchanged. Each distinct name is mapped once, so 10^6 rows take milliseconds.

    Raises
    ------
    InputError
        If a name contains a tab or line break (it could not be written to a TSV).
    """
    labels = np.asarray(chrom).reshape(-1).tolist()
    mapping = {}
    for label in set(labels):
        text = str(label)
        if any(c in text for c in "\t\n\r"):
            raise InputError(f"chromosome {text!r} contains a tab or line break")
        bare = text[3:] if text[:3].lower() == "chr" else text
        mapping[label] = _CHROM_CODES.get(bare.upper(), bare)
    return list(map(mapping.__getitem__, labels))


def p_value_strings(neg_log10_p: npt.ArrayLike) -> list[str]:
    """p-values as text with 6 significant digits, exact for any magnitude.

    Parameters
    ----------
    neg_log10_p
        -log10(p), shape ``(n_variants,)``. NaN means missing; +inf means p = 0; values below 0
        (p > 1 from round-off) are written as ``1``.

    Returns
    -------
    list of str
        ``%.6g`` of p where p >= 1e-300; below that the mantissa and exponent come from the log,
        e.g. ``400.3 -> "5.01187e-401"``. Missing values are ``#NA``.
    """
    return block_strings(p_value_block(neg_log10_p))


def p_value_block(neg_log10_p: npt.ArrayLike) -> np.ndarray:
    """:func:`p_value_strings` as a character block (:mod:`coordinator.results.tsv_text`)."""
    x = np.asarray(neg_log10_p, dtype=np.float64).ravel()
    x = np.where(x < 0.0, 0.0, x)
    extreme = ~(x < _LOG_FORMAT_FROM)  # beyond float64's exact range, +inf or NaN: rare
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        p = np.power(10.0, -np.where(extreme, 0.0, x))
    out = g6_block(p)
    rows = np.flatnonzero(extreme)
    if rows.size == 0:
        return out
    texts = []
    for xi in x[rows].tolist():
        if math.isnan(xi):
            texts.append(NA)
        elif math.isinf(xi):
            texts.append("0")
        else:
            exponent = math.floor(-xi)
            mantissa = "%.6g" % 10.0 ** (-xi - exponent)
            if mantissa == "10":  # rounding carried into the next decade
                mantissa, exponent = "1", exponent + 1
            texts.append(f"{mantissa}e{exponent}")
    special = text_block(texts)
    if special.shape[1] > out.shape[1]:
        out = np.concatenate([out, np.zeros((len(out), special.shape[1] - out.shape[1]), dtype=np.uint8)], axis=1)
    out[rows] = 0
    out[rows, : special.shape[1]] = special
    return out


def _text_strings(values: npt.ArrayLike, field: str, *, first_row: int = 0,
                  missing: tuple[str, ...] = ("",)) -> list[str]:
    """Strings checked for TSV safety; values in ``missing`` become ``#NA``.

    ``first_row`` is the row number of ``values[0]`` in the whole table, for error messages.
    """
    out = list(map(str, np.asarray(values).tolist()))
    joined = "\x00".join(out)
    for bad in ("\t", "\n", "\r"):
        if bad in joined:
            row = next(i for i, s in enumerate(out) if bad in s)
            raise InputError(f"{field} {out[row]!r} (row {first_row + row}) contains a tab or line break")
    if "\x00" in "".join(out):  # a NUL would be read as "no character" by the vectorised writer
        row = next(i for i, s in enumerate(out) if "\x00" in s)
        raise InputError(f"{field} {out[row]!r} (row {first_row + row}) contains a NUL character")
    drop = set(missing)
    if drop and not drop.isdisjoint(out):
        out = [NA if s in drop else s for s in out]
    return out


class _VariantText:
    """The variant columns of a variant table as character blocks ``(n_variants, width)``, built once and
    reused for every phenotype of a study (the last table formatted is kept, by identity: tables are not
    modified in place; a lock guards it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: VariantTable | None = None
        self._blocks: tuple[np.ndarray, ...] = ()

    def blocks(self, variants: VariantTable) -> tuple[np.ndarray, ...]:
        """(chromosome, position, effect allele, other allele, variant ID) of every row of ``variants``."""
        with self._lock:
            if self._table is not variants:
                self._blocks = (
                    text_block(gwas_ssf_chromosome(variants.chrom)),
                    int_block(variants.pos),
                    text_block(_text_strings(variants.effect_allele, "effect_allele")),
                    text_block(_text_strings(variants.other_allele, "other_allele")),
                    text_block(_text_strings(variants.variant_id, "variant_id", missing=("", "."))))
                self._table = variants
            return self._blocks


_VARIANT_TEXT = _VariantText()


def _data_text(result: AssociationResult, rows: np.ndarray) -> bytes:
    """The data file's lines for ``rows`` of ``result`` (every row testable), each ending in a newline."""
    chrom, pos, effect, other, variant_id = (block[rows] for block in _VARIANT_TEXT.blocks(result.variants))
    with np.errstate(invalid="ignore", divide="ignore"):
        eaf = result.effect_allele_count[rows] / (2.0 * np.asarray(result.n[rows], dtype=np.float64))
    columns = [chrom, pos, effect, other, g6_block(result.beta[rows]), g6_block(result.se[rows]), g6_block(eaf),
               p_value_block(result.neg_log10_p[rows]), variant_id, int_block(result.n[rows]),
               g6_block(result.stat[rows]), text_block(_text_strings(result.errcode[rows], "errcode"))]
    if result.firth is not None:
        columns += [g6_block(result.odds_ratio[rows]), text_block(np.where(result.firth[rows], "Y", "N"))]
    if result.info is not None:
        columns.append(g6_block(result.info[rows]))
    return join_rows(columns)


def untested_path_for(data_path: Path) -> Path:
    """The companion file of the untestable variants: ``NAME.<test>.untested.tsv`` beside the data file."""
    name = data_path.name.removesuffix(".gz").removesuffix(".tsv")
    return data_path.with_name(f"{name}.untested.tsv")


def testable(result: AssociationResult) -> np.ndarray:
    """bool ``(n_variants,)``: rows with every mandatory GWAS-SSF value (beta, SE, p, frequency)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        eaf = result.effect_allele_count / (2.0 * np.asarray(result.n, dtype=np.float64))
    return np.isfinite(result.beta) & np.isfinite(result.se) & ~np.isnan(result.neg_log10_p) & np.isfinite(eaf)


def take_rows(result: AssociationResult, rows: np.ndarray) -> AssociationResult:
    return AssociationResult(
        test=result.test, variants=result.variants.take(rows), beta=result.beta[rows], se=result.se[rows],
        stat=result.stat[rows], neg_log10_p=result.neg_log10_p[rows], n=result.n[rows],
        effect_allele_count=result.effect_allele_count[rows], errcode=result.errcode[rows],
        firth=None if result.firth is None else result.firth[rows],
        info=None if result.info is None else result.info[rows])


def is_sorted(result: AssociationResult) -> bool:
    """True when the rows are in GWAS-SSF order: chromosome (1-22, 23 X, 24 Y, 25 MT), then position."""
    codes = np.asarray(gwas_ssf_chromosome(result.variants.chrom))
    distinct, index = np.unique(codes, return_inverse=True)
    # Rank of each distinct code in (number, then text) order: numeric codes first, by value.
    order = sorted(range(len(distinct)), key=lambda i: (int(distinct[i]) if distinct[i].isdigit() else 10**6,
                                                         str(distinct[i])))
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[order] = np.arange(len(distinct))
    chrom_rank = rank[np.asarray(index).ravel()]
    pos = np.asarray(result.variants.pos, dtype=np.int64)
    step = np.diff(chrom_rank)
    return bool(np.all((step > 0) | ((step == 0) & (np.diff(pos) >= 0))))


def write_untested(result: AssociationResult, rows: np.ndarray, path: Path) -> Path:
    """The companion file of the untestable ``rows`` (see the module docstring)."""
    v = result.variants.take(rows)
    for field in ("chrom", "variant_id", "effect_allele", "other_allele"):
        _text_strings(getattr(v, field), field)  # refuses tabs and line breaks
    header = ["#CHROM", "POS", "ID", "REF", "ALT", "A1", "OBS_CT", "ERRCODE"]
    if result.firth is not None:
        header.append("FIRTH?")
    header.append("ROW")
    lines = ["\t".join(header)]
    for j, i in enumerate(rows.tolist()):
        fields = [str(v.chrom[j]), str(v.pos[j]), str(v.variant_id[j]), str(v.other_allele[j]),
                  str(v.effect_allele[j]), str(v.effect_allele[j]), str(result.n[i]), str(result.errcode[i])]
        if result.firth is not None:
            fields.append("Y" if result.firth[i] else "N")
        fields.append(str(i + 1))
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_gwas_ssf(result: AssociationResult, path: Path | str, *, compresslevel: int = 1) -> Path:
    """Write ``result`` as a gzipped GWAS-SSF TSV at ``path``, rows in the given (harmonised) order.

    The file is written to a temporary name and renamed, so a crash never leaves a truncated file
    under the final name. The gzip header carries no timestamp, so identical results give
    byte-identical files (and md5sums).

    Parameters
    ----------
    result
        Association statistics, arrays of shape ``(n_variants,)``.
    path
        Output file, conventionally ``DIR/NAME.<test>.tsv.gz`` (see :func:`gwas_ssf_file_name`).
    compresslevel
        gzip level, 1-9. 1 compresses (in a background thread) faster than rows are formatted; 4 takes
        twice the CPU for files about 7% smaller, 6 six times for 12% smaller.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    InputError
        If an allele, identifier, chromosome or errcode contains a tab or line break.
    """
    path = Path(path)
    keep = testable(result)
    tested = np.flatnonzero(keep)
    tmp = path.with_name(f".{path.name}.partial")
    n_rows = len(tested)
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                   compresslevel=compresslevel, mtime=0) as gz, \
                ThreadPoolExecutor(max_workers=1) as compressor:
            # zlib releases the GIL: block k is compressed while block k+1 is formatted.
            header = COLUMNS + (CASE_CONTROL_COLUMNS if result.firth is not None else ()) + \
                (("info",) if result.info is not None else ())
            pending = compressor.submit(gz.write, ("\t".join(header) + "\n").encode("utf-8"))
            for start in range(0, n_rows, _BLOCK_ROWS):
                data = _data_text(result, tested[start: start + _BLOCK_ROWS])
                pending.result()
                pending = compressor.submit(gz.write, data)
            pending.result()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_untested(result, np.flatnonzero(~keep), untested_path_for(path))
    return path


def _neg_log10_from_text(text: str) -> float:
    """-log10 of a p-value string, exact for exponents beyond float64 (``"1e-400" -> 400.0``)."""
    if text == NA:
        return math.nan
    mantissa, sep, exponent = text.lower().partition("e")
    m = float(mantissa)
    if m <= 0.0:
        return math.inf if m == 0.0 else math.nan
    return -(math.log10(m) + (int(exponent) if sep else 0))


def read_gwas_ssf(path: Path | str) -> dict[str, np.ndarray]:
    """Read a GWAS-SSF TSV (gzipped or not) into columns.

    Returns
    -------
    dict of str to numpy.ndarray
        One array per column, shape ``(n_rows,)``: float64 for statistics (``#NA`` -> NaN), int64
        for ``base_pair_location`` and ``n`` (float64 with NaN if any is ``#NA``), ``str`` otherwise
        (``#NA`` kept as text). Also ``neg_log10_p``, parsed from the ``p_value`` text so that
        p-values below 1e-308 (which are 0.0 in ``p_value``) keep their magnitude.

    Raises
    ------
    InputError
        If the header lacks a GWAS-SSF mandatory column or a row has the wrong number of fields.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        lines = fh.read().splitlines()
    if not lines:
        raise InputError(f"{path}: empty file, expected a GWAS-SSF header")
    header = lines[0].split("\t")
    for required in COLUMNS[:8]:
        if required not in header:
            raise InputError(f"{path}: header lacks GWAS-SSF column {required!r}")
    rows = [line.split("\t") for line in lines[1:] if line]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise InputError(f"{path}: line {i + 2} has {len(row)} fields, header has {len(header)}")
    columns = list(zip(*rows)) if rows else [() for _ in header]
    out: dict[str, np.ndarray] = {}
    for name, values in zip(header, columns):
        if name in _FLOAT_COLUMNS:
            out[name] = np.array([math.nan if s == NA else float(s) for s in values], dtype=np.float64)
        elif name in _INT_COLUMNS:
            if NA in values:
                out[name] = np.array([math.nan if s == NA else float(s) for s in values], dtype=np.float64)
            else:
                out[name] = np.array([int(s) for s in values], dtype=np.int64)
        else:
            out[name] = np.array(values, dtype=str)
    p_index = header.index("p_value")
    out["neg_log10_p"] = np.array([_neg_log10_from_text(s) for s in columns[p_index]], dtype=np.float64)
    companion = untested_path_for(path)
    return _with_untested(out, companion) if companion.exists() else out


def _with_untested(tested: dict[str, np.ndarray], companion: Path) -> dict[str, np.ndarray]:
    """The full table: the companion file's untestable rows put back at their ``ROW`` (statistics NaN)."""
    lines = [line.split("\t") for line in companion.read_text(encoding="utf-8").splitlines() if line]
    header = [name.lstrip("#") for name in lines[0]]
    rows = lines[1:]
    if not rows:
        return tested
    column = {name: np.array([row[i] for row in rows], dtype=str) for i, name in enumerate(header)}
    at = column["ROW"].astype(np.int64) - 1
    n_total = len(tested["neg_log10_p"]) + len(rows)
    where = np.ones(n_total, bool)
    where[at] = False
    untested = {
        "chromosome": np.array(gwas_ssf_chromosome(column["CHROM"]), dtype=str),
        "base_pair_location": column["POS"].astype(np.int64), "effect_allele": column["A1"],
        "other_allele": column["REF"], "variant_id": column["ID"], "n": column["OBS_CT"].astype(np.int64),
        "errcode": column["ERRCODE"], "firth": column.get("FIRTH?", np.full(len(rows), NA))}
    out = {}
    for name, values in tested.items():
        filler = untested.get(name)
        if filler is None:
            filler = np.full(len(rows), np.nan) if values.dtype.kind == "f" else np.full(len(rows), NA)
        merged = np.empty(n_total, dtype=np.result_type(values.dtype, np.asarray(filler).dtype))
        merged[where] = values
        merged[at] = filler
        out[name] = merged
    return out
