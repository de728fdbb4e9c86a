"""The command line through typer's CliRunner: listings, run, hunt, and one-line usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fuzzconv.cli import app

from ..conftest import FaultHunt, needs
from ..contracts import contract_errors

ASSETS = Path(__file__).resolve().parents[1] / "assets"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_usage_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_models_json_lists_the_zoo():
    r = invoke("models", "--json")
    assert r.exit_code == 0
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    for name in ("mobilenetv2", "resnet101v2", "densenet121", "inceptionv3", "torch:mobilenet_v2",
                 "torch:resnet101", "torch:densenet121", "torch:inception_v3", "tiny_keras",
                 "tiny_torch"):
        m = rows[name]
        assert {"source", "input_shape", "preprocessing", "classes", "weights"} <= set(m)
    assert rows["inceptionv3"]["input_shape"] == [299, 299, 3]
    assert rows["torch:resnet101"]["source"] == "torch"


def test_steps_json_lists_every_step_with_formats_and_choices():
    r = invoke("steps", "--json", "--plugin", ASSETS / "fault_plugin.py")
    assert r.exit_code == 0
    steps = {s["name"]: s for s in json.loads(r.stdout)}
    for name in ("keras.tf2onnx", "keras.tflite", "tflite.tf2onnx", "onnx.onnx2torch",
                 "torch.onnx_export", "onnx.tvm", "torch.tvm", "tvm.pass", "tvm.build",
                 "onnx.optimize", "onnx.version", "keras", "tflite", "ort", "torch", "tvm"):
        assert name in steps, name
    assert steps["keras.tflite"]["from"] == "keras" and steps["keras.tflite"]["to"] == "tflite"
    assert steps["fault.perturb"]["params"]["strength"] == {"default": 0.0, "choices": [0.0, 0.5]}
    assert steps["fault.perturb"]["plugin"].endswith("fault_plugin.py")
    assert all("usable" in s for s in steps.values())


@pytest.mark.parametrize("content,fragment", [
    ("{not json", "is not valid JSON"),
    ('{"model": "tiny_keras", "steps": [{"step": "keras.tf2onnx"}, {"step": "keras.tflite"}],'
     ' "runtime": {"name": "tflite"}}', "step 2 (keras.tflite) takes keras"),
    ('{"model": "tiny_keras", "steps": [{"step": "acme.nope"}], "runtime": {"name": "ort"}}',
     "unknown step 'acme.nope'"),
    ('{"model": "alexnet", "steps": [], "runtime": {"name": "keras"}}', "unknown model 'alexnet'"),
])
def test_run_refuses_bad_pipelines_in_one_line(tmp_path, content, fragment):
    f = tmp_path / "p.json"
    f.write_text(content)
    assert_usage_error(invoke("run", f, "--store", tmp_path / "store", "--images", ASSETS), fragment)


def test_run_missing_file(tmp_path):
    assert_usage_error(invoke("run", tmp_path / "nope.json", "--store", tmp_path), "not found")


def test_unknown_option_is_one_line():
    assert_usage_error(invoke("models", "--bogus"), "No such option")


@pytest.mark.parametrize("args,fragment", [
    (["--model", "alexnet"], "unknown model"),
    (["--model", "tiny_keras", "--budget", "soon"], "bad budget"),
    (["--model", "tiny_keras", "--focus", "acme.nope"], "unknown step"),
    (["--model", "tiny_keras", "--plugin", "/nonexistent/plugin.py"], "plugin file not found"),
    (["--model", "tiny_keras", "--device", "cuda"], "cuda"),
])
def test_hunt_bad_input(tmp_path, args, fragment):
    from fuzzconv.pipeline import device_available

    if "cuda" in args and device_available("cuda"):
        pytest.skip("this machine has a GPU")
    assert_usage_error(invoke("hunt", *args, "--store", tmp_path / "s", "--max-evals", "1"), fragment)


def test_plugin_that_raises_on_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('plugin is broken')\n")
    assert_usage_error(invoke("steps", "--plugin", bad), "failed on import")


def test_unwritable_store(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_usage_error(invoke("hunt", "--model", "tiny_keras", "--store", blocker / "sub",
                              "--max-evals", "1"), "store")


@needs("tf", "ort")
def test_run_tiny_keras_through_onnx_and_ort(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"model": "tiny_keras", "steps": [{"step": "keras.tf2onnx"}],
                             "runtime": {"name": "ort"}}))
    store = tmp_path / "store"
    r = invoke("run", f, "--store", store, "--limit", "16", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res) >= {"pipeline", "symptom", "flip_rate", "images", "max_abs_diff", "timings", "error"}
    assert res["symptom"] is None and res["flip_rate"] == 0.0 and res["images"] == 16
    assert res["max_abs_diff"] < 1e-3
    assert res["timings"]["convert"] > 0 and res["timings"]["infer"] > 0
    again = json.loads(invoke("run", f, "--store", store, "--limit", "16", "--json").stdout)
    assert again["cache"]["fresh"] == 0
    assert again["flip_rate"] == res["flip_rate"]


@needs("tf", "ort")
def test_run_exits_1_on_divergence(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"model": "tiny_keras", "steps": [
        {"step": "keras.tf2onnx"}, {"step": "fault.perturb", "params": {"strength": 0.5}}],
        "runtime": {"name": "ort"}}))
    r = invoke("run", f, "--store", tmp_path / "store", "--limit", "16", "--json",
               "--plugin", ASSETS / "fault_plugin.py")
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["symptom"] == "label_flip"


def test_hunt_with_a_fault_plugin_finds_it(fault_hunt: FaultHunt):
    # The session's one real hunt (`fuzzconv hunt ... --json`, see tests/conftest.py), which the
    # bundle and HTML report tests read too.
    out = fault_hunt.output
    assert contract_errors("hunt", out) == []
    culprits = [f["culprit"] for f in out["findings"] if f["symptom"] == "label_flip"]
    assert {"step": "fault.perturb", "params": {"strength": 0.5}} in culprits
