"""The page around the report's sections: one self-contained HTML document (inline CSS and a
table-sorting script, nothing fetched), and the escaping every section uses."""

from __future__ import annotations

import html
import time
from typing import Any

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 16px 24px; color: #1d2329; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 4px; } h2 { font-size: 19px; margin-top: 32px;
  border-bottom: 1px solid #d6dbe0; padding-bottom: 4px; } h3 { font-size: 16px; margin-top: 24px; }
.muted { color: #66717c; } code { background: #f2f4f6; padding: 0 3px; border-radius: 3px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #d6dbe0;
  padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f6; } table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.kv td:first-child { color: #66717c; white-space: nowrap; }
.sym { padding: 1px 6px; border-radius: 8px; color: #fff; font-size: 12px; }
.sym-label_flip { background: #c0392b; } .sym-numeric { background: #d68910; }
.sym-crash { background: #6c3483; } .sym-timeout { background: #34495e; }
.sym-nan { background: #a04000; } .sym-slowdown { background: #1f618d; }
.finding { border: 1px solid #d6dbe0; border-radius: 6px; padding: 4px 16px 12px;
  margin: 16px 0; }
.images { display: flex; flex-wrap: wrap; gap: 16px; }
.image { border: 1px solid #e3e7eb; border-radius: 4px; padding: 8px; }
.image img { display: block; image-rendering: auto; margin-bottom: 4px; }
.image table { font-size: 12px; } .changed { background: #fdecea; }
svg.chart { display: block; margin: 8px 0; } svg.chart text { font: 12px system-ui, sans-serif; }
.study img { max-width: 100%; }
.study table { display: block; overflow-x: auto; max-width: 100%; }
"""

_JS = """
function fuzzconvKey(cell) {
  var v = cell.getAttribute("data-sort");
  if (v === null) { v = cell.textContent.trim(); }
  var n = Number(v);
  return (v !== "" && !isNaN(n)) ? [0, n] : [1, v.toLowerCase()];
}
function fuzzconvSort(table, col) {
  var th = table.tHead.rows[0].cells[col];
  var asc = th.getAttribute("aria-sort") !== "ascending";
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
    h.removeAttribute("aria-sort");
  });
  th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = fuzzconvKey(a.cells[col]), y = fuzzconvKey(b.cells[col]);
    var c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
    return asc ? c : -c;
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    th.addEventListener("click", function () { fuzzconvSort(table, col); });
  });
});
"""


def esc(x: Any) -> str:
    """``x`` as HTML text (attribute-safe)."""
    return html.escape(str(x), quote=True)


def when(t: float | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM`` (local), or a dash."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "—"


def percent(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def page(parts: list[str]) -> str:
    """The whole document around its sections."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>fuzzconv report</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + f"\n<script>{_JS}</script>\n</body></html>\n")
