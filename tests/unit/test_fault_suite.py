"""The injected faults of ``benchmarks/faults/`` change the model exactly as their ground truth says.

Each ONNX fault runs through the same wrapper a worker calls (the registered step, file in, file
out) on a small graph shaped like tf2onnx's output for a Keras model. Both graphs run in ONNX's
reference evaluator (pure NumPy: no framework in this process) with every node output exposed;
the first tensor, in graph order, that differs must come from the node ``affected_node`` names.
The TVM fault is checked in its own process (it needs TVM).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fuzzconv.plugins import StepContext
from fuzzconv.registry import fresh_registry

FAULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "faults"
C = 4


def _model() -> onnx.ModelProto:
    """NHWC input → Transpose → Conv3×3 → ReLU6 → depthwise Conv3×3 → BN (Mul, Add) → ReLU6 →
    Conv1×1 → GlobalAveragePool → Flatten → MatMul → Add: the tf2onnx shape of a Keras model."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [init("stem_w", C, 3, 3, 3), init("stem_b", C), init("dw_w", C, 1, 3, 3),
             init("bn_mul", 1, C, 1, 1), init("bn_add", 1, C, 1, 1), init("pw_w", C, C, 1, 1),
             init("dense_w", C, 10), init("dense_b", 10),
             numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
             numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max")]
    nodes = [
        helper.make_node("Transpose", ["input"], ["x"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "stem_w", "stem_b"], ["stem"], name="Conv__2",
                         kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], group=1),
        helper.make_node("Clip", ["stem", "relu6_min", "relu6_max"], ["stem_relu6"], name="stem_relu6"),
        helper.make_node("Conv", ["stem_relu6", "dw_w"], ["dw"], name="dw_conv",
                         kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], group=C),
        helper.make_node("Mul", ["dw", "bn_mul"], ["dw_bn_mul"], name="dw_bn/mul"),
        helper.make_node("Add", ["dw_bn_mul", "bn_add"], ["dw_bn"], name="dw_bn/add"),
        helper.make_node("Clip", ["dw_bn", "relu6_min", "relu6_max"], ["dw_relu6"], name="dw_relu6"),
        helper.make_node("Conv", ["dw_relu6", "pw_w"], ["pw"], name="pw_conv",
                         kernel_shape=[1, 1], group=1),
        helper.make_node("GlobalAveragePool", ["pw"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "dense_w"], ["mm"], name="logits/MatMul"),
        helper.make_node("Add", ["mm", "dense_b"], ["logits"], name="logits/BiasAdd"),
    ]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 8, 8, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _load(name: str):
    """The fault's registry (as a worker loads it) and its module."""
    path = (FAULTS / f"{name}.py").resolve()
    reg = fresh_registry([str(path)])
    module = next(m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == str(path))
    return reg, module


def _apply(reg, tmp: Path, model: onnx.ModelProto, steps: list[tuple[str, dict]]) -> onnx.ModelProto:
    src = tmp / "in.onnx"
    onnx.save(model, str(src))
    for i, (name, params) in enumerate(steps):
        dst = tmp / f"out{i}.onnx"
        reg.get(name).fn(StepContext({"name": "toy", "input_shape": [8, 8, 3]}), src, dst, **params)
        src = dst
    return onnx.load(str(src))


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every node output, by tensor name."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o for n in m.graph.node for o in n.output]
    del m.graph.output[:]
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return dict(zip(names, ReferenceEvaluator(m).run(None, {"input": x})))


def _first_changed(before: onnx.ModelProto, after: onnx.ModelProto) -> str | None:
    x = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    a, b = _outputs(before, x), _outputs(after, x)
    for node in before.graph.node:
        for out in node.output:
            if not np.allclose(a[out], b[out], rtol=1e-6, atol=1e-6):
                return node.name
    return None


def _truth(name: str) -> dict:
    tree = ast.parse((FAULTS / f"{name}.py").read_text())
    return next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "GROUND_TRUTH")


def test_the_suite_spans_the_required_kinds() -> None:
    faults = sorted(p.stem for p in FAULTS.glob("*.py") if not p.name.startswith("_"))
    assert len(faults) >= 10
    truths = [_truth(f) for f in faults]
    symptoms = {s for t in truths for s in (t["symptom"] if isinstance(t["symptom"], list) else [t["symptom"]])}
    assert symptoms >= {"label_flip", "numeric", "crash", "timeout"}
    assert any(t.get("flaky") for t in truths) and any(t.get("subtle") for t in truths)
    assert any(t.get("also") for t in truths)  # a fault that needs two steps
    for f, t in zip(faults, truths):
        reg, _ = _load(f)
        op = reg.get(t["culprit"]["step"])
        for k, v in t["culprit"]["params"].items():
            assert v in op.choices[k] and v != op.defaults[k], (f, k)  # reachable, not the default


SIMPLE = {  # fault → the node the toy graph's first changed output must come from
    "conv_padding": "Conv__2",
    "bn_scale": "dw_bn/mul",
    "layout_transpose": "Conv__2",
    "int8_weight": "Conv__2",
    "clip_mode": "stem_relu6",
    "flaky_noise": "logits/MatMul",
}


@pytest.mark.parametrize("fault", sorted(SIMPLE))
def test_fault_changes_exactly_the_node_it_claims(tmp_path: Path, fault: str) -> None:
    reg, module = _load(fault)
    truth = _truth(fault)
    model = _model()
    step = truth["culprit"]["step"]
    inert = _apply(reg, tmp_path, model, [(step, {})])
    assert _first_changed(model, inert) is None  # the default setting is harmless
    faulty = _apply(reg, tmp_path, model, [(step, truth["culprit"]["params"])])
    onnx.checker.check_model(faulty)
    assert module.affected_node(model) == SIMPLE[fault]
    assert _first_changed(model, faulty) == SIMPLE[fault]


def test_clip_mode_fires_at_one_value_only(tmp_path: Path) -> None:
    reg, _ = _load("clip_mode")
    model = _model()
    assert _first_changed(model, _apply(reg, tmp_path, model, [("fault.clip_mode", {"mode": "fast"})])) is None
    faulty = _apply(reg, tmp_path, model, [("fault.clip_mode", {"mode": "approx"})])
    # the ReLU6 bounds are shared: the second ReLU6 keeps its own bound of 6
    bounds = {n.name: n.input[2] for n in faulty.graph.node if n.op_type == "Clip"}
    assert bounds["dw_relu6"] == "relu6_max" and bounds["stem_relu6"] != "relu6_max"


def test_int8_rounding_is_small_but_real(tmp_path: Path) -> None:
    reg, _ = _load("int8_weight")
    model = _model()
    faulty = _apply(reg, tmp_path, model, [("fault.int8_weight", {"round_int8": True})])
    inits = {t.name: numpy_helper.to_array(t) for t in faulty.graph.initializer}
    w, q = inits["stem_w"], inits[next(n.input[1] for n in faulty.graph.node if n.name == "Conv__2")]
    step = np.abs(w).max() / 127
    assert 0 < np.abs(w - q).max() <= step / 2 + 1e-7
    assert len(np.unique(np.round(q / step))) <= 255


def test_two_steps_fault_needs_both(tmp_path: Path) -> None:
    reg, module = _load("two_steps")
    model = _model()
    assert _first_changed(model, _apply(reg, tmp_path, model, [("fault.fire", {"scale": 0.5})])) is None
    assert _first_changed(model, _apply(reg, tmp_path, model, [("fault.arm", {"armed": True})])) is None
    both = _apply(reg, tmp_path, model, [("fault.arm", {"armed": True}), ("fault.fire", {"scale": 0.5})])
    assert module.affected_node(model) == "pw_conv"
    assert _first_changed(model, both) == "pw_conv"


def test_flaky_noise_differs_between_calls(tmp_path: Path) -> None:
    reg, _ = _load("flaky_noise")
    model = _model()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = (_apply(reg, tmp_path / d, model, [("fault.flaky_noise", {"noise": True})]) for d in "ab")
    x = np.random.default_rng(2).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    la, lb = (ReferenceEvaluator(m).run(None, {"input": x})[0] for m in (a, b))
    assert not np.allclose(la, lb)


def _run_step_in_child(tmp_path: Path, fault: str, step: str, params: dict, timeout: float):
    onnx.save(_model(), str(tmp_path / "in.onnx"))
    code = textwrap.dedent(f"""
        from pathlib import Path
        from fuzzconv.plugins import StepContext
        from fuzzconv.registry import fresh_registry
        reg = fresh_registry([{str(FAULTS / (fault + '.py'))!r}])
        reg.get({step!r}).fn(StepContext({{"name": "toy", "input_shape": [8, 8, 3]}}),
                             Path({str(tmp_path / 'in.onnx')!r}), Path({str(tmp_path / 'out.onnx')!r}),
                             **{params!r})
    """)
    return subprocess.run([sys.executable, "-c", code], timeout=timeout, capture_output=True)


def test_segfault_fault_kills_its_process(tmp_path: Path) -> None:
    assert _run_step_in_child(tmp_path, "segfault", "fault.segfault", {}, 60).returncode == 0
    assert _run_step_in_child(tmp_path, "segfault", "fault.segfault", {"crash": True}, 60).returncode == -11


def test_hang_fault_hangs_past_its_own_timeout(tmp_path: Path) -> None:
    reg, _ = _load("hang")
    # the hunt kills it at its own timeout, well before the one other steps keep
    from fuzzconv.workers import DEFAULT_TIMEOUT

    assert reg.get("fault.hang").timeout < DEFAULT_TIMEOUT / 10
    assert _run_step_in_child(tmp_path, "hang", "fault.hang", {}, 60).returncode == 0
    with pytest.raises(subprocess.TimeoutExpired):
        _run_step_in_child(tmp_path, "hang", "fault.hang", {"hang": True}, 5)
