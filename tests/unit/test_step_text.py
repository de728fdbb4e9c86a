"""Steps, runtimes and pipelines are written one way in every listing (hunt, reports, show, the
HTML report): parameters as JSON values, so what a user reads is what a pipeline file holds."""

from __future__ import annotations

from fuzzconv.tables import op_text, pipeline_text


def test_a_step_with_parameters_reads_as_json_values():
    c = {"step": "keras.tflite", "params": {"optimizations": ["DEFAULT"], "supported_types": []}}
    assert op_text(c) == 'keras.tflite(optimizations=["DEFAULT"],supported_types=[])'
    assert op_text({"step": "onnx.tvm", "params": {}}) == "onnx.tvm"
    assert op_text(None) == "—"


def test_a_pipeline_reads_as_steps_then_its_runtime():
    p = {"model": "m", "steps": [{"step": "keras.tf2onnx", "params": {}},
                                 {"step": "onnx.version", "params": {"opset": 11}}],
         "runtime": {"name": "ort", "params": {"graph_optimization_level": "all"}}}
    assert pipeline_text(p) == ('keras.tf2onnx → onnx.version(opset=11) ⇒ '
                                'ort(graph_optimization_level="all")')
    assert pipeline_text({**p, "steps": []}).startswith("(source) ⇒ ort")
    assert pipeline_text(None) == "—"
