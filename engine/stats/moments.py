"""The ``moments`` statistic: pooled ``n, sum z, sum z^2`` of the phenotype and each covariate.

From them the coordinator chooses the study-level centres and scales (:mod:`engine.cohort.standardise`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.cohort.standardise import STANDARDISE_INPUT, moments_row, standardise_cohort
from engine.stats.statistic import STANDARDISE_INPUTS, InputSpec


class MomentsStatistic:
    """``[n, sum z (1 + k), sum z^2 (1 + k)]`` over the cohort, with z the values under the task's
    standardisation (:func:`engine.cohort.standardise.moments_row`). The genotypes are not used: run it
    on one variant. Width ``1 + 2 (1 + k)`` (``3 (P + k)`` for a cohort of ``P`` phenotypes).
    """

    name = "moments"
    needs_phenotype = True
    #: A multi-phenotype cohort gives each phenotype's moments over its own samples and the covariates'
    #: over the union (width ``3 (P + k)``, engine.cohort.standardise.moments_row).
    multi_phenotype = True
    inputs: Mapping[str, InputSpec] = STANDARDISE_INPUTS

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return moments_row(standardise_cohort(cohort, inputs.get(STANDARDISE_INPUT), scale_phenotype=True))

    def width(self, state: np.ndarray) -> int:
        return len(state)

    def block(self, state: np.ndarray, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.tile(state, (genotypes.shape[1], 1))
