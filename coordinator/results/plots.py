"""Manhattan and QQ plots (PNG) and the genomic inflation factor.

Figures are built as :class:`matplotlib.figure.Figure` objects drawn by ``FigureCanvasAgg``; pyplot's
global figure registry and backend selection are never touched, so plotting is safe in servers and
threads and leaves nothing open. User-supplied text (titles) is drawn with mathtext off, so a ``$``
in a phenotype name cannot break rendering.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import special, stats

from coordinator.results.gwas_ssf import gwas_ssf_chromosome
from engine.stats.association import AssociationResult

GENOME_WIDE = 5e-8
SUGGESTIVE = 1e-5
PLAINTEXT_LABEL = "PLAINTEXT (development only)"

_DPI = 100
_MANHATTAN_SIZE = (12.0, 4.0)  # inches
_MANHATTAN_AXES = (0.06, 0.99, 0.14, 0.88)  # left, right, bottom, top (figure fractions)
#: Manhattan points with -log10(p) below this (p > 0.01) are thinned to one per pixel and colour.
_THIN_BELOW = 2.0
_COLOURS = ("#1f4e79", "#6fa8dc")
_DISPLAY = {"23": "X", "24": "Y", "25": "MT"}
#: QQ plots draw every one of the smallest p-values and a log-spaced subset of the rest.
_QQ_TAIL = 10_000
_QQ_BULK = 10_000
_CHI2_MEDIAN = float(stats.chi2.ppf(0.5, 1))


def genomic_inflation(neg_log10_p: npt.ArrayLike) -> float:
    """Genomic inflation factor lambda_GC = median(chi2_1 quantile of p) / chi2_1 median.

    The 1-df chi-square quantile of p is ``z**2`` with ``z = Phi^-1(p / 2)``; it is computed from
    ``log p = -x ln 10`` with :func:`scipy.special.ndtri_exp`, which equals ``chi2.isf(p, 1)`` where
    p is representable and stays exact for p far below 1e-308 (no normal approximation needed).

    Parameters
    ----------
    neg_log10_p
        -log10(p), any shape. NaN is skipped; +inf (p = 0) counts as an infinite statistic; negative
        values (p > 1 from round-off) count as p = 1.

    Returns
    -------
    float
        lambda_GC, or NaN when there is no p-value.
    """
    x = np.asarray(neg_log10_p, dtype=np.float64).ravel()
    x = np.maximum(x[~np.isnan(x)], 0.0)
    if x.size == 0:
        return math.nan
    z = special.ndtri_exp(-x * math.log(10.0) - math.log(2.0))
    return float(np.median(z * z) / _CHI2_MEDIAN)


def _new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure drawn by its own Agg canvas (no pyplot, no global backend)."""
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    fig.savefig(path, format="png", dpi=_DPI, pil_kwargs={"compress_level": 1})  # zlib level: 1 is ~3x faster than 6
    fig.clear()
    return path


def _mark_plaintext(fig: Figure, ax: Axes, watermark_size: float) -> None:
    """A solid red badge in the corner and a faint watermark across the axes."""
    fig.text(0.005, 0.995, PLAINTEXT_LABEL, ha="left", va="top", fontsize=11, fontweight="bold",
             color="white", bbox={"facecolor": "#c00000", "edgecolor": "none", "pad": 3})
    ax.text(0.5, 0.5, PLAINTEXT_LABEL, transform=ax.transAxes, ha="center", va="center",
            fontsize=watermark_size, color="#c00000", alpha=0.18, rotation=12, zorder=0, clip_on=True)


def _finite_top(y: np.ndarray, floor: float) -> float:
    """Where to draw p = 0 (y = +inf): just above the largest finite value."""
    finite = y[np.isfinite(y)]
    return max(float(finite.max()) if finite.size else 0.0, floor) * 1.08


def _chromosome_order(labels: list[str]) -> list[str]:
    """Distinct GWAS-SSF chromosome codes in natural order: 1..22, X(23), Y(24), MT(25), then others."""
    def key(code: str) -> tuple[int, int, str]:
        return (0, int(code), "") if code.isdigit() else (1, 0, code)
    return sorted(set(labels), key=key)


def _genome_axis(chrom: np.ndarray, pos: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], tuple[float, float]]:
    """Concatenated genome coordinates for a Manhattan plot.

    Parameters
    ----------
    chrom, pos
        Chromosome names and positions, shape ``(n_points,)``.

    Returns
    -------
    tuple
        ``x`` (float64, ``(n_points,)``), each point's chromosome rank (``(n_points,)``), tick
        centres and names per chromosome in natural order, and the x-axis limits.
    """
    labels = gwas_ssf_chromosome(chrom)
    order = _chromosome_order(labels)
    rank_of = {code: i for i, code in enumerate(order)}
    ranks = np.fromiter(map(rank_of.__getitem__, labels), dtype=np.intp, count=len(labels))
    pos = np.asarray(pos, dtype=np.float64)
    lo = np.full(len(order), np.inf)
    hi = np.full(len(order), -np.inf)
    np.minimum.at(lo, ranks, pos)
    np.maximum.at(hi, ranks, pos)
    span = np.maximum(hi - lo, 1.0)
    span = np.maximum(span, 0.03 * float(span.max()))  # keep MT and sparse contigs visible
    gap = max(float(span.sum()) * 0.01, 1.0)
    start = np.concatenate(([0.0], np.cumsum(span + gap)[:-1]))
    x = start[ranks] + (pos - lo[ranks]) + ((span - (hi - lo)) / 2.0)[ranks]  # centred in its span
    names = [_DISPLAY.get(code, code) for code in order]
    return x, ranks, start + span / 2.0, names, (-gap, float(start[-1] + span[-1] + gap))


def _thin(x: np.ndarray, y: np.ndarray, colour: np.ndarray, x_extent: tuple[float, float], y_top: float
          ) -> np.ndarray:
    """Indices of the points to draw: every point with p <= 0.01 (-log10 p >= 2), and of the others one per
    pixel of the plot per colour (in drawing order), as GWAS plotting tools thin the null bulk: a dropped
    point lies within a pixel of a drawn one of its colour, under a marker three pixels wide."""
    width_px = _MANHATTAN_SIZE[0] * _DPI * (_MANHATTAN_AXES[1] - _MANHATTAN_AXES[0])
    height_px = _MANHATTAN_SIZE[1] * _DPI * (_MANHATTAN_AXES[3] - _MANHATTAN_AXES[2])
    bulk = np.flatnonzero(y < _THIN_BELOW)
    px = np.floor((x[bulk] - x_extent[0]) / (x_extent[1] - x_extent[0]) * width_px).astype(np.int64)
    py = np.floor(y[bulk] / y_top * height_px).astype(np.int64)
    cell = (px * (int(height_px) + 2) + py) * 2 + colour[bulk]
    _, first = np.unique(cell, return_index=True)
    keep = np.ones(len(y), dtype=bool)
    keep[bulk] = False
    keep[bulk[first]] = True
    return np.flatnonzero(keep)


def manhattan_plot(result: AssociationResult, path: Path | str, title: str, *,
                   plaintext: bool = False) -> Path:
    """Write a Manhattan plot of ``result`` to ``path`` (PNG, 12 x 4 in at 100 dpi).

    Chromosomes run in natural order (1..22, X, Y, MT, then any other contigs) in alternating colours,
    with lines at genome-wide (5e-8) and suggestive (1e-5) significance. Variants without a p-value
    are skipped; p = 0 is drawn at the top. Points are rasterised markers; those with p > 0.01 are thinned
    to one per pixel and colour (:func:`_thin`), so 10^6 variants take about a second.

    Parameters
    ----------
    result
        Association statistics, shape ``(n_variants,)``.
    path
        Output PNG.
    title
        Plot title (drawn literally).
    plaintext
        Label the plot ``PLAINTEXT (development only)``.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    fig, ax = _new_figure(*_MANHATTAN_SIZE)
    y_all = np.asarray(result.neg_log10_p, dtype=np.float64)
    keep = ~np.isnan(y_all)
    y = np.maximum(y_all[keep], 0.0)
    genome_wide = -math.log10(GENOME_WIDE)
    if y.size:
        x, ranks, centres, names, extent = _genome_axis(np.asarray(result.variants.chrom)[keep],
                                                        np.asarray(result.variants.pos)[keep])
        y = np.where(np.isinf(y), _finite_top(y, genome_wide), y)
        y_top = max(float(y.max()), genome_wide + 1.0) * 1.05
        drawn = _thin(x, y, ranks % 2, extent, y_top)
        x, y, ranks = x[drawn], y[drawn], ranks[drawn]
        for parity, colour in enumerate(_COLOURS):
            sel = ranks % 2 == parity
            ax.plot(x[sel], y[sel], linestyle="none", marker="o", markersize=2.2, markeredgewidth=0,
                    color=colour, rasterized=True)
        ax.set_xticks(centres, names, fontsize=8, rotation=90 if len(names) > 30 else 0)
        ax.set_xlim(*extent)
        ax.set_ylim(0.0, y_top)
    else:
        ax.text(0.5, 0.5, "no p-values to plot", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0.0, genome_wide + 1.0)
    ax.axhline(genome_wide, color="#c00000", linestyle="--", linewidth=0.8)
    ax.axhline(-math.log10(SUGGESTIVE), color="#7f7f7f", linestyle=":", linewidth=0.8)
    ax.set_xlabel("Chromosome")
    ax.set_ylabel("-log10(p)")
    ax.set_title(title, parse_math=False)
    ax.spines[["top", "right"]].set_visible(False)
    left, right, bottom, top = _MANHATTAN_AXES
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    if plaintext:
        _mark_plaintext(fig, ax, 26.0)
    return _save(fig, path)


def _qq_ranks(n: int) -> np.ndarray:
    """1-based ranks to draw: all of the ``_QQ_TAIL`` smallest p-values, log-spaced beyond them.

    Observed and expected values are both monotone in rank, so dropped points lie between drawn
    neighbours that are far closer than a pixel apart.
    """
    if n <= _QQ_TAIL + _QQ_BULK:
        return np.arange(1, n + 1)
    bulk = np.unique(np.geomspace(_QQ_TAIL + 1, n, _QQ_BULK).round().astype(np.int64))
    return np.concatenate((np.arange(1, _QQ_TAIL + 1), bulk[bulk > _QQ_TAIL]))


@functools.lru_cache(maxsize=4)
def _qq_frame(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ranks, expected -log10 p, lower and upper 95% band) of a QQ plot of ``n`` p-values: the same for
    every phenotype of a study with as many p-values (the Beta quantiles are the plot's costliest part)."""
    ranks = _qq_ranks(n)
    expected = -np.log10(ranks / (n + 1.0))
    band_hi = -np.log10(stats.beta.ppf(0.025, ranks, n - ranks + 1))
    band_lo = -np.log10(stats.beta.ppf(0.975, ranks, n - ranks + 1))
    for array in (ranks, expected, band_lo, band_hi):
        array.flags.writeable = False
    return ranks, expected, band_lo, band_hi


def qq_plot(result: AssociationResult, path: Path | str, title: str, *, plaintext: bool = False) -> float:
    """Write a QQ plot of ``result``'s p-values to ``path`` (PNG) and return lambda_GC.

    Observed against expected -log10(p) under the null, with the pointwise 95% band of uniform order
    statistics (Beta(i, n - i + 1) quantiles) and lambda_GC in the title. NaN p-values are skipped.

    Parameters
    ----------
    result
        Association statistics, shape ``(n_variants,)``.
    path
        Output PNG (5.5 x 5.5 in at 100 dpi).
    title
        Plot title (drawn literally); lambda_GC is added below it.
    plaintext
        Label the plot ``PLAINTEXT (development only)``.

    Returns
    -------
    float
        lambda_GC as from :func:`genomic_inflation` (NaN without p-values).
    """
    lam = genomic_inflation(result.neg_log10_p)
    x = np.asarray(result.neg_log10_p, dtype=np.float64)
    observed = -np.sort(-np.maximum(x[~np.isnan(x)], 0.0))  # descending; inf first
    n = observed.size
    fig, ax = _new_figure(5.5, 5.5)
    if n:
        ranks, expected, band_lo, band_hi = _qq_frame(n)
        obs = observed[ranks - 1]
        obs = np.where(np.isinf(obs), _finite_top(obs, float(expected[0])), obs)
        ax.fill_between(expected, band_lo, band_hi, color="#d9d9d9", linewidth=0, label="95% band")
        top = float(expected[0])
        ax.plot([0.0, top], [0.0, top], color="#c00000", linewidth=0.8)
        ax.plot(expected, obs, linestyle="none", marker="o", markersize=2.5, markeredgewidth=0,
                color=_COLOURS[0], rasterized=True)
        ax.set_xlim(0.0, top * 1.03)
        ax.set_ylim(0.0, max(float(obs.max()), float(band_hi.max()), top) * 1.05)
    else:
        ax.text(0.5, 0.5, "no p-values to plot", transform=ax.transAxes, ha="center", va="center")
    lam_text = "n/a" if math.isnan(lam) else f"{lam:.3f}"
    ax.set_title(f"{title}\nλGC = {lam_text}", parse_math=False, fontsize=10)
    ax.set_xlabel("Expected -log10(p)")
    ax.set_ylabel("Observed -log10(p)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.85)
    if plaintext:
        _mark_plaintext(fig, ax, 16.0)
    _save(fig, path)
    return lam
