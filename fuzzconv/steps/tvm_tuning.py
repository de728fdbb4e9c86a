"""Tuned TVM builds (TVM side): ``tvm.build(tuning="metaschedule")`` and ``fuzzconv tune``.

A tuned build runs MetaSchedule's flow for static shapes, the one
``relax.get_pipeline("static_shape_tuning")`` and ``meta_schedule.relax_integration.compile_relax``
follow: bind the batch axis (:data:`fuzzconv.tuning.TUNED_BATCH`), decompose batch norm, legalize,
fold constants, fuse operators and their TIR (:func:`fuse`); extract one task per distinct fused
kernel; tune the tasks the shared database lacks (:func:`tune_module`); apply the best schedule of
each task, then lower and finalise as the CPU pipeline does (:func:`tuned_compile`). A kernel the
database has no schedule for stays as legalized, as in an untuned build.

Tuning cost is bounded twice: each task gets a fixed number of trials from its share of the
module's FLOPs (:func:`fuzzconv.tuning.trial_plan`, at most ``MAX_TRIALS_PER_TASK``), so a
workload is tuned the same whoever tunes it first, and a run stops starting tasks once its time
budget is spent (tasks run most expensive first, so a short budget tunes what matters most).
Each finished task is written to the database at once: a run that is killed keeps its work.

How MetaSchedule is driven on this stack (no evolutionary search, own builder, runner and
database) is explained in :mod:`fuzzconv.steps.tvm_measure`.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UsageError
from ..protocol import worker_function
from ..tuning import (TUNED_BATCH, ProgressLog, build_budget_from_env, canonical_target,
                      max_trials_from_env, open_database_dir, record_coverage, trial_plan,
                      write_static_batch)
from .tvm_measure import FAILED_S, Measurer, TuningDatabase, plain, workload_key

if TYPE_CHECKING:
    import tvm

TUNINGS = ("none", "metaschedule")
#: Candidates built and measured per round of a task.
TRIALS_PER_ROUND = 16


def tuning_target(target: str | dict[str, Any]) -> dict[str, Any]:
    """The target spec MetaSchedule tunes for: ``num-cores`` set (its CPU schedule rules need
    it) to the cores here unless given."""
    spec = canonical_target(target)
    spec.setdefault("num-cores", os.cpu_count() or 1)
    return spec


def bind_static_batch(mod: "tvm.IRModule", batch: int = TUNED_BATCH) -> tuple["tvm.IRModule", int]:
    """``mod`` with the batch axis of ``main``'s input bound to ``batch``; a module whose batch
    is already static keeps it. Returns the module and its batch.

    The ONNX frontend emits some operators (Clip's maximum and minimum) as TIR functions whose
    buffers share ``main``'s symbolic batch variable; ``BindSymbolicVars`` leaves those as they
    are, and ``FuseTIR`` then fails ("Inconsistent buffers ... mapped to the same relax var"),
    so the TIR functions are specialised to their call sites too.
    """
    import tvm
    from tvm import relax

    dim = mod["main"].params[0].ty.shape[0]
    if isinstance(dim, tvm.tirx.IntImm):
        return mod, int(dim)
    mod = relax.transform.BindSymbolicVars({dim: batch}, "main")(mod)
    return relax.transform.SpecializePrimFuncBasedOnCallSite()(mod), batch


def fuse(mod: "tvm.IRModule", target: "tvm.target.Target") -> "tvm.IRModule":
    """Legalize and fuse as MetaSchedule's task extraction expects (in the caller's PassContext)."""
    import tvm
    from tvm import relax

    with target:
        return tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            *relax.pipeline.library_dispatch_passes(target),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ])(mod)


def _task_cost(task: Any) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        flops = float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # noqa: BLE001 - an unestimable kernel counts as light
        flops = 0.0
    return max(flops, 1.0) * int(task.weight)


def _tune_task(task: Any, trials: int, measurer: Measurer, work_dir: str,
               on_trials: Callable[[int], None]) -> dict[str, Any]:
    """Tune one task; its database entry (the best record, or None when nothing ran)."""
    import tvm
    import tvm_ffi
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    done = [0]

    @derived_object
    class Count(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any,
                  builder_results: Any, runner_results: Any) -> None:
            done[0] += len(runner_results)
            on_trials(done[0])

    mod = task.dispatched[0]
    ctx = ms.TuneContext(
        mod=mod, target=task.target, task_name=task.task_name, num_threads=os.cpu_count() or 1,
        rand_state=1, search_strategy="replay-func",
        space_generator=ms.space_generator.PostOrderApply(sch_rules="llvm", postprocs="llvm",
                                                          mutator_probs={}))
    memory = ms.database.MemoryDatabase()
    t0 = time.perf_counter()
    ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=work_dir, max_trials_global=trials,
                  max_trials_per_task=trials, num_trials_per_iter=min(trials, TRIALS_PER_ROUND),
                  builder=measurer.builder, runner=measurer.runner, database=memory,
                  cost_model="random", task_scheduler="round-robin",
                  measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                     Count()])
    script = mod.script()
    best = memory.get_top_k(memory.commit_workload(mod), 1)
    record = plain(best[0].as_json()) if best else None
    best_s = min((float(s) for s in best[0].run_secs), default=None) if best else None
    if best_s is None or best_s >= FAILED_S:
        record, best_s = None, None
    # The applied schedule comes from the parsed text: a workload that does not parse back to
    # itself would never match, so it is recorded without a schedule.
    if record is not None and not tvm_ffi.structural_equal(tvm.script.from_source(script), mod):
        record = None
    return {"key": workload_key(mod), "name": task.task_name, "script": script,
            "record": record, "best_s": best_s, "trials": done[0],
            "seconds": round(time.perf_counter() - t0, 2), "target": plain(task.target.export())}


def tune_module(fused: "tvm.IRModule", target: str | dict[str, Any], budget_s: float,
                max_trials: int, progress: ProgressLog) -> tuple[dict[str, Any], TuningDatabase,
                                                                 list[str]]:
    """Tune the tasks of a fused module that the database for ``target`` (as the pipeline
    gives it) lacks.

    Returns the report (``tasks``, ``covered`` after the run, ``tuned`` now, ``trials``,
    ``seconds``, ``stopped``: ``done`` or ``budget``), the database and the tasks' keys.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    t0 = time.monotonic()
    spec = tuning_target(target)
    tasks = ms.relax_integration.extract_tasks(fused, tvm.target.Target(spec))
    keys = [workload_key(t.dispatched[0]) for t in tasks]
    db = TuningDatabase(open_database_dir(target)).refresh()
    plan = trial_plan([_task_cost(t) for t in tasks], max_trials)
    todo = sorted((i for i, k in enumerate(keys) if k not in db), key=lambda i: -_task_cost(tasks[i]))
    progress("start", tasks=len(tasks), todo=len(todo), planned=sum(plan[i] for i in todo),
             budget_s=budget_s)
    tuned = trials = 0
    stopped = "done"
    if todo:
        with Measurer(spec) as measurer:
            for i in todo:
                if time.monotonic() - t0 >= budget_s:
                    stopped = "budget"
                    break
                if keys[i] in db.refresh():
                    continue  # another process tuned it meanwhile
                name = tasks[i].task_name
                entry = _tune_task(tasks[i], plan[i], measurer, measurer.scratch,
                                   lambda n, name=name: progress("trials", task=name,
                                                                 trials=trials + n))
                db.append(entry)
                tuned += 1
                trials += entry["trials"]
                progress("task", task=name, trials=trials, tuned=tuned, best_s=entry["best_s"],
                         planned=plan[i])
    report = {"tasks": len(tasks), "covered": sum(k in db for k in keys), "tuned": tuned,
              "trials": trials, "seconds": round(time.monotonic() - t0, 1), "stopped": stopped}
    progress("end", **report)
    return report, db, keys


def module_digest(path: Path) -> str:
    """What identifies a Relax artifact in the tuning index: a hash of its module file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def tuned_compile(ctx: Any, mod: "tvm.IRModule", target: str | dict[str, Any], tuning: str,
                  opt_level: int, disabled_passes: list[str], src: Path, dst_dir: Path) -> Any:
    """Compile ``mod`` with MetaSchedule schedules for ``target``, tuning what is missing first
    (budget ``$FUZZCONV_TUNING_BUDGET``, trials ``$FUZZCONV_TUNING_TRIALS``). Records the static
    batch in ``dst_dir`` and the coverage in the tuning index. Returns the VM executable."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

    if tuning not in TUNINGS:
        raise UsageError(f"tvm.build: tuning must be one of {', '.join(TUNINGS)}, not {tuning!r}")
    if ctx.device != "cpu":
        raise UsageError("tvm.build: tuning is for CPU targets (device cpu)")
    spec = tuning_target(target)
    tgt = tvm.target.Target(spec)
    mod, batch = bind_static_batch(mod)
    with tvm.transform.PassContext(opt_level=opt_level, disabled_pass=disabled_passes):
        fused = fuse(mod, tgt)
        report, db, keys = tune_module(fused, target, build_budget_from_env(),
                                       max_trials_from_env(), ProgressLog(None))
        record_coverage(target, ctx.model["name"], module_digest(src), report)
        with tgt, db.memory_database(keys):
            applied = relax.transform.MetaScheduleApplyDatabase()(fused)
        # From the CPU backend's own module: relax.pipeline.dataflow_lower_passes(llvm target)
        # raises AttributeError, as the backend package does not export that function.
        lower = tvm.transform.Sequential([*cpu_pipeline.dataflow_lower_passes(tgt),
                                          *cpu_pipeline.finalize_passes(tgt)])
        executable = tvm.compile(applied, target=tgt, relax_pipeline=lower)
    write_static_batch(dst_dir, batch)
    return executable


def tune_relax(mod: "tvm.IRModule", digest: str, model: str, target: str | dict[str, Any],
               budget_s: float, max_trials: int, progress: str | None) -> dict[str, Any]:
    """Tune the workloads of a Relax module (``digest``: :func:`module_digest` of its artifact)
    as a default tuned build would see them (opt level 3, no pass disabled), without compiling
    it; for ``fuzzconv tune``, progress appended to the file ``progress``. Returns the report
    with the database directory."""
    import tvm

    mod, _ = bind_static_batch(mod)
    with tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, tvm.target.Target(tuning_target(target)))
    report, _, _ = tune_module(fused, target, budget_s, max_trials, ProgressLog(progress))
    record_coverage(target, model, digest, report)
    return {**report, "database": str(open_database_dir(target))}


@worker_function
def tune_artifact(src: str, model: dict[str, Any], target: Any, budget_s: float,
                  max_trials: int, progress: str | None = None) -> dict[str, Any]:
    """Tune the workloads of a Relax artifact into the shared database (``fuzzconv tune``),
    appending progress lines to the file ``progress``; runs in the tvm worker."""
    from ..formats.relax import load_relax

    return tune_relax(load_relax(Path(src)), module_digest(Path(src)), model["name"], target,
                      budget_s, max_trials, progress)
