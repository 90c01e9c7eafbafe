"""PLINK 2's ``--indep-pairwise`` on pooled pair sums: windows, r^2 thresholds, which variant goes.

The coordinator receives, per variant, the pooled pair sums of :mod:`engine.stats.ld.kernel` for its ``D``
predecessors, turns them into the "r^2 above the threshold" flags with PLINK 2's exact arithmetic
(integers, then the same double comparison ``cov^2 > r2 (1 + 2^-44) var_1 var_2``), and replays PLINK 2's
(v2.00a3) greedy pass:

* chromosomes are processed separately (in kb mode, also split where consecutive variants lie more
  than the window apart); a chromosome or piece with a single variant is left alone, chromosome 0 is
  skipped entirely (in neither list), as in PLINK 2;
* windows of ``W`` variants advance by ``S`` (or, with ``kb``, span ``W`` kb and advance one variant at a
  time, as far as needed for the window end to move);
* a variant that is constant (no homozygote, or every call the same homozygote) is removed when loaded;
* at each window, the variants still in are visited in order, each comparing itself with the later
  ones from where it last stopped; at the first pair above the threshold the variant with the smaller
  minor allele frequency is removed (the later one on ties, within 2^-44); passes over the window
  repeat until one removes nothing (PLINK 1.9's order, which PLINK 2 v2.00a3 uses; checked against
  ``plink2 --indep-pairwise`` in the tests).

Counts come from every sample (PLINK uses founders only: fedgwas does not read pedigrees), and every
chromosome is treated as diploid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError, InputError
from engine.stats.ld.kernel import PAIR_FIELDS
from engine.stats.pca.solve import major_is_effect
from engine.stats.qc.counts import GenotypeCounts

#: PLINK 2's kSmallEpsilon (2^-44), its tolerance on thresholds and frequency ties.
SMALL_EPSILON = 2.0 ** -44


@dataclass(frozen=True)
class PruneSettings:
    """``--indep-pairwise WINDOW[kb] STEP R2``: window in variants (or kb with ``kb``), step in
    variants (1 with ``kb``), r^2 threshold."""

    window: float
    step: int
    r2: float
    kb: bool = False

    def __post_init__(self) -> None:
        where = f"--indep-pairwise {self.window:g}{'kb' if self.kb else ''} {self.step} {self.r2:g}"
        if self.kb:
            if not self.window > 0:
                raise ConfigError(f"{where}: the window must be positive")
            if self.step != 1:
                raise ConfigError(f"{where}: with a window in kb the step must be 1 (as in PLINK 2)")
        elif self.window != int(self.window) or self.window < 2:
            raise ConfigError(f"{where}: the window must be a whole number of variants, at least 2")
        if self.step < 1 or (not self.kb and self.step > self.window):
            raise ConfigError(f"{where}: the step must be between 1 and the window size")
        if not 0.0 <= self.r2 < 1.0:
            raise ConfigError(f"{where}: the r^2 threshold must be in [0, 1)")

    @property
    def span(self) -> int:
        """Window size: variants, or base pairs with ``kb``."""
        return int(self.window * 1000 + 0.5) if self.kb else int(self.window)


@dataclass(frozen=True)
class Window:
    """Variants ``[start, stop)`` of one window; ``first_new`` is the first one it loads."""

    start: int
    stop: int
    first_new: int


def _pieces(chrom: np.ndarray, pos: np.ndarray, settings: PruneSettings) -> list[tuple[int, int]]:
    """``(start, stop)`` of the chromosome runs (kb: split at gaps wider than the window) that PLINK
    processes: at least two variants, chromosome 0 excluded."""
    m = len(chrom)
    if m == 0:
        return []
    change = np.flatnonzero(chrom[1:] != chrom[:-1]) + 1
    bounds = np.concatenate([[0], change, [m]])
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if str(chrom[start]) == "0":
            continue
        cuts = [int(start)]
        if settings.kb:
            span = settings.span
            here = pos[start + 1: stop].astype(np.int64)
            before = pos[start: stop - 1].astype(np.int64)
            gap = (here >= span) & (here - span > before)
            cuts += [int(start) + 1 + int(i) for i in np.flatnonzero(gap)]
        cuts.append(int(stop))
        pieces += [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b - a > 1]
    return pieces


def windows(chrom: np.ndarray, pos: np.ndarray, settings: PruneSettings) -> list[Window]:
    """Every window PLINK 2 evaluates, in processing order.

    ``chrom`` ``(m,)`` (str) and ``pos`` ``(m,)`` (int) of the variants, in file order.
    """
    out: list[Window] = []
    span = settings.span
    for first, stop in _pieces(chrom, pos, settings):
        if not settings.kb:
            start, end = first, min(first + span, stop)
            out.append(Window(start, end, start))
            while end != stop:
                previous = end
                start += settings.step
                end = min(start + span, stop)
                out.append(Window(start, end, previous))
            continue
        start = first
        end = start + 1
        while end < stop and pos[end] <= pos[start] + span:
            end += 1
        out.append(Window(start, end, start))
        while end != stop:
            previous = end
            start += 1
            while pos[start] < pos[end] - span:  # move the start until the end can move
                start += 1
            end += 1
            while end < stop and pos[end] <= pos[start] + span:
                end += 1
            out.append(Window(start, end, previous))
    return out


def band_width(all_windows: list[Window]) -> int:
    """``D``: the largest distance between two variants of one window (at least 1)."""
    return max([w.stop - 1 - w.start for w in all_windows] + [1])


def exceeds(totals: np.ndarray, band: int, r2: float) -> np.ndarray:
    """bool ``(m, D)``: r^2 of (variant, variant - d) above ``r2``, with PLINK 2's arithmetic.

    ``totals`` ``(m, 6 D)`` are the pooled :data:`engine.stats.ld.kernel.PAIR_FIELDS` sums (whole numbers).

    Raises
    ------
    InputError
        If a total is not a non-negative whole number (the aggregate cannot be these sums).
    """
    values = np.asarray(totals, dtype=np.float64)
    rounded = np.rint(values)
    if values.shape[1] != len(PAIR_FIELDS) * band or not np.all(np.isfinite(values)) or \
            np.any(np.abs(values - rounded) > 1e-3) or np.any(rounded[:, :band] < 0):
        raise InputError("aggregated LD pair sums are not whole numbers of the expected shape")
    n, sum_self, sum_other, ssq_self, ssq_other, dot = np.moveaxis(rounded.reshape(len(values), len(PAIR_FIELDS), band), 1, 0)
    cov = dot * n - sum_other * sum_self
    var_other = ssq_other * n - sum_other * sum_other
    var_self = ssq_self * n - sum_self * sum_self
    threshold = r2 * (1.0 + SMALL_EPSILON)
    return cov * cov > threshold * var_other * var_self


def major_frequency(counts: GenotypeCounts) -> np.ndarray:
    """PLINK 2's major-allele frequency per variant (REF frequency computed as ``ref * (1 / total)``)."""
    other = (2 * counts.hom_other + counts.het).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_freq = other * (1.0 / counts.allele_observations.astype(np.float64))
    return np.where(major_is_effect(counts), 1.0 - ref_freq, ref_freq)


def constant_at_load(counts: GenotypeCounts) -> np.ndarray:
    """bool ``(m,)``: variants PLINK removes as soon as they enter a window (no homozygote, or every
    call the same homozygote)."""
    homs = counts.hom_effect + counts.hom_other
    return (homs == 0) | (counts.hom_effect == counts.n_observed) | (counts.hom_other == counts.n_observed)


def indep_pairwise(above: np.ndarray, counts: GenotypeCounts, all_windows: list[Window]) -> np.ndarray:
    """PLINK 2's greedy pass; returns bool ``(m,)``, True for the variants it removes (``.prune.out``).

    ``above`` ``(m, D)`` from :func:`exceeds`; ``counts`` the pooled genotype counts of the same
    variants. The pass is PLINK 2 v2.00a3's (PLINK 1.9's order): at each window, the variants still
    in are visited in order; each resumes scanning the later variants from where it stopped, until
    the first pair above the threshold, which removes the variant with the smaller minor allele
    frequency (the later one on ties within 2^-44); passes repeat until one removes nothing. Only
    pairs above the threshold are visited, so the work follows their number, not the window's size.
    """
    m = above.shape[0]
    removed = np.zeros(m, dtype=bool)
    constant = constant_at_load(counts)
    freq = major_frequency(counts)
    tie = 1.0 + SMALL_EPSILON
    second, distance = np.nonzero(above)
    first = second - distance - 1
    order = np.lexsort((second, first))
    partners = second[order]  # for each first variant, its later partners above the threshold, ascending
    offsets = np.searchsorted(first[order], np.arange(m + 1))
    cursor = offsets[:-1].copy()  # next partner of each variant not yet ruled out
    resume = np.arange(1, m + 1)  # PLINK's first_unchecked: the earliest later variant not yet compared
    never = np.iinfo(np.int64).max
    upcoming = np.full(m, never)
    has = cursor < offsets[1:]
    upcoming[has] = partners[cursor[has]]
    for window in all_windows:
        loaded = slice(window.first_new, window.stop)
        removed[loaded] |= constant[loaded]
        end = window.stop
        while True:
            span = slice(window.start, end)
            active = window.start + np.flatnonzero(~removed[span] & (upcoming[span] < end) & (resume[span] < end))
            changed = False
            for f in active:
                if removed[f]:
                    continue
                k, stop = cursor[f], offsets[f + 1]
                while k < stop and (partners[k] < resume[f] or removed[partners[k]]):
                    k += 1
                cursor[f] = k
                upcoming[f] = partners[k] if k < stop else never
                if upcoming[f] >= end:
                    resume[f] = end
                    continue
                s = partners[k]
                changed = True
                if freq[f] > freq[s] * tie:
                    removed[f] = True
                    continue
                removed[s] = True
                later = np.flatnonzero(~removed[s + 1: end])
                resume[f] = s + 1 + later[0] if len(later) else end
            if not changed:
                break
    return removed
