"""Mutating evaluated pipelines, fuzzer style, once coverage is done.

A parent is chosen by *energy* (:attr:`fuzzconv.evaluator.Outcome.energy`: pipelines that
diverged or came close are picked more often) and changed in one way: a parameter, an inserted,
dropped or reordered optional step, the runtime, an option copied from another pipeline on the
same chain (combining options), or it is replaced by a fresh draw from the strategies. Every
decision comes from one seeded :class:`random.Random`, so the same seed and the same outcomes
give the same mutants.
"""

from __future__ import annotations

import random
from typing import Callable

from .errors import UsageError
from .evaluator import Outcome
from .pipeline import Pipeline, Step
from .strategies import Space, seeded_chooser

KINDS = ["param", "param", "insert", "drop", "swap", "runtime", "combine"]


class Mutator:
    """Draws new pipelines from evaluated ones.

    Args:
        space: the pipelines reachable from the model.
        rng: the hunt's seeded random source.
    """

    def __init__(self, space: Space, rng: random.Random):
        self.space = space
        self.reg = space.registry
        self.rng = rng

    def draw(self, pop: list[Outcome], taken: Callable[[Pipeline], bool],
             tries: int = 200) -> Pipeline | None:
        """A pipeline ``taken`` refuses not, mutated from an energetic parent of ``pop`` (sorted
        by hash) or drawn fresh; None after ``tries`` attempts."""
        choose = seeded_chooser(self.rng)
        for _ in range(tries):
            if not pop or self.rng.random() < 0.2:
                p = self.space.draw(choose)
            else:
                parent = self.rng.choices(pop, weights=[o.energy for o in pop])[0].pipeline
                p = self.mutate(parent, pop)
            if p is None or not self.space.contains_focus(p) or taken(p):
                continue
            return p
        return None

    def mutate(self, p: Pipeline, pop: list[Outcome]) -> Pipeline | None:
        reg = self.reg
        choose = seeded_chooser(self.rng)
        steps = list(p.steps)
        kind = choose(KINDS)
        if kind == "param":
            idx = choose(list(range(len(steps) + 1)))
            el = steps[idx] if idx < len(steps) else p.runtime
            op = reg.get(el.name)
            tunable = [k for k, v in sorted(op.choices.items()) if len(v) > 1]
            if not tunable:
                return None
            k = choose(tunable)
            params = el.params
            params[k] = choose(op.choices[k])
            new = Step.make(el.name, op.canonical_params(params))
            if idx < len(steps):
                steps[idx] = new
                return self._make(steps, p.runtime)
            return self._make(steps, new)
        if kind == "insert":
            fmts = [self.space.source] + [reg.get(s.name).dst for s in steps]
            slots = [i for i, f in enumerate(fmts) if self.space.optionals(f)]  # type: ignore[arg-type]
            if not slots:
                return None
            i = choose(slots)
            op = choose(self.space.optionals(fmts[i]))  # type: ignore[arg-type]
            # an optional step goes after the step that made its format, after other optionals
            pos = i
            while pos < len(steps) and reg.get(steps[pos].name).optional:
                pos += 1
            steps.insert(pos, self.space.draw_params(op, choose))
            return self._make(steps, p.runtime)
        optional = [i for i, s in enumerate(steps) if reg.get(s.name).optional]
        if kind == "drop":
            if not optional:
                return None
            del steps[choose(optional)]
            return self._make(steps, p.runtime)
        if kind == "swap":
            pairs = [i for i in optional if i + 1 in optional]
            if not pairs:
                return None
            i = choose(pairs)
            steps[i], steps[i + 1] = steps[i + 1], steps[i]
            return self._make(steps, p.runtime)
        if kind == "runtime":
            rts = self.space.runtimes(reg.get(p.runtime.name).src)
            return self._make(steps, self.space.draw_params(choose(rts), choose))
        # combine: copy one step or runtime setting from another pipeline with the same chain
        chain = chain_key(p, reg)
        mates = [o.pipeline for o in pop if chain_key(o.pipeline, reg) == chain and o.pipeline != p]
        if not mates:
            return None
        mate = choose(mates)
        if choose([True, False]):
            return self._make(steps, mate.runtime)
        conv = [i for i, s in enumerate(steps) if not reg.get(s.name).optional]
        mate_conv = [s for s in mate.steps if not reg.get(s.name).optional]
        if not conv:
            return None
        j = choose(list(range(len(conv))))
        steps[conv[j]] = mate_conv[j]
        return self._make(steps, p.runtime)

    def _make(self, steps: list[Step], runtime: Step) -> Pipeline | None:
        try:
            return self.space.with_focus(self.space.make(steps, runtime))
        except UsageError:
            return None


def chain_key(p: Pipeline, reg: object) -> tuple[str, ...]:
    return tuple(s.name for s in p.steps if not reg.get(s.name).optional)  # type: ignore[attr-defined]
