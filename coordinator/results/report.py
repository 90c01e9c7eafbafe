"""A short self-contained HTML report of one association test: study facts, sites, plots, top hits.

The page has inline CSS and no scripts or external resources; the Manhattan and QQ PNGs sit beside
it and are referenced by relative file name. Every piece of text from the study (names, phenotype,
covariates, failure reasons, variant identifiers) goes through :func:`html.escape`. Site failure
messages are passed through :func:`redact_endpoints` first, since transport errors tend to quote
addresses; the report never carries sample IDs or hostnames.
"""

from __future__ import annotations

import html
import math
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.results.gwas_ssf import fedgwas_version, gwas_ssf_file_name, meta_path_for, p_value_strings
from coordinator.results.plots import genomic_inflation
from coordinator.summary import RunSummary
from engine.stats.association import AssociationResult

#: Hits listed in the report.
TOP_HITS = 20

_REDACTED = "[redacted]"
_ENDPOINT_PATTERNS = tuple(re.compile(p) for p in (
    r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+",  # URLs
    r"\b(?:ipv4|ipv6|unix|unix-abstract|dns|vsock):\S+",  # gRPC peer strings
    r"\[[0-9A-Fa-f:.%]+\](?::\d+)?",  # [IPv6]:port
    r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b",  # IPv4[:port]
    r"\b[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*:\d{2,5}\b",  # host:port
    r"\b(?:[A-Za-z0-9-]+\.){2,}[A-Za-z]{2,}\b",  # fully qualified names (a.b.tld)
))

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1240px; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { width: 14em; }
.banner { padding: 0.8em 1em; margin: 0.8em 0; border-radius: 4px; font-weight: 600; }
.danger { background: #c00000; color: #fff; font-size: 1.1em; }
.ok { background: #e8f3e8; color: #1d4d1d; }
.no { color: #a00000; font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
footer { margin-top: 2em; color: #777; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class ResultPaths:
    """Files written for one association test of one study (all in the same directory)."""

    tsv: Path  # GWAS-SSF data file, NAME.<test>.tsv.gz
    meta: Path  # its metadata sidecar, NAME.<test>.tsv.gz-meta.yaml
    manhattan: Path  # NAME.<test>.manhattan.png
    qq: Path  # NAME.<test>.qq.png
    report: Path  # NAME.<test>.report.html


def result_paths(out_dir: Path | str, name: str, test: str) -> ResultPaths:
    """Conventional file names for ``name`` and ``test`` under ``out_dir``.

    Raises
    ------
    InputError
        If ``name`` or ``test`` is not a safe file-name component.
    """
    out_dir = Path(out_dir)
    tsv = out_dir / gwas_ssf_file_name(name, test)
    stem = f"{name}.{test}"
    return ResultPaths(tsv=tsv, meta=meta_path_for(tsv), manhattan=out_dir / f"{stem}.manhattan.png",
                       qq=out_dir / f"{stem}.qq.png", report=out_dir / f"{stem}.report.html")


def redact_endpoints(text: str) -> str:
    """``text`` with URLs, IP addresses, ``host:port`` pairs and dotted host names replaced.

    Site failure reasons often come from the transport (``failed to connect to all addresses;
    last error: ipv4:10.1.2.3:50051``); the report keeps the reason but not where the site lives.
    """
    for pattern in _ENDPOINT_PATTERNS:
        text = pattern.sub(_REDACTED, text)
    return text


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _seconds(value: float) -> str:
    if not math.isfinite(value) or value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _src(target: Path, page: Path) -> str:
    """Relative URL of ``target`` as seen from the page, escaped for an attribute."""
    rel = os.path.relpath(target, page.parent).replace(os.sep, "/")
    return _e(urllib.parse.quote(rel))


def _header_row(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{_e(name)}</th>" for name in names) + "</tr>"


def _fmt(value: float, spec: str = ".4g") -> str:
    return format(value, spec) if math.isfinite(value) else "NA"


def top_hits(result: AssociationResult, k: int = TOP_HITS) -> np.ndarray:
    """Row indices of the ``k`` smallest p-values (largest ``neg_log10_p``), NaN skipped, ties in row order."""
    x = np.asarray(result.neg_log10_p, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(x))
    return valid[np.argsort(-x[valid], kind="stable")[:k]]


def _facts_table(result: AssociationResult, summary: RunSummary, lam: float) -> list[str]:
    dropped = sum(summary.variants_dropped.values())
    reasons = "; ".join(f"{reason}: {count:,}" for reason, count in sorted(summary.variants_dropped.items()))
    rows = [
        ("Study", summary.study_id),
        ("Test", result.test),
        ("Phenotype", summary.phenotype),
        ("Covariates", ", ".join(summary.covariates) or "none"),
        ("Privacy", summary.privacy_label),
        ("Samples analysed", f"{summary.n_samples:,}"),
        *([("Cases / controls", f"{summary.case_count:,} / {summary.control_count:,}")]
          if summary.case_count is not None and summary.control_count is not None else []),
        *([("Participants shared by sites", "; ".join(f"{pair}: {n}" for pair, n in summary.participant_overlaps.items()))]
          if summary.participant_overlaps else []),
        *([("Covariates excluded", ", ".join(summary.excluded_covariates) + " (constant over the analysed samples)")]
          if summary.excluded_covariates else []),
        ("Sites contributing", f"{len(summary.contributing_sites)} of {len(summary.sites)}"),
        ("Variants tested", f"{summary.n_variants_tested:,}"),
        ("Variants dropped", f"{dropped:,}" + (f" ({reasons})" if reasons else "")),
        ("Rounds", str(summary.rounds)),
        ("Wall time", _seconds(summary.wall_seconds)),
        ("Genomic inflation λGC", "n/a" if math.isnan(lam) else f"{lam:.3f}"),
        ("Software", f"fedgwas {fedgwas_version(summary)}"),
    ]
    out = ['<table class="facts">']
    out += [f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in rows]
    out.append("</table>")
    return out


def _sites_table(summary: RunSummary) -> list[str]:
    out = ["<table>", _header_row("Site", "N analysed", "Variants", "Contributed", "Reason")]
    for site in summary.sites:
        contributed = "yes" if site.contributed else '<span class="no">no</span>'
        reason = "" if site.contributed else redact_endpoints(site.failure)
        out.append(f'<tr><td>{_e(site.name)}</td><td class="num">{site.n_samples:,}</td>'
                   f'<td class="num">{site.n_variants:,}</td><td>{contributed}</td><td>{_e(reason)}</td></tr>')
    out.append("</table>")
    return out


def _hits_table(result: AssociationResult) -> list[str]:
    rows = top_hits(result)
    if rows.size == 0:
        return ["<p>No variant has a p-value.</p>"]
    v = result.variants
    p_text = p_value_strings(np.asarray(result.neg_log10_p)[rows])
    out = ["<table>", _header_row("#", "Variant", "Chr", "Position", "Effect allele", "Other allele",
                                  "Beta", "SE", "p", "N")]
    for rank, (i, p) in enumerate(zip(rows.tolist(), p_text), start=1):
        out.append(
            f'<tr><td class="num">{rank}</td><td>{_e(v.variant_id[i])}</td><td>{_e(v.chrom[i])}</td>'
            f'<td class="num">{int(v.pos[i])}</td><td>{_e(v.effect_allele[i])}</td>'
            f'<td>{_e(v.other_allele[i])}</td><td class="num">{_e(_fmt(float(result.beta[i])))}</td>'
            f'<td class="num">{_e(_fmt(float(result.se[i])))}</td><td class="num">{_e(p)}</td>'
            f'<td class="num">{int(result.n[i])}</td></tr>')
    out.append("</table>")
    return out


def report_html(result: AssociationResult, summary: RunSummary, paths: ResultPaths, out_path: Path) -> str:
    """The report page as a string (see :func:`write_report`)."""
    lam = genomic_inflation(result.neg_log10_p)
    title = f"fedgwas results: {summary.study_id} ({result.test})"
    body = [f"<h1>{_e(title)}</h1>"]
    if summary.is_plaintext:
        body.append('<div class="banner danger">' + _e(summary.privacy_label)
                    + ". These results were computed without secure aggregation; do not share them "
                      "as privacy-preserving.</div>")
    else:
        body.append(f'<div class="banner ok">Privacy: {_e(summary.privacy_label)}</div>')
    body += ["<h2>Study</h2>", *_facts_table(result, summary, lam)]
    body += ["<h2>Sites</h2>", *_sites_table(summary)]
    if summary.notes:
        body += ["<h2>Notes</h2>", "<ul>", *[f"<li>{_e(note)}</li>" for note in summary.notes], "</ul>"]
    body += [
        "<h2>Manhattan plot</h2>",
        f'<p><img src="{_src(paths.manhattan, out_path)}" alt="Manhattan plot"></p>',
        "<h2>QQ plot</h2>",
        f'<p><img src="{_src(paths.qq, out_path)}" alt="QQ plot" style="max-width: 560px"></p>',
        f"<h2>Top {TOP_HITS} hits</h2>",
        *_hits_table(result),
        "<h2>Files</h2>",
        "<ul>",
        f'<li><a href="{_src(paths.tsv, out_path)}">{_e(paths.tsv.name)}</a> (GWAS-SSF summary statistics)</li>',
        f'<li><a href="{_src(paths.meta, out_path)}">{_e(paths.meta.name)}</a> (metadata)</li>',
        "</ul>",
        f"<footer>Written by fedgwas {_e(fedgwas_version(summary))}.</footer>",
    ]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def write_report(result: AssociationResult, summary: RunSummary, paths: ResultPaths,
                 out_path: Path | str) -> Path:
    """Write the HTML report for ``result`` to ``out_path``.

    Parameters
    ----------
    result
        Association statistics, shape ``(n_variants,)``; gives lambda_GC and the top hits.
    summary
        Study facts: identifiers, privacy mode (a red banner when plaintext), sites, dropped variants.
    paths
        Where the data file, metadata and plots were written; linked by paths relative to the report.
    out_path
        The HTML file to write.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    out_path = Path(out_path)
    out_path.write_text(report_html(result, summary, paths, out_path), encoding="utf-8")
    return out_path
