"""The reducer comparison's harness (``benchmarks/peers/``), without Polygraphy.

The shared check decides what every reducer keeps, so its verdicts and exit statuses are pinned
here: on hand-built graphs, with the faults run through fuzzconv's own step functions in the
check's process (ONNX Runtime there, never in this one). Polygraphy's log is parsed from a
sample of what ``debug reduce`` prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ..conftest import needs
from .peer_scripts import load_peer

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "benchmarks" / "peers"


check = load_peer("check_divergence")
bench = load_peer("reduce_vs_polygraphy")
V = check.Verdict


# -- verdicts and exit statuses -----------------------------------------------------------------
def test_signature_of_a_crash_holds_step_and_error_class():
    assert V("crash", "fault.segfault", "SIGSEGV").key == ["crash", "fault.segfault", "SIGSEGV"]
    assert V("diverges", detail="output 0: ...").key == ["diverges"]
    assert V("crash", "a", "SIGSEGV").key != V("crash", "b", "SIGSEGV").key


def test_decide_exit_status():
    div, ok, bad = V("diverges"), V("agrees"), V("invalid", detail="no value")
    assert check.decide(["diverges"], [div]) == check.REPRODUCES == 1
    assert check.decide(["diverges"], [ok, div]) == 1  # one sample is enough
    assert check.decide(["diverges"], [ok, ok]) == check.AGREES == 0
    assert check.decide(["diverges"], [bad, bad]) == check.UNJUDGED == 2
    assert check.decide(["diverges"], [bad, ok]) == 0
    # another failure is not this failure
    assert check.decide(["crash", "s", "SIGSEGV"], [V("crash", "s", "ValueError")]) == 0
    assert check.decide(["crash", "s", "SIGSEGV"], [div]) == 0
    assert check.decide(None, [div]) == 0  # no signature: nothing can reproduce it


def test_compare_uses_the_reducers_per_tensor_tolerance():
    ref = [np.linspace(0, 100, 50, dtype=np.float32).reshape(5, 10)]
    assert check.compare(ref, [ref[0] + 0.05], 1e-2, 1e-3).kind == "agrees"  # 5e-4 of range
    assert check.compare(ref, [ref[0] + 0.2], 1e-2, 1e-3).kind == "diverges"
    assert check.compare(ref, [ref[0].reshape(5, 10)], 1e-2, 1e-3).kind == "agrees"
    assert check.compare(ref + ref, ref, 1e-2, 1e-3).kind == "diverges"  # an output went missing
    two = [ref[0], ref[0]]
    assert check.compare(two, [ref[0], ref[0] * 2], 1e-2, 1e-3).kind == "diverges"  # any output


def _model(nodes, inputs, inits, out="y"):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, ["N", 4, 8, 8])
                     for i in inputs],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_feeds_every_graph_input_by_name_but_not_initializers():
    hi = numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    m = _model([helper.make_node("Add", ["a", "b"], ["s"]),
                helper.make_node("Clip", ["s", "", "hi"], ["y"])], ["a", "b"], [hi])
    m.graph.input.append(helper.make_tensor_value_info("hi", TensorProto.FLOAT, []))
    assert check.graph_inputs(m) == ["a", "b"]
    data = {"a": np.ones((1, 4, 8, 8), np.float32), "b": np.zeros((1, 4, 8, 8), np.float32)}
    feeds = check.feeds_for(m, data)
    assert set(feeds) == {"a", "b"}
    why = check.feeds_for(m, {"a": data["a"]})
    assert isinstance(why, str) and "'b'" in why


# -- Polygraphy's log ---------------------------------------------------------------------------
POLYGRAPHY_LOG = """\
[I] RUNNING | Iteration 1 | Approximately 3 iteration(s) remaining
[I]     Running check command: ./check.sh polygraphy_debug.onnx
[E]     FAILED | Iteration 1 | Duration 0.5s
[I]     PASSED | Iteration 2 | Duration 0.4s
[I]         Freezing tensor: Variable (x): (shape=[1, 4, 8, 8], dtype=float32) to eliminate branches.
[!] Module: 'onnxruntime.tools.symbolic_shape_infer' is required but could not be imported.
    Note: Error was: sympy is required for symbolic shape inference.
[E]     FAILED | Iteration 3 | Duration 0.5s
[I]         Marking model inputs: [Variable (d0): (shape=[1, 4, 8, 8], dtype=float32), Variable (): (shape=None, dtype=None)]
[E] FAILED | Runtime: 4.209s | Command: polygraphy debug reduce model.onnx
[!]             The following outputs were not found in the model: {''}.
                Note: outputs requested were: {''}, but all outputs are: {'a', 'b'}
"""


def test_parse_polygraphy_counts_iterations_and_finds_the_critical_error():
    p = bench.parse_polygraphy(POLYGRAPHY_LOG)
    assert (p["iterations"], p["passed"], p["failed"], p["frozen"]) == (3, 1, 2, 1)
    # the fallback note about an optional module is not the error; the run's last critical is
    assert p["error"].startswith("The following outputs were not found in the model: {''}.")
    assert "Note: outputs requested" in p["error"]
    assert p["phases"] is None  # it stopped before the outputs were done
    clean = bench.parse_polygraphy("[I] PASSED | Iteration 1 | Duration 1s\n"
                                   "[I] Finished reducing model outputs\n"
                                   "[E] FAILED | Iteration 1 | Duration 1s\n"
                                   "[I] PASSED | Iteration 2 | Duration 1s\n")
    assert clean == {"iterations": 3, "passed": 2, "failed": 1, "frozen": 0,
                     "phases": {"outputs": 1, "inputs": 2}, "error": None}


def test_result_row_and_goal():
    R = bench.Result
    fz = R("c", "fuzzconv", 140, nodes=1, inputs=1, checks=9, reproduces=True, standalone=True,
           op_types=["Conv"])
    pb = R("c", "Polygraphy bisect", 140, nodes=1, inputs=1, checks=9, reproduces=True)
    pl = R("c", "Polygraphy linear", 140, nodes=1, inputs=1, checks=144, reproduces=True)
    assert bench.goal([fz, pb, pl]) == (True, "met")
    small = R("c", "Polygraphy linear", 140, nodes=1, inputs=2, checks=5, reproduces=True)
    ok, why = bench.goal([fz, small])
    assert not ok and "Polygraphy linear (1 node, 5 checks)" in why
    # a smaller result that does not reproduce, or a control run, does not count against it
    wrong = R("c", "Polygraphy bisect", 140, nodes=0, checks=1, reproduces=False)
    control = R("c", "Polygraphy bisect, failing sample only", 140, nodes=1, checks=2,
                reproduces=True)
    assert bench.goal([fz, wrong, control])[0]
    assert not bench.goal([R("c", "fuzzconv", 140, nodes=3, reproduces=False)])[0]
    failed = R("c", "Polygraphy bisect", 8, checks=4, error="The outputs {''}. Note: {'a'}")
    row = failed.row()
    assert row[2] == "—" and "Note" not in row[-1] and row[-1].startswith("failed: ")
    assert fz.row()[:6] == ["c", "fuzzconv", "1 of 140", "1", "9", "0"]
    fz.stages = {"output": 7, "input": 2, "ddmin": 0}
    fz.standalone, fz.standalone_error = False, "InvalidGraph: ..."
    assert fz.row()[-1] == ("checks by stage: output 7, input 2, ddmin 0; "
                            "standalone: InvalidGraph: ...")


def test_read_log_counts_one_line_per_call(tmp_path):
    log = tmp_path / "checks.jsonl"
    assert bench.read_log(log) == []
    log.write_text(json.dumps({"exit": 1, "seconds": 0.5}) + "\n\n" +
                   json.dumps({"exit": 0, "seconds": 0.25}) + "\n")
    assert [x["exit"] for x in bench.read_log(log)] == [1, 0]


# -- the check as a process, on hand-built graphs -------------------------------------------------
def _case(tmp_path: Path, steps, signature, plugin: Path) -> Path:
    case = {"plugins": [str(plugin)], "steps": steps,
            "runtime": {"name": "ort", "params": {"graph_optimization_level": "all"}},
            "model": {"name": "t", "layout": "NCHW", "input_shape": [4, 8, 8], "classes": 5},
            "signature": signature, "data": ["rec.npz"], "timeout": 120}
    (tmp_path / "case.json").write_text(json.dumps(case))
    rng = np.random.default_rng(0)
    arrays = {n: (rng.standard_normal((1, 4, 8, 8)) * 3).astype(np.float32)
              for n in ("x", "a", "b")}
    names = list(arrays)
    np.savez(tmp_path / "rec.npz", names=np.array(names, dtype=str),
             **{f"t{i}": arrays[n] for i, n in enumerate(names)})
    return tmp_path / "case.json"


def _run_check(case: Path, model: onnx.ModelProto, path: Path) -> tuple[int, dict]:
    onnx.save(model, str(path))
    log = case.parent / "log.jsonl"
    p = subprocess.run([sys.executable, str(PEERS / "check_divergence.py"), str(case), str(path),
                        "--log", str(log)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return p.returncode, json.loads(log.read_text().splitlines()[-1])


def _clip_model(inputs=("x",), no_min=True):
    hi = numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    nodes = [helper.make_node("Clip", [inputs[0], "" if no_min else "lo", "hi"], ["y"],
                              name="clip")]
    inits = [hi] + ([] if no_min else [numpy_helper.from_array(np.array(0.0, np.float32), "lo")])
    return _model(nodes, list(inputs), inits)


@needs("ort")
def test_check_exit_status_and_log(tmp_path):
    case = _case(tmp_path, [{"step": "fault.clip_mode", "params": {"mode": "approx"}}],
                 ["diverges"], ROOT / "benchmarks" / "faults" / "clip_mode.py")
    # Clip without its optional min, max lowered to 1 by the fault: values above 1 change
    code, line = _run_check(case, _clip_model(), tmp_path / "m1.onnx")
    assert code == 1 and line["verdicts"][0]["kind"] == "diverges" and line["nodes"] == 1
    # no Clip for the fault to touch: the same chain agrees
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], ["x"], [])
    code, line = _run_check(case, relu, tmp_path / "m2.onnx")
    assert code == 0 and line["verdicts"][0]["kind"] == "agrees"
    # an input with no recorded value cannot be judged: 2, never 1
    code, line = _run_check(case, _clip_model(inputs=("nowhere",)), tmp_path / "m3.onnx")
    assert code == 2 and "nowhere" in line["verdicts"][0]["detail"]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3  # one line per call


@needs("ort")
def test_check_feeds_several_inputs(tmp_path):
    case = _case(tmp_path, [{"step": "peers.residual_sub", "params": {"sub": True}}],
                 ["diverges"], PEERS / "peer_faults.py")
    add = _model([helper.make_node("Add", ["a", "b"], ["y"], name="residual")], ["a", "b"], [])
    code, line = _run_check(case, add, tmp_path / "add.onnx")
    assert code == 1 and line["inputs"] == 2
    # an Add with a constant side is no residual connection: the fault leaves it alone
    bias = numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "bias")
    code, _ = _run_check(case, _model([helper.make_node("Add", ["a", "bias"], ["y"])], ["a"],
                                      [bias]), tmp_path / "bias.onnx")
    assert code == 0


@needs("ort")
def test_check_sees_a_segfault_in_a_step_as_that_crash(tmp_path):
    faults = ROOT / "benchmarks" / "faults" / "segfault.py"
    steps = [{"step": "fault.segfault", "params": {"crash": True}}]
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], ["x"], [])
    case = _case(tmp_path, steps, ["crash", "fault.segfault", "SIGSEGV"], faults)
    code, line = _run_check(case, relu, tmp_path / "r.onnx")
    assert code == 1 and line["verdicts"][0]["step"] == "fault.segfault"
    case = _case(tmp_path, steps, ["diverges"], faults)  # a crash is not a divergence
    assert _run_check(case, relu, tmp_path / "r.onnx")[0] == 0


@needs("ort")
def test_relu_add_fusion_fault_is_invisible_where_the_other_addend_is_zero(tmp_path):
    """The several-samples case rests on this: the fault needs b != 0 where a < 0."""
    reg = __import__("fuzzconv.registry", fromlist=["fresh_registry"]).fresh_registry(
        [str(PEERS / "peer_faults.py")])
    from onnx.reference import ReferenceEvaluator

    from fuzzconv.plugins import StepContext

    m = _model([helper.make_node("Relu", ["a"], ["ra"], name="relu"),
                helper.make_node("Add", ["ra", "b"], ["y"], name="add")], ["a", "b"], [])
    src, dst = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(m, str(src))
    reg.get("peers.relu_add_fusion", "step").fn(StepContext({}), src, dst, fuse=True)
    fused = onnx.load(str(dst))
    a = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    for b, differs in ((np.zeros_like(a), False), (np.ones_like(a), True)):
        want = ReferenceEvaluator(m).run(None, {"a": a, "b": b})[0]
        got = ReferenceEvaluator(fused).run(None, {"a": a, "b": b})[0]
        assert (not np.allclose(want, got)) == differs


def test_observations_read_inputs_samples_and_stopped_runs_off_the_results():
    R = bench.Result
    fz = R("c", "fuzzconv", 140, nodes=8, inputs=1, checks=17, check_seconds=8.5,
           reproduces=True)
    lin = R("c", "Polygraphy linear", 140, nodes=1, inputs=2, checks=164, reproduces=True)
    bis = R("c", "Polygraphy bisect", 140, nodes=4, inputs=1, checks=5, reproduces=True)
    only = R("c", "Polygraphy bisect, failing sample only", 140, nodes=2, inputs=1, checks=5)
    slow = R("c", "Polygraphy linear", 140, checks=31, error="did not finish in 60 min")
    text = " | ".join(bench.observations([fz, lin, bis, only, slow]))
    assert "2 inputs (Polygraphy linear)" in text and "fuzzconv's takes 1" in text
    assert "every sample, Polygraphy bisect keeps 4 nodes; given only the failing one, 2" in text
    assert "Polygraphy linear ran 31 checks before it was stopped" in text
    assert "0.5 s on average" in text


def test_tables_are_written_from_a_saved_report():
    R = bench.Result
    rows = [R("c", "fuzzconv", 8, nodes=1, inputs=1, checks=5, reproduces=True, standalone=True),
            R("c", "Polygraphy bisect", 8, checks=4, error="The following outputs were not "
              "found in the model: {''}. Note: all outputs are: {'a'}")]
    report = {"started": "2026-12-03 05:00", "machine": "x86_64, 2 cores", "load": ["l0", "l1"],
              "peer": {"polygraphy": "0.53.6"}, "stack": {"onnx": "1.23.2"}, "max_minutes": 60,
              "cases": [{"name": "c", "about": "a case", "nodes": 8, "signature": ["diverges"],
                         "fuzzconv_run": None, "samples": 1,
                         "results": [json.loads(json.dumps(bench.asdict(r))) for r in rows]}]}
    text = bench.markdown(json.loads(json.dumps(report)))
    begin, end = bench.markers("peers-reduce")
    assert text.startswith(begin) and text.endswith(end)
    assert "| c | fuzzconv | 1 of 8 | 1 | 5 |" in text
    assert "Polygraphy bisect stopped: `The following outputs were not found" in text
    assert "Goal met on 1 of 1 cases" in text and "polygraphy 0.53.6" in text
    assert "Over the 0 cases where every run made a model" in text  # bisect made none


def test_a_run_of_some_cases_is_its_own_section_with_its_own_heading():
    report = {"started": "2026-12-03 05:00", "machine": "m", "load": ["l0", "l1"],
              "peer": {}, "stack": {}, "max_minutes": 60, "cases": [],
              "section": "peers-reduce-generated", "title": "Generated-model cases"}
    text = bench.markdown(report)
    assert text.startswith("<!-- peers-reduce-generated:begin -->")
    assert text.endswith("<!-- peers-reduce-generated:end -->")
    assert "## Generated-model cases (`benchmarks/peers/reduce_vs_polygraphy.py`)" in text


@pytest.mark.parametrize("argv", [["--section", "Bad Name"], ["--cases", "no_such_case"]])
def test_bad_arguments_are_one_line_and_exit_2(argv, capsys):
    assert bench.main([*argv, "--no-write"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_generated_cases_are_valid_specs_each_converted_in_a_store_of_its_own(tmp_path):
    from fuzzconv.gen.spec import GenSpec

    gen = [c for c in bench.CASES if c.generated is not None]
    assert {c.source_step for c in gen} == {"keras.tf2onnx", "torch.onnx_export"}
    for c in gen:
        spec = GenSpec.from_dict(c.generated)  # raises on a spec the vocabulary cannot build
        assert len(spec.layers) >= 4  # larger than the minimal model, so there is work to do
        assert c.plugin is None and c.steps[0]["step"] == "onnx.tvm"
    stores = {bench.fuzzconv_store(tmp_path, c) for c in bench.CASES}
    assert len(stores) == 1 + len(gen)  # mobilenetv2's cases share one
