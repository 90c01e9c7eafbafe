"""One HTML report for a study of several phenotypes: the study facts once, then a panel per phenotype.

Each panel shows the phenotype's λGC, the number of variants below 5e-8, its Manhattan and QQ plots
and its top hits, and links its GWAS-SSF file and its own report (written by
:func:`coordinator.results.write_results`). Like the single-phenotype report it is self-contained,
escapes every text from the study and carries no sample IDs or hostnames.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from coordinator.results.gwas_ssf import fedgwas_version
from coordinator.results.plots import genomic_inflation
from coordinator.results.report import _CSS, ResultPaths, _e, _hits_table, _sites_table, _src
from coordinator.summary import RunSummary
from engine.stats.association import AssociationResult

#: Genome-wide significance for the count shown per panel.
GENOME_WIDE = -math.log10(5e-8)


def _panel(name: str, result: AssociationResult, paths: ResultPaths, page: Path) -> list[str]:
    lam = genomic_inflation(result.neg_log10_p)
    x = np.asarray(result.neg_log10_p, dtype=np.float64)
    significant = int(np.count_nonzero(x[~np.isnan(x)] >= GENOME_WIDE))
    n = np.asarray(result.n)
    return [
        f'<section id="{_e(name)}">', f"<h2>{_e(name)}</h2>",
        '<table class="facts">',
        f"<tr><th>N per variant</th><td>{int(n.min()) if n.size else 0:,} to {int(n.max()) if n.size else 0:,}</td></tr>",
        f"<tr><th>Genomic inflation λGC</th><td>{'n/a' if math.isnan(lam) else f'{lam:.3f}'}</td></tr>",
        f"<tr><th>Variants with p &lt; 5e-8</th><td>{significant:,}</td></tr>",
        "</table>",
        f'<p><img src="{_src(paths.manhattan, page)}" alt="Manhattan plot of {_e(name)}" style="max-width: 66%">'
        f'<img src="{_src(paths.qq, page)}" alt="QQ plot of {_e(name)}" style="max-width: 32%"></p>',
        *_hits_table(result),
        f'<p><a href="{_src(paths.tsv, page)}">{_e(paths.tsv.name)}</a> · '
        f'<a href="{_src(paths.report, page)}">{_e(paths.report.name)}</a></p>',
        "</section>",
    ]


def write_phenotype_report(results: Mapping[str, AssociationResult], paths: Mapping[str, ResultPaths],
                           summary: RunSummary, out_path: Path) -> Path:
    """Write the combined report of ``results`` (phenotype -> result, in study order) to ``out_path``."""
    test = next(iter(results.values())).test
    title = f"fedgwas results: {summary.study_id} ({test}, {len(results)} phenotypes)"
    banner = ('<div class="banner danger">' + _e(summary.privacy_label) + "</div>") if summary.is_plaintext \
        else f'<div class="banner ok">Privacy: {_e(summary.privacy_label)}</div>'
    body = [f"<h1>{_e(title)}</h1>", banner,
            "<p>Phenotypes: " + ", ".join(f'<a href="#{_e(name)}">{_e(name)}</a>' for name in results) + "</p>",
            f"<p>Covariates: {_e(', '.join(summary.covariates) or 'none')}; variants tested: "
            f"{summary.n_variants_tested:,}; rounds: {summary.rounds}.</p>",
            "<h2>Sites</h2>", *_sites_table(summary)]
    if summary.notes:
        body += ["<h2>Notes</h2>", "<ul>", *[f"<li>{_e(note)}</li>" for note in summary.notes], "</ul>"]
    for name, result in results.items():
        body += _panel(name, result, paths[name], out_path)
    body.append(f"<footer>Written by fedgwas {_e(fedgwas_version(summary))}.</footer>")
    page = ["<!DOCTYPE html>", '<html lang="en">', '<head><meta charset="utf-8">', f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>", "</head>", "<body>", *body, "</body>", "</html>", ""]
    out_path.write_text("\n".join(page), encoding="utf-8")
    return out_path
