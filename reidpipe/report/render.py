"""Markdown and self-contained HTML (figures as base64 data URIs, inline CSS) from the blocks."""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path

from reidpipe.report.document import (
    Block,
    Bullets,
    Cell,
    Heading,
    Metric,
    Paragraph,
    Table,
)

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1300px;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.8em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f5f8}td.t,th.t{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.up{color:#1a7f37}.down{color:#c62828}.same{color:#666}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:13px}
code{background:#f3f3f3;padding:0 3px}
"""
_TEXT_CLASS = ' class="t"'


def _cell_text(cell: Cell) -> str:
    if isinstance(cell, Metric):
        return cell.text()
    if isinstance(cell, float):
        return f"{cell:.4g}"
    return str(cell)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):

            def row(cells: Sequence[Cell]) -> str:
                return "| " + " | ".join(_cell_text(c).replace("|", "\\|") for c in cells) + " |"

            lines += [row(block.headers), "|" + "---|" * len(block.headers)]
            lines += [row(r) for r in block.rows] + [""]
        else:
            lines += [f"![{block.caption}]({block.file})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


def _cell_html(cell: Cell) -> str:
    if isinstance(cell, Metric) and cell.delta is not None and not math.isnan(cell.value):
        points = round(100 * cell.delta, 1)
        css = "up" if points > 0 else "down" if points < 0 else "same"
        return f'{100 * cell.value:.1f} <span class="{css}">({100 * cell.delta:+.1f})</span>'
    return html.escape(_cell_text(cell))


def _is_numeric(cell: Cell) -> bool:
    """Numbers are right-aligned (the CSS default), text left-aligned."""
    if isinstance(cell, (Metric, int, float)):
        return True
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def render_html(title: str, blocks: Sequence[Block], figures_dir: Path) -> str:
    """One self-contained page: figures from ``figures_dir`` embedded as data URIs."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline_code(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append(
                "<ul>" + "".join(f"<li>{_inline_code(i)}</li>" for i in block.items) + "</ul>"
            )
        elif isinstance(block, Table):
            first = block.rows[0] if block.rows else [""] * len(block.headers)
            head = "".join(
                f"<th{'' if _is_numeric(c) else _TEXT_CLASS}>{html.escape(h)}</th>"
                for h, c in zip(block.headers, first)
            )
            body = "".join(
                "<tr>"
                + "".join(
                    f"<td{'' if _is_numeric(c) else _TEXT_CLASS}>{_cell_html(c)}</td>" for c in row
                )
                + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode((figures_dir / block.file).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(block.caption)}"><figcaption>'
                f"{html.escape(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# A markdown link, [text](target), in escaped text
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline_code(text: str) -> str:
    """Escape ``text``; markdown `code` spans become <code>, [text](target) links <a>."""
    pieces = html.escape(text).split("`")
    return "".join(
        f"<code>{p}</code>" if i % 2 else _LINK.sub(r'<a href="\2">\1</a>', p)
        for i, p in enumerate(pieces)
    )
