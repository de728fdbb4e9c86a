"""Fake steps and an in-process fake executor: the engine and shrinker tested without frameworks.

Like Polygraphy's fake checkers, a fault is a predicate over the pipeline: when it holds, the
fake runtime's outputs are perturbed on chosen images. Everything else agrees with the reference.
:class:`FakeCorpus` and :class:`FakeExecutor` implement :mod:`fuzzconv.interfaces`' protocols.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fuzzconv.executor import BudgetExhausted, Evaluation, Failure
from fuzzconv.pipeline import Pipeline
from fuzzconv.registry import Operation, Registry


def _noop(*args, **kwargs):  # the fake executor never calls step functions
    raise AssertionError("fake steps do not run")


def fake_registry() -> Registry:
    reg = Registry()
    ops = [
        Operation("fake.to_onnx", "step", "keras", "onnx", "tf", _noop,
                  {"opset": [13, 17]}, {"opset": 13}),
        Operation("fake.rewrite", "step", "onnx", "onnx", "ort", _noop,
                  {"level": [0, 1, 2]}, {"level": 0}),
        Operation("fake.to_relax", "step", "onnx", "relax", "tvm", _noop, {}, {}),
        Operation("fake.pass", "step", "relax", "relax", "tvm", _noop,
                  {"name": ["a", "b", "c"]}, {"name": "a"}),
        Operation("keras", "runtime", "keras", None, "tf", _noop,
                  {"jit": [False, True]}, {"jit": False}),
        Operation("fake_ort", "runtime", "onnx", None, "ort", _noop,
                  {"level": ["all", "disable"]}, {"level": "all"}),
        Operation("fake_tvm", "runtime", "relax", None, "tvm", _noop, {}, {}),
    ]
    for op in ops:
        reg.add(op)
    return reg


Fault = Callable[[Pipeline], bool]


@dataclass
class FakeCorpus:
    """``n`` images that exist only by name (a :class:`fuzzconv.interfaces.Corpus`), or the
    images of a larger fake corpus at ``picked`` (a subset)."""

    n: int = 20
    picked: tuple[int, ...] | None = None
    name: str = "fake"
    labels: None = None

    @property
    def indices(self) -> tuple[int, ...]:
        return self.picked if self.picked is not None else tuple(range(self.n))

    @property
    def names(self) -> list[str]:
        return [f"img{i:03d}.png" for i in self.indices]

    @property
    def paths(self) -> list[str]:
        return self.names

    @property
    def digest(self) -> str:
        return "fake" + ",".join(map(str, self.indices))

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, idx: list[int]) -> "FakeCorpus":
        return FakeCorpus(self.n, tuple(self.indices[i] for i in idx))


@dataclass
class FakeExecutor:
    """Evaluates pipelines in-process (a :class:`fuzzconv.interfaces.Executor`); ``faults`` are
    predicates on pipelines, one list per kind of fault."""

    registry: Registry = field(default_factory=fake_registry)
    flip_faults: list[Fault] = field(default_factory=list)
    crash_faults: list[Fault] = field(default_factory=list)
    seconds_per_eval: float = 0.0
    # measured seconds of each fresh step and run, by name (what the cost model learns from)
    step_seconds: dict[str, float] = field(default_factory=dict)
    # (fault, factor): a pipeline the fault holds for infers this many times slower per image
    slow_faults: list[tuple[Fault, float]] = field(default_factory=list)
    deadline: float | None = None
    listener: object = None
    calls: list[str] = field(default_factory=list)  # fresh evaluations, in order
    # (monotonic start, deadline then in force) of every fresh evaluation
    started: list[tuple[float, float | None]] = field(default_factory=list)
    classes: int = 10
    # faults whose flipped images change from one fresh evaluation to the next, as many each time
    drifting_faults: list[Fault] = field(default_factory=list)
    fresh_evaluations: int = 0
    _memo: dict = field(default_factory=dict)
    _built: set = field(default_factory=set)  # (model, steps prefix) built so far

    def reference_pipeline(self, model: str) -> Pipeline:
        return Pipeline.make(self.registry, model, [], "keras")

    def _ref_logits(self, corpus: FakeCorpus) -> np.ndarray:
        rng = np.random.default_rng(0)
        logits = rng.standard_normal((max(corpus.indices) + 1, self.classes)).astype(np.float32) * 4
        return logits[list(corpus.indices)]

    def reference(self, model: str, corpus: FakeCorpus) -> Evaluation:
        return Evaluation(self.reference_pipeline(model), self._ref_logits(corpus),
                          timings={"infer": 0.01 * len(corpus)})

    def _slowness(self, p: Pipeline) -> float:
        return max([f for fault, f in self.slow_faults if fault(p)] or [1.0])

    def artifact_key(self, p: Pipeline, n: int) -> str:
        return repr((p.model, p.steps[:n]))

    def outputs_key(self, p: Pipeline, corpus: FakeCorpus) -> str:
        return repr((p.hash, corpus.indices))

    def cached(self, kind: str, key: str) -> bool:
        return key in (self._built_keys if kind == "artifacts" else self._memo_keys)

    def output_cached(self, p: Pipeline, corpus: FakeCorpus) -> bool:
        return self.cached("outputs", self.outputs_key(p, corpus))

    @property
    def _built_keys(self) -> set[str]:
        return {repr(k) for k in self._built}

    @property
    def _memo_keys(self) -> set[str]:
        return {repr(k) for k in self._memo}

    def evaluate(self, p: Pipeline, corpus: FakeCorpus, cold: bool = False,
                 repeats: int = 0) -> Evaluation:
        key = (p.hash, corpus.indices)
        if key in self._memo and not cold and not repeats:
            hit = self._memo[key]
            return Evaluation(p, hit.logits, hit.failure, dict(hit.timings), fresh=0,
                              cached=1 + len(p.steps))
        if repeats:
            per = 0.01 * self._slowness(p)
            return Evaluation(p, self._ref_logits(corpus), timings={"infer": per * len(corpus)},
                              batch_seconds=[per * len(corpus)] * repeats)
        ev = self._evaluate(p, corpus)
        self._memo[key] = ev
        self.fresh_evaluations += 1
        return ev

    def _evaluate(self, p: Pipeline, corpus: FakeCorpus) -> Evaluation:
        self.started.append((time.monotonic(), self.deadline))
        measured = []
        for n in range(len(p.steps)):
            if (p.model, p.steps[:n + 1]) not in self._built:
                self._built.add((p.model, p.steps[:n + 1]))
                s = p.steps[n]
                measured.append({"op": s.name, "params": s.params, "kind": "step",
                                 "seconds": self.step_seconds.get(s.name, 1.0)})
        per = 0.01 * self._slowness(p)
        measured += [{"op": p.runtime.name, "params": p.runtime.params, "kind": "load",
                      "seconds": self.step_seconds.get(p.runtime.name, 0.1)},
                     {"op": p.runtime.name, "params": p.runtime.params, "kind": "image",
                      "seconds": per}]
        if self.seconds_per_eval:
            left = None if self.deadline is None else self.deadline - time.monotonic()
            if left is not None and left < self.seconds_per_eval:
                time.sleep(max(left, 0))
                raise BudgetExhausted()
            time.sleep(self.seconds_per_eval)
        self.calls.append(p.hash)
        for fault in self.crash_faults:
            if fault(p):
                return Evaluation(p, None, Failure("crash", "step 1", p.steps[0].name if p.steps
                                                   else p.runtime.name, "SIGSEGV", "boom"), fresh=1,
                                  measured=measured[:1])
        logits = self._ref_logits(corpus)
        drifting = any(f(p) for f in self.drifting_faults)
        if drifting or any(f(p) for f in self.flip_faults):
            # move the runner-up above the top-1 on every other image of the whole corpus (odd
            # or even ones, by turns, for a drifting fault)
            for row, i in enumerate(corpus.indices):
                if i % 2 == (len(self.calls) % 2 if drifting else 0):
                    order = np.argsort(-logits[row])
                    logits[row, order[1]] = logits[row, order[0]] + 1.0
        return Evaluation(p, logits, timings={"infer": per * len(corpus)}, fresh=1,
                          measured=measured)


def has(step: str, **params) -> Fault:
    """A fault that fires when the pipeline holds ``step`` with these parameter values."""

    def pred(p: Pipeline) -> bool:
        return any(s.name == step and all(s.params.get(k) == v for k, v in params.items())
                   for s in (*p.steps, p.runtime))

    return pred
