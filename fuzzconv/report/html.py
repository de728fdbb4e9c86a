"""The offline HTML report: ``fuzzconv report --html FILE [--campaign C] [--study DIR]``.

One static page that opens anywhere without a network: CSS and the table-sorting script are
inline, charts are inline SVG generated here, images are base64 PNGs. It shows, per campaign,

- a summary (model, seed, status — ``interrupted`` once its process is gone —, duration,
  evaluations by phase and symptom, cache use, versions);
- the findings table, sortable by clicking a column header;
- per finding: the pipeline and culprit, its failing images (thumbnails) with the reference's and
  the minimal pipeline's top-5, and the per-node error along the path when the finding has
  ``node_errors``;
- the mean flip rate of the evaluations that contain each step, and each step parameter value;
- where the time went: convert, compile, load and infer seconds of the slowest evaluations.

Top-5 are recomputed, not stored: the reference and the minimal pipeline are evaluated on the
campaign's corpus through the executor, which is exactly what the hunt and the shrinker evaluated,
so the cache answers and no framework runs (unless the cache was cleared). A pipeline with a
plugin step needs that plugin (``--plugin``); without it the images are shown without top-5.

With ``--study DIR`` (the output of ``fuzzconv study``) the study's ``study.md`` is rendered too,
its tables as HTML tables and its PNG plots inlined.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..campaign import HuntConfig
from ..errors import UsageError
from ..liveness import status_text
from ..oracle import top_k
from ..pipeline import Pipeline
from ..store import Store

#: Timing stages as the executor records them, with their chart colours.
STAGES = {"convert": "#4e79a7", "compile": "#f28e2b", "load": "#76b7b2", "infer": "#59a14f"}
#: Evaluations shown in the timing chart (the slowest).
TIMING_ROWS = 40
#: Step parameter values shown in the flip-rate chart (the highest rates).
PARAM_ROWS = 40
THUMB_PX = 112

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


def write_html(store: Path, out_file: Path, campaign: str | None = None,
               study: Path | None = None, plugins: Sequence[Path] = (), *,
               top5: bool = True, say: Callable[[str], None] = lambda s: None) -> Path:
    """Write the report of ``store`` (one campaign, or all) to ``out_file``.

    Args:
        store: the store directory.
        out_file: the HTML file to write (its directory is created).
        campaign: a campaign ID or unique prefix; None reports every campaign.
        study: a ``fuzzconv study`` output directory (with ``study.json``) to include.
        plugins: plugin files the findings' pipelines use (for their top-5).
        top5: recompute each failing image's top-5 through the executor. Defaults to True.
        say: progress messages.

    Returns:
        The file written.
    """
    out_file = Path(out_file).expanduser()
    if out_file.is_dir():
        raise UsageError(f"report output {out_file} is a directory; give a file name")
    if study is not None and not (Path(study) / "study.json").is_file():
        raise UsageError(f"no study.json in {study} (run fuzzconv study --out {study} first)")
    if not (Path(store) / "fuzzconv.sqlite").exists():
        raise UsageError(f"no fuzzconv store in {store} (run a hunt first, or pass --store)")
    with Store(store) as db:
        ids = [db.campaign(campaign)["id"]] if campaign else [c["id"] for c in db.campaigns()]
        camps = [db.campaign(cid) for cid in ids]
        evals = {cid: list(db.evaluations(cid)) for cid in ids}
        finds = {cid: db.findings(campaign=cid) for cid in ids}
    outputs = _Outputs(Path(store), plugins, say) if top5 else None
    try:
        parts = [_header(Path(store), camps, finds)]
        for camp in camps:
            parts.append(_campaign(camp, evals[camp["id"]], finds[camp["id"]], outputs))
    finally:
        if outputs is not None:
            outputs.close()
    if study is not None:
        parts.append(_study(Path(study)))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>fuzzconv report</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + f"\n<script>{_JS}</script>\n</body></html>\n")
    try:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out_file}: {exc.strerror or exc}") from None
    return out_file


# -- outputs for top-5 -----------------------------------------------------------------------------
class _Outputs:
    """Reference and pipeline logits on a campaign's corpus, from the executor (and its cache)."""

    def __init__(self, store: Path, plugins: Sequence[Path], say: Callable[[str], None]):
        self.store, self.plugins, self.say = store, list(plugins), say
        self._session: Any = None
        self.ex: Any = None

    def executor(self) -> Any:
        if self.ex is None:
            from ..session import open_session

            self._session = open_session(self.store, self.plugins, listener=self.say)
            self.ex = self._session.__enter__()
        return self.ex

    def close(self) -> None:
        if self._session is not None:
            self._session.__exit__(None, None, None)

    def logits(self, camp: dict[str, Any], finding: dict[str, Any]
               ) -> tuple[Any, np.ndarray, np.ndarray | None, str | None]:
        """(corpus, reference logits, minimal pipeline logits or None, why not)."""
        from ..corpora import select

        cfg = HuntConfig(**camp["config"])
        corpus = select(cfg.images_dir, cfg.images or None)
        ex = self.executor()
        ref = ex.reference(finding["model"], corpus).logits
        try:
            p = Pipeline.from_dict(finding.get("minimal_pipeline") or finding["pipeline"],
                                   ex.registry)
        except UsageError as exc:
            return corpus, ref, None, f"{exc} (pass its plugin with --plugin)"
        ev = ex.evaluate(p, corpus)
        if ev.failure is not None:
            return corpus, ref, None, f"{ev.failure.error_class}: {ev.failure.message}"[:300]
        return corpus, ref, ev.logits, None


# -- sections --------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "—"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _header(store: Path, camps: list[dict[str, Any]], finds: dict[str, list]) -> str:
    n = sum(len(v) for v in finds.values())
    return (f"<h1>fuzzconv report</h1><p class=\"muted\">store <code>{_e(store)}</code> · "
            f"{len(camps)} campaign(s) · {n} finding(s) · written {_when(time.time())}</p>")


def _culprit(c: dict[str, Any] | None) -> str:
    if not c:
        return "—"
    params = ",".join(f"{k}={json.dumps(v)}" for k, v in c["params"].items())
    return f"{c['step']}({params})" if params else c["step"]


def _chain(p: dict[str, Any] | None) -> str:
    if not p:
        return "—"
    steps = " → ".join(_culprit({"step": s["step"], "params": s.get("params", {})})
                       for s in p["steps"]) or "(source)"
    rt = p["runtime"]
    return f"{steps} ⇒ {_culprit({'step': rt['name'], 'params': rt.get('params', {})})}"


def _campaign(camp: dict[str, Any], evals: list[dict[str, Any]], finds: list[dict[str, Any]],
              outputs: _Outputs | None) -> str:
    cid = camp["id"]
    parts = [f"<h2 id=\"{_e(cid)}\">Campaign {_e(cid)} — {_e(camp['model'])}</h2>",
             _summary(camp, evals, finds), "<h3>Findings</h3>", _findings_table(finds)]
    for f in finds:
        parts.append(_finding(camp, f, outputs))
    parts.append("<h3>Flip rate by step and by parameter</h3>")
    parts.append(_flip_charts(evals))
    parts.append("<h3>Where the time went</h3>")
    parts.append(_timing_chart(evals))
    return "\n".join(parts)


def _summary(camp: dict[str, Any], evals: list[dict[str, Any]], finds: list[dict[str, Any]]) -> str:
    cfg = camp["config"]
    phases = _counts(e["phase"] for e in evals)
    symptoms = _counts(e["symptom"] or "agrees" for e in evals)
    fresh = sum(e["fresh"] for e in evals)
    cached = sum(e["cached"] for e in evals)
    seconds = sum(sum(v for k, v in e["timings"].items() if k in STAGES) for e in evals)
    dur = (camp["finished"] - camp["started"]) if camp.get("finished") else None
    rows = [
        ("model", f"<code>{_e(camp['model'])}</code>"),
        ("seed", str(camp["seed"])),
        ("status", _e(status_text(camp))),
        ("started · took", f"{_when(camp['started'])} · "
                           + (f"{dur:.0f} s" if dur is not None else "—")),
        ("settings", ", ".join(f"{_e(k)} {_e(json.dumps(v))}" for k, v in sorted(cfg.items())
                               if k not in ("model", "seed") and v not in (None, {}, ""))),
        ("evaluations", f"{len(evals)} ({_e(', '.join(f'{k} {v}' for k, v in phases.items()))})"),
        ("outcomes", _e(", ".join(f"{k} {v}" for k, v in symptoms.items())) or "—"),
        ("steps and runs", f"{fresh} executed, {cached} from the cache"
                           + (f" ({cached / (fresh + cached):.0%})" if fresh + cached else "")),
        ("time in frameworks", f"{seconds:.1f} s (convert, compile, load, infer)"),
        ("findings", _e(", ".join(f"{k} {v}" for k, v in _counts(f["symptom"] for f in finds)
                                  .items())) or "none"),
        ("versions", _e(", ".join(f"{k} {v}" for k, v in camp["versions"].items()))),
    ]
    return "<table class=\"kv\">" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) \
        + "</table>"


def _counts(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in items:
        out[x] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _findings_table(finds: list[dict[str, Any]]) -> str:
    if not finds:
        return "<p class=\"muted\">No findings in this campaign.</p>"
    head = ["id", "symptom", "flip rate", "flipping images", "culprit", "status", "hits", "flaky",
            "minimal pipeline", "first seen"]
    rows = []
    for f in finds:
        fr = f.get("flip_rate")
        cells = [
            f"<td data-sort=\"{_e(f['id'])}\"><a href=\"#{_e(f['id'])}\">{_e(f['id'])}</a></td>",
            f"<td><span class=\"sym sym-{_e(f['symptom'])}\">{_e(f['symptom'])}</span></td>",
            f"<td class=\"num\" data-sort=\"{'' if fr is None else fr}\">{_pct(fr)}</td>",
            f"<td class=\"num\">{_e(f.get('flipping_images', '—'))}</td>",
            f"<td><code>{_e(_culprit(f.get('culprit')))}</code></td>",
            f"<td>{_e(f.get('status', 'new'))}</td>",
            f"<td class=\"num\">{_e(f.get('hits', 1))}</td>",
            f"<td>{'yes' if f.get('flaky') else 'no'}</td>",
            f"<td>{_e(_chain(f.get('minimal_pipeline') or f['pipeline']))}</td>",
            f"<td data-sort=\"{f.get('first_seen', '')}\">{_when(f.get('first_seen'))}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<table id=\"findings\" class=\"sortable\"><thead><tr>"
            + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _finding(camp: dict[str, Any], f: dict[str, Any], outputs: _Outputs | None) -> str:
    kv = [("signature", f"<code>{_e(f['signature'])}</code>"),
          ("pipeline as found", _e(_chain(f["pipeline"]))),
          ("minimal pipeline", _e(_chain(f.get("minimal_pipeline")))),
          ("culprit", f"<code>{_e(_culprit(f.get('culprit')))}</code>"),
          ("flip rate", f"{_pct(f.get('flip_rate'))} of {f.get('images', '?')} images")]
    for key, label in (("fix_hint", "fix hint"), ("first_divergent_node", "first divergent node"),
                       ("bundle", "bundle")):
        if f.get(key):
            kv.append((label, f"<code>{_e(f[key])}</code>"))
    if f.get("failure"):
        fail = f["failure"]
        kv.append(("error", f"{_e(fail.get('error_class'))} at {_e(fail.get('stage'))}: "
                            f"{_e((fail.get('message') or '')[:400])}"))
    parts = [f"<div class=\"finding\" id=\"{_e(f['id'])}\"><h3>{_e(f['id'])} "
             f"<span class=\"sym sym-{_e(f['symptom'])}\">{_e(f['symptom'])}</span></h3>",
             "<table class=\"kv\">" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in kv)
             + "</table>"]
    names = f.get("failing_inputs") or []
    if names:
        parts.append("<h4>Failing images</h4>")
        parts.append(_images(camp, f, names, outputs))
    path = f.get("node_errors") or []
    if path:
        parts.append("<h4>Error along the path (max abs, log scale; red: diverges)</h4>")
        parts.append(_bar_svg([(str(n.get("node")), n.get("max_abs"), bool(n.get("diverges")),
                                str(n.get("op_type") or "")) for n in path],
                              fmt="{:.3g}", log=True))
    parts.append("</div>")
    return "\n".join(parts)


def _images(camp: dict[str, Any], f: dict[str, Any], names: list[str],
            outputs: _Outputs | None) -> str:
    from ..corpora import select

    why = None
    ref = got = None
    if outputs is None:
        cfg = HuntConfig(**camp["config"])
        corpus = select(cfg.images_dir, cfg.images or None)
        why = "top-5 not computed (top5=False)"
    else:
        try:
            corpus, ref, got, why = outputs.logits(camp, f)
        except UsageError as exc:
            cfg = HuntConfig(**camp["config"])
            corpus, why = select(cfg.images_dir, cfg.images or None), str(exc)
    index = {n: i for i, n in enumerate(corpus.names)}
    cards = []
    for name in names:
        i = index.get(name)
        if i is None:
            cards.append(f"<div class=\"image\"><code>{_e(name)}</code><br>"
                         "<span class=\"muted\">not in this campaign's corpus</span></div>")
            continue
        card = [f"<div class=\"image\"><img alt=\"{_e(name)}\" "
                f"src=\"{_thumbnail(corpus.paths[i])}\"><code>{_e(name)}</code>"]
        if ref is not None and got is not None:
            card.append(_top5(ref[i], got[i]))
        cards.append("".join(card) + "</div>")
    note = f"<p class=\"muted\">{_e(why)}</p>" if why else ""
    return note + "<div class=\"images\">" + "".join(cards) + "</div>"


def _thumbnail(path: str) -> str:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMB_PX, THUMB_PX))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.where(np.isfinite(x), x, -np.inf).astype(np.float64)
    z = np.exp(z - np.max(z))
    return z / z.sum()


def _top5(ref: np.ndarray, got: np.ndarray) -> str:
    r5 = top_k(ref[None, :])[0]
    g5 = top_k(np.where(np.isfinite(got), got, -np.inf)[None, :])[0]
    pr, pg = _softmax(ref), _softmax(got)
    rows = []
    for k in range(len(r5)):
        changed = " class=\"changed\"" if r5[k] != g5[k] else ""
        rows.append(f"<tr{changed}><td>{k + 1}</td><td>{int(r5[k])} ({pr[r5[k]]:.2f})</td>"
                    f"<td>{int(g5[k])} ({pg[g5[k]]:.2f})</td></tr>")
    return ("<table><thead><tr><th>#</th><th>reference</th><th>minimal pipeline</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table>")


# -- charts ----------------------------------------------------------------------------------------
def _bar_svg(rows: list[tuple[str, float | None, bool, str]], fmt: str, log: bool = False,
             width: int = 900, label_w: int = 360, vmax: float | None = None) -> str:
    """Horizontal bars: (label, value, highlight, note) per row; None values are drawn empty."""
    if not rows:
        return "<p class=\"muted\">nothing to chart</p>"
    bar_h, gap, top = 18, 6, 6
    vals = [v for _, v, _, _ in rows if v is not None and math.isfinite(v)]
    area = width - label_w - 150
    if log:
        pos = [v for v in vals if v > 0]
        lo = math.floor(math.log10(min(pos))) if pos else -6
        hi = math.ceil(math.log10(max(pos))) if pos else 0
        hi = hi if hi > lo else lo + 1

        def scale(v: float) -> float:
            return 0.0 if v <= 0 else area * (math.log10(v) - lo) / (hi - lo)
    else:
        top_v = vmax if vmax is not None else (max(vals) if vals else 1.0) or 1.0

        def scale(v: float) -> float:
            return area * max(0.0, v) / top_v
    height = top + len(rows) * (bar_h + gap) + 4
    out = [f"<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" "
           f"height=\"{height}\" role=\"img\">"]
    for k, (label, v, hot, note) in enumerate(rows):
        y = top + k * (bar_h + gap)
        text = label if len(label) <= 58 else label[:27] + "…" + label[-30:]
        out.append(f"<text x=\"{label_w - 6}\" y=\"{y + 13}\" text-anchor=\"end\">"
                   f"<title>{_e(label)}</title>{_e(text)}</text>")
        w = scale(v) if v is not None and math.isfinite(v) else 0.0
        colour = "#c0392b" if hot else "#4e79a7"
        out.append(f"<rect x=\"{label_w}\" y=\"{y}\" width=\"{max(w, 1):.1f}\" height=\"{bar_h}\" "
                   f"fill=\"{colour}\"></rect>")
        shown = "—" if v is None else (fmt.format(v) if math.isfinite(v) else "inf")
        out.append(f"<text x=\"{label_w + w + 6:.1f}\" y=\"{y + 13}\">{_e(shown)}"
                   f"{(' ' + _e(note)) if note else ''}</text>")
    out.append("</svg>")
    return "".join(out)


def flip_rates(evals: list[dict[str, Any]]) -> tuple[dict[str, tuple[float, int, int]],
                                                     dict[str, tuple[float, int, int]]]:
    """Mean flip rate of the evaluations containing each step, and each ``step: param=value``.

    Returns:
        Two dicts, by step and by parameter value, each mapping to (mean flip rate over the
        evaluations that produced outputs, how many did, how many failed instead).
    """
    by_step: dict[str, list[float | None]] = defaultdict(list)
    by_param: dict[str, list[float | None]] = defaultdict(list)
    for e in evals:
        cmp = (e["outcome"] or {}).get("comparison")
        fr = cmp.get("flip_rate") if cmp else None
        p = e["pipeline"]
        elements = [(s["step"], s.get("params", {})) for s in p["steps"]]
        elements.append((p["runtime"]["name"], p["runtime"].get("params", {})))
        for name, params in {(n, json.dumps(ps, sort_keys=True)) for n, ps in elements}:
            by_step[name].append(fr)
            for k, v in json.loads(params).items():
                value = json.dumps(v, sort_keys=True, separators=(",", ":"))
                by_param[f"{name}: {k}={value}"].append(fr)

    def agg(d: dict[str, list[float | None]]) -> dict[str, tuple[float, int, int]]:
        out = {}
        for key, xs in d.items():
            ok = [x for x in xs if x is not None]
            out[key] = (float(np.mean(ok)) if ok else float("nan"), len(ok), len(xs) - len(ok))
        return out

    return agg(by_step), agg(by_param)


def _flip_charts(evals: list[dict[str, Any]]) -> str:
    if not evals:
        return "<p class=\"muted\">No evaluations.</p>"
    steps, params = flip_rates(evals)

    def rows(d: dict[str, tuple[float, int, int]], limit: int | None = None) -> list:
        items = sorted(d.items(), key=lambda kv: (-(kv[1][0] if math.isfinite(kv[1][0]) else -1),
                                                  kv[0]))
        out = [(k, v if math.isfinite(v) else None, v > 0 if math.isfinite(v) else False,
                f"(n={n}" + (f", {failed} failed" if failed else "") + ")")
               for k, (v, n, failed) in items]
        return out[:limit] if limit else out

    prow = rows(params, PARAM_ROWS)
    more = (f"<p class=\"muted\">The {PARAM_ROWS} highest of {len(params)} parameter values.</p>"
            if len(params) > PARAM_ROWS else "")
    return ("<p class=\"muted\">Mean top-1 flip rate of the evaluations whose pipeline contains "
            "the step (or the parameter value); evaluations that failed have no flip rate and are "
            "counted apart.</p><h4>By step or runtime</h4>"
            + _bar_svg(rows(steps), "{:.1%}", vmax=1.0) + "<h4>By parameter value</h4>"
            + _bar_svg(prow, "{:.1%}", vmax=1.0) + more)


def _short_label(p: dict[str, Any]) -> str:
    return " → ".join(s["step"] for s in p["steps"]) + " ⇒ " + p["runtime"]["name"]


def _timing_chart(evals: list[dict[str, Any]]) -> str:
    rows = []
    for e in evals:
        t = {k: float(e["timings"].get(k, 0.0)) for k in STAGES}
        if sum(t.values()) > 0:
            rows.append((f"#{e['seq']} {_short_label(e['pipeline'])}", t, e["fresh"] == 0))
    if not rows:
        return "<p class=\"muted\">No timings recorded.</p>"
    rows.sort(key=lambda r: -sum(r[1].values()))
    shown = rows[:TIMING_ROWS]
    width, label_w, bar_h, gap, top = 900, 360, 16, 5, 26
    area = width - label_w - 90
    vmax = max(sum(t.values()) for _, t, _ in shown) or 1.0
    height = top + len(shown) * (bar_h + gap) + 4
    out = [f"<svg class=\"chart\" id=\"timing\" xmlns=\"http://www.w3.org/2000/svg\" "
           f"width=\"{width}\" height=\"{height}\" role=\"img\">"]
    x = label_w
    for stage, colour in STAGES.items():
        out.append(f"<rect x=\"{x}\" y=\"4\" width=\"12\" height=\"12\" fill=\"{colour}\"></rect>"
                   f"<text x=\"{x + 16}\" y=\"15\">{stage}</text>")
        x += 90
    for k, (label, t, cached) in enumerate(shown):
        y = top + k * (bar_h + gap)
        text = label if len(label) <= 58 else label[:27] + "…" + label[-30:]
        out.append(f"<text x=\"{label_w - 6}\" y=\"{y + 12}\" text-anchor=\"end\">"
                   f"<title>{_e(label)}</title>{_e(text)}{' (cached)' if cached else ''}</text>")
        x = float(label_w)
        for stage, colour in STAGES.items():
            w = area * t[stage] / vmax
            if w > 0:
                out.append(f"<rect x=\"{x:.1f}\" y=\"{y}\" width=\"{w:.1f}\" height=\"{bar_h}\" "
                           f"fill=\"{colour}\"><title>{stage} {t[stage]:.2f} s</title></rect>")
                x += w
        out.append(f"<text x=\"{x + 6:.1f}\" y=\"{y + 12}\">{sum(t.values()):.2f} s</text>")
    out.append("</svg>")
    note = (f"The {len(shown)} slowest of {len(rows)} evaluations with timings. "
            if len(rows) > len(shown) else "")
    return (f"<p class=\"muted\">{note}Seconds per evaluation and stage; an evaluation served from "
            "the cache shows the times recorded when it was first computed.</p>" + "".join(out))


# -- the study -------------------------------------------------------------------------------------
def _study(directory: Path) -> str:
    study = json.loads((directory / "study.json").read_text())
    md = directory / "study.md"
    head = (f"<h2 id=\"study\">Sensitivity study</h2><p class=\"muted\">From "
            f"<code>{_e(directory)}</code>: models "
            f"{_e(', '.join(study.get('settings', {}).get('models', [])))}, "
            f"{len(study.get('cells', []))} measurements.</p>")
    if not md.is_file():
        return head + "<p class=\"muted\">study.md is missing.</p>"
    return head + "<div class=\"study\">" + markdown(md.read_text(), directory) + "</div>"


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\([^)]+\)"), r"\1"),  # offline: links keep their text only
]


def _inline(text: str) -> str:
    out = _e(text)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _image(alt: str, src: str, directory: Path) -> str:
    path = (directory / src).resolve()
    if not path.is_relative_to(directory.resolve()) or not path.is_file() or \
            path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        return f"<p class=\"muted\">[{_e(alt)}: {_e(src)} not found]</p>"
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt=\"{_e(alt)}\" src=\"data:{mime};base64,{data}\">"


def markdown(text: str, directory: Path) -> str:
    """The Markdown that ``study.md`` uses, as HTML: headings, pipe tables, lists, images,
    paragraphs, inline code and emphasis. Images are inlined from ``directory``."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    image = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$")
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        if m := re.match(r"^(#{1,4})\s+(.*)$", line):
            level = min(len(m[1]) + 2, 6)
            out.append(f"<h{level}>{_inline(m[2])}</h{level}>")
            i += 1
        elif m := image.match(line):
            out.append(_image(m[1], m[2], directory))
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, body = rows[0], rows[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join(
                           "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                           for r in body) + "</tbody></table>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
        else:
            para = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not re.match(
                    r"^(#{1,4}\s|\||\s*[-*]\s+|!\[)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)
