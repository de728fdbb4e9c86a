"""TVM Relax steps and the ``tvm`` runtime: ONNX and PyTorch into Relax, Relax passes, compilation.

apache-tvm 0.27 is Relax-only. Its two artifact formats, ``relax`` (a Relax IRModule as TVMScript
text, ``module.json``) and ``tvm`` (a compiled library, ``lib.so``), are described and read in
:mod:`fuzzconv.formats.relax`.

Input layout: ``keras.tf2onnx(inputs_as_nchw=True)`` makes an NCHW ONNX input for an NHWC model
(recorded in the ONNX metadata, see :mod:`fuzzconv.formats.layout`), and onnx2torch keeps that in
its manifest. The importing steps record the layout the module takes in
``layout.json`` beside the artifact; ``tvm.pass`` and ``tvm.build`` copy it on, and the runtime
transposes the batches it is given (always in the model's own layout) to it. A relax artifact
without the file (one written by a ``tvm_transform`` plugin) gets its layout from the shape of
``main``'s input at build time.

Batch size: both importers keep the batch axis symbolic (``from_onnx`` keeps a symbolic ONNX
dimension; ``torch.export`` is given a dynamic batch), so one artifact takes the executor's batches
of 8 and its smaller last batch.

Passes: ``tvm.pass`` applies one pass of ``tvm.relax.transform``. Which passes can run on their
own on an imported module is found out from TVM itself by :func:`list_relax_passes` (see there),
cached per TVM version in ``$FUZZCONV_CACHE/tvm-passes-<version>.json``.

TVM, onnx and torch are imported inside functions: the orchestrator imports this module to read
the registry and must stay framework-free.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..cache import cache_home
from ..errors import UsageError
from ..formats.layout import (image_shape, onnx_input_layout, read_input_layout, to_layout,
                              write_input_layout)
from ..formats.relax import load_relax, save_relax, tvm_version, vm_output
from ..formats.torch import load_torch_module, module_input_layout
from ..plugins import StepContext, runtime, step
from ..registry import register

if TYPE_CHECKING:
    import tvm


# -- helpers ----------------------------------------------------------------------------------
def _module_input_layout(ctx: StepContext, mod: "tvm.IRModule", artifact_dir: Path) -> str:
    """The layout ``main`` takes: the recorded one, else read off its input's static shape."""
    recorded = read_input_layout(artifact_dir)
    if recorded:
        return recorded
    import tvm

    dims = [int(d) if isinstance(d, tvm.tirx.IntImm) else None
            for d in mod["main"].params[0].ty.shape][1:]
    for layout in ("NHWC", "NCHW"):
        if dims == image_shape(ctx, layout):
            return layout
    raise RuntimeError(f"main takes images of shape {dims}, which fits neither layout of "
                       f"{ctx.model['name']} {ctx.input_shape}")


def _target(ctx: StepContext, spec: str | dict) -> "tvm.target.Target":
    """The compilation target: ``spec`` (an LLVM target) on CPU; CUDA with it as host on cuda."""
    import tvm

    host = tvm.target.Target(spec)
    if host.kind.name != "llvm":
        raise UsageError(f"target {spec!r}: give an LLVM (CPU) target; with device cuda the "
                         "model is compiled for CUDA with this target as host")
    attrs = dict(host.attrs)
    mcpu = attrs.get("mcpu")
    triple = attrs.get("mtriple") or tvm.target.codegen.llvm_get_system_triple()
    if mcpu and not tvm.target.codegen.llvm_is_valid_cpu(str(mcpu), str(triple)):
        # LLVM would log an error and quietly compile for a generic CPU instead.
        raise UsageError(f"target {spec!r}: LLVM does not know the CPU {mcpu!r}")
    if ctx.device == "cuda":
        return tvm.target.Target("cuda", host=host)
    return host


# -- importers ---------------------------------------------------------------------------------
@step("onnx.tvm", src="onnx", dst="relax", family="tvm")
def onnx_to_relax(ctx: StepContext, src: Path, dst: Path) -> None:
    """The Relax ONNX frontend (``from_onnx``), weights as constants, batch axis symbolic."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(src))
    # The frontend turns a symbolic ONNX dimension (every exporter here leaves the batch axis
    # symbolic) into a symbolic Relax one.
    save_relax(from_onnx(model), dst)
    write_input_layout(dst.parent, onnx_input_layout(model) or ctx.model["layout"])


@step("torch.tvm", src="torch", dst="relax", family="tvm", decompose=[True, False])
def torch_to_relax(ctx: StepContext, src: Path, dst: Path, decompose: bool = True) -> None:
    """``torch.export`` (batch axis dynamic) then the Relax exported-program frontend.

    ``decompose`` is the frontend's ``run_ep_decomposition``: decompose to core ATen first
    (the default) or translate the exported operators as they are.
    """
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    module = load_torch_module(src)
    layout = module_input_layout(src, ctx.model["layout"])
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would pin the batch axis.
    example = (torch.zeros([2, *image_shape(ctx, layout)]),)
    exported = torch.export.export(module, example,
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    mod = from_exported_program(exported, run_ep_decomposition=bool(decompose),
                                unwrap_unit_return_tuple=True)
    save_relax(mod, dst)
    write_input_layout(dst.parent, layout)


# -- passes ------------------------------------------------------------------------------------
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


def _cached_passes() -> dict[str, list[dict[str, Any]]] | None:
    path = pass_cache_path()
    if not path.exists():
        return None
    return json.loads(path.read_text())["passes"]


def _pass_constructor(name: str) -> Callable[..., Any]:
    from tvm import relax

    return getattr(relax.transform, name)


def _make_pass(name: str, args: dict[str, Any]) -> "tvm.transform.Pass":
    import tvm

    made = _pass_constructor(name)(**args)
    if not isinstance(made, tvm.transform.Pass):
        raise TypeError(f"relax.transform.{name}(...) made a {type(made).__name__}, not a pass")
    return made


def _apply_pass(mod: "tvm.IRModule", name: str, args: dict[str, Any],
                target: "tvm.target.Target") -> "tvm.IRModule":
    """Apply one pass the way ``tvm.pass`` does: opt level 3, the target in scope."""
    import tvm
    from tvm import relax

    with tvm.transform.PassContext(opt_level=3), target:
        out = _make_pass(name, args)(mod)
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


def _probe_module() -> "tvm.IRModule":
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
        out = _apply_pass(mod, name, args, tvm.target.Target("llvm"))
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


def _probe_child(spec_path: str, out_path: str, indices: list[int]) -> None:
    """Probe the candidates at ``indices``, appending one JSON line per event to ``out_path``."""
    import tvm
    from tvm import relax

    todo = json.loads(Path(spec_path).read_text())
    mod = _probe_module()
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
        code = (f"from fuzzconv.steps.tvm import _probe_child; "
                f"_probe_child({str(spec)!r}, {str(out)!r}, {left!r})")
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


def list_relax_passes(refresh: bool = False, stall_seconds: float = 300.0) -> dict[str, Any]:
    """The Relax passes that run on their own on an imported module, with their argument choices.

    Candidates are every constructor in ``tvm.relax.transform``, called with no arguments and
    with the plain-data values of :data:`PASS_ARG_CHOICES`. Each is applied (opt level 3, LLVM
    target in scope) to a tiny module from the ONNX frontend (:func:`_probe_module`), the result
    is checked well-formed, saved as a relax artifact (which parses it back and compares),
    compiled with ``tvm.compile`` and run at batch sizes 3 and 1. A candidate that fails any of that is left out, with the
    reason. Its output is not compared: a pass that changes results is what a hunt looks for.

    The answer is cached in ``$FUZZCONV_CACHE/tvm-passes-<tvm version>.json``; the orchestrator
    (which must not import TVM) asks a tvm worker for it with op ``call``.

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


# The step's choices are fixed when this module is imported, which happens in the orchestrator
# too, where TVM must not be imported: so they come from the cached probe when one exists for the
# installed TVM, else from the verified FALLBACK_PASSES. The worker checks the name against the
# real list (probing if need be) whatever the choices were.
_PASSES = _cached_passes() or FALLBACK_PASSES
_ARG_VARIANTS = [{}] + [a for name in sorted(_PASSES) for a in _PASSES[name] if a]


# ``args`` defaults to a dict, as the registry reads defaults off the signature; never mutated.
def relax_pass(ctx: StepContext, src: Path, dst: Path, name: str = "FoldConstant",
               args: dict[str, Any] = {}) -> None:  # noqa: B006
    """One pass of ``tvm.relax.transform`` with keyword ``args``, at opt level 3.

    The hunt draws ``name`` and ``args`` independently, so ``args`` keys that the named pass does
    not take but another listed pass does are dropped; a key no listed pass takes is an error.
    The first call on a machine without the cached pass list probes TVM for it (a few minutes).
    """
    known = list_relax_passes()["passes"]
    if name not in known:
        raise UsageError(f"tvm.pass: {name!r} is not a Relax pass that runs on its own here "
                         f"(known: {', '.join(sorted(known))})")
    takes = set(inspect.signature(_pass_constructor(name)).parameters)
    vocabulary = {k for variants in known.values() for a in variants for k in a}
    unknown = sorted(set(args) - takes - vocabulary)
    if unknown:
        raise UsageError(f"tvm.pass: {name} takes no argument {unknown[0]!r} "
                         f"(it takes: {', '.join(sorted(takes)) or 'none'})")
    mod = _apply_pass(load_relax(src), name, {k: v for k, v in args.items() if k in takes},
                      _target(ctx, "llvm"))
    save_relax(mod, dst)
    layout = read_input_layout(src.parent)
    if layout:
        write_input_layout(dst.parent, layout)


# The parameter is called ``name`` (the pipeline contract), which the ``step`` decorator cannot
# take as a keyword (its own first argument is ``name``), so this registers through the function
# the decorator calls, with the same fields.
def _coherent_args(params: dict[str, Any]) -> dict[str, Any]:
    """Drop ``args`` keys the named pass does not take but another listed pass does (the worker
    ignores them), so such a configuration is the plain pass and hashes as it. Keys no listed
    pass takes stay, for the worker to refuse. A pass that cannot run without arguments
    (ConvertLayout needs ``desired_layouts``) and is left with none gets its first listed ones:
    calling it without them is a misuse of TVM, not a finding."""
    args = params.get("args") or {}
    variants = _PASSES.get(params.get("name"), [])
    takes = {k for a in variants for k in a}
    vocabulary = {k for vs in _PASSES.values() for a in vs for k in a}
    kept = {k: v for k, v in args.items() if k in takes or k not in vocabulary}
    if not kept and variants and {} not in variants:
        kept = dict(variants[0])
    return {**params, "args": kept}


relax_pass.fuzzconv_op = register(  # type: ignore[attr-defined]
    dict(name="tvm.pass", kind="step", src="relax", dst="relax", family="tvm",
         doc=relax_pass.__doc__.strip().splitlines()[0], devices=("cpu", "cuda"), timeout=1800.0,
         choices={"name": sorted(_PASSES), "args": _ARG_VARIANTS}, normalize=_coherent_args,
         arithmetic={"name": sorted(ARITHMETIC_PASSES)}, unoptimized={}),
    relax_pass)


# -- compilation -------------------------------------------------------------------------------
# LLVM targets for the host. TVM 0.27 takes targets as JSON dicts only ("llvm -mcpu=..." strings
# are refused). "llvm" alone compiles for generic x86-64 (SSE2). The mcpu levels add AVX2/FMA and
# AVX-512 code paths; they are offered only where this CPU runs them, so a choice never makes a
# library that dies of SIGILL. "opt-level" is LLVM's own optimisation level.
_X86_LEVELS = {"x86-64-v2": {"sse4_2", "popcnt", "ssse3"},
               "x86-64-v3": {"avx2", "fma", "bmi2", "f16c", "movbe"},
               "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}}


def _host_x86_levels() -> list[str]:
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(),
                              re.M).group(1).split())  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return []
    levels, need = [], set()
    for level, feats in _X86_LEVELS.items():
        need |= feats
        if need <= flags:
            levels.append(level)
    return levels


_TARGETS: list[str | dict[str, Any]] = [
    "llvm",
    {"kind": "llvm", "fast-math": True},
    {"kind": "llvm", "fast-math-contract": True},
    {"kind": "llvm", "opt-level": 0},
    *({"kind": "llvm", "mcpu": level} for level in _host_x86_levels()),
    *({"kind": "llvm", "mcpu": level, "fast-math": True} for level in _host_x86_levels()[-1:]),
]

# Build passes whose absence still gives a working library and a different one (checked on the
# probe module): two TIR simplifications and three Relax memory/reshape rewrites. Disabling a
# lowering pass (LegalizeOps, tirx.FlattenBuffer, ...) only makes the build fail.
_DISABLE = [[], ["tirx.CommonSubexprElim"], ["tirx.StorageRewrite"], ["tirx.NarrowDataType"],
            ["StaticPlanBlockMemory"], ["RewriteDataflowReshape"],
            ["StaticPlanBlockMemory", "KillAfterLastUse"]]


@step("tvm.build", src="relax", dst="tvm", family="tvm", timeout=1800.0,
      opt_level=[0, 1, 2, 3, 4], disabled_passes=_DISABLE, target=_TARGETS,
      relax_pipeline=["default", "target"],
      arithmetic={"target": [t for t in _TARGETS if t != "llvm"]},
      unoptimized={"opt_level": 0, "relax_pipeline": "default"})
def build(ctx: StepContext, src: Path, dst: Path, opt_level: int = 3,
          disabled_passes: Sequence[str] = (), target: str | dict[str, Any] = "llvm",
          relax_pipeline: str = "default") -> None:
    """``tvm.compile`` under ``PassContext(opt_level, disabled_pass)``, exported as a library.

    ``target`` is an LLVM target (a name or a JSON dict); with device cuda the model is compiled
    for CUDA and ``target`` is its host. ``relax_pipeline`` ``default`` is what ``tvm.compile``
    picks (on CPU: legalize and lower, no fusion); ``target`` is
    ``relax.get_default_pipeline(target)``, which also folds constants and fuses operators.
    """
    import tvm
    from tvm import relax

    if relax_pipeline not in ("default", "target"):
        raise UsageError(f"tvm.build: relax_pipeline must be 'default' or 'target', "
                         f"not {relax_pipeline!r}")
    tgt = _target(ctx, target)
    mod = load_relax(src)
    layout = _module_input_layout(ctx, mod, src.parent)
    pipeline = relax.get_default_pipeline(tgt) if relax_pipeline == "target" else "default"
    with tvm.transform.PassContext(opt_level=int(opt_level), disabled_pass=list(disabled_passes)):
        executable = tvm.compile(mod, target=tgt, relax_pipeline=pipeline)
    executable.export_library(str(dst))
    write_input_layout(dst.parent, layout)


# -- the runtime -------------------------------------------------------------------------------
@runtime("tvm", format="tvm", family="tvm", devices=("cpu", "cuda"))
def tvm_runtime(ctx: StepContext, artifact: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The Relax VM on ``tvm.cpu()`` or ``tvm.cuda()``, running ``main``."""
    import tvm
    from tvm import relax

    dev = tvm.cuda(0) if ctx.device == "cuda" else tvm.cpu(0)
    if not dev.exist:
        raise RuntimeError(f"TVM sees no {ctx.device} device here")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact)), dev)
    main = vm["main"]
    model_layout = ctx.model["layout"]
    layout = read_input_layout(artifact.parent) or model_layout

    def predict(batch: np.ndarray) -> np.ndarray:
        x = to_layout(np.asarray(batch, dtype=np.float32), model_layout, layout)
        return vm_output(main(tvm.runtime.tensor(x, device=dev)))

    return predict
