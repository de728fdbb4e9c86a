"""Worker functions for the study's interleaved timing: one timed pass of one configuration, with
the runtime kept loaded between rounds, and letting the loaded runtimes go.

The host (:mod:`.rounds`) asks each configuration of a model for one pass per round, in a fresh
order each round; loading an artifact for every pass would make a round cost minutes (Keras and
``torch.compile`` load slowly) without changing what is timed, so a worker keeps each runtime it
loaded, keyed by its ``slot`` (the configuration's name), until :func:`release_timed`. A worker
that dies loses them; the next pass loads again, and only the load is slower.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..protocol import worker_function

#: slot -> (what was loaded, the predict function, the first batch, load seconds)
_LOADED: dict[str, tuple[tuple[Any, ...], Callable[[np.ndarray], np.ndarray], np.ndarray, float]] = {}


def _predictor(slot: str, runtime: str, params: dict[str, Any], artifact: str, inputs: str,
               model: dict[str, Any], device: str, batch_size: int, outputs: str | None
               ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, float, bool]:
    from ..plugins import StepContext
    from ..registry import default_registry

    what = (runtime, repr(sorted(params.items())), artifact, inputs, device, batch_size)
    held = _LOADED.get(slot)
    if held is not None and held[0] == what:
        return held[1], held[2], held[3], False
    op = default_registry().get(runtime, "runtime")
    ctx = StepContext(model, device, workdir=str(Path(artifact).parent))
    x = np.load(inputs, allow_pickle=False)[:batch_size]
    t0 = time.perf_counter()
    predict = op.fn(ctx, Path(artifact), **params)
    load = time.perf_counter() - t0
    # Warm-up, once per load: the first calls plan, compile or allocate, per batch shape.
    y = np.asarray(predict(x), dtype=np.float32).reshape(len(x), -1)
    predict(x[:1])
    if outputs:  # the host compares them with the labelled run's: a fresh load, same images
        np.save(outputs, y, allow_pickle=False)
    _LOADED[slot] = (what, predict, x, load)
    return predict, x, load, True


@worker_function
def timed_pass(slot: str, runtime: str, params: dict[str, Any], artifact: str, inputs: str,
               model: dict[str, Any], device: str = "cpu", batch_size: int = 8,
               outputs: str | None = None) -> dict[str, Any]:
    """One timed pass of a configuration: the first batch once, then each of its images alone.

    Runs in the worker of the runtime's family (op ``call``). The runtime is loaded and warmed up
    on the first pass of ``slot`` (or when what ``slot`` names changed) and kept for the next.

    Args:
        slot: the configuration's name in this study (``onnx-tvm``, ``keras-rebuilt``, ...).
        runtime: the runtime's registered name; ``params`` its parameters.
        artifact: the artifact file to load.
        inputs: the ``.npy`` batch whose first ``batch_size`` images are timed.
        model: the model spec, as a dict.
        device: where it runs. Defaults to "cpu".
        batch_size: images per batch. Defaults to 8.
        outputs: where a load saves its warm-up outputs on the batch (``.npy``). Defaults to None.

    Returns:
        ``{"batch_seconds": float, "image_seconds": [float per image], "loaded": bool,
        "load_seconds": float}``; ``loaded`` says this pass loaded the runtime first.
    """
    predict, x, load, loaded = _predictor(slot, runtime, params, artifact, inputs, model, device,
                                          batch_size, outputs)
    t = time.perf_counter()
    predict(x)
    batch = time.perf_counter() - t
    images = []
    for i in range(len(x)):
        t = time.perf_counter()
        predict(x[i:i + 1])
        images.append(time.perf_counter() - t)
    return {"batch_seconds": batch, "image_seconds": images, "loaded": loaded,
            "load_seconds": load}


@worker_function
def release_timed() -> dict[str, Any]:
    """Let every runtime :func:`timed_pass` holds go (after a model's rounds)."""
    import gc

    slots = sorted(_LOADED)
    _LOADED.clear()
    gc.collect()
    return {"released": slots}
