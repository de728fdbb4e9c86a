"""Judging one pipeline: evaluate it, compare with the reference, name its symptom.

The hunt, the shrinker and ``repro`` all ask the same question of a pipeline, so they share this
one answer. An :class:`Outcome` is what the search sees of an evaluation; :meth:`Outcome.key` is
the part of it that must stay the same while shrinking (distinct bugs never merge).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .executor import Evaluation, Executor
from .oracle import Comparison, Thresholds, compare, judge
from .pipeline import Pipeline


@dataclass
class Outcome:
    """One evaluated pipeline as the search sees it."""

    pipeline: Pipeline
    symptom: str | None
    comparison: dict[str, Any] | None
    failure: dict[str, Any] | None
    timings: dict[str, float]
    fresh: int
    cached: int

    @property
    def key(self) -> tuple[str | None, ...]:
        """The signature a shrunk pipeline must keep: the symptom, and for crashes and timeouts
        the error class and the step that failed."""
        if self.failure is not None:
            return (self.symptom, self.failure["error_class"], self.failure["step"])
        return (self.symptom,)

    @property
    def energy(self) -> float:
        """How interesting this pipeline is to mutate: divergent or close to it."""
        c = self.comparison or {}
        e = 1.0
        if self.symptom:
            e += 8.0
        e += 10.0 * float(c.get("flip_rate") or 0.0)
        e += 2.0 * min(1.0, float(c.get("max_rel_diff") or 0.0) / 1e-3)
        e += 1.0 if c.get("tie_flips") else 0.0
        return e


class Evaluator:
    """Evaluates pipelines of one model on one corpus against its reference.

    Args:
        executor: runs pipelines.
        model: the zoo model.
        corpus: the images.
        thresholds: the oracle's tolerances.
    """

    def __init__(self, executor: Executor, model: str, corpus: Any,
                 thresholds: Thresholds = Thresholds()):
        self.ex = executor
        self.model = model
        self.corpus = corpus
        self.thresholds = thresholds
        self._ref: Evaluation | None = None

    @property
    def reference(self) -> Evaluation:
        if self._ref is None:
            self._ref = self.ex.reference(self.model, self.corpus)
        return self._ref

    def outcome(self, p: Pipeline, cold: bool = False) -> Outcome:
        ev = self.ex.evaluate(p, self.corpus, cold=cold)
        cmp: Comparison | None = None
        if ev.ok:
            assert self.reference.logits is not None and ev.logits is not None
            cmp = compare(self.reference.logits, ev.logits, self.thresholds)
        symptom = judge(cmp, self.thresholds, ev.failure)
        if symptom is None and cmp is not None:
            symptom = self._slowdown(p, ev)
        return Outcome(p, symptom, cmp.to_dict() if cmp else None,
                       ev.failure.to_dict() if ev.failure else None, ev.timings, ev.fresh, ev.cached)

    def _slowdown(self, p: Pipeline, ev: Evaluation) -> str | None:
        """Confirm a suspected slowdown by timing it beside the reference, warm, repeated."""
        infer = ev.timings.get("infer")
        ref_infer = self.reference.timings.get("infer")
        if not infer or not ref_infer or infer < self.thresholds.slowdown * ref_infer:
            return None
        few = self.corpus.subset(list(range(min(8, len(self.corpus)))))
        t0 = time.perf_counter()
        ref = self.ex.evaluate(self.ex.reference_pipeline(self.model), few, repeats=5)
        run = self.ex.evaluate(p, few, repeats=5)
        # Runtime work like a step's, which the timings should show (it can exceed the rest).
        ev.timings["confirm"] = round(time.perf_counter() - t0, 3)
        if not (ref.batch_seconds and run.batch_seconds):
            return None
        factor = _median(run.batch_seconds) / max(_median(ref.batch_seconds), 1e-9)
        ev.timings["slowdown_factor"] = round(factor, 3)
        return "slowdown" if factor > self.thresholds.slowdown else None


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
