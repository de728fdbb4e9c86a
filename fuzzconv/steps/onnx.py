"""onnx → onnx steps: ONNX Runtime's offline graph optimisation and ONNX opset conversion."""

from __future__ import annotations

from pathlib import Path

from ..plugins import StepContext, step

_ORT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


@step("onnx.optimize", src="onnx", dst="onnx", family="ort", level=["basic", "extended", "all"],
      arithmetic={"level": ["extended", "all"]})
def optimize(ctx: StepContext, src: Path, dst: Path, level: str = "basic") -> None:
    """ORT offline graph optimisation: the optimised graph is saved as a new ONNX model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[level])
    opts.optimized_model_filepath = str(dst)
    # Creating the session is what writes the optimised model.
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


@step("onnx.version", src="onnx", dst="onnx", family="ort", opset=[11, 13, 15, 17, 18, 21])
def convert_version(ctx: StepContext, src: Path, dst: Path, opset: int = 17) -> None:
    """ONNX opset conversion with ``onnx.version_converter``, checked by onnx's checker."""
    import onnx
    from onnx import version_converter

    model = version_converter.convert_version(onnx.load(str(src)), int(opset))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
