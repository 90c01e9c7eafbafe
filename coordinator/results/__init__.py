"""Result writers: GWAS-SSF summary statistics with metadata, Manhattan/QQ plots and an HTML report.

:func:`write_results` writes all of them for one association test; the modules below can also be
used one at a time (:mod:`.gwas_ssf`, :mod:`.plots`, :mod:`.report`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.results.gwas_ssf import is_sorted, read_gwas_ssf, take_rows, testable, write_gwas_ssf
from coordinator.results.gwas_ssf_meta import write_gwas_ssf_meta
from coordinator.results.plots import genomic_inflation, manhattan_plot, qq_plot
from coordinator.results.report import ResultPaths, result_paths, write_report
from coordinator.summary import RunSummary
from engine.stats.association import AssociationResult
from engine.errors import InputError

__all__ = [
    "ResultPaths",
    "genomic_inflation",
    "manhattan_plot",
    "qq_plot",
    "read_gwas_ssf",
    "result_paths",
    "write_gwas_ssf",
    "write_gwas_ssf_meta",
    "write_report",
    "write_results",
]


def write_results(result: AssociationResult, summary: RunSummary, out_dir: Path | str, name: str) -> ResultPaths:
    """Write every result file for one association test into ``out_dir``.

    Writes ``NAME.<test>.tsv.gz`` (GWAS-SSF), its ``-meta.yaml`` sidecar, the untestable variants'
    ``NAME.<test>.untested.tsv``, ``NAME.<test>.manhattan.png``,
    ``NAME.<test>.qq.png`` and ``NAME.<test>.report.html``. Plaintext runs are labelled as such in
    the metadata, on both plots and in the report.

    Parameters
    ----------
    result
        Association statistics in harmonised variant order, shape ``(n_variants,)``.
    summary
        Study facts; ``summary.test`` must match ``result.test``.
    out_dir
        Output directory, created if missing.
    name
        File-name stem (letters, digits, ``._+-``; no path separators).

    Returns
    -------
    ResultPaths
        The paths written.

    Raises
    ------
    InputError
        If ``name`` or the test is not a safe file name, the tests of ``result`` and ``summary``
        differ, or a variant field cannot be written to a TSV.
    """
    if result.test != summary.test:
        raise InputError(f"result is for test {result.test!r} but the summary is for {summary.test!r}")
    paths = result_paths(out_dir, name, result.test)
    paths.tsv.parent.mkdir(parents=True, exist_ok=True)
    write_gwas_ssf(result, paths.tsv)
    tested = testable(result)
    write_gwas_ssf_meta(paths.tsv, summary, sorted_rows=is_sorted(take_rows(result, np.flatnonzero(tested))),
                        n_untested=int((~tested).sum()))
    title = f"{summary.study_id}: {summary.phenotype} ({result.test})"
    manhattan_plot(result, paths.manhattan, title, plaintext=summary.is_plaintext)
    qq_plot(result, paths.qq, title, plaintext=summary.is_plaintext)
    write_report(result, summary, paths, paths.report)
    return paths
