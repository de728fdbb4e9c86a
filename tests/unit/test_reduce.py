"""Subgraph reduction on hand-built ONNX graphs, with an in-process culprit (onnx + ORT only).

The culprit is simulated the way a fault plugin would act: a transform of the candidate graph,
judged by running the candidate and its transform in ONNX Runtime. Several-input cuts and
omitted optional (empty-name) inputs and outputs are covered on purpose: Polygraphy's reducer
fails on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from fuzzconv.oracle import Thresholds
from fuzzconv.pipeline import Pipeline
from fuzzconv.shrink.nodes import _compare_layouts, _onnx_descriptions, map_layers
from fuzzconv.activations import activation_divergence
from fuzzconv.shrink.chain import upstream_onnx
from fuzzconv.shrink.graph import Cut, GraphInfo, Recorded, make_cut, topological_nodes
from fuzzconv.shrink.onnx_tensors import build_subgraph, load_arrays, record
from fuzzconv.shrink.reduce import reduce_cut

from .fakes import fake_registry

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

RNG = np.random.default_rng(0)


def const(name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def model_of(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
             out: str = "y") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", None])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def residual_net() -> onnx.ModelProto:
    """conv → relu → [dw conv ("target") → clip(x, "", max)] + relu → dropout → conv → head."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "wd"], ["dw"], name="target", group=4, pads=[1, 1, 1, 1]),
        # Clip with its optional min omitted: an empty input name.
        helper.make_node("Clip", ["dw", "", "hi"], ["clip"], name="clip"),
        helper.make_node("Add", ["clip", "r0"], ["res"], name="residual"),
        # Dropout with its optional mask output omitted... and one present but unused.
        helper.make_node("Dropout", ["res"], ["drop", ""], name="dropout"),
        helper.make_node("Conv", ["drop", "w1"], ["c1"], name="pw"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], name="fc"),
    ]
    inits = [const("w0", (4, 4, 3, 3)), const("wd", (4, 1, 3, 3)),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
             const("w1", (4, 4, 1, 1)), const("fc", (4, 5))]
    return model_of(nodes, inits)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    assert len(s.get_inputs()) == 1, "a cut must take exactly one input"
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def recorded(model: onnx.ModelProto, tmp_path: Path, n: int = 1):
    src, inputs, out = tmp_path / "m.onnx", tmp_path / "x.npy", tmp_path / "rec.npz"
    onnx.save(model, src)
    np.save(inputs, RNG.standard_normal((n, 4, 8, 8)).astype(np.float32))
    rec = Recorded.from_dict(record(str(src), str(inputs), str(out), "NCHW"))
    return GraphInfo.from_model(model), rec, load_arrays(out)


Fault = Callable[[onnx.ModelProto], onnx.ModelProto]


def scale_weight_of(node_name: str, factor: float = 1.5) -> Fault:
    """What a fault plugin does: scale one named node's weight, when that node is present."""

    def fault(m: onnx.ModelProto) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(m)
        for node in out.graph.node:
            if node.name == node_name:
                w = next(t for t in out.graph.initializer if t.name == node.input[1])
                w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * factor, w.name))
        return out

    return fault


class Judge:
    """The reduction predicate: does the fault change the candidate's output beyond tolerance."""

    def __init__(self, model, info, arrays, fault: Fault):
        self.model, self.info, self.arrays, self.fault = model, info, arrays, fault
        self.seen: list[Cut] = []

    def __call__(self, cut: Cut) -> bool:
        self.seen.append(cut)
        sub = build_subgraph(self.model, self.info, cut, self.arrays)
        onnx.checker.check_model(sub)
        x = self.arrays[cut.feed]
        return activation_divergence(run(sub, x), run(self.fault(sub), x)).diverges


def names(info: GraphInfo, cut: Cut) -> list[str]:
    return [info.nodes[i].name for i in cut.nodes]


# -- the tolerance ------------------------------------------------------------------------------
def test_activation_divergence_is_relative_to_the_tensor_range():
    ref = np.linspace(0, 100, 50).reshape(5, 10)
    assert not activation_divergence(ref, ref + 0.05).diverges  # 5e-4 of the range
    assert activation_divergence(ref, ref + 0.2).diverges  # 2e-3 of the range
    small = ref * 1e-4  # the same relative error on a tiny tensor is still a divergence...
    assert activation_divergence(small, small + 2e-5).diverges
    flat = np.full((2, 3), 1.0)  # ...but not a sub-1e-5 wobble of a near-constant one
    assert not activation_divergence(flat, flat + 1e-6).diverges


def test_activation_divergence_shapes_and_non_finite_values():
    ref = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert not activation_divergence(ref, ref.reshape(2, -1)).diverges  # flattened by a runtime
    e = activation_divergence(ref, np.zeros((2, 5)))
    assert e.diverges and e.row()["max_abs"] is None and "shape" in e.note
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    assert activation_divergence(ref, bad).diverges
    assert not activation_divergence(bad, bad.copy()).diverges  # NaN where the reference has it


# -- graphs and cuts ----------------------------------------------------------------------------
def test_empty_names_are_never_tensors():
    info = GraphInfo.from_model(residual_net())
    clip = next(n for n in info.nodes if n.name == "clip")
    drop = next(n for n in info.nodes if n.name == "dropout")
    assert clip.inputs == ("dw", "hi") and drop.outputs == ("drop",)
    assert "" not in info.producer and "" not in info.dynamic


def test_topological_order_ignores_file_order():
    m = residual_net()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    order = [n.name for n in topological_nodes(m.graph)]
    assert order.index("stem") < order.index("target") < order.index("residual") < order.index("fc")


def test_a_cut_with_several_inputs_freezes_all_but_the_largest(tmp_path):
    m = residual_net()
    info, rec, arrays = recorded(m, tmp_path, n=2)
    residual = next(i for i, n in enumerate(info.nodes) if n.name == "residual")
    cut = make_cut(info, rec, residual, kept=[residual])
    assert cut is not None and names(info, cut) == ["residual"]
    # Both inputs are (2, 4, 8, 8): the tie goes to the one made first.
    assert cut.feed == "r0" and cut.frozen == ("clip",)
    sub = build_subgraph(m, info, cut, arrays)
    onnx.checker.check_model(sub)
    assert [i.name for i in sub.graph.input] == ["r0"]
    assert {t.name for t in sub.graph.initializer} == {"clip"}  # frozen; "hi" is not read here
    np.testing.assert_allclose(run(sub, arrays["r0"]), arrays["res"], rtol=1e-6)


def test_a_cut_through_an_omitted_optional_input_runs(tmp_path):
    m = residual_net()
    info, rec, arrays = recorded(m, tmp_path)
    clip = next(i for i, n in enumerate(info.nodes) if n.name == "clip")
    cut = make_cut(info, rec, clip, kept=[clip])
    assert cut is not None and cut.feed == "dw" and cut.frozen == ()
    sub = build_subgraph(m, info, cut, arrays)
    onnx.checker.check_model(sub)
    assert list(sub.graph.node[0].input) == ["dw", "", "hi"]  # the empty input kept as it was
    assert [i.name for i in sub.graph.input] == ["dw"]
    np.testing.assert_allclose(run(sub, arrays["dw"]), arrays["clip"], rtol=1e-6)


def test_a_node_without_an_activation_to_feed_is_no_cut(tmp_path):
    shape_of = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
                helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")]
    m = model_of(shape_of, [])
    info, rec, _ = recorded(m, tmp_path)
    assert make_cut(info, rec, 0) is None  # an int64 shape is not an activation
    cut = make_cut(info, rec, 1, kept=[1])
    assert cut is not None and cut.feed == "x" and cut.frozen == ("s",)


def test_outer_scope_reads_of_a_subgraph_are_inputs(tmp_path):
    branch = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "then", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["a"], ["c"])], "else", [],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"], name="mul"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch,
                              else_branch=other)]
    m = model_of(nodes, [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                         numpy_helper.from_array(np.array(True), "cond")])
    info, rec, arrays = recorded(m, tmp_path)
    assert "a" in info.nodes[1].inputs  # read by the branches, not listed as an input
    cut = make_cut(info, rec, 1, kept=[1])
    assert cut is not None and cut.feed == "a"
    np.testing.assert_allclose(run(build_subgraph(m, info, cut, arrays), arrays["a"]),
                               arrays["y"], rtol=1e-6)


# -- the reduction ------------------------------------------------------------------------------
def test_reduces_to_the_one_faulty_node(tmp_path):
    m = residual_net()
    info, rec, arrays = recorded(m, tmp_path)
    judge = Judge(m, info, arrays, scale_weight_of("target"))
    red = reduce_cut(info, rec, judge)
    assert red is not None
    assert names(info, red.cut) == ["target"]
    assert red.cut.feed == "r0" and red.cut.output == "dw"
    assert red.evaluations == len({(c.output, c.nodes) for c in judge.seen})  # each judged once
    # 11 nodes: ~log2 probes per side plus the whole graph, nothing like one per node pair.
    assert red.evaluations <= 10, red.stages


def test_a_bug_that_needs_two_nodes_keeps_both_and_freezes_the_side_input(tmp_path):
    m = residual_net()
    info, rec, arrays = recorded(m, tmp_path)

    def fused_fault(sub: onnx.ModelProto) -> onnx.ModelProto:
        # Like a fusion bug: it fires only when the clip and the residual add meet, and then
        # lowers the clip's bound.
        if not {"clip", "residual"} <= {n.name for n in sub.graph.node}:
            return sub
        out = onnx.ModelProto()
        out.CopyFrom(sub)
        hi = next(t for t in out.graph.initializer if t.name == "hi")
        hi.CopyFrom(numpy_helper.from_array(np.array(0.5, np.float32), "hi"))
        return out

    red = reduce_cut(info, rec, Judge(m, info, arrays, fused_fault))
    assert red is not None
    assert names(info, red.cut) == ["clip", "residual"]
    # Two inputs of one size: the one made first is fed, the other frozen.
    assert red.cut.feed == "r0" and red.cut.frozen == ("dw",)
    sub = build_subgraph(m, info, red.cut, arrays)
    assert [i.name for i in sub.graph.input] == ["r0"]
    assert {"dw", "hi"} == {t.name for t in sub.graph.initializer}
    np.testing.assert_allclose(run(sub, arrays["r0"]), arrays["res"], rtol=1e-6)


def test_no_reduction_when_the_whole_graph_does_not_diverge(tmp_path):
    m = residual_net()
    info, rec, arrays = recorded(m, tmp_path)
    assert reduce_cut(info, rec, Judge(m, info, arrays, scale_weight_of("nowhere"))) is None


# -- upstream ONNX and layer mapping ------------------------------------------------------------
def test_upstream_onnx_is_the_last_onnx_artifact_before_the_culprit():
    reg = fake_registry()
    p = Pipeline.make(reg, "tiny_keras", [("fake.to_onnx", {}), ("fake.rewrite", {}),
                                          ("fake.to_relax", {}), ("fake.pass", {})], "fake_tvm")
    assert upstream_onnx(reg, p, 1) is None  # the culprit takes keras
    assert upstream_onnx(reg, p, 2) == 1  # the culprit's own input
    assert upstream_onnx(reg, p, 4) == 2  # before the relax steps
    assert upstream_onnx(reg, p, 5) == 2  # the runtime


def test_layers_map_to_the_last_tensor_they_own():
    # Names as tf2onnx gives them for tiny_keras: BatchNormalization folded into the Conv before
    # it, and the ReLU6 bounds shared by every Clip (named after one of them).
    nodes = [
        helper.make_node("Transpose", ["input"], ["tiny/stem_bn_1/batchnorm/mul_1__6:0"],
                         name="tiny/stem_bn_1/batchnorm/mul_1__6", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["tiny/stem_bn_1/batchnorm/mul_1__6:0",
                                  "tiny/stem_conv_1/convolution/merged_input:0",
                                  "tiny/stem_bn_1/batchnorm/sub:0"], ["Conv__39:0"],
                         name="Conv__39"),
        helper.make_node("Clip", ["Conv__39:0", "tiny/dw_relu6_1/Relu6_min", "max"],
                         ["tiny/stem_relu6_1/Relu6:0"], name="tiny/stem_relu6_1/Relu6"),
        helper.make_node("Conv", ["tiny/stem_relu6_1/Relu6:0", "w"],
                         ["tiny/dw_conv_1/depthwise:0"], name="tiny/dw_conv_1/depthwise"),
        helper.make_node("Clip", ["tiny/dw_conv_1/depthwise:0", "tiny/dw_relu6_1/Relu6_min",
                                  "max"], ["tiny/dw_relu6_1/Relu6:0"],
                         name="tiny/dw_relu6_1/Relu6"),
    ]
    inits = ["tiny/stem_conv_1/convolution/merged_input:0", "tiny/stem_bn_1/batchnorm/sub:0",
             "tiny/dw_relu6_1/Relu6_min", "max", "w"]
    info = GraphInfo.from_model(helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("tiny/dw_relu6_1/Relu6:0", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros(1, np.float32), n) for n in inits])))
    layers = ["stem_conv", "stem_bn", "stem_relu6", "dw_conv", "dw_relu6"]
    got = map_layers(layers, _onnx_descriptions(info))
    assert got == {"stem_bn": "Conv__39:0", "stem_relu6": "tiny/stem_relu6_1/Relu6:0",
                   "dw_conv": "tiny/dw_conv_1/depthwise:0", "dw_relu6": "tiny/dw_relu6_1/Relu6:0"}
    # TFLite fuses the same way and lists the fused ops in one tensor name; a BatchNormalization
    # whose add went into the ReLU after it has only an intermediate of its own: no match.
    fused = "tiny/stem_relu6_1/Relu6;tiny/stem_bn_1/batchnorm/add_1;tiny/stem_conv_1/convolution"
    mul = "tiny/dw_bn_1/batchnorm/mul_1"
    relu = "tiny/dw_relu6_1/Relu6;tiny/dw_bn_1/batchnorm/add_1"
    tflite_layers = ["stem_conv", "stem_bn", "stem_relu6", "dw_conv", "dw_bn", "dw_relu6"]
    assert map_layers(tflite_layers, [(t, t) for t in (fused, mul, relu)]) == {
        "stem_relu6": fused, "dw_relu6": relu}


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_keras_tensors_compare_in_either_layout(layout):
    ref = RNG.standard_normal((2, 5, 6, 3))
    out = ref if layout == "NHWC" else ref.transpose(0, 3, 1, 2)
    assert _compare_layouts(ref, out.copy(), Thresholds()).max_abs == 0


def test_a_subgraph_keeps_the_marks_steps_leave_but_not_the_input_layout(tmp_path):
    from fuzzconv.formats.layout import INPUT_LAYOUT_KEY

    m = residual_net()
    onnx.helper.set_model_props(m, {"fault.arm": "1", INPUT_LAYOUT_KEY: "NCHW"})
    info, rec, arrays = recorded(m, tmp_path)
    residual = next(i for i, n in enumerate(info.nodes) if n.name == "residual")
    sub = build_subgraph(m, info, make_cut(info, rec, residual, kept=[residual]), arrays)
    props = {p.key: p.value for p in sub.metadata_props}
    assert props == {"fault.arm": "1"}  # the fed tensor is an activation, not the model's input
