"""The ``fuzzconv`` command line: thin typer commands that parse options and call the library.

Exit codes: 0 ok, 1 a divergence reproduced (``run``, ``repro``), 2 bad usage or input — always
one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from .errors import UsageError
from .tables import Col, Rows, print_table


class _OneLineErrors(TyperGroup):
    """Every usage error, ours or click's, becomes one line and exit code 2."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        warnings.showwarning = _one_line_warning
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            _fail(str(exc))
        except typer.TyperException as exc:  # typer's own parse errors
            if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None):
                typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
                sys.exit(2)
            _fail(exc.format_message())  # type: ignore[attr-defined]
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line_warning(message: Any, category: Any, filename: str, lineno: int,
                      file: Any = None, line: Any = None) -> None:
    typer.echo(f"warning: {' '.join(str(message).split())}", err=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(2)


app = typer.Typer(cls=_OneLineErrors, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Find and isolate where converting or compiling an image classifier "
                       "changes what it predicts.")
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)

StoreOpt = Annotated[Path, typer.Option("--store", help="Store directory (SQLite store, cache, logs).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column at full width, one line a row, "
                                       "however wide (a narrow terminal leaves lesser columns out).")]
PluginOpt = Annotated[Optional[list[Path]], typer.Option("--plugin", help="A plugin file (repeatable).")]
ImagesOpt = Annotated[Optional[Path], typer.Option("--images", help="Directory of JPEG/PNG images (recursive).")]
WeightsOpt = Annotated[str, typer.Option("--weights", help="calibrated, imagenet (from disk only) or a weights file.")]


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


class _Status:
    """A rich spinner that the executor's listener updates: what is running right now."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and console.is_terminal
        self._status = console.status("starting") if self.enabled else None

    def __call__(self, what: str) -> None:
        if self._status is not None:
            self._status.update(what)

    def __enter__(self) -> "_Status":
        if self._status is not None:
            self._status.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


# -- models ---------------------------------------------------------------------------------------
@app.command()
def models(
    *,
    json_: JsonOpt = False,
    check: Annotated[bool, typer.Option("--check", help="Run each model on the corpus and report "
                                        "distinct labels and the median top-1/top-2 margin.")] = False,
    only: Annotated[Optional[str], typer.Option("--only", help="Comma-separated model names.")] = None,
    weights: WeightsOpt = "calibrated",
    images: ImagesOpt = None,
    store: StoreOpt = Path("fuzzconv-out"),
    wide: WideOpt = False,
) -> None:
    """List the model zoo; with --check, run each model's reference and measure its predictions."""
    from .zoo import MODELS, get_model
    from .zoo.weights import keras_weight_dirs, torch_weight_dirs

    names = [n.strip() for n in only.split(",")] if only else list(MODELS)
    specs = [get_model(n) for n in names]
    rows = []
    for s in specs:
        where = {"calibrated": "calibrated",
                 "imagenet": "ImageNet file in " + str((keras_weight_dirs() if s.source == "keras"
                                                        else torch_weight_dirs())[-1])}
        rows.append({"name": s.name, "source": s.source, "input_shape": list(s.input_shape),
                     "layout": s.layout, "preprocessing": s.preprocessing, "classes": s.classes,
                     "weights": where.get(weights, weights), "tiny": s.tiny, "paper": s.paper})
    if check:
        from .check import check_models

        from .corpora import select

        corpus = select(images)
        with _Status() as status:
            results = check_models(specs, corpus, store=store, weights=weights, listener=status)
        for row, res in zip(rows, results):
            row.update(res)
    if json_:
        _print_json(rows)
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


# -- steps ----------------------------------------------------------------------------------------
@app.command()
def steps(*, json_: JsonOpt = False, plugin: PluginOpt = None, wide: WideOpt = False) -> None:
    """List every step and runtime: formats, parameter choices, and whether it runs here."""
    from .registry import family_available, fresh_registry
    from .pipeline import device_available

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
        _print_json(rows)
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
    from .pipeline_file import run_pipeline

    with _Status() as status:
        result = run_pipeline(pipeline_file, images, limit, store=store, plugins=plugin or [],
                              weights=weights, timeout=timeout, listener=status)
    if json_:
        _print_json(result)
    else:
        _print_run(result, wide)
    raise typer.Exit(1 if result["symptom"] else 0)


_KEY_VALUE = [Col("what", "name"), Col("value")]


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
    print_table(out, _KEY_VALUE, table, title=r["label"], show_header=False, wide=wide)


# -- hunt -----------------------------------------------------------------------------------------
@app.command()
def hunt(
    *,
    model: Annotated[Optional[str], typer.Option("--model", help="Zoo model to hunt on.")] = None,
    budget: Annotated[str, typer.Option("--budget", help="Wall-clock budget: 90s, 15m, 1h.")] = "15m",
    max_evals: Annotated[Optional[int], typer.Option("--max-evals", help="Stop after N evaluations.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Search seed (same seed, same pipelines).")] = 0,
    images: ImagesOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Use the first N images of the corpus.")] = 64,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    plugin: PluginOpt = None,
    focus: Annotated[Optional[str], typer.Option("--focus", help="Every pipeline contains this step.")] = None,
    store: StoreOpt = Path("fuzzconv-out"),
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue campaign ID (fuzzconv campaigns lists them).")] = None,
    weights: WeightsOpt = "calibrated",
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds per step or run.")] = None,
    max_chain: Annotated[int, typer.Option("--max-chain", help="Most conversion steps per pipeline.")] = 3,
    tie_margin: Annotated[float, typer.Option("--tie-margin", help="Flips below this reference margin are tie flips.")] = 0.05,
    atol: Annotated[float, typer.Option("--atol", help="Numeric divergence: max |Δlogit| above this...")] = 1e-2,
    rtol: Annotated[float, typer.Option("--rtol", help="...and relative to the logit range above this.")] = 1e-3,
    slowdown: Annotated[float, typer.Option("--slowdown", help="Slowdown: an optimisation that makes inference this many times slower.")] = 3.0,
    slowdown_vs: Annotated[str, typer.Option("--slowdown-vs", help="What a slowdown is measured against: base (the same runtime unoptimised) or reference (the source framework).")] = "base",
    probe: Annotated[int, typer.Option("--probe", help="Judge each pipeline on this many fragile images first (0: always the whole corpus).")] = 8,
    plan: Annotated[bool, typer.Option("--plan", help="List the coverage candidates in the order the hunt would take them, with estimated seconds and reasons; run nothing.")] = False,
    ray: Annotated[Optional[str], typer.Option("--ray", help="Evaluate on a Ray cluster: auto or HOST:PORT.")] = None,
    ray_workers: Annotated[Optional[int], typer.Option("--ray-workers", help="Ray actors (default: one per cluster CPU).")] = None,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="Cache directory (shared by Ray nodes).")] = None,
    json_: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Search conversion paths and compiler options for divergences from the source model."""
    from .hunting import run_hunt

    result = run_hunt(model=model, budget=budget, max_evals=max_evals, seed=seed, images=images,
                      limit=limit, device=device, plugins=plugin or [], focus=focus, store=store,
                      resume=resume, weights=weights, timeout=timeout, max_chain=max_chain,
                      thresholds=dict(tie_margin=tie_margin, atol=atol, rtol=rtol,
                                      slowdown=slowdown),
                      console=console, show_progress=not json_, ray=ray,
                      ray_workers=ray_workers, cache=cache, probe=probe, slowdown_vs=slowdown_vs,
                      plan=10**9 if plan else 0)
    if plan:
        from .registry import fresh_registry

        _print_plan(result, fresh_registry(tuple(str(p) for p in plugin or ())), json_,  # type: ignore[arg-type]
                    wide)
        return
    if json_:
        _print_json({"campaign": result.campaign, "evaluations": result.evaluations,
                     "findings": result.findings, "stopped": result.stopped,
                     "elapsed_s": round(result.elapsed, 1), "probe_only": result.probe_only,
                     "escalated": result.escalated, "masked": result.masked,
                     "covered": result.covered, "coverage": result.coverage})
        return
    _print_hunt(result, store, wide)


def _print_hunt(result: Any, store: Path, wide: bool) -> None:
    rows = []
    for f in result.findings:
        cul = f["culprit"]
        culprit = (cul["step"] + "(" + ",".join(f"{k}={v}" for k, v in cul["params"].items()) + ")"
                   if cul else "—")
        fr = f"{f['flip_rate']:.1%}" if f.get("flip_rate") is not None else "—"
        chain = " → ".join(s["step"] for s in f["pipeline"]["steps"]) + " ⇒ " + f["pipeline"]["runtime"]["name"]
        rows.append([f["id"], f["symptom"], fr, culprit, chain])
    print_table(out, [Col("id", "name"), Col("symptom", "name"), Col("flip rate", drop=2),
                      Col("culprit"), Col("pipeline", drop=1)], rows, wide=wide,
                title=f"campaign {result.campaign}: {result.evaluations} evaluations in "
                      f"{result.elapsed:.0f} s ({result.stopped}); {len(result.findings)} findings")
    if result.replayed:
        out.print("replayed known findings: " + ", ".join(f"{k} {v}" for k, v in result.replayed.items()))
    total = result.cache_hits + result.fresh
    out.print(f"coverage: {result.covered} of {result.coverage} options judged; "
              f"{result.probe_only} of {result.evaluations} evaluations were judged on the probe "
              f"of fragile images alone, {result.escalated} went on to the whole corpus"
              + (f"; {result.masked} judged with a known bug reset" if result.masked else ""))
    out.print(f"cache: {result.cache_hits} of {total} steps and runs served from the cache"
              + (f" ({result.cache_hits / total:.0%})" if total else ""))
    where = "" if str(store) == "fuzzconv-out" else f" --store {store}"
    if result.findings:
        out.print(f"next: fuzzconv show {result.findings[0]['id']}{where} for one finding, "
                  f"fuzzconv reports{where} for all, fuzzconv bundle ID -o DIR{where} to file one")
    else:
        out.print(f"next: fuzzconv reports{where} lists the findings of every campaign; "
                  f"--resume {result.campaign} continues this one")


def _print_plan(plan: list[Any], reg: Any, json_: bool, wide: bool) -> None:
    rows = [{"rank": i + 1, "pipeline": c.pipeline.to_dict(), "label": c.pipeline.brief(reg),
             "estimated_seconds": round(c.estimate.seconds, 1) if c.estimate else None,
             "cost_basis": c.estimate.basis if c.estimate else None, "risk": c.risk,
             "reason": c.why} for i, c in enumerate(plan)]
    if json_:
        _print_json(rows)
        return
    shown = rows[:30]
    print_table(out, [Col("#", "name"), Col("pipeline"), Col("est. s", "name"),
                      Col("risk", "name", drop=2), Col("why", drop=1)],
                [[str(r["rank"]), r["label"], f"{r['estimated_seconds']:.0f}", f"{r['risk']:.2g}",
                  f"{r['reason']}; cost {r['cost_basis']}"] for r in shown], wide=wide,
                title=f"the hunt's first {len(shown)} of {len(rows)} coverage candidates, by "
                      "expected findings per second")
    if len(rows) > len(shown):
        out.print(f"… {len(rows) - len(shown)} more: --json lists them all")


# -- tune -----------------------------------------------------------------------------------------
@app.command()
def tune(
    *,
    model: Annotated[str, typer.Option("--model", help="Model to tune TVM kernels for.")],
    target: Annotated[str, typer.Option("--target", help='llvm or a JSON dict, e.g. {"kind": "llvm", "mcpu": "x86-64-v3"}.')] = "llvm",
    budget: Annotated[str, typer.Option("--budget", help="Tuning time: 90s, 30m, 1h.")] = "30m",
    store: StoreOpt = Path("fuzzconv-out"),
    json_: JsonOpt = False,
) -> None:
    """Tune a model's TVM kernels with MetaSchedule ahead of a hunt (tvm.build tuning=metaschedule)."""
    from .tuner import TuneDisplay, summary, tune_model

    with TuneDisplay(console) as display:
        report = tune_model(model, target, budget, store, on_event=display, listener=display.say)
    if json_:
        _print_json(report)
    else:
        out.print(summary(report))


# -- findings -------------------------------------------------------------------------------------
def _open_store(store: Path) -> Any:
    from .store import Store

    if not (Path(store) / "fuzzconv.sqlite").exists():
        raise UsageError(f"no fuzzconv store in {store} (run a hunt first, or pass --store)")
    return Store(store)


@app.command()
def reports(
    *,
    model: Annotated[Optional[str], typer.Option("--model", help="Only findings on this model.")] = None,
    symptom: Annotated[Optional[str], typer.Option("--symptom", help="Only this symptom.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only buckets with this status: new, confirmed, fixed or flaky.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Show at most N buckets (table default 50, --json default all; 0: all).")] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip the first N buckets (the next page).")] = 0,
    store: StoreOpt = Path("fuzzconv-out"),
    json_: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """List findings, one row per bucket (same culprit step, parameters and symptom), worst first."""
    from .oracle import SYMPTOMS
    from .store import STATUSES

    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r} (known: {', '.join(STATUSES)})")
    if symptom is not None and symptom not in SYMPTOMS:
        raise UsageError(f"unknown symptom {symptom!r} (known: {', '.join(SYMPTOMS)})")
    page = (None if json_ else 50) if limit is None else (limit or None)
    sel = dict(model=model, symptom=symptom, status=status)
    with _open_store(store) as db:
        rows, n_buckets, n_findings = db.buckets(**sel, limit=page, offset=offset)
        unfinished = [] if json_ else db.campaigns(unfinished=True)
        if json_:
            # the findings of the listed buckets, bucket by bucket, one finding a line
            sys.stdout.write("[" + ",".join("\n" + f for f in db.bucket_findings_json(
                **sel, limit=page, offset=offset)) + "\n]\n")
    more = n_buckets - offset - len(rows)
    if json_:
        if more > 0:
            console.print(f"{more} more buckets: --offset {offset + len(rows)} for the next page, "
                          "--limit 0 for all")
        return
    from .liveness import resume_hints, when

    if not rows and offset:
        out.print(f"{n_findings} findings in {n_buckets} buckets; none past --offset {offset}")
        return
    cols = [Col("ids", "name"), Col("symptom", "name"), Col("culprit"), Col("count", drop=5),
            Col("worst flip", drop=4), Col("models", "name", drop=6), Col("first seen", drop=8),
            Col("last seen", drop=7), Col("status", drop=3)]
    cells = [[", ".join(r["ids"]) + (" …" if r["count"] > len(r["ids"]) else ""),
              r["symptom"], _culprit(r["culprit"]), str(r["count"]),
              f"{r['worst_flip_rate']:.1%}" if r["worst_flip_rate"] is not None else "—",
              ", ".join(r["models"]), when(r["first_seen"]), when(r["last_seen"]), r["status"]]
             for r in rows]
    print_table(out, cols, cells, wide=wide, title=f"{n_findings} findings in {n_buckets} buckets" + (
        f" (buckets {offset + 1}–{offset + len(rows)} of {n_buckets})" if len(rows) < n_buckets else ""))
    if more > 0:
        out.print(f"… {more} more buckets: --offset {offset + len(rows)} for the next page, "
                  f"--limit 0 for all, --json for every finding")
    for line in resume_hints(unfinished):
        out.print(Text(line))


@app.command()
def campaigns(*, store: StoreOpt = Path("fuzzconv-out"), json_: JsonOpt = False,
              wide: WideOpt = False) -> None:
    """List the campaigns: status (running, done or interrupted), when last seen, work done."""
    from .liveness import when

    with _open_store(store) as db:
        camps = db.campaigns()
    keys = ("id", "model", "status", "recorded_status", "host", "pid", "seed", "started",
            "finished", "last_seen", "evaluations", "findings")
    if json_:
        _print_json([{k: c[k] for k in keys} for c in camps])
        return
    cols = [Col("campaign", "name"), Col("model", "name"), Col("status", "name"), Col("last seen"),
            Col("evaluations", drop=2), Col("findings", drop=3), Col("started", drop=4),
            Col("host", "name", drop=5)]
    print_table(out, cols, [[c["id"], c["model"], c["status"], when(c["last_seen"]),
                             str(c["evaluations"]), str(c["findings"]), when(c["started"]),
                             c["host"] or "—"] for c in camps],
                title=f"{len(camps)} campaigns in {store}", wide=wide)


def _culprit(c: Any) -> str:
    if not c:
        return "—"
    params = ",".join(f"{k}={json.dumps(v)}" for k, v in c["params"].items())
    return f"{c['step']}({params})" if params else c["step"]


def _pipeline_text(p: Any) -> str:
    if not p:
        return "—"
    parts = [_culprit({"step": s["step"], "params": s.get("params", {})}) for s in p["steps"]]
    rt = p["runtime"]
    return " → ".join(parts or ["(source)"]) + " ⇒ " + _culprit({"step": rt["name"],
                                                                 "params": rt.get("params", {})})


@app.command()
def show(
    finding_id: Annotated[str, typer.Argument(metavar="ID", help="Finding ID or unique prefix.")],
    *,
    store: StoreOpt = Path("fuzzconv-out"),
    json_: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Show one minimized finding."""
    with _open_store(store) as db:
        f = db.finding(finding_id)
    if json_:
        _print_json(f)
        return
    t = Rows()
    fr = f.get("flip_rate")
    t.add_row("flip rate", f"{fr:.1%} of {f['images']} images" if fr is not None else "—")
    t.add_row("signature", f["signature"])
    t.add_row("status", f.get("status", "new") + (" (flaky)" if f.get("flaky") else ""))
    t.add_row("pipeline as found", _pipeline_text(f["pipeline"]))
    t.add_row("minimal pipeline", _pipeline_text(f.get("minimal_pipeline")))
    t.add_row("culprit", _culprit(f.get("culprit")))
    if f.get("pending"):
        t.add_row("pending", f"{', '.join(f['pending'])} (a running hunt does them in the last "
                             f"quarter of its budget; fuzzconv shrink {f['id']} completes them)")
    if f.get("culprit_uncertain"):
        t.add_row("culprit uncertain", f["culprit_uncertain"])
    sd = f.get("slowdown")
    if sd:
        against = ("the same pipeline unoptimised: " + _pipeline_text(sd["base"])
                   if sd.get("vs") == "base" else "the source framework")
        t.add_row("slowdown", f"{sd['factor']:.2f}× slower: {sd['seconds']:.3g} s against "
                              f"{sd['base_seconds']:.3g} s per pass of {sd.get('batch', '?')} "
                              f"images, timed side by side (vs {against})")
    pr = f.get("probe")
    if pr:
        then = (f"{pr['why']}, so judged on all {f['images']} images" if pr.get("escalated")
                else f"{pr['symptom'] or 'agreed'} (not run on the rest)")
        t.add_row("probe", f"first judged on {pr['images']} fragile images: {then}")
    t.add_row("fix hint", f.get("fix_hint") or "—")
    t.add_row("minimal inputs", ", ".join(f.get("failing_inputs") or []) or "—")
    if f.get("flipping_images") is not None:
        t.add_row("flipping images", str(f.get("flipping_images")))
    t.add_row("first divergent node", f.get("first_divergent_node") or "—")
    path = f.get("node_errors") or []
    if path:
        t.add_row("error along the path", "; ".join(f"{n['node']}: {n['max_abs']:.3g}" for n in path[:12]))
    if f.get("reduced_model"):
        t.add_row("reduced subgraph", f"{f['reduced_model'].get('nodes')} nodes: {f['reduced_model'].get('path')}")
    if f.get("failure"):
        t.add_row("error", f"{f['failure']['error_class']} at {f['failure']['stage']}: {f['failure']['message'][:300]}")
    sh = f.get("shrink")
    if sh:
        prof = ", ".join(f"{k} {v['successes']}/{v['calls']}" for k, v in sh["profile"].items() if v["calls"])
        t.add_row("shrinking", f"{sh['steps_before']} → {sh['steps_after']} steps; 1-minimal: "
                               f"{sh['one_minimal']}; passes (accepted/tried): {prof or '—'}")
    ev = f["evaluations"]
    t.add_row("evaluations", f"hunt {ev['hunt']}, shrink {ev['shrink']} fresh, {ev['cache_hits']} cache hits")
    t.add_row("versions", ", ".join(f"{k} {v}" for k, v in f["versions"].items()))
    t.add_row("bundle", f.get("bundle") or "—")
    print_table(out, _KEY_VALUE, t, title=f"{f['id']} — {f['symptom']} on {f['model']}",
                show_header=False, wide=wide)


@app.command()
def shrink(
    finding_id: Annotated[str, typer.Argument(metavar="ID", help="Finding ID or unique prefix.")],
    *,
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Shrink and localize a stored finding again."""
    from .findings import shrink_finding

    with _Status() as status:
        f = shrink_finding(store, finding_id, plugin or [], status)
    if json_:
        _print_json(f)
    else:
        out.print(f"{f['id']}: {_pipeline_text(f.get('minimal_pipeline'))}; culprit "
                  f"{_culprit(f.get('culprit'))}; fix hint: {f.get('fix_hint') or '—'}")


@app.command()
def repro(
    finding_id: Annotated[str, typer.Argument(
        metavar="ID|BUNDLE", help="Finding ID or unique prefix; or a bundle directory or "
                                  ".tar.gz/.zip archive (whatever exists on disk is a bundle).")],
    *,
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
    trust_plugin: Annotated[bool, typer.Option("--trust-plugin", help="Run a bundle that carries "
                                               "plugin code (read it first).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Re-run a finding's minimal case from a cold cache, or a bundle's repro.py (exit 1: it reproduces)."""
    from .findings import repro_finding
    from .report.bundle_import import looks_like_bundle_path, run_bundle

    if Path(finding_id).expanduser().exists():
        if plugin:
            raise UsageError("--plugin applies to stored findings; a bundle brings its own "
                             "plugin (see --trust-plugin)")
        with _Status() as status:
            r = run_bundle(Path(finding_id), trust_plugin=trust_plugin, say=status)
        if json_:
            _print_json(r.to_dict())
        else:
            sys.stdout.write(r.output if r.output.endswith("\n") else r.output + "\n")
            out.print(f"{r.finding} (bundle {finding_id}): "
                      f"{'REPRODUCED' if r.reproduced else 'NOT REPRODUCED'}")
        raise typer.Exit(1 if r.reproduced else 0)
    if looks_like_bundle_path(finding_id):
        raise UsageError(f"no bundle at {finding_id}")
    if trust_plugin:
        raise UsageError(f"--trust-plugin applies to bundles, and there is no file or directory "
                         f"{finding_id}")
    with _Status() as status:
        still, f = repro_finding(store, finding_id, plugin or [], status)
    if json_:
        _print_json({"id": f["id"], "reproduced": still, "status": f["status"]})
    else:
        out.print(f"{f['id']}: {'REPRODUCED' if still else 'no longer reproduces — marked fixed'}")
    raise typer.Exit(1 if still else 0)


# -- filing ---------------------------------------------------------------------------------------
@app.command()
def bundle(
    finding_id: Annotated[str, typer.Argument(metavar="ID", help="Finding ID or unique prefix.")],
    *,
    output: Annotated[Path, typer.Option("-o", "--out", help="Directory to write the bundle to.")],
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Do not run repro.py once after writing.")] = False,
    archive: Annotated[bool, typer.Option("--archive", help="Also write DIR.tar.gz, the bundle as one file to attach.")] = False,
) -> None:
    """Write a standalone bug case: issue text and a repro.py that needs only the culprit's libraries."""
    from .report.bundle import write_bundle
    from .report.bundle_import import archive_bundle

    with _Status() as status:
        path = write_bundle(store, finding_id, output, plugin or [], verify=not no_check, say=status)
    out.print(f"bundle written to {path}; run: python {path / 'repro.py'}")
    if archive:
        packed = archive_bundle(path)
        out.print(f"archive written to {packed}; run it with: fuzzconv repro {packed.name}")


@app.command()
def report(
    *,
    html: Annotated[Path, typer.Option("--html", help="Write the offline HTML report to this file.")],
    campaign: Annotated[Optional[str], typer.Option("--campaign", help="Only this campaign (ID or prefix).")] = None,
    study: Annotated[Optional[Path], typer.Option("--study", help="A `fuzzconv study` output directory to include.")] = None,
    store: StoreOpt = Path("fuzzconv-out"),
    plugin: PluginOpt = None,
) -> None:
    """Write one static HTML page: campaign summary, sortable findings, images with top-5, charts."""
    from .report.html import write_html

    with _Status() as status:
        path = write_html(store, html, campaign, study=study, plugins=plugin or [], say=status)
    out.print(f"report written to {path}")


# -- study ----------------------------------------------------------------------------------------
@app.command()
def study(
    *,
    models: Annotated[str, typer.Option("--models", help="Comma-separated Keras models (each with its PyTorch twin).")] = "mobilenetv2,resnet101v2,densenet121,inceptionv3",
    images: ImagesOpt = None,
    weights: Annotated[str, typer.Option("--weights", help="calibrated or imagenet.")] = "calibrated",
    devices: Annotated[str, typer.Option("--devices", help="Comma-separated: cpu,cuda.")] = "cpu,cuda",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per configuration.")] = 10,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("fuzzconv-study"),
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use the first N images.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Intra-op threads for every runtime.")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds per step or run.")] = None,
    store: StoreOpt = Path("fuzzconv-out"),
    resume: Annotated[bool, typer.Option("--resume", help="Keep the models --out/study.json already holds (same settings and stack); measure the rest.")] = False,
) -> None:
    """The 2022 paper's sensitivity study: label changes and timing per framework, opt level, device."""
    from .study import run_study

    run_study(models, images, weights, devices, repeats, out_dir, limit, store=store,
              threads=threads, timeout=timeout, console=console, resume=resume)
    out.print(f"study written to {out_dir}: study.md, study.json, labels.csv, timing.csv, plots")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
