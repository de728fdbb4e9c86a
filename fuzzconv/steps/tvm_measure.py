"""MetaSchedule's moving parts that the pinned stack cannot use as shipped, rebuilt around it.

With apache-tvm 0.27.0.post1 and apache-tvm-ffi 0.1.15.post2, serialising any TVM IR object
(``SaveJSON``, hence ``tvm::ffi::ToJSONGraph``) segfaults, and MetaSchedule does that in many
places: ``JSONDatabase`` saves every workload with it; the ``evolutionary`` and ``replay-trace``
search strategies deep-copy the module per thread through it (``DeepCopyIRModule``); the
``MutateComputeLocation`` and ``MutateParallel`` mutators keep the module as JSON; and
``LocalBuilder`` pickles each candidate module for its worker processes (through ``cloudpickle``,
which the pinned stack does not install, nor ``xgboost`` for the XGB cost model or ``psutil``
for counting physical cores). What runs here instead:

- the ``replay-func`` search strategy (schedules sampled at random from the design space the
  default LLVM schedule rules generate), the ``random`` cost model, no mutators;
- :class:`Measurer`: a builder and a runner in ``spawn`` subprocesses that receive a candidate
  as TVMScript text and a built library as a file path, so nothing is pickled but strings and
  numbers, and a candidate that crashes or hangs costs only its own trial;
- :class:`TuningDatabase`: one JSON line per tuned workload, holding the workload as TVMScript
  and its best record as MetaSchedule's own record JSON (a trace, not IR); a MetaSchedule
  ``MemoryDatabase`` is filled from it to apply the schedules.

Every child runs with the parent's niceness; the builder uses one process per core, the runner
one process (measurements must not overlap).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..tuning import DATABASE_FILE, locked

if TYPE_CHECKING:
    import tvm

#: Seconds one candidate may take to build, and to run.
BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 30.0
#: A measured time above this (MetaSchedule writes 1e10 s for a failed run) is no measurement.
FAILED_S = 1e9


# -- children ------------------------------------------------------------------------------------
def build_candidate(script: str, target: str, out_dir: str) -> str:
    """Build one scheduled candidate from its TVMScript text into a library under ``out_dir``."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support import tar

    mod = tvm.script.from_source(script)
    # As MetaSchedule's own default_build: a layout rewrite of weights is measured as free.
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    lib = tvm.compile(mod, target=tvm.target.Target(json.loads(target)))
    path = os.path.join(tempfile.mkdtemp(dir=out_dir), "candidate.tar")
    lib.export_library(path, fcompile=tar.tar)
    return path


def run_candidate(path: str, args_info: list, number: int, repeat: int,
                  min_repeat_ms: int) -> list[float]:
    """Time one built candidate on random inputs (MetaSchedule's own evaluator): the fastest of
    ``repeat`` means of ``number`` runs. Other work on the machine only ever adds time, so the
    minimum is what ranks candidates fairly on a shared machine (a mean let a candidate timed in
    a quiet moment beat a better one)."""
    import tvm
    from tvm.s_tir.meta_schedule.runner.config import EvaluatorConfig
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common

    lib = tvm.runtime.load_module(path)
    dev = tvm.cpu(0)
    fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")
    args = alloc_argument_common(fill, dev, args_info, 1)
    config = EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return [min(run_evaluator_common(lib, dev, config, args))]


def plain(obj: Any) -> Any:
    """A TVM FFI container or scalar (as ``as_json`` answers give) as plain JSON data."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "items"):
        return {str(k): plain(v) for k, v in obj.items()}
    if hasattr(obj, "value"):
        return obj.value
    return [plain(x) for x in obj]


# -- builder and runner --------------------------------------------------------------------------
class _Pool:
    """A ``spawn`` process pool that is killed and replaced after a timeout or a crash."""

    # multiprocessing and concurrent.futures are imported when a pool is made: every worker
    # imports this module (through the registry), and only a tuning run needs them.
    def __init__(self, workers: int):
        self.workers = workers
        self.pool: Any = None

    def call(self, fns: list[tuple[Callable[..., Any], tuple]], timeout: float) -> list[Any]:
        """Run each ``(fn, args)``; an exception (or the pool dying) is that call's answer."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures import TimeoutError as FutureTimeout

        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers,
                                            mp_context=multiprocessing.get_context("spawn"))
        futures = [self.pool.submit(fn, *args) for fn, args in fns]
        answers: list[Any] = []
        broken = False
        for fut in futures:
            try:
                answers.append(fut.result(timeout=None if broken else timeout))
            except FutureTimeout:
                answers.append(TimeoutError(f"no answer within {timeout:g} s"))
                broken = True
                self.kill()
            except Exception as exc:  # noqa: BLE001 - a failed candidate is a result
                answers.append(exc)
                if type(exc).__name__ == "BrokenProcessPool":
                    broken = True
        if broken:
            self.kill()
        return answers

    def kill(self) -> None:
        if self.pool is None:
            return
        # ProcessPoolExecutor cannot cancel a running call; its processes are killed instead.
        for proc in list(getattr(self.pool, "_processes", {}).values()):
            proc.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None


class Measurer:
    """MetaSchedule builder and runner objects backed by subprocess pools; a context manager.

    Args:
        target: the target as a JSON dict (the builder's children rebuild it from this).
        cores: build processes. Defaults to the CPU count.
        number: runs per mean (after one warm-up). Defaults to 3.
        repeat: means per measurement, of which the fastest counts. Defaults to 3.
        min_repeat_ms: a mean takes at least this long. Defaults to 20 ms.
    """

    def __init__(self, target: dict[str, Any], cores: int | None = None, number: int = 3,
                 repeat: int = 3, min_repeat_ms: int = 20):
        self.target = json.dumps(target, sort_keys=True)
        self.number = number
        self.repeat = repeat
        self.min_repeat_ms = min_repeat_ms
        self.build_pool = _Pool(cores or os.cpu_count() or 1)
        self.run_pool = _Pool(1)
        self.scratch = tempfile.mkdtemp(prefix="fuzzconv-tune-")
        self.builder, self.runner = self._make()

    def _make(self) -> tuple[Any, Any]:
        from tvm.ir.utils import derived_object
        from tvm.s_tir import meta_schedule as ms

        measurer = self

        @derived_object
        class Builder(ms.builder.PyBuilder):
            def build(self, build_inputs: list) -> list:
                answers = measurer.build_pool.call(
                    [(build_candidate, (b.mod.script(), measurer.target, measurer.scratch))
                     for b in build_inputs], BUILD_TIMEOUT_S)
                return [ms.builder.BuilderResult(None, f"{type(a).__name__}: {a}"[:2000])
                        if isinstance(a, BaseException) else ms.builder.BuilderResult(a, None)
                        for a in answers]

        @derived_object
        class Runner(ms.runner.PyRunner):
            def run(self, runner_inputs: list) -> list:
                calls = [(run_candidate, (str(r.artifact_path),
                                          [plain(a.as_json()) for a in r.args_info],
                                          measurer.number, measurer.repeat,
                                          measurer.min_repeat_ms))
                         for r in runner_inputs]
                answers = [measurer.run_pool.call([c], RUN_TIMEOUT_S)[0] for c in calls]
                return [ms.runner.LocalRunnerFuture(error_message=f"{type(a).__name__}: {a}"[:2000])
                        if isinstance(a, BaseException) else ms.runner.LocalRunnerFuture(res=a)
                        for a in answers]

        return Builder(), Runner()

    def close(self) -> None:
        self.build_pool.kill()
        self.run_pool.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> "Measurer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- the database --------------------------------------------------------------------------------
def workload_key(mod: "tvm.IRModule") -> str:
    import tvm_ffi

    return f"{tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}"


class TuningDatabase:
    """The shared tuning database of one target (see :mod:`fuzzconv.tuning` for the layout).

    Each line: ``key`` (structural hash of the workload), ``name``, ``script`` (the workload as
    TVMScript), ``record`` (MetaSchedule's record JSON of the best schedule, or None when no
    candidate built and ran), ``best_s``, ``trials``, ``seconds``. A workload with a line is
    tuned; the first line of a key counts.
    """

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.path = self.dir / DATABASE_FILE
        self.entries: dict[str, dict[str, Any]] = {}
        self._offset = 0

    def refresh(self) -> "TuningDatabase":
        """Read the lines appended since the last read (under a shared lock)."""
        if not self.path.exists():
            return self
        with locked(self.dir, exclusive=False), open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed writer
            self.entries.setdefault(entry["key"], entry)
        self._offset += end
        return self

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def append(self, entry: dict[str, Any]) -> None:
        """Add one tuned workload (under an exclusive lock, flushed to disk)."""
        with locked(self.dir), open(self.path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")  # end a line a killed writer left unfinished
            f.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries.setdefault(entry["key"], entry)

    def memory_database(self, keys: list[str]) -> Any:
        """A MetaSchedule ``MemoryDatabase`` with the best schedule of each of ``keys`` that has
        one (only those workloads are parsed: a database of many models stays cheap to use)."""
        import tvm
        from tvm.s_tir import meta_schedule as ms

        db = ms.database.MemoryDatabase()
        for key in dict.fromkeys(keys):
            entry = self.entries.get(key)
            if not entry or entry.get("record") is None:
                continue
            workload = db.commit_workload(tvm.script.from_source(entry["script"]))
            db.commit_tuning_record(ms.database.TuningRecord.from_json(entry["record"], workload))
        return db
