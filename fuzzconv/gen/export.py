"""Worker functions that write a generated model's files for a bug bundle.

:func:`keras_weights` runs in the ``tf`` worker (it loads the ``.keras`` source artifact);
:func:`backend_test_case` in the ``ort`` worker (it writes ONNX tensors). Frameworks are imported
inside them: the orchestrator imports this module to name them in a
:class:`~fuzzconv.protocol.Call`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..formats.layout import INPUT_LAYOUT_KEY
from ..protocol import worker_function


@worker_function
def keras_weights(src: str, dst: str) -> int:
    """Save a Keras model's weights to ``dst`` (``.npz``), each under its variable's path
    (``l1_conv/kernel``), which is how the bundle's model script puts them back. Returns how
    many arrays were saved."""
    import keras

    model = keras.models.load_model(src, safe_mode=True, compile=False)
    arrays = {v.path: np.asarray(v.numpy()) for v in model.weights}
    np.savez(dst, **arrays)
    return len(arrays)


@worker_function
def backend_test_case(model: str, inputs: str, expected: str, dst: str,
                      model_layout: str) -> dict[str, Any]:
    """ONNX's backend-test layout for ``model``: ``dst/input_0.pb`` (``inputs``, transposed to
    the ONNX input's layout when the model records NCHW for an NHWC batch) and
    ``dst/output_0.pb`` (``expected``), each named after the graph's input and output.

    Returns:
        The input and output names, and the input layout written.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(model, load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    meta = {p.key: p.value for p in proto.metadata_props}
    x = np.load(inputs, allow_pickle=False).astype(np.float32)
    layout = meta.get(INPUT_LAYOUT_KEY) or model_layout
    if layout == "NCHW" and model_layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    y = np.load(expected, allow_pickle=False).astype(np.float32)
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    (out / "input_0.pb").write_bytes(
        numpy_helper.from_array(x, graph_inputs[0]).SerializeToString())
    (out / "output_0.pb").write_bytes(
        numpy_helper.from_array(y, proto.graph.output[0].name).SerializeToString())
    return {"input": graph_inputs[0], "output": proto.graph.output[0].name, "layout": layout}
