"""Which Relax passes ``tvm.pass`` offers, found out from the installed TVM itself.

Candidates are every constructor in ``tvm.relax.transform``, called with no arguments and with the
plain-data values of :data:`PASS_ARG_CHOICES`. :func:`list_relax_passes` applies each to a tiny
imported module (:func:`probe_module`), checks the result, saves it as a relax artifact, compiles
and runs it, each in a child process so that a pass that segfaults or hangs only costs its own
entry; those that fail are left out with the reason. The answer is cached per TVM version in
``$FUZZCONV_CACHE/tvm-passes-<version>.json``; until then the step offers
:data:`FALLBACK_PASSES`, that function's answer on the pinned stack.

:func:`apply_pass` is how ``tvm.pass`` (and the probe) apply one pass. TVM and onnx are imported
inside the functions.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..cache import cache_home
from ..formats.relax import save_relax, tvm_version, vm_output
from ..protocol import worker_function

if TYPE_CHECKING:
    import onnx
    import tvm

# Argument values tried for passes that take arguments (the pass names themselves come from TVM).
# Only plain data is offered; a pass whose required arguments are functions, TIR or devices is
# left out of the list with the reason recorded.
PASS_ARG_CHOICES: dict[str, list[dict[str, Any]]] = {
    "FuseOps": [{"fuse_opt_level": 0}, {"fuse_opt_level": 1}, {"fuse_opt_level": 2}],
    # Layouts for conv2d only: pooling and reductions follow it, and naming them fails an
    # internal check (NoDesiredLayout(call, desired_layouts)) rather than raising an error.
    "ConvertLayout": [
        {"desired_layouts": {"relax.nn.conv2d": ["NHWC", "OHWI"]}},
        {"desired_layouts": {"relax.nn.conv2d": ["NHWC", "HWIO"]}},
    ],
    "ToMixedPrecision": [{"out_dtype": "float16"}],
    "TopologicalSort": [{"order": "breadth-first"}, {"direction": "from-outputs"},
                        {"order": "breadth-first", "direction": "from-outputs"}],
    "EliminateCommonSubexpr": [{"call_only": True}],
    "ConvertToDataflow": [{"min_size": 1}],
    "DeadCodeElimination": [{"entry_functions": ["main"]}],
    "DecomposeOpsForInference": [{"func_name": "main"}],
    "LiftTransformParams": [{"shared_transform": True}],
}

# Passes that change what is computed, not only how it is scheduled: reduced precision, fast
# approximations, layout changes and algebraic rewrites (the hunt tries these first).
ARITHMETIC_PASSES = {"AdjustMatmulOrder", "CombineParallelMatmul", "ConvertLayout",
                     "DecomposeOpsForInference", "DecomposeOpsForTraining", "ExpandMatmulOfSum",
                     "FastMathTransform", "FoldBatchnormToConv2D", "FuseTransposeMatmul",
                     "ToMixedPrecision"}

# Passes whose arguments are compute budgets, not plain choices: tuning runs for many minutes.
_NOT_PROBED = {
    "MetaScheduleTuneIRMod": "tunes kernels (needs a work directory and a trial budget)",
    "MetaScheduleTuneTIR": "tunes kernels (needs a work directory and a trial budget)",
}

# Used for the step's choices until list_relax_passes() has cached the list for this TVM version.
# It is that function's answer on apache-tvm 0.27.0.post1 (x86-64, LLVM 22).
FALLBACK_PASSES: dict[str, list[dict[str, Any]]] = {
    "AdjustMatmulOrder": [{}],
    "AllocateWorkspace": [{}],
    "AnnotateTIROpPattern": [{}],
    "AttachAttrLayoutFreeBuffers": [{}],
    "AttachGlobalSymbol": [{}],
    "CanonicalizeBindings": [{}],
    "CombineParallelMatmul": [{}],
    "ComputePrimValue": [{}],
    # Layouts for conv2d only: pooling and reductions follow it, and naming them fails an
    # internal check (NoDesiredLayout(call, desired_layouts)) rather than raising an error.
    "ConvertLayout": [
        {"desired_layouts": {"relax.nn.conv2d": ["NHWC", "OHWI"]}},
        {"desired_layouts": {"relax.nn.conv2d": ["NHWC", "HWIO"]}},
    ],
    "ConvertToDataflow": [{}, {"min_size": 1}],
    "DataflowUseInplaceCalls": [{}],
    "DeadCodeElimination": [{}, {"entry_functions": ["main"]}],
    "DecomposeOpsForInference": [{}, {"func_name": "main"}],
    "DecomposeOpsForTraining": [{}],
    "EliminateCommonSubexpr": [{}, {"call_only": True}],
    "ExpandMatmulOfSum": [{}],
    "ExpandTupleArguments": [{}],
    "FastMathTransform": [{}],
    "FoldBatchnormToConv2D": [{}],
    "FoldConstant": [{}],
    "FuseOps": [{}, {"fuse_opt_level": 0}, {"fuse_opt_level": 1}, {"fuse_opt_level": 2}],
    "FuseTIR": [{}],
    "FuseTransposeMatmul": [{}],
    "InlinePrivateFunctions": [{}],
    "LambdaLift": [{}],
    "LazyTransformParams": [{}],
    "LegalizeOps": [{}],
    "LiftTransformParams": [{}, {"shared_transform": True}],
    "LowerAllocTensor": [{}],
    "LowerGPUIPCAllocStorage": [{}],
    "MergeCompositeFunctions": [{}],
    "Normalize": [{}],
    "NormalizeGlobalVar": [{}],
    "OptimizeLayoutTransform": [{}],
    "RealizeVDevice": [{}],
    "RemovePurityChecking": [{}],
    "RemoveRedundantReshape": [{}],
    "RemoveUnusedOutputs": [{}],
    "RemoveUnusedParameters": [{}],
    "ReorderPermuteDimsAfterConcat": [{}],
    "ReorderTakeAfterMatmul": [{}],
    "RewriteCUDAGraph": [{}],
    "RewriteDataflowReshape": [{}],
    "RunCodegen": [{}],
    "SplitLayoutRewritePreproc": [{}],
    "StaticPlanBlockMemory": [{}],
    "ToMixedPrecision": [{}, {"out_dtype": "float16"}],
    "ToNonDataflow": [{}],
    "TopologicalSort": [
        {},
        {"order": "breadth-first"},
        {"direction": "from-outputs"},
        {"direction": "from-outputs", "order": "breadth-first"},
    ],
}


def pass_cache_path() -> Path:
    return cache_home() / f"tvm-passes-{tvm_version()}.json"


def cached_passes() -> dict[str, list[dict[str, Any]]] | None:
    path = pass_cache_path()
    if not path.exists():
        return None
    return json.loads(path.read_text())["passes"]


def pass_constructor(name: str) -> Callable[..., Any]:
    from tvm import relax

    return getattr(relax.transform, name)


def make_pass(name: str, args: dict[str, Any]) -> "tvm.transform.Pass":
    import tvm

    made = pass_constructor(name)(**args)
    if not isinstance(made, tvm.transform.Pass):
        raise TypeError(f"relax.transform.{name}(...) made a {type(made).__name__}, not a pass")
    return made


def apply_pass(mod: "tvm.IRModule", name: str, args: dict[str, Any],
                target: "tvm.target.Target") -> "tvm.IRModule":
    """Apply one pass the way ``tvm.pass`` does: opt level 3, the target in scope."""
    import tvm
    from tvm import relax

    with tvm.transform.PassContext(opt_level=3), target:
        out = make_pass(name, args)(mod)
    relax.analysis.well_formed(out)  # raises on the first violation
    return out


def _candidates() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
    """Every (pass, arguments) to probe, and the constructors left out with why."""
    from tvm import relax

    todo: list[tuple[str, dict[str, Any]]] = []
    skipped: dict[str, str] = {}
    for name in sorted(n for n in dir(relax.transform) if n[:1].isupper()):
        obj = getattr(relax.transform, name)
        if not callable(obj):
            continue
        if name in _NOT_PROBED:
            skipped[name] = _NOT_PROBED[name]
            continue
        try:
            params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is inspect.Parameter.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        variants = PASS_ARG_CHOICES.get(name, [])
        if required:
            variants = [v for v in variants if set(required) <= set(v)]
            if not variants:
                skipped[name] = f"needs arguments that are not plain data: {', '.join(required)}"
                continue
        else:
            variants = [{}, *variants]
        todo.extend((name, v) for v in variants)
    return todo, skipped


def probe_module() -> "tvm.IRModule":
    """A tiny imported module with the operators of the zoo's networks, batch axis symbolic.

    An NHWC input transposed to NCHW (as tf2onnx writes), conv + batch norm + relu6, a
    depthwise conv with a residual add, max pooling, a 1×1 conv concatenated, global average
    pooling, a MatMul + Add classifier and a softmax.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tvm.relax.frontend.onnx import from_onnx

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int, lo: float | None = None) -> onnx.TensorProto:
        a = rng.uniform(lo, 1.5, shape) if lo is not None else rng.normal(0, 0.3, shape)
        return numpy_helper.from_array(a.astype(np.float32), name)

    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("g", 8, lo=0.5),
             weight("beta", 8), weight("mean", 8), weight("var", 8, lo=0.5),
             weight("wd", 8, 1, 3, 3), weight("w2", 8, 8, 1, 1), weight("fc", 16, 10),
             weight("fcb", 10), numpy_helper.from_array(np.float32(0), "lo"),
             numpy_helper.from_array(np.float32(6), "hi")]
    node = helper.make_node
    nodes = [
        node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        node("Conv", ["t", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"]),
        node("Clip", ["bn", "lo", "hi"], ["r6"]),
        node("Conv", ["r6", "wd"], ["dw"], pads=[1, 1, 1, 1], group=8),
        node("Add", ["r6", "dw"], ["res"]),
        node("Relu", ["res"], ["r"]),
        node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["mp", "w2"], ["pw"]),
        node("Concat", ["mp", "pw"], ["cat"], axis=1),
        node("GlobalAveragePool", ["cat"], ["gap"]),
        node("Flatten", ["gap"], ["flat"]),
        node("MatMul", ["flat", "fc"], ["mm"]),
        node("Add", ["mm", "fcb"], ["logits"]),
        node("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12, 12, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return from_onnx(model)


def _probe_one(mod: "tvm.IRModule", name: str, args: dict[str, Any], x: np.ndarray,
               expected: np.ndarray, workdir: Path) -> dict[str, Any]:
    """Does ``name(**args)`` run standalone: apply, save (which parses back), build, run."""
    import tvm
    from tvm import relax

    t0 = time.perf_counter()
    stage = "apply"
    try:
        out = apply_pass(mod, name, args, tvm.target.Target("llvm"))
        stage = "save"
        save_relax(out, workdir / "module.json")
        stage = "build"
        with tvm.transform.PassContext(opt_level=3):
            ex = tvm.compile(out, target="llvm")
        stage = "run"
        vm = relax.VirtualMachine(ex, tvm.cpu())
        ys = [vm_output(vm["main"](tvm.runtime.tensor(x[:n]))) for n in (len(x), 1)]
        if [y.shape for y in ys] != [(len(x), 10), (1, 10)]:
            raise RuntimeError(f"outputs of shapes {[y.shape for y in ys]}")
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable on its own"
        last = (str(exc).strip().splitlines() or [""])[-1]
        return {"ok": False, "reason": f"{stage}: {type(exc).__name__}: {last}"[:300]}
    return {"ok": True, "max_abs_diff": float(np.abs(ys[0] - expected).max()),
            "seconds": round(time.perf_counter() - t0, 2)}


def probe_child(spec_path: str, out_path: str, indices: list[int]) -> None:
    """Probe the candidates at ``indices``, appending one JSON line per event to ``out_path``."""
    import tvm
    from tvm import relax

    todo = json.loads(Path(spec_path).read_text())
    mod = probe_module()
    x = np.random.default_rng(1).normal(size=(3, 12, 12, 3)).astype(np.float32)
    with tvm.transform.PassContext(opt_level=3):
        ref = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    expected = vm_output(ref["main"](tvm.runtime.tensor(x)))
    with open(out_path, "a") as out, tempfile.TemporaryDirectory() as tmp:
        for i in indices:
            name, args = todo[i]
            out.write(json.dumps({"i": i, "start": True}) + "\n")
            out.flush()
            res = _probe_one(mod, name, args, x, expected, Path(tmp))
            out.write(json.dumps({"i": i, **res}) + "\n")
            out.flush()


def _probe_shard(spec: Path, indices: list[int], out: Path,
                 stall_seconds: float) -> dict[int, dict[str, Any]]:
    """Probe ``indices`` in a child process, restarting it after a candidate kills it."""
    results: dict[int, dict[str, Any]] = {}
    out.touch()
    left = list(indices)
    while left:
        code = (f"from {probe_child.__module__} import {probe_child.__name__}; "
                f"{probe_child.__name__}({str(spec)!r}, {str(out)!r}, {left!r})")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        size, last, killed = -1, time.monotonic(), False
        while proc.poll() is None:
            if out.stat().st_size != size:
                size, last = out.stat().st_size, time.monotonic()
            elif time.monotonic() - last > stall_seconds:
                os.killpg(proc.pid, 9)
                proc.wait()
                killed = True
            time.sleep(0.2)
        started = None
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("start"):
                started = rec["i"]
            else:
                results[rec["i"]] = rec
                started = None
        if started is None:
            if proc.returncode != 0:
                raise RuntimeError(f"the pass probe exited with code {proc.returncode} outside "
                                   "any candidate")
            break
        why = f"hung for {stall_seconds:g} s" if killed else f"died (exit {proc.returncode})"
        results[started] = {"i": started, "ok": False, "reason": f"the probe {why}"}
        left = [i for i in left if i not in results]
    return results


def _run_probes(todo: list[tuple[str, dict[str, Any]]],
                stall_seconds: float) -> dict[int, dict[str, Any]]:
    """Probe in child processes, so a pass that segfaults or hangs only costs its own entry.

    One child per CPU (at most four), each on an interleaved share of the candidates, as
    compiling them is most of the time.
    """
    from concurrent.futures import ThreadPoolExecutor

    shards = max(1, min(4, os.cpu_count() or 1, len(todo)))
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(shards) as pool:
        spec = Path(tmp) / "todo.json"
        spec.write_text(json.dumps(todo))
        jobs = [pool.submit(_probe_shard, spec, list(range(k, len(todo), shards)),
                            Path(tmp) / f"out{k}.jsonl", stall_seconds) for k in range(shards)]
        return {i: rec for job in jobs for i, rec in job.result().items()}


@worker_function
def list_relax_passes(refresh: bool = False, stall_seconds: float = 300.0) -> dict[str, Any]:
    """The Relax passes that run on their own on an imported module, with their argument choices.

    Candidates are every constructor in ``tvm.relax.transform``, called with no arguments and
    with the plain-data values of :data:`PASS_ARG_CHOICES`. Each is applied (opt level 3, LLVM
    target in scope) to a tiny module from the ONNX frontend (:func:`probe_module`), the result
    is checked well-formed, saved as a relax artifact (which parses it back and compares),
    compiled with ``tvm.compile`` and run at batch sizes 3 and 1. A candidate that fails any of
    that is left out, with the reason. Its output is not compared: a pass that changes results
    is what a hunt looks for.

    The answer is cached in ``$FUZZCONV_CACHE/tvm-passes-<tvm version>.json``; the orchestrator
    (which must not import TVM) asks a tvm worker for it (a worker function).

    Args:
        refresh: probe again even when the cache file exists.
        stall_seconds: a probe that makes no progress for this long is killed and its
            candidate recorded as hanging.

    Returns:
        ``{"tvm": version, "passes": {name: [args, ...]}, "excluded": {name or
        "name(args)": reason}, "probe_max_abs_diff": {...}, "seconds": float}``.
    """
    path = pass_cache_path()
    if path.exists() and not refresh:
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    todo, excluded = _candidates()
    results = _run_probes(todo, stall_seconds)
    passes: dict[str, list[dict[str, Any]]] = {}
    diffs: dict[str, float] = {}
    for i, (name, args) in enumerate(todo):
        label = f"{name}({json.dumps(args, sort_keys=True)})" if args else name
        res = results[i]
        if res["ok"]:
            passes.setdefault(name, []).append(args)
            diffs[label] = res["max_abs_diff"]
        else:
            excluded[label] = res["reason"]
    answer = {"tvm": tvm_version(), "passes": passes, "excluded": dict(sorted(excluded.items())),
              "probe_max_abs_diff": diffs, "seconds": round(time.perf_counter() - t0, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(answer, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return answer
