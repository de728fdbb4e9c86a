"""Graph helpers the fault plugins share: find one node by a rule, give it inputs of its own.

Every fault changes exactly one node (or inserts one node after it), chosen by a rule that holds
for the Keras models after ``keras.tf2onnx`` and ``tflite.tf2onnx`` (tiny_keras, mobilenetv2, ...).
Each fault module exposes ``affected_node(model) -> str | None``: the name of the node whose output
the fault changes first, in the graph the fault is applied to. That is the ground truth the
first-divergent-node localization is scored against.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def constant(model: onnx.ModelProto, tensor: str) -> Optional[np.ndarray]:
    """The value of ``tensor`` when it is an initializer or a Constant node's output."""
    for t in model.graph.initializer:
        if t.name == tensor:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == tensor:
            return numpy_helper.to_array(attr(n, "value"))
    return None


def first(model: onnx.ModelProto, rule: Callable[[onnx.NodeProto], bool],
          last: bool = False) -> Optional[onnx.NodeProto]:
    nodes = [n for n in model.graph.node if rule(n)]
    if not nodes:
        return None
    return nodes[-1] if last else nodes[0]


def set_own_input(model: onnx.ModelProto, node: onnx.NodeProto, index: int,
                  value: np.ndarray) -> None:
    """Feed ``node``'s input ``index`` from a new initializer holding ``value``.

    The old tensor may be shared with other nodes (tf2onnx shares ReLU6 bounds); they keep it.
    """
    old = node.input[index]
    name = f"{old}/fault"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    node.input[index] = name


def is_conv(node: onnx.NodeProto) -> bool:
    return node.op_type == "Conv"


def conv_weight(model: onnx.ModelProto, node: onnx.NodeProto) -> Optional[np.ndarray]:
    return constant(model, node.input[1]) if len(node.input) > 1 else None


def per_channel_mul(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """A Mul by a per-channel [1, C, 1, 1] constant: a batch norm's scale after conversion."""
    if node.op_type != "Mul":
        return False
    for name in node.input:
        c = constant(model, name)
        if c is not None and c.ndim == 4 and c.shape[0] == 1 and c.shape[2:] == (1, 1):
            return True
    return False


def classifier(model: onnx.ModelProto) -> Optional[onnx.NodeProto]:
    """The last MatMul or Gemm with a 2-D constant weight: the dense head."""
    return first(model, lambda n: n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
                 and (c := constant(model, n.input[1])) is not None and c.ndim == 2, last=True)
