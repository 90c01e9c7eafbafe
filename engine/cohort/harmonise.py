"""Match variants across sites so every site computes statistics for the same variants.

Each site describes its variants in a :class:`VariantManifest` (its PLINK .bim in file order). The
coordinator calls :func:`harmonise` to decide which variants enter the study, in which order, and
which allele is counted; every site then receives a :class:`SiteAlignment` telling it which of its
own rows to read and where to flip the counted allele.

Matching keys, after normalising chromosome names (``chr1`` -> ``1``, ``23`` -> ``X``, ...) and
uppercasing alleles:

* ``match_by="position"``: (chromosome, position, unordered allele pair);
* ``match_by="id"``: (variant ID, unordered allele pair); positions are then the first site's.

Nothing ambiguous is resolved silently: a key that occurs twice within one site is dropped at every
site, and so are variants with unusable alleles or absent at some site. Strand flips (A/C vs T/G) are
not matched: they are different allele pairs.

The work is vectorised, with no Python loop per variant: chromosome names and alleles are factorised
(``np.unique`` over distinct values), variant IDs are packed exactly into int64 columns from their
code points, and one sort over all sites' integer keys groups equal keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.stats.association import VariantTable
from engine.errors import HarmonisationError, InputError

#: Allowed values of ``match_by``.
MATCH_BY = ("position", "id")

#: PLINK's missing-allele codes (PLINK 1 writes ``0``, PLINK 2 ``.``); an empty allele is as bad.
MISSING_ALLELES = ("0", ".", "")

_CHROM_ALIASES = {"23": "X", "24": "Y", "25": "XY", "26": "MT", "M": "MT"}

#: If fewer matches than this fraction of the smallest site's usable variants are found, the other
#: matching mode is tried too; if it finds more than ``_ALTERNATIVE_FACTOR`` times as many, the
#: requested mode is almost certainly wrong (different genome builds, or different ID schemes) and
#: harmonisation fails with a message saying so, instead of running a study on a handful of variants.
_LOW_OVERLAP_FRACTION = 0.5
_ALTERNATIVE_FACTOR = 2.0

_MATCH_DESCRIPTION = {
    "position": "chromosome, position and alleles",
    "id": "IDs and alleles",
}
_ALTERNATIVE_HINT = {
    "position": "the sites may use different genome builds; use match_by='id'",
    "id": "the sites may name variants differently (e.g. rsIDs vs chr:pos IDs); use match_by='position'",
}


@dataclass(frozen=True)
class VariantManifest:
    """One site's variants in its own file order. Shapes ``(n_variants,)``.

    ``allele1`` is .bim column 5, the allele PLINK counts; ``allele2`` is column 6.
    """

    chrom: np.ndarray  # str
    pos: np.ndarray  # int64
    variant_id: np.ndarray  # str
    allele1: np.ndarray  # str, bim column 5 (the counted allele)
    allele2: np.ndarray  # str, bim column 6

    def __post_init__(self) -> None:
        n = len(self.chrom)
        for name in ("pos", "variant_id", "allele1", "allele2"):
            if len(getattr(self, name)) != n:
                raise InputError(f"VariantManifest.{name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.chrom)


@dataclass(frozen=True)
class SiteAlignment:
    """Where each harmonised variant sits in one site's manifest.

    ``index`` (int64, ``(n_harmonised,)``) is the row in the site's manifest; ``flip`` (bool,
    ``(n_harmonised,)``) is True where the site's allele1 is the harmonised ``other_allele``, so the
    site's allele count ``c`` must be reported as ``2 - c`` (and its dosage likewise).
    """

    index: np.ndarray  # int64 (n_harmonised,)
    flip: np.ndarray  # bool (n_harmonised,)


@dataclass(frozen=True)
class Harmonisation:
    """The study's variants and how each site reaches them.

    ``variants`` is in the first site's file order, ``effect_allele`` = the first site's allele1
    (normalised). ``alignments`` has one entry per site, in input order. ``dropped`` counts what was
    left out, always with these keys:

    * ``unusable_alleles``: first-site variants with identical alleles or a missing allele (``0``/``.``);
    * ``duplicate``: distinct keys occurring more than once within some site (dropped everywhere);
    * ``absent_at_some_site``: first-site variants (not duplicated) missing at one or more other sites;
    * ``absent_at_first_site``: distinct keys found at other sites but not at the first one.

    ``id_mismatches`` counts harmonised variants matched by position and alleles whose ID differs at
    some site (always 0 with ``match_by="id"``).
    """

    variants: VariantTable
    alignments: tuple[SiteAlignment, ...]
    dropped: dict[str, int]
    id_mismatches: int


@dataclass(frozen=True)
class _Grouping:
    """Key groups shared by all sites: ``group[s]`` maps site ``s``'s usable rows to group ids."""

    group: tuple[np.ndarray, ...]  # int64 (n_usable_s,) per site
    counts: np.ndarray  # int64 (n_sites, n_groups): rows of each group at each site

    @property
    def duplicated(self) -> np.ndarray:
        """bool ``(n_groups,)``: the key occurs more than once within at least one site."""
        return np.asarray((self.counts > 1).any(axis=0))

    @property
    def common(self) -> np.ndarray:
        """bool ``(n_groups,)``: the key occurs exactly once at every site."""
        return np.asarray((self.counts == 1).all(axis=0))


def normalise_chromosome(names: np.ndarray) -> np.ndarray:
    """Canonical chromosome names: no ``chr`` prefix, uppercase, PLINK numeric codes as letters.

    ``chr1``/``CHR01`` -> ``1``, ``23`` -> ``X``, ``24`` -> ``Y``, ``25`` -> ``XY``, ``26``/``M`` -> ``MT``.
    Loops in Python, so call it on distinct names (a few dozen), not on one name per variant.

    Parameters
    ----------
    names : np.ndarray, shape (n,)
        Chromosome names as strings (or anything ``str()`` accepts).

    Returns
    -------
    np.ndarray of str, shape (n,)
    """
    out = []
    for name in np.asarray(names).tolist():
        s = str(name).strip()
        if s[:3].lower() == "chr":
            s = s[3:]
        s = s.upper()
        if s.isdigit():
            s = str(int(s))
        out.append(_CHROM_ALIASES.get(s, s))
    return np.array(out, dtype=str)


def harmonise(
    manifests: Sequence[VariantManifest],
    site_names: Sequence[str],
    match_by: str = "position",
) -> Harmonisation:
    """Match variants across sites; harmonised order and counted allele are the first site's.

    Parameters
    ----------
    manifests : sequence of VariantManifest
        One per site (at least two), each in the site's .bim order.
    site_names : sequence of str
        Names used in messages, same length and order as ``manifests``.
    match_by : {"position", "id"}
        Key used to match: (chromosome, position, alleles) or (variant ID, alleles).

    Returns
    -------
    Harmonisation
        Variants present exactly once at every site with usable alleles, plus each site's rows and
        flips, drop counts and the number of ID mismatches.

    Raises
    ------
    InputError
        Unknown ``match_by``, or ``site_names`` not matching ``manifests``.
    HarmonisationError
        Fewer than two sites; no variants in common; or very few in common while the other matching
        mode would match many more (the message names the likely cause and the fix).
    """
    if match_by not in MATCH_BY:
        raise InputError(f"match_by={match_by!r} is not one of {', '.join(repr(m) for m in MATCH_BY)}")
    if len(manifests) < 2:
        raise HarmonisationError(f"a study needs at least two sites, got {len(manifests)}")
    if len(site_names) != len(manifests):
        raise InputError(f"got {len(site_names)} site names for {len(manifests)} variant manifests")
    if len(set(site_names)) != len(site_names):
        raise InputError(f"site names must be distinct, got {list(site_names)!r}")

    ids = [_as_str(m.variant_id) for m in manifests]
    pos = [np.asarray(m.pos).astype(np.int64, copy=False) for m in manifests]
    chrom_labels, chrom = _factorise([m.chrom for m in manifests], normalise_chromosome)
    allele_labels, alleles = _factorise(
        [np.concatenate([_as_str(m.allele1), _as_str(m.allele2)]) for m in manifests], np.char.upper
    )
    a1 = [codes[: len(m)] for codes, m in zip(alleles, manifests)]
    a2 = [codes[len(m) :] for codes, m in zip(alleles, manifests)]

    missing = np.isin(allele_labels, MISSING_ALLELES)
    rows = [np.flatnonzero(~missing[x] & ~missing[y] & (x != y)) for x, y in zip(a1, a2)]
    lo = [np.minimum(x[r], y[r]) for x, y, r in zip(a1, a2, rows)]
    hi = [np.maximum(x[r], y[r]) for x, y, r in zip(a1, a2, rows)]

    def key_columns(mode: str) -> list[list[np.ndarray]]:
        if mode == "position":
            return [[c[r], p[r], lo_s, hi_s] for c, p, r, lo_s, hi_s in zip(chrom, pos, rows, lo, hi)]
        id_columns = _string_columns([i[r] for i, r in zip(ids, rows)])
        return [[*cols, lo_s, hi_s] for cols, lo_s, hi_s in zip(id_columns, lo, hi)]

    grouping = _group(key_columns(match_by))
    common = grouping.common
    n_common = int(common.sum())
    if n_common == 0 or n_common < _LOW_OVERLAP_FRACTION * min(len(r) for r in rows):
        other = "id" if match_by == "position" else "position"
        n_other = int(_group(key_columns(other)).common.sum())
        if n_common == 0 or n_other > _ALTERNATIVE_FACTOR * n_common:
            raise HarmonisationError(_no_overlap_message(site_names, rows, match_by, n_common, n_other))

    g0 = grouping.group[0]
    keep = common[g0]
    first_rows = rows[0][keep]
    groups = g0[keep]
    alignments = []
    id_differs = np.zeros(len(first_rows), dtype=bool)
    for s in range(len(manifests)):
        row_of_group = np.full(grouping.counts.shape[1], -1, dtype=np.int64)
        row_of_group[grouping.group[s]] = rows[s]
        index = row_of_group[groups]
        alignments.append(SiteAlignment(index=index, flip=a1[s][index] != a1[0][first_rows]))
        if match_by == "position" and s > 0:
            id_differs |= ids[s][index] != ids[0][first_rows]

    duplicated = grouping.duplicated
    variants = VariantTable(
        chrom=chrom_labels[chrom[0][first_rows]],
        pos=pos[0][first_rows],
        variant_id=ids[0][first_rows],
        effect_allele=allele_labels[a1[0][first_rows]],
        other_allele=allele_labels[a2[0][first_rows]],
    )
    dropped = {
        "unusable_alleles": len(manifests[0]) - len(rows[0]),
        "duplicate": int(duplicated.sum()),
        "absent_at_some_site": int((~duplicated[g0] & ~common[g0]).sum()),
        "absent_at_first_site": int((~duplicated & (grouping.counts[0] == 0)).sum()),
    }
    return Harmonisation(
        variants=variants,
        alignments=tuple(alignments),
        dropped=dropped,
        id_mismatches=int(id_differs.sum()),
    )


def _as_str(values: np.ndarray) -> np.ndarray:
    """A fixed-width unicode array (no copy when it already is one), shape unchanged."""
    array = np.asarray(values)
    return array if array.dtype.kind == "U" else array.astype(str)


def _factorise(
    arrays: Sequence[np.ndarray], normalise: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Shared integer codes for few-valued strings (chromosomes, alleles) after normalising them.

    Runs of equal values (a .bim sorted by chromosome is a few dozen runs) are collapsed before
    ``np.unique``, and ``normalise`` runs on distinct values only.

    Parameters
    ----------
    arrays : sequence of np.ndarray, shapes (n_s,)
        Values per site (converted to str).
    normalise : callable
        Maps an array of distinct strings to their normalised forms (same shape).

    Returns
    -------
    labels : np.ndarray of str, shape (n_labels,)
        Sorted distinct normalised values, so code order is string order.
    codes : list of np.ndarray of int64, shapes (n_s,)
        ``labels[codes[s]]`` is the normalised value of each element of ``arrays[s]``.
    """
    distinct = []
    for array in arrays:
        values = _as_str(array)
        starts = np.flatnonzero(np.concatenate([[len(values) > 0], values[1:] != values[:-1]]))
        run_values, run_code = _unique(values[starts])
        run_lengths = np.diff(np.append(starts, len(values)))
        distinct.append((normalise(run_values), np.repeat(run_code, run_lengths)))
    labels = np.unique(np.concatenate([normalised for normalised, _ in distinct]))
    codes = [np.searchsorted(labels, normalised).astype(np.int64)[code] for normalised, code in distinct]
    return labels, codes


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for a unicode array, shapes (n_distinct,), (n,).

    Strings of up to 3 ASCII characters (SNP alleles, chromosome names) are packed into integers
    below 2**21 and counted in a lookup table, which avoids sorting ``n`` strings.
    """
    width = values.dtype.itemsize // 4
    if 1 <= width <= 3 and len(values):
        points = np.ascontiguousarray(values).view(np.uint32).reshape(len(values), width)
        if int(points.max()) < 128:
            packed = np.zeros(len(values), dtype=np.int64)
            for j in range(width):
                packed |= points[:, j].astype(np.int64) << (7 * (width - 1 - j))
            row_of = np.full(1 << (7 * width), -1, dtype=np.int64)
            row_of[packed] = np.arange(len(values))  # any one row per distinct value
            present = row_of >= 0
            # packing keeps string order (NUL padding sorts first), so the distinct values come sorted
            return values[row_of[present]], (np.cumsum(present) - 1)[packed]
    unique, inverse = np.unique(values, return_inverse=True)
    return unique, inverse.reshape(-1)


def _string_columns(arrays: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Pack strings exactly into int64 columns, so equal strings give equal rows of columns.

    Code points are read from the fixed-width unicode buffer (no per-string Python work) and
    ``63 // bits`` of them packed per column, ``bits`` being the widest code point's bit length
    (7 for ASCII: 9 characters per column). Trailing padding is zero, so widths may differ by site.

    Parameters
    ----------
    arrays : sequence of np.ndarray of str, shapes (n_s,)

    Returns
    -------
    list (per site) of lists of int64 arrays, shapes (n_s,), the same number of columns per site.
    """
    points = []
    for array in arrays:
        values = np.ascontiguousarray(_as_str(array))
        width = max(values.dtype.itemsize // 4, 1)
        if len(values) == 0:
            values = np.zeros(0, dtype=f"<U{width}")
        points.append(values.view(np.uint32).reshape(len(values), width))
    width = max(p.shape[1] for p in points)
    bits = max(max((int(p.max()) for p in points if p.size), default=1).bit_length(), 1)
    per_column = 63 // bits
    columns: list[list[np.ndarray]] = [[] for _ in arrays]
    for first in range(0, width, per_column):
        for site, p in enumerate(points):
            column = np.zeros(len(p), dtype=np.int64)
            for j in range(first, min(first + per_column, p.shape[1])):
                column |= p[:, j].astype(np.int64) << (bits * (j - first))
            columns[site].append(column)
    return columns


def _pack(columns: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Merge adjacent int64 key columns into one wherever the product of their ranges fits int64.

    Keeps the lexicographic order of the rows, so grouping the result equals grouping the input.
    """
    packed: list[np.ndarray] = []
    current: np.ndarray | None = None
    span = 1
    for column in columns:
        low = int(column.min()) if len(column) else 0
        size = (int(column.max()) - low + 1) if len(column) else 1
        if size >= 2**62:  # too wide to shift safely; such a column stays on its own
            low, size = 0, 2**63
        shifted = column - low
        if current is not None and span * size < 2**62:
            current = current * size + shifted
            span *= size
        else:
            if current is not None:
                packed.append(current)
            current, span = shifted, size
    if current is not None:
        packed.append(current)
    return packed


def _group(columns_per_site: Sequence[Sequence[np.ndarray]]) -> _Grouping:
    """Assign one group id per distinct key across all sites (one sort over every row).

    Parameters
    ----------
    columns_per_site : sequence (n_sites) of sequences of int64 arrays, shapes (n_s,)
        The key's integer columns for each site's usable rows, the same columns at every site.
    """
    sizes = [len(cols[0]) for cols in columns_per_site]
    columns = _pack([np.concatenate(col) for col in zip(*columns_per_site)])
    n = sum(sizes)
    group = np.zeros(n, dtype=np.int64)
    n_groups = 0
    if n:
        order = np.argsort(columns[0], kind="stable") if len(columns) == 1 else np.lexsort(columns[::-1])
        starts = np.zeros(n, dtype=bool)
        starts[0] = True
        for column in columns:
            ordered = column[order]
            starts[1:] |= ordered[1:] != ordered[:-1]
        group[order] = np.cumsum(starts) - 1
        n_groups = int(starts.sum())
    per_site = tuple(np.split(group, np.cumsum(sizes)[:-1]))
    counts = np.stack([np.bincount(g, minlength=n_groups) for g in per_site]).astype(np.int64)
    return _Grouping(group=per_site, counts=counts)


def _no_overlap_message(
    site_names: Sequence[str], rows: Sequence[np.ndarray], match_by: str, n_common: int, n_other: int
) -> str:
    """Explain a failed match, with the other mode's count when it would have found more."""
    sites = ", ".join(f"{name!r} ({len(r):,} usable variants)" for name, r in zip(site_names, rows))
    found = "no variants" if n_common == 0 else f"only {n_common:,} variant{'' if n_common == 1 else 's'}"
    message = f"matching by {_MATCH_DESCRIPTION[match_by]} found {found} in common across sites {sites}"
    if n_other > n_common:
        other = "id" if match_by == "position" else "position"
        message += f"; {n_other:,} variants share {_MATCH_DESCRIPTION[other]}: {_ALTERNATIVE_HINT[match_by]}"
    return message
