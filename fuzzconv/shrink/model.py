"""Shrinking a generated model while its minimal pipeline keeps failing the same way.

Design note — model shrink passes
---------------------------------
Once the pipeline is 1-minimal, a generated model (:mod:`fuzzconv.gen`) is shrunk with the
pipeline held fixed, the way the pipeline was: "simpler" is a total order
(:meth:`fuzzconv.gen.spec.GenSpec.simplicity`: fewer layers, then fewer attributes away from
their plainest, then a smaller input, then fewer channels), and a candidate is accepted only
when it is strictly simpler *and* the pipeline on it fails with the same signature
(:attr:`fuzzconv.evaluator.Outcome.key`), so distinct bugs never merge.

The passes (:data:`MODEL_PASSES`, in the order they run: each is a method of
:class:`ModelShrinker` marked with :func:`model_pass`, its docstring saying what it tries, what it
costs and why it runs where it does) propose candidates from the current model; the first
strictly simpler one that keeps the signature is taken and the next pass starts from it, until a
whole round makes no progress. Each candidate is a new model: it is built and calibrated, its
reference run, then the pipeline judged on it (seconds for a generated model, everything through
the cache). A candidate a step of the pipeline cannot carry (:mod:`fuzzconv.gen.carriers`), or
that its own framework cannot build, is not a shrink.

At the fixed point the result is 1-minimal: dropping any one layer or resetting any one
attribute loses the divergence; :meth:`ModelShrinker.verify_one_minimal` checks exactly that and
records it. The profile (calls and successes per pass) is stored with the finding's pipeline
passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import UsageError
from ..evaluator import Outcome
from ..gen.carriers import carries
from ..gen.catalog import remember
from ..gen.spec import SIZES, GenSpec, Layer, SpecError
from ..gen.vocabulary import KINDS
from ..pipeline import Pipeline
from .pipeline import PassStats

#: The model shrink passes, by method name, in the order they run (filled by :func:`model_pass`).
MODEL_PASSES: list[str] = []
#: Attributes that set a layer's channels (or features): what :meth:`shrink_channels` lowers.
WIDTHS = ("filters", "units")


def model_pass(fn: Callable[..., Iterator[GenSpec]]) -> Callable[..., Iterator[GenSpec]]:
    """Mark a :class:`ModelShrinker` method as a model shrink pass; passes run in the order
    they are defined."""
    MODEL_PASSES.append(fn.__name__)
    return fn


@dataclass
class ModelShrinkResult:
    original: GenSpec
    minimal: GenSpec
    pipeline: Pipeline  # the minimal pipeline on the minimal model
    outcome: Outcome
    profile: dict[str, dict[str, int]]
    judged: int
    one_minimal: bool


class ModelShrinker:
    """Shrinks the model of one failing pipeline.

    Args:
        judge: judges a pipeline (through the cache); raises UsageError when the pipeline's
            model cannot be built or run in its own framework.
        pipeline: the minimal pipeline, on the model to shrink.
        target: its outcome (the signature to keep).
        max_judged: give up after this many candidates. Defaults to 150.
    """

    def __init__(self, judge: Callable[[Pipeline], Outcome], pipeline: Pipeline, target: Outcome,
                 max_judged: int = 150):
        self.judge = judge
        self.pipeline = pipeline
        self.key = target.key
        self.max_judged = max_judged
        self.judged = 0
        self.stats: dict[str, PassStats] = {}
        self._seen: dict[str, Outcome | None] = {}
        self.steps = [*pipeline.steps, pipeline.runtime]

    def on(self, spec: GenSpec) -> Pipeline:
        """The minimal pipeline on ``spec``."""
        return self.pipeline.replace(model=remember(spec))

    def outcome(self, spec: GenSpec) -> Outcome | None:
        """The pipeline's outcome on ``spec``; None when the pipeline cannot carry it or its
        framework cannot build it."""
        if spec.name not in self._seen:
            out = None
            if carries(spec, self.steps) is None:
                self.judged += 1
                try:
                    out = self.judge(self.on(spec))
                except UsageError:
                    out = None
            self._seen[spec.name] = out
        return self._seen[spec.name]

    def keeps(self, spec: GenSpec) -> bool:
        out = self.outcome(spec)
        return out is not None and out.key == self.key

    def shrink(self, spec: GenSpec, target: Outcome) -> ModelShrinkResult:
        self._seen[spec.name] = target
        current = spec
        self.stats = {name: PassStats() for name in MODEL_PASSES}
        progress = True
        while progress and self.judged < self.max_judged:
            progress = False
            for name in MODEL_PASSES:
                for cand in getattr(self, name)(current):
                    if self.judged >= self.max_judged:
                        break
                    if cand.simplicity() >= current.simplicity():
                        continue
                    self.stats[name].calls += 1
                    if self.keeps(cand):
                        self.stats[name].successes += 1
                        current, progress = cand, True
                        break  # the next pass starts from the simpler model
        out = self.outcome(current)
        assert out is not None
        return ModelShrinkResult(spec, current, self.on(current), out,
                                 {k: {"calls": v.calls, "successes": v.successes}
                                  for k, v in self.stats.items()},
                                 self.judged, self.verify_one_minimal(current))

    def single_changes(self, spec: GenSpec) -> Iterator[GenSpec]:
        """Every model one layer or one attribute away (what 1-minimality is checked on)."""
        yield from self.drop_layer(spec)
        yield from self.reset_attr(spec)

    def verify_one_minimal(self, spec: GenSpec) -> bool:
        """Whether no single dropped layer or reset attribute keeps the divergence."""
        return not any(self.keeps(c) for c in self.single_changes(spec))

    # -- passes, in the order they run --------------------------------------------------------
    @model_pass
    def drop_layer(self, spec: GenSpec) -> Iterator[GenSpec]:
        """Remove one layer (what read its output reads its input), the last first. One new
        model per layer; first, because a layer that is not needed is the commonest excess of
        a drawn model and every later candidate is smaller without it."""
        for j in range(len(spec.layers) - 1, -1, -1):
            try:
                yield spec.drop(j)
            except SpecError:
                continue  # what followed it cannot take its input

    @model_pass
    def reset_attr(self, spec: GenSpec) -> Iterator[GenSpec]:
        """Set one attribute of one layer back to its plainest value (a reference back to the
        layer's own input). One new model per attribute away from plain; after the drops, on
        the fewest layers they left."""
        for j, layer in enumerate(spec.layers):
            attrs = layer.attrs
            for a in KINDS[layer.kind].attrs:
                plain = j if a.ref else a.plain
                if attrs[a.name] == plain:
                    continue
                try:
                    yield spec.replace_layer(j, Layer.make(layer.kind, {**attrs, a.name: plain},
                                                           j, spec.framework))
                except SpecError:
                    continue

    @model_pass
    def shrink_channels(self, spec: GenSpec) -> Iterator[GenSpec]:
        """Lower one layer's channels or features to each smaller value it may take, smallest
        first: where the plainest (smallest) width loses the bug but a narrower one than now
        keeps it. One new model each; cheap, as narrower layers build and run faster."""
        for j, layer in enumerate(spec.layers):
            attrs = layer.attrs
            for a in KINDS[layer.kind].attrs:
                if a.name not in WIDTHS:
                    continue
                for v in sorted(x for x in a.values(spec.framework) if x < attrs[a.name]):
                    try:
                        yield spec.replace_layer(j, Layer.make(layer.kind, {**attrs, a.name: v},
                                                               j, spec.framework))
                    except SpecError:
                        continue

    @model_pass
    def shrink_input(self, spec: GenSpec) -> Iterator[GenSpec]:
        """A smaller input side, smallest first. Last, since every layer's shape changes with
        it: a bug that needs a particular size (a window that no longer fits, a resize that no
        longer rounds) keeps the size the other passes left."""
        for size in SIZES:
            if size < spec.size:
                try:
                    yield spec.with_size(size)
                except SpecError:
                    continue


def shrink_model(judge: Callable[[Pipeline], Outcome], pipeline: Pipeline, target: Outcome,
                 spec: GenSpec) -> ModelShrinkResult:
    """Shrink ``spec``, the model of the 1-minimal ``pipeline`` whose outcome is ``target``."""
    return ModelShrinker(judge, pipeline, target).shrink(spec, target)


def model_record(res: ModelShrinkResult) -> dict[str, Any]:
    """What a finding records of its model's shrinking."""
    return {"layers_before": len(res.original.layers), "layers_after": len(res.minimal.layers),
            "model_before": res.original.name, "model_after": res.minimal.name,
            "model_profile": res.profile, "model_judged": res.judged,
            "model_one_minimal": res.one_minimal}
