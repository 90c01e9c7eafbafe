"""Study files: the tables of a study TOML, validated into a :class:`coordinator.study.StudyConfig`.

This is the one study builder: ``fedgwas run STUDY.toml`` reads the file, and ``fedgwas local`` turns
its flags into the same tables (:mod:`fedgwas.study_args`), so both derive the phenotype coding, the
default model, name lists and the data use the same way, and every error names the file (or the
command line) and the key.

A study TOML (see docs/study-example.toml)::

    [study]
    id = "hm3-qt"
    requester = "analyst@consortium.example"
    genome_build = "GRCh38"      # GWAS-SSF genome_assembly: GRCh38, GRCh37, NCBI36, NCBI35, NCBI34 (default NR)
    genotyping_technology = ["Genome-wide genotyping array"]   # GWAS-SSF metadata (default NR)
    ancestry_category = ["European"]                          # GWAS-SSF sample_ancestry_category (default NR)
    overlap_check = true         # count participants each pair of sites shares (never which; engine/overlap.py)

    [analysis]
    glm = "linear"               # or "logistic" (PLINK 2's firth-fallback) or "firth"
    phenotype = "QT"
    case_control = "1/2"         # logistic/firth/assoc: 1 = control, 2 = case; "0/1" is PLINK's --1
    covariates = ["SEX_MALE", "AGE", "PC1-PC4"]
    match_by = "position"        # or "id"
    block_size = 8192
    extract = "ids.txt"          # optional: only these variant IDs (PLINK's --extract)
    xchr_model = 2               # chrX as PLINK 2's --xchr-model: 2 (default) or 0 (skip chrX)
    input_missing_phenotype = -9 # phenotype/covariate value read as missing (PLINK 2's default -9)
    x_sex = true                 # PLINK 2's .fam sex covariate on chrX (false: its no-x-sex)
    quantitative = []            # several phenotypes with glm logistic/firth: those read as quantitative
                                 # (analysed by linear regression, as PLINK 2 decides per phenotype)

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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator.client import SiteEndpoint
from coordinator.dp_options import read_extract, request_from_toml
from coordinator.study import PcaSettings, QcSettings, StudyConfig
from engine.cohort.consent import DataUse
from engine.config_tables import REQUIRED, checked_table, read_toml, typed_value
from engine.errors import ConfigError, FedGwasError, InputError
from engine.io.tables import expand_names
from engine.models import CASE_CONTROL_MODELS
from engine.stats.ld.prune import PruneSettings
from engine.tasks import CohortRequest
from protos.pki import TlsFiles


def qc_settings(table: Any, name: str) -> QcSettings:
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


def prune_settings(table: Any, name: str) -> PruneSettings | None:
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


def pca_settings(table: Any, name: str) -> PcaSettings | None:
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


#: The keys each plain table of a study file may hold ([qc], [pca], [ld_prune], [dp] and [tls] are
#: checked by their own readers).
_SECTIONS: dict[str, frozenset[str]] = {
    "study": frozenset({"id", "requester", "purpose", "commercial", "genome_build", "genotyping_technology",
                        "ancestry_category", "overlap_check"}),
    "analysis": frozenset({"glm", "phenotype", "case_control", "covariates", "match_by", "block_size", "extract",
                           "xchr_model", "input_missing_phenotype", "x_sex", "assoc", "quantitative"}),
    "privacy": frozenset({"mode", "key_holder", "allow_dropout", "min_sites", "threshold"}),
    "network": frozenset({"timeout_seconds"}),
    "output": frozenset({"dir"}),
}


def load_study(path: Path | str, out_dir: Path | None = None) -> StudyConfig:
    """Read a study TOML; every error names the file and the key. Relative paths in it (``extract``,
    ``[tls]`` files, ``[output] dir``) are relative to the file's directory."""
    path = Path(path)
    return study_from_tables(read_toml(path, "study file"), str(path), path.parent, out_dir)


def study_from_tables(raw: Mapping[str, Any], name: str, base: Path, out_dir: Path | None = None) -> StudyConfig:
    """The study the tables ``raw`` describe (a study TOML's layout: ``[study]``, ``[analysis]``,
    ``[privacy]``, ``[[sites]]``...). ``name`` starts every error message (the file, or "the command
    line"); relative paths are relative to ``base``; ``out_dir`` overrides ``[output] dir``."""
    checked_table(raw, name, set(_SECTIONS) | {"sites", "qc", "pca", "ld_prune", "dp", "tls"}, kind="section")
    tables = {key: checked_table(raw.get(key, {}), f"{name} [{key}]", known) for key, known in _SECTIONS.items()}
    study, analysis, privacy = tables["study"], tables["analysis"], tables["privacy"]
    sites_raw = raw.get("sites", [])
    if not isinstance(sites_raw, list):
        raise ConfigError(f"{name}: [[sites]] must be an array of tables")
    wheres = [f"{name} [[sites]] #{i + 1}" for i in range(len(sites_raw))]
    sites = tuple(SiteEndpoint(typed_value(checked_table(s, where, {"name", "address"}), "name", str, where),
                               typed_value(s, "address", str, where)) for s, where in zip(sites_raw, wheres))
    covariates = typed_value(analysis, "covariates", (list, str), f"{name} [analysis]", [])
    output_dir = out_dir or (base / typed_value(tables["output"], "dir", str, f"{name} [output]", "results"))
    qc = qc_settings(raw.get("qc", {}), name)
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
        raise ConfigError(f"{name} [analysis]: case_control = \"0/1\" (PLINK's --1) applies to glm \"logistic\", "
                          "\"firth\" and assoc")
    else:
        coding = "quantitative"
    extract = typed_value(analysis, "extract", str, f"{name} [analysis]", "")
    tls, key_holder_name = _tls(raw.get("tls"), name, base)
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
            extract=read_extract(base / extract) if extract else None,
            ld_prune=prune_settings(raw.get("ld_prune"), name),
            pca=pca_settings(raw.get("pca"), name),
            tls=tls, key_holder_name=key_holder_name,
            genome_build=typed_value(study, "genome_build", str, f"{name} [study]", "NR"),
            xchr_model=typed_value(analysis, "xchr_model", int, f"{name} [analysis]", 2),
            x_sex=typed_value(analysis, "x_sex", bool, f"{name} [analysis]", True),
            overlap_check=typed_value(study, "overlap_check", bool, f"{name} [study]", False),
            genotyping_technology=_names(study, "genotyping_technology", f"{name} [study]"),
            ancestry_category=_names(study, "ancestry_category", f"{name} [study]"),
            quantitative=_names(analysis, "quantitative", f"{name} [analysis]", ()),
        )
    except ConfigError as error:
        raise ConfigError(str(error) if str(error).startswith(name) else f"{name}: {error}") from None


def _names(table: dict[str, Any], key: str, where: str, default: tuple[str, ...] = ("NR",)) -> tuple[str, ...]:
    """A string or list of strings (GWAS-SSF metadata lists: ``("NR",)`` when absent)."""
    value = typed_value(table, key, (list, str), where, list(default))
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
