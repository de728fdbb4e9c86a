"""Running the study: each configuration of each model on each device through the session's
executor (cached: a rerun recomputes only the timing), timed in the workers, with ``--resume``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError
from ..executor import Executor
from ..pipeline import DEVICES, Pipeline, device_available
from ..protocol import Call
from ..registry import FAMILIES
from ..workers import WorkerFailure
from ..zoo import get_model
from .cells import Cell
from .configs import (BOOTSTRAP_RESAMPLES, CI_GOAL, NOT_APPLICABLE, NOT_MEASURED, PAPER_MODELS,
                      RATIO_GOAL, THREAD_ENV, TWINS, Config, config_dict, config_keys,
                      configurations, select_configs)
from .eta import Estimate, Unit, eta_text
from .outputs import write_outputs
from .paper import compare_with_paper
from .probes import thread_report, tvm_disable_plan
from .rounds import Slot
from .stats import fill_metrics, opt_spread
from .timing import Timer

def _parse_list(value: str | Sequence[str], what: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise UsageError(f"--{what} needs at least one name")
    return items


def _pin_threads(ex: Executor, threads: int) -> dict[str, str]:
    """Give every worker the same intra-op thread count (before any of them starts)."""
    env = {k: str(threads) for k in THREAD_ENV}
    for fam in FAMILIES:
        worker = ex.pool.get(fam)
        worker.env = {**(worker.env or {}), **env}
    return env


class Measurement:
    """Evaluates the configurations of one study through an executor (the labelled runs; the
    timing is :class:`.timing.Timer`'s, in rounds, once every configuration of a model ran)."""

    def __init__(self, ex: Executor, corpus: Any):
        self.ex = ex
        self.corpus = corpus
        self.timing_corpus = corpus.subset(list(range(min(ex.batch_size, len(corpus)))))

    def evaluate(self, model: str, cfg: Config, device: str) -> Cell:
        """The labelled run of one configuration (cached).

        Args:
            model: the study's row, a Keras model; twin configurations run on its twin.
            cfg: the configuration.
            device: where it runs.
        """
        runs_on = model if cfg.side == "keras" else TWINS[model]
        try:
            pipeline = Pipeline.make(self.ex.registry, runs_on, list(cfg.steps), cfg.runtime,
                                     device)
        except UsageError as exc:
            return Cell(model, cfg.key, device, "failed",
                        error={"stage": "pipeline", "error_class": "UsageError",
                               "message": str(exc), "symptom": "unsupported"})
        cell = Cell(model, cfg.key, device, "ok", pipeline=pipeline.to_dict())
        try:
            ev = self.ex.evaluate(pipeline, self.corpus)
        except UsageError as exc:  # the source model itself could not be built
            cell.status, cell.error = "failed", {"stage": "source", "error_class": "UsageError",
                                                 "message": str(exc), "symptom": "crash"}
            return cell
        if not ev.ok:
            cell.status, cell.error = "failed", ev.failure.to_dict()  # type: ignore[union-attr]
            cell.error.pop("stderr_tail", None)
            return cell
        cell.logits = ev.logits
        cell.timing["stage_seconds"] = {k: round(v, 3) for k, v in ev.timings.items()}
        return cell


def run_study(models: str | Sequence[str] = PAPER_MODELS, images: Path | None = None,
              weights: str = "calibrated", devices: str | Sequence[str] = ("cpu", "cuda"),
              repeats: int = 10, out: Path = Path("fuzzconv-study"), limit: int | None = None,
              *, store: Path = Path("fuzzconv-out"), threads: int | None = None,
              timeout: float | None = None, console: Any = None,
              show_progress: bool = True, resume: bool = False,
              configs: str | Sequence[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Run the sensitivity study and write its tables, plots and data under ``out``.

    Args:
        models: Keras zoo models with a PyTorch twin (see :data:`TWINS`), a list or a
            comma-separated string.
        images: a folder of images; None takes the default corpus.
        weights: ``calibrated`` or ``imagenet`` (twins are compared with Keras only with the latter).
        devices: devices to measure; one absent here is reported as "not measured".
        repeats: timing rounds; each gives every configuration one pass over the first batch
            and one over each of its images alone, in a fresh order; 0 skips timing.
        out: where the outputs go.
        limit: use only the first ``limit`` images (all of them, with a line saying how many, when
            the corpus has fewer).
        store: the store whose cache holds the artifacts and outputs (reruns reuse it).
        threads: intra-op threads for every framework; defaults to ``os.cpu_count()``.
        timeout: seconds per step or run (the executor's default when None).
        console: a rich Console for progress (stderr); one is made when None.
        show_progress: show the progress bar.
        resume: keep the models that ``out/study.json`` already holds, when it was made with the
            same settings, stack and configurations (see :func:`earlier_study`); measure the rest.
        configs: the configurations to run, a list or comma-separated string (their baselines
            are added); None runs all of them.
        seed: the seed of the timing rounds' orders.

    Returns:
        The ``study.json`` object.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..session import open_session
    from ..versions import machine, stack_versions

    names = _parse_list(models, "models")
    for name in names:
        get_model(name)
        if name not in TWINS:
            raise UsageError(f"the study runs Keras models with a PyTorch twin; {name!r} is not one "
                             f"(known: {', '.join(TWINS)})")
    wanted = _parse_list(devices, "devices")
    for d in wanted:
        if d not in DEVICES:
            raise UsageError(f"unknown device {d!r} (known: {', '.join(DEVICES)})")
    if repeats < 0:
        raise UsageError("--repeats must be 0 or more")
    chosen = None if configs is None else _parse_list(configs, "configs")
    known = config_keys()
    for key in chosen or ():
        if key not in known:
            raise UsageError(f"unknown configuration {key!r} (known: {', '.join(known)})")
    threads = int(threads or os.cpu_count() or 1)
    console = console or Console(stderr=True)
    corpus = study_corpus(images, limit, console)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    present = {d: device_available(d) for d in wanted}
    t0 = time.perf_counter()
    early = {"weights": weights, "repeats": repeats, "limit": limit, "threads": threads,
             "timing": "interleaved rounds", "timing_seed": seed,
             "images": str(images) if images else None,
             "devices": {d: ("measured" if present[d] else NOT_MEASURED) for d in wanted},
             "corpus": {"name": corpus.name, "images": len(corpus), "digest": corpus.digest,
                        "labelled": corpus.labels is not None}}
    if resume:  # bad input (other settings, another stack) fails here, before any worker starts
        earlier_study(out / "study.json", {"settings": early, "versions": stack_versions()})

    with open_session(store, weights=weights, timeout=timeout) as ex:
        env = _pin_threads(ex, threads)
        threads_seen = {fam: _call(ex, fam, Call.to(thread_report, family=fam))
                        for fam in FAMILIES}
        plan = _call(ex, "tvm", Call.to(tvm_disable_plan, relax_pipeline="target"),
                     timeout=3600.0)
        cfgs = select_configs(
            configurations(threads, plan.get("disabled", []) if plan["ok"] else []), chosen)
        runner = Measurement(ex, corpus)
        timer = Timer(ex, runner.timing_corpus, repeats, seed)
        head = {
            "study": "Louloudakis et al. 2022 sensitivity study, repeated",
            "settings": {"models": [], "requested_models": names,
                         "twins": {m: TWINS[m] for m in names}, **early,
                         "batch_size": ex.batch_size, "timing_images": len(runner.timing_corpus),
                         "thread_env": env, "ci_goal": CI_GOAL, "ratio_goal": RATIO_GOAL,
                         "configs": chosen,
                         "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "store": str(store)},
            "versions": stack_versions(),
            "machine": {**machine(), "os_cpu_count": os.cpu_count(),
                        # Other work on the machine slows and spreads the timings: say how much.
                        "load_average_start": list(os.getloadavg())},
            "threads": threads_seen,
            "tvm_disable_plan": plan,
            "configurations": [{**config_dict(c),
                                "devices": [d for d in DEVICES if _runs_on(ex, c, d)]}
                               for c in cfgs],
            "model_seconds": {}, "timing_rounds": {}, "timing_control": {},
        }
        earlier = earlier_study(out / "study.json", head) if resume else None
        kept = [m for m in names if earlier and m in earlier["settings"]["models"]]
        if earlier is not None:
            head["resumed"] = {"models": kept, "elapsed_seconds": earlier["elapsed_seconds"],
                               "load_average_start": earlier["machine"]["load_average_start"]}
        cells: list[Cell] = []
        timed = [d for d in wanted if present[d]] if repeats else []
        control = next((c.baseline for c in cfgs if c.side == "keras"), None) or \
            next((c.baseline for c in cfgs), None)
        todo: Counter[Unit] = Counter()
        for model in names:
            if model not in kept:
                for cfg in cfgs:
                    todo[(model, "label", cfg.key)] += len(wanted)
                    todo[(model, "round", cfg.key)] += repeats * len(timed)
                todo[(model, "round", f"{control}-rebuilt")] += repeats * len(timed)
        est = Estimate()
        # Without a terminal the bar is not drawn: a line per configuration shows the way instead.
        log_lines = show_progress and not console.is_terminal
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), console=console,
                      disable=not show_progress, transient=False) as progress:
            task = progress.add_task("study", total=sum(todo.values()) + sum(
                len(cfgs) * len(wanted) for m in kept), eta=eta_text(None))

            def done(unit: Unit, seconds: float | None, n: int = 1) -> None:
                if seconds is not None:
                    est.record(unit, seconds)
                todo[unit] -= n
                progress.update(task, advance=n, eta=est.describe(todo))

            for model in names:
                if model in kept:
                    assert earlier is not None
                    cells += [Cell.from_dict(c) for c in earlier["cells"] if c["model"] == model]
                    head["model_seconds"][model] = earlier["model_seconds"][model]
                    for key in ("timing_rounds", "timing_control"):
                        if model in earlier.get(key, {}):
                            head[key][model] = earlier[key][model]
                    progress.advance(task, len(cfgs) * len(wanted))
                    if log_lines:
                        console.print(f"{model}: kept from {out / 'study.json'}")
                    head["settings"]["models"].append(model)
                    study = _assemble(head, cells, cfgs, corpus, weights, t0, earlier)
                    write_outputs(study, out)
                    continue
                tm = time.perf_counter()
                for cfg in cfgs:
                    for device in wanted:
                        progress.update(task, description=f"{model} {cfg.key} @{device}")
                        cells.append(_cell(runner, model, cfg, device, present, plan))
                        done((model, "label", cfg.key), cells[-1].seconds)
                        if log_lines:
                            c = cells[-1]
                            console.print(f"{model} {cfg.key} @{device}: {c.status}"
                                          + (f" ({c.seconds:.0f} s)" if c.seconds else "")
                                          + f"; {est.describe(todo)}")
                for device in timed:
                    def on_pass(slot: Slot, seconds: float, device: str = device) -> None:
                        progress.update(task, description=f"{model} timing {slot.key} @{device}")
                        done((model, "round", slot.key), seconds)

                    got = timer.time_device(model, device, cells, cfgs, control, on_pass)
                    head["timing_rounds"].setdefault(model, {})[device] = got["rounds"]
                    head["timing_control"].setdefault(model, {})[device] = got["control"]
                    if log_lines:
                        console.print(f"{model} @{device}: timed in {repeats} rounds; "
                                      f"{est.describe(todo)}")
                # Passes that did not run (a configuration that failed is not timed) are done.
                for unit in [u for u in todo if u[0] == model and todo[u] > 0]:
                    done(unit, None, todo[unit])
                head["model_seconds"][model] = round(time.perf_counter() - tm, 1)
                head["settings"]["models"].append(model)
                # Written after every model, so a long study that is stopped keeps what it did
                # (and a rerun finds all of it in the cache, or keeps it with --resume).
                study = _assemble(head, cells, cfgs, corpus, weights, t0, earlier)
                write_outputs(study, out)
    return study


def study_corpus(images: Path | None, limit: int | None, console: Any) -> Any:
    """The corpus the study runs on: ``images`` (or the default set) cut to ``limit``; a limit
    above its size takes all of it, with one line on ``console`` saying how many there are."""
    from ..corpora import select

    if limit is not None and limit >= 1:
        available = len(select(images))
        if limit > available:
            console.print(f"--limit {limit}: the corpus has {available} images; the study runs "
                          f"on all {available}")
    return select(images, limit)


def _cell(runner: Measurement, model: str, cfg: Config, device: str, present: dict[str, bool],
          plan: dict[str, Any]) -> Cell:
    """One configuration of one model on one device, or why it was not run."""
    if not _runs_on(runner.ex, cfg, device):
        return Cell(model, cfg.key, device, NOT_APPLICABLE)
    if not present[device]:
        return Cell(model, cfg.key, device, NOT_MEASURED)
    if cfg.key == "tvm-disabled" and not plan["ok"]:
        return Cell(model, cfg.key, device, "failed", error={
            "stage": "finding the passes to disable", "symptom": "crash",
            "error_class": "DisablePlan", "message": plan["error"]})
    tc = time.perf_counter()
    cell = runner.evaluate(model, cfg, device)
    cell.seconds = time.perf_counter() - tc
    return cell


#: Settings a kept model must share with the models measured now, for the tables to compare them.
_RESUME_SETTINGS = ("weights", "repeats", "limit", "images", "threads", "devices", "corpus",
                    "batch_size", "timing_images", "thread_env", "ci_goal", "bootstrap_resamples",
                    "timing", "timing_seed")


def earlier_study(path: Path, head: dict[str, Any]) -> dict[str, Any] | None:
    """The study at ``path`` when its models can stand beside the ones this run measures.

    None when there is no such file. A file that cannot be read, or that was made with other
    settings, another framework stack or other configurations, is a :class:`UsageError` naming the
    difference; the file itself is left as it is. Only what ``head`` holds is compared, so a
    check before the workers start can take the settings known by then.
    """
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
        settings = old["settings"]
        _ = (old["cells"], old["elapsed_seconds"], old["machine"]["load_average_start"])
        _ = [(old["model_seconds"][m], old["opt_spread"][m]) for m in settings["models"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--resume: {path} is not a study this version wrote ({exc})") from exc
    mine = head["settings"]
    for key in _RESUME_SETTINGS:
        if key in mine and settings.get(key) != mine[key]:
            raise UsageError(f"--resume: {path} was made with {key} = {settings.get(key)!r}, this run "
                             f"has {mine.get(key)!r}; use the same settings or another --out")
    if "versions" in head and old.get("versions") != head["versions"]:
        changed = sorted(k for k in set(old.get("versions") or {}) | set(head["versions"])
                         if (old.get("versions") or {}).get(k) != head["versions"].get(k))
        raise UsageError(f"--resume: {path} was made with other versions of "
                         f"{', '.join(changed)}; use another --out")
    if "configurations" in head and ([c.get("key") for c in old.get("configurations", [])]
                                     != [c["key"] for c in head["configurations"]]):
        raise UsageError(f"--resume: {path} has other configurations; use another --out")
    return old


def _assemble(head: dict[str, Any], cells: list[Cell], configs: list[Config], corpus: Any,
              weights: str, t0: float, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``study.json`` object for the models done so far (kept ones from ``earlier``)."""
    fill_metrics(cells, configs, corpus, weights)
    measured = [d for d, s in head["settings"]["devices"].items() if s == "measured"]
    kept = (head.get("resumed") or {}).get("models", [])
    spread = opt_spread(cells, [m for m in head["settings"]["models"] if m not in kept], measured)
    for model in kept:
        spread[model] = earlier["opt_spread"][model]  # type: ignore[index]
    elapsed = time.perf_counter() - t0 + (head.get("resumed") or {}).get("elapsed_seconds", 0.0)
    study = {**head, "cells": [c.to_dict() for c in cells], "opt_spread": spread,
             "elapsed_seconds": round(elapsed, 1)}
    study["machine"] = {**head["machine"], "load_average_end": list(os.getloadavg())}
    if kept:  # the load the kept models were measured under counts too
        study["machine"]["load_average_start"] = head["resumed"]["load_average_start"]
    study["paper"] = compare_with_paper(study)
    return study


def _runs_on(ex: Executor, cfg: Config, device: str) -> bool:
    ops = [ex.registry.get(n) for n, _ in cfg.steps] + [ex.registry.get(cfg.runtime[0])]
    return all(device in op.devices for op in ops)


def _call(ex: Executor, family: str, call: Call, timeout: float = 600.0) -> dict[str, Any]:
    """A worker function's answer; a failure becomes ``{"ok": False, "error": ...}``."""
    try:
        return {"ok": True, **ex.pool.request(family, call, timeout=timeout)}
    except WorkerFailure as exc:
        return {"ok": False, "error": f"{exc.error_class}: {exc.message[:500]}"}
