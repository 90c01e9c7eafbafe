"""The ``linear`` statistic: per-variant OLS sufficient statistics with covariates (:mod:`engine.stats.linear.kernel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.stats.linear.kernel import LinearLayout, block_statistics, flip_effect_allele, sample_cross_products
from engine.cohort.standardise import STANDARDISE_INPUT, standardise_cohort
from engine.stats.statistic import STANDARDISE_INPUTS, InputSpec


@dataclass(frozen=True)
class _LinearState:
    design: np.ndarray
    y: np.ndarray
    per_sample: np.ndarray


class LinearStatistic:
    """Sufficient statistics of per-variant OLS with covariates (:mod:`engine.stats.linear.kernel`)."""

    name = "linear"
    needs_phenotype = True
    males_only_on_y = True  # the site drops non-males' chrY calls first (engine/cohort/sex_chromosomes.py)
    inputs: Mapping[str, InputSpec] = STANDARDISE_INPUTS

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LinearState:
        cohort = standardise_cohort(cohort, inputs.get(STANDARDISE_INPUT), scale_phenotype=True)
        design = cohort.design
        return _LinearState(design, cohort.phenotype, sample_cross_products(design, cohort.phenotype))

    def width(self, state: _LinearState) -> int:
        return LinearLayout(state.design.shape[1]).width

    def block(self, state: _LinearState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        stats = block_statistics(genotypes, state.design, state.y, state.per_sample)
        return flip_effect_allele(stats, flip, state.design.shape[1])


