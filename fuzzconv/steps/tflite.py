"""tflite steps and the ``tflite`` runtime: TFLite flatbuffers to ONNX, and the TFLite interpreter.

TFLite models come from ``keras.tflite``, whose input keeps a resizable batch axis; the runtime
resizes it to each batch it is given. Frameworks are imported inside the functions (see
:mod:`fuzzconv.steps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..plugins import StepContext, runtime, step
from .keras import canonical_generated_names, reset_tf2onnx_names


@step("tflite.tf2onnx", src="tflite", dst="onnx", family="tf", opset=[13, 15, 17])
def tflite_to_onnx(ctx: StepContext, src: Path, dst: Path, opset: int = 13) -> None:
    """tf2onnx ``from_tflite``."""
    import onnx
    import tf2onnx

    reset_tf2onnx_names()
    proto, _ = tf2onnx.convert.from_tflite(str(src), opset=int(opset))
    canonical_generated_names(proto)
    onnx.save(proto, str(dst))


@runtime("tflite", format="tflite", family="tf", xnnpack=[True, False], threads=[1, 2],
         arithmetic={"xnnpack": [False]}, unoptimized={"xnnpack": False})
def tflite_runtime(ctx: StepContext, artifact: Path, xnnpack: bool = True,
                   threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """``tf.lite.Interpreter`` with or without its default XNNPACK delegate, on 1 or 2 threads."""
    import tensorflow as tf

    resolver = tf.lite.experimental.OpResolverType
    interpreter = tf.lite.Interpreter(
        model_path=str(artifact), num_threads=int(threads),
        experimental_op_resolver_type=resolver.BUILTIN if xnnpack
        else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    shape = tuple(interpreter.get_input_details()[0]["shape"])

    def predict(batch: np.ndarray) -> np.ndarray:
        nonlocal shape
        # The interpreter refuses anything but the exact dtype (float64 raises).
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.shape != shape:
            interpreter.resize_tensor_input(inp, list(x.shape), strict=True)
            interpreter.allocate_tensors()
            shape = x.shape
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return predict
