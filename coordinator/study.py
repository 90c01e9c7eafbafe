"""Study definitions: what the analyst asks for, validated into a frozen dataclass.

A study TOML (see docs/study-example.toml)::

    [study]
    id = "hm3-qt"
    requester = "analyst@consortium.example"

    [analysis]
    glm = "linear"
    phenotype = "QT"
    covariates = ["SEX_MALE", "AGE", "PC1-PC4"]
    match_by = "position"        # or "id"
    block_size = 8192

    [privacy]
    mode = "secagg"              # or "plaintext" (development only)
    allow_dropout = false        # restart a round without a failed site?
    min_sites = 2

    [network]
    timeout_seconds = 3600

    [output]
    dir = "results"

    [[sites]]
    name = "site-a"
    address = "10.0.0.5:50051"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.client import SiteEndpoint
from engine.errors import ConfigError
from engine.tables import expand_names
from engine.tasks import ANALYSES, PRIVACY_MODES, CohortRequest

_STUDY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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
    timeout_seconds: float = 3600.0
    requester: str = ""
    show_progress: bool = True

    def __post_init__(self) -> None:
        where = "study"
        if not _STUDY_ID.match(self.study_id):
            raise ConfigError(f"{where}: id {self.study_id!r} must be 1-128 letters, digits, '.', '_' or '-'")
        if self.glm not in ANALYSES:
            raise ConfigError(f"{where}: analysis glm {self.glm!r} is not one of {list(ANALYSES)}")
        if self.privacy not in PRIVACY_MODES:
            raise ConfigError(f"{where}: privacy mode {self.privacy!r} is not one of {list(PRIVACY_MODES)}")
        if self.match_by not in ("position", "id"):
            raise ConfigError(f"{where}: match_by {self.match_by!r} must be 'position' or 'id'")
        if len(self.sites) < 2:
            raise ConfigError(f"{where}: a federated study needs at least two sites, got {len(self.sites)}")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: site names must be unique, got {names}")
        if not 2 <= self.min_sites <= len(self.sites):
            raise ConfigError(f"{where}: min_sites {self.min_sites} must be between 2 and the number of sites")
        if not 1 <= self.block_size <= 65_536:
            raise ConfigError(f"{where}: block_size {self.block_size} must be between 1 and 65536")
        if self.timeout_seconds <= 0:
            raise ConfigError(f"{where}: timeout_seconds must be positive")

    @property
    def output_name(self) -> str:
        return self.cohort.phenotype


def _typed(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} = {value!r} has the wrong type")
    return value


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
        SiteEndpoint(_typed(s, "name", str, f"{name} [[sites]] #{i + 1}"), _typed(s, "address", str, f"{name} [[sites]] #{i + 1}"))
        for i, s in enumerate(sites_raw)
    )
    covariates = _typed(analysis, "covariates", (list, str), f"{name} [analysis]", [])
    output_dir = out_dir or (path.parent / _typed(tables["output"], "dir", str, f"{name} [output]", "results"))
    try:
        return StudyConfig(
            study_id=_typed(study, "id", str, f"{name} [study]"),
            requester=_typed(study, "requester", str, f"{name} [study]", ""),
            glm=_typed(analysis, "glm", str, f"{name} [analysis]", "linear"),
            cohort=CohortRequest(_typed(analysis, "phenotype", str, f"{name} [analysis]"),
                                 tuple(expand_names(covariates))),
            match_by=_typed(analysis, "match_by", str, f"{name} [analysis]", "position"),
            block_size=_typed(analysis, "block_size", int, f"{name} [analysis]", 8192),
            privacy=_typed(privacy, "mode", str, f"{name} [privacy]", "secagg"),
            allow_dropout=_typed(privacy, "allow_dropout", bool, f"{name} [privacy]", False),
            min_sites=_typed(privacy, "min_sites", int, f"{name} [privacy]", 2),
            timeout_seconds=float(_typed(tables["network"], "timeout_seconds", (int, float), f"{name} [network]", 3600)),
            sites=sites,
            out_dir=Path(output_dir),
        )
    except ConfigError as error:
        raise ConfigError(f"{name}: {error}") from None
