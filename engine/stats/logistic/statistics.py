"""The case/control statistics: covariate-only fit, start round, Newton rounds (float32 and exact) and Firth.

The arithmetic is in :mod:`engine.stats.logistic.kernel`; the coordinator's side in
:mod:`engine.stats.logistic.solve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.cohort.cohort import Cohort
from engine.errors import ProtocolError
from engine.stats.logistic.kernel import (DesignProducts, LogisticLayout, covariate_statistics, design_products,
                                          logistic_statistics)
from engine.stats.logistic.start import StartLayout, start_statistics
from engine.cohort.standardise import STANDARDISE_INPUT, standardise_cohort
from engine.stats.statistic import STANDARDISE_INPUTS, InputSpec, flip_genotypes


@dataclass(frozen=True)
class _LogisticState:
    design: np.ndarray
    y: np.ndarray
    products: DesignProducts


class LogisticStatistic:
    """Newton round of per-variant logistic regression at given coefficients (:mod:`engine.stats.logistic.kernel`).

    Input ``coef`` ``(m, K + 1)``: each variant's covariate coefficients, then its genotype
    coefficient (for the study's effect allele). Output: ``X'WX`` (upper triangle) and ``X'(y - p)``.
    """

    name = "logistic"
    needs_phenotype = True
    males_only_on_y = True
    dosage = True
    firth = False
    exact = False
    inputs: Mapping[str, InputSpec] = {"coef": InputSpec("float64", per_variant=True, trailing=(None,)),
                                       **STANDARDISE_INPUTS}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LogisticState:
        cohort = standardise_cohort(cohort, inputs.get(STANDARDISE_INPUT), scale_phenotype=False)
        design = cohort.design
        if inputs["coef"].shape[1] != design.shape[1] + 1:
            raise ProtocolError(f"input 'coef' has {inputs['coef'].shape[1]} columns, the model has "
                                f"{design.shape[1] + 1} coefficients (intercept, covariates, genotype)")
        if not np.all((cohort.phenotype == 0) | (cohort.phenotype == 1)):
            raise ProtocolError(f"statistic {self.name!r} needs a case/control phenotype coding")
        return _LogisticState(design, cohort.phenotype, design_products(design, self.firth))

    def width(self, state: _LogisticState) -> int:
        return LogisticLayout(state.design.shape[1], self.firth).width

    def block(self, state: _LogisticState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return logistic_statistics(flip_genotypes(genotypes, flip), state.design, state.y, inputs["coef"],
                                   firth=self.firth, exact=self.exact, products=state.products)


class ExactLogisticStatistic(LogisticStatistic):
    """A Newton round in float64 throughout, for the fits that follow PLINK's path from 0 (see
    :mod:`engine.stats.logistic.solve`); the same output as ``logistic``."""

    name = "logistic_exact"
    exact = True


class LogisticStartStatistic:
    """The round that starts a case/control fit, at the covariate-only fit (:func:`engine.stats.logistic.start.start_statistics`).

    Input ``null_coef`` ``(K,)``: the covariate-only coefficients (intercept, covariates), the same for
    every variant. Output per variant: the linear statistics of the 0/1 phenotype, the logistic
    statistics at ``[null_coef, 0]`` and the genotype third moments there (:class:`engine.stats.logistic.start.StartLayout`).
    """

    name = "logistic_start"
    needs_phenotype = True
    males_only_on_y = True
    dosage = True
    inputs: Mapping[str, InputSpec] = {"null_coef": InputSpec("float64", per_variant=False, trailing=(None,)),
                                       **STANDARDISE_INPUTS}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> Cohort:
        cohort = standardise_cohort(cohort, inputs.get(STANDARDISE_INPUT), scale_phenotype=False)
        design = cohort.design
        if inputs["null_coef"].shape != (design.shape[1],):
            raise ProtocolError(f"input 'null_coef' has shape {inputs['null_coef'].shape}, the covariate-only "
                                f"model has {design.shape[1]} coefficients (intercept, covariates)")
        if not np.all((cohort.phenotype == 0) | (cohort.phenotype == 1)):
            raise ProtocolError(f"statistic {self.name!r} needs a case/control phenotype coding")
        return cohort

    def width(self, state: Cohort) -> int:
        return StartLayout(state.design.shape[1]).width

    def block(self, state: Cohort, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return start_statistics(flip_genotypes(genotypes, flip), state.design, state.phenotype, inputs["null_coef"])


class FirthStatistic(LogisticStatistic):
    """Firth round: the logistic statistics plus log-likelihood and third moments (:mod:`engine.stats.logistic.kernel`)."""

    name = "firth"
    firth = True


class CovariateFitStatistic:
    """The covariate-only logistic model over the whole cohort, at given coefficients.

    PLINK 2 fits it once per phenotype: if the covariates alone separate cases from controls, every
    variant is fitted by Firth regression. Input ``coef`` ``(m, K)`` (one row per requested variant,
    usually one; the genotypes are not used). Output: the Firth statistics of
    :func:`engine.stats.logistic.kernel.covariate_statistics`.
    """

    name = "covariate_fit"
    needs_phenotype = True
    inputs: Mapping[str, InputSpec] = {"coef": InputSpec("float64", per_variant=True, trailing=(None,)),
                                       **STANDARDISE_INPUTS}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LogisticState:
        cohort = standardise_cohort(cohort, inputs.get(STANDARDISE_INPUT), scale_phenotype=False)
        design = cohort.design
        if inputs["coef"].shape[1] != design.shape[1]:
            raise ProtocolError(f"input 'coef' has {inputs['coef'].shape[1]} columns, the covariate-only model "
                                f"has {design.shape[1]} coefficients (intercept, covariates)")
        if not np.all((cohort.phenotype == 0) | (cohort.phenotype == 1)):
            raise ProtocolError(f"statistic {self.name!r} needs a case/control phenotype coding")
        return _LogisticState(design, cohort.phenotype, design_products(design, True))

    def width(self, state: _LogisticState) -> int:
        return LogisticLayout(state.design.shape[1] - 1, True).width

    def block(self, state: _LogisticState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return covariate_statistics(state.design, state.y, inputs["coef"], state.products)


