"""The report's sections on campaigns: summary, findings table, and each finding with its failing
images (thumbnails, the reference's and the minimal pipeline's top-5) and its error along the path.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...campaign import HuntConfig
from ...errors import UsageError
from ...liveness import status_text
from ...oracle import top_k
from ...tables import op_text, pipeline_text
from .charts import STAGES, bar_svg, flip_charts, timing_chart
from .outputs import CachedOutputs
from .page import esc, percent, when

THUMB_PX = 112


def header(store: Path, camps: list[dict[str, Any]], finds: dict[str, list]) -> str:
    n = sum(len(v) for v in finds.values())
    return (f"<h1>fuzzconv report</h1><p class=\"muted\">store <code>{esc(store)}</code> · "
            f"{len(camps)} campaign(s) · {n} finding(s) · written {when(time.time())}</p>")


def campaign(camp: dict[str, Any], evals: list[dict[str, Any]], finds: list[dict[str, Any]],
              outputs: CachedOutputs | None) -> str:
    cid = camp["id"]
    parts = [f"<h2 id=\"{esc(cid)}\">Campaign {esc(cid)} — {esc(camp['model'])}</h2>",
             _summary(camp, evals, finds), "<h3>Findings</h3>", _findings_table(finds)]
    for f in finds:
        parts.append(_finding(camp, f, outputs))
    parts.append("<h3>Flip rate by step and by parameter</h3>")
    parts.append(flip_charts(evals))
    parts.append("<h3>Where the time went</h3>")
    parts.append(timing_chart(evals))
    return "\n".join(parts)


def _summary(camp: dict[str, Any], evals: list[dict[str, Any]], finds: list[dict[str, Any]]) -> str:
    cfg = camp["config"]
    phases = _counts(e["phase"] for e in evals)
    symptoms = _counts(e["symptom"] or _agreement(e) for e in evals)
    fresh = sum(e["fresh"] for e in evals)
    cached = sum(e["cached"] for e in evals)
    seconds = sum(sum(v for k, v in e["timings"].items() if k in STAGES) for e in evals)
    dur = (camp["finished"] - camp["started"]) if camp.get("finished") else None
    rows = [
        ("model", f"<code>{esc(camp['model'])}</code>"),
        ("seed", str(camp["seed"])),
        ("status", esc(status_text(camp))),
        ("started · took", f"{when(camp['started'])} · "
                           + (f"{dur:.0f} s" if dur is not None else "—")),
        ("settings", ", ".join(f"{esc(k)} {esc(json.dumps(v))}" for k, v in sorted(cfg.items())
                               if k not in ("model", "seed") and v not in (None, {}, ""))),
        ("evaluations", f"{len(evals)} ({esc(', '.join(f'{k} {v}' for k, v in phases.items()))})"),
        ("outcomes", esc(", ".join(f"{k} {v}" for k, v in symptoms.items())) or "—"),
        ("steps and runs", f"{fresh} executed, {cached} from the cache"
                           + (f" ({cached / (fresh + cached):.0%})" if fresh + cached else "")),
        ("time in frameworks", f"{seconds:.1f} s (convert, compile, load, infer)"),
        ("findings", esc(", ".join(f"{k} {v}" for k, v in _counts(f["symptom"] for f in finds)
                                  .items())) or "none"),
        ("versions", esc(", ".join(f"{k} {v}" for k, v in camp["versions"].items()))),
    ]
    return "<table class=\"kv\">" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) \
        + "</table>"


def _agreement(e: dict[str, Any]) -> str:
    """How far an agreeing evaluation agreed: on the probe of fragile images alone, or on all."""
    probe = e["outcome"].get("probe")
    if probe and not probe.get("escalated"):
        return f"agrees on {probe['images']} fragile images"
    return "agrees on all images"


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
            f"<td data-sort=\"{esc(f['id'])}\"><a href=\"#{esc(f['id'])}\">{esc(f['id'])}</a></td>",
            f"<td><span class=\"sym sym-{esc(f['symptom'])}\">{esc(f['symptom'])}</span></td>",
            f"<td class=\"num\" data-sort=\"{'' if fr is None else fr}\">{percent(fr)}</td>",
            f"<td class=\"num\">{esc(f.get('flipping_images', '—'))}</td>",
            f"<td><code>{esc(op_text(f.get('culprit')))}</code></td>",
            f"<td>{esc(f.get('status', 'new'))}</td>",
            f"<td class=\"num\">{esc(f.get('hits', 1))}</td>",
            f"<td>{'yes' if f.get('flaky') else 'no'}</td>",
            f"<td>{esc(pipeline_text(f.get('minimal_pipeline') or f['pipeline']))}</td>",
            f"<td data-sort=\"{f.get('first_seen', '')}\">{when(f.get('first_seen'))}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<table id=\"findings\" class=\"sortable\"><thead><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _finding(camp: dict[str, Any], f: dict[str, Any], outputs: CachedOutputs | None) -> str:
    kv = [("signature", f"<code>{esc(f['signature'])}</code>"),
          ("pipeline as found", esc(pipeline_text(f["pipeline"]))),
          ("minimal pipeline", esc(pipeline_text(f.get("minimal_pipeline")))),
          ("culprit", f"<code>{esc(op_text(f.get('culprit')))}</code>"),
          ("flip rate", f"{percent(f.get('flip_rate'))} of {f.get('images', '?')} images")]
    for key, label in (("fix_hint", "fix hint"), ("first_divergent_node", "first divergent node"),
                       ("bundle", "bundle")):
        if f.get(key):
            kv.append((label, f"<code>{esc(f[key])}</code>"))
    sd = f.get("slowdown")
    if sd:
        kv.append(("slowdown", f"{sd['factor']:.2f}× slower: {sd['seconds']:.3g} s against "
                               f"{sd['base_seconds']:.3g} s per pass of {sd.get('batch', '?')} "
                               "images, timed side by side, against "
                               + (esc(pipeline_text(sd["base"])) if sd.get("vs") == "base"
                                  else "the source framework")))
    if f.get("culprit_uncertain"):
        kv.append(("culprit uncertain", esc(f["culprit_uncertain"])))
    if f.get("failure"):
        fail = f["failure"]
        kv.append(("error", f"{esc(fail.get('error_class'))} at {esc(fail.get('stage'))}: "
                            f"{esc((fail.get('message') or '')[:400])}"))
    parts = [f"<div class=\"finding\" id=\"{esc(f['id'])}\"><h3>{esc(f['id'])} "
             f"<span class=\"sym sym-{esc(f['symptom'])}\">{esc(f['symptom'])}</span></h3>",
             "<table class=\"kv\">" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in kv)
             + "</table>"]
    names = f.get("failing_inputs") or []
    if names:
        parts.append("<h4>Failing images</h4>")
        parts.append(_images(camp, f, names, outputs))
    path = f.get("node_errors") or []
    if path:
        parts.append("<h4>Error along the path (max abs, log scale; red: diverges)</h4>")
        parts.append(bar_svg([(str(n.get("node")), n.get("max_abs"), bool(n.get("diverges")),
                                str(n.get("op_type") or "")) for n in path],
                              fmt="{:.3g}", log=True))
    parts.append("</div>")
    return "\n".join(parts)


def _images(camp: dict[str, Any], f: dict[str, Any], names: list[str],
            outputs: CachedOutputs | None) -> str:
    from ...corpora import select

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
            cards.append(f"<div class=\"image\"><code>{esc(name)}</code><br>"
                         "<span class=\"muted\">not in this campaign's corpus</span></div>")
            continue
        card = [f"<div class=\"image\"><img alt=\"{esc(name)}\" "
                f"src=\"{_thumbnail(corpus.paths[i])}\"><code>{esc(name)}</code>"]
        if ref is not None and got is not None:
            card.append(_top5(ref[i], got[i]))
        cards.append("".join(card) + "</div>")
    note = f"<p class=\"muted\">{esc(why)}</p>" if why else ""
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
