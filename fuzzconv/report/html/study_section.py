"""The study in the HTML report: the blocks ``study.md`` is made from, rendered as HTML.

:func:`fuzzconv.study.report.study_report` builds the report from ``study.json`` as structured
blocks (:mod:`fuzzconv.study.document`); this renders them, with the study's PNG plots inlined, so
nothing is parsed back out of Markdown.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ...study.document import Block, Bullets, Heading, Image, Paragraph, Table, Text
from ...study.plots import PLOTS
from ...study.report import study_report
from .page import esc

_TAGS = {"": "{}", "code": "<code>{}</code>", "strong": "<strong>{}</strong>", "em": "<em>{}</em>"}


def study_section(directory: Path) -> str:
    """The section of a ``fuzzconv study`` output directory."""
    study: dict[str, Any] = json.loads((directory / "study.json").read_text())
    head = (f"<h2 id=\"study\">Sensitivity study</h2><p class=\"muted\">From "
            f"<code>{esc(directory)}</code>: models "
            f"{esc(', '.join(study.get('settings', {}).get('models', [])))}, "
            f"{len(study.get('cells', []))} measurements.</p>")
    return head + "<div class=\"study\">" + render(study_report(study, PLOTS), directory) + "</div>"


def inline(t: Text) -> str:
    return "".join(_TAGS[s.style].format(esc(s.text)) for s in t)


def render(blocks: list[Block], directory: Path) -> str:
    """Blocks as HTML; images are inlined from ``directory`` (only PNG or JPEG files inside it).
    Headings move down two levels, below the report's own."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            level = min(b.level + 2, 6)
            out.append(f"<h{level}>{inline(b.text)}</h{level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(h)}</th>" for h in b.header)
                       + "</tr></thead><tbody>" + "".join(
                           "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>"
                           for r in b.rows) + "</tbody></table>")
        elif isinstance(b, Image):
            out.append(_image(b.alt, b.file, directory))
    return "\n".join(out)


def _image(alt: str, src: str, directory: Path) -> str:
    path = (directory / src).resolve()
    if not path.is_relative_to(directory.resolve()) or not path.is_file() or \
            path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        return f"<p class=\"muted\">[{esc(alt)}: {esc(src)} not found]</p>"
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt=\"{esc(alt)}\" src=\"data:{mime};base64,{data}\">"
