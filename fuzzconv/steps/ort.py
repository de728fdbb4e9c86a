"""The ONNX Runtime runtime, at every graph-optimisation level, on CPU or CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..formats.layout import INPUT_LAYOUT_KEY, to_layout
from ..plugins import StepContext, runtime

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


@runtime("ort", format="onnx", family="ort", devices=("cpu", "cuda"),
         graph_optimization_level=["disable", "basic", "extended", "all"], threads=[0, 1],
         arithmetic={"graph_optimization_level": ["extended", "all"]},
         unoptimized={"graph_optimization_level": "disable"})
def ort_runtime(ctx: StepContext, artifact: Path, graph_optimization_level: str = "all",
                threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime InferenceSession; ``threads`` 0 lets ORT choose."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            _LEVELS[graph_optimization_level])
    opts.intra_op_num_threads = int(threads)
    providers = ["CPUExecutionProvider"]
    if ctx.device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("ONNX Runtime has no CUDA provider here")
        providers = ["CUDAExecutionProvider"]
    sess = ort.InferenceSession(str(artifact), opts, providers=providers)
    name = sess.get_inputs()[0].name
    # keras.tf2onnx(inputs_as_nchw=True) records that the ONNX input is NCHW while batches
    # arrive in the model's NHWC layout.
    model_layout = ctx.model["layout"]
    layout = sess.get_modelmeta().custom_metadata_map.get(INPUT_LAYOUT_KEY) or model_layout

    def predict(batch: np.ndarray) -> np.ndarray:
        x = to_layout(batch, model_layout, layout)
        return sess.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return predict
