"""Writing one benchmark's section of ``benchmarks/RESULTS.md``, between its two markers."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"


def write_section(text: str, begin: str, end: str, results: Path = RESULTS) -> None:
    """Replace what lies between ``begin`` and ``end`` (markers included, and held by ``text``)
    with ``text``, or append ``text`` when the markers are not there yet."""
    old = results.read_text()
    if begin in old:
        old = old[:old.index(begin)] + text + old[old.index(end) + len(end):]
    else:
        old = old.rstrip() + "\n\n" + text + "\n"
    results.write_text(old)
