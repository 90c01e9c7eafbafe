"""Study definitions: what the analyst asks for, validated into a frozen dataclass.

A study TOML (see docs/study-example.toml)::

    [study]
    id = "hm3-qt"
    requester = "analyst@consortium.example"
    genome_build = "GRCh38"      # GWAS-SSF genome_assembly: GRCh38, GRCh37, NCBI36, NCBI35, NCBI34 (default NR)
    genotyping_technology = ["Genome-wide genotyping array"]   # GWAS-SSF metadata (default NR)
    ancestry_category = ["European"]                          # GWAS-SSF sample_ancestry_category (default NR)
    overlap_check = true         # count participants each pair of sites shares (never which; engine/overlap.py)
    drop_shared_from = "site-b"  # optional: that site leaves out the participants it shares with the others
                                 # (only it learns which of its own; implies overlap_check)

    [analysis]
    glm = "linear"               # or "logistic" (PLINK 2's firth-fallback) or "firth"
    phenotype = "QT"
    case_control = "1/2"         # logistic/firth/assoc: 1 = control, 2 = case; "0/1" is PLINK's --1
    covariates = ["SEX_MALE", "AGE", "PC1-PC4"]
    match_by = "position"        # or "id"
    block_size = 8192
    extract = "ids.txt"          # optional: only these variant IDs (PLINK's --extract)
    xchr_model = 2               # chrX as PLINK 2's --xchr-model: 2 (default, males 0/2), 1 (males 0/1), 0 (skip)
    input_missing_phenotype = -9 # phenotype/covariate value read as missing (PLINK 2's default -9)
    x_sex = true                 # PLINK 2's .fam sex covariate on chrX (false: its no-x-sex)

    assoc = false                # PLINK 1.9's allelic test (case/control phenotype)

    [ld_prune]                   # optional: PLINK 2's --indep-pairwise, pooled; selects the PCA's variants
    window = 50                  # variants (or kb with window_kb = true)
    step = 5
    r2 = 0.2

    [pca]                        # optional: federated PCA (PLINK 2's --pca); covariates PC1..PCk then
    components = 10              # come from it, each site using its own rows
    approx = false               # true: PLINK 2's --pca approx budget (2k vectors, k + 1 rounds)

    [qc]                         # optional: PLINK 2 QC reports and filters, over all samples
    outputs = ["freq", "hardy", "missing", "geno-counts"]   # also "freq-counts"
    maf = 0.01                   # filters applied before association (PLINK 2's --maf/--geno/--hwe)
    geno = 0.02
    hwe = 1e-6
    hwe_midp = false
    hardy_midp = false
    mach_r2_filter = [0.3, 2.0]  # PLINK 2's --mach-r2-filter: MaCH R2 of dosage data (docs/dosages.md)

    [privacy]
    mode = "secagg"              # or "he" (needs key_holder) or "plaintext" (development only)
    key_holder = "10.0.0.9:50060"  # only with mode = "he": `fedgwas keyholder serve` address
    allow_dropout = false        # finish a round without a site that fails mid-round (secagg: same round)?
    min_sites = 2
    threshold = 0                # Shamir threshold of secagg rounds (0: a majority of the round's sites)

    [dp]                         # optional: differentially private releases (coordinator/dp_options.py)
    epsilon = 1.0
    delta = 1e-6
    bounds = { QT = [-3, 3], SEX_MALE = [0, 1], AGE = [20, 80] }

    [network]
    timeout_seconds = 3600

    [tls]                        # mutual TLS with every site and the key holder (or: insecure = true)
    ca = "tls/ca.pem"            # the consortium CA
    cert = "tls/analyst.pem"     # the coordinator's certificate: its CN is the requester the sites see
    key = "tls/analyst.key"
    key_holder_name = "keyholder"  # the name in the key holder's certificate
    # without [tls]: plaintext channels, which TLS sites refuse; results are labelled insecure

    The study's data use (docs/consent.md) goes in [study]: ``purpose = "HMB"`` (GA4GH DUO: GRU, HMB,
    POA or DS:<term>) and ``commercial = false``; sites with a consent table include only the
    participants whose consent covers it.

    [output]
    dir = "results"

    [[sites]]
    name = "site-a"
    address = "10.0.0.5:50051"
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.client import SiteEndpoint
from coordinator.dp_options import read_extract, request_from_toml
from engine.cohort.sex_chromosomes import XCHR_MODELS
from engine.privacy.dp_release import DpRequest, check_dp_study
from engine.cohort.consent import DataUse
from engine.config_tables import REQUIRED, checked_table, typed_value
from engine.errors import ConfigError, FedGwasError, InputError
from engine.stats.ld.prune import PruneSettings
from protos.pki import TlsFiles
from engine.io.tables import expand_names
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
    xchr_model: int = 2  # PLINK 2's --xchr-model: 2 (default) males 0/2, 1 males 0/1 (both + sex covariate), 0 skip chrX
    x_sex: bool = True  # PLINK 2's automatic .fam sex covariate on chrX (False: its no-x-sex)
    overlap_check: bool = False  # count participants shared by each pair of sites (private set intersection)
    #: The site that leaves out the participants it shares with the other sites (one-sided exchange,
    #: engine/cohort/overlap.py; "" : none, shared participants are analysed twice and reported).
    drop_shared_from: str = ""
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
        if self.drop_shared_from and self.drop_shared_from not in names:
            raise ConfigError(f"{where}: drop_shared_from {self.drop_shared_from!r} is not one of the study's sites {names}")
        if self.xchr_model not in XCHR_MODELS:
            raise ConfigError(f"{where}: xchr_model {self.xchr_model!r} is not one of PLINK 2's {list(XCHR_MODELS)} "
                              f"(0 skip chrX, 1 males coded 0/1, 2 (default) males coded 0/2)")
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


def _qc_settings(table: Any, name: str) -> QcSettings:
    """The ``[qc]`` table: ``outputs`` (list of QC_OUTPUTS), ``maf``/``geno``/``hwe``, midp flags."""
    where = _table_keys(table, name, "qc", {"outputs", "maf", "geno", "hwe", "hwe_midp", "hardy_midp",
                                            "mach_r2_filter"})
    outputs = typed_value(table, "outputs", list, where, [])
    if any(not isinstance(o, str) for o in outputs):
        raise ConfigError(f"{where}: outputs = {outputs!r} must be a list of strings")

    def threshold(key: str) -> float | None:
        value = typed_value(table, key, (int, float), where, None)
        return None if value is None else float(value)

    mach = typed_value(table, "mach_r2_filter", list, where, None)
    if mach is not None and (len(mach) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                          for v in mach)):
        raise ConfigError(f"{where}: mach_r2_filter = {mach!r} must be [min] or [min, max]")
    try:
        return QcSettings(outputs=tuple(outputs), maf=threshold("maf"), geno=threshold("geno"), hwe=threshold("hwe"),
                          mach_r2=None if mach is None else (float(mach[0]), float(mach[1]) if len(mach) == 2 else 2.0),
                          hwe_midp=typed_value(table, "hwe_midp", bool, where, False),
                          hardy_midp=typed_value(table, "hardy_midp", bool, where, False))
    except ConfigError as error:
        raise ConfigError(str(error) if str(error).startswith(name) else f"{name}: {error}") from None


def _table_keys(table: Any, name: str, section: str, known: set[str]) -> str:
    where = f"{name} [{section}]"
    checked_table(table, where, known)
    return where


def _prune_settings(table: Any, name: str) -> PruneSettings | None:
    """``[ld_prune]``: ``window``, ``step`` (default 1), ``r2``, ``window_kb`` (PLINK's --indep-pairwise)."""
    if table is None:
        return None
    where = _table_keys(table, name, "ld_prune", {"window", "step", "r2", "window_kb"})
    window = typed_value(table, "window", (int, float), where)
    r2 = typed_value(table, "r2", (int, float), where)
    try:
        return PruneSettings(float(window), typed_value(table, "step", int, where, 1), float(r2),
                             typed_value(table, "window_kb", bool, where, False))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _pca_settings(table: Any, name: str) -> PcaSettings | None:
    """``[pca]``: ``components`` (default 10), ``approx``, ``tolerance``, ``max_rounds``, ``block``, ``seed``."""
    if table is None:
        return None
    where = _table_keys(table, name, "pca", {"components", "approx", "tolerance", "max_rounds", "block", "seed"})
    try:
        return PcaSettings(components=typed_value(table, "components", int, where, 10),
                           approx=typed_value(table, "approx", bool, where, False),
                           tolerance=float(typed_value(table, "tolerance", (int, float), where, 1e-4)),
                           max_rounds=typed_value(table, "max_rounds", int, where, None),
                           block=typed_value(table, "block", int, where, None), seed=typed_value(table, "seed", int, where, 0))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_study(path: Path | str, out_dir: Path | None = None) -> StudyConfig:
    """Read a study TOML; every error names the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"study file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study file {str(path)!r} is not valid TOML: {exc}") from None
    name = str(path)
    tables = {k: raw.get(k, {}) for k in ("study", "analysis", "privacy", "network", "output")}
    for key, value in tables.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: [{key}] must be a table")
    study, analysis, privacy = tables["study"], tables["analysis"], tables["privacy"]
    sites_raw = raw.get("sites", [])
    if not isinstance(sites_raw, list):
        raise ConfigError(f"{name}: [[sites]] must be an array of tables")
    sites = tuple(
        SiteEndpoint(typed_value(s, "name", str, f"{name} [[sites]] #{i + 1}"), typed_value(s, "address", str, f"{name} [[sites]] #{i + 1}"))
        for i, s in enumerate(sites_raw)
    )
    covariates = typed_value(analysis, "covariates", (list, str), f"{name} [analysis]", [])
    output_dir = out_dir or (path.parent / typed_value(tables["output"], "dir", str, f"{name} [output]", "results"))
    qc = _qc_settings(raw.get("qc", {}), name)
    assoc = typed_value(analysis, "assoc", bool, f"{name} [analysis]", False)
    # Without an explicit glm: linear regression when a phenotype is named (or the file has no [qc]
    # table, as study files had before QC), nothing when only the allelic test or QC is asked for.
    only_reports = any(table in raw for table in ("qc", "pca", "ld_prune")) and "phenotype" not in analysis
    default_glm = "" if assoc or only_reports else "linear"
    glm = typed_value(analysis, "glm", str, f"{name} [analysis]", default_glm)
    glm = "" if glm == "none" else glm
    phenotype = typed_value(analysis, "phenotype", (str, list), f"{name} [analysis]",
                            REQUIRED if (glm or assoc) else "")
    if isinstance(phenotype, list):  # several phenotypes, e.g. ["LDL", "HDL", "TG"] or ["P1-P5"]
        if any(not isinstance(item, str) for item in phenotype):
            raise ConfigError(f"{name} [analysis]: phenotype = {phenotype!r} must be a name or a list of names")
        try:
            phenotype = ",".join(expand_names(phenotype))
        except InputError as error:
            raise ConfigError(f"{name} [analysis]: phenotype: {error}") from None
    case_control = typed_value(analysis, "case_control", str, f"{name} [analysis]", "1/2")
    if case_control not in ("1/2", "0/1"):
        raise ConfigError(f"{name} [analysis]: case_control = {case_control!r} must be \"1/2\" or \"0/1\"")
    if glm in CASE_CONTROL_MODELS or (assoc and not glm and case_control == "0/1"):
        coding = "case-control-01" if case_control == "0/1" else "case-control"
    elif case_control == "0/1":
        raise ConfigError(f"{name} [analysis]: case_control applies to glm \"logistic\", \"firth\" and assoc")
    else:
        coding = "quantitative"
    extract = typed_value(analysis, "extract", str, f"{name} [analysis]", "")
    tls, key_holder_name = _tls(raw.get("tls"), name, path.parent)
    purpose = typed_value(study, "purpose", str, f"{name} [study]", "")
    commercial = typed_value(study, "commercial", bool, f"{name} [study]", False)
    try:
        data_use = DataUse(purpose, commercial) if purpose else None
    except FedGwasError as error:
        raise ConfigError(f"{name} [study]: {error}") from None
    try:
        return StudyConfig(
            study_id=typed_value(study, "id", str, f"{name} [study]"),
            requester=typed_value(study, "requester", str, f"{name} [study]", ""),
            glm=glm,
            assoc=assoc,
            qc=qc,
            cohort=CohortRequest(phenotype, tuple(expand_names(covariates)), coding, data_use,
                                 missing_value=float(typed_value(analysis, "input_missing_phenotype", (int, float),
                                                                 f"{name} [analysis]", -9.0))),
            match_by=typed_value(analysis, "match_by", str, f"{name} [analysis]", "position"),
            block_size=typed_value(analysis, "block_size", int, f"{name} [analysis]", 8192),
            privacy=typed_value(privacy, "mode", str, f"{name} [privacy]", "secagg"),
            allow_dropout=typed_value(privacy, "allow_dropout", bool, f"{name} [privacy]", False),
            key_holder=typed_value(privacy, "key_holder", str, f"{name} [privacy]", ""),
            min_sites=typed_value(privacy, "min_sites", int, f"{name} [privacy]", 2),
            threshold=typed_value(privacy, "threshold", int, f"{name} [privacy]", 0),
            timeout_seconds=float(typed_value(tables["network"], "timeout_seconds", (int, float), f"{name} [network]", 3600)),
            sites=sites,
            out_dir=Path(output_dir),
            dp=request_from_toml(raw.get("dp"), name),
            extract=read_extract(path.parent / extract) if extract else None,
            ld_prune=_prune_settings(raw.get("ld_prune"), name),
            pca=_pca_settings(raw.get("pca"), name),
            tls=tls, key_holder_name=key_holder_name,
            genome_build=typed_value(study, "genome_build", str, f"{name} [study]", "NR"),
            xchr_model=typed_value(analysis, "xchr_model", int, f"{name} [analysis]", 2),
            x_sex=typed_value(analysis, "x_sex", bool, f"{name} [analysis]", True),
            overlap_check=typed_value(study, "overlap_check", bool, f"{name} [study]", False),
            drop_shared_from=typed_value(study, "drop_shared_from", str, f"{name} [study]", ""),
            genotyping_technology=_names(study, "genotyping_technology", f"{name} [study]"),
            ancestry_category=_names(study, "ancestry_category", f"{name} [study]"),
        )
    except ConfigError as error:
        raise ConfigError(str(error) if str(error).startswith(name) else f"{name}: {error}") from None


def _names(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A string or list of strings (GWAS-SSF metadata lists); ``("NR",)`` when absent."""
    value = typed_value(table, key, (list, str), where, ["NR"])
    values = [value] if isinstance(value, str) else value
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: {key} must be a string or a list of strings")
    return tuple(values)


def _tls(table: Any, name: str, base: Path) -> tuple[TlsFiles | None, str]:
    """``[tls]``: ``ca``, ``cert``, ``key`` (relative to the study file) and ``key_holder_name``, or
    ``insecure = true``. Without a ``[tls]`` table the channels are plaintext: sites configured for
    mutual TLS (the default) then refuse the connection, and every result is labelled insecure."""
    if table is None:
        return None, "keyholder"
    where = _table_keys(table, name, "tls", {"ca", "cert", "key", "insecure", "key_holder_name"})
    holder = typed_value(table, "key_holder_name", str, where, "keyholder")
    if typed_value(table, "insecure", bool, where, False):
        return None, holder
    ca, cert, key = (typed_value(table, k, str, where) for k in ("ca", "cert", "key"))
    return TlsFiles(base / ca, base / cert, base / key), holder
