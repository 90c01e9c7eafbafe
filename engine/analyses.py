"""Site-side analyses, registered by name: what a site computes for each block of variants.

A new statistic is added in one place: a class with the :class:`SiteAnalysis` shape, registered in
:data:`REGISTRY`. The site agent runs any registered analysis the same way (read a block of the
requested variants for the cohort's samples, compute, protect, stream), the wire protocol carries
its inputs as named arrays, and the coordinator's driver for it (``coordinator/drivers.py``) turns
aggregated totals into results. Every output is a float64 array ``(m, width)`` of per-variant values
that are *sums over samples*, so that they can be aggregated under any privacy mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import numpy as np

from engine.cohort import Cohort
from engine.errors import ProtocolError
from engine.linear import LinearLayout, block_statistics, flip_effect_allele, sample_cross_products
from engine.logistic import (DesignProducts, LogisticLayout, StartLayout, covariate_statistics, design_products,
                             logistic_statistics, start_statistics)
from engine.ld import LdPairsAnalysis
from engine.pca import PcaAnalysis
from engine.qc import QcAnalysis
from engine.stats.qc.dosage import DosageSumsAnalysis
from engine.stats.linear.phenotypes import PhenotypeGroups, group_phenotypes, phenotype_statistics


@dataclass(frozen=True)
class InputSpec:
    """An input array an analysis accepts: wire dtype, and its shape after the variant axis.

    ``per_variant`` arrays have one row per task variant (sliced per block for the kernel);
    ``trailing`` gives the remaining dimensions, ``None`` where any length is allowed.
    """

    dtype: str
    per_variant: bool = True
    trailing: tuple[int | None, ...] = ()


class SiteAnalysis(Protocol):
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
        dosages (NaN missing) for an analysis with ``dosage = True`` at a site with dosages.

        ``flip`` ``(m,)`` marks variants whose counted allele is the study's other allele;
        ``inputs`` holds the per-variant inputs sliced to this block.
        """

    # Optional, for analyses that need them (the site agent looks them up with getattr):
    # ``scan(state, genotypes, flip, inputs) -> None``: a first pass over every block, in order,
    #     before any output block (PCA accumulates its sample-space product there);
    # ``sample_values(state) -> (n, b)``: per-sample values that stay at the site, kept when the task
    #     asks for it (the PCA's sample scores, engine.pca.SCORES_PARAMETER);
    # ``dosage = True``: the analysis reads dosages where the site has them (hard calls otherwise:
    #     PLINK 2's QC counts, LD and PCA here use hard calls);
    # ``multi_phenotype = True``: the analysis takes a cohort of several phenotypes (engine.tasks).


def flip_genotypes(genotypes: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Allele counts of the other allele (2 - g, missing kept) in the flipped columns; a new array."""
    if not np.any(flip):
        return genotypes
    out = np.array(genotypes, order="F", copy=True)
    columns = out[:, flip]
    out[:, flip] = np.where(columns >= 0, 2 - columns, columns)
    return out


@dataclass(frozen=True)
class _LinearState:
    design: np.ndarray
    y: np.ndarray
    per_sample: np.ndarray
    groups: PhenotypeGroups


class LinearAnalysis:
    """Sufficient statistics of per-variant OLS with covariates (:mod:`engine.linear`), for every
    phenotype of the cohort in one pass (:mod:`engine.stats.linear.phenotypes`): ``P * Q`` values per
    variant, phenotype-major. Reads dosages where the site has them (``dosage``), as PLINK 2's ``--glm``.
    """

    name = "linear"
    needs_phenotype = True
    multi_phenotype = True
    dosage = True
    inputs: Mapping[str, InputSpec] = {}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LinearState:
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


@dataclass(frozen=True)
class _LogisticState:
    design: np.ndarray
    y: np.ndarray
    products: DesignProducts


class LogisticAnalysis:
    """Newton round of per-variant logistic regression at given coefficients (:mod:`engine.logistic`).

    Input ``coef`` ``(m, K + 1)``: each variant's covariate coefficients, then its genotype
    coefficient (for the study's effect allele). Output: ``X'WX`` (upper triangle) and ``X'(y - p)``.
    """

    name = "logistic"
    needs_phenotype = True
    dosage = True
    firth = False
    exact = False
    inputs: Mapping[str, InputSpec] = {"coef": InputSpec("float64", per_variant=True, trailing=(None,))}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LogisticState:
        design = cohort.design
        if inputs["coef"].shape[1] != design.shape[1] + 1:
            raise ProtocolError(f"input 'coef' has {inputs['coef'].shape[1]} columns, the model has "
                                f"{design.shape[1] + 1} coefficients (intercept, covariates, genotype)")
        if not np.all((cohort.phenotype == 0) | (cohort.phenotype == 1)):
            raise ProtocolError(f"analysis {self.name!r} needs a case/control phenotype coding")
        return _LogisticState(design, cohort.phenotype, design_products(design, self.firth))

    def width(self, state: _LogisticState) -> int:
        return LogisticLayout(state.design.shape[1], self.firth).width

    def block(self, state: _LogisticState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return logistic_statistics(flip_genotypes(genotypes, flip), state.design, state.y, inputs["coef"],
                                   firth=self.firth, exact=self.exact, products=state.products)


class ExactLogisticAnalysis(LogisticAnalysis):
    """A Newton round in float64 throughout, for the fits that follow PLINK's path from 0 (see
    :mod:`engine.logistic_solve`); the same output as ``logistic``."""

    name = "logistic_exact"
    exact = True


class LogisticStartAnalysis:
    """The round that starts a case/control fit, at the covariate-only fit (:func:`engine.logistic.start_statistics`).

    Input ``null_coef`` ``(K,)``: the covariate-only coefficients (intercept, covariates), the same for
    every variant. Output per variant: the linear statistics of the 0/1 phenotype, the logistic
    statistics at ``[null_coef, 0]`` and the genotype third moments there (:class:`engine.logistic.StartLayout`).
    """

    name = "logistic_start"
    needs_phenotype = True
    dosage = True
    inputs: Mapping[str, InputSpec] = {"null_coef": InputSpec("float64", per_variant=False, trailing=(None,))}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> Cohort:
        design = cohort.design
        if inputs["null_coef"].shape != (design.shape[1],):
            raise ProtocolError(f"input 'null_coef' has shape {inputs['null_coef'].shape}, the covariate-only "
                                f"model has {design.shape[1]} coefficients (intercept, covariates)")
        if not np.all((cohort.phenotype == 0) | (cohort.phenotype == 1)):
            raise ProtocolError(f"analysis {self.name!r} needs a case/control phenotype coding")
        return cohort

    def width(self, state: Cohort) -> int:
        return StartLayout(state.design.shape[1]).width

    def block(self, state: Cohort, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return start_statistics(flip_genotypes(genotypes, flip), state.design, state.phenotype, inputs["null_coef"])


class FirthAnalysis(LogisticAnalysis):
    """Firth round: the logistic statistics plus log-likelihood and third moments (:mod:`engine.logistic`)."""

    name = "firth"
    firth = True


class CovariateFitAnalysis:
    """The covariate-only logistic model over the whole cohort, at given coefficients.

    PLINK 2 fits it once per phenotype: if the covariates alone separate cases from controls, every
    variant is fitted by Firth regression. Input ``coef`` ``(m, K)`` (one row per requested variant,
    usually one; the genotypes are not used). Output: the Firth statistics of
    :func:`engine.logistic.covariate_statistics`.
    """

    name = "covariate_fit"
    needs_phenotype = True
    inputs: Mapping[str, InputSpec] = {"coef": InputSpec("float64", per_variant=True, trailing=(None,))}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> _LogisticState:
        design = cohort.design
        if inputs["coef"].shape[1] != design.shape[1]:
            raise ProtocolError(f"input 'coef' has {inputs['coef'].shape[1]} columns, the covariate-only model "
                                f"has {design.shape[1]} coefficients (intercept, covariates)")
        if not np.all((cohort.phenotype == 0) | (cohort.phenotype == 1)):
            raise ProtocolError(f"analysis {self.name!r} needs a case/control phenotype coding")
        return _LogisticState(design, cohort.phenotype, design_products(design, True))

    def width(self, state: _LogisticState) -> int:
        return LogisticLayout(state.design.shape[1] - 1, True).width

    def block(self, state: _LogisticState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return covariate_statistics(state.design, state.y, inputs["coef"], state.products)


REGISTRY: dict[str, SiteAnalysis] = {analysis.name: analysis for analysis in
                                   (LinearAnalysis(), QcAnalysis(), LogisticAnalysis(), ExactLogisticAnalysis(),
                                    LogisticStartAnalysis(), FirthAnalysis(), CovariateFitAnalysis(), LdPairsAnalysis(), PcaAnalysis(),
                                    DosageSumsAnalysis())}


def get_analysis(name: str) -> SiteAnalysis:
    """The registered analysis ``name``; a ProtocolError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ProtocolError(f"task.analysis {name!r} is not one of {sorted(REGISTRY)}") from None


def check_inputs(analysis: SiteAnalysis, inputs: Mapping[str, np.ndarray], n_variants: int) -> None:
    """Refuse inputs that the analysis does not declare, or with the wrong dtype or shape."""
    unknown = sorted(set(inputs) - set(analysis.inputs))
    if unknown:
        raise ProtocolError(f"analysis {analysis.name!r} takes no input {unknown[0]!r}; it takes {sorted(analysis.inputs)}")
    for name, spec in analysis.inputs.items():
        if name not in inputs:
            raise ProtocolError(f"analysis {analysis.name!r} needs input {name!r}")
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
