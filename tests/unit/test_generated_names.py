"""tf2onnx's generated ``__N`` names are renumbered from the graph alone (no frameworks here)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, checker, helper, numpy_helper

from fuzzconv.steps.keras import canonical_generated_names


def _graph(offset: int):
    """The same small graph as tf2onnx names it after ``offset`` earlier draws of its counter."""
    n = lambda k: k + offset  # noqa: E731
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), f"const_fold_opt__{n(9)}")
    nodes = [
        helper.make_node("Transpose", ["input"], [f"m/bn/mul_1__{n(6)}:0"], name=f"m/bn/mul_1__{n(6)}",
                         perm=[0, 3, 1, 2]),
        helper.make_node("Conv", [f"m/bn/mul_1__{n(6)}:0", w.name], [f"Conv__{n(39)}:0"],
                         name=f"Conv__{n(39)}"),
        helper.make_node("Relu", [f"Conv__{n(39)}:0"], ["logits"], name="m/block__2/relu"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 4, 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4, 4])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_names_depend_on_the_graph_not_on_the_counter() -> None:
    a, b = _graph(0), _graph(-1)
    canonical_generated_names(a)
    canonical_generated_names(b)
    assert a.SerializeToString() == b.SerializeToString()
    names = [x.name for x in a.graph.node]
    assert names == ["m/bn/mul_1__1", "Conv__2", "m/block__2/relu"]  # mid-name __2 is not a suffix
    assert a.graph.node[1].input == ["m/bn/mul_1__1:0", "const_fold_opt__3"]
    assert a.graph.initializer[0].name == "const_fold_opt__3"
    checker.check_model(a, full_check=True)  # every reference still resolves


def test_graph_without_generated_names_is_left_alone() -> None:
    m = _graph(0)
    for node in m.graph.node:
        node.name = node.name.split("__")[0] + "_x"
    before = [x.name for x in m.graph.node]
    m2 = _graph(0)
    m2.CopyFrom(m)
    canonical_generated_names(m2)
    assert [x.name for x in m2.graph.node] == before
