"""A self-contained HTML page: inline CSS, PNGs embedded as data URIs, escaped tables (pure)."""

from __future__ import annotations

import base64
import html
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2433;
       max-width: 1180px; margin: 24px auto; padding: 0 16px; background: #fff; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 34px;
     border-bottom: 2px solid #e3e7ee; padding-bottom: 4px; }
.sub { color: #5c677d; margin-top: 0; }
table { border-collapse: collapse; margin: 10px 0; font-size: 12.5px; }
th, td { border: 1px solid #d5dbe5; padding: 3px 7px; text-align: left; }
th { background: #f1f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #e3e7ee; margin: 8px 0; }
.note { color: #5c677d; font-size: 13px; } .kv td:first-child { font-weight: 600; }
ul.files { columns: 3; font-size: 13px; }
"""


@dataclass(frozen=True)
class Section:
    """One titled part of the page; ``body`` is HTML."""

    title: str
    body: str
    anchor: str = ""


def image(path: Path, alt: str) -> str:
    """An ``<img>`` with the PNG embedded; ``data-file`` names the file beside the page."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<img alt="{html.escape(alt)}" data-file="{html.escape(path.name)}" '
        f'src="data:image/png;base64,{data}">'
    )


def notes(lines: list[str]) -> str:
    """Explanatory notes under a figure or table."""
    return "".join(f'<p class="note">{html.escape(line)}</p>' for line in lines)


def _cell(value: Any, digits: int) -> tuple[str, bool]:
    if pd.isna(value):
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, numbers.Integral):
        return str(value), True
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}f}", True
    return html.escape(str(value)), False


def table(frame: pd.DataFrame, headers: dict[str, str] | None = None, digits: int = 4) -> str:
    """An HTML table of ``frame``; missing values empty, floats to ``digits`` decimals."""
    headers = headers or {}
    head = "".join(f"<th>{html.escape(headers.get(c, str(c)))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            text, numeric = _cell(value, digits)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def key_values(pairs: list[tuple[str, str]]) -> str:
    """A two-column table of labels and (already formatted) values."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def file_list(names: list[str]) -> str:
    """Links to the files written beside the page."""
    items = "".join(f'<li><a href="{html.escape(n)}">{html.escape(n)}</a></li>' for n in names)
    return f'<ul class="files">{items}</ul>'


def render(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page, with a table of contents."""
    toc = " · ".join(
        f'<a href="#{s.anchor or i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections)
    )
    body = "".join(
        f'<h2 id="{s.anchor or i}">{html.escape(s.title)}</h2>{s.body}'
        for i, s in enumerate(sections)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>'
        f"<p>{toc}</p>{body}</body></html>\n"
    )
