"""Site-side authorisation: which studies, models and requesters a site serves, and its release rules.

The ``[access]`` section of ``site.toml``::

    [access]
    any_study = false                 # true: serve any study (development and demos only)
    requesters = ["coordinator-a"]    # certificate identities (CN) allowed by default; ["*"]: any
    min_cohort = 50                   # refuse a task whose cohort (after every filter) is smaller
    min_allele_count = 5              # per-variant minor allele count below which this site abstains
    min_cohort_difference = 10        # refuse a cohort differing from a released one by 1..N-1 samples
    allow_cohort_differencing = false # true: a study's exact releases may use any sample sets (development)

    [[access.study]]                  # one table per approved study
    id = "hm3-qt"
    models = ["qc", "linear"]         # optional; default: every model (engine/models.py: linear,
                                      # logistic, firth, qc, ld_prune, pca)
    requesters = ["analyst-1"]        # optional; default: [access] requesters
    purpose = "HMB"                   # optional: the only data use (DUO) the study may declare

Without an ``[access]`` section a site serves any study and requester, with no minimums and no
study-level cohort guard (development and in-process tests; ``fedgwas-site check`` warns);
``fedgwas-site init`` writes :data:`DENY_ALL` instead. Every refusal is a
:class:`~engine.errors.PrivacyError` (``PERMISSION_DENIED``) naming the rule, and is recorded in
the ledger with its reason by the handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.config_tables import checked_table
from engine.errors import ConfigError, PrivacyError
from engine.models import check_model_names, statistics_for

if TYPE_CHECKING:
    from engine.cohort.consent import DataUse

ANY = "*"


@dataclass(frozen=True)
class StudyApproval:
    """One approved study: the models it may run (None: any) and who may run it (None: the default)."""

    study_id: str
    models: tuple[str, ...] | None = None
    requesters: tuple[str, ...] | None = None
    purpose: str | None = None  # the study's pinned data use (DUO purpose); None: not pinned


@dataclass(frozen=True)
class AccessPolicy:
    """A site's ``[access]`` rules (see the module docstring); the default serves everyone."""

    any_study: bool = True
    studies: tuple[StudyApproval, ...] = ()
    requesters: tuple[str, ...] = (ANY,)
    min_cohort: int = 0
    min_allele_count: int = 0
    min_cohort_difference: int = 0
    # Development only: exact releases of one study over any number of sample sets (the study-level
    # guard of site_agent/release_registry.py off). True without an [access] section, False in any
    # [access] section unless set.
    allow_cohort_differencing: bool = True

    def authorise(self, site: str, study_id: str, analysis: str | None, requester: str | None) -> None:
        """Raise PrivacyError unless ``requester`` may run ``analysis`` (None: any, for Describe) in ``study_id``."""
        approval = next((s for s in self.studies if s.study_id == study_id), None)
        if approval is None and not self.any_study:
            raise PrivacyError(f"site {site!r} has not approved study {study_id!r}")
        allowed = self.requesters if approval is None or approval.requesters is None else approval.requesters
        if ANY not in allowed and requester not in allowed:
            raise PrivacyError(f"site {site!r} does not accept requests from {requester or 'an unidentified peer'!r} "
                               f"for study {study_id!r}")
        if analysis is not None and approval is not None and approval.models is not None \
                and analysis not in statistics_for(approval.models):
            raise PrivacyError(f"site {site!r} has approved study {study_id!r} for {list(approval.models)}, "
                               f"whose rounds do not include {analysis!r}")

    def check_purpose(self, site: str, study_id: str, data_use: "DataUse | None") -> None:
        """Refuse a task or Describe whose declared purpose is not the one pinned in the study's approval."""
        approval = next((s for s in self.studies if s.study_id == study_id), None)
        if approval is None or approval.purpose is None:
            return
        declared = None if data_use is None else data_use.purpose
        if declared != approval.purpose:
            raise PrivacyError(f"site {site!r} approved study {study_id!r} for purpose {approval.purpose!r} only, "
                               f"not {declared or 'an undeclared purpose'!r}")

    def check_cohort_size(self, site: str, n_samples: int) -> None:
        """Refuse a cohort smaller than ``min_cohort`` (after consent, phenotype and covariate filters)."""
        if n_samples < self.min_cohort:
            raise PrivacyError(f"site {site!r} refuses a cohort of {n_samples} samples: its minimum is "
                               f"{self.min_cohort} ([access] min_cohort)")


#: What ``fedgwas-site init`` writes: no study approved, no requester accepted, minimums on.
DENY_ALL = AccessPolicy(any_study=False, studies=(), requesters=(), min_cohort=50, min_allele_count=5,
                        min_cohort_difference=10, allow_cohort_differencing=False)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(not isinstance(v, str) or not v for v in value):  # [] allowed: nobody
        raise ConfigError(f"{where} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _count(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where} {key} must be a non-negative integer, got {value!r}")
    return value


def _purpose(value: Any, label: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{label} purpose must be a DUO purpose such as \"HMB\" or \"DS:MONDO:0005148\", got {value!r}")
    return value


def access_from_toml(table: Any, where: str) -> AccessPolicy:
    """Validate an ``[access]`` table (None: the open default); errors name the key."""
    if table is None:
        return AccessPolicy()
    checked_table(table, f"{where} [access]",
                  {"any_study", "study", "requesters", "min_cohort", "min_allele_count", "min_cohort_difference",
                   "allow_cohort_differencing"})
    any_study = table.get("any_study", False)
    if not isinstance(any_study, bool):
        raise ConfigError(f"{where}: [access] any_study must be true or false, got {any_study!r}")
    differencing = table.get("allow_cohort_differencing", False)
    if not isinstance(differencing, bool):
        raise ConfigError(f"{where}: [access] allow_cohort_differencing must be true or false, got {differencing!r}")
    raw_studies = table.get("study", [])
    if not isinstance(raw_studies, list):
        raise ConfigError(f"{where}: [[access.study]] must be an array of tables")
    studies = []
    for number, entry in enumerate(raw_studies, start=1):
        label = f"{where}: [[access.study]] #{number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise ConfigError(f"{label} needs id = \"STUDY-ID\"")
        checked_table(entry, label, {"id", "models", "analyses", "requesters", "purpose"})
        if "models" in entry and "analyses" in entry:
            raise ConfigError(f"{label}: give models (analyses is its former name), not both")
        models_key = "analyses" if "analyses" in entry else "models"
        studies.append(StudyApproval(
            entry["id"],
            None if models_key not in entry else
            check_model_names(_strings(entry[models_key], f"{label} {models_key}"), f"{label} {models_key}"),
            None if "requesters" not in entry else _strings(entry["requesters"], f"{label} requesters"),
            _purpose(entry.get("purpose"), label)))
    ids = [s.study_id for s in studies]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: [[access.study]] lists a study twice: {ids}")
    requesters = _strings(table.get("requesters", [ANY]), f"{where}: [access] requesters")
    return AccessPolicy(any_study=any_study, studies=tuple(studies), requesters=requesters,
                        min_cohort=_count(table, "min_cohort", f"{where}: [access]"),
                        min_allele_count=_count(table, "min_allele_count", f"{where}: [access]"),
                        min_cohort_difference=_count(table, "min_cohort_difference", f"{where}: [access]"),
                        allow_cohort_differencing=differencing)


def render_access(policy: AccessPolicy | None) -> list[str]:
    """TOML lines of an ``[access]`` section (empty for None)."""
    if policy is None:
        return []

    def q(values: tuple[str, ...]) -> str:
        return "[" + ", ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"

    lines = ["", "[access]", f"any_study = {'true' if policy.any_study else 'false'}",
             f"requesters = {q(policy.requesters)}", f"min_cohort = {policy.min_cohort}",
             f"min_allele_count = {policy.min_allele_count}",
             f"min_cohort_difference = {policy.min_cohort_difference}"]
    if policy.allow_cohort_differencing:
        lines.append("allow_cohort_differencing = true  # development only")
    for study in policy.studies:
        lines += ["", "[[access.study]]", f"id = {q((study.study_id,))[1:-1]}"]
        if study.models is not None:
            lines.append(f"models = {q(study.models)}")
        if study.requesters is not None:
            lines.append(f"requesters = {q(study.requesters)}")
        if study.purpose is not None:
            lines.append(f"purpose = {q((study.purpose,))[1:-1]}")
    return lines
