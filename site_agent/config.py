"""Site agent configuration: a TOML file validated into frozen dataclasses at load time.

Example (``fedgwas-site init`` writes one)::

    [site]
    name = "hospital-a"
    listen = "0.0.0.0:50051"

    [data]
    bfile = "/data/gwas/cohort"        # PLINK 1 prefix (.bed/.bim/.fam); or pfile = PLINK 2 prefix
                                       # (.pgen/.pvar/.psam); or vcf = a .vcf, .vcf.gz or .bcf file
    pheno = "/data/gwas/pheno.txt"
    covar = "/data/gwas/covar.txt"     # optional

    [keys]
    secagg_private_key = "keys/secagg.key"

    [policy]
    privacy_modes = ["secagg"]         # add "plaintext" only on development machines
    min_participants = 2

    [compute]
    threads = 2

Relative paths are resolved against the directory of the config file. Errors name the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.tasks import PRIVACY_MODES

#: [data] key -> genotype format.
GENOTYPE_KEYS = {"bfile": "plink1", "pfile": "pgen", "vcf": "vcf"}
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
    secagg_private_key: Path
    privacy_modes: tuple[str, ...] = ("secagg",)
    min_participants: int = 2
    threads: int | None = None


def _get(table: dict[str, Any], section: str, key: str, kind: type, path: Path, required: bool = True) -> Any:
    where = f"[{section}] {key}"
    if key not in table:
        if required:
            raise ConfigError(f"{str(path)!r}: missing key {where}")
        return None
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{str(path)!r}: {where} must be a {kind.__name__}, got {value!r}")
    return value


def _section(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{str(path)!r}: [{name}] must be a table")
    return value


def load_site_config(path: Path | str) -> SiteConfig:
    """Read and validate a site config; raises :class:`ConfigError` naming the offending key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"site config {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"site config {str(path)!r} is not valid TOML: {exc}") from None
    known = {"site", "data", "keys", "policy", "compute"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{str(path)!r}: unknown section(s) {unknown}; expected {sorted(known)}")
    base = path.parent
    site, data, keys = (_section(raw, s, path) for s in ("site", "data", "keys"))
    policy, compute = _section(raw, "policy", path), _section(raw, "compute", path)

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
    threads = _get(compute, "compute", "threads", int, path, required=False)
    if threads is not None and threads < 1:
        raise ConfigError(f"{str(path)!r}: [compute] threads must be >= 1, got {threads}")
    given = [key for key in GENOTYPE_KEYS if key in data]
    if len(given) != 1:
        raise ConfigError(f"{str(path)!r}: [data] needs exactly one of {', '.join(GENOTYPE_KEYS)}; found {given or 'none'}")
    return SiteConfig(
        path=path,
        name=name,
        listen=_get(site, "site", "listen", str, path),
        genotypes=resolve(_get(data, "data", given[0], str, path)),  # type: ignore[arg-type]
        genotype_format=GENOTYPE_KEYS[given[0]],
        pheno=resolve(_get(data, "data", "pheno", str, path)),  # type: ignore[arg-type]
        covar=resolve(_get(data, "data", "covar", str, path, required=False)),
        secagg_private_key=resolve(_get(keys, "keys", "secagg_private_key", str, path)),  # type: ignore[arg-type]
        privacy_modes=tuple(modes),
        min_participants=min_participants or 2,
        threads=threads,
    )


def render_site_config(*, name: str, listen: str, genotypes: str, pheno: str, covar: str | None,
                       secagg_private_key: str, privacy_modes: tuple[str, ...] = ("secagg",),
                       threads: int | None = None, genotype_format: str = "plink1") -> str:
    """TOML text of a site config (what ``fedgwas-site init`` writes)."""

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[site]", f"name = {q(name)}", f"listen = {q(listen)}", "", "[data]",
             f"{FORMAT_KEYS[genotype_format]} = {q(genotypes)}", f"pheno = {q(pheno)}"]
    if covar is not None:
        lines.append(f"covar = {q(covar)}")
    lines += ["", "[keys]", f"secagg_private_key = {q(secagg_private_key)}", "", "[policy]",
              "privacy_modes = [" + ", ".join(q(m) for m in privacy_modes) + "]", "min_participants = 2"]
    if threads is not None:
        lines += ["", "[compute]", f"threads = {threads}"]
    return "\n".join(lines) + "\n"
