"""Generated families on fake steps: the model shrinker's properties, and a gen:keras hunt that
finds an injected layer fault and shrinks the model to that layer (no frameworks)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzconv.campaign import HuntConfig
from fuzzconv.engine import Hunt
from fuzzconv.evaluator import Outcome
from fuzzconv.gen.catalog import lookup
from fuzzconv.gen.spec import GenSpec
from fuzzconv.pipeline import Pipeline
from fuzzconv.shrink.model import MODEL_PASSES, ModelShrinker
from fuzzconv.store import Store
from fuzzconv.strategies import models

from .fakes import FakeCorpus, FakeExecutor, fake_registry, has

REG = fake_registry()


def outcome(p: Pipeline, symptom: str | None, error: str = "SIGSEGV") -> Outcome:
    if symptom == "crash":
        failure = {"symptom": "crash", "error_class": error, "step": "fake.rewrite",
                   "stage": "step 1 fake.rewrite", "message": "", "stderr_tail": ""}
        return Outcome(p, "crash", None, failure, {}, 1, 0)
    cmp = {"flip_rate": 0.5 if symptom else 0.0, "flipped": [0] if symptom else []}
    return Outcome(p, symptom, cmp, None, {}, 1, 0)


def trigger_layer(spec: GenSpec, pick: int) -> list[dict]:
    return [spec.trigger()[pick % len(spec.layers)]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["keras", "torch"]).flatmap(models), st.integers(0, 5), st.booleans())
def test_the_model_shrinker_never_returns_a_model_that_fails_differently_or_is_less_simple(
        spec, pick, noisy):
    trigger = trigger_layer(spec, pick)
    judged = []

    def judge(p: Pipeline) -> Outcome:
        s = lookup(p.model)
        judged.append(s)
        if noisy and len(s.layers) % 2 == 0 and s.size == 16:
            return outcome(p, "crash")  # fails, but differently: never a shrink
        return outcome(p, "label_flip" if s.holds(trigger) else None)

    p = Pipeline.make(REG, spec.name, [], "keras", source_format="keras")
    target = outcome(p, "label_flip")
    res = ModelShrinker(judge, p, target).shrink(spec, target)
    assert res.minimal.holds(trigger) and res.outcome.key == target.key
    assert res.minimal.simplicity() <= spec.simplicity()
    assert res.minimal == spec or res.minimal.simplicity() < spec.simplicity()
    assert res.one_minimal
    if not noisy:  # nothing else fails: all but what the bug needs goes
        assert len(res.minimal.layers) <= len(trigger) + 1
    assert set(res.profile) == set(MODEL_PASSES) and res.pipeline.model == res.minimal.name


def resize_fault(p: Pipeline) -> bool:
    """An injected fault: the relax frontend miscompiles any interpolating resize."""
    spec = lookup(p.model) if p.model.startswith("gen:") else None
    return bool(spec and has("fake.to_relax")(p) and any(
        layer.kind == "resize" and layer.attrs["mode"] != "nearest" for layer in spec.layers))


def gen_hunt(tmp_path, seed: int = 0, evals: int = 400) -> tuple[Hunt, Store]:
    store = Store(tmp_path)
    cfg = HuntConfig(model="gen:keras", seed=seed, max_evals=evals, localize=False,
                     budget_s=600.0)
    return Hunt(FakeExecutor(flip_faults=[resize_fault]), store, cfg, FakeCorpus()), store


def test_a_generated_hunt_shrinks_an_injected_layer_fault_to_that_layer(tmp_path):
    h, store = gen_hunt(tmp_path)
    result = h.run()
    flips = [f for f in result.findings if f["symptom"] == "label_flip"]
    assert flips, "the injected fault was not found"
    for f in flips:
        assert f["culprit"]["step"] == "fake.to_relax"
        assert f["model"].startswith("gen:keras:") and f["model_spec"]["framework"] == "keras"
        minimal = lookup(f["minimal_pipeline"]["model"])
        assert [layer.kind for layer in minimal.layers] == ["resize"]
        assert minimal.layers[0].attrs["mode"] in ("bilinear", "bicubic")
        assert f["shrink"]["layers_after"] == 1 and f["shrink"]["model_one_minimal"]
        assert f["signature"].endswith(f"@{minimal.label()}")
        assert f["minimal_model_spec"] == minimal.to_dict()
        # the specs the finding names are in the store, to rebuild it anywhere
        assert store.db.execute("SELECT COUNT(*) FROM generated_models WHERE name IN (?, ?)",
                                (f["model"], minimal.name)).fetchone()[0] == 2
    # one bug (bilinear or bicubic): models that hold the trigger count as hits, not new findings
    assert len({f["bucket"] for f in flips}) <= 2
    assert len({layer["kind"] for f in flips for layer in f["trigger"]}) == 1
    models_drawn = {e["pipeline"]["model"] for e in store.evaluations(result.campaign)}
    assert len(models_drawn) > 5


def test_the_same_seed_draws_the_same_models_and_finds_the_same(tmp_path):
    runs = []
    for i in range(2):
        h, store = gen_hunt(tmp_path / str(i), seed=7, evals=60)
        result = h.run()
        runs.append(([e["pipeline_hash"] for e in store.evaluations(result.campaign)],
                     sorted(f["signature"] for f in result.findings)))
    assert runs[0] == runs[1]


def test_a_converter_refusing_an_operator_is_a_limitation_and_a_crash_is_a_finding():
    from fuzzconv.gen.carriers import refusal

    def crash(error_class: str, message: str) -> dict:
        return {"symptom": "crash", "error_class": error_class, "step": "onnx.onnx2torch",
                "message": message}

    assert "onnx.onnx2torch refused" in refusal(crash("NotImplementedError", "Resize mode cubic"))
    assert refusal(crash("RuntimeError", "Converter is not implemented (OperationDescription("
                                         "domain='', operation_type='GlobalMaxPool'))"))
    assert refusal(crash("ConverterError", "op is neither a custom op nor a flex op"))
    # a converter that goes wrong is not refusing
    assert refusal(crash("SIGSEGV", "")) is None
    assert refusal(crash("ValueError", "shapes (1,3) and (4,) not aligned")) is None
    assert refusal({"symptom": "timeout", "error_class": "Timeout", "message": "not supported"}) \
        is None
    assert refusal(None) is None
    # one line for one refusal, whichever model met it
    tflite = ('Could not translate MLIR to FlatBuffer: loc(fused["Conv2DBackpropInput:", '
              '"{}/l4_conv_transpose_1/conv_transpose@__inference_function_{}"]): neither a custom '
              'op nor a flex op')
    assert refusal(crash("ConverterError", tflite.format("gen_keras_86c74dae79_1", 248759))) == \
        refusal(crash("ConverterError", tflite.format("gen_keras_390b0e37ae_1", 321726)))
