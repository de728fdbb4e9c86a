"""The hunt's order on fake steps: measured cost, risk, masking of known bugs, and --plan."""

from __future__ import annotations

from dataclasses import replace

from fuzzconv.campaign import HuntConfig
from fuzzconv.costs import CostModel, Measurement
from fuzzconv.engine import Hunt
from fuzzconv.pipeline import Pipeline
from fuzzconv.plan import (P_ARITHMETIC, P_COMPANION, P_DIVERGED_ELSEWHERE, P_FOCUS_INPUT,
                           P_PRECISION, P_QUANTIZATION, P_UNTRIED, History)
from fuzzconv.registry import Operation, Registry
from fuzzconv.store import Store

from .fakes import FakeCorpus, FakeExecutor, fake_registry, has


def _hunt(tmp_path, ex: FakeExecutor, store: Store | None = None, **cfg) -> Hunt:
    store = store or Store(tmp_path)
    config = HuntConfig(model="tiny_keras", **{"budget_s": 60.0, "localize": False, **cfg})
    return Hunt(ex, store, config, FakeCorpus())


def _declared(**changes) -> Registry:
    """The fake registry with some operations' declarations changed."""
    reg = fake_registry()
    for name, kw in changes.items():
        reg.ops[name.replace("__", ".")] = replace(reg.ops[name.replace("__", ".")], **kw)
    return reg


def _label(c) -> str:
    return " ".join(s.label() for s in (*c.pipeline.steps, c.pipeline.runtime))


def test_measured_costs_order_candidates_of_equal_risk(tmp_path):
    # A first campaign measures every step: fake.to_relax is slow, fake.rewrite quick.
    store = Store(tmp_path)
    slow = {"fake.to_relax": 50.0, "fake.pass": 5.0, "fake.rewrite": 0.5, "fake.to_onnx": 2.0}
    _hunt(tmp_path, FakeExecutor(step_seconds=slow), store, max_evals=40, shrink=False).run()
    assert {r[1] for r in store.costs()} >= set(slow)
    # A second campaign (fresh cache) estimates from those measurements.
    plan = _hunt(tmp_path, FakeExecutor(step_seconds=slow), store, max_evals=1).coverage_plan()
    seconds = {_label(c): c.estimate.seconds for c in plan}
    relax = [c for c in plan if any(s.name == "fake.to_relax" for s in c.pipeline.steps)]
    onnx = [c for c in plan if not any(s.name == "fake.to_relax" for s in c.pipeline.steps)
            and c.pipeline.steps]
    assert relax and onnx
    assert all(c.estimate.basis.startswith("measured") for c in relax)
    assert min(seconds[_label(c)] for c in relax) > 50
    # at equal risk, every cheap candidate comes before every one that needs the slow step
    risk = plan[0].risk
    same = [c for c in plan if c.risk == risk]
    order = [any(s.name == "fake.to_relax" for s in c.pipeline.steps) for c in same]
    assert order == sorted(order)


def test_before_any_measurement_costs_come_from_the_models_size():
    small, large = CostModel("mobilenetv2"), CostModel("resnet101v2")
    for kind, op in [("step", "keras.tf2onnx"), ("image", "tvm"), ("load", "ort")]:
        a, b = small.estimate(kind, op, {}), large.estimate(kind, op, {})
        assert a.basis == b.basis == "prior from model size"
        assert b.seconds > a.seconds
    # a measurement on one model is scaled to another by size
    m = CostModel("resnet101v2", [Measurement("mobilenetv2", "ort", "{}", "image", 0.01)])
    e = m.estimate("image", "ort", {})
    assert e.basis.startswith("measured on mobilenetv2") and e.seconds > 0.1


def test_quantising_then_reduced_precision_then_arithmetic_then_the_rest(tmp_path):
    reg = _declared(fake__rewrite={"precision": {"level": [2]}, "arithmetic": {"level": [1]}},
                    fake__to_onnx={"quantization": {"opset": [17]}})
    h = _hunt(tmp_path, FakeExecutor(registry=reg), max_evals=1)
    plan = h.coverage_plan()
    risk = {_label(c): (c.risk, c.why) for c in plan}
    quant = next(k for k in risk if "fake.to_onnx(opset=17)" in k)
    two = next(k for k in risk if "fake.rewrite(level=2)" in k)
    one = next(k for k in risk if "fake.rewrite(level=1)" in k)
    assert risk[quant][0] == P_QUANTIZATION and "quantises" in risk[quant][1]
    assert risk[two][0] == P_PRECISION and "reduced precision" in risk[two][1]
    assert risk[one][0] == P_ARITHMETIC and "arithmetic" in risk[one][1]
    ranks = {_label(c): i for i, c in enumerate(plan)}
    assert ranks[quant] < ranks[two] < ranks[one]
    others = [c for c in plan if c.atom is not None and c.atom.op == "fake.pass"]
    assert others and all(c.risk == P_UNTRIED for c in others)
    assert all(ranks[_label(c)] > ranks[one] for c in others)


def test_options_that_diverged_on_another_model_come_first_and_never_diverging_ones_last():
    reg = fake_registry()
    findings = [{"culprit": {"step": "fake.pass", "params": {"name": "c"}}, "model": "other",
                 "status": "confirmed"}]
    agreed = [("tiny_keras", Pipeline.make(reg, "tiny_keras", [("fake.to_onnx", {"opset": 17})],
                                           "fake_ort").to_dict(), None)] * 3
    history = History.read(reg, findings, agreed)
    from fuzzconv.plan import Planner
    from fuzzconv.strategies import Atom, Space

    planner = Planner(Space(reg, "tiny_keras"), CostModel("tiny_keras"), history, 8)
    r, why = planner.atom_risk(Atom("fake.pass", "name", '"c"'))
    assert r == P_DIVERGED_ELSEWHERE and "other" in why
    r, why = planner.atom_risk(Atom("fake.to_onnx", "opset", "17"))
    assert r < P_UNTRIED and "3 earlier evaluations" in why
    assert planner.atom_risk(Atom("fake.pass", "name", '"b"'))[0] == P_UNTRIED


def test_a_known_culprit_is_reset_in_later_candidates(tmp_path):
    # A focused hunt whose focus setting is the bug: without masking, every coverage variant
    # of another option would carry it and show the same bug again.
    ex = FakeExecutor(flip_faults=[has("fake.rewrite", level=2)])
    h = _hunt(tmp_path, ex, max_evals=60, focus="fake.rewrite")
    result = h.run()
    (f,) = [f for f in result.findings if f["symptom"] == "label_flip"]
    assert f["culprit"] == {"step": "fake.rewrite", "params": {"level": 2}}
    assert f["hits"] == 1  # no evaluation after the finding showed it again
    assert result.masked > 0
    after = [e for e in h.store.evaluations(result.campaign) if e["seq"] > 0]
    masked = [e for e in after if e["outcome"].get("masked")]
    assert masked and all(e["symptom"] is None for e in masked)
    assert all('"level": 2' not in str(e["pipeline"]) for e in masked)


def _in_order(first: tuple[str, dict], then: tuple[str, dict]):
    """A fault that fires when step ``first`` (name, parameter values) comes somewhere before
    step ``then``: a bug that needs both, in that order."""

    def at(p: Pipeline, name: str, params: dict) -> int | None:
        return next((i for i, s in enumerate(p.steps) if s.name == name
                     and all(s.params.get(k) == v for k, v in params.items())), None)

    def pred(p: Pipeline) -> bool:
        i, j = at(p, *first), at(p, *then)
        return i is not None and j is not None and i < j

    return pred


_armed_then_fired = _in_order(("pair.arm", {"armed": True}), ("pair.fire", {"scale": 0.5}))


def test_a_focused_hunt_tries_the_other_steps_of_the_focus_steps_plugin_first(tmp_path):
    # Two steps shipped in one plugin file that only diverge together, in one order: a focused
    # hunt must not leave the pair to the mutation phase behind every built-in option.
    reg = _declared(fake__rewrite={"arithmetic": {"level": [1, 2]}})
    for name, choices, defaults in [("pair.arm", {"armed": [False, True]}, {"armed": False}),
                                    ("pair.fire", {"scale": [1.0, 0.5]}, {"scale": 1.0})]:
        reg.add(Operation(name, "step", "onnx", "onnx", "ort", print, choices, defaults,
                          source_file="/plugins/pair.py"))
    ex = FakeExecutor(registry=reg, flip_faults=[_armed_then_fired])
    plan = _hunt(tmp_path, ex, max_evals=1, focus="pair.fire").coverage_plan()
    arm = [c for c in plan if c.atom is not None and c.atom.op == "pair.arm"]
    assert arm and all(c.risk == P_COMPANION and "pair.py" in c.why for c in arm)
    ranks = {c.pipeline.hash: i for i, c in enumerate(plan)}
    builtin = [c for c in plan if c.atom is not None and c.atom.op.startswith("fake.")]
    assert builtin and max(ranks[c.pipeline.hash] for c in arm) < min(
        ranks[c.pipeline.hash] for c in builtin)
    # both sides of the focus step are tried, and one of them is the bug
    assert sum(_armed_then_fired(c.pipeline) for c in arm) == 1
    # the hunt finds it in coverage, within the first candidates, with the fire step to blame
    result = _hunt(tmp_path, FakeExecutor(registry=reg, flip_faults=[_armed_then_fired]),
                   max_evals=12, focus="pair.fire", shrink=False).run()
    flips = [f for f in result.findings if f["symptom"] == "label_flip"]
    assert flips and all("pair.arm" in str(f["pipeline"]) for f in flips)
    # without a focus the plugin's steps are options like any other
    plain = _hunt(tmp_path / "plain", FakeExecutor(registry=reg), max_evals=1).coverage_plan()
    assert all(c.risk != P_COMPANION for c in plain if c.atom and c.atom.op == "pair.arm")


# a step that goes wrong only on what another pass made
_lowered_then_focused = _in_order(("fake.lower", {}), ("fake.rewrite", {"level": 2}))


def test_a_focus_setting_is_tried_on_what_other_options_made_before_the_rest(tmp_path):
    reg = _declared(fake__rewrite={"arithmetic": {"level": [1]}})
    for name in ("fake.lower", "fake.tidy", "fake.fold"):
        reg.add(Operation(name, "step", "onnx", "onnx", "ort", print, {}, {}))
    ex = FakeExecutor(registry=reg, flip_faults=[_lowered_then_focused])
    plan = _hunt(tmp_path, ex, max_evals=1, focus="fake.rewrite").coverage_plan()
    early = [c for c in plan if c.before_focus and c.atom and c.atom.op.startswith("fake.")
             and '"level":2' in c.pipeline.canonical_json().replace(" ", "")]
    assert early and all(c.risk == P_FOCUS_INPUT and "fed what the option made" in c.why
                         for c in early)
    ranks = {c.pipeline.hash: i for i, c in enumerate(plan)}
    rest = [c for c in plan if c.risk < P_FOCUS_INPUT]
    assert max(ranks[c.pipeline.hash] for c in early) < min(ranks[c.pipeline.hash] for c in rest)
    # at the focus step's default, an option before it is an option like any other
    assert all(c.risk < P_FOCUS_INPUT for c in plan if c.before_focus and c not in early
               and '"level":1' not in c.pipeline.canonical_json().replace(" ", ""))
    result = _hunt(tmp_path, FakeExecutor(registry=reg, flip_faults=[_lowered_then_focused]),
                   max_evals=10, focus="fake.rewrite", shrink=False).run()
    assert any(f["symptom"] == "label_flip" for f in result.findings)


def test_plan_lists_candidates_with_estimates_and_reasons_and_runs_nothing(tmp_path):
    ex = FakeExecutor()
    plan = _hunt(tmp_path, ex, max_evals=5).coverage_plan()
    assert plan and not ex.calls
    assert all(c.estimate is not None and c.estimate.seconds > 0 and c.why for c in plan)
    assert [c.score for c in plan] == sorted((c.score for c in plan), reverse=True)


def test_a_runtime_is_estimated_from_runs_of_artifacts_made_the_same_way():
    from fuzzconv.costs import params_key, run_params
    from fuzzconv.pipeline import Step

    tuned = Step.make("tvm.build", {"tuning": "metaschedule"})
    plain = Step.make("tvm.build", {"tuning": "none"})
    rt = Step.make("tvm", {})
    rows = [Measurement("resnet101v2", "tvm", params_key(run_params(rt, tuned)), "image", 0.3),
            Measurement("resnet101v2", "tvm", params_key(run_params(rt, plain)), "image", 5.0)]
    m = CostModel("resnet101v2", rows)
    assert m.run(rt, 1, tuned).seconds < 1 < m.run(rt, 1, plain).seconds
    # a build setting never run falls back on every run of the runtime, and says so
    tuned3 = Step.make("tvm.build", {"tuning": "metaschedule", "opt_level": 2})
    assert m.run(rt, 1, tuned3).basis.startswith("measured (other parameters)")
    # before any measurement, a tuned library's prior is a fraction of an untuned one's
    fresh = CostModel("resnet101v2")
    assert fresh.run(rt, 8, tuned).seconds < 0.5 * fresh.run(rt, 8, plain).seconds


def test_a_tuned_build_before_tuning_costs_its_tuning_budget(monkeypatch):
    import fuzzconv.tuning as tuning
    from fuzzconv.pipeline import Step
    from fuzzconv.registry import default_registry

    reg = default_registry()
    tuned = Step.make("tvm.build", reg.get("tvm.build").canonical_params({"tuning": "metaschedule"}))
    monkeypatch.setattr(tuning, "tuned_for", lambda model, target="llvm": False)
    e = CostModel("resnet101v2", registry=reg).step(tuned)
    assert e.seconds >= tuning.BUILD_BUDGET_S and "not tuned" in e.basis
    monkeypatch.setattr(tuning, "tuned_for", lambda model, target="llvm": True)
    assert CostModel("resnet101v2", registry=reg).step(tuned).seconds < 60


def test_a_build_setting_never_run_carries_what_is_declared_about_it_over_from_the_others():
    from fuzzconv.costs import params_key, run_params
    from fuzzconv.pipeline import Step

    rt = Step.make("tvm", {})
    plain = Step.make("tvm.build", {"target": "llvm", "tuning": "none"})
    tuned = Step.make("tvm.build", {"target": "llvm", "tuning": "metaschedule"})
    rows = [Measurement("resnet101v2", "tvm", params_key(run_params(rt, plain)), "image", 3.5)]
    m = CostModel("resnet101v2", rows)
    # LLVM at -O0 makes code several times slower; a new fast-math target, nothing declared
    o0 = Step.make("tvm.build", {"target": {"kind": "llvm", "opt-level": 0}, "tuning": "none"})
    fast = Step.make("tvm.build", {"target": {"kind": "llvm", "fast-math": True}, "tuning": "none"})
    def per_image(model: CostModel, after: Step) -> float:
        return model.estimate("image", "tvm", run_params(rt, after)).seconds

    assert per_image(m, fast) == 3.5
    assert per_image(m, o0) == 6 * 3.5
    # and from a tuned library's runs to an untuned one's, the other way round
    m2 = CostModel("resnet101v2", [Measurement(
        "resnet101v2", "tvm", params_key(run_params(rt, tuned)), "image", 0.7)])
    assert per_image(m2, plain) == 0.7 / 0.2 and per_image(m2, tuned) == 0.7
