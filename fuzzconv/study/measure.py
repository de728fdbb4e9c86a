"""Running the study: each configuration of each model on each device through the session's
executor (cached: a rerun recomputes only the timing), timed in the workers, with ``--resume``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from ..executor import Evaluation, Executor
from ..pipeline import DEVICES, Pipeline, device_available
from ..protocol import Call, RunRequest
from ..registry import FAMILIES
from ..workers import WorkerFailure
from ..zoo import get_model
from .cells import Cell
from .configs import (BOOTSTRAP_RESAMPLES, CI_GOAL, NOT_APPLICABLE, NOT_MEASURED, PAPER_MODELS,
                      THREAD_ENV, TWINS, Config, config_dict, configurations)
from .outputs import write_outputs
from .paper import compare_with_paper
from .probes import thread_report, tvm_disable_plan
from .stats import fill_metrics, median_ci, opt_spread

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
    """Evaluates the configurations of one study through an executor."""

    def __init__(self, ex: Executor, corpus: Any, repeats: int):
        self.ex = ex
        self.corpus = corpus
        self.repeats = repeats
        self.timing_corpus = corpus.subset(list(range(min(ex.batch_size, len(corpus)))))

    def evaluate(self, model: str, cfg: Config, device: str) -> Cell:
        """The labelled run of one configuration (cached), then its timing when asked for.

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
        if self.repeats:
            self._time(pipeline, cell, self._artifact(pipeline))
        return cell

    def _artifact(self, pipeline: Pipeline) -> Path | None:
        spec = get_model(pipeline.model)
        calibration = (self.ex.calibration_inputs(spec) if self.ex.weights == "calibrated"
                       else None)
        return self.ex.artifact(pipeline, len(pipeline.steps), Evaluation(pipeline, None),
                                calibration=calibration)

    def _time(self, pipeline: Pipeline, cell: Cell, artifact: Path | None) -> None:
        """Time the runtime on the first batch: per batch and per image, ``repeats`` each.

        A request of its own (Executor.evaluate times batches only): the runtime loads the cached
        artifact, infers the batch once (the cold pass, also compared with the cached outputs),
        warms up, then times.
        """
        if artifact is None:
            return
        spec = get_model(pipeline.model)
        rt = self.ex.registry.get(pipeline.runtime.name, "runtime")
        inputs = self.ex.inputs(spec, self.timing_corpus)
        with tempfile.TemporaryDirectory(dir=self.ex.store_dir) as tmp:
            try:
                res = self.ex.pool.request(rt.family, RunRequest(
                    rt.name, pipeline.runtime.params, str(artifact), str(inputs),
                    str(Path(tmp) / "logits.npy"), spec.to_dict(), pipeline.device,
                    self.ex.batch_size, repeats=self.repeats, image_repeats=self.repeats),
                    timeout=self.ex.timeout_for(rt.name))
            except WorkerFailure as exc:
                cell.timing["error"] = {"symptom": exc.symptom, "error_class": exc.error_class,
                                        "message": exc.message[:500]}
                return
            again = np.load(Path(tmp) / "logits.npy", allow_pickle=False)
        first = cell.logits[:len(again)]  # type: ignore[index]
        images = [t for row in res.image_seconds for t in row]
        cell.timing.update(
            load_seconds=round(res.load_seconds, 4),
            batch_size=len(again),
            image=median_ci(images),
            batch=median_ci(res.batch_seconds),
            image_seconds=res.image_seconds,
            batch_seconds=res.batch_seconds,
            # The timing run's outputs against the labelled run's, same images: 0 unless the
            # runtime is not deterministic from one load to the next.
            rerun_max_abs_diff=float(np.abs(again.astype(np.float64) - first).max()),
        )




def run_study(models: str | Sequence[str] = PAPER_MODELS, images: Path | None = None,
              weights: str = "calibrated", devices: str | Sequence[str] = ("cpu", "cuda"),
              repeats: int = 10, out: Path = Path("fuzzconv-study"), limit: int | None = None,
              *, store: Path = Path("fuzzconv-out"), threads: int | None = None,
              timeout: float | None = None, console: Any = None,
              show_progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """Run the sensitivity study and write its tables, plots and data under ``out``.

    Args:
        models: Keras zoo models with a PyTorch twin (see :data:`TWINS`), a list or a
            comma-separated string.
        images: a folder of images; None takes the default corpus.
        weights: ``calibrated`` or ``imagenet`` (twins are compared with Keras only with the latter).
        devices: devices to measure; one absent here is reported as "not measured".
        repeats: timed passes per configuration, per batch and per image; 0 skips timing.
        out: where the outputs go.
        limit: use only the first ``limit`` images.
        store: the store whose cache holds the artifacts and outputs (reruns reuse it).
        threads: intra-op threads for every framework; defaults to ``os.cpu_count()``.
        timeout: seconds per step or run (the executor's default when None).
        console: a rich Console for progress (stderr); one is made when None.
        show_progress: show the progress bar.
        resume: keep the models that ``out/study.json`` already holds, when it was made with the
            same settings, stack and configurations (see :func:`earlier_study`); measure the rest.

    Returns:
        The ``study.json`` object.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..corpora import select
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
    threads = int(threads or os.cpu_count() or 1)
    corpus = select(images, limit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    present = {d: device_available(d) for d in wanted}
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    early = {"weights": weights, "repeats": repeats, "limit": limit, "threads": threads,
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
        configs = configurations(threads, plan.get("disabled", []) if plan["ok"] else [])
        runner = Measurement(ex, corpus, repeats)
        head = {
            "study": "Louloudakis et al. 2022 sensitivity study, repeated",
            "settings": {"models": [], "requested_models": names,
                         "twins": {m: TWINS[m] for m in names}, **early,
                         "batch_size": ex.batch_size, "timing_images": len(runner.timing_corpus),
                         "thread_env": env, "ci_goal": CI_GOAL,
                         "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "store": str(store)},
            "versions": stack_versions(),
            "machine": {**machine(), "os_cpu_count": os.cpu_count(),
                        # Other work on the machine slows and spreads the timings: say how much.
                        "load_average_start": list(os.getloadavg())},
            "threads": threads_seen,
            "tvm_disable_plan": plan,
            "configurations": [{**config_dict(c),
                                "devices": [d for d in DEVICES if _runs_on(ex, c, d)]}
                               for c in configs],
            "model_seconds": {},
        }
        earlier = earlier_study(out / "study.json", head) if resume else None
        kept = [m for m in names if earlier and m in earlier["settings"]["models"]]
        if earlier is not None:
            head["resumed"] = {"models": kept, "elapsed_seconds": earlier["elapsed_seconds"],
                               "load_average_start": earlier["machine"]["load_average_start"]}
        cells: list[Cell] = []
        todo = [(m, c, d) for m in names for c in configs for d in wanted]
        # Without a terminal the bar is not drawn: a line per configuration shows the way instead.
        log_lines = show_progress and not console.is_terminal
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, disable=not show_progress,
                      transient=False) as progress:
            task = progress.add_task("study", total=len(todo))
            for model in names:
                if model in kept:
                    assert earlier is not None
                    cells += [Cell.from_dict(c) for c in earlier["cells"] if c["model"] == model]
                    head["model_seconds"][model] = earlier["model_seconds"][model]
                    progress.advance(task, len(configs) * len(wanted))
                    if log_lines:
                        console.print(f"{model}: kept from {out / 'study.json'}")
                else:
                    tm = time.perf_counter()
                    for cfg in configs:
                        for device in wanted:
                            progress.update(task, description=f"{model} {cfg.key} @{device}")
                            cells.append(_cell(runner, model, cfg, device, present, plan))
                            progress.advance(task)
                            if log_lines:
                                c = cells[-1]
                                console.print(f"{model} {cfg.key} @{device}: {c.status}"
                                              + (f" ({c.seconds:.0f} s)" if c.seconds else ""))
                    head["model_seconds"][model] = round(time.perf_counter() - tm, 1)
                head["settings"]["models"].append(model)
                # Written after every model, so a long study that is stopped keeps what it did
                # (and a rerun finds all of it in the cache, or keeps it with --resume).
                study = _assemble(head, cells, configs, corpus, weights, t0, earlier)
                write_outputs(study, out)
    return study


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
                    "batch_size", "timing_images", "thread_env", "ci_goal", "bootstrap_resamples")


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
