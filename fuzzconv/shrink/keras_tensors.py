"""Worker functions of the ``tf`` worker for localization: a Keras model's layer outputs and a
TFLite model's tensors on some inputs (see :mod:`.nodes`, method ``keras-layers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..protocol import worker_function
from ..steps.keras import load_keras
from .onnx_tensors import save_arrays


@worker_function
def keras_layer_outputs(model: str, inputs: str, out: str) -> dict[str, Any]:
    """Worker op (tf): every single-output layer's output on ``inputs``, saved to ``out``."""
    import keras

    m = load_keras(Path(model))
    kept, outs = [], []
    for layer in m.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            o = layer.output
        except (AttributeError, ValueError):  # shared or nested layers have no one output
            continue
        if isinstance(o, (list, tuple)):
            continue
        kept.append(layer)
        outs.append(o)
    probe = keras.Model(m.inputs, outs)
    ys = probe(np.load(inputs, allow_pickle=False), training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    save_arrays(out, {layer.name: np.asarray(y) for layer, y in zip(kept, ys)})
    return {"layers": [[layer.name, type(layer).__name__] for layer in kept]}


@worker_function
def tflite_tensors(model: str, inputs: str, out: str) -> dict[str, Any]:
    """Worker op (tf): every operator output of a TFLite model on ``inputs``, saved to ``out``.

    The interpreter keeps intermediates (``experimental_preserve_all_tensors``) and runs without
    its default XNNPACK delegate, whose tensors it could not show; quantized tensors are
    dequantized with their scale and zero point.
    """
    import tensorflow as tf

    it = tf.lite.Interpreter(
        model_path=model, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType
        .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    x = np.ascontiguousarray(np.load(inputs, allow_pickle=False), dtype=np.float32)
    inp = it.get_input_details()[0]["index"]
    it.resize_tensor_input(inp, list(x.shape), strict=True)
    it.allocate_tensors()
    it.set_tensor(inp, x)
    it.invoke()
    details = {d["index"]: d for d in it.get_tensor_details()}
    arrays: dict[str, np.ndarray] = {}
    ops = []
    for op in it._get_ops_details():  # the interpreter's only per-operator listing
        for t in op["outputs"]:
            if t < 0 or details[t]["name"] in arrays:
                continue
            d = details[t]
            a = np.asarray(it.get_tensor(t))
            scale, zero = d["quantization"]
            if scale and np.issubdtype(a.dtype, np.integer):
                a = (a.astype(np.float32) - zero) * scale
            arrays[d["name"]] = a
            ops.append([d["name"], op["op_name"]])
    save_arrays(out, arrays)
    return {"tensors": ops}
