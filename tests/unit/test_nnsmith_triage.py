"""The third opinion on NNSmith's reports (``benchmarks/peers/nnsmith_triage.py``), on real ONNX
Runtime and onnx's reference evaluator: bug folders written as NNSmith 0.1.0 writes them
(``model.onnx``, ``oracle.pkl`` with the inputs and PyTorch's outputs)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .peer_scripts import load_peer

tri = load_peer("nnsmith_triage")

X16 = np.linspace(-3, 3, 64).astype(np.float16)


def _chain(ops: list[str], dtype: int) -> onnx.ModelProto:
    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"y{i}"]))
        prev = f"y{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, [64])],
                          [helper.make_tensor_value_info(prev, dtype, [64])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _bug(tmp: Path, name: str, model: onnx.ModelProto, x, expected) -> Path:
    d = tmp / "run0" / name
    d.mkdir(parents=True)
    onnx.save(model, d / "model.onnx")
    out = model.graph.output[0].name
    (d / "oracle.pkl").write_bytes(pickle.dumps(
        {"input": {"x": x}, "output": {out: expected}, "provider": "cpu"}))
    return d


def _float16_steps(x, fns):
    """What PyTorch eager computes in float16: each operator rounded to float16."""
    for f in fns:
        x = f(x).astype(np.float16)
    return x


def test_float16_differences_where_ort_is_nearer_the_float64_result_are_not_bugs(tmp_path):
    # ONNX Runtime computes float16 Tan/Sin/Cos in float32 and rounds once; PyTorch and the ONNX
    # reference round after every operator. The float64 computation sides with ONNX Runtime.
    fns = [np.tan, np.sin, np.tan, np.cos, np.tan]
    m = _chain(["Tan", "Sin", "Tan", "Cos", "Tan"], TensorProto.FLOAT16)
    bug = _bug(tmp_path, "bug-f16", m, X16, _float16_steps(X16, fns))
    v = tri.judge(bug)
    assert v["verdict"] == "ORT nearer float64", v


def test_a_difference_only_onnx_runtime_makes_is_a_candidate_bug(tmp_path, monkeypatch):
    # PyTorch and the reference agree on 2x; a runtime answering 2x + 1 is the odd one out
    x = np.linspace(-1, 1, 64).astype(np.float32)
    m = _chain(["Neg", "Neg"], TensorProto.FLOAT)
    g = m.graph
    g.node.append(helper.make_node("Add", ["y1", "y1"], ["z"]))
    g.output[0].CopyFrom(helper.make_tensor_value_info("z", TensorProto.FLOAT, [64]))
    bug = _bug(tmp_path, "bug-wrong", m, x, 2 * x)
    assert tri.judge(bug)["verdict"] == "not reproduced"  # the real runtime is right
    monkeypatch.setattr(tri, "_ort", lambda model, inputs: {"z": 2 * x + 1})
    assert tri.judge(bug)["verdict"] == "ORT alone differs"


def test_a_difference_at_a_boundary_is_ill_conditioned_not_a_bug(tmp_path, monkeypatch):
    # Floor of whole numbers: PyTorch and the reference agree, a runtime one lower at each is off
    # by 1 -- and so is the float64 result when the inputs move by 1e-5 of themselves
    x = np.arange(1, 65).astype(np.float32)
    bug = _bug(tmp_path, "bug-edge", _chain(["Floor"], TensorProto.FLOAT), x, x)
    monkeypatch.setattr(tri, "_ort", lambda model, inputs: {"y0": x - 1})
    v = tri.judge(bug)
    assert v["verdict"] == "ill-conditioned", v
    assert "moves by 1" in v["why"]
    # the same runtime answer away from the boundary is off well beyond what noise does
    mid = x + 0.5
    bug = _bug(tmp_path, "bug-mid", _chain(["Floor"], TensorProto.FLOAT), mid, x)
    monkeypatch.setattr(tri, "_ort", lambda model, inputs: {"y0": x - 1})
    assert tri.judge(bug)["verdict"] == "ORT alone differs"


def test_a_difference_in_pytorchs_semantics_follows_the_onnx_reference(tmp_path):
    # the reference and ONNX Runtime agree; the oracle says something else
    x = np.linspace(0.1, 2, 64).astype(np.float32)
    bug = _bug(tmp_path, "bug-sem", _chain(["Reciprocal"], TensorProto.FLOAT), x, x)
    assert tri.judge(bug)["verdict"] == "ORT follows the ONNX reference"


def test_a_missing_kernel_is_a_failure_and_an_invalid_model_is_not(tmp_path):
    x = np.linspace(-1, 1, 64)
    erf = _bug(tmp_path, "bug-erf", _chain(["Erf"], TensorProto.DOUBLE), x, x)
    v = tri.judge(erf)
    assert v["verdict"] == "ORT fails" and "Erf" in v["why"]
    bad = _bug(tmp_path, "bug-bad", _chain(["NoSuchOperator"], TensorProto.DOUBLE), x, x)
    assert tri.judge(bad)["verdict"] == "invalid model"


def test_a_bucket_is_real_when_any_judged_report_is(tmp_path):
    x = np.linspace(-1, 1, 64)
    _bug(tmp_path, "bug-erf", _chain(["Erf"], TensorProto.DOUBLE), x, x)
    _bug(tmp_path, "bug-ok", _chain(["Neg"], TensorProto.DOUBLE), x, -x)
    (tmp_path / "run0" / "bug-torn").mkdir()  # a report NNSmith did not finish writing
    bugs = [{"run": "run0", "dir": "bug-ok", "key": "k1"},
            {"run": "run0", "dir": "bug-erf", "key": "k1"},
            {"run": "run0", "dir": "bug-torn", "key": "k2"}]
    t = tri.triage(bugs, tmp_path)
    assert t["buckets"]["k1"]["verdict"] == "ORT fails"
    assert t["buckets"]["k1"]["judged"] == {"not reproduced": 1, "ORT fails": 1}  # then it stops
    assert t["buckets"]["k2"]["verdict"] == "cannot judge"
    assert t["real"] == 1 and t["counts"] == {"ORT fails": 1, "cannot judge": 1}
    assert "ORT fails: 1" in tri.triage_text(t)


def test_a_judgement_past_its_memory_is_not_judged_and_harms_nothing_else(tmp_path, monkeypatch):
    x = np.linspace(-1, 1, 64)
    bug = _bug(tmp_path, "bug-erf", _chain(["Erf"], TensorProto.DOUBLE), x, x)
    assert tri.judge_apart(bug)["verdict"] == "ORT fails"
    monkeypatch.setattr(tri, "MEMORY_BYTES", 64 * 2**20)  # not enough to import onnxruntime
    v = tri.judge_apart(bug)
    assert v["verdict"] == "cannot judge" and "over 0.0625 GB" in v["why"]
