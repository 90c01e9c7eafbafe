"""Site-side authorisation: which studies, models and requesters a site serves, and its release rules.

The ``[access]`` section of ``site.toml``::

    [access]
    any_study = false                 # true: serve any study (development and demos only)
    requesters = ["coordinator-a"]    # certificate identities (CN) allowed by default; ["*"]: any
    min_cohort = 50                   # refuse a task whose cohort (after every filter) is smaller
    min_allele_count = 5              # per-variant minor allele count below which this site abstains
    min_cohort_difference = 10        # refuse a cohort differing from a released one by 1..N-1 samples

    [[access.study]]                  # one table per approved study
    id = "hm3-qt"
    models = ["qc", "linear"]         # optional; default: every model (engine/models.py: linear,
                                      # logistic, firth, qc, ld_prune, pca)
    requesters = ["analyst-1"]        # optional; default: [access] requesters

Without an ``[access]`` section a site serves any study and requester, with no minimums (the
behaviour before authorisation existed; ``fedgwas-site check`` says so). Every refusal is a
:class:`~engine.errors.PrivacyError` (``PERMISSION_DENIED``) naming the rule, and is recorded in
the ledger with its reason by the handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config_tables import checked_table
from engine.errors import ConfigError, PrivacyError
from engine.models import check_model_names, statistics_for

ANY = "*"


@dataclass(frozen=True)
class StudyApproval:
    """One approved study: the models it may run (None: any) and who may run it (None: the default)."""

    study_id: str
    models: tuple[str, ...] | None = None
    requesters: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AccessPolicy:
    """A site's ``[access]`` rules (see the module docstring); the default serves everyone."""

    any_study: bool = True
    studies: tuple[StudyApproval, ...] = ()
    requesters: tuple[str, ...] = (ANY,)
    min_cohort: int = 0
    min_allele_count: int = 0
    min_cohort_difference: int = 0

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

    def check_cohort_size(self, site: str, n_samples: int) -> None:
        """Refuse a cohort smaller than ``min_cohort`` (after consent, phenotype and covariate filters)."""
        if n_samples < self.min_cohort:
            raise PrivacyError(f"site {site!r} refuses a cohort of {n_samples} samples: its minimum is "
                               f"{self.min_cohort} ([access] min_cohort)")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(not isinstance(v, str) or not v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _count(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where} {key} must be a non-negative integer, got {value!r}")
    return value


def access_from_toml(table: Any, where: str) -> AccessPolicy:
    """Validate an ``[access]`` table (None: the open default); errors name the key."""
    if table is None:
        return AccessPolicy()
    checked_table(table, f"{where} [access]",
                  {"any_study", "study", "requesters", "min_cohort", "min_allele_count", "min_cohort_difference"})
    any_study = table.get("any_study", False)
    if not isinstance(any_study, bool):
        raise ConfigError(f"{where}: [access] any_study must be true or false, got {any_study!r}")
    raw_studies = table.get("study", [])
    if not isinstance(raw_studies, list):
        raise ConfigError(f"{where}: [[access.study]] must be an array of tables")
    studies = []
    for number, entry in enumerate(raw_studies, start=1):
        label = f"{where}: [[access.study]] #{number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise ConfigError(f"{label} needs id = \"STUDY-ID\"")
        checked_table(entry, label, {"id", "models", "analyses", "requesters"})
        if "models" in entry and "analyses" in entry:
            raise ConfigError(f"{label}: give models (analyses is its former name), not both")
        models_key = "analyses" if "analyses" in entry else "models"
        studies.append(StudyApproval(
            entry["id"],
            None if models_key not in entry else
            check_model_names(_strings(entry[models_key], f"{label} {models_key}"), f"{label} {models_key}"),
            None if "requesters" not in entry else _strings(entry["requesters"], f"{label} requesters")))
    ids = [s.study_id for s in studies]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: [[access.study]] lists a study twice: {ids}")
    requesters = _strings(table.get("requesters", [ANY]), f"{where}: [access] requesters")
    return AccessPolicy(any_study=any_study, studies=tuple(studies), requesters=requesters,
                        min_cohort=_count(table, "min_cohort", f"{where}: [access]"),
                        min_allele_count=_count(table, "min_allele_count", f"{where}: [access]"),
                        min_cohort_difference=_count(table, "min_cohort_difference", f"{where}: [access]"))


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
    for study in policy.studies:
        lines += ["", "[[access.study]]", f"id = {q((study.study_id,))[1:-1]}"]
        if study.models is not None:
            lines.append(f"models = {q(study.models)}")
        if study.requesters is not None:
            lines.append(f"requesters = {q(study.requesters)}")
    return lines
