"""The NNSmith comparison's harness (``benchmarks/peers/generate_vs_nnsmith.py``), without NNSmith.

NNSmith does not group its reports, so the harness does: these pin how a bug directory, written
as NNSmith 0.1.0 writes one (``meta.json``, ``err.log``, ``model.onnx``), becomes a bucket, how a
failed try is summed up from its log, the table written from a saved report, and the one-line
refusals of bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from .peer_scripts import load_peer

bench = load_peer("generate_vs_nnsmith")

MISMATCH = """Traceback (most recent call last):
  File "/x/nnsmith/backends/factory.py", line 210, in verify_results
AssertionError:
Not equal to tolerance rtol=0.01, atol=0.001
onnxruntime (cpu opt: True) != torch[cpu] eager at v3_0
Mismatched elements: 51 / 45240 (0.113%)
"""
NOT_IMPL = ("Traceback (most recent call last):\n  File \"/x/onnxruntime.py\", line 56\n"
            "onnxruntime.capi.onnxruntime_pybind11_state.NotImplemented: [ONNXRuntimeError] : "
            "9 : NOT_IMPLEMENTED : Could not find an implementation for Erf(13) node with name "
            "'/Erf_{k}'\n")


def _bug(root: Path, name: str, symptom: str, err: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"system": "onnxruntime", "symptom": symptom,
                                             "stage": "verification"}))
    (d / "err.log").write_text(err)
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 3])
    y = helper.make_tensor_value_info("v3_0", TensorProto.DOUBLE, [2, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["v2_0"]),
                           helper.make_node("Round", ["v2_0"], ["v3_0"])], "g", [x], [y])
    onnx.save(helper.make_model(g), str(d / "model.onnx"))
    return d


def test_an_inconsistency_is_grouped_by_the_operator_and_type_of_the_output_that_differed(tmp_path):
    b = bench.nnsmith_bucket(_bug(tmp_path, "bug-1", "inconsistency", MISMATCH))
    assert b["key"] == "inconsistency: Round (double)"
    assert b["ops"] == ["Relu", "Round"]


def test_crashes_that_differ_only_in_node_names_are_one_bucket(tmp_path):
    a = bench.nnsmith_bucket(_bug(tmp_path, "bug-2", "exception", NOT_IMPL.format(k=1)))
    b = bench.nnsmith_bucket(_bug(tmp_path, "bug-3", "exception", NOT_IMPL.format(k=7)))
    assert a["key"] == b["key"]
    assert "Could not find an implementation for Erf(13)" in a["key"]
    assert "/Erf_" not in a["key"]


def test_why_names_the_commonest_reason_operators_failed():
    log = ("WARNING dtest  - =====> [Failure] at core.ReLU((float32,)) => (float32,)\n"
           "DEBUG   dtest  - No module named 'onnxscript'\n"
           "WARNING dtest  - =====> [Failure] at core.Sin((float32,)) => (float32,)\n"
           "DEBUG   dtest  - No module named 'onnxscript'\n"
           "WARNING dtest  - =====> [Failure] at core.Cast((int8,)) => (int64,)\n"
           "DEBUG   dtest  - invalid shape dimension -2\n"
           "AssertionError: opset must not be empty\n")
    why = bench._why(log)
    assert why.startswith("3 operator tests failed")
    assert "(2): No module named 'onnxscript'" in why
    assert bench._why("Traceback\nAssertionError: opset must not be empty\n") == (
        "AssertionError: opset must not be empty")


def test_the_collector_counts_operators_and_frees_the_disk(tmp_path):
    _bug(tmp_path / "0", "1700000000.1", "inconsistency", MISMATCH)
    _bug(tmp_path / "1", "1700000000.2", "inconsistency", MISMATCH)
    _bug(tmp_path / "1", "1700000000.3", "inconsistency", MISMATCH)
    c = bench.Collector(tmp_path)
    c.sweep()  # while NNSmith runs, the newest case of each run may still be being written
    assert c.models == 1 and sorted(p.name for p in (tmp_path / "1").iterdir()) == [
        "1700000000.3"]
    assert list((tmp_path / "0").iterdir())  # its only case is its newest
    c.sweep(final=True)
    assert c.models == 3 and c.ops == {"Relu": 3, "Round": 3}
    # the cases are gone; each run's folder stays, so a run still writing into it is not upset
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]
    assert all(not list((tmp_path / d).iterdir()) for d in ("0", "1"))


def _report(ran: bool = True) -> dict:
    stage = {"stage": "as installed", "command": "nnsmith.model_gen model.type=onnx", "exit": 1,
             "ok": False, "what": "402 operator tests failed; the commonest reason (394): x|y",
             "seconds": 61}
    rep = {"started": "2026-12-03 12:00", "stages": [stage], "peer": {"nnsmith": "0.1.0"},
           "ran": ran}
    if ran:
        rep.update(
            stack={"onnxruntime": "1.32.0"}, machine="x86_64, 2 cores", minutes=30.0, seed=0,
            together=True, wall_s=1800, load=[1.0, 2.0],
            nnsmith={"models": 9000, "saved_models_read": 9000, "ops": {"Relu": 5, "Erf": 2},
                     "reports": 40, "buckets": {"exception: Erf": 30, "inconsistency: Round": 10},
                     "bucket_ops": {"exception: Erf": ["Erf"], "inconsistency: Round": ["Round"]}},
            fuzzconv={"models": 50, "ops": {"Relu": 3, "Resize": 1}, "evaluations": 400,
                      "reports": 3, "limitations": [],
                      "buckets": [{"id": "F-1", "symptom": "crash", "error": "Fail",
                                   "pipeline": "torch.onnx_export → ort", "culprit": None,
                                   "minimal_layers": "resize", "repro": "REPRODUCED"}]})
    return rep


def test_the_table_is_written_from_a_saved_report():
    text = bench.markdown(_report())
    assert text.startswith(bench.BEGIN) and text.endswith(bench.END)
    assert "| distinct buckets | 2 | 1 |" in text
    assert "| buckets per hour | 4.0 | 2.0 |" in text  # 30 minutes
    assert "1 of 1 |" in text
    assert "Operator types only NNSmith's models held: Erf. Only fuzzconv's: Resize." in text
    assert "x\\|y" in text  # a pipe in a message does not split the cell


def test_judged_buckets_give_the_real_buckets_per_hour_and_a_verdict_column():
    rep = _report()
    rep["nnsmith"]["triage"] = {
        "per_bucket": 5, "real": 1, "counts": {"ORT fails": 1, "ORT nearer float64": 1},
        "buckets": {"exception: Erf": {"verdict": "ORT fails"},
                    "inconsistency: Round": {"verdict": "ORT nearer float64"}}}
    text = bench.markdown(rep)
    assert "| real buckets per hour | 2.0 | 2.0 |" in text  # 30 minutes
    assert "| exception: Erf | 30 | **ORT fails** | Erf |" in text
    assert "| inconsistency: Round | 10 | ORT nearer float64 | Round |" in text
    assert "ORT fails: 1; ORT nearer float64: 1" in text


def test_a_peer_that_never_ran_says_so():
    text = bench.markdown(_report(ran=False))
    assert "NNSmith could not run here, so nothing was compared." in text
    assert "distinct buckets" not in text


@pytest.mark.parametrize("argv", [["--minutes", "0"], ["--render", "no/such/report.json"]])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert bench.main([*argv, "--no-write"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_supervise_restarts_a_run_whose_memory_passes_the_cap_until_the_time_is_spent():
    import subprocess

    started = []

    def start(left, k):
        started.append(left)
        # a stand-in that holds ~64 MB: over a 32 MB cap at once
        return subprocess.Popen([sys.executable, "-c",
                                 "import time; b = bytearray(64 << 20); time.sleep(60)"])

    segments = bench.supervise(start, seconds=26, cap=32 << 20)
    assert len(segments) >= 1 and all(s["end"].startswith("stopped at") for s in segments)
    assert started[0] <= 26 and all(b < a for a, b in zip(started, started[1:]))
