"""What the study asks the workers (worker functions): which TVM build passes its ``tvm-disabled``
configuration can turn off, and the thread settings each framework runs with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cache import cache_home
from ..protocol import worker_function
from .configs import THREAD_ENV

# Passes of the target's Relax pipeline that lower the program: turning any one of them off makes
# tvm.compile fail (or crash), so "every pass disabled" means every other pass. Found by disabling
# each pass alone on the TVM probe module (apache-tvm 0.27.0.post1); tvm_disable_plan checks the
# remaining set still builds, and searches again, one pass at a time, on a TVM where it does not.
REQUIRED_PASSES = frozenset({
    "LegalizeOps", "CallTIRRewrite", "LowerAllocTensor", "LowerRuntimeBuiltin", "VMShapeLower",
    "AttachGlobalSymbol", "s_tir.LowerInitBlock", "s_tir.ConvertBlocksToOpaque",
    "s_tir.LowerOpaqueBlock", "tirx.FlattenBuffer", "tirx.MakePackedAPI", "tirx.LowerTVMBuiltin",
    "tirx.LowerIntrin",
})
# Not passes of their own: the containers the pipeline's passes run in.
_CONTAINERS = frozenset({"_pipeline", "sequential"})


def tvm_probe_build(disabled: Sequence[str], relax_pipeline: str,
                     record: list[tuple[str, int]] | None = None) -> np.ndarray:
    """Build the TVM probe module with ``disabled`` passes off and return its outputs."""
    import tvm
    from tvm import relax

    from ..formats.relax import vm_output
    from ..steps.relax_passes import probe_module

    target = tvm.target.Target("llvm")
    instruments = []
    if record is not None:
        @tvm.instrument.pass_instrument
        class _Record:
            def run_before_pass(self, mod: Any, info: Any) -> None:
                record.append((str(info.name), int(info.opt_level)))

        instruments.append(_Record())
    pipeline = relax.get_default_pipeline(target) if relax_pipeline == "target" else "default"
    with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled),
                                   instruments=instruments):
        ex = tvm.compile(probe_module(), target=target, relax_pipeline=pipeline)
    x = np.random.default_rng(1).normal(size=(3, 12, 12, 3)).astype(np.float32)
    return vm_output(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)))


def _probe_in_child(disabled: Sequence[str], relax_pipeline: str) -> np.ndarray | str:
    """:func:`tvm_probe_build` in a fresh process, since some disabled passes segfault TVM."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "y.npy"
        build = tvm_probe_build
        code = (f"import json, sys, numpy as np; from {build.__module__} import {build.__name__}; "
                f"np.save(sys.argv[3], {build.__name__}(json.loads(sys.argv[1]), sys.argv[2]))")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(disabled)),
                               relax_pipeline, str(out)], capture_output=True, text=True)
        if proc.returncode == 0 and out.exists():
            return np.load(out, allow_pickle=False)
        lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        return f"exit {proc.returncode}: {lines[-1][:200] if lines else 'no message'}"


@worker_function
def tvm_disable_plan(relax_pipeline: str = "target", refresh: bool = False) -> dict[str, Any]:
    """Which passes of TVM's build pipeline the study's ``tvm-disabled`` configuration turns off.

    Runs in a tvm worker (op ``call``). One instrumented build of the probe module from
    :mod:`fuzzconv.steps.relax_passes` lists the passes ``tvm.compile`` runs, with the
    ``opt_level`` each is registered at; every one but :data:`REQUIRED_PASSES` is disabled, and the probe is built again
    that way (in a child process) to check the set works. Where it does not (another TVM), the
    passes are tried one at a time instead and only those whose absence alone builds are kept.
    The answer is cached in ``$FUZZCONV_CACHE/tvm-disable-<version>-<pipeline>.json``.

    Args:
        relax_pipeline: ``target`` (``relax.get_default_pipeline``) or ``default``.
        refresh: ignore the cached answer.

    Returns:
        ``{"tvm", "relax_pipeline", "passes": [[name, opt_level], ...], "disabled": [...],
        "required": [...], "probe_max_abs_diff", "searched": bool, "seconds"}``.
    """
    from ..formats.relax import tvm_version

    path = cache_home() / f"tvm-disable-{tvm_version()}-{relax_pipeline}.json"
    if path.exists() and not refresh:
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    record: list[tuple[str, int]] = []
    ref = tvm_probe_build([], relax_pipeline, record)
    levels = dict(record)
    names = [n for n in levels if n not in _CONTAINERS]
    disabled = [n for n in names if n not in REQUIRED_PASSES]
    got = _probe_in_child(disabled, relax_pipeline)
    searched = isinstance(got, str)
    if searched:
        disabled = [n for n in names if not isinstance(_probe_in_child([n], relax_pipeline), str)]
        got = _probe_in_child(disabled, relax_pipeline)
        if isinstance(got, str):
            raise RuntimeError(f"no set of disabled passes builds the probe module: {got}")
    answer = {"tvm": tvm_version(), "relax_pipeline": relax_pipeline,
              "passes": [[n, levels[n]] for n in names],
              "disabled": disabled, "required": [n for n in names if n not in disabled],
              "probe_max_abs_diff": float(np.abs(got - ref).max()), "searched": searched,
              "seconds": round(time.perf_counter() - t0, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(answer, indent=1) + "\n")
    os.replace(tmp, path)
    return answer


@worker_function
def thread_report(family: str) -> dict[str, Any]:
    """The thread settings a framework worker runs with (op ``call``), as it reports them."""
    out: dict[str, Any] = {"env": {k: os.environ.get(k) for k in THREAD_ENV}}
    if family == "torch":
        import torch

        out.update(torch_num_threads=torch.get_num_threads(),
                   torch_num_interop_threads=torch.get_num_interop_threads())
    elif family == "tf":
        import tensorflow as tf

        # 0 means "TensorFlow's default", which reads TF_NUM_INTRAOP_THREADS.
        out.update(tf_intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
                   tf_inter_op=tf.config.threading.get_inter_op_parallelism_threads())
    elif family == "tvm":
        import tvm

        out["tvm_runtime_threads"] = int(tvm.get_global_func("runtime.NumThreads")())
    elif family == "ort":
        import onnxruntime

        out["ort"] = onnxruntime.__version__
    return out


def same_pass_levels(plan: dict[str, Any]) -> list[list[int]]:
    """TVM opt levels 0-4 grouped by the passes they run (a pass runs at levels ≥ its own)."""
    if not plan.get("ok"):
        return [[k] for k in range(5)]
    groups: dict[frozenset, list[int]] = {}
    for k in range(5):
        groups.setdefault(frozenset(n for n, lvl in plan["passes"] if lvl <= k), []).append(k)
    return list(groups.values())
