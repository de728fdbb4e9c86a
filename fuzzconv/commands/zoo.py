"""``fuzzconv models``, ``steps`` and ``run``: the zoo, the step vocabulary, one pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..tables import Col, Rows, print_table
from .base import (KEY_VALUE, ImagesOpt, JsonOpt, PluginOpt, Status, StoreOpt, WeightsOpt, WideOpt,
                   app, out, print_json)


# -- models ---------------------------------------------------------------------------------------
@app.command()
def models(
    *,
    json_: JsonOpt = False,
    check: Annotated[bool, typer.Option("--check", help="Run each model on the corpus and report "
                                        "distinct labels and the median top-1/top-2 margin.")] = False,
    only: Annotated[Optional[str], typer.Option("--only", help="Comma-separated model names.")] = None,
    vocabulary: Annotated[bool, typer.Option("--vocabulary", help="List the layers generated models are made of, their attributes and the paths that cannot carry them.")] = False,
    weights: WeightsOpt = "calibrated",
    images: ImagesOpt = None,
    store: StoreOpt = Path("fuzzconv-out"),
    wide: WideOpt = False,
) -> None:
    """List the model zoo and the generated families; with --check, run each model's reference
    and measure its predictions."""
    from ..gen.catalog import FAMILIES, family_row
    from ..zoo import MODELS, get_model
    from ..zoo.weights import keras_weight_dirs, torch_weight_dirs

    if vocabulary:
        _print_vocabulary(json_, wide)
        return
    names = [n.strip() for n in only.split(",")] if only else list(MODELS) + list(FAMILIES)
    if any(n.startswith("gen:") and n not in FAMILIES for n in names):
        from ..store import stored_spec
        from functools import partial
        from ..gen import catalog

        catalog.attach(str(Path(store).resolve()), partial(stored_spec, Path(store).resolve()))
    families = [family_row(n) for n in names if n in FAMILIES]
    specs = [get_model(n) for n in names if n not in FAMILIES]
    rows = []
    for s in specs:
        where = {"calibrated": "calibrated",
                 "imagenet": "ImageNet file in " + str((keras_weight_dirs() if s.source == "keras"
                                                        else torch_weight_dirs())[-1])}
        rows.append({"name": s.name, "source": s.source, "input_shape": list(s.input_shape),
                     "layout": s.layout, "preprocessing": s.preprocessing, "classes": s.classes,
                     "weights": where.get(weights, weights), "tiny": s.tiny, "paper": s.paper})
    if check:
        from ..check import check_models

        from ..corpora import select

        corpus = select(images)
        with Status() as status:
            results = check_models(specs, corpus, store=store, weights=weights, listener=status)
        for row, res in zip(rows, results):
            row.update(res)
    rows += families
    if json_:
        print_json(rows)
        return
    # column: the rank in which it gives way on a narrow terminal (0: never)
    cols = {"name": 0, "source": 5, "input_shape": 7, "preprocessing": 6, "classes": 8, "weights": 9}
    if check:
        cols |= {"distinct_labels": 4, "median_margin": 3, "accuracy": 2, "seconds": 1}
    print_table(out, [Col(c.replace("_", " "), "name" if c == "name" else "text", d)
                      for c, d in cols.items()], [[_cell(r.get(c)) for c in cols] for r in rows],
                title="fuzzconv models" + (f" — check on {len(corpus)} images" if check else ""),
                wide=wide)


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "×".join(map(str, v))
    return str(v)


def _print_vocabulary(json_: bool, wide: bool) -> None:
    from ..gen.carriers import LIMITS
    from ..gen.vocabulary import KINDS

    rows = []
    for k in KINDS.values():
        attrs = {}
        for a in k.attrs:
            if a.ref:
                attrs[a.name] = {"refers to": "an earlier tensor (the layer's own input first)"}
                continue
            attrs[a.name] = {"values": list(a.choices),
                             **({"only": {fw: list(v) for fw, v in a.only.items()}} if a.only
                                else {}),
                             **({"when": {a.when[0]: list(a.when[1])}} if a.when else {})}
        limits = [{"steps": list(lim.steps), "when": {k2: list(v) for k2, v in lim.when.items()},
                   "frameworks": list(lim.frameworks), "reason": lim.reason}
                  for lim in LIMITS if lim.kind == k.name]
        rows.append({"kind": k.name, "doc": k.doc, "takes": k.takes, "attributes": attrs,
                     "cannot_carry": limits})
    if json_:
        print_json(rows)
        return
    cells = []
    for r in rows:
        attrs = "; ".join(f"{n}: " + (", ".join(json.dumps(v) for v in a["values"])
                                      if "values" in a else a["refers to"])
                          for n, a in r["attributes"].items()) or "—"
        limits = "; ".join(f"{' + '.join(lim['steps'])}"
                           + (f" ({', '.join(f'{k}={v}' for k, v in lim['when'].items())})"
                              if lim["when"] else "")
                           + f" [{'/'.join(lim['frameworks'])}]" for lim in r["cannot_carry"])
        cells.append([r["kind"], attrs, limits or "every path"])
    print_table(out, [Col("kind", "name"), Col("attributes (plainest first)"),
                      Col("cannot be carried by", drop=1)], cells,
                title="generated models: the vocabulary (both frameworks) and its known "
                      "limitations", wide=wide)


# -- steps ----------------------------------------------------------------------------------------
@app.command()
def steps(*, json_: JsonOpt = False, plugin: PluginOpt = None, wide: WideOpt = False) -> None:
    """List every step and runtime: formats, parameter choices, and whether it runs here."""
    from ..registry import family_available, fresh_registry
    from ..pipeline import device_available

    reg = fresh_registry(tuple(str(p) for p in plugin or ()))
    rows = []
    for op in reg.steps() + reg.runtimes():
        d = op.describe()
        why = family_available(op.family)
        d["usable"] = why is None
        d["why_not"] = why
        d["devices_here"] = [dev for dev in op.devices if device_available(dev)]
        rows.append(d)
    if json_:
        print_json(rows)
        return
    cols = [Col("name", "name"), Col("kind", drop=2), Col("from → to", drop=1),
            Col("parameters (default first)"), Col("usable here")]
    cells = [[d["name"], d["kind"], f"{d['from']} → {d['to'] or '(run)'}",
              "; ".join(f"{k}: {', '.join(json.dumps(v) for v in p['choices'])}"
                        for k, p in d["params"].items()) or "—",
              "yes" if d["usable"] else f"no: {d['why_not']}"] for d in rows]
    print_table(out, cols, cells, title="fuzzconv steps and runtimes", wide=wide)


# -- run ------------------------------------------------------------------------------------------
@app.command()
def run(
    pipeline_file: Annotated[Path, typer.Argument(metavar="PIPELINE.json", help="A pipeline file.")],
    *,
    images: ImagesOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use only the first N images.")] = None,
    json_: JsonOpt = False,
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
    weights: WeightsOpt = "calibrated",
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds per step or run.")] = None,
    wide: WideOpt = False,
) -> None:
    """Run one pipeline and compare it with the reference (exit 1 when it diverges)."""
    from ..pipeline_file import run_pipeline

    with Status() as status:
        result = run_pipeline(pipeline_file, images, limit, store=store, plugins=plugin or [],
                              weights=weights, timeout=timeout, listener=status)
    if json_:
        print_json(result)
    else:
        _print_run(result, wide)
    raise typer.Exit(1 if result["symptom"] else 0)


def _print_run(r: dict[str, Any], wide: bool) -> None:
    table = Rows()
    table.add_row("verdict", Text(r["symptom"] or "agrees", style="bold"))
    if r["error"]:
        e = r["error"]
        table.add_row("failed at", e["stage"])
        table.add_row("error", f"{e['error_class']}: {e['message'][:300]}")
    if r["flip_rate"] is not None:
        table.add_row("top-1 flip rate", f"{r['flip_rate']:.2%} ({r['flips']} of {r['images']}; "
                                          f"{r['tie_flips']} near-tie flips)")
        table.add_row("top-5 agreement", f"{r['top5_agreement']:.4f} (Kendall τ {r['kendall_tau']:.4f})")
        table.add_row("max |Δlogit|", f"{r['max_abs_diff']:.3g} (relative {r['max_rel_diff']:.3g})")
        table.add_row("NaN/Inf images", str(r["nan"]))
    t = r["timings"]
    table.add_row("timings", ", ".join(f"{k} {v:.2f} s" for k, v in t.items()) or "—")
    table.add_row("cache", f"{r['cache']['hits']} hits, {r['cache']['fresh']} fresh")
    print_table(out, KEY_VALUE, table, title=r["label"], show_header=False, wide=wide)
