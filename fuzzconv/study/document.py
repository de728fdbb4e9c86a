"""A small document model: the study's report as data, rendered as Markdown here and as HTML by
the HTML report, so neither renderer has to parse the other's output.

A document is a list of blocks (:class:`Heading`, :class:`Paragraph`, :class:`Bullets`,
:class:`Table`, :class:`Image`); their text is :data:`Text`, a tuple of :class:`Span` — plain,
``code``, ``strong`` or ``em``. :func:`text` builds one from strings and spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Span:
    """A run of text in one style: ``""`` (plain), ``"code"``, ``"strong"`` or ``"em"``."""

    text: str
    style: str = ""


Text = tuple[Span, ...]


def text(*parts: str | Span) -> Text:
    """Inline text from plain strings and styled spans."""
    return tuple(p if isinstance(p, Span) else Span(p) for p in parts if p != "")


def code(s: str) -> Span:
    return Span(s, "code")


def strong(s: str) -> Span:
    return Span(s, "strong")


def em(s: str) -> Span:
    return Span(s, "em")


def plain(t: Text) -> str:
    """The words of a text, without its styles."""
    return "".join(s.text for s in t)


@dataclass(frozen=True)
class Heading:
    level: int
    text: Text


@dataclass(frozen=True)
class Paragraph:
    text: Text


@dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[Text, ...]
    rows: tuple[tuple[Text, ...], ...]


@dataclass(frozen=True)
class Image:
    """A picture from a file beside the document."""

    alt: str
    file: str


Block = Union[Heading, Paragraph, Bullets, Table, Image]


def table(header: list[str | Text], rows: list[list[str | Text]]) -> Table:
    """A table from plain strings and texts."""
    def cell(c: str | Text) -> Text:
        return text(c) if isinstance(c, str) else c

    return Table(tuple(cell(h) for h in header), tuple(tuple(cell(c) for c in r) for r in rows))

_MARKS = {"": "{}", "code": "`{}`", "strong": "**{}**", "em": "*{}*"}


def inline_markdown(t: Text) -> str:
    return "".join(_MARKS[s.style].format(s.text) for s in t)


def to_markdown(blocks: list[Block]) -> str:
    """The document as Markdown: blocks separated by blank lines, tables as pipe tables."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + inline_markdown(b.text))
        elif isinstance(b, Paragraph):
            out.append(inline_markdown(b.text))
        elif isinstance(b, Bullets):
            out.append("\n".join("- " + inline_markdown(i) for i in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(inline_markdown(h) for h in b.header) + " |",
                     "|" + "|".join("---" for _ in b.header) + "|"]
            lines += ["| " + " | ".join(inline_markdown(c) for c in r) + " |" for r in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.file})")
    return "\n\n".join(out) + "\n"
