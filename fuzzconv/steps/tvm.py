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
own on an imported module is found out from TVM itself (:mod:`.relax_passes`).

TVM, onnx and torch are imported inside functions: the orchestrator imports this module to read
the registry and must stay framework-free.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import UsageError
from ..formats.layout import (image_shape, onnx_input_layout, read_input_layout, to_layout,
                              write_input_layout)
from ..formats.relax import load_relax, save_relax, vm_output
from ..formats.torch import load_torch_module, module_input_layout
from ..plugins import StepContext, runtime, step
from ..registry import register
from ..tuning import fixed_batches, read_static_batch, tuned_fuses, tuning_cost
from .relax_passes import (ARITHMETIC_PASSES, FALLBACK_PASSES, apply_pass, cached_passes,
                           list_relax_passes, pass_constructor)
from .tvm_tuning import tuned_compile

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
# The step's choices are fixed when this module is imported, which happens in the orchestrator
# too, where TVM must not be imported: so they come from the cached probe when one exists for the
# installed TVM, else from the verified FALLBACK_PASSES. The worker checks the name against the
# real list (probing if need be) whatever the choices were.
_PASSES = cached_passes() or FALLBACK_PASSES
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
    takes = set(inspect.signature(pass_constructor(name)).parameters)
    vocabulary = {k for variants in known.values() for a in variants for k in a}
    unknown = sorted(set(args) - takes - vocabulary)
    if unknown:
        raise UsageError(f"tvm.pass: {name} takes no argument {unknown[0]!r} "
                         f"(it takes: {', '.join(sorted(takes)) or 'none'})")
    apply_relax_pass(ctx, src, dst, name, args)


# ``args`` defaults to a dict, as the registry reads defaults off the signature; never mutated.
def apply_relax_pass(ctx: StepContext, src: Path, dst: Path, name: str = "FoldConstant",
                     args: dict[str, Any] = {}) -> None:  # noqa: B006
    """What ``tvm.pass`` does once its pass is known to run here: the pass at opt level 3 with the
    target in scope, given the ``args`` it takes; the module's input layout is carried over."""
    takes = set(inspect.signature(pass_constructor(name)).parameters)
    mod = apply_pass(load_relax(src), name, {k: v for k, v in args.items() if k in takes},
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
         arithmetic={"name": sorted(ARITHMETIC_PASSES)}, precision={"name": ["ToMixedPrecision"]},
         unoptimized={}, recipe=apply_relax_pass),
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
      relax_pipeline=["default", "target"], tuning=["none", "metaschedule"],
      arithmetic={"target": [t for t in _TARGETS if t != "llvm"], "tuning": ["metaschedule"]},
      unoptimized={"opt_level": 0, "relax_pipeline": "default", "tuning": "none"},
      normalize=tuned_fuses, cost=tuning_cost)
def build(ctx: StepContext, src: Path, dst: Path, opt_level: int = 3,
          disabled_passes: Sequence[str] = (), target: str | dict[str, Any] = "llvm",
          relax_pipeline: str = "default", tuning: str = "none") -> None:
    """``tvm.compile`` under ``PassContext(opt_level, disabled_pass)``, exported as a library.

    ``target`` is an LLVM target (a name or a JSON dict); with device cuda the model is compiled
    for CUDA and ``target`` is its host. ``relax_pipeline`` ``default`` is what ``tvm.compile``
    picks (on CPU: legalize and lower, no fusion); ``target`` is
    ``relax.get_default_pipeline(target)``, which also folds constants and fuses operators.
    ``tuning`` ``metaschedule`` compiles with tuned schedules for a batch of one (CPU only; see
    :mod:`fuzzconv.tuning`), always fused, so its ``relax_pipeline`` is ``target``.
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
    if tuning != "none":
        executable = tuned_compile(ctx, mod, target, tuning, int(opt_level),
                                   list(disabled_passes), src, dst.parent)
    else:
        with tvm.transform.PassContext(opt_level=int(opt_level),
                                       disabled_pass=list(disabled_passes)):
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

    batch = read_static_batch(artifact.parent)
    return predict if batch is None else fixed_batches(predict, batch)
