"""The hunt engine on fake steps: finds injected faults, holds its budget, resumes, is seeded."""

from __future__ import annotations


import pytest

from fuzzconv.campaign import HuntConfig, parse_budget
from fuzzconv.engine import Hunt
from fuzzconv.errors import UsageError
from fuzzconv.store import Store

from .fakes import FakeCorpus, FakeExecutor, has


def hunt(tmp_path, ex: FakeExecutor, **cfg) -> tuple[Hunt, Store]:
    store = Store(tmp_path)
    # localization inside the model needs real frameworks; the fakes stop at the culprit step
    config = HuntConfig(model="tiny_keras", **{"budget_s": 60.0, "localize": False, **cfg})
    return Hunt(ex, store, config, FakeCorpus()), store


def test_injected_flip_is_found_with_its_culprit(tmp_path):
    ex = FakeExecutor(flip_faults=[has("fake.pass", name="b")])
    h, store = hunt(tmp_path, ex, max_evals=40)
    result = h.run()
    flips = [f for f in result.findings if f["symptom"] == "label_flip"]
    assert len(flips) == 1
    f = flips[0]
    assert f["culprit"] == {"step": "fake.pass", "params": {"name": "b"}}
    assert f["flip_rate"] == pytest.approx(0.5)
    assert f["fix_hint"] in ('fake.pass with name="a" agrees', "dropping fake.pass agrees")
    assert f["minimal_pipeline"]["steps"][-1] == {"step": "fake.pass", "params": {"name": "b"}}
    assert f["shrink"]["one_minimal"] is True
    assert f["phase"] == "coverage"
    # stored, in the contract shape
    assert store.finding(f["id"])["signature"] == f["signature"]


def test_coverage_tries_every_parameter_value_before_mutating(tmp_path):
    ex = FakeExecutor()
    h, _ = hunt(tmp_path, ex, max_evals=200)
    plan = h.coverage_plan()
    tried = {(s.name, k, str(v)) for c in plan for s in (*c.pipeline.steps, c.pipeline.runtime)
             for k, v in s.params.items()}
    for step, param, values in [("fake.to_onnx", "opset", [13, 17]),
                                ("fake.rewrite", "level", [0, 1, 2]),
                                ("fake.pass", "name", ["a", "b", "c"]),
                                ("fake_ort", "level", ["all", "disable"]),
                                ("keras", "jit", [True])]:
        for v in values:
            assert (step, param, str(v)) in tried, (step, param, v)
    assert all(c.phase == "coverage" for c in plan)


def test_crash_signature_names_the_failing_step(tmp_path):
    ex = FakeExecutor(crash_faults=[has("fake.rewrite", level=2)])
    h, _ = hunt(tmp_path, ex, max_evals=30)
    result = h.run()
    crashes = [f for f in result.findings if f["symptom"] == "crash"]
    assert crashes and crashes[0]["signature"].startswith("crash:")
    assert crashes[0]["failure"]["error_class"] == "SIGSEGV"


def test_budget_holds(tmp_path):
    ex = FakeExecutor(seconds_per_eval=0.1)
    h, _ = hunt(tmp_path, ex, budget_s=1.0)
    result = h.run()
    assert result.stopped == "budget"
    assert 0 < result.evaluations <= 10
    # the executor was given the deadline, and no evaluation started after it (the one running at
    # it is cut short by the executor); times are compared, not measured against a bound
    deadlines = {d for _, d in ex.started}
    assert len(deadlines) == 1 and None not in deadlines
    assert all(t < d for t, d in ex.started)
    assert ex.deadline is None  # and it is taken back when the hunt ends


def test_same_seed_same_pipelines_and_findings(tmp_path):
    runs = []
    for i in range(2):
        ex = FakeExecutor(flip_faults=[has("fake.rewrite", level=1), has("fake_ort", level="disable")])
        h, _ = hunt(tmp_path / str(i), ex, max_evals=60, seed=7)
        result = h.run()
        runs.append((ex.calls, sorted(f["signature"] for f in result.findings)))
    assert runs[0] == runs[1]
    # Another seed on the same faults draws other pipelines: the seed is what made them equal.
    other = FakeExecutor(flip_faults=[has("fake.rewrite", level=1), has("fake_ort", level="disable")])
    hunt(tmp_path / "other", other, max_evals=60, seed=8)[0].run()
    assert other.calls != runs[0][0]


@pytest.mark.parametrize("shrink", [False, True])
def test_resume_evaluates_nothing_twice(tmp_path, shrink):
    ex = FakeExecutor(flip_faults=[has("fake.pass", name="c")])
    h, store = hunt(tmp_path, ex, max_evals=12, seed=3, shrink=shrink)
    first = h.run()
    if not shrink:
        assert len(set(ex.calls)) == 12  # a probe run and a full-corpus run are one evaluation
    ex2 = FakeExecutor(flip_faults=[has("fake.pass", name="c")])
    h2 = Hunt(ex2, store, HuntConfig(model="tiny_keras", seed=3, budget_s=60, max_evals=25,
                                     shrink=shrink, localize=False), FakeCorpus())
    second = h2.run(resume=first.campaign)
    assert second.campaign == first.campaign
    assert not set(ex.calls) & set(ex2.calls)  # nothing evaluated twice, shrinking included
    assert store.evaluation_count(first.campaign) == 25
    # the same sequence and findings as one uninterrupted run
    ex3 = FakeExecutor(flip_faults=[has("fake.pass", name="c")])
    h3, store3 = hunt(tmp_path / "straight", ex3, max_evals=25, seed=3, shrink=shrink)
    straight = h3.run()
    order = [e["pipeline_hash"] for e in store.evaluations(first.campaign)]
    assert order == [e["pipeline_hash"] for e in store3.evaluations(straight.campaign)]
    # the same work (a finding's cold re-runs come at the end of each run, so their place differs)
    assert sorted(ex.calls + ex2.calls) == sorted(ex3.calls)
    assert sorted(f["signature"] for f in second.findings) == sorted(
        f["signature"] for f in straight.findings)
    assert store.integrity_ok()


def test_focus_puts_the_step_in_every_pipeline(tmp_path):
    ex = FakeExecutor()
    h, _ = hunt(tmp_path, ex, max_evals=30, focus="fake.rewrite")
    h.run()
    evaluated = [o.pipeline for o in h.outcomes.values()]
    assert len(evaluated) == 30
    assert all(any(s.name == "fake.rewrite" for s in p.steps) for p in evaluated)


def test_focus_coverage_tries_options_before_the_focus_step_too(tmp_path):
    # A pass author's step that only goes wrong on what another pass made, at one setting: it
    # must come after fake.lower and have name="b". Coverage pairs every setting of the focus
    # step with every other option, inserted after the focus step and also before it.
    from fuzzconv.registry import Operation

    from .fakes import _noop, fake_registry

    reg = fake_registry()
    reg.add(Operation("fake.lower", "step", "relax", "relax", "tvm", _noop, {}, {}))

    def lowered_then_pass(p):
        names = [s.name for s in p.steps]
        return "fake.lower" in names and "fake.pass" in names and \
            names.index("fake.lower") < names.index("fake.pass") and has("fake.pass", name="b")(p)

    ex = FakeExecutor(registry=reg, flip_faults=[lowered_then_pass])
    h, _ = hunt(tmp_path, ex, max_evals=30, focus="fake.pass", shrink=True)
    plan = h.coverage_plan()
    result = h.run()
    coverage = [c.pipeline for c in plan]
    # coverage comes first: no mutant before the last coverage candidate
    phases = [e["phase"] for e in h.store.evaluations(result.campaign)]
    assert len(h.outcomes) == 30 and "coverage" not in phases[phases.index("mutate"):] \
        if "mutate" in phases else len(h.outcomes) == 30
    orders = {tuple(s.name for s in p.steps if s.name in ("fake.lower", "fake.pass"))
              for p in coverage}
    assert ("fake.lower", "fake.pass") in orders and ("fake.pass", "fake.lower") in orders
    assert [f["culprit"] for f in result.findings] == [{"step": "fake.pass", "params": {"name": "b"}}]
    assert result.findings[0]["phase"] == "coverage"
    assert [s["step"] for s in result.findings[0]["minimal_pipeline"]["steps"]][-2:] == \
        ["fake.lower", "fake.pass"]


def test_a_fault_that_flips_as_many_but_other_images_is_flaky(tmp_path):
    ex = FakeExecutor(drifting_faults=[has("fake.pass", name="b")])
    h, _ = hunt(tmp_path, ex, max_evals=40)
    (f,) = h.run().findings
    assert f["flaky"] is True
    assert f["flaky_spread"]["flipped_sets"] == 2
    steady = FakeExecutor(flip_faults=[has("fake.pass", name="b")])
    h2, _ = hunt(tmp_path / "steady", steady, max_evals=40)
    (g,) = h2.run().findings
    assert g["flaky"] is False and g["flaky_spread"]["flipped_sets"] == 1


def test_replay_marks_fixed_and_confirmed(tmp_path):
    ex = FakeExecutor(flip_faults=[has("fake.pass", name="b"), has("fake_ort", level="disable")])
    h, store = hunt(tmp_path, ex, max_evals=40)
    first = h.run()
    assert len(first.findings) == 2
    # one of the two bugs is fixed upstream
    ex2 = FakeExecutor(flip_faults=[has("fake.pass", name="b")])
    h2 = Hunt(ex2, store, HuntConfig(model="tiny_keras", budget_s=60, max_evals=1, localize=False), FakeCorpus())
    second = h2.run()
    statuses = sorted(second.replayed.values())
    assert statuses == ["confirmed", "fixed"]
    fixed = [f for f in store.findings(status="fixed")]
    assert len(fixed) == 1 and fixed[0]["culprit"]["step"] == "fake_ort"
    assert "fixed_in" in fixed[0]


@pytest.mark.parametrize("text,secs", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2h", 7200),
                                       ("45", 45), ("0.5m", 30)])
def test_parse_budget(text, secs):
    assert parse_budget(text) == secs


@pytest.mark.parametrize("text", ["", "fast", "15x", "-5", "0", "m"])
def test_bad_budget_is_a_usage_error(text):
    with pytest.raises(UsageError):
        parse_budget(text)


def test_parallel_rounds_find_what_the_sequential_hunt_finds(tmp_path):
    from fuzzconv.evaluator import Evaluator

    faults = [has("fake.pass", name="b"), has("fake_ort", level="disable")]
    seq = hunt(tmp_path / "seq", FakeExecutor(flip_faults=list(faults)), max_evals=40)[0].run()
    ex = FakeExecutor(flip_faults=list(faults))
    judge = Evaluator(ex, "tiny_keras", FakeCorpus())
    batches = []

    def many(ps):
        batches.append(len(ps))
        return [judge.outcome(p) for p in ps]

    store = Store(tmp_path / "par")
    par = Hunt(ex, store, HuntConfig(model="tiny_keras", budget_s=60, max_evals=40, localize=False),
               FakeCorpus(), outcomes_many=many, parallel=3).run()
    assert par.evaluations == 40
    assert max(batches) == 3  # rounds really were parallel
    assert sorted(f["signature"] for f in par.findings) == sorted(f["signature"] for f in seq.findings)
