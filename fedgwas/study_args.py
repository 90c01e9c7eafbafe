"""``fedgwas local``'s flags as the tables of a study file.

The command line and ``fedgwas run STUDY.toml`` share one study builder
(:func:`coordinator.study_file.study_from_tables`): the flags become the tables a study file would
hold (``[study]``, ``[analysis]``, ``[privacy]``, ``[qc]``, ``[pca]``, ``[dp]``...), so the phenotype
coding, the default model, the name lists and every check are the same whichever way a study is
given. The local sites' addresses, TLS files and the key holder's address are added once the local
processes are running (:func:`with_endpoints`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordinator.client import SiteEndpoint
from coordinator.dp_options import dp_table_from_args
from coordinator.structure_cli import pca_table, prune_table
from coordinator.study import StudyConfig
from coordinator.study_file import study_from_tables
from fedgwas.local import LOCAL_COORDINATOR
from fedgwas.options import data_use_from_args
from protos.pki import TlsFiles

#: What errors of a study given by flags name instead of a file.
COMMAND_LINE = "command line"


def study_tables(args: argparse.Namespace, covariates: Sequence[str], qc: dict[str, Any], out: Path) -> dict[str, Any]:
    """The study file ``args`` describe, without ``[[sites]]`` and ``[tls]`` (see :func:`with_endpoints`)."""
    def arg(name: str, default: Any) -> Any:  # ``fedgwas demo`` has only some of ``local``'s flags
        return getattr(args, name, default)

    analysis: dict[str, Any] = {
        "glm": arg("glm", None) or "none", "covariates": list(covariates),
        "case_control": "0/1" if arg("case_control_01", False) else "1/2",
        "match_by": arg("match_by", "position"), "block_size": arg("block_size", 8192),
        "xchr_model": arg("xchr_model", 2), "x_sex": not arg("no_x_sex", False),
        "input_missing_phenotype": arg("input_missing_phenotype", -9.0), "assoc": arg("assoc", False),
        "quantitative": list(arg("quantitative", ())),
    }
    if arg("pheno_name", None):
        analysis["phenotype"] = args.pheno_name
    if arg("extract", None):
        analysis["extract"] = str(Path(args.extract).resolve())
    tables: dict[str, Any] = {
        "study": {"id": arg("study_id", "local-study"), "requester": LOCAL_COORDINATOR,
                  "genome_build": arg("genome_build", "NR"), "overlap_check": arg("overlap_check", False),
                  "genotyping_technology": arg("genotyping_technology", "NR").split(","),
                  "ancestry_category": arg("ancestry_category", "NR").split(","), **data_use_from_args(args)},
        "analysis": analysis,
        "privacy": {"mode": args.privacy, "allow_dropout": arg("allow_dropout", False),
                    "min_sites": arg("min_sites", 2)},
        "network": {"timeout_seconds": arg("timeout", 3600.0)},
        "output": {"dir": str(out)},
    }
    sections = {"qc": qc, "ld_prune": prune_table(arg("indep_pairwise", None)), "pca": pca_table(arg("pca", None)),
                "dp": dp_table_from_args(args)}
    tables.update({key: table for key, table in sections.items() if table})
    return tables


def with_endpoints(tables: dict[str, Any], sites: Sequence[SiteEndpoint], tls: TlsFiles | None,
                   key_holder: str) -> dict[str, Any]:
    """``tables`` with the running sites' addresses, the coordinator's TLS files (``None``: insecure
    transport) and the key holder's address (mode "he")."""
    privacy = {**tables["privacy"], **({"key_holder": key_holder} if key_holder else {})}
    return {**tables, "privacy": privacy, "sites": [{"name": s.name, "address": s.address} for s in sites],
            "tls": {"insecure": True} if tls is None else {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}}


def local_study(tables: dict[str, Any], out: Path) -> StudyConfig:
    """The study of ``tables`` (errors name the command line); relative paths are the working directory's."""
    return study_from_tables(tables, COMMAND_LINE, Path.cwd(), out)


def check_study(tables: dict[str, Any], site_names: Sequence[str], out: Path) -> StudyConfig:
    """The study ``tables`` describe, validated before any local process starts (the sites' addresses
    and the key holder's are not known yet: they stand in as ``pending``)."""
    pending = [SiteEndpoint(name, "pending") for name in site_names]
    holder = "pending" if tables["privacy"]["mode"] == "he" else ""
    return local_study(with_endpoints(tables, pending, None, holder), out)
