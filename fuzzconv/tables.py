"""How every table fuzzconv prints fits the terminal: names stay whole, lesser columns fold or go.

One policy for all commands (``models``, ``steps``, ``run``, ``hunt``, ``reports``, ``show``,
``campaigns``), so a table is declared as its columns (:class:`Col`) and rows and printed with
:func:`print_table`:

- **Breaks only at separators.** A cell breaks after a space; a ``text`` cell also after
  ``,`` ``;`` ``(`` ``=`` and ``/``. Model names, step names, finding and campaign IDs hold none of
  these, so they never break; a list of them (``F-1a2b, F-3c4d``) breaks between its items.
  Nothing breaks inside a word unless the terminal is narrower than the word.
- **Widths.** A column is at least as wide as its longest unbreakable piece and at most as wide as
  its longest line. The room left above the minimums goes first to the columns that need least of
  it to show their lines whole, so short columns stay on one line and long ones fold; the rows'
  lines come before the headers' (a folded header costs one line, a folded cell one a row).
  rich's own layout shrinks the widest columns below their longest word, which is how names were
  cut (``torch:mobile…``); here rich gets fixed widths and only draws.
- **Dropping.** When the minimums do not fit, columns give way in ``drop`` order, highest first,
  and a line under the table names them. ``drop=0`` columns (the names and IDs) always stay.
- **Wide.** ``--wide`` shows every column at full width, one line a row however long (for a
  pager, a file or grep).
- **Never cut.** When the columns that stay do not fit either, the table is drawn wider than the
  terminal (which wraps the lines) rather than cut a name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Union

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Cell = Union[str, Text]

#: Where a cell may break, by column kind: each match is one unbreakable piece and the
#: separators and spaces that follow it.
PIECES = {
    "name": re.compile(r"\S*\s*"),
    "text": re.compile(r"\(?[^\s,;(=/]*[,;(=/]*\s*"),  # "(" opening a word stays with it
}
#: Cells of a column take 2 of padding, and each column one rule, plus one at the right edge.
_PER_COLUMN, _EDGE = 3, 1


@dataclass(frozen=True)
class Col:
    """A table column.

    Args:
        header: the column's title; it breaks only at spaces.
        kind: ``name`` for names, IDs and lists of them (breaks only at spaces) or ``text``
            (also breaks after ``,;(=/``). Defaults to ``text``.
        drop: when the terminal is too narrow for every column, columns with a higher rank give
            way first; 0 never does. Defaults to 0.
    """

    header: str
    kind: str = "text"
    drop: int = 0


class Rows(list):
    """Rows collected one call at a time, as with :meth:`rich.table.Table.add_row`."""

    def add_row(self, *cells: Cell) -> None:
        self.append(list(cells))


class Folded:
    """A cell that wraps only between its pieces (see :data:`PIECES`)."""

    def __init__(self, text: Cell, kind: str = "text"):
        text = text if isinstance(text, Text) else Text(str(text))
        pattern = PIECES[kind]
        self.lines = [(line, [(m.start(), m.end()) for m in pattern.finditer(line.plain)
                              if m.end() > m.start()])
                      for line in text.split("\n")]

    def widths(self) -> tuple[int, int]:
        """(the widest unbreakable piece, the widest line), in terminal cells."""
        lo = max((cell_len(line.plain[a:b].rstrip()) for line, pieces in self.lines
                  for a, b in pieces), default=0)
        hi = max((cell_len(line.plain.rstrip()) for line, _ in self.lines), default=0)
        return lo, hi

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(*self.widths()).with_maximum(options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wrap(options.max_width)

    def wrap(self, width: int) -> Text:
        """The text with a line break wherever the next piece would pass ``width``."""
        out = []
        for line, pieces in self.lines:
            cuts, used = [], 0
            for a, b in pieces:
                if used and used + cell_len(line.plain[a:b].rstrip()) > width:
                    cuts.append(a)
                    used = 0
                used += cell_len(line.plain[a:b])
            for part in line.divide(cuts):
                part.rstrip()
                out.append(part)
        # A piece wider than the cell (only when the terminal is narrower than a word) folds.
        return Text("\n", overflow="fold").join(out)


def share(mins: Sequence[int], maxs: Sequence[int], room: int) -> list[int]:
    """Column widths from their (min, max): each gets its min, then the spare room goes to the
    columns that need least of it first, so as many as possible show whole lines."""
    widths = list(mins)
    spare = room - sum(mins)
    for i in sorted(range(len(mins)), key=lambda i: maxs[i] - mins[i]):
        give = max(0, min(maxs[i] - mins[i], spare))
        widths[i] += give
        spare -= give
    return widths


def _table_width(widths: Iterable[int]) -> int:
    widths = list(widths)
    return sum(widths) + _PER_COLUMN * len(widths) + _EDGE


def layout(cols: Sequence[Col], rows: Sequence[Sequence[Cell]], width: int, *,
           wide: bool = False, show_header: bool = True
           ) -> tuple[list[int], list[int], list[list[Folded]], list[Folded]]:
    """Which columns a ``width``-cell terminal shows, and how wide.

    Returns:
        (indices of the columns shown, their widths, every row's cells, the headers).
    """
    heads = [Folded(c.header, "name") for c in cols]
    cells = [[Folded(v, c.kind) for v, c in zip(row, cols)] for row in rows]
    mins, body, maxs = [], [], []
    for i, head in enumerate(heads):
        ranges = [r[i].widths() for r in cells] + ([head.widths()] if show_header else [])
        mins.append(max((lo for lo, _ in ranges), default=1) or 1)
        body.append(max([mins[-1]] + [r[i].widths()[1] for r in cells]))
        maxs.append(max((hi for _, hi in ranges), default=1) or 1)
    keep = list(range(len(cols)))
    if wide:
        return keep, maxs, cells, heads
    while _table_width(mins[i] for i in keep) > width and any(cols[i].drop for i in keep):
        keep.remove(max(reversed(keep), key=lambda i: cols[i].drop))
    room = max(width, _table_width(mins[i] for i in keep)) - _table_width(0 for _ in keep)
    # whole lines in the rows first (a folded cell costs a line a row), then whole headers
    widths = share([mins[i] for i in keep], [body[i] for i in keep], room)
    return keep, share(widths, [maxs[i] for i in keep], room), cells, heads


def print_table(console: Console, cols: Sequence[Col], rows: Sequence[Sequence[Cell]], *,
                title: Cell | None = None, wide: bool = False, show_header: bool = True) -> None:
    """Print a table that fits ``console`` by the policy above.

    Args:
        console: where to print; its width is the terminal's.
        cols: the columns.
        rows: one sequence of cells per row, in the order of ``cols``; a ``str`` is plain text
            (never markup), a :class:`rich.text.Text` keeps its styles.
        title: printed above the table. Defaults to none.
        wide: every column at full width, one line a row, however wide the table gets.
            Defaults to False.
        show_header: print the column headers. Defaults to True.
    """
    width = console.width
    keep, widths, cells, heads = layout(cols, rows, width, wide=wide,
                                        show_header=show_header)
    need = _table_width(widths)
    # rich would break a title only at spaces and fold a longer word (a pipeline's label is one)
    head = None if title is None else Folded(title).wrap(need)
    if head is not None:
        head.overflow = None  # printed as the console prints any line
    table = Table(title=head, show_header=show_header)
    for i, w in zip(keep, widths):
        table.add_column(heads[i], width=w)
    for row in cells:
        table.add_row(*[row[i] for i in keep])
    if need > width:  # only to keep names whole, or asked for with --wide
        console = Console(width=need, file=console.file, highlight=False, soft_wrap=True,
                          force_terminal=console.is_terminal,
                          color_system=console.color_system or None)  # type: ignore[arg-type]
    console.print(table)
    gone = [cols[i].header for i in range(len(cols)) if i not in keep]
    if gone:
        console.print(Text(f"hidden at {width} columns: {', '.join(gone)} (--wide shows them)"),
                      style="dim")


# -- steps and pipelines as every listing writes them ---------------------------------------------
def op_text(c: dict[str, Any] | None) -> str:
    """A step or runtime with its parameters as JSON values: ``step(k=v,...)``, "—" for none."""
    if not c:
        return "—"
    params = ",".join(f"{k}={json.dumps(v)}" for k, v in c["params"].items())
    return f"{c['step']}({params})" if params else c["step"]


def pipeline_text(p: dict[str, Any] | None) -> str:
    """A pipeline's JSON as one line: ``step → step ⇒ runtime``, each with its parameters."""
    if not p:
        return "—"
    steps = " → ".join(op_text({"step": s["step"], "params": s.get("params", {})})
                       for s in p["steps"]) or "(source)"
    rt = p["runtime"]
    return f"{steps} ⇒ {op_text({'step': rt['name'], 'params': rt.get('params', {})})}"

