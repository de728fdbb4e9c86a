"""PyTorch steps and the ``torch`` runtime: onnx2torch, ONNX export, eager and compiled inference.

Torch artifacts are JSON manifests (:mod:`fuzzconv.formats.torch`); every step and the runtime
load them through :func:`~fuzzconv.formats.torch.load_torch_module`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..formats.layout import INPUT_LAYOUT_KEY, image_shape, onnx_input_layout, to_layout
from ..formats.torch import load_torch_module, module_input_layout, write_manifest
from ..plugins import StepContext, runtime, step

if TYPE_CHECKING:
    import torch


@step("onnx.onnx2torch", src="onnx", dst="torch", family="torch")
def onnx2torch_step(ctx: StepContext, src: Path, dst: Path) -> None:
    """onnx2torch: ONNX graph → torch.fx module (the ONNX is kept beside the manifest)."""
    import onnx
    import onnx2torch

    model = onnx.load(str(src))
    # Convert now, so an unsupported graph fails at this step and not at run time.
    onnx2torch.convert(model)
    shutil.copyfile(src, dst.parent / "model.onnx")
    # keras.tf2onnx(inputs_as_nchw=True) records an NCHW input for an NHWC model; the module
    # onnx2torch builds takes that layout, and the manifest says so for the runtime.
    layout = onnx_input_layout(model)
    extra = {"input_layout": layout} if layout else {}
    write_manifest(dst, "onnx2torch", ctx.model["name"], onnx="model.onnx", **extra)


# Opsets: the TorchScript exporter (dynamo=False) writes 13, 17 and 18 as asked. The dynamo
# exporter (torch 2.14, onnxscript 0.7.2) has no translations below opset 18: it exports at 18,
# then down-converts with onnx's C version converter, which it calls with the initializers moved
# to graph inputs, so the ReduceMean adapter finds no constant axes and asserts (every zoo model
# has a global average pool); the exporter logs a warning and keeps opset 18. The step refuses
# that mislabelled model, so with dynamo=True only opset 18 yields an artifact. The registry's
# choices are per parameter, so the combinations dynamo=True × opset 13/17 stay drawable and
# fail as a crash of this step.
@step("torch.onnx_export", src="torch", dst="onnx", family="torch",
      opset=[13, 17, 18], dynamo=[False, True])
def onnx_export(ctx: StepContext, src: Path, dst: Path, *, opset: int = 17,
                dynamo: bool = False) -> None:
    """torch.onnx.export, TorchScript-based (dynamo=False) or torch.export-based (dynamo=True)."""
    import onnx
    import torch

    module = load_torch_module(src)
    layout = module_input_layout(src, ctx.model["layout"])
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would pin the batch axis.
    example = (torch.zeros([2, *image_shape(ctx, layout)]),)
    kw: dict[str, Any] = {}
    if dynamo:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    # One self-contained file: the dynamo exporter would otherwise write weights to model.onnx.data.
    torch.onnx.export(module, example, str(dst), input_names=["input"], output_names=["logits"],
                      opset_version=int(opset), dynamo=bool(dynamo), external_data=False, **kw)
    model = onnx.load(str(dst))
    got = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if got != int(opset):
        raise RuntimeError(f"torch.onnx.export(dynamo={dynamo}) wrote opset {got}, not the "
                           f"requested {opset} (its version conversion failed)")
    if layout != ctx.model["layout"]:
        onnx.helper.set_model_props(model, {INPUT_LAYOUT_KEY: layout})
        onnx.save(model, str(dst))


@runtime("torch", format="torch", family="torch", devices=("cpu", "cuda"), compile=[False, True],
         arithmetic={"compile": [True]}, unoptimized={"compile": False})
def torch_runtime(ctx: StepContext, artifact: Path, *,
                  compile: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch eager (the reference for torch-source models) or torch.compile (inductor)."""
    import torch

    module = load_torch_module(artifact)
    layout = module_input_layout(artifact, ctx.model["layout"])
    device = torch.device(ctx.device)
    if ctx.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("torch has no CUDA device here")
    module = module.to(device)
    fn: Callable[[torch.Tensor], torch.Tensor] = module
    if compile:
        # A long-lived worker compiles many modules; without a reset, dynamo's per-code-object
        # recompile limit would eventually make it fall back to eager without saying so.
        torch._dynamo.reset()
        fn = torch.compile(module)
        # Compile before returning: one graph with a dynamic batch axis for every batch of two
        # or more (8, then the smaller last batch), and one for a single image, since dynamo
        # specialises size-1 dimensions (a lone last image or a per-image timing would otherwise
        # recompile inside predict).
        warm = torch.zeros([2, *image_shape(ctx, layout)], device=device)
        torch._dynamo.mark_dynamic(warm, 0)
        with torch.no_grad():
            fn(warm)
            fn(warm[:1].clone())

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(to_layout(np.asarray(batch, dtype=np.float32), ctx.model["layout"],
                                       layout)).to(device)
        with torch.no_grad():
            return fn(x).float().cpu().numpy()

    return predict
