"""Writing one benchmark's section of ``benchmarks/RESULTS.md``, between its two markers."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"


def write_section(text: str, begin: str, end: str, results: Path = RESULTS) -> None:
    """Replace what lies between ``begin`` and ``end`` (markers included, and held by ``text``)
    with ``text``, or append ``text`` when the markers are not there yet. Every benchmark that
    writes a marked section of RESULTS.md writes it here."""
    old = results.read_text() if results.exists() else "# Benchmark results\n"
    if begin in old and end in old:
        old = old[:old.index(begin)] + text + old[old.index(end) + len(end):]
    else:
        old = old.rstrip() + "\n\n" + text + "\n"
    results.write_text(old)


def add_output_options(ap: argparse.ArgumentParser) -> None:
    """``--work``, ``--json`` and ``--no-write``, as every yield benchmark takes them."""
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the stores and logs here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--no-write", action="store_true", help="leave RESULTS.md as it is")


def work_dir(args: argparse.Namespace, prefix: str) -> Path:
    work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def publish(args: argparse.Namespace, rows: list[Any], text: str, begin: str, end: str,
            work: Path) -> None:
    """Print ``text``; write the rows (``--json``) and the section (unless ``--no-write``); remove
    a temporary work directory."""
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(text)
    if not args.no_write:
        write_section(text, begin, end)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
