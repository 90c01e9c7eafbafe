"""The ``linear`` statistic: per-variant OLS sufficient statistics with covariates (:mod:`engine.stats.linear.kernel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.stats.linear.kernel import LinearLayout, block_statistics, flip_effect_allele, sample_cross_products
from engine.stats.statistic import InputSpec


@dataclass(frozen=True)
class _LinearState:
    design: np.ndarray
    y: np.ndarray
    per_sample: np.ndarray


class LinearStatistic:
    """Sufficient statistics of per-variant OLS with covariates (:mod:`engine.stats.linear.kernel`)."""

    name = "linear"
    needs_phenotype = True
    inputs: Mapping[str, InputSpec] = {}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LinearState:
        design = cohort.design
        return _LinearState(design, cohort.phenotype, sample_cross_products(design, cohort.phenotype))

    def width(self, state: _LinearState) -> int:
        return LinearLayout(state.design.shape[1]).width

    def block(self, state: _LinearState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        stats = block_statistics(genotypes, state.design, state.y, state.per_sample)
        return flip_effect_allele(stats, flip, state.design.shape[1])


