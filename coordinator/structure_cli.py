"""Command-line options of the population-structure phase: ``--indep-pairwise`` and ``--pca``.

Each is read into its study-file table (``[ld_prune]``, ``[pca]``), which the one study builder
(:func:`coordinator.study_file.study_from_tables`) validates as it does a study TOML's.

PLINK 2's syntax: ``--indep-pairwise <window>[kb] [step] <r^2>`` (the step defaults to 1 and must be 1
with ``kb``; ``500 kb`` and ``500kb`` are the same) and ``--pca [count] [approx]`` (10 by default).
"""

from __future__ import annotations

import argparse

from typing import Any

from engine.errors import InputError


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "population structure",
        "PLINK 2's LD pruning and PCA on the pooled data. Pruning selects the PCA's variants (association "
        "still tests every variant); with --pca, covariates PC1..PCk in --covar-name come from the PCA, "
        "each site using its own rows (OUT/sites/<name>/pca.eigenvec), other covariates from --covar.")
    group.add_argument("--indep-pairwise", nargs="+", metavar="ARG",
                       help="WINDOW[kb] [STEP] R2: prune to variants in approximate linkage equilibrium "
                            "(OUT/fedgwas.prune.in, .prune.out)")
    group.add_argument("--pca", nargs="*", metavar="COUNT|approx",
                       help="top principal components (default 10) of the variance-standardised relationship "
                            "matrix: OUT/pca.eigenval, OUT/pca.eigenvec.var; 'approx': PLINK 2's approx budget")


def prune_table(tokens: list[str] | None) -> dict[str, Any] | None:
    """``--indep-pairwise`` tokens as an ``[ld_prune]`` table (None when absent)."""
    if tokens is None:
        return None
    words = list(tokens)
    kb = False
    if len(words) > 1 and words[1].lower() == "kb":
        words = [words[0] + "kb", *words[2:]]
    if words and words[0].lower().endswith("kb"):
        kb, words[0] = True, words[0][:-2]
    if len(words) not in (2, 3):
        raise InputError(f"--indep-pairwise takes WINDOW[kb] [STEP] R2, got {' '.join(tokens)!r}")
    try:
        window = float(words[0])
        step = int(words[1]) if len(words) == 3 else 1
        r2 = float(words[-1])
    except ValueError:
        raise InputError(f"--indep-pairwise takes numbers: WINDOW[kb] [STEP] R2, got {' '.join(tokens)!r}") from None
    return {"window": window, "step": step, "r2": r2, "window_kb": kb}


def pca_table(tokens: list[str] | None) -> dict[str, Any] | None:
    """``--pca`` tokens as a ``[pca]`` table (None when absent)."""
    if tokens is None:
        return None
    components, approx = 10, False
    for token in tokens:
        if token == "approx":
            approx = True
        elif token.isdigit():
            components = int(token)
        else:
            raise InputError(f"--pca takes an optional count and 'approx', got {token!r}")
    return {"components": components, "approx": approx}
