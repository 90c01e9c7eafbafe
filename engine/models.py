"""What an analyst can ask for (*models* and study steps), and the per-round *statistics* each uses.

A *model* is what the analyst requests (``--glm linear|logistic|firth``); a study may also run QC,
LD pruning and PCA steps. A *statistic* is what a site computes in one round
(:data:`engine.stats.registry.REGISTRY`). A coordinator driver fits a model from one or more rounds
of statistics. Sites approve studies by model or step (``[[access.study]] models = ["logistic"]``),
never by internal round names, and this table tells a site which rounds such an approval admits.
The CLI's choices and the study file's validation read :data:`GLM_MODELS`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from engine.errors import ConfigError

#: Association models a study may request with ``--glm`` / ``[analysis] glm``.
GLM_MODELS = ("linear", "logistic", "firth")
#: Models of a case/control phenotype (the cohort must use a case-control phenotype coding).
CASE_CONTROL_MODELS = ("logistic", "firth")

#: Model or study step -> the statistics (rounds) it runs at the sites.
STATISTICS_OF: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "linear": ("moments", "linear", "linear_complete", "linear_totals"),  # moments: the study-level
    # standardisation (engine/cohort/standardise.py); linear_complete/linear_totals: several phenotypes
    "logistic": ("moments", "covariate_fit", "logistic_start", "logistic", "logistic_exact", "firth"),
    "firth": ("moments", "covariate_fit", "logistic_start", "logistic", "logistic_exact", "firth"),
    "qc": ("qc", "dosage_sums"),  # --freq/--hardy/--missing/--geno-counts, the filters and --assoc
                                  # (dosage_sums: frequencies, --maf and MaCH R2 of dosage data)
    "ld_prune": ("qc", "ld_pairs"),
    "pca": ("qc", "pca"),
    "overlap": ("overlap",),  # the private count of participants shared with another site (no genotypes)
})
#: Names an approval admits that are not per-variant statistics of the registry.
SITE_CHECKS = ("overlap",)
#: Everything a site approval may name.
APPROVABLE = tuple(STATISTICS_OF)


def statistics_for(models: tuple[str, ...]) -> frozenset[str]:
    """The statistics (round names) that an approval of ``models`` admits."""
    return frozenset(s for model in models for s in STATISTICS_OF[model])


def check_model_names(names: tuple[str, ...], where: str) -> tuple[str, ...]:
    """``names`` if each is a model or study step; a :class:`ConfigError` naming the bad one otherwise."""
    for name in names:
        if name not in STATISTICS_OF:
            raise ConfigError(f"{where}: {name!r} is not one of {list(APPROVABLE)}")
    return names
