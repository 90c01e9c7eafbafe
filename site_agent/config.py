"""Site agent configuration: a TOML file validated into frozen dataclasses at load time.

Example (``fedgwas-site init`` writes one)::

    [site]
    name = "hospital-a"
    listen = "0.0.0.0:50051"

    [data]
    bfile = "/data/gwas/cohort"        # PLINK 1 prefix (.bed/.bim/.fam); or pfile = PLINK 2 prefix
                                       # (.pgen/.pvar/.psam, dosages used where stored); or vcf = a .vcf,
                                       # .vcf.gz or .bcf file (vcf_dosage = "DS" or "GP": its dosages);
                                       # or bgen = a BGEN v1.2/1.3 file (sample = its .sample file,
                                       # else the IDs it embeds)
    hard_call_threshold = 0.1          # optional, bgen or vcf with vcf_dosage: PLINK 2's hard-call rules
    dosage_erase_threshold = 0.0       # (--hard-call-threshold, --dosage-erase-threshold; 0 <= value < 0.5)
    pheno = "/data/gwas/pheno.txt"
    covar = "/data/gwas/covar.txt"     # optional

    [keys]
    identity_key = "keys/identity.key" # Ed25519: signs this site's ephemeral keys in every round
    roster = "roster.toml"             # the consortium roster this site pins (engine/privacy/roster.py)
    ledger_signing_key = "keys/ledger-signing.key"   # Ed25519 key signing the ledger head (0600)
    he_context_sha256 = "..."          # only with "he": the key holder's public-context fingerprint

    [policy]
    privacy_modes = ["secagg"]         # add "plaintext" only on development machines; "he" needs the pin
    min_participants = 2
    max_colluding_sites = 0            # sites that may collude with the coordinator: a secure round's Shamir
                                       # threshold must exceed (participants + this) / 2, or it is refused

    [compute]
    threads = 2
    genotype_cache_mib = 256           # genotypes kept in memory across the rounds of PCA and logistic fits
                                       # (beyond it they spill to a site-local file, spill_dir)
    workers = "auto"                   # where blocks are computed: Dask worker processes (a number, or one
                                       # per core), 0 = in this process; or scheduler = "tcp://host:port"
                                       # (site_agent/compute/settings.py)

    [budget]                           # optional: differential-privacy budget of this dataset
    epsilon = 4.0                      # total over every DP release (zCDP accounting, see docs/privacy.md)
    delta = 1e-6
    study_epsilon = 2.0                # optional cap per study; requester_epsilon: per requester
    require_dp = false                 # true: refuse every release without DP noise
    honest_sites = 1                   # honest participants (itself included) this site assumes when it
                                       # sizes its noise share; never taken from the coordinator

    [audit]
    ledger = "ledger.sqlite"           # hash-chained record of every task (default: next to this file)
    dataset = "cohort-2024"            # label of the dataset the budget belongs to (default: site name)
    published_head = "keys/published-head.json"   # last signed head published (default: beside the key)

    [witness]                          # optional: a witness that co-signs and keeps every ledger head
    address = "witness.example.org:50070"

    [tls]                              # mutual TLS (required unless insecure = true)
    ca = "tls/ca.pem"                  # the consortium CA
    cert = "tls/hospital-a.pem"        # this site's certificate (CN = the site name)
    key = "tls/hospital-a.key"
    # insecure = true                  # plaintext gRPC: development only, results are labelled

    [access]                           # authorisation (site_agent/policy.py); consent: [data] consent

Relative paths are resolved against the directory of the config file. Errors name the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config_tables import REQUIRED, checked_table, read_toml, typed_value
from engine.errors import ConfigError
from engine.io.dosage import VCF_DOSAGE_FIELDS
from engine.io.hard_calls import HardCallRules
from engine.tasks import PRIVACY_MODES
from engine.privacy.budget import BudgetPolicy, policy_from_toml, render_policy
from protos.pki import TlsFiles
from site_agent.compute.settings import ComputeSettings, compute_from_toml, render_compute
from site_agent.policy import AccessPolicy, access_from_toml, render_access

#: [data] key -> genotype format.
GENOTYPE_KEYS = {"bfile": "plink1", "pfile": "pgen", "vcf": "vcf", "bgen": "bgen"}
FORMAT_KEYS = {fmt: key for key, fmt in GENOTYPE_KEYS.items()}


@dataclass(frozen=True)
class SiteConfig:
    path: Path
    name: str
    listen: str
    genotypes: Path  # PLINK 1 or PLINK 2 prefix, or VCF/BCF file
    genotype_format: str  # "plink1" | "pgen" | "vcf"
    pheno: Path
    covar: Path | None
    identity_key: Path
    privacy_modes: tuple[str, ...] = ("secagg",)
    min_participants: int = 2
    max_colluding_sites: int = 0  # [policy]: the secure rounds' threshold must exceed (n + this) / 2
    threads: int | None = None
    genotype_cache_mib: int = 256  # [compute] genotype_cache_mib; beyond it the genotypes spill to disk
    he_context_sha256: str | None = None  # pinned key-holder context (SHA-256 hex), for privacy mode "he"
    budget: BudgetPolicy | None = None  # [budget]: DP budget (None: DP releases are refused)
    ledger: Path | None = None  # [audit] ledger (load_site_config fills in the default)
    dataset: str = ""  # [audit] dataset label (default: the site name)
    tls: TlsFiles | None = None  # [tls]: mutual TLS material; None only with [tls] insecure = true
    access: AccessPolicy = AccessPolicy()  # [access]: studies, requesters and release minimums
    consent: Path | None = None  # [data] consent: the #FID IID DUO table (engine/cohort/consent.py)
    ledger_signing_key: Path | None = None  # [keys] ledger_signing_key (engine/audit/heads.py); needed to serve
    published_head: Path | None = None  # [audit] published_head: the last signed head published
    witness: str | None = None  # [witness] address
    roster: Path | None = None  # [keys] roster: the pinned consortium roster (None: secagg/he refused)
    genotyping_technology: str = ""  # [data] genotyping_technology, e.g. "Genome-wide genotyping array"
    compute: ComputeSettings = ComputeSettings()  # [compute] backend: in this process or on a Dask cluster
    sample: Path | None = None  # [data] sample: a BGEN's .sample file (None: the IDs it embeds)
    vcf_dosage: str | None = None  # [data] vcf_dosage: "DS" or "GP" reads a VCF's dosages, not GT
    hard_calls: HardCallRules = HardCallRules()  # [data] hard_call_threshold, dosage_erase_threshold

    @property
    def insecure(self) -> bool:
        """True when the site serves plaintext gRPC ([tls] insecure = true; development only)."""
        return self.tls is None


def _get(table: dict[str, Any], section: str, key: str, kind: type, path: Path, required: bool = True) -> Any:
    return typed_value(table, key, kind, f"{str(path)!r} [{section}]", REQUIRED if required else None)


def _section(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{str(path)!r}: [{name}] must be a table")
    return value


def load_site_config(path: Path | str) -> SiteConfig:
    """Read and validate a site config; raises :class:`ConfigError` naming the offending key."""
    path = Path(path)
    raw = read_toml(path, "site config")
    known = {"site", "data", "keys", "policy", "compute", "budget", "audit", "tls", "access", "witness"}
    checked_table(raw, f"{str(path)!r}", known, kind="section")
    base = path.parent
    site, data, keys = (_section(raw, s, path) for s in ("site", "data", "keys"))
    policy, compute = _section(raw, "policy", path), _section(raw, "compute", path)
    audit = _section(raw, "audit", path)

    def resolve(value: str | None) -> Path | None:
        return None if value is None else (base / value).resolve()

    name = _get(site, "site", "name", str, path)
    if not name or any(c.isspace() for c in name):
        raise ConfigError(f"{str(path)!r}: [site] name must be a non-empty word, got {name!r}")
    modes = policy.get("privacy_modes", ["secagg"])
    if not isinstance(modes, list) or not modes or any(m not in PRIVACY_MODES for m in modes):
        raise ConfigError(f"{str(path)!r}: [policy] privacy_modes must be a non-empty list drawn from {list(PRIVACY_MODES)}, got {modes!r}")
    min_participants = _get(policy, "policy", "min_participants", int, path, required=False)
    if min_participants is not None and min_participants < 2:
        raise ConfigError(f"{str(path)!r}: [policy] min_participants must be >= 2, got {min_participants}")
    colluders = _get(policy, "policy", "max_colluding_sites", int, path, required=False)
    if colluders is not None and colluders < 0:
        raise ConfigError(f"{str(path)!r}: [policy] max_colluding_sites must be >= 0, got {colluders}")
    he_pin = _get(keys, "keys", "he_context_sha256", str, path, required=False)
    if he_pin is not None and not re.fullmatch(r"[0-9a-f]{64}", he_pin):
        raise ConfigError(f"{str(path)!r}: [keys] he_context_sha256 must be 64 lowercase hex digits (a SHA-256), got {he_pin!r}")
    if "he" in modes and he_pin is None:
        raise ConfigError(f"{str(path)!r}: [policy] privacy_modes lists \"he\" but [keys] he_context_sha256 is missing; "
                          "pin the key holder's context with: fedgwas-site init --he-context FILE")
    threads = _get(compute, "compute", "threads", int, path, required=False)
    if threads is not None and threads < 1:
        raise ConfigError(f"{str(path)!r}: [compute] threads must be >= 1, got {threads}")
    cache_mib = _get(compute, "compute", "genotype_cache_mib", int, path, required=False)
    if cache_mib is not None and cache_mib < 0:
        raise ConfigError(f"{str(path)!r}: [compute] genotype_cache_mib must be >= 0, got {cache_mib}")
    given = [key for key in GENOTYPE_KEYS if key in data]
    if len(given) != 1:
        raise ConfigError(f"{str(path)!r}: [data] needs exactly one of {', '.join(GENOTYPE_KEYS)}; found {given or 'none'}")
    tls = _tls_files(_section(raw, "tls", path), path, resolve)
    signing_key = resolve(_get(keys, "keys", "ledger_signing_key", str, path, required=False))
    published_head = resolve(_get(audit, "audit", "published_head", str, path, required=False))
    if published_head is None and signing_key is not None:
        published_head = signing_key.parent / "published-head.json"
    witness = checked_table(_section(raw, "witness", path), f"{str(path)!r}: [witness]", {"address"})
    witness_address = _get(witness, "witness", "address", str, path, required=False)
    if witness_address is not None and not re.fullmatch(r"\S+:\d+", witness_address):
        raise ConfigError(f"{str(path)!r}: [witness] address must be HOST:PORT, got {witness_address!r}")
    sample = _get(data, "data", "sample", str, path, required=False)
    vcf_dosage = _get(data, "data", "vcf_dosage", str, path, required=False)
    if sample is not None and given[0] != "bgen":
        raise ConfigError(f"{str(path)!r}: [data] sample (a .sample file) goes with bgen only")
    if vcf_dosage is not None and (given[0] != "vcf" or vcf_dosage not in VCF_DOSAGE_FIELDS):
        raise ConfigError(f"{str(path)!r}: [data] vcf_dosage must be one of {list(VCF_DOSAGE_FIELDS)} and goes with "
                          f"vcf only, got {vcf_dosage!r}")
    hard_calls = _hard_call_rules(data, path, given[0] == "bgen" or vcf_dosage is not None)
    return SiteConfig(
        path=path,
        name=name,
        listen=_get(site, "site", "listen", str, path),
        genotypes=resolve(_get(data, "data", given[0], str, path)),  # type: ignore[arg-type]
        genotype_format=GENOTYPE_KEYS[given[0]],
        pheno=resolve(_get(data, "data", "pheno", str, path)),  # type: ignore[arg-type]
        covar=resolve(_get(data, "data", "covar", str, path, required=False)),
        identity_key=resolve(_get(keys, "keys", "identity_key", str, path)),  # type: ignore[arg-type]
        privacy_modes=tuple(modes),
        min_participants=min_participants or 2,
        max_colluding_sites=colluders or 0,
        threads=threads,
        genotype_cache_mib=256 if cache_mib is None else cache_mib,
        he_context_sha256=he_pin,
        budget=policy_from_toml(raw.get("budget"), repr(str(path))),
        ledger=resolve(_get(audit, "audit", "ledger", str, path, required=False) or "ledger.sqlite"),
        dataset=_get(audit, "audit", "dataset", str, path, required=False) or name,
        tls=tls,
        access=access_from_toml(raw.get("access"), repr(str(path))),
        consent=resolve(_get(data, "data", "consent", str, path, required=False)),
        ledger_signing_key=signing_key,
        published_head=published_head,
        witness=witness_address,
        roster=resolve(_get(keys, "keys", "roster", str, path, required=False)),
        genotyping_technology=_get(data, "data", "genotyping_technology", str, path, required=False) or "",
        compute=compute_from_toml(compute, path, threads, base.resolve() / "cache"),
        sample=resolve(sample),
        vcf_dosage=vcf_dosage,
        hard_calls=hard_calls,
    )


def _hard_call_rules(data: dict[str, Any], path: Path, dosage_import: bool) -> HardCallRules:
    """``[data] hard_call_threshold`` / ``dosage_erase_threshold``: PLINK 2's rules of a dosage import."""
    keys = ("hard_call_threshold", "dosage_erase_threshold")
    values = [_get(data, "data", key, (int, float), path, required=False) for key in keys]
    if all(value is None for value in values):
        return HardCallRules()
    if not dosage_import:
        raise ConfigError(f"{str(path)!r}: [data] {' and '.join(k for k, v in zip(keys, values) if v is not None)} "
                          f"go(es) with a dosage import only (bgen, or vcf with vcf_dosage); PLINK 2 applies "
                          f"neither to the .pgen or hard calls it reads")
    return HardCallRules.checked(*values, names=(f"{str(path)!r}: [data] {keys[0]}", f"{str(path)!r}: [data] {keys[1]}"),
                                 error=ConfigError)


def _tls_files(tls: dict[str, Any], path: Path, resolve: Any) -> TlsFiles | None:
    """``[tls]``: ``ca``/``cert``/``key`` files, or ``insecure = true`` (then None); nothing else."""
    insecure = _get(tls, "tls", "insecure", bool, path, required=False)
    files = {key: _get(tls, "tls", key, str, path, required=False) for key in ("ca", "cert", "key")}
    if insecure:
        if any(files.values()):
            raise ConfigError(f"{str(path)!r}: [tls] insecure = true cannot be combined with ca/cert/key")
        return None
    missing = [key for key, value in files.items() if not value]
    if missing:
        raise ConfigError(f"{str(path)!r}: [tls] {', '.join(missing)} missing: the site serves only mutual TLS "
                          f"(certificates from `fedgwas keys tls`) unless [tls] insecure = true (development only)")
    return TlsFiles(*(resolve(files[key]) for key in ("ca", "cert", "key")))


def render_site_config(*, name: str, listen: str, genotypes: str, pheno: str, covar: str | None,
                       identity_key: str, privacy_modes: tuple[str, ...] = ("secagg",),
                       threads: int | None = None, genotype_format: str = "plink1",
                       he_context_sha256: str | None = None, budget: BudgetPolicy | None = None,
                       tls: TlsFiles | None = None, access: AccessPolicy | None = None,
                       consent: str | None = None, ledger_signing_key: str | None = None,
                       witness: str | None = None, roster: str | None = None,
                       min_participants: int = 2, genotyping_technology: str | None = None,
                       workers: int | str | None = None, scheduler: str | None = None,
                       sample: str | None = None, vcf_dosage: str | None = None,
                       hard_calls: HardCallRules = HardCallRules()) -> str:
    """TOML text of a site config (what ``fedgwas-site init`` writes); ``tls`` None writes
    ``[tls] insecure = true``."""

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[site]", f"name = {q(name)}", f"listen = {q(listen)}", "", "[data]",
             f"{FORMAT_KEYS[genotype_format]} = {q(genotypes)}", f"pheno = {q(pheno)}"]
    if sample is not None:
        lines.append(f"sample = {q(sample)}")
    if vcf_dosage is not None:
        lines.append(f"vcf_dosage = {q(vcf_dosage)}")
    if not hard_calls.default:
        lines += [f"hard_call_threshold = {hard_calls.hard_call_threshold!r}",
                  f"dosage_erase_threshold = {hard_calls.dosage_erase_threshold!r}"]
    if covar is not None:
        lines.append(f"covar = {q(covar)}")
    if consent is not None:
        lines.append(f"consent = {q(consent)}")
    if genotyping_technology:
        lines.append(f"genotyping_technology = {q(genotyping_technology)}")
    lines += ["", "[keys]", f"identity_key = {q(identity_key)}"]
    if roster is not None:
        lines.append(f"roster = {q(roster)}")
    if ledger_signing_key is not None:
        lines.append(f"ledger_signing_key = {q(ledger_signing_key)}")
    if he_context_sha256 is not None:
        lines.append(f"he_context_sha256 = {q(he_context_sha256)}")
    lines += ["", "[policy]",
              "privacy_modes = [" + ", ".join(q(m) for m in privacy_modes) + "]", f"min_participants = {min_participants}",
              "# sites assumed to collude with the coordinator: secure rounds need a threshold above (n + this) / 2",
              "max_colluding_sites = 0"]
    lines += render_compute(threads, workers, scheduler)
    lines += render_policy(budget)
    if tls is None:
        lines += ["", "[tls]", "insecure = true  # plaintext gRPC: development only"]
    else:
        lines += ["", "[tls]", f"ca = {q(str(tls.ca))}", f"cert = {q(str(tls.cert))}", f"key = {q(str(tls.key))}"]
    lines += render_access(access)
    if witness is not None:
        lines += ["", "[witness]", f"address = {q(witness)}"]
    return "\n".join(lines) + "\n"
