"""Tiny HTML helpers for a self-contained page: escaping, tables, embedded PNG images, the page.
No external resource and no script: the page renders from the file alone."""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Iterable, Sequence

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #1d1d1f; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .3em .55em; vertical-align: top; text-align: left; }
th { background: #f2f2f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { color: #444; font-size: 13px; } code { background: #f4f4f6; padding: 0 .2em; }
.note { color: #555; font-size: 13px; } nav a { margin-right: .8em; }
"""


class Raw(str):
    """Text that is already HTML (not escaped again)."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def number(value: Any, digits: int = 4) -> str:
    """A number to ``digits`` significant digits; '—' for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}"
    return str(value)


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = (),
          extra_header: str = "") -> Raw:
    """A table; columns whose index is in ``numeric`` are right-aligned. ``extra_header`` is a
    ready-made header row placed above ``header``."""
    head = extra_header + "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
    body = []
    for row in rows:
        cells = "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return Raw(f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>")


def lines(items: Iterable[Any]) -> Raw:
    """Cell content: one escaped item per line."""
    return Raw("<br>".join(esc(i) for i in items))


def image(png: bytes, alt: str) -> Raw:
    data = base64.b64encode(png).decode("ascii")
    return Raw(f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">')


def section(anchor: str, title: str, *parts: Any) -> Raw:
    return Raw(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>' + "".join(esc(p) for p in parts) + "</section>")


def paragraph(text: Any, cls: str = "") -> Raw:
    return Raw(f"<p{f' class={cls}' if cls else ''}>{esc(text)}</p>")


def page(title: str, parts: Iterable[Any], nav: Sequence[tuple[str, str]] = ()) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{esc(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{esc(title)}</h1><nav>{links}</nav>" + "".join(esc(p) for p in parts) + "</body></html>\n")
