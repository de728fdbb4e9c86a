"""Localization inside a minimized finding: the first divergent node and the reduced ONNX subgraph.

The faults come from ``tests/assets/node_fault_plugin.py``: each scales the weights of exactly one
node, the depthwise convolution of ``tiny_keras`` (ONNX node ``tiny_keras_1/dw_conv_1/depthwise``),
so both answers are known. The pytest process imports onnx and onnxruntime only (safe); everything
else runs in workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..conftest import needs

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PLUGIN = str(ASSETS / "node_fault_plugin.py")
DW = "tiny_keras_1/dw_conv_1/depthwise"


@pytest.fixture(scope="module")
def plugin_executor(tmp_path_factory: pytest.TempPathFactory):
    """An executor whose registry and workers know the node-fault plugin."""
    from fuzzconv.executor import Executor
    from fuzzconv.registry import fresh_registry
    from fuzzconv.workers import WorkerPool

    store = tmp_path_factory.mktemp("localize-store")
    with WorkerPool(store / "logs", (PLUGIN,)) as pool:
        yield Executor(store, fresh_registry([PLUGIN]), pool)


@pytest.fixture(scope="module")
def corpus():
    from fuzzconv.corpora import default_corpus

    return default_corpus(n=24)


def finding(ex, corpus, steps, runtime):
    """What ``minimize`` has when it localizes: the pipeline, its culprit and minimal inputs."""
    from fuzzconv.evaluator import Evaluator
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.shrink.localize import find_culprit

    p = Pipeline.make(ex.registry, "tiny_keras", steps, runtime)
    ev = Evaluator(ex, "tiny_keras", corpus)
    out = ev.outcome(p)
    assert out.symptom is not None, out.comparison
    culprit = find_culprit(ex.registry, p, ev.outcome, "keras")
    flipped = (out.comparison or {}).get("flipped") or [0]
    return p, culprit.index, corpus.subset(flipped[:2])


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def assert_reduced_to_the_faulty_node(red: dict, original: int) -> None:
    assert red["path"] and Path(red["path"]).is_file(), red
    assert red["nodes"] <= 5 and DW in red["node_names"], red
    assert red["original_nodes"] == original
    assert red["verdict"]["kind"] == "diverges" and red["verdict"]["diverges"]
    # On the 20-node graph: the whole graph, then ~log2 probes per side.
    assert red["evaluations"] <= 12, red["stages"]


@needs("tf", "ort")
def test_onnx_fault_first_divergent_node_is_the_modified_node(plugin_executor, corpus):
    from fuzzconv.shrink.nodes import first_divergent_node

    p, index, few = finding(plugin_executor, corpus, [
        ("keras.tf2onnx", {}), ("node_fault.scale_depthwise", {"scale": 1.5})], "ort")
    assert index == 2
    res = first_divergent_node(plugin_executor, p, index, few)
    assert res["node"] == DW and res["op_type"] == "Conv", res
    assert res["method"] == "exposed-outputs"
    assert res["matched"] == res["nodes"] == 20  # the fault renames nothing
    path = res["path"]
    at = [r["node"] for r in path].index(DW)
    assert not any(r["diverges"] for r in path[:at]) and all(r["max_abs"] == 0 for r in path[:at])
    assert path[at]["diverges"] and len(path) > at + 1  # a little past it


@needs("tf", "ort")
def test_onnx_fault_reduces_to_a_subgraph_that_still_diverges(plugin_executor, corpus, tmp_path):
    from fuzzconv.oracle import Thresholds
    from fuzzconv.activations import activation_divergence
    from fuzzconv.shrink.reduce import reduce_subgraph

    p, index, few = finding(plugin_executor, corpus, [
        ("keras.tf2onnx", {}), ("node_fault.scale_depthwise", {"scale": 1.5})], "ort")
    red = reduce_subgraph(plugin_executor, p, index, few, tmp_path / "reduced")
    assert_reduced_to_the_faulty_node(red, 20)
    assert red["from_step"] == 1 and red["inputs"] == ["tiny_keras_1/stem_relu6_1/Relu6:0"]
    # Check it apart from the reducer: the plugin's own function on the reduced file, both run
    # in ONNX Runtime on the stored input.
    x = np.load(tmp_path / "reduced" / "reduced-input.npy")
    faulty = tmp_path / "faulty.onnx"
    plugin_executor.registry.get("node_fault.scale_depthwise").fn(
        None, Path(red["path"]), faulty, scale=1.5)
    err = activation_divergence(ort_run(Path(red["path"]), x), ort_run(faulty, x), Thresholds())
    assert err.diverges and err.max_abs == pytest.approx(red["verdict"]["max_abs"], rel=1e-5)


@needs("tf", "ort")
def test_a_crash_reduces_to_the_node_it_needs(plugin_executor, corpus, tmp_path):
    from fuzzconv.evaluator import Evaluator
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.shrink.nodes import first_divergent_node
    from fuzzconv.shrink.reduce import reduce_subgraph

    p = Pipeline.make(plugin_executor.registry, "tiny_keras", [
        ("keras.tf2onnx", {}), ("node_fault.reject_depthwise", {"strict": True})], "ort")
    out = Evaluator(plugin_executor, "tiny_keras", corpus).outcome(p)
    assert out.key == ("crash", "NotImplementedError", "node_fault.reject_depthwise")
    one = corpus.subset([0])
    red = reduce_subgraph(plugin_executor, p, 2, one, tmp_path)
    assert red["node_names"] == [DW] and red["verdict"]["kind"] == "crash", red
    assert "NotImplementedError" in red["verdict"]["note"]
    # Nothing to compare node by node when the culprit makes no artifact: a reason, no raise.
    res = first_divergent_node(plugin_executor, p, 2, one)
    assert res["node"] is None and "NotImplementedError" in res["reason"]


@needs("tf", "ort")
def test_keras_tflite_quantization_is_localized_to_the_one_quantized_layer(plugin_executor,
                                                                           corpus):
    from fuzzconv.shrink.nodes import first_divergent_node

    p, index, few = finding(plugin_executor, corpus, [
        ("keras.tflite", {"optimizations": ["DEFAULT"]})], "tflite")
    assert index == 1
    res = first_divergent_node(plugin_executor, p, index, few)
    # Observed, and what TFLite documents: dynamic-range quantization only quantizes weights of
    # at least 1024 elements. In tiny_keras only valid_conv's kernel (3x3x16x24) is that large.
    assert res["node"] == "valid_conv" and res["method"] == "keras-layers", res
    assert res["converted_op_type"] == "CONV_2D"
    assert res["matched"] >= 8
    at = [r["node"] for r in res["path"]].index("valid_conv")
    assert not any(r["diverges"] for r in res["path"][:at])


@needs("tf", "ort")
def test_keras_tf2onnx_layers_map_and_agree(plugin_executor, corpus):
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.shrink.nodes import first_divergent_node

    p = Pipeline.make(plugin_executor.registry, "tiny_keras", [("keras.tf2onnx", {})], "ort")
    res = first_divergent_node(plugin_executor, p, 1, corpus.subset([0]))
    # A correct conversion: most layers are found by name and none diverges.
    assert res["node"] is None and res["method"] == "keras-layers", res
    assert res["matched"] >= 12 and res["nodes"] == 17
    assert all(r["max_rel"] < 1e-5 for r in res["path"])


@needs("tf")
def test_a_culprit_without_onnx_upstream_gives_a_reason(plugin_executor, corpus, tmp_path):
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.shrink.nodes import first_divergent_node
    from fuzzconv.shrink.reduce import reduce_subgraph

    p = Pipeline.make(plugin_executor.registry, "tiny_keras", [("keras.tflite", {})],
                      ("tflite", {"xnnpack": False}))
    res = first_divergent_node(plugin_executor, p, 2, corpus.subset([0]))
    assert res["node"] is None and "tflite" in res["reason"]
    red = reduce_subgraph(plugin_executor, p, 2, corpus.subset([0]), tmp_path)
    assert red["path"] is None and "ONNX" in red["reason"]


@needs("tf", "ort", "tvm")
def test_tvm_fault_is_localized_by_prefix_bisection_and_reduced(plugin_executor, corpus,
                                                                tmp_path):
    from fuzzconv.shrink.nodes import first_divergent_node
    from fuzzconv.shrink.reduce import reduce_subgraph

    p, index, few = finding(plugin_executor, corpus, [
        ("keras.tf2onnx", {}), ("onnx.tvm", {}),
        ("node_fault.tvm_scale_depthwise", {"scale": 1.5}), ("tvm.build", {})], "tvm")
    assert index == 3
    res = first_divergent_node(plugin_executor, p, index, few)
    assert res["node"] == DW and res["method"] == "prefix-bisect", res
    assert res["reference"] == "onnx after step 1"
    assert res["probes"] <= 8  # bisection over 20 nodes, not a scan
    red = reduce_subgraph(plugin_executor, p, index, few, tmp_path)
    assert_reduced_to_the_faulty_node(red, 20)
