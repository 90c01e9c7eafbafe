"""The GWAS-SSF metadata sidecar (``<data file>-meta.yaml``): every mandatory field of the v1.1 model.

The data file itself is written by :mod:`coordinator.results.gwas_ssf`; the validator the suite runs
(EBI's ``gwas-ssf validate``) reads both.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.results.gwas_ssf import fedgwas_version, meta_path_for, untested_path_for
from coordinator.summary import RunSummary

_PLAIN_YAML = re.compile(r"^[A-Za-z][A-Za-z0-9 ._/+()-]*$")
_YAML_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def md5sum(path: Path | str) -> str:
    """Hex md5 of a file's bytes (as GWAS-SSF's ``data_file_md5sum``)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _yaml_scalar(value: Any) -> str:
    """One YAML scalar: booleans and numbers bare, strings plain when unambiguous, else double-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(v)
    text = str(value)
    if _PLAIN_YAML.match(text) and text.lower() not in _YAML_RESERVED and not text.endswith(" "):
        return text
    return json.dumps(text, ensure_ascii=True)  # a JSON string is a valid YAML double-quoted scalar


def _yaml_list(key: str, items: list[str], indent: str = "") -> list[str]:
    if not items:
        return [f"{indent}{key}: []"]
    return [f"{indent}{key}:"] + [f"{indent}  - {_yaml_scalar(item)}" for item in items]


def gwas_ssf_meta_text(data_path: Path | str, summary: RunSummary, *, sorted_rows: bool = False,
                       n_untested: int = 0) -> str:
    """The metadata YAML for an existing data file (its name and md5 are read from ``data_path``).

    Standard GWAS-SSF keys come first; run facts that GWAS-SSF has no field for sit under a
    ``fedgwas:`` mapping (privacy mode and label, sites, dropped variants, rounds, covariates).
    A plaintext run carries a warning comment at the top and ``privacy: plaintext`` plus a
    ``warning:`` key first in the ``fedgwas`` mapping. No hostnames or failure messages are written.
    Every field that GWAS-SSF v1.1 makes mandatory is written: ``genome_assembly``,
    ``genotyping_technology`` and ``sample_ancestry_category`` as the study declares them (``NR``, not
    reported, by default), ``case_control_study`` and, for case/control tests, the case and control
    counts; ``is_sorted`` says whether the rows are in chromosome/position order (``sorted_rows``).
    """
    data_path = Path(data_path)
    software = f"fedgwas {fedgwas_version(summary)}"
    lines = [f"# GWAS-SSF metadata written by {software}"]
    if summary.is_plaintext:
        lines += [
            "# " + "=" * 78,
            "# WARNING: PLAINTEXT RUN - DEVELOPMENT ONLY. The coordinator saw every site's statistics;",
            "# these results were produced without secure aggregation and must not be shared as such.",
            "# " + "=" * 78,
        ]
    lines += [
        f"data_file_name: {_yaml_scalar(data_path.name)}",
        f"file_type: {_yaml_scalar('GWAS-SSF v1.0')}",
        f"data_file_md5sum: {_yaml_scalar(md5sum(data_path))}",
        f"date_metadata_last_modified: {datetime.date.today().isoformat()}",
        "is_harmonised: false",
        f"is_sorted: {_yaml_scalar(bool(sorted_rows))}",
        f"genome_assembly: {_yaml_scalar(summary.genome_build)}",
        f"coordinate_system: {_yaml_scalar('1-based')}",
        *_yaml_list("genotyping_technology", list(summary.genotyping_technology)),
        *_yaml_list("trait_description", [summary.phenotype]),
        "samples:",
        f"  - sample_size: {_yaml_scalar(summary.n_samples)}",
        *_yaml_list("sample_ancestry_category", list(summary.ancestry_category), indent="    "),
        f"    case_control_study: {_yaml_scalar(summary.case_count is not None)}",
        *([f"    case_count: {_yaml_scalar(summary.case_count)}",
           f"    control_count: {_yaml_scalar(summary.control_count)}"] if summary.case_count is not None else []),
        f"analysis_software: {_yaml_scalar(software)}",
        f"effect_statistic: {_yaml_scalar('beta')}",
        *_yaml_list("adjusted_covariates", list(summary.covariates)),
        "fedgwas:",
        f"  privacy: {_yaml_scalar(summary.privacy)}",
    ]
    if summary.is_plaintext:
        lines.append("  warning: " + _yaml_scalar(
            "PLAINTEXT - development only: the coordinator saw every site's statistics; "
            "do not use or share these results as privacy-preserving"))
    lines += [
        f"  privacy_label: {_yaml_scalar(summary.privacy_label)}",
        f"  study_id: {_yaml_scalar(summary.study_id)}",
        f"  test: {_yaml_scalar(summary.test)}",
        *_yaml_list("covariates", list(summary.covariates), indent="  "),
        *_yaml_list("excluded_covariates", list(summary.excluded_covariates), indent="  "),
        f"  rounds: {_yaml_scalar(summary.rounds)}",
        f"  n_variants_tested: {_yaml_scalar(summary.n_variants_tested)}",
        *(["  participant_overlaps:"] + [f"    {json.dumps(pair)}: {_yaml_scalar(n)}"
                                          for pair, n in summary.participant_overlaps.items()]
          if summary.participant_overlaps else []),
        f"  untested_file: {_yaml_scalar(untested_path_for(data_path).name)}",
        f"  n_variants_untested: {_yaml_scalar(n_untested)}",
    ]
    if summary.variants_dropped:
        lines.append("  variants_dropped:")
        lines += [f"    {json.dumps(str(reason))}: {_yaml_scalar(count)}"
                  for reason, count in sorted(summary.variants_dropped.items())]
    else:
        lines.append("  variants_dropped: {}")
    lines.append("  sites:" if summary.sites else "  sites: []")
    for site in summary.sites:
        lines += [
            f"    - name: {_yaml_scalar(site.name)}",
            f"      n_samples: {_yaml_scalar(site.n_samples)}",
            f"      n_variants: {_yaml_scalar(site.n_variants)}",
            f"      contributed: {_yaml_scalar(site.contributed)}",
        ]
    return "\n".join(lines) + "\n"


def write_gwas_ssf_meta(data_path: Path | str, summary: RunSummary, *, sorted_rows: bool = False,
                        n_untested: int = 0) -> Path:
    """Write the ``<data file>-meta.yaml`` sidecar of ``data_path`` (see :func:`gwas_ssf_meta_text`)."""
    data_path = Path(data_path)
    meta = meta_path_for(data_path)
    meta.write_text(gwas_ssf_meta_text(data_path, summary, sorted_rows=sorted_rows, n_untested=n_untested),
                    encoding="utf-8")
    return meta
