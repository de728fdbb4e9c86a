"""The child side of a framework worker: ``python -m fuzzconv.worker_main FAMILY [PLUGIN...]``.

It serves requests from :class:`fuzzconv.workers.Worker` until told to exit. This is the only
place where framework code runs; see :mod:`fuzzconv.workers` for the protocol.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .plugins import StepContext
from .registry import fresh_registry


class Server:
    def __init__(self, family: str, plugin_files: list[str]):
        self.family = family
        self.registry = fresh_registry(plugin_files)

    def op_hello(self) -> dict[str, Any]:
        from .versions import family_versions

        return {"family": self.family, "pid": os.getpid(), "versions": family_versions(self.family)}

    def op_build(self, model: dict[str, Any], weights: str, seed: int, dst: str,
                 calibration: str | None = None) -> dict[str, Any]:
        """Build a zoo model's source artifact with the requested weights."""
        mod_name, fn_name = model["builder"].split(":")
        builder = getattr(importlib.import_module(mod_name), fn_name)
        t0 = time.perf_counter()
        info = builder(model=model, weights=weights, seed=seed, dst=Path(dst),
                       calibration=calibration) or {}
        return {"seconds": time.perf_counter() - t0, **info}

    def op_step(self, step: str, params: dict[str, Any], src: str, dst: str,
                model: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
        op = self.registry.get(step, "step")
        ctx = StepContext(model, device, workdir=str(Path(dst).parent))
        t0 = time.perf_counter()
        op.fn(ctx, Path(src), Path(dst), **params)
        seconds = time.perf_counter() - t0
        if not Path(dst).exists():
            raise RuntimeError(f"step {step} wrote no artifact")
        return {"seconds": seconds}

    def op_run(self, runtime: str, params: dict[str, Any], artifact: str, inputs: str,
               outputs: str, model: dict[str, Any], device: str = "cpu", batch_size: int = 8,
               repeats: int = 0, image_repeats: int = 0) -> dict[str, Any]:
        """Load the artifact, infer the whole input file in batches, time load and inference.

        ``repeats`` > 0 adds that many timed passes over the first batch after a warm-up, for
        fair speed comparisons (the first, cold pass is in ``infer_seconds``). ``image_repeats``
        > 0 adds that many timed passes over each image of the first batch alone (batch size 1,
        after a one-image warm-up, since a new batch shape can cost a re-plan), as
        ``image_seconds[pass][image]``; the study uses it for per-image latency.
        """
        op = self.registry.get(runtime, "runtime")
        ctx = StepContext(model, device, workdir=str(Path(outputs).parent))
        x = np.load(inputs, allow_pickle=False)
        t0 = time.perf_counter()
        predict: Callable[[np.ndarray], np.ndarray] = op.fn(ctx, Path(artifact), **params)
        load = time.perf_counter() - t0
        t1 = time.perf_counter()
        outs = [np.asarray(predict(x[i:i + batch_size]), dtype=np.float32).reshape(
            min(batch_size, len(x) - i), -1) for i in range(0, len(x), batch_size)]
        infer = time.perf_counter() - t1
        y = np.concatenate(outs, axis=0) if outs else np.zeros((0, model["classes"]), np.float32)
        timed = []
        if repeats and len(x):
            predict(x[:batch_size])
            for _ in range(repeats):
                t = time.perf_counter()
                predict(x[:batch_size])
                timed.append(time.perf_counter() - t)
        per_image: list[list[float]] = []
        if image_repeats and len(x):
            predict(x[:1])
            for _ in range(image_repeats):
                row = []
                for i in range(min(batch_size, len(x))):
                    t = time.perf_counter()
                    predict(x[i:i + 1])
                    row.append(time.perf_counter() - t)
                per_image.append(row)
        tmp = outputs + ".tmp.npy"
        np.save(tmp, y, allow_pickle=False)
        os.replace(tmp, outputs)
        answer = {"load_seconds": load, "infer_seconds": infer, "batch_seconds": timed,
                  "shape": list(y.shape)}
        if image_repeats:
            answer["image_seconds"] = per_image
        return answer

    def op_call(self, fn: str, kwargs: dict[str, Any]) -> Any:
        """Call ``module:function(**kwargs)`` inside this worker (localization, study helpers)."""
        mod_name, fn_name = fn.split(":")
        if not mod_name.startswith("fuzzconv."):
            raise ValueError("only fuzzconv functions may be called in a worker")
        return getattr(importlib.import_module(mod_name), fn_name)(**kwargs)


def main(argv: list[str]) -> int:
    family, plugins = argv[0], argv[1:]
    out = os.fdopen(int(os.environ["FUZZCONV_WORKER_FD"]), "wb", buffering=0)
    server = Server(family, plugins)
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        msg = json.loads(line)
        op = msg.pop("op")
        if op == "exit":
            break
        try:
            handler = getattr(server, f"op_{op}")
            answer = {"ok": True, "result": handler(**msg)}
        except Exception as exc:  # noqa: BLE001 - every step failure is an outcome for the parent
            answer = {"ok": False, "error_class": type(exc).__name__,
                      "error": str(exc)[:2000], "traceback": traceback.format_exc()[-6000:]}
            print(answer["traceback"], file=sys.stderr, flush=True)
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
