"""keras steps and the ``keras`` runtime: Keras 3 models to ONNX (tf2onnx) and TFLite, and Keras itself.

The ``keras`` runtime is the reference for Keras-source models (fp32, CPU, ``model(x,
training=False)``); with ``jit_compile`` it runs the same model through XLA.

Input layout: ``keras.tf2onnx`` with ``inputs_as_nchw=True`` makes the ONNX input NCHW while the
model (and the corpus batches fed to every runtime) stay NHWC. The step records this in the ONNX
model (:mod:`fuzzconv.formats.layout`), and every runtime that executes an ONNX model (or anything
converted from one) transposes the batches it is given accordingly.

Everything framework-specific is imported inside the functions: the orchestrator imports this
module to read the registry and must not load TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..formats.layout import INPUT_LAYOUT_KEY
from ..plugins import StepContext, runtime, step

if TYPE_CHECKING:
    import keras
    import onnx
    import tensorflow as tf

#: The name every ONNX model made here gives its input.
INPUT_NAME = "input"


def load_keras(path: Path) -> "keras.Model":
    """Load a ``.keras`` file without compiling it, refusing arbitrary code (no Lambda layers)."""
    import keras

    return keras.models.load_model(str(path), safe_mode=True, compile=False)


def reset_tf2onnx_names() -> None:
    """tf2onnx numbers the nodes it makes with a process-wide counter, so the same conversion
    named ``Conv__39`` in one call is ``Conv__434`` in the next; restarting the counter makes a
    conversion's node names independent of what the worker converted before."""
    import tf2onnx.utils

    tf2onnx.utils.INTERNAL_NAME = 1


_GENERATED = re.compile(r"__(\d+)(?=$|:)")


def canonical_generated_names(proto: "onnx.ModelProto") -> None:
    """Renumber the ``__N`` suffixes tf2onnx gives the names it generates, in graph order.

    Even with its counter restarted, tf2onnx draws one name more on its first conversion in a
    process than on later ones (``Conv__39`` there, ``Conv__38`` after), so the same conversion
    named its nodes by what the worker did before. Numbering the suffixes by first appearance
    (nodes in order, then initializers) makes the names a function of the graph alone: node names
    in findings stay valid when a cold re-run rebuilds the artifact. Names are changed everywhere
    they occur (node, tensor, initializer, value_info, subgraphs), so the graph means the same.
    """
    graphs, order = [proto.graph], {}

    def note(name: str) -> None:
        for m in _GENERATED.finditer(name):
            order.setdefault(m.group(1), str(len(order) + 1))

    def names(g: "onnx.GraphProto"):
        for n in g.node:
            yield n, ("name",), n.name
            for i, t in enumerate(n.input):
                yield n.input, (i,), t
            for i, t in enumerate(n.output):
                yield n.output, (i,), t
            for a in n.attribute:
                if a.g.node:
                    graphs.append(a.g)
                graphs.extend(x for x in a.graphs)
        for coll in (g.initializer, g.value_info, g.input, g.output):
            for x in coll:
                yield x, ("name",), x.name

    i = 0
    while i < len(graphs):  # subgraphs are appended while walking
        for _obj, _where, name in names(graphs[i]):
            note(name)
        i += 1
    for g in graphs:
        for obj, (where,), name in list(names(g)):
            new = _GENERATED.sub(lambda m: "__" + order[m.group(1)], name)
            if new != name:
                if isinstance(where, int):
                    obj[where] = new
                else:
                    setattr(obj, where, new)


def _input_spec(ctx: StepContext) -> "tf.TensorSpec":
    """The input signature: any batch size, the model's image shape, float32."""
    import tensorflow as tf

    return tf.TensorSpec((None, *ctx.input_shape), tf.float32, name=INPUT_NAME)


@step("keras.tf2onnx", src="keras", dst="onnx", family="tf", opset=[13, 15, 17],
      inputs_as_nchw=[False, True], arithmetic={"inputs_as_nchw": [True]})
def keras_to_onnx(ctx: StepContext, src: Path, dst: Path, opset: int = 13,
                  inputs_as_nchw: bool = False) -> None:
    """tf2onnx ``from_keras`` with a dynamic batch; ``inputs_as_nchw`` transposes the input to NCHW."""
    import onnx
    import tf2onnx

    model = load_keras(src)
    reset_tf2onnx_names()
    proto, _ = tf2onnx.convert.from_keras(
        model, input_signature=[_input_spec(ctx)], opset=int(opset),
        # tf2onnx matches these against TF tensor names, before renaming them to INPUT_NAME.
        inputs_as_nchw=[f"{INPUT_NAME}:0"] if inputs_as_nchw else None)
    if inputs_as_nchw:
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        h, w, c = ctx.input_shape
        if [d.dim_value for d in dims[1:]] != [c, h, w]:
            # Our contract, not the converter's behaviour: never mislabel an input's layout.
            raise RuntimeError(f"tf2onnx did not make the input NCHW: {[d.dim_value for d in dims]}")
        onnx.helper.set_model_props(proto, {INPUT_LAYOUT_KEY: "NCHW"})
    canonical_generated_names(proto)
    onnx.save(proto, str(dst))


@step("keras.tflite", src="keras", dst="tflite", family="tf",
      optimizations=[[], ["DEFAULT"]], supported_types=[[], ["float16"]],
      quantization={"optimizations": [["DEFAULT"]]}, precision={"supported_types": [["float16"]]})
def keras_to_tflite(ctx: StepContext, src: Path, dst: Path, optimizations: Sequence[str] = (),
                    supported_types: Sequence[str] = ()) -> None:
    """``TFLiteConverter.from_keras_model``; the input keeps a resizable batch axis.

    ``optimizations`` are ``tf.lite.Optimize`` names, ``supported_types`` TensorFlow dtype names
    for ``target_spec.supported_types``; TFLite applies the latter only under an optimization.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(load_keras(src))
    converter.optimizations = [tf.lite.Optimize[name] for name in optimizations]
    converter.target_spec.supported_types = [tf.dtypes.as_dtype(name) for name in supported_types]
    dst.write_bytes(converter.convert())


@runtime("keras", format="keras", family="tf", jit_compile=[False, True],
         arithmetic={"jit_compile": [True]}, unoptimized={"jit_compile": False})
def keras_runtime(ctx: StepContext, artifact: Path,
                  jit_compile: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Keras 3 on TensorFlow, fp32 on CPU: eager ``model(x, training=False)``, or under XLA."""
    import tensorflow as tf

    model = load_keras(artifact)
    if jit_compile:
        call = tf.function(lambda x: model(x, training=False), jit_compile=True,
                           input_signature=[_input_spec(ctx)])
        # Trace now; XLA itself compiles on the first call of each batch shape, which the
        # worker times as inference.
        call.get_concrete_function()
    else:
        def call(x):
            return model(x, training=False)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(call(tf.constant(batch, dtype=tf.float32)))

    return predict
