"""LD pruning, the site side: pairwise genotype cross-products over samples observed at both variants.

PLINK's ``--indep-pairwise`` computes, for a pair of variants ``(a, b)``, r^2 from hard calls over the
samples called at *both*: with ``n`` those samples, ``S_a = sum g_a``, ``S_b = sum g_b``,
``Q_a = sum g_a^2``, ``Q_b = sum g_b^2`` and ``P = sum g_a g_b`` over them,
``r^2 = (n P - S_a S_b)^2 / ((n Q_a - S_a^2)(n Q_b - S_b^2))``. These six numbers are sums over
samples, so the pooled values are the sums of the sites' values: the federated r^2 is PLINK's on the
pooled data, bit for bit (they are integers, exact in float64 and in the secure-aggregation ring).

A site returns, for each task variant ``t``, the six sums for each of its ``D`` predecessors in task
order (``t - 1`` .. ``t - D``): an ``(m, 6 D)`` block, field-major (:data:`PAIR_FIELDS`, then the
distance ``d = 1..D``). ``D`` covers every pair that any window can compare (:mod:`engine.stats.ld.prune`).
The kernel is a few GEMMs per chunk of variants over ``[observed, g, g^2]`` indicator/genotype
matrices, and the band of the products is read out with one fancy-indexing step; blocks are
processed in task order, carrying the previous block's last ``D`` variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.stats.statistic import InputSpec, flip_genotypes
from engine.errors import ProtocolError


#: Per pair of (variant ``t``, predecessor ``t - d``): samples called at both, then sums over them.
PAIR_FIELDS = ("n", "sum_self", "sum_other", "ssq_self", "ssq_other", "dot")
#: Largest band the analysis accepts (pairs per variant).
MAX_BAND = 4096


def band_statistics(genotypes: np.ndarray, previous: np.ndarray, band: int) -> np.ndarray:
    """Pair sums of each variant of a block with its ``band`` predecessors.

    Parameters
    ----------
    genotypes
        int8 ``(n, m)`` counts of the study's effect allele (flips applied), ``-127`` missing.
    previous
        int8 ``(n, c)``, ``c <= band``: the variants just before the block, in task order.
    band
        ``D``, the number of predecessors per variant.

    Returns
    -------
    numpy.ndarray
        float64 ``(m, 6, D)``: :data:`PAIR_FIELDS` for the pair (variant, variant - d) at ``[:, :, d - 1]``;
        zeros where the predecessor does not exist (before the first task variant).
    """
    n, m = genotypes.shape
    c = previous.shape[1]
    both = np.concatenate([previous, genotypes], axis=1) if c else genotypes
    out = np.zeros((m, len(PAIR_FIELDS), band))
    chunk = max(band, 64)
    distance = np.arange(1, band + 1)
    for start in range(c, c + m, chunk):
        stop = min(start + chunk, c + m)
        first = max(0, start - band)
        part = both[:, first:stop]
        observed = (part >= 0).astype(np.float64)
        g = np.where(part >= 0, part, 0).astype(np.float64)
        g2 = g * g
        rows = slice(start - first, stop - first)
        # rows: the chunk's variants ("self"); columns: the chunk and its band of predecessors ("other").
        left = np.hstack([observed[:, rows], g[:, rows], g2[:, rows]])  # (n, 3 r)
        by_observed = left.T @ observed  # n, sum_self, ssq_self: (3 r, w)
        by_values = observed[:, rows].T @ np.hstack([g, g2])  # sum_other, ssq_other: (r, 2 w)
        dot = g[:, rows].T @ g  # (r, w)
        r, w = stop - start, stop - first
        local = np.arange(r)[:, None] + (start - first) - distance[None, :]  # partner column, (r, D)
        valid = local >= 0
        column = np.where(valid, local, 0)
        row = np.arange(r)[:, None]
        fields = (by_observed[:r], by_observed[r: 2 * r], by_values[:, :w], by_observed[2 * r:],
                  by_values[:, w:], dot)  # PAIR_FIELDS order
        target = out[start - c: stop - c]
        for index, values in enumerate(fields):
            target[:, index, :] = np.where(valid, values[row, column], 0.0)
    return out


@dataclass
class LdState:
    """Per-task state of :class:`LdPairsStatistic`: the band, and the last ``band`` variants of the
    previous block (blocks arrive in task order; ``position`` checks it)."""

    band: int
    n_samples: int
    carry: np.ndarray = field(init=False)
    next_position: int = 0

    def __post_init__(self) -> None:
        self.carry = np.empty((self.n_samples, 0), dtype=np.int8, order="F")


class LdPairsStatistic:
    """Site analysis ``ld_pairs``: :func:`band_statistics` over the task's variants in order.

    Inputs: ``band`` int64 ``(1,)`` (``D``), and ``position`` int64 per variant (its index in the task,
    ``0 .. M-1``), which lets the site refuse blocks that are not consecutive. Every sample counts.
    """

    name = "ld_pairs"
    needs_phenotype = False
    inputs: Mapping[str, InputSpec]

    def __init__(self) -> None:
        self.inputs = {"band": InputSpec("int64", per_variant=False, trailing=(1,)),
                       "position": InputSpec("int64", per_variant=True)}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> LdState:
        band = int(inputs["band"][0])
        if not 1 <= band <= MAX_BAND:
            raise ProtocolError(f"input 'band' is {band}; the LD analysis takes 1 to {MAX_BAND} predecessors")
        if not np.array_equal(inputs["position"], np.arange(len(inputs["position"]))):
            raise ProtocolError("input 'position' must number the task's variants 0, 1, 2, ...")
        return LdState(band=band, n_samples=cohort.n_samples)

    def width(self, state: LdState) -> int:
        return len(PAIR_FIELDS) * state.band

    def block(self, state: LdState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:

        position = inputs["position"]
        if len(position) == 0 or int(position[0]) != state.next_position:
            raise ProtocolError(f"LD blocks must arrive in task order: expected variant {state.next_position}, "
                                f"got {int(position[0]) if len(position) else 'none'}")
        oriented = flip_genotypes(genotypes, flip)
        out = band_statistics(oriented, state.carry, state.band)
        both = np.concatenate([state.carry, oriented], axis=1)
        state.carry = np.asfortranarray(both[:, -state.band:])
        state.next_position += genotypes.shape[1]
        return out.reshape(len(out), -1)
