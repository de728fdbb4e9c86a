"""Probe staging, signature-true culprits and a slowdown that means something, on fake steps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fuzzconv.campaign import HuntConfig
from fuzzconv.engine import Hunt
from fuzzconv.evaluator import Evaluator, Outcome, unoptimized
from fuzzconv.oracle import Thresholds, margins
from fuzzconv.pipeline import Pipeline
from fuzzconv.shrink.localize import Uncertain, find_culprit
from fuzzconv.store import Store

from .fakes import FakeCorpus, FakeExecutor, fake_registry, has


def _pipeline(reg, rewrite: int = 0, rt: str = "fake_ort", **rt_params) -> Pipeline:
    return Pipeline.make(reg, "tiny_keras", [("fake.to_onnx", {}), ("fake.rewrite", {"level": rewrite})],
                         (rt, rt_params))


def test_the_probe_is_the_most_fragile_images_above_the_tie_margin():
    ex = FakeExecutor()
    corpus = FakeCorpus(40)
    ev = Evaluator(ex, "tiny_keras", corpus, Thresholds(tie_margin=0.3), probe_size=6)
    m = margins(ex.reference("tiny_keras", corpus).logits)
    probe = ev.probe_indices
    assert len(probe) == 6 and probe == sorted(probe)
    assert all(m[i] >= 0.3 for i in probe)
    rest = [m[i] for i in range(40) if i not in probe and m[i] >= 0.3]
    assert max(m[i] for i in probe) <= min(rest)
    # fixed: the same set every time, and for a new evaluator of the same model and corpus
    assert Evaluator(ex, "tiny_keras", corpus, Thresholds(tie_margin=0.3), probe_size=6).probe_indices == probe


def test_an_agreeing_probe_is_reported_as_a_probe_verdict_never_as_the_corpus():
    ex = FakeExecutor()
    ev = Evaluator(ex, "tiny_keras", FakeCorpus(30))
    out = ev.outcome(_pipeline(ex.registry))
    assert out.symptom is None and out.stage == "probe" and out.images == 8
    assert out.probe == {"images": 8, "symptom": None, "max_abs_diff": 0.0, "escalated": False,
                         "why": None}
    assert out.verdict().startswith("agrees on 8 fragile images")
    assert "all" not in out.verdict()
    # only the probe images were run
    assert ex.calls == [out.pipeline.hash]


def test_a_flip_on_the_probe_goes_to_the_whole_corpus_for_its_flip_rate():
    ex = FakeExecutor(flip_faults=[has("fake.rewrite", level=1)])
    ev = Evaluator(ex, "tiny_keras", FakeCorpus(30))
    out = ev.outcome(_pipeline(ex.registry, rewrite=1))
    assert out.symptom == "label_flip" and out.stage == "full" and out.images == 30
    assert out.probe["escalated"] and "label_flip on the probe" in out.probe["why"]
    assert out.comparison["images"] == 30
    assert out.comparison["flip_rate"] == pytest.approx(15 / 30)  # every even image of 30


def test_a_logit_change_that_could_flip_a_larger_margin_escalates():
    reg = fake_registry()
    ex = FakeExecutor()
    corpus = FakeCorpus(30)
    # numeric drift is not what this is about: only a change that could flip labels
    ev = Evaluator(ex, "tiny_keras", corpus, Thresholds(atol=100.0))
    margin = ev.next_margin()
    calls = []

    def nudged(p, c, cold=False, repeats=0):  # move every logit by a third of that margin
        calls.append(len(c))
        e = FakeExecutor.evaluate(ex, p, c, cold, repeats)
        return replace(e, logits=e.logits + np.float32(margin / 3))

    ex.evaluate = nudged  # type: ignore[method-assign]
    out = ev.outcome(_pipeline(reg))
    assert out.probe["escalated"] and "could flip" in out.probe["why"]
    assert calls == [8, 30] and out.stage == "full"


def test_stored_evaluations_say_how_many_images_they_rest_on(tmp_path):
    ex = FakeExecutor(flip_faults=[has("fake.pass", name="b")])
    store = Store(tmp_path)
    h = Hunt(ex, store, HuntConfig(model="tiny_keras", max_evals=30, localize=False), FakeCorpus(30))
    result = h.run()
    evals = list(store.evaluations(result.campaign))
    probe = [e for e in evals if e["outcome"]["probe"] and not e["outcome"]["probe"]["escalated"]]
    full = [e for e in evals if e["outcome"]["images"] == 30]
    assert probe and all(e["outcome"]["images"] == 8 and e["symptom"] is None for e in probe)
    assert result.probe_only == len(probe) and result.escalated >= 1
    assert all(e["symptom"] is not None or e["outcome"]["probe"]["escalated"] for e in full)
    (f,) = result.findings
    assert f["images"] == 30 and f["flip_rate"] == pytest.approx(0.5)


def _outcome(p, symptom=None, failure=None):
    return Outcome(p, symptom, None if failure else {"flip_rate": 0.0, "flipped": []}, failure,
                   {}, 1, 0)


@pytest.mark.parametrize("other", ["crash", "timeout", "slowdown"])
def test_a_culprit_probe_with_another_symptom_does_not_take_the_blame(other):
    reg = fake_registry()
    p = Pipeline.make(reg, "tiny_keras", [("fake.to_onnx", {}), ("fake.rewrite", {"level": 1}),
                                          ("fake.to_relax", {}), ("fake.pass", {"name": "b"})],
                      "fake_tvm")
    target = _outcome(p, "label_flip")
    seen = []

    def judge(q):
        seen.append(q)
        n = len(q.steps)
        if any(s.name == "fake.pass" and s.params["name"] == "b" for s in q.steps):
            return _outcome(q, "label_flip")
        if n == 2:  # the ONNX prefix completed plainly: slow, or it fails
            if other == "slowdown":
                return _outcome(q, "slowdown")
            return _outcome(q, other, {"error_class": "SIGSEGV" if other == "crash" else "Timeout",
                                        "step": "fake_ort", "stage": "runtime fake_ort"})
        return _outcome(q)

    if other == "slowdown":
        # a slowdown says nothing of the values: that prefix agrees, the pass is the culprit
        c = find_culprit(reg, p, judge, "keras", target=target, retry=judge)
        assert c.step.name == "fake.pass"
    else:
        with pytest.raises(Uncertain, match="Timeout" if other == "timeout" else "SIGSEGV"):
            find_culprit(reg, p, judge, "keras", target=target, retry=judge)
        # it was judged twice before giving up
        assert sum(len(q.steps) == 2 for q in seen) == 2


def test_an_uncertain_culprit_is_said_and_the_proven_one_stands():
    from fuzzconv.shrink import minimize

    # the plain completion of the Relax prefix crashes, so bisection cannot judge it
    ex = FakeExecutor(flip_faults=[has("fake.pass", name="b")],
                      crash_faults=[lambda p: [s.name for s in p.steps] == ["fake.to_onnx",
                                                                            "fake.to_relax"]])
    reg = ex.registry
    p = Pipeline.make(reg, "tiny_keras", [("fake.to_onnx", {}), ("fake.to_relax", {}),
                                          ("fake.pass", {"name": "b"})], "fake_tvm")
    ev = Evaluator(ex, "tiny_keras", FakeCorpus())
    proven = {"step": "fake.pass", "params": {"name": "b"}}
    extra = minimize(ev, p, localize=False, known_culprit=proven)
    assert "SIGSEGV" in extra["culprit_uncertain"] and "twice" in extra["culprit_uncertain"]
    assert extra["culprit"] == proven
    alone = minimize(ev, p, localize=False)
    assert alone["culprit"] is None and alone["culprit_uncertain"]
    assert alone["signature"].startswith("label_flip:tiny_keras:")


def test_a_slowdown_is_an_optimisation_slower_than_its_unoptimised_form(tmp_path):
    reg = fake_registry()
    reg.ops["fake_ort"] = replace(reg.ops["fake_ort"], unoptimized={"level": "disable"})
    slow = FakeExecutor(registry=reg, slow_faults=[(has("fake_ort", level="all"), 10.0)])
    p = _pipeline(reg, rewrite=0)  # fake_ort at its default level "all"
    base = unoptimized(reg, p)
    assert base is not None and base.runtime.params == {"level": "disable"}
    assert [s.name for s in base.steps] == ["fake.to_onnx"]  # the optional rewrite dropped
    ev = Evaluator(slow, "tiny_keras", FakeCorpus(30))
    assert ev.outcome(p).symptom is None  # the base's time is not known: nothing is run for it
    out = ev.outcome(p, eager_slowdown=True)
    assert out.symptom == "slowdown"
    s = out.slowdown
    assert s["vs"] == "base" and s["factor"] == pytest.approx(10.0)
    assert s["seconds"] == pytest.approx(10 * s["base_seconds"])
    # the same slowness against the source framework is what --slowdown-vs reference measures
    ref = Evaluator(slow, "tiny_keras", FakeCorpus(30), slowdown_vs="reference")
    assert ref.outcome(_pipeline(reg, rewrite=1)).slowdown["vs"] == "reference"


def test_a_hunt_finds_the_slowdown_once_the_base_is_judged_and_blames_the_option(tmp_path):
    reg = fake_registry()
    reg.ops["fake_ort"] = replace(reg.ops["fake_ort"], unoptimized={"level": "disable"})
    ex = FakeExecutor(registry=reg, slow_faults=[(has("fake_ort", level="all"), 10.0)])
    h = Hunt(ex, Store(tmp_path), HuntConfig(model="tiny_keras", max_evals=30, localize=False),
             FakeCorpus())
    result = h.run()
    slow = [f for f in result.findings if f["symptom"] == "slowdown"]
    assert slow, [f["signature"] for f in result.findings]
    f = slow[0]
    assert f["culprit"] == {"step": "fake_ort", "params": {"level": "all"}}
    assert f["slowdown"]["factor"] > 3 and f["slowdown"]["base_seconds"] > 0


def test_findings_are_stored_minimized_and_finished_after_the_search(tmp_path):
    ex = FakeExecutor(flip_faults=[has("fake.pass", name="b")])
    store = Store(tmp_path)
    events: list[tuple[str, dict]] = []
    h = Hunt(ex, store, HuntConfig(model="tiny_keras", max_evals=30, localize=False),
             FakeCorpus(), listener=lambda e, i: events.append((e, i)))
    result = h.run()
    (f,) = result.findings
    assert f["pending"] == [] and f["flaky_spread"] is not None  # finished by the end
    found = next(i for i, (e, d) in enumerate(events) if e == "evaluated" and d["new_finding"])
    finishing = next(i for i, (e, d) in enumerate(events)
                     if e == "stage" and d["what"].startswith(f"finishing {f['id']}"))
    # the search went on between the finding and its finishing
    assert any(e == "evaluated" for e, _ in events[found + 1:finishing])
    assert store.finding(f["id"])["pending"] == []


def test_a_finding_the_budget_left_unfinished_says_so(tmp_path):
    import fuzzconv.engine as engine

    ex = FakeExecutor(flip_faults=[has("fake.pass", name="b")], seconds_per_eval=0.05)
    h = Hunt(ex, Store(tmp_path), HuntConfig(model="tiny_keras", budget_s=3.0, localize=False),
             FakeCorpus())
    h._finish = lambda: (_ for _ in ()).throw(engine.BudgetExhausted())  # the deadline hit it
    result = h.run()
    (f,) = [f for f in result.findings if f["symptom"] == "label_flip"]
    assert f["pending"] == ["cold re-runs"] and f["flaky_spread"] is None
    assert f["minimal_pipeline"] and f["culprit"]  # minimized all the same
