"""``fuzzconv hunt``, ``tune`` and ``study``: campaigns, tuning ahead of them, the paper's study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..tables import Col, op_text, print_table
from .base import (ImagesOpt, JsonOpt, PluginOpt, StoreOpt, WeightsOpt, WideOpt,
                   app, console, out, print_json)


# -- hunt -----------------------------------------------------------------------------------------
@app.command()
def hunt(
    *,
    model: Annotated[Optional[str], typer.Option("--model", help="Zoo model to hunt on, or gen:keras / gen:torch to draw models too.")] = None,
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
    from ..launch import run_hunt

    result = run_hunt(model=model, budget=budget, max_evals=max_evals, seed=seed, images=images,
                      limit=limit, device=device, plugins=plugin or [], focus=focus, store=store,
                      resume=resume, weights=weights, timeout=timeout, max_chain=max_chain,
                      thresholds=dict(tie_margin=tie_margin, atol=atol, rtol=rtol,
                                      slowdown=slowdown),
                      console=console, show_progress=not json_, ray=ray,
                      ray_workers=ray_workers, cache=cache, probe=probe, slowdown_vs=slowdown_vs,
                      plan=10**9 if plan else 0)
    if plan:
        from ..registry import fresh_registry

        _print_plan(result, fresh_registry(tuple(str(p) for p in plugin or ())), json_,  # type: ignore[arg-type]
                    wide)
        return
    if json_:
        print_json({"campaign": result.campaign, "evaluations": result.evaluations,
                     "findings": result.findings, "stopped": result.stopped,
                     "elapsed_s": round(result.elapsed, 1), "probe_only": result.probe_only,
                     "escalated": result.escalated, "masked": result.masked,
                     "covered": result.covered, "coverage": result.coverage,
                     "limitations": result.limitations})
        return
    _print_hunt(result, store, wide)


def _print_hunt(result: Any, store: Path, wide: bool) -> None:
    rows = []
    for f in result.findings:
        fr = f"{f['flip_rate']:.1%}" if f.get("flip_rate") is not None else "—"
        chain = " → ".join(s["step"] for s in f["pipeline"]["steps"]) + " ⇒ " + f["pipeline"]["runtime"]["name"]
        rows.append([f["id"], f["symptom"], fr, op_text(f["culprit"]), chain])
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
    if result.limitations:
        out.print("known limitations, not judged (a path that cannot carry a layer):")
        for line in result.limitations:
            out.print(Text(f"  {line}"))
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
        print_json(rows)
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
    from ..tuner import TuneDisplay, summary, tune_model

    with TuneDisplay(console) as display:
        report = tune_model(model, target, budget, store, on_event=display, listener=display.say)
    if json_:
        print_json(report)
    else:
        out.print(summary(report))



# -- study ----------------------------------------------------------------------------------------
@app.command()
def study(
    *,
    models: Annotated[str, typer.Option("--models", help="Comma-separated Keras models (each with its PyTorch twin).")] = "mobilenetv2,resnet101v2,densenet121,inceptionv3",
    images: ImagesOpt = None,
    weights: Annotated[str, typer.Option("--weights", help="calibrated or imagenet.")] = "calibrated",
    devices: Annotated[str, typer.Option("--devices", help="Comma-separated: cpu,cuda.")] = "cpu,cuda",
    repeats: Annotated[int, typer.Option("--repeats", help="Timing rounds: each times every configuration once, in a fresh order.")] = 10,
    configs: Annotated[Optional[str], typer.Option("--configs", help="Comma-separated configurations to run (their baselines are added); default: all.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the timing rounds' orders.")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("fuzzconv-study"),
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use the first N images.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Intra-op threads for every runtime.")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds per step or run.")] = None,
    store: StoreOpt = Path("fuzzconv-out"),
    resume: Annotated[bool, typer.Option("--resume", help="Keep the models --out/study.json already holds (same settings and stack); measure the rest.")] = False,
) -> None:
    """The 2022 paper's sensitivity study: label changes and timing per framework, opt level, device."""
    from ..study import run_study

    run_study(models, images, weights, devices, repeats, out_dir, limit, store=store,
              threads=threads, timeout=timeout, console=console, resume=resume, configs=configs,
              seed=seed)
    out.print(f"study written to {out_dir}: study.md, study.json, labels.csv, timing.csv, plots")
