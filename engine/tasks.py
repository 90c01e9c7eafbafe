"""Transport-free descriptions of what a coordinator asks of a site.

The coordinator builds these, the serde modules on each side turn them into protobuf messages and
back, and the site's handlers execute them. Validation that does not need site data happens here,
so a hostile or malformed request is refused before any computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from engine.audit.heads import SignedHead
from engine.stats.registry import get_statistic
from engine.stats.statistic import check_inputs
from engine.cohort.consent import DataUse
from engine.errors import ProtocolError

#: How a phenotype column is read (PLINK 2's conventions; see engine.cohort.cohort.code_phenotype).
PHENOTYPE_CODINGS = ("quantitative", "case-control", "case-control-01")
MAX_PARAMETERS = 32
PRIVACY_MODES = ("secagg", "plaintext", "he")
#: Privacy-level material a task of each mode carries besides the analysis inputs (checked by the site:
#: ``he_context`` is the key holder's serialised public CKKS context, verified against the site's pin).
PRIVACY_MATERIAL: Mapping[str, tuple[str, ...]] = {"he": ("he_context",)}
MAX_PRIVACY_MATERIAL_BYTES = 16 << 20
MAX_BLOCK_SIZE = 65_536
#: Task parameter (value "1"): later rounds of this study read the same samples again (an iterative fit),
#: so the site may keep the genotypes in memory between rounds (site_agent.data.GenotypeCache).
KEEP_GENOTYPES_PARAMETER = "keep_genotypes"
#: Task parameter: the site that left out the participants it shares with the others (the study's
#: ``drop_shared_from``); that site refuses a task of the study unless it holds that exclusion (e.g.
#: after a restart, which forgets it), so it never silently analyses them again.
DROP_SHARED_PARAMETER = "drop_shared_from"


#: Separates the phenotypes of a multi-phenotype cohort in ``CohortRequest.phenotype`` (as in PLINK 2's
#: ``--pheno-name A,B,C``, so no phenotype name contains it).
PHENOTYPE_SEPARATOR = ","
#: Most phenotypes one task may analyse together.
MAX_PHENOTYPES = 1000


@dataclass(frozen=True)
class CohortRequest:
    """Which phenotype and covariates define the analysed samples.

    An empty ``phenotype`` selects every sample with the covariates (for analyses, such as QC, that
    use no phenotype). Several phenotypes, ``"A,B,C"``, are analysed in one pass over the genotypes
    (analyses with ``multi_phenotype``), each over its own samples. ``data_use`` is the study's declared
    use of the data: a site with a consent table analyses only the participants whose consent covers it
    (engine/cohort/consent.py).
    """

    phenotype: str
    covariates: tuple[str, ...] = ()
    phenotype_coding: str = "quantitative"
    data_use: DataUse | None = None
    #: Covariates named ``PC1``.. come from each site's own scores of this PCA run ("" : none).
    pca_run: str = ""
    missing_value: float = -9.0  # PLINK 2's --input-missing-phenotype (phenotype and covariates)
    #: PLINK 2's ``--xchr-model`` for association on non-PAR chrX: 2 codes males' calls 0/2, 1 codes them
    #: 0/1 (engine.cohort.sex_chromosomes.haploid_males_on_x); 0 (skip chrX) is the coordinator's.
    xchr_model: int = 2

    def __post_init__(self) -> None:
        if self.xchr_model not in (1, 2):
            raise ProtocolError(f"cohort.xchr_model {self.xchr_model!r} must be 1 (males 0/1) or 2 (males 0/2)")
        if len(self.pca_run) > 64 or not all(c in "0123456789abcdef" for c in self.pca_run):
            raise ProtocolError(f"cohort.pca_run {self.pca_run[:80]!r} is not a PCA run identifier (hex, at most 64)")
        if self.phenotype_coding not in PHENOTYPE_CODINGS:
            raise ProtocolError(f"cohort.phenotype_coding {self.phenotype_coding!r} is not one of {list(PHENOTYPE_CODINGS)}")
        if len(set(self.covariates)) != len(self.covariates):
            raise ProtocolError(f"cohort.covariates repeats a name: {list(self.covariates)}")
        if not math.isfinite(self.missing_value):
            raise ProtocolError(f"cohort.missing_value {self.missing_value!r} must be finite")
        names = self.phenotypes
        if self.phenotype and (any(not name or name != name.strip() for name in names) or len(set(names)) != len(names)
                               or len(names) > MAX_PHENOTYPES):
            raise ProtocolError(f"cohort.phenotype {self.phenotype!r} must be up to {MAX_PHENOTYPES} distinct "
                                f"non-empty names separated by {PHENOTYPE_SEPARATOR!r}")
        both = [name for name in names if name in self.covariates]
        if both:
            raise ProtocolError(f"cohort.phenotype {both[0]!r} is also listed as a covariate")

    @property
    def phenotypes(self) -> tuple[str, ...]:
        """The phenotype names (one, several, or none for a cohort without a phenotype)."""
        return tuple(self.phenotype.split(PHENOTYPE_SEPARATOR)) if self.phenotype else ()


@dataclass(frozen=True)
class TaskSpec:
    """One round of an association analysis at one site.

    ``variant_index`` ``(M,)`` int64 gives, for each harmonised variant, its row in the site's own
    manifest; ``flip`` ``(M,)`` bool marks variants where the site counts the other allele.
    ``participants`` names every site of the round (names in the consortium roster; each site's keys
    for the round are exchanged in the round itself, signed: :mod:`engine.privacy.secure_round`), and
    ``threshold`` is the round's Shamir threshold (0: a majority).
    ``inputs`` holds the analysis's named input arrays (see :mod:`engine.stats.registry`);
    ``privacy_material`` the privacy mode's own inputs (:data:`PRIVACY_MATERIAL`), kept apart from
    them so that every analysis runs under every mode unchanged.
    """

    study_id: str
    round: int
    analysis: str
    cohort: CohortRequest
    privacy: str
    participants: tuple[str, ...]
    block_size: int
    variant_index: np.ndarray
    flip: np.ndarray
    requester: str = ""
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    privacy_material: Mapping[str, bytes] = field(default_factory=dict)
    threshold: int = 0

    def __post_init__(self) -> None:
        if not self.study_id:
            raise ProtocolError("task.study_id is empty")
        analysis = get_statistic(self.analysis)
        if analysis.needs_phenotype and not self.cohort.phenotype:
            raise ProtocolError(f"analysis {self.analysis!r} needs cohort.phenotype")
        if len(self.cohort.phenotypes) > 1 and not getattr(analysis, "multi_phenotype", False):
            raise ProtocolError(f"analysis {self.analysis!r} takes one phenotype, the task names "
                                f"{len(self.cohort.phenotypes)}: {self.cohort.phenotype!r}")
        if self.privacy not in PRIVACY_MODES:
            raise ProtocolError(f"task.privacy {self.privacy!r} is not one of {list(PRIVACY_MODES)}")
        needed = PRIVACY_MATERIAL.get(self.privacy, ())
        if sorted(self.privacy_material) != sorted(needed):
            raise ProtocolError(f"task.privacy {self.privacy!r} takes privacy material {list(needed)}, "
                                f"got {sorted(self.privacy_material)}")
        if any(len(v) > MAX_PRIVACY_MATERIAL_BYTES for v in self.privacy_material.values()):
            raise ProtocolError(f"task privacy material is larger than {MAX_PRIVACY_MATERIAL_BYTES} bytes")
        if not 1 <= self.block_size <= MAX_BLOCK_SIZE:
            raise ProtocolError(f"task.block_size {self.block_size} must be between 1 and {MAX_BLOCK_SIZE}")
        if self.variant_index.ndim != 1 or self.flip.shape != self.variant_index.shape:
            raise ProtocolError(
                f"task arrays variant_index {self.variant_index.shape} and flip {self.flip.shape} must be 1-D and equal"
            )
        if len(self.variant_index) == 0:
            raise ProtocolError("task selects no variants")
        names = list(self.participants)
        if any(not isinstance(name, str) or not name for name in names):
            raise ProtocolError(f"task.participants must be site names, got {names}")
        if len(set(names)) != len(names):
            raise ProtocolError(f"task.participants repeats a site: {names}")
        if not 0 <= self.threshold <= len(names):
            raise ProtocolError(f"task.threshold {self.threshold} must be between 0 and the {len(names)} participants")
        check_inputs(analysis, self.inputs, len(self.variant_index))
        if len(self.parameters) > MAX_PARAMETERS or any(len(k) > 64 or len(v) > 1024 for k, v in self.parameters.items()):
            raise ProtocolError(f"task.parameters: at most {MAX_PARAMETERS} entries, keys <= 64 and values <= 1024 characters")

    @property
    def n_variants(self) -> int:
        return len(self.variant_index)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_variants // self.block_size)

    def block_bounds(self, block: int) -> tuple[int, int]:
        start = block * self.block_size
        return start, min(start + self.block_size, self.n_variants)


@dataclass(frozen=True)
class SiteDescription:
    """What a site says about itself for a study (no individual-level data)."""

    site_name: str
    software_version: str
    n_samples_total: int
    n_samples_analysed: int
    n_variants: int
    identity_public_key: bytes
    privacy_modes: tuple[str, ...]
    genotype_format: str = "plink1"
    budget: Mapping[str, float] = field(default_factory=dict)  # DP budget state, see SiteInfo.budget
    multiallelic_skipped: int = 0  # multi-allelic records left out of the site's manifest
    genotyping_technology: str = ""  # declared in the site config (GWAS-SSF metadata); "" when not
    overlap_public_key: bytes = b""  # X25519 key of the private overlap check (engine/cohort/overlap.py)
    overlap_key_signature: bytes = b""  # its signature by the site's roster identity key


@dataclass(frozen=True)
class ResultBlock:
    """One protected block of per-variant statistics, ``n_variants x width`` values."""

    block: int
    first_variant: int
    n_variants: int
    width: int
    encoding: str
    payload: bytes


@dataclass(frozen=True)
class TaskProgress:
    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class TaskDone:
    n_samples: int
    n_blocks: int
    n_design: int
    compute_seconds: float
    bytes_sent: int
    ledger_head: SignedHead | None = None  # the site's signed ledger head after this task (its receipt)
    contributors: tuple[str, ...] = ()  # secagg: the survivors this site revealed shares for
    rho_spent: float = 0.0  # zCDP rho the site charged (0 for an exact release)
    noise_scale: float = 0.0  # scale of the site's noise share (0 for an exact release)
