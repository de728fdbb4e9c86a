"""The report's charts, as inline SVG: horizontal bars (node errors, flip rates by step and by
parameter value) and where the time of the slowest evaluations went."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np

from ...canonical import canonical_json
from .page import esc

#: Timing stages as the executor records them, with their chart colours.
STAGES = {"convert": "#4e79a7", "compile": "#f28e2b", "load": "#76b7b2", "infer": "#59a14f"}
#: Evaluations shown in the timing chart (the slowest).
TIMING_ROWS = 40
#: Step parameter values shown in the flip-rate chart (the highest rates).
PARAM_ROWS = 40


def bar_svg(rows: list[tuple[str, float | None, bool, str]], fmt: str, log: bool = False,
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
                   f"<title>{esc(label)}</title>{esc(text)}</text>")
        w = scale(v) if v is not None and math.isfinite(v) else 0.0
        colour = "#c0392b" if hot else "#4e79a7"
        out.append(f"<rect x=\"{label_w}\" y=\"{y}\" width=\"{max(w, 1):.1f}\" height=\"{bar_h}\" "
                   f"fill=\"{colour}\"></rect>")
        shown = "—" if v is None else (fmt.format(v) if math.isfinite(v) else "inf")
        out.append(f"<text x=\"{label_w + w + 6:.1f}\" y=\"{y + 13}\">{esc(shown)}"
                   f"{(' ' + esc(note)) if note else ''}</text>")
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
                value = canonical_json(v)
                by_param[f"{name}: {k}={value}"].append(fr)

    def agg(d: dict[str, list[float | None]]) -> dict[str, tuple[float, int, int]]:
        out = {}
        for key, xs in d.items():
            ok = [x for x in xs if x is not None]
            out[key] = (float(np.mean(ok)) if ok else float("nan"), len(ok), len(xs) - len(ok))
        return out

    return agg(by_step), agg(by_param)


def flip_charts(evals: list[dict[str, Any]]) -> str:
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
            + bar_svg(rows(steps), "{:.1%}", vmax=1.0) + "<h4>By parameter value</h4>"
            + bar_svg(prow, "{:.1%}", vmax=1.0) + more)


def _short_label(p: dict[str, Any]) -> str:
    return " → ".join(s["step"] for s in p["steps"]) + " ⇒ " + p["runtime"]["name"]


def timing_chart(evals: list[dict[str, Any]]) -> str:
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
                   f"<title>{esc(label)}</title>{esc(text)}{' (cached)' if cached else ''}</text>")
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
