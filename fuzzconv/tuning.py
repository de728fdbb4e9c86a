"""Tuned TVM builds, as the orchestrator sees them: where the tuning database lives, what it
covers, how a tuned library takes its batches, and how a tuning run reports progress.

Nothing here imports a framework; the TVM side is :mod:`fuzzconv.steps.tvm_tuning`.

``tvm.build(tuning="metaschedule")`` compiles through MetaSchedule: the module's batch axis is
bound to :data:`TUNED_BATCH`, operators are legalized and fused, each fused kernel (a *workload*)
gets the best schedule the database holds for it, and workloads the database lacks are tuned
first, within a budget. The database is shared by every pipeline and model whose workloads
match, one per (TVM version, target, host CPU), under ``cache_home()/tvm-tuning/``:

- ``database.jsonl``: one line per tuned workload, appended under an exclusive lock on
  ``lock`` (readers take a shared one), so concurrent tuners never interleave a write; a line
  cut short by a killed process is skipped when read.
- ``index.json``: which models' modules a tuning run covered (tasks, tuned, trials, seconds),
  rewritten atomically under the same lock; what :func:`tuned_for` reads.
- ``target.json``: the target, host and TVM version the directory stands for.

API for the hunt (framework-free, cheap: one small JSON file read):

- :func:`tuned_for` ``(model, target="llvm") -> bool``: True when a tuning run has covered every
  workload of a Relax module of ``model`` for ``target`` on this host, so a tuned build of the
  model's default chain applies schedules and tunes nothing (it costs about an untuned
  build with fusion).
- :func:`tuning_status` ``(model, target="llvm") -> dict | None``: the index entry behind that
  answer, with ``tasks``, ``tuned``, ``trials``, ``seconds`` (tuning wall time spent so far) and
  ``complete``; None when the model was never tuned for the target. A build of an incomplete
  model tunes what is missing, up to :data:`BUILD_BUDGET_S` seconds.

A tuned library is cached by its pipeline like any artifact: it keeps the schedules the
database held when it was built (a build whose tuning ran out of budget keeps the kernels it did
not reach untuned until its cache entry goes).

Static batch: a tuned library takes batches of exactly :data:`TUNED_BATCH` images (MetaSchedule
tunes static shapes only). The build records it in ``static_batch.json`` beside the library, and
the ``tvm`` runtime feeds such a library through :func:`fixed_batches`, which splits a batch
and pads the last piece. Batch 1 keeps every tuned kernel shared by any batch size, and a
batch of 8 costs eight times one image either way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cache import cache_home
from .campaign import parse_budget
from .formats.relax import tvm_version

#: The batch every tuned library is compiled for.
TUNED_BATCH = 1
#: Trials for the most expensive workload of a module; lighter ones get fewer (see
#: :func:`trial_plan`). ``$FUZZCONV_TUNING_TRIALS`` lowers it.
MAX_TRIALS_PER_TASK = 64
#: Trials for the lightest workload (an elementwise kernel has few schedules worth trying).
MIN_TRIALS_PER_TASK = 8
#: Seconds a ``fuzzconv tune`` run tunes by default.
TUNE_BUDGET_S = 30 * 60.0
#: Seconds a tuned ``tvm.build`` may spend tuning workloads the database lacks
#: (``$FUZZCONV_TUNING_BUDGET`` changes it), leaving room for the compile in the step's timeout.
BUILD_BUDGET_S = 20 * 60.0
STATIC_BATCH_FILE = "static_batch.json"
DATABASE_FILE = "database.jsonl"
INDEX_FILE = "index.json"


# -- where the database lives --------------------------------------------------------------------
def canonical_target(target: str | dict[str, Any]) -> dict[str, Any]:
    """A target spec as a dict with sorted keys: ``"llvm"`` and ``{"kind": "llvm"}`` are one."""
    spec = {"kind": target} if isinstance(target, str) else dict(target)
    return json.loads(json.dumps(spec, sort_keys=True))


def host_cpu() -> dict[str, Any]:
    """What tuned schedules depend on besides the target: the CPU model and its core count."""
    model = platform.processor() or platform.machine()
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            model = found.group(1).strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count() or 1}


def database_dir(target: str | dict[str, Any] = "llvm") -> Path:
    """The tuning database directory for ``target`` on this host and TVM version."""
    spec = canonical_target(target)
    ident = {"target": spec, "host": host_cpu(), "tvm": tvm_version()}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    kind = re.sub(r"[^a-z0-9]+", "-", str(spec.get("kind", "target")).lower())
    return cache_home() / "tvm-tuning" / f"tvm-{tvm_version()}" / f"{kind}-{digest}"


def open_database_dir(target: str | dict[str, Any]) -> Path:
    """:func:`database_dir`, created, with its ``target.json``."""
    d = database_dir(target)
    d.mkdir(parents=True, exist_ok=True)
    about = d / "target.json"
    if not about.exists():
        _write_atomic(about, {"target": canonical_target(target), "host": host_cpu(),
                              "tvm": tvm_version()})
    return d


class locked:  # noqa: N801 - used as a function: `with locked(d):`
    """Hold ``directory/lock`` (``flock``) while in the ``with``: exclusive to write, shared to
    read. (A class rather than a generator so bug bundles can copy it with the build step.)"""

    def __init__(self, directory: Path, exclusive: bool = True):
        self.directory = directory
        self.exclusive = exclusive

    def __enter__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.file = open(self.directory / "lock", "a+")
        fcntl.flock(self.file.fileno(), fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
        self.file.close()


def _write_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


# -- what the database covers --------------------------------------------------------------------
def read_index(target: str | dict[str, Any] = "llvm") -> dict[str, Any]:
    f = database_dir(target) / INDEX_FILE
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return {"models": {}}


def record_coverage(target: str | dict[str, Any], model: str, module: str,
                    report: dict[str, Any]) -> None:
    """Note what a tuning run left covered for one module of ``model`` (its digest ``module``).

    ``report`` has ``tasks`` (workloads of the module), ``covered`` (of those, in the database
    now), ``trials`` and ``seconds`` (spent by this run); trials and seconds add up over runs.
    """
    d = open_database_dir(target)
    with locked(d):
        index = read_index(target)
        entry = index["models"].setdefault(model, {}).setdefault(
            module, {"trials": 0, "seconds": 0.0, "runs": 0})
        entry.update(tasks=report["tasks"], tuned=report["covered"],
                     complete=report["covered"] >= report["tasks"], updated=time.time())
        entry["trials"] += int(report.get("trials", 0))
        entry["seconds"] = round(entry["seconds"] + float(report.get("seconds", 0.0)), 1)
        entry["runs"] += 1
        _write_atomic(d / INDEX_FILE, index)


def tuning_status(model: str, target: str | dict[str, Any] = "llvm") -> dict[str, Any] | None:
    """The index entry of ``model`` for ``target``: a complete one if any, else the one with the
    largest share of workloads covered, the latest first; None when no tuning run covered
    anything of the model."""
    modules = read_index(target)["models"].get(model)
    if not modules:
        return None
    best = max(modules.items(), key=lambda kv: (
        kv[1].get("complete", False), kv[1].get("tuned", 0) / max(kv[1].get("tasks", 1), 1),
        kv[1].get("updated", 0.0)))
    return {"module": best[0], **best[1]}


def tuned_for(model: str, target: str | dict[str, Any] = "llvm") -> bool:
    """Whether every workload of a Relax module of ``model`` is tuned for ``target`` here."""
    status = tuning_status(model, target)
    return bool(status and status.get("complete"))


def trial_plan(costs: list[float], max_trials: int = MAX_TRIALS_PER_TASK,
               min_trials: int = MIN_TRIALS_PER_TASK) -> list[int]:
    """Trials per workload from its cost (FLOPs times how often the model calls it): the most
    expensive gets ``max_trials``, the others by the square root of their share (a kernel with
    a quarter of the cost gets half the trials), never fewer than ``min_trials``."""
    top = max(costs, default=0.0)
    if top <= 0:
        return [max(1, min(min_trials, max_trials))] * len(costs)
    low = min(min_trials, max_trials)
    return [max(low, round(max_trials * (c / top) ** 0.5)) for c in costs]


def tuning_cost(model: str, params: dict[str, Any]) -> tuple[float, str] | None:
    """What a ``tvm.build`` with ``params`` costs beyond compiling: the tuning budget when the
    database does not cover ``model`` yet, else nothing (for the hunt's cost model)."""
    if params.get("tuning") != "metaschedule" or tuned_for(model, params.get("target", "llvm")):
        return None
    return build_budget_from_env(), f"tunes first: {model} is not tuned (fuzzconv tune)"


def max_trials_from_env() -> int:
    raw = os.environ.get("FUZZCONV_TUNING_TRIALS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_TRIALS_PER_TASK


def build_budget_from_env() -> float:
    raw = os.environ.get("FUZZCONV_TUNING_BUDGET", "").strip()
    return parse_budget(raw) if raw else BUILD_BUDGET_S


# -- progress -------------------------------------------------------------------------------------
class ProgressLog:
    """Progress of a tuning run as JSON lines appended to a file, which another process polls
    (a worker request is synchronous, so the orchestrator reads the file while it waits).

    Events: ``start`` (tasks, todo, planned trials, budget), ``task`` (one workload finished:
    name, trials, best seconds), ``trials`` (trials so far, within a task), ``end`` (report).
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def __call__(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")


def read_progress(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events appended to ``path`` since byte ``offset``, and the offset after them (a line
    still being written is left for the next call)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    events = []
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + end


# -- static batch ---------------------------------------------------------------------------------
def write_static_batch(artifact_dir: Path, batch: int) -> None:
    (Path(artifact_dir) / STATIC_BATCH_FILE).write_text(json.dumps({"batch": int(batch)}) + "\n")


def read_static_batch(artifact_dir: Path) -> int | None:
    """The batch size a library was compiled for, or None when it takes any."""
    f = Path(artifact_dir) / STATIC_BATCH_FILE
    return int(json.loads(f.read_text())["batch"]) if f.exists() else None


def fixed_batches(predict: Callable[[np.ndarray], np.ndarray],
                  batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """``predict`` for a library that takes exactly ``batch`` images: any batch is cut into
    pieces of that size, the last padded with zeros (its padding rows are dropped)."""

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), batch):
            piece = x[i:i + batch]
            n = len(piece)
            if n < batch:
                piece = np.concatenate([piece, np.zeros((batch - n, *piece.shape[1:]), piece.dtype)])
            outs.append(np.asarray(predict(piece))[:n])
        return np.concatenate(outs) if outs else np.asarray(predict(x))

    return run


def tuned_fuses(params: dict[str, Any]) -> dict[str, Any]:
    """``tvm.build``'s parameters with ``relax_pipeline`` ``target`` under tuning: a tuned build
    always legalizes and fuses (its workloads are the fused kernels), so both values are one
    configuration."""
    if params.get("tuning", "none") != "none":
        return {**params, "relax_pipeline": "target"}
    return params
