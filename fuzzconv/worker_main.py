"""The child side of a framework worker: ``python -m fuzzconv.worker_main FAMILY [PLUGIN...]``.

It serves requests from :class:`fuzzconv.workers.Worker` until told to exit. This is the only
place where framework code runs; the requests and replies are :mod:`fuzzconv.protocol`'s.

Memory: CPython's cycle collector runs after a number of *object* allocations, not bytes. A
converter that deep-copies a graph holding its weights (tf2onnx copies its whole ONNX graph before
each of its optimizers) leaves a few thousand cyclic objects per copy that own hundreds of MB, and
the collector does not notice them: tf2onnx on resnet101v2 reached 10 GB resident that way, 4.6 GB
with the copies collected. :class:`Collector` runs a collection whenever the resident size has
grown by ``FUZZCONV_WORKER_GC_MB`` (512) since the last one. After each request the worker also
hands the C heap's free pages back to the system (glibc ``malloc_trim``): an idle ONNX Runtime
worker that ran resnet101v2 drops from 0.47 to 0.08 GB, a PyTorch one from 1.07 to 0.72 GB.
``FUZZCONV_WORKER_GC_MB=0`` turns both off.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .plugins import StepContext
from .protocol import (Build, BuildReply, Call, Exit, Hello, HelloReply, Memory, MemoryReply,
                       RunReply, RunRequest, StepReply, StepRequest, Warm, WarmReply, decode,
                       encode_reply, find_worker_function)
from .registry import fresh_registry
from .zoo import builder_of


GC_STEP_MB = 512


def resident_bytes(pid: int | str = "self") -> int | None:
    """The resident set size of a process from ``/proc`` (Linux), or None where there is none."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_resident_bytes() -> int | None:
    """This process's largest resident size so far (the kernel's ``VmHWM``), or None without
    ``/proc``.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``exec`` from the forked copy of
    the parent, so a worker started by a 600 MB orchestrator would report a 600 MB peak while it
    never held more than 35 MB.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class Collector:
    """A daemon thread that runs :func:`gc.collect` when this process has grown by ``step``
    bytes since the last collection (or since its smallest size after one).

    Checking costs one read of ``/proc/self/statm`` per ``interval``; a collection costs a walk
    over the tracked objects (about 0.3 s with TensorFlow and a large graph loaded), paid only
    after growth. Without ``/proc`` it does nothing.
    """

    def __init__(self, step: int, interval: float = 0.25):
        self.step = step
        self.interval = interval
        self.collections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fuzzconv-gc", daemon=True)

    def start(self) -> "Collector":
        if resident_bytes() is not None and self.step > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        base = resident_bytes() or 0
        while not self._stop.wait(self.interval):
            now = resident_bytes() or 0
            if now - base > self.step:
                gc.collect()
                self.collections += 1
                base = resident_bytes() or 0
            elif now < base:
                base = now


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)`` as a function, or a no-op where the C library has none."""
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def release() -> None:
        trim(0)

    return release


class Server:
    def __init__(self, family: str, plugin_files: list[str]):
        self.family = family
        self.registry = fresh_registry(plugin_files)
        self.collector: Collector | None = None

    def op_hello(self, request: Hello) -> HelloReply:
        from .versions import family_versions

        return HelloReply(self.family, os.getpid(), family_versions(self.family))

    def op_warm(self, request: Warm) -> WarmReply:
        """Import the family's frameworks now, so the first timed request does not pay for them."""
        from .registry import FAMILY_MODULES

        t0 = time.perf_counter()
        for mod in FAMILY_MODULES[self.family]:
            importlib.import_module(mod)
        return WarmReply(time.perf_counter() - t0)

    def op_memory(self, request: Memory) -> MemoryReply:
        """This process's resident size now and at its peak, and the collector's collections."""
        return MemoryReply(resident_bytes(), peak_resident_bytes(),
                           self.collector.collections if self.collector else 0)

    def op_build(self, request: Build) -> BuildReply:
        """Build a zoo model's source artifact with the requested weights."""
        builder = builder_of(request.model)
        t0 = time.perf_counter()
        info = builder(model=request.model, weights=request.weights, seed=request.seed,
                       dst=Path(request.dst), calibration=request.calibration) or {}
        return BuildReply(time.perf_counter() - t0, info)

    def op_step(self, request: StepRequest) -> StepReply:
        op = self.registry.get(request.step, "step")
        dst = Path(request.dst)
        ctx = StepContext(request.model, request.device, workdir=str(dst.parent))
        t0 = time.perf_counter()
        op.fn(ctx, Path(request.src), dst, **request.params)
        seconds = time.perf_counter() - t0
        if not dst.exists():
            raise RuntimeError(f"step {request.step} wrote no artifact")
        return StepReply(seconds)

    def op_run(self, request: RunRequest) -> RunReply:
        """Load the artifact, infer the whole input file in batches, time load and inference.

        ``repeats`` > 0 adds that many timed passes over the first batch after a warm-up, for
        fair speed comparisons (the first, cold pass is in ``infer_seconds``). ``image_repeats``
        > 0 adds that many timed passes over each image of the first batch alone (batch size 1,
        after a one-image warm-up, since a new batch shape can cost a re-plan), as
        ``image_seconds[pass][image]``; the study uses it for per-image latency.
        """
        op = self.registry.get(request.runtime, "runtime")
        ctx = StepContext(request.model, request.device,
                          workdir=str(Path(request.outputs).parent))
        x = np.load(request.inputs, allow_pickle=False)
        batch_size = request.batch_size
        t0 = time.perf_counter()
        predict: Callable[[np.ndarray], np.ndarray] = op.fn(ctx, Path(request.artifact),
                                                            **request.params)
        load = time.perf_counter() - t0
        t1 = time.perf_counter()
        y = infer_batches(predict, x, batch_size, request.model["classes"])
        infer = time.perf_counter() - t1
        timed = []
        if request.repeats and len(x):
            predict(x[:batch_size])
            for _ in range(request.repeats):
                t = time.perf_counter()
                predict(x[:batch_size])
                timed.append(time.perf_counter() - t)
        per_image: list[list[float]] = []
        if request.image_repeats and len(x):
            predict(x[:1])
            for _ in range(request.image_repeats):
                row = []
                for i in range(min(batch_size, len(x))):
                    t = time.perf_counter()
                    predict(x[i:i + 1])
                    row.append(time.perf_counter() - t)
                per_image.append(row)
        tmp = request.outputs + ".tmp.npy"
        np.save(tmp, y, allow_pickle=False)
        os.replace(tmp, request.outputs)
        return RunReply(load, infer, timed, list(y.shape),
                        per_image if request.image_repeats else None)

    def op_call(self, request: Call) -> Any:
        """Run a worker function (localization, reduction, study probes) inside this worker."""
        return find_worker_function(request.function, request.module)(**request.kwargs)


def infer_batches(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int,
                  classes: int) -> np.ndarray:
    """A runtime's outputs on ``x``, inferred ``batch_size`` images at a time, as float32
    ``(images, -1)``; ``(0, classes)`` for no images."""
    outs = [np.asarray(predict(x[i:i + batch_size]), dtype=np.float32).reshape(
        min(batch_size, len(x) - i), -1) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0) if outs else np.zeros((0, classes), np.float32)


def main(argv: list[str]) -> int:
    family, plugins = argv[0], argv[1:]
    out = os.fdopen(int(os.environ["FUZZCONV_WORKER_FD"]), "wb", buffering=0)
    server = Server(family, plugins)
    step_mb = int(os.environ.get("FUZZCONV_WORKER_GC_MB", "").strip() or GC_STEP_MB)
    server.collector = Collector(step_mb << 20).start()
    release = _malloc_trim() if step_mb > 0 else (lambda: None)
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            request = decode(json.loads(line))
        except (ValueError, TypeError) as exc:
            out.write((json.dumps({"ok": False, "error_class": type(exc).__name__,
                                   "error": str(exc), "traceback": ""}) + "\n").encode())
            continue
        if isinstance(request, Exit):
            # Skip the interpreter's teardown: unloading TensorFlow, torch or TVM takes 1-2 s
            # and there is nothing to save; the log is unbuffered and the answers are sent.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            handler = getattr(server, f"op_{request.op}")
            answer = {"ok": True, "result": encode_reply(handler(request))}
        except Exception as exc:  # noqa: BLE001 - every step failure is an outcome for the parent
            answer = {"ok": False, "error_class": type(exc).__name__,
                      "error": str(exc)[:2000], "traceback": traceback.format_exc()[-6000:]}
            print(answer["traceback"], file=sys.stderr, flush=True)
        release()
        out.write((json.dumps(answer, default=_json_default) + "\n").encode())
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
