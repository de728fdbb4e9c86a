"""Pipelines: canonical JSON round-trips, chain checks, and the contract schema."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzconv.errors import ChainError, UsageError
from fuzzconv.pipeline import Pipeline
from fuzzconv.registry import default_registry
from fuzzconv.strategies import pass_sequences, pipelines, step_params

from ..contracts import contract_errors

REG = default_registry()


@settings(max_examples=60, deadline=None)
@given(pipelines("tiny_keras", REG) | pipelines("tiny_torch", REG))
def test_json_round_trip(p):
    again = Pipeline.from_dict(json.loads(json.dumps(p.to_dict())), REG)
    assert again == p
    assert again.hash == p.hash
    assert again.canonical_json() == p.canonical_json()


@settings(max_examples=40, deadline=None)
@given(pipelines("tiny_keras", REG))
def test_drawn_pipelines_fit_their_formats(p):
    REG.check_chain("keras", [(s.name, s.params) for s in p.steps], p.runtime.name)


@given(st.data())
def test_defaults_fill_in_and_hash_equal(data):
    op = data.draw(st.sampled_from([o for o in REG.steps() if o.defaults]))
    params = data.draw(step_params(op.name, REG))
    assert op.canonical_params(params) == params
    assert op.canonical_params({}) == {k: op.canonical_params({})[k] for k in op.defaults}


@given(pass_sequences(REG))
def test_pass_sequences_are_relax_steps(seq):
    assert all(REG.get(s.name).src == "relax" == REG.get(s.name).dst for s in seq)


def test_refuses_a_chain_whose_formats_do_not_fit():
    with pytest.raises(ChainError, match=r"step 2 \(keras.tflite\) takes keras, but the chain has onnx"):
        Pipeline.from_dict({"model": "tiny_keras", "steps": [{"step": "keras.tf2onnx"},
                                                             {"step": "keras.tflite"}],
                            "runtime": {"name": "tflite"}}, REG)
    with pytest.raises(ChainError, match="runtime tflite runs tflite, but the chain ends in onnx"):
        Pipeline.from_dict({"model": "tiny_keras", "steps": [{"step": "keras.tf2onnx"}],
                            "runtime": {"name": "tflite"}}, REG)


@pytest.mark.parametrize("doc,message", [
    ([], "must be a JSON object"),
    ({"steps": [], "runtime": {"name": "keras"}}, "missing 'model'"),
    ({"model": "nope", "steps": [], "runtime": {"name": "keras"}}, "unknown model"),
    ({"model": "tiny_keras", "steps": "x", "runtime": {"name": "keras"}}, "'steps' must be a list"),
    ({"model": "tiny_keras", "steps": [{"step": "no.such"}], "runtime": {"name": "ort"}}, "unknown step"),
    ({"model": "tiny_keras", "steps": [{"step": "keras.tf2onnx", "params": {"bogus": 1}}],
      "runtime": {"name": "ort"}}, "unknown parameter 'bogus'"),
    ({"model": "tiny_keras", "steps": [], "runtime": {"name": "keras"}, "device": "tpu"}, "unknown device"),
    ({"model": "tiny_keras", "steps": [], "runtime": 3}, "'runtime' must be an object"),
])
def test_malformed_pipelines_are_usage_errors(doc, message):
    with pytest.raises(UsageError, match=message):
        Pipeline.from_dict(doc, REG)


def test_cuda_is_refused_without_a_gpu():
    from fuzzconv.pipeline import device_available

    if device_available("cuda"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(UsageError, match="device cuda is not present"):
        Pipeline.from_dict({"model": "tiny_keras", "steps": [], "runtime": {"name": "keras"},
                            "device": "cuda"}, REG)


@settings(max_examples=50, deadline=None)
@given(pipelines("tiny_keras", REG) | pipelines("tiny_torch", REG))
def test_pipeline_json_matches_the_contract_schema(p):
    assert contract_errors("pipeline", p.to_dict()) == []


def test_tvm_pass_arguments_its_pass_ignores_do_not_make_a_new_configuration():
    from fuzzconv.registry import default_registry
    from fuzzconv.steps.tvm import _PASSES

    reg = default_registry()
    taker = next(n for n in sorted(_PASSES) if {} in _PASSES[n] and any(a for a in _PASSES[n]))
    args = next(a for a in _PASSES[taker] if a)
    other = next(n for n in sorted(_PASSES) if not any(k in a for a in _PASSES[n] for k in args))

    def pipe(name, a):
        return Pipeline.make(reg, "tiny_keras", [("keras.tf2onnx", {}), ("onnx.tvm", {}),
                                                 ("tvm.pass", {"name": name, "args": a}),
                                                 ("tvm.build", {})], "tvm")

    assert pipe(other, args).hash == pipe(other, {}).hash  # ignored: the plain pass
    assert pipe(taker, args).hash != pipe(taker, {}).hash  # taken: a configuration of its own
    assert pipe(other, {"no_such_argument": 1}).steps[2].params["args"] == {"no_such_argument": 1}
    # a pass that needs arguments never runs without them
    for name in (n for n in _PASSES if {} not in _PASSES[n]):
        assert pipe(name, {}).steps[2].params["args"] == _PASSES[name][0]
