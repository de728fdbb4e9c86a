"""``fuzzconv tune``: tune a model's TVM kernels ahead of a hunt.

The model goes to Relax by its default chain (``keras.tf2onnx → onnx.tvm`` for Keras models,
``torch.tvm`` for PyTorch ones) through the executor and its cache; the tvm worker then tunes
the workloads the shared database lacks (op ``tune``, see :mod:`fuzzconv.steps.tvm_tuning`).
When every workload is tuned, the tuned library of that chain is built through the executor
too, so a hunt in the same store finds it cached.

A worker request is synchronous, so the worker appends progress lines to a file
(:class:`fuzzconv.tuning.ProgressLog`) and this process polls it while a thread waits for the
answer.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from .campaign import parse_budget
from .errors import UsageError
from .executor import Evaluation
from .pipeline import Pipeline
from .protocol import Call
from .session import open_session
from .steps.tvm_tuning import tune_artifact
from .tuning import database_dir, max_trials_from_env, read_progress, tuning_status
from .workers import WorkerFailure
from .zoo import get_model

#: How each source format reaches Relax by default.
RELAX_CHAINS = {"keras": [("keras.tf2onnx", {}), ("onnx.tvm", {})], "torch": [("torch.tvm", {})]}


def parse_target(text: str) -> str | dict[str, Any]:
    """``llvm`` or a JSON dict such as ``{"kind": "llvm", "mcpu": "x86-64-v3"}``."""
    import json

    t = text.strip()
    if not t.startswith("{"):
        if t != "llvm":
            raise UsageError(f"bad target {text!r}: give llvm or a JSON dict "
                             '(e.g. {"kind": "llvm", "mcpu": "x86-64-v3"})')
        return t
    try:
        spec = json.loads(t)
    except json.JSONDecodeError as exc:
        raise UsageError(f"bad target {text!r}: not JSON ({exc.msg})") from None
    if not isinstance(spec, dict) or spec.get("kind") != "llvm":
        raise UsageError(f"bad target {text!r}: tuning takes an LLVM (CPU) target, "
                         'a JSON dict with "kind": "llvm"')
    return spec


def tune_model(model: str, target: str, budget: str, store: Path,
               on_event: Callable[[dict[str, Any]], None] = lambda e: None,
               listener: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Tune ``model``'s default Relax chain for ``target`` within ``budget``; the report.

    Raises:
        UsageError: unknown model, bad target or budget, or a conversion that fails.
    """
    spec = get_model(model)
    tgt = parse_target(target)
    seconds = parse_budget(budget)
    chain = RELAX_CHAINS[spec.source]
    with open_session(store, listener=listener) as ex:
        build = ("tvm.build", {"tuning": "metaschedule", "target": tgt})
        pipeline = Pipeline.make(ex.registry, model, [*chain, build], "tvm")
        ev = Evaluation(pipeline, None)
        relax = ex.artifact(pipeline, len(chain), ev)
        if relax is None:
            f = ev.failure
            raise UsageError(f"converting {model} to Relax failed at {f.stage}: "  # type: ignore[union-attr]
                             f"{f.error_class}: {f.message}")  # type: ignore[union-attr]
        if listener:
            listener(f"tuning {model}")
        report = _tune_in_worker(ex.pool, relax, spec.to_dict(), tgt, seconds, on_event)
        library = None
        if report["covered"] >= report["tasks"]:
            if listener:
                listener(f"building the tuned library of {model}")
            library = ex.artifact(pipeline, len(pipeline.steps), ev)
    return {"model": model, "target": tgt, "pipeline": pipeline.to_dict(), **report,
            "complete": report["covered"] >= report["tasks"],
            "library": str(library) if library else None,
            "build_error": ev.failure.to_dict() if ev.failure else None,
            "index": tuning_status(model, tgt)}


def _tune_in_worker(pool: Any, relax: Path, model: dict[str, Any], target: Any, seconds: float,
                    on_event: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Send the tune request from a thread and pass the worker's progress lines to
    ``on_event`` while it runs."""
    fd, name = tempfile.mkstemp(prefix="fuzzconv-tune-", suffix=".jsonl")
    os.close(fd)
    progress = Path(name)
    answer: dict[str, Any] = {}
    msg = Call.to(tune_artifact, src=str(relax), model=model, target=target, budget_s=seconds,
                  max_trials=max_trials_from_env(), progress=str(progress))

    def ask() -> None:
        try:
            # Tuning stops starting tasks at the budget; one task and the start-up may run past.
            answer["result"] = pool.request("tvm", msg, timeout=seconds + 1800.0,
                                            start_timeout=600.0)
        except WorkerFailure as exc:
            answer["error"] = exc

    thread = threading.Thread(target=ask, name="fuzzconv-tune", daemon=True)
    thread.start()
    offset = 0
    try:
        while thread.is_alive():
            thread.join(0.5)
            events, offset = read_progress(progress, offset)
            for e in events:
                on_event(e)
        events, offset = read_progress(progress, offset)
        for e in events:
            on_event(e)
    finally:
        progress.unlink(missing_ok=True)
    if "error" in answer:
        exc = answer["error"]
        raise UsageError(f"tuning failed: {exc.error_class}: {exc.message}")
    return answer["result"]


class TuneDisplay:
    """A rich progress bar of a tuning run: tasks done of those to tune, trials, elapsed.

    It appears with the first message, so input refused before any work prints one line only.
    """

    def __init__(self, console: Any):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[trials]} trials"),
                                 TimeElapsedColumn(), TextColumn("{task.fields[now]}"),
                                 console=console, transient=False)
        self.task = self.progress.add_task("converting", total=None, trials=0, now="")
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def say(self, what: str) -> None:
        self._start()
        self.progress.update(self.task, description=what)

    def __call__(self, event: dict[str, Any]) -> None:
        self._start()
        kind = event.get("event")
        if kind == "start":
            already = event["tasks"] - event["todo"]
            self.progress.update(self.task, description="tuning tasks", total=event["todo"],
                                 completed=0, now=f"{already} of {event['tasks']} already tuned")
        elif kind == "trials":
            self.progress.update(self.task, trials=event["trials"], now=event["task"])
        elif kind == "task":
            self.progress.update(self.task, completed=event["tuned"], trials=event["trials"],
                                 now=f"{event['task']} done")
        elif kind == "end":
            self.progress.update(self.task, now=f"stopped: {event['stopped']}")

    def __enter__(self) -> "TuneDisplay":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.progress.stop()


def summary(report: dict[str, Any]) -> str:
    """The closing lines of ``fuzzconv tune``."""
    lines = [f"{report['model']}: {report['covered']} of {report['tasks']} workloads tuned "
             f"({report['tuned']} now, {report['trials']} trials, {report['seconds'] / 60:.1f} "
             f"min); database: {database_dir(report['target'])}"]
    if not report["complete"]:
        lines.append("the budget ran out: run fuzzconv tune again to tune the rest (a tuned "
                     "build tunes what is missing too)")
    elif report["library"]:
        lines.append(f"tuned library: {report['library']}")
    elif report["build_error"]:
        e = report["build_error"]
        lines.append(f"the tuned build failed: {e['error_class']}: {e['message'][:300]}")
    return "\n".join(lines)
