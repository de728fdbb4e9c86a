"""What a hunt tries next: coverage candidates, their risk, their cost, and why.

Design note — spending the budget where findings are
----------------------------------------------------
A hunt on a large model can afford a few dozen evaluations, and they differ in cost by two
orders of magnitude (an ONNX Runtime option on a cached model: a second; an untuned TVM build
of ResNet101V2: minutes). So every candidate is ranked by **expected findings per second**:
its chance of diverging divided by its estimated cost.

* **Cost** (:mod:`fuzzconv.costs`) counts only what would run: steps whose artifact is not in
  the cache yet, and the runtime on the probe set (see :mod:`fuzzconv.evaluator`). It falls as
  prefixes get built, so the order is recomputed before every pick, and the single-option
  variants of a base that was just built come next, cheaply.
* **Risk** (:meth:`Planner.atom_risk`): options declared to quantise (int8:
  :attr:`fuzzconv.registry.Operation.quantization`) come first: they move logits by a margin's
  worth nearly always; then options that diverged before in this store, on another model (their
  culprits bucket across models); then those declared to compute in reduced precision (float16:
  ``precision``) and, in a focused hunt, the other steps of the focus step's plugin file (shipped
  to be tried together); then, in a focused hunt, each option placed *before* a non-default
  setting of the focus step (the setting fed an input another option made: a step that only goes
  wrong after ``LegalizeOps`` shows it there); then the other options declared to change the
  arithmetic (fast-math, fusion, layout, generated schedules: ``arithmetic``), which move logits
  by rounding errors; then a new conversion chain; then other untried options; options tried
  again and again without ever diverging anywhere come last.
* **Known bugs** are masked (:func:`mask`): once a culprit is known, a candidate holding it is
  judged with the culprit reset to its default, so the same bug does not answer again and again;
  a candidate that masks to one already judged is skipped.
* A candidate whose measured cost is more than twice the time left is left out: it would be
  killed at the deadline.

Coverage is what it was: every operation and parameter value reachable from the model (an
:class:`~fuzzconv.strategies.Atom`) is tried once, as a single-option variant of the all-defaults
pipeline of the shortest chain that can hold it; with a focus step, once per setting of the focus
step and on both sides of it. Only the order changed.

Ties are broken by the pipeline's canonical JSON, and costs come from measurements made before
the campaign started, so the order depends on the seed, the store and the cache, never on
timing noise during the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .costs import CostModel, Estimate, Measurement
from .errors import UsageError
from .pipeline import Pipeline, Step
from .registry import Registry
from .strategies import Atom, Space

# Chances of diverging, by what is known of an option (see the module docstring).
P_FOCUS = 1.0  # a setting of the focus step: what its author is testing
P_QUANTIZATION = 0.9
P_DIVERGED_ELSEWHERE = 0.6
P_PRECISION = 0.5
P_COMPANION = 0.5  # another step of the focus step's plugin file
P_FOCUS_INPUT = 0.2  # a focus setting fed what another option made (that option before it)
P_ARITHMETIC = 0.1
P_CHAIN = 0.1
P_UNTRIED = 0.05
#: Costs below this count as this, so free candidates still order by risk.
MIN_SECONDS = 1.0


@dataclass
class Candidate:
    """A pipeline to evaluate, why, and what it is expected to cost."""

    pipeline: Pipeline
    phase: str
    base: Pipeline | None = None  # the all-defaults pipeline a coverage variant differs from
    atom: Atom | None = None
    risk: float = P_UNTRIED
    why: str = ""
    estimate: Estimate | None = None
    masked: list[str] = field(default_factory=list)  # known culprits reset in this pipeline
    before_focus: bool = False  # a coverage variant whose option goes before the focus step

    @property
    def score(self) -> float:
        seconds = self.estimate.seconds if self.estimate else MIN_SECONDS
        return self.risk / max(seconds, MIN_SECONDS)

    def proven_culprit(self, reg: Registry) -> tuple[dict[str, Any], str]:
        """The culprit and fix hint of a diverging coverage variant whose base agrees: the one
        option it changes."""
        assert self.atom is not None and self.base is not None
        op = reg.get(self.atom.op)
        p = self.pipeline
        changed = next(s for s in (*p.steps, p.runtime) if s.name == op.name)
        if op.optional:
            hint = f"dropping {op.name} agrees"
        elif self.atom.param is not None:
            hint = f"{self.atom.param}={json.dumps(op.defaults[self.atom.param])} agrees"
        else:
            hint = f"the all-defaults {self.base.label()} agrees"
        return {"step": op.name, "params": changed.params}, hint

    def reason(self) -> str:
        parts = [self.why]
        if self.estimate is not None:
            parts.append(f"~{_seconds(self.estimate.seconds)} ({self.estimate.basis})")
        if self.masked:
            parts.append("known bug reset: " + ", ".join(self.masked))
        return "; ".join(p for p in parts if p)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def atoms_of(p: Pipeline) -> set[Atom]:
    out = set()
    for s in (*p.steps, p.runtime):
        out.add(Atom(s.name))
        for k, v in s.params.items():
            out.add(Atom(s.name, k, json.dumps(v, sort_keys=True)))
    return out


@dataclass
class History:
    """What a store knows of options: where each diverged (a finding's culprit) and how often
    each was tried without diverging.

    Attributes:
        culprits: (step, params JSON) → models it was the culprit on.
        agreed: atom → evaluations holding it (with a non-default value) that agreed.
    """

    culprits: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    agreed: dict[Atom, int] = field(default_factory=dict)

    @classmethod
    def read(cls, registry: Registry, findings: Iterable[dict[str, Any]],
             evaluations: Iterable[tuple[str, dict[str, Any], str | None]]) -> "History":
        h = cls()
        for f in findings:
            c = f.get("culprit")
            if c and f.get("status") != "fixed":
                key = (c["step"], json.dumps(c["params"], sort_keys=True))
                h.culprits.setdefault(key, set()).add(f["model"])
        for _model, pipeline, symptom in evaluations:
            if symptom is not None:
                continue
            for el in (*pipeline.get("steps", []), pipeline.get("runtime", {})):
                name = el.get("step") or el.get("name")
                op = registry.ops.get(name)
                if op is None:
                    continue
                defaults = op.canonical_params({})
                for k, v in (el.get("params") or {}).items():
                    if k in defaults and v != defaults[k]:
                        a = Atom(name, k, json.dumps(v, sort_keys=True))
                        h.agreed[a] = h.agreed.get(a, 0) + 1
                if op.optional:
                    h.agreed[Atom(name)] = h.agreed.get(Atom(name), 0) + 1
        return h

    def diverged_on(self, step: Step | dict[str, Any]) -> set[str]:
        """Models on which this step or runtime, with these parameters, was a culprit."""
        name, params = (step.name, step.params) if isinstance(step, Step) else (
            step["step"], step["params"])
        return self.culprits.get((name, json.dumps(params, sort_keys=True)), set())


def mask(space: Space, p: Pipeline, culprits: list[dict[str, Any]]) -> tuple[Pipeline | None, list[str]]:
    """``p`` with every known culprit it holds reset: its parameters to their defaults (an
    optional step other than the focus step is dropped). Returns (the pipeline or None when it
    cannot be made, the culprits reset)."""
    reg = space.registry
    steps, rt, reset = list(p.steps), p.runtime, []
    for c in culprits:
        target = Step.make(c["step"], c["params"])
        op = reg.ops.get(c["step"])
        if op is None:
            continue
        plain = Step.make(op.name, op.canonical_params({}))
        if target == plain:
            continue  # a culprit at its defaults: nothing plainer to judge with
        if rt == target:
            rt, reset = plain, reset + [target.brief(reg)]
            continue
        for i, s in enumerate(steps):
            if s == target:
                focus = space.focus is not None and space.focus.name == op.name
                if op.optional and not focus:
                    steps[i] = None  # type: ignore[call-overload]
                else:
                    steps[i] = plain
                reset.append(target.brief(reg))
        steps = [s for s in steps if s is not None]
    if not reset:
        return p, []
    try:
        return space.with_focus(space.make(steps, rt)), reset
    except UsageError:
        return None, reset


class CacheView:
    """What the planner may take as cached: what was in the cache when the campaign started
    (recorded with it, so ``--resume`` sees the same) and what the campaign built since.

    Args:
        artifact_key: the key of a pipeline's artifact after its first n steps.
        outputs_key: the key of a pipeline's outputs on the images it is first judged on.
        at_start: the keys cached when the campaign started.
    """

    def __init__(self, artifact_key: Any, outputs_key: Any, at_start: Iterable[str] = ()):
        self.artifact_key = artifact_key
        self.outputs_key = outputs_key
        self.keys: set[str] = set(at_start)

    @classmethod
    def at_start(cls, ex: Any, store: Any, cid: str, resume: bool, images: Any,
                 pipelines: list[Pipeline]) -> "CacheView":
        """The view of campaign ``cid``: on ``resume`` what its start recorded, else what the
        executor's cache holds now of ``pipelines``' artifacts and of their outputs on
        ``images`` (recorded with the campaign)."""
        view = cls(ex.artifact_key, lambda p: ex.outputs_key(p, images))
        keys = store.note(cid, "cached_at_start") if resume and cid else None
        if keys is None:
            keys = set()
            for p in pipelines:
                for n in range(1, len(p.steps) + 1):
                    k = view.artifact_key(p, n)
                    if k not in keys and not ex.cached("artifacts", k):
                        break
                    keys.add(k)
                if ex.cached("outputs", view.outputs_key(p)):
                    keys.add(view.outputs_key(p))
            if cid:
                store.set_note(cid, "cached_at_start", sorted(keys))
        view.keys.update(keys)
        return view

    def cached_steps(self, p: Pipeline) -> int:
        n = 0
        while n < len(p.steps) and self.artifact_key(p, n + 1) in self.keys:
            n += 1
        return n

    def output_cached(self, p: Pipeline) -> bool:
        return self.outputs_key(p) in self.keys

    def note(self, p: Pipeline, failed_step: int | None = None) -> None:
        """``p`` was evaluated: its artifacts (up to the step that failed) and outputs exist."""
        last = len(p.steps) if failed_step is None else failed_step
        self.keys.update(self.artifact_key(p, n) for n in range(1, last + 1))
        if failed_step is None:
            self.keys.add(self.outputs_key(p))


class Planner:
    """Builds the coverage candidates of a hunt and ranks any candidate (see the module
    docstring).

    Args:
        space: the pipelines reachable from the model.
        costs: the model's cost estimates.
        history: what the store knows of options.
        images: images a candidate is first judged on (the probe set's size).
        cached_steps: how many leading steps of a pipeline are cached (the executor's).
        output_cached: whether a pipeline's outputs on the probe set are cached.
    """

    def __init__(self, space: Space, costs: CostModel, history: History, images: int,
                 cached_steps: Any = None, output_cached: Any = None):
        self.space = space
        self.reg = space.registry
        self.costs = costs
        self.history = history
        self.images = images
        self.cached_steps = cached_steps or (lambda p: 0)
        self.output_cached = output_cached or (lambda p: False)

    # -- risk --------------------------------------------------------------------------------
    def atom_risk(self, atom: Atom) -> tuple[float, str]:
        """The chance that trying ``atom`` finds something, and the reason."""
        op = self.reg.get(atom.op)
        value = json.loads(atom.value_json) if atom.value_json is not None else None
        models = set()
        for (step, params_json), ms in self.history.culprits.items():
            params = json.loads(params_json)
            if step == atom.op and (atom.param is None or params.get(atom.param) == value):
                models |= ms
        others = sorted(models - {self.space.model})
        if others:
            return P_DIVERGED_ELSEWHERE, f"diverged before on {', '.join(others[:3])}"
        if op.quantizes(atom.param, value) or (
                atom.param is None and op.optional and op.quantization is True):
            return P_QUANTIZATION, "quantises"
        if op.reduces_precision(atom.param, value) or (
                atom.param is None and op.optional and op.precision is True):
            return P_PRECISION, "computes in reduced precision"
        if self.is_companion(op):
            return P_COMPANION, f"shipped with the focus step ({Path(op.source_file or '').name})"
        if op.changes_arithmetic(atom.param, value) or (
                atom.param is None and op.optional and op.arithmetic is True):
            return P_ARITHMETIC, "changes arithmetic"
        n = self.history.agreed.get(atom, 0)
        if n:
            return P_UNTRIED / (1 + n), f"agreed in {n} earlier evaluations"
        return P_UNTRIED, "not tried yet"

    def is_companion(self, op: Any) -> bool:
        """Whether ``op`` comes from the plugin file that defined the focus step (not the focus
        step itself)."""
        f = self.space.focus
        return (f is not None and op.name != f.name and op.source_file is not None
                and op.source_file == f.source_file)

    def pipeline_risk(self, p: Pipeline) -> tuple[float, str]:
        """The riskiest option a pipeline holds that is not at its default."""
        best, why = P_UNTRIED, "not tried yet"
        for a in sorted(atoms_of(p), key=lambda a: (a.op, a.param or "", a.value_json or "")):
            op = self.reg.get(a.op)
            if a.param is None and not op.optional:
                continue
            if a.param is not None and json.loads(a.value_json or "null") == op.canonical_params({})[a.param]:
                continue
            r, w = self.atom_risk(a)
            if r > best:
                best, why = r, f"{w} ({_atom_label(a)})"
        return best, why

    # -- cost --------------------------------------------------------------------------------
    def estimate(self, p: Pipeline) -> Estimate:
        return self.costs.pipeline(p, self.images, self.cached_steps(p), self.output_cached(p))

    def rank(self, candidates: list[Candidate], seconds_left: float | None = None
             ) -> list[Candidate]:
        """``candidates`` with fresh estimates, best first; those that measurably would overrun
        the time left (by more than twice) are left out (a prior is too rough to skip on)."""
        for c in candidates:
            c.estimate = self.estimate(c.pipeline)
        if seconds_left is not None:
            candidates = [c for c in candidates if c.estimate.seconds <= 2 * seconds_left
                          or c.estimate.basis.startswith("prior")]
        return sorted(candidates, key=lambda c: (-c.score, c.pipeline.canonical_json()))

    # -- coverage ----------------------------------------------------------------------------
    def coverage(self, exclude: set[str] = frozenset()) -> list[Candidate]:  # type: ignore[assignment]
        """Every base (all-defaults chain) and one single-option variant per atom not held by a
        base (two around a focus step), with risk and reason; ``exclude`` holds pipeline hashes
        left out (the reference)."""
        groups = [self.space.bases()]
        for setting in self.focus_settings():
            groups.append([b for b in (self._set_focus(b, setting) for b in groups[0])
                           if b is not None])
        out: list[Candidate] = []
        seen = set(exclude)
        for g, bases in enumerate(groups):
            for b in bases:
                if b.hash not in seen:
                    seen.add(b.hash)
                    r, why = self.pipeline_risk(b)
                    if r <= P_CHAIN:
                        r, why = P_CHAIN, "a conversion chain not judged yet"
                    if g > 0:  # a setting of the focus step: what its author is testing
                        r, why = P_FOCUS, "a setting of the focus step"
                    out.append(Candidate(b, "coverage", risk=r, why=why))
        for g, bases in enumerate(groups):
            for c in self._single_option_variants(bases):
                if c.pipeline.hash not in seen:
                    seen.add(c.pipeline.hash)
                    # the focus step's own non-default settings are what its author tests
                    if g > 0 and self.space.focus is not None:
                        c.risk, c.why = max(c.risk, P_ARITHMETIC), f"{c.why}; focus setting"
                        # ...and on a form of its input that another option made: a step that
                        # only goes wrong after another pass (LegalizeOps, say) shows it here
                        if c.before_focus and c.risk < P_FOCUS_INPUT:
                            c.risk, c.why = P_FOCUS_INPUT, f"{c.why}, fed what the option made"
                    out.append(c)
        return out

    def _single_option_variants(self, bases: list[Pipeline]) -> list[Candidate]:
        covered = {a for b in bases for a in atoms_of(b)}
        variants: list[Candidate] = []
        for atom in self.space.atoms():
            if atom in covered:
                continue
            for base in bases:
                variant = self.variant(base, atom)
                if variant is None:
                    continue
                r, why = self.atom_risk(atom)
                why = f"{why} ({_atom_label(atom)})"
                variants.append(Candidate(variant, "coverage", base, atom, r, why))
                covered.update(atoms_of(variant))
                early = self.variant(base, atom, before_focus=True)
                if early is not None and early.hash != variant.hash:
                    variants.append(Candidate(early, "coverage", base, atom, r,
                                              why + ", before the focus step",
                                              before_focus=True))
                break
        return variants

    def focus_settings(self) -> list[dict[str, Any]]:
        """Each non-default single-parameter setting of the focus step (none without a focus)."""
        f = self.space.focus
        if f is None:
            return []
        return [{param: v} for param in sorted(f.choices) for v in f.choices[param]
                if json.dumps(v, sort_keys=True) != json.dumps(f.defaults.get(param), sort_keys=True)]

    def _set_focus(self, base: Pipeline, setting: dict[str, Any]) -> Pipeline | None:
        f = self.space.focus
        assert f is not None
        steps = list(base.steps)
        if f.kind == "runtime":
            if base.runtime.name != f.name:
                return None
            return self.make(steps, Step.make(f.name, f.canonical_params({**base.runtime.params, **setting})))
        for i, st in enumerate(steps):
            if st.name == f.name:
                steps[i] = Step.make(f.name, f.canonical_params({**st.params, **setting}))
                return self.make(steps, base.runtime)
        return None

    def variant(self, base: Pipeline, atom: Atom, before_focus: bool = False) -> Pipeline | None:
        """``base`` changed in exactly the one way ``atom`` names, or None if it cannot hold it.

        An optional step is inserted at its last possible place, or with ``before_focus`` at the
        last place before the focus step (None when there is none, or no focus).
        """
        op = self.reg.get(atom.op)
        value = json.loads(atom.value_json) if atom.value_json is not None else None
        steps = list(base.steps)
        if op.kind == "runtime":
            if op.src != self.reg.get(base.runtime.name).src:
                return None
            params = op.canonical_params({atom.param: value} if atom.param else {})
            return self.make(steps, Step.make(op.name, params))
        if op.optional and not any(s.name == op.name for s in steps):
            pos = self.space.insert_positions(base, op)
            if before_focus:
                focus = self.space.focus
                at = next((i for i, s in enumerate(steps) if focus and s.name == focus.name), None)
                pos = [i for i in pos if at is not None and i <= at]
            if not pos:
                return None
            params = op.canonical_params({atom.param: value} if atom.param else {})
            steps.insert(pos[-1], Step.make(op.name, params))
            return self.make(steps, base.runtime)
        for i, s in enumerate(steps):
            if s.name == op.name:
                params = s.params
                if atom.param:
                    params[atom.param] = value
                steps[i] = Step.make(op.name, op.canonical_params(params))
                return self.make(steps, base.runtime)
        return None

    def make(self, steps: list[Step], runtime: Step) -> Pipeline | None:
        try:
            return self.space.with_focus(self.space.make(steps, runtime))
        except UsageError:
            return None


def planner_from_store(store: Any, space: Space, images: int, before: float | None = None
                       ) -> tuple[Planner, list[dict[str, Any]]]:
    """A planner with what ``store`` knew ``before`` a time (the campaign's start): costs measured
    on every model, and which options diverged or agreed. Also returns the culprits of the
    model's unfixed findings from then (known bugs, masked in the new campaign)."""
    costs = CostModel(space.model, (Measurement(m, op, params, kind, s)
                                    for m, op, params, kind, s in store.costs(before)),
                      space.registry)
    findings = [f for f in store.findings() if before is None or f["first_seen"] < before]
    history = History.read(space.registry, findings, store.evaluated_pipelines(before))
    known = [f["culprit"] for f in findings
             if f["model"] == space.model and f.get("culprit") and f.get("status") != "fixed"]
    return Planner(space, costs, history, images), known


def _atom_label(a: Atom) -> str:
    if a.param is None:
        return a.op
    return f"{a.op} {a.param}={a.value_json}"
