"""The ``linear`` statistic: per-variant OLS sufficient statistics with covariates (:mod:`engine.stats.linear.kernel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.stats.linear.kernel import LinearLayout, block_statistics, flip_effect_allele, sample_cross_products
from engine.cohort.standardise import STANDARDISE_INPUT, standardise_cohort
from engine.stats.linear.compact import compact_statistics, complete_width, totals_row, totals_width
from engine.stats.linear.phenotypes import PhenotypeGroups, group_phenotypes, phenotype_statistics
from engine.stats.statistic import STANDARDISE_INPUTS, InputSpec


@dataclass(frozen=True)
class _LinearState:
    design: np.ndarray
    y: np.ndarray
    per_sample: np.ndarray
    groups: PhenotypeGroups


class LinearStatistic:
    """Sufficient statistics of per-variant OLS with covariates (:mod:`engine.stats.linear.kernel`), for every
    phenotype of the cohort in one pass (:mod:`engine.stats.linear.phenotypes`): ``P * Q`` values per
    variant, phenotype-major. Reads dosages where the site has them (``dosage``), as PLINK 2's ``--glm``.
    """

    name = "linear"
    needs_phenotype = True
    males_only_on_y = True  # the site drops non-males' chrY calls first (engine/cohort/sex_chromosomes.py)
    multi_phenotype = True
    dosage = True
    inputs: Mapping[str, InputSpec] = STANDARDISE_INPUTS

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LinearState:
        cohort = standardise_cohort(cohort, inputs.get(STANDARDISE_INPUT), scale_phenotype=True)
        design = cohort.design
        return _LinearState(design, cohort.phenotype, sample_cross_products(design, cohort.phenotype),
                            group_phenotypes(design, cohort.phenotypes))

    def width(self, state: _LinearState) -> int:
        return LinearLayout(state.design.shape[1]).width * state.groups.n_phenotypes

    def block(self, state: _LinearState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        if genotypes.dtype != np.int8 or state.groups.n_phenotypes > 1:
            return phenotype_statistics(genotypes, state.groups, flip)
        stats = block_statistics(genotypes, state.design, state.y, state.per_sample)  # hard calls, one phenotype
        return flip_effect_allele(stats, flip, state.design.shape[1])




class LinearCompleteStatistic(LinearStatistic):
    """``linear_complete``: per phenotype ``N``, ``C'g``, ``g'g``, ``g'y`` (:mod:`engine.stats.linear.compact`),
    from the same one-pass kernel; the coordinator completes them with ``linear_totals``."""

    name = "linear_complete"

    def width(self, state: _LinearState) -> int:
        return complete_width(state.design.shape[1]) * state.groups.n_phenotypes

    def block(self, state: _LinearState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return compact_statistics(genotypes, state.groups, flip)


class LinearTotalsStatistic(LinearStatistic):
    """``linear_totals``: per phenotype ``C'C``, ``C'y``, ``y'y`` over its samples, the same row for every
    requested variant (the genotypes are not used; the coordinator asks for one)."""

    name = "linear_totals"
    dosage = False
    uses_genotypes = False  # the site's rare-variant suppression does not apply to these rows

    def width(self, state: _LinearState) -> int:
        return totals_width(state.design.shape[1]) * state.groups.n_phenotypes

    def block(self, state: _LinearState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.tile(totals_row(state.groups), (genotypes.shape[1], 1))
