"""What every per-round site statistic looks like, and the checks every one of them shares.

A *statistic* is what a site computes in one round for each block of variants (``linear``, ``qc``,
``logistic_start``, ...); a *model* is what the analyst asks for (``linear``, ``logistic``, ``firth``:
:data:`engine.tasks.MODELS`), which a coordinator driver fits over one or more rounds of statistics.
Every output is a float64 array ``(m, width)`` of per-variant values that are *sums over samples*, so
that they can be aggregated under any privacy mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Protocol

import numpy as np

from engine.cohort.cohort import Cohort
from engine.cohort.standardise import STANDARDISE_INPUT
from engine.errors import ProtocolError


@dataclass(frozen=True)
class InputSpec:
    """An input array a statistic accepts: wire dtype, and its shape after the variant axis.

    ``per_variant`` arrays have one row per task variant (sliced per block for the kernel);
    ``trailing`` gives the remaining dimensions, ``None`` where any length is allowed.
    """

    dtype: str
    per_variant: bool = True
    trailing: tuple[int | None, ...] = ()
    optional: bool = False  # may be absent (the statistic then uses its documented default)


class SiteStatistic(Protocol):
    """Per-block computation at a site (see the module docstring)."""

    name: str
    needs_phenotype: bool
    inputs: Mapping[str, InputSpec]

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> Any:
        """Per-task state computed once from the cohort (e.g. per-sample cross-products)."""

    def width(self, state: Any) -> int:
        """Values per variant in the output."""

    def block(self, state: Any, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Output ``(m, width)`` float64 for int8 genotypes ``(n, m)`` (-127 missing), or float32
        dosages (NaN missing) for a statistic with ``dosage = True`` at a site with dosages.

        ``flip`` ``(m,)`` marks variants whose counted allele is the study's other allele;
        ``inputs`` holds the per-variant inputs sliced to this block.
        """

    # Optional, for statistics that need them (the site agent looks them up with getattr):
    # ``scan(state, genotypes, flip, inputs) -> None``: a first pass over every block, in order,
    #     before any output block (PCA accumulates its sample-space product there);
    # ``sample_values(state) -> (n, b)``: per-sample values that stay at the site, kept when the task
    #     asks for it (the PCA's sample scores, engine.stats.pca.kernel.SCORES_PARAMETER);
    # ``males_only_on_y = True``: association statistics, for which the site sets non-males' chrY calls
    #     missing before the block (PLINK 2's --glm; engine.cohort.sex_chromosomes);
    # ``dosage = True``: the statistic reads dosages where the site has them (hard calls otherwise:
    #     PLINK 2's QC counts, LD and PCA here use hard calls);
    # ``multi_phenotype = True``: the statistic takes a cohort of several phenotypes (engine.tasks);
    # ``uses_genotypes = False``: rows that do not depend on the variant (no rare-variant suppression).
    # ``sequential_blocks = True``: ``block`` updates ``state``, so blocks are computed one after the
    #     other, in order (otherwise the site may compute blocks concurrently, on other processes).


#: The study-level centring and scaling of the phenotype and covariates (:mod:`engine.cohort.standardise`),
#: ``(2, 1 + k)``; absent: the values as read.
STANDARDISE_INPUTS = {STANDARDISE_INPUT: InputSpec("float64", per_variant=False, trailing=(2, None), optional=True)}


def flip_genotypes(genotypes: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Allele counts of the other allele (2 - g, missing kept) in the flipped columns; a new array."""
    if not np.any(flip):
        return genotypes
    out = np.array(genotypes, order="F", copy=True)
    columns = out[:, flip]
    out[:, flip] = np.where(columns >= 0, 2 - columns, columns)
    return out



def check_inputs(statistic: SiteStatistic, inputs: Mapping[str, np.ndarray], n_variants: int) -> None:
    """Refuse inputs that the statistic does not declare, or with the wrong dtype or shape."""
    unknown = sorted(set(inputs) - set(statistic.inputs))
    if unknown:
        raise ProtocolError(f"statistic {statistic.name!r} takes no input {unknown[0]!r}; it takes {sorted(statistic.inputs)}")
    for name, spec in statistic.inputs.items():
        if name not in inputs and spec.optional:
            continue
        if name not in inputs:
            raise ProtocolError(f"statistic {statistic.name!r} needs input {name!r}")
        array = inputs[name]
        if array.dtype != np.dtype(spec.dtype):
            raise ProtocolError(f"input {name!r} has dtype {array.dtype.str!r}, expected {spec.dtype!r}")
        shape = array.shape[1:] if spec.per_variant else array.shape
        if spec.per_variant and (array.ndim == 0 or array.shape[0] != n_variants):
            raise ProtocolError(f"input {name!r} must have one row per task variant ({n_variants}), got {array.shape}")
        if len(shape) != len(spec.trailing) or any(e is not None and e != a for e, a in zip(spec.trailing, shape)):
            raise ProtocolError(f"input {name!r} has shape {array.shape}, expected (..., {spec.trailing})")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ProtocolError(f"input {name!r} holds non-finite values")


@dataclass(frozen=True)
class DesignLayout:
    """The design of a per-variant regression: ``n_design`` columns (intercept and covariates, K), plus
    the genotype as the last of the ``n_predictors`` (P = K + 1). Statistics lay out their per-variant
    sums from it (upper triangles in ``np.triu_indices(P)`` order)."""

    n_design: int  # K

    @property
    def n_predictors(self) -> int:  # P
        return self.n_design + 1

    @cached_property
    def triu(self) -> tuple[np.ndarray, np.ndarray]:
        return np.triu_indices(self.n_predictors)
