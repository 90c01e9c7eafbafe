"""What a finished study reports about itself, besides the per-variant results.

Filled in by the study runner, read by the result writers (GWAS-SSF metadata, HTML report) and written
as ``<name>.<test>.summary.json`` so that tests and auditors can check what happened.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

#: Privacy modes and how results label them.
PRIVACY_LABELS = {
    "secagg": "secure aggregation (pairwise-masked fixed-point sums; coordinator sees only the total)",
    "plaintext": "PLAINTEXT - development only: the coordinator saw every site's statistics",
    "he": "homomorphic encryption (CKKS; the coordinator summed ciphertexts, a separate key holder decrypted only the total)",
}


#: How results label a study run over channels without mutual TLS.
INSECURE_TRANSPORT_LABEL = "INSECURE TRANSPORT - development only: channels were neither encrypted nor authenticated"


@dataclass(frozen=True)
class SiteSummary:
    """One site's part in a study: who, how many samples, whether its statistics were used."""

    name: str
    n_samples: int  # analysed samples after the phenotype/covariate filters
    n_variants: int  # variants in the site's manifest
    contributed: bool
    failure: str = ""  # why it did not contribute, if it did not
    bytes_sent: int = 0  # bytes the site streamed to the coordinator for the association rounds
    genotyping_technology: str = ""  # as the site declares it ([data] genotyping_technology)


@dataclass(frozen=True)
class RunSummary:
    """Study-level facts for the report and the GWAS-SSF metadata sidecar."""

    study_id: str
    test: str  # "linear"
    phenotype: str
    covariates: tuple[str, ...]
    privacy: str  # key of PRIVACY_LABELS
    sites: tuple[SiteSummary, ...]
    n_variants_tested: int
    variants_dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    rounds: int = 1
    wall_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # describe, harmonise, rounds, solve, write
    software_version: str = ""
    notes: tuple[str, ...] = ()
    insecure_transport: bool = False  # channels without mutual TLS (development only)
    excluded_covariates: tuple[str, ...] = ()  # constant over the pooled cohort, left out as PLINK 2 does
    case_count: int | None = None  # case/control models: pooled analysed cases and controls
    control_count: int | None = None
    genome_build: str = "NR"  # GWAS-SSF genome_assembly, as the study declares it
    genotyping_technology: tuple[str, ...] = ("NR",)
    ancestry_category: tuple[str, ...] = ("NR",)
    participant_overlaps: dict[str, int] = field(default_factory=dict)  # "A+B" -> participants shared

    @property
    def privacy_label(self) -> str:
        label = PRIVACY_LABELS.get(self.privacy, self.privacy)
        return f"{label}; {INSECURE_TRANSPORT_LABEL}" if self.insecure_transport else label

    @property
    def is_plaintext(self) -> bool:
        """True when results must carry the development-only warning (plaintext mode or insecure transport)."""
        return self.privacy == "plaintext" or self.insecure_transport

    @property
    def n_samples(self) -> int:
        """Samples analysed over the contributing sites."""
        return sum(s.n_samples for s in self.sites if s.contributed)

    @property
    def contributing_sites(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites if s.contributed)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["privacy_label"] = self.privacy_label
        data["n_samples"] = self.n_samples
        data["contributing_sites"] = list(self.contributing_sites)
        return json.dumps(data, indent=2, sort_keys=True)

    def write_json(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n", encoding="utf-8")
