"""Study definitions: what the analyst asks for, validated into frozen dataclasses.

:class:`StudyConfig` is built in one place, :func:`coordinator.study_file.study_from_tables`, from
the tables of a study TOML (``fedgwas run``) or the same tables made from ``fedgwas local``'s flags
(:mod:`fedgwas.study_args`); every check of a value lives in these dataclasses.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.client import SiteEndpoint
from engine.cohort.sex_chromosomes import XCHR_MODELS
from engine.privacy.dp_release import DpRequest, check_dp_study
from engine.errors import ConfigError
from engine.stats.ld.prune import PruneSettings
from protos.pki import TlsFiles
from engine.models import CASE_CONTROL_MODELS, GLM_MODELS
from engine.tasks import PRIVACY_MODES, CohortRequest

_STUDY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: QC reports a study may request (PLINK 2's --freq, --freq counts, --hardy, --missing, --geno-counts).
QC_OUTPUTS = ("freq", "freq-counts", "hardy", "missing", "geno-counts", "freq-machr2")
#: File-name stem of the QC reports (they do not depend on a phenotype), as PLINK 2 writes plink2.afreq.
QC_OUTPUT_NAME = "fedgwas"


@dataclass(frozen=True)
class QcSettings:
    """QC reports to write and PLINK 2 filters to apply before association (``None``: no filter).

    Reports and filters use every sample of every site, without phenotype or covariates.
    """

    outputs: tuple[str, ...] = ()
    maf: float | None = None
    geno: float | None = None
    hwe: float | None = None
    hwe_midp: bool = False
    hardy_midp: bool = False
    mach_r2: tuple[float, float] | None = None  # PLINK 2's --mach-r2-filter MIN MAX

    def __post_init__(self) -> None:
        if self.mach_r2 is not None and not 0.0 <= self.mach_r2[0] <= self.mach_r2[1]:
            raise ConfigError(f"qc: mach_r2_filter = {list(self.mach_r2)} must be [min, max] with 0 <= min <= max")
        unknown = [o for o in self.outputs if o not in QC_OUTPUTS]
        if unknown or len(set(self.outputs)) != len(self.outputs):
            raise ConfigError(f"qc: outputs {list(self.outputs)} must be distinct names from {list(QC_OUTPUTS)}")
        for name, value, upper in (("maf", self.maf, 0.5), ("geno", self.geno, 1.0), ("hwe", self.hwe, 1.0)):
            if value is not None and not 0.0 <= value <= upper:
                raise ConfigError(f"qc: {name} = {value!r} must be between 0 and {upper:g}")

    @property
    def filters(self) -> dict[str, float]:
        """The requested filters in PLINK 2's order (geno, hwe, maf) and their thresholds."""
        return {name: value for name, value in (("geno", self.geno), ("hwe", self.hwe), ("maf", self.maf),
                                                ("mach-r2-filter", self.mach_r2[0] if self.mach_r2 else None))
                if value is not None}

    @property
    def active(self) -> bool:
        return bool(self.outputs or self.filters)


@dataclass(frozen=True)
class PcaSettings:
    """``--pca``: how many components, PLINK's ``approx`` budget or iteration to convergence
    (``tolerance`` on the relative residual, at most ``max_rounds``), Krylov block size, start seed."""

    components: int = 10
    approx: bool = False
    tolerance: float = 1e-4
    max_rounds: int | None = None
    block: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.components <= 100:
            raise ConfigError(f"pca: components = {self.components} must be between 1 and 100")
        if not 0.0 < self.tolerance < 1.0:
            raise ConfigError(f"pca: tolerance = {self.tolerance} must be in (0, 1)")
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ConfigError(f"pca: max_rounds = {self.max_rounds} must be at least 1")
        if self.block is not None and not self.components <= self.block <= 1024:
            raise ConfigError(f"pca: block = {self.block} must be between components and 1024")

    @property
    def covariate_names(self) -> tuple[str, ...]:
        """The covariates this PCA provides: ``PC1..PCk``."""
        return tuple(f"PC{i + 1}" for i in range(self.components))


#: GWAS-SSF ``genome_assembly`` values a study may declare (NR: not reported).
GENOME_BUILDS = ("GRCh38", "GRCh37", "NCBI36", "NCBI35", "NCBI34", "NR")


@dataclass(frozen=True)
class StudyConfig:
    study_id: str
    glm: str
    cohort: CohortRequest
    privacy: str
    sites: tuple[SiteEndpoint, ...]
    out_dir: Path
    match_by: str = "position"
    block_size: int = 8192
    allow_dropout: bool = False
    min_sites: int = 2
    threshold: int = 0  # [privacy] threshold: secagg Shamir threshold (0: majority)
    timeout_seconds: float = 3600.0
    requester: str = ""
    show_progress: bool = True
    key_holder: str = ""  # address of the key holder (privacy mode "he" only)
    qc: QcSettings = field(default_factory=QcSettings)
    assoc: bool = False  # PLINK 1.9's allelic test on the case/control phenotype
    dp: DpRequest | None = None  # differential privacy for every release of the study (docs/privacy.md)
    extract: tuple[str, ...] | None = None  # PLINK's --extract: only these variant IDs
    ld_prune: PruneSettings | None = None  # --indep-pairwise before the PCA (selects its variants)
    pca: PcaSettings | None = None  # federated PCA; covariates PC1..PCk then come from it
    tls: TlsFiles | None = None  # mutual TLS material; None: plaintext channels (development only, labelled)
    key_holder_name: str = "keyholder"  # the name the key holder's certificate must carry
    genome_build: str = "NR"  # GWAS-SSF genome_assembly (GENOME_BUILDS); NR = not reported
    xchr_model: int = 2  # PLINK 2's --xchr-model: 2 (default) males 0/2 + sex covariate, 0 skip chrX
    x_sex: bool = True  # PLINK 2's automatic .fam sex covariate on chrX (False: its no-x-sex)
    overlap_check: bool = False  # count participants shared by each pair of sites (private set intersection)
    genotyping_technology: tuple[str, ...] = ("NR",)  # GWAS-SSF metadata, as the study declares it
    ancestry_category: tuple[str, ...] = ("NR",)  # GWAS-SSF sample_ancestry_category
    #: With several phenotypes and glm "logistic"/"firth": the phenotypes analysed by linear regression
    #: instead (quantitative ones, as PLINK 2 decides per phenotype); the others are case/control.
    quantitative: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = "study"
        if not _STUDY_ID.match(self.study_id):
            raise ConfigError(f"{where}: id {self.study_id!r} must be 1-128 letters, digits, '.', '_' or '-'")
        if self.glm and self.glm not in GLM_MODELS:
            raise ConfigError(f"{where}: analysis glm {self.glm!r} is not one of {list(GLM_MODELS)}")
        unknown = [name for name in self.quantitative if name not in self.cohort.phenotypes]
        if unknown or (self.quantitative and self.glm not in CASE_CONTROL_MODELS):
            raise ConfigError(f"{where}: quantitative phenotypes {list(self.quantitative)} must be phenotypes of the "
                              f"study analysed with glm logistic or firth")
        if self.glm and (self.glm in CASE_CONTROL_MODELS) == (self.cohort.phenotype_coding == "quantitative"):
            raise ConfigError(f"{where}: glm {self.glm!r} cannot read phenotype {self.cohort.phenotype!r} as "
                              f"{self.cohort.phenotype_coding}")
        if not (self.glm or self.assoc or self.qc.outputs or self.pca or self.ld_prune):
            raise ConfigError(f"{where}: nothing to do: request an association test (glm, assoc), QC outputs, "
                              f"LD pruning and/or a PCA")
        if self.dp is not None and (self.pca or self.ld_prune):
            raise ConfigError(f"{where}: differential privacy is not available for LD pruning or PCA yet")
        if (self.glm or self.assoc) and not self.cohort.phenotype:
            raise ConfigError(f"{where}: the association test needs a phenotype")
        if self.assoc and len(self.cohort.phenotypes) > 1:
            raise ConfigError(f"{where}: the allelic test (assoc) takes one phenotype, got {list(self.cohort.phenotypes)}")
        if self.privacy not in PRIVACY_MODES:
            raise ConfigError(f"{where}: privacy mode {self.privacy!r} is not one of {list(PRIVACY_MODES)}")
        if (self.privacy == "he") != bool(self.key_holder):
            raise ConfigError(f"{where}: privacy mode 'he' needs the key holder's address ([privacy] key_holder), "
                              f"and only mode 'he' takes one (mode {self.privacy!r}, key_holder {self.key_holder!r})")
        if self.match_by not in ("position", "id"):
            raise ConfigError(f"{where}: match_by {self.match_by!r} must be 'position' or 'id'")
        if len(self.sites) < 2:
            raise ConfigError(f"{where}: a federated study needs at least two sites, got {len(self.sites)}")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: site names must be unique, got {names}")
        if not 2 <= self.min_sites <= len(self.sites):
            raise ConfigError(f"{where}: min_sites {self.min_sites} must be between 2 and the number of sites")
        if self.threshold and not len(self.sites) // 2 + 1 <= self.threshold <= len(self.sites):
            raise ConfigError(f"{where}: [privacy] threshold {self.threshold} must be 0 (a majority) or between a "
                              f"majority ({len(self.sites) // 2 + 1}) and the number of sites ({len(self.sites)})")
        if not 1 <= self.block_size <= 65_536:
            raise ConfigError(f"{where}: block_size {self.block_size} must be between 1 and 65536")
        if self.timeout_seconds <= 0:
            raise ConfigError(f"{where}: timeout_seconds must be positive")
        if self.dp is not None:
            for name in self.cohort.phenotypes or ("",):  # each phenotype is its own DP release
                check_dp_study(self.dp, self.glm, dataclasses.replace(self.cohort, phenotype=name))
        if self.xchr_model not in XCHR_MODELS:
            raise ConfigError(f"{where}: xchr_model {self.xchr_model!r} is not implemented (available: "
                              f"{list(XCHR_MODELS)}; PLINK 2's default is 2, males coded 0/2)")
        if self.genome_build not in GENOME_BUILDS:
            raise ConfigError(f"{where}: genome_build {self.genome_build!r} is not one of {list(GENOME_BUILDS)}")
        for key in ("genotyping_technology", "ancestry_category"):
            values = getattr(self, key)
            if not values or any(not v.strip() or any(c in v for c in "\t\n\r") for v in values):
                raise ConfigError(f"{where}: {key} must be a non-empty list of non-empty one-line names, got {list(values)}")

    @property
    def output_name(self) -> str:
        """Stem of the association files (the phenotype), or of the QC files in a QC-only study or of
        the combined files of several phenotypes (each phenotype's own files are named after it)."""
        return self.cohort.phenotype if len(self.cohort.phenotypes) == 1 else QC_OUTPUT_NAME

    @property
    def test_name(self) -> str:
        """What the run summary is named after: the model, else ``assoc``, else ``qc``."""
        if self.glm or self.assoc or self.qc.active or not (self.pca or self.ld_prune):
            return self.glm or ("assoc" if self.assoc else "qc")
        return "pca" if self.pca else "prune"

    @property
    def pca_covariates(self) -> tuple[str, ...]:
        """Covariates taken from the study's PCA (``PC1..PCk``), not from the sites' covariate files."""
        names = set(self.pca.covariate_names) if self.pca is not None else set()
        return tuple(name for name in self.cohort.covariates if name in names)

    @property
    def describe_cohort(self) -> CohortRequest:
        """The cohort sites describe before the study starts: without the PCA's covariates, which
        exist only once the PCA has run (every sample gets scores, so the sample count is the same)."""
        kept = tuple(name for name in self.cohort.covariates if name not in self.pca_covariates)
        coding = "quantitative" if self.quantitative else self.cohort.phenotype_coding  # mixed: counts only
        return dataclasses.replace(self.cohort, covariates=kept, phenotype_coding=coding)

    def model_cohorts(self) -> list[tuple[str, CohortRequest]]:
        """(model, cohort) of each association: the quantitative phenotypes together under "linear" (one
        genotype pass for all), then each case/control phenotype on its own (its fit iterates)."""
        names = self.cohort.phenotypes
        linear = names if self.glm == "linear" else tuple(n for n in names if n in self.quantitative)
        out = []
        if linear:
            out.append(("linear", dataclasses.replace(self.cohort, phenotype=",".join(linear),
                                                      phenotype_coding="quantitative")))
        out += [(self.glm, dataclasses.replace(self.cohort, phenotype=name)) for name in names if name not in linear]
        return out
