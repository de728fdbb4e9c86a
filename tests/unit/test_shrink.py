"""Shrinking properties on fake pipelines with injected predicates (no frameworks)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fuzzconv.evaluator import Outcome
from fuzzconv.pipeline import Pipeline
from fuzzconv.shrink import Shrinker, simplicity
from fuzzconv.shrink.localize import find_culprit
from fuzzconv.strategies import pipelines

from .fakes import fake_registry, has

REG = fake_registry()
PIPELINES = pipelines("tiny_keras", REG, max_chain=2, max_optional=4)


def judge_with(faults):
    """faults: list of (symptom, predicate); the first that holds decides (crashes first)."""

    def judge(p: Pipeline) -> Outcome:
        for symptom, pred in faults:
            if pred(p):
                failure = ({"symptom": symptom, "error_class": "SIGSEGV", "step": "fake.rewrite",
                            "stage": "x", "message": "", "stderr_tail": ""}
                           if symptom == "crash" else None)
                cmp = None if failure else {"flip_rate": 0.5, "flipped": [0]}
                return Outcome(p, symptom, cmp, failure, {}, 1, 0)
        return Outcome(p, None, {"flip_rate": 0.0, "flipped": []}, None, {}, 1, 0)

    return judge


def both(a, b):
    return lambda p: a(p) and b(p)


FAULTS = st.sampled_from([
    [("label_flip", has("fake.pass", name="b"))],                                   # single culprit
    [("label_flip", has("fake_ort", level="disable"))],                             # runtime option
    [("label_flip", both(has("fake.rewrite", level=2), has("fake.to_onnx", opset=17)))],  # a pair
    [("crash", has("fake.rewrite", level=1)), ("label_flip", has("fake.pass", name="c"))],
    [("numeric", has("fake.to_onnx", opset=17))],                                   # param-dependent
])


def check_result(judge, p, res):
    key = judge(p).key
    assert res.outcome.key == key  # same signature
    assert judge(res.minimal).key == key  # really fails
    assert simplicity(REG, res.minimal) <= simplicity(REG, p)  # never less simple
    assert res.one_minimal
    shr = Shrinker(REG, judge, "keras")
    for _desc, c in shr.single_changes(res.minimal):  # 1-minimal, checked independently
        assert judge(c).key != key


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(PIPELINES, FAULTS)
def test_shrunk_pipelines_keep_the_signature_and_are_one_minimal(p, faults):
    judge = judge_with(faults)
    assume(judge(p).symptom is not None)  # only failing pipelines are shrunk
    res = Shrinker(REG, judge, "keras").shrink(p)
    check_result(judge, p, res)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(PIPELINES)
def test_distinct_signatures_never_merge(p):
    # Both bugs present: the shrinker must stay on the one the pipeline showed.
    judge = judge_with([("crash", has("fake.rewrite", level=1)),
                        ("label_flip", has("fake_ort", level="disable"))])
    first = judge(p)
    assume(first.symptom is not None)
    res = Shrinker(REG, judge, "keras").shrink(p)
    assert res.outcome.symptom == first.symptom


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(PIPELINES, st.integers(0, 2**32 - 1))
def test_flaky_predicate_still_ends_on_a_failing_judgement(p, seed):
    rng = random.Random(seed)
    base = has("fake.pass", name="b")

    def flaky(q: Pipeline) -> Outcome:
        if base(q) and rng.random() < 0.7:
            return Outcome(q, "label_flip", {"flip_rate": 0.5}, None, {}, 1, 0)
        return Outcome(q, None, {"flip_rate": 0.0}, None, {}, 1, 0)

    shr = Shrinker(REG, flaky, "keras")
    first = shr.outcome(p)
    assume(first.symptom is not None)
    res = shr.shrink(p)
    assert res.outcome.symptom == "label_flip"
    assert shr.outcome(res.minimal).symptom == "label_flip"  # as judged (memoised)
    assert simplicity(REG, res.minimal) <= simplicity(REG, p)


def test_shrinks_a_long_pipeline_to_the_single_culprit():
    steps = [("fake.to_onnx", {"opset": 17}), ("fake.rewrite", {"level": 1}),
             ("fake.rewrite", {"level": 2}), ("fake.to_relax", {}), ("fake.pass", {"name": "c"}),
             ("fake.pass", {"name": "b"}), ("fake.pass", {"name": "a"})]
    p = Pipeline.make(REG, "tiny_keras", steps, "fake_tvm", source_format="keras")
    judge = judge_with([("label_flip", has("fake.pass", name="b"))])
    res = Shrinker(REG, judge, "keras").shrink(p)
    assert [s.label() for s in res.minimal.steps] == ["fake.to_onnx(opset=13)", "fake.to_relax",
                                                      "fake.pass(name=b)"]
    prof = res.profile
    assert prof["drop_step"]["successes"] >= 1
    assert sum(v["successes"] for v in prof.values()) >= 3  # 3 optional steps and opset=17 went
    assert all(v["calls"] >= v["successes"] for v in prof.values())


def test_culprit_bisection_is_logarithmic():
    # a k-step chain whose 5th step is the culprit; every later prefix diverges too
    steps = [("fake.to_onnx", {})] + [("fake.rewrite", {"level": 0})] * 3 + \
            [("fake.rewrite", {"level": 2})] + [("fake.rewrite", {"level": 0})] * 6
    p = Pipeline.make(REG, "tiny_keras", steps, "fake_ort", source_format="keras")

    def judge(q: Pipeline) -> Outcome:
        bad = any(s.name == "fake.rewrite" and s.params["level"] == 2 for s in q.steps)
        return Outcome(q, "label_flip" if bad else None, {}, None, {}, 1, 0)

    c = find_culprit(REG, p, judge, "keras")
    assert c.index == 5 and c.step.params == {"level": 2}
    k = len(steps)
    assert c.probes <= (k).bit_length() + 1  # ⌈log2(k+1)⌉ probes


def test_runtime_is_the_culprit_when_every_step_agrees():
    p = Pipeline.make(REG, "tiny_keras", [("fake.to_onnx", {})], ("fake_ort", {"level": "disable"}),
                      source_format="keras")
    judge = judge_with([("label_flip", has("fake_ort", level="disable"))])
    c = find_culprit(REG, p, judge, "keras")
    assert c.step.name == "fake_ort" and c.index == 2
