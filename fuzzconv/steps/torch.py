"""PyTorch steps and the ``torch`` runtime: onnx2torch, ONNX export, eager and compiled inference.

A torch artifact (``model.torch.json``) is a small JSON manifest, never a pickle:

- ``{"kind": "zoo", "architecture": ..., "options": {...}, "weights": "weights.npz"}``: a zoo
  architecture from :data:`fuzzconv.zoo.torchvision_models.ARCHITECTURES` and its state dict
  beside the manifest (written by the zoo builders);
- ``{"kind": "onnx2torch", "onnx": "model.onnx", "input_layout": ...}``: the ONNX model beside the
  manifest, rebuilt with ``onnx2torch.convert`` at load time.

Both carry ``"format": "fuzzconv.torch"`` and ``"version"``. :func:`load_torch_module` turns either
into an ``nn.Module`` in eval mode; the ``torch`` runtime, ``torch.onnx_export`` and TVM's
``torch.tvm`` step all load artifacts through it, and :func:`module_input_layout` says which layout
the module takes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..plugins import StepContext, runtime, step
from .keras import INPUT_LAYOUT_KEY, onnx_input_layout

if TYPE_CHECKING:
    import torch

MANIFEST_FORMAT = "fuzzconv.torch"
MANIFEST_VERSION = 1
_TRANSPOSE = {("NHWC", "NCHW"): (0, 3, 1, 2), ("NCHW", "NHWC"): (0, 2, 3, 1)}


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a torch artifact, checked for format and version."""
    manifest = json.loads(Path(path).read_text())
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path} is not a fuzzconv torch artifact (version {MANIFEST_VERSION})")
    return manifest


def write_manifest(dst: Path, kind: str, model: str, **fields: Any) -> None:
    """Write a torch artifact's manifest; ``fields`` name the files beside it and their options."""
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "kind": kind,
                "model": model, **fields}
    Path(dst).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def load_torch_module(path: Path) -> "torch.nn.Module":
    """The module of a torch artifact (``model.torch.json``), in eval mode, on CPU.

    Args:
        path: the manifest; the files it names lie beside it.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if manifest["kind"] == "zoo":
        from ..zoo.torchvision_models import load_zoo_module

        return load_zoo_module(manifest, path.parent)
    if manifest["kind"] == "onnx2torch":
        import onnx2torch

        return onnx2torch.convert(str(path.parent / manifest["onnx"])).eval()
    raise ValueError(f"{path}: unknown torch artifact kind {manifest['kind']!r}")


def module_input_layout(path: Path, model_layout: str) -> str:
    """The layout the artifact's module takes: the model's, unless the manifest says otherwise."""
    return read_manifest(Path(path)).get("input_layout") or model_layout


def to_layout(batch: np.ndarray, src: str, dst: str) -> np.ndarray:
    """A 4-D batch moved from layout ``src`` to ``dst`` (NHWC/NCHW), contiguous."""
    if src == dst:
        return batch
    return np.ascontiguousarray(batch.transpose(_TRANSPOSE[(src, dst)]))


def _module_shape(ctx: StepContext, layout: str) -> list[int]:
    """One image's shape (no batch axis) in the module's layout."""
    shape = ctx.input_shape
    if layout == ctx.model["layout"]:
        return shape
    perm = _TRANSPOSE[(ctx.model["layout"], layout)]
    return [shape[i - 1] for i in perm[1:]]


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
    example = (torch.zeros([2, *_module_shape(ctx, layout)]),)
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
        warm = torch.zeros([2, *_module_shape(ctx, layout)], device=device)
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
