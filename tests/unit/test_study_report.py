"""The study's report is built as blocks from ``study.json`` alone: the committed reference study
renders to exactly its committed ``study.md``, and the same blocks render as HTML."""

from __future__ import annotations

import json
from pathlib import Path

from fuzzconv.study.document import (Bullets, Heading, Image, Paragraph, Table, code, em, plain,
                                     strong, text, to_markdown)
from fuzzconv.study.plots import PLOTS
from fuzzconv.study.report import render_markdown, study_report

REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "study"


def test_the_reference_study_renders_to_its_markdown() -> None:
    study = json.loads((REFERENCE / "study.json").read_text())
    assert render_markdown(study, PLOTS) == (REFERENCE / "study.md").read_text()


def test_the_report_says_what_the_study_holds() -> None:
    study = json.loads((REFERENCE / "study.json").read_text())
    blocks = study_report(study, PLOTS)
    headings = [plain(b.text) for b in blocks if isinstance(b, Heading)]
    assert headings[0].startswith("Sensitivity study") and "Beside the paper" in headings
    claims = [b for b in blocks if isinstance(b, Table) and plain(b.header[0]) == "claim"][0]
    assert [plain(r[0]) for r in claims.rows] == [c["claim"] for c in study["paper"]]
    assert {b.file for b in blocks if isinstance(b, Image)} == set(PLOTS.values())


def test_markdown_of_each_block() -> None:
    md = to_markdown([Heading(2, text("Title")),
                      Paragraph(text("a ", code("b"), " ", strong("c"), " ", em("d"))),
                      Bullets((text("x"), text("y"))),
                      Table((text("h"),), ((text("1"),),)), Image("alt", "f.png")])
    assert md == ("## Title\n\na `b` **c** *d*\n\n- x\n- y\n\n| h |\n|---|\n| 1 |\n\n"
                  "![alt](f.png)\n")
