"""Self-contained HTML pages for the auditor's reports: tables, notes and the chart embedded as a
base64 PNG, no external file, script or style sheet (an auditor can archive or e-mail one file)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
          "td,th{border:1px solid #bbb;padding:.2em .6em;text-align:left}th{background:#eee}"
          ".fail{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}img{max-width:100%}")


@dataclass
class Section:
    """A heading, status lines (``(text, ok)``; ``ok`` None for neutral) and tables (header + rows)."""

    heading: str
    lines: list[tuple[str, bool | None]] = field(default_factory=list)
    tables: list[tuple[Sequence[str], Sequence[Sequence[Any]]]] = field(default_factory=list)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def render(title: str, sections: Sequence[Section], png: Path | None = None) -> str:
    """The page's HTML text; ``png`` (if given) is embedded after the title."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if png is not None:
        data = base64.b64encode(Path(png).read_bytes()).decode()
        parts.append(f"<img alt='privacy budget spent over time' src='data:image/png;base64,{data}'>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        for text, ok in section.lines:
            css = "" if ok is None else f" class='{'ok' if ok else 'fail'}'"
            parts.append(f"<p{css}>{html.escape(text)}</p>")
        for header, rows in section.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
