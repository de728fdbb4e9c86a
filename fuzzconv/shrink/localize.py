"""Localizing a minimal divergence: the culprit step, a fix hint, the fewest images, flakiness.

**Culprit step.** Every prefix of the minimal pipeline ends in an artifact; completed to something
runnable by the plainest means (the format's default runtime, or a default ``tvm.build`` for a Relax
module), it can be judged against the reference. The source (prefix 0) agrees and the whole
pipeline diverges, so a binary search over prefixes finds the first step whose output diverges in
⌈log2(k+1)⌉ judged probes for k steps; the runtime is the culprit when every step's output agrees
under the plainest runtime but the pipeline's own runtime diverges.

A probe counts as diverging only when it shows the finding's own signature (:func:`shows`): a
label-flip finding is not blamed on a prefix whose plain completion is merely slow, or crashes.
A probe that fails some other way is judged once more from a cold cache; if it still does, the
search stops and the culprit is *uncertain*, with the reason (:class:`Uncertain`): the blame is
never moved silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UsageError
from ..evaluator import Outcome
from ..pipeline import Pipeline, Step, runnable_prefix
from ..registry import Registry

Judge = Callable[[Pipeline], Outcome]


#: Symptoms about the values a pipeline computes (not how fast, nor whether it runs).
VALUE_SYMPTOMS = ("label_flip", "numeric", "nan")


def shows(target: Outcome, out: Outcome) -> bool | None:
    """Whether ``out`` shows ``target``'s signature: True, False (it agrees on what the
    signature is about), or None when it cannot tell (it failed, or diverged another way)."""
    if target.failure is not None:
        return out.key == target.key if out.failure is not None else False
    if out.failure is not None:
        return None
    if target.symptom in VALUE_SYMPTOMS:
        # a slowdown says nothing about values: its values agreed
        value = out.symptom if out.symptom in VALUE_SYMPTOMS else None
        if value is None:
            return False
        return True if value == target.symptom else None
    return out.symptom == target.symptom


class Uncertain(Exception):
    """The culprit search met a probe it could not judge (see the module docstring)."""


@dataclass
class Culprit:
    index: int  # 1-based step index; len(steps)+1 means the runtime
    step: Step
    probes: int  # judged probe pipelines
    fresh: int  # of which not served from the cache

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step.name, "params": self.step.params}


def find_culprit(reg: Registry, p: Pipeline, judge: Judge, source: str,
                 target: Outcome | None = None, retry: Judge | None = None) -> Culprit:
    """Bisect along the chain for the first step whose output shows ``target``'s signature
    (any symptom when no target is given).

    Raises:
        Uncertain: a probe showed neither the signature nor agreement, twice (``retry`` judges
            it the second time).
    """
    probes = fresh = 0
    memo: dict[int, bool] = {0: False, len(p.steps) + 1: True}

    def verdict(out: Outcome) -> bool | None:
        return out.symptom is not None if target is None else shows(target, out)

    def diverges(i: int) -> bool:
        nonlocal probes, fresh
        if i not in memo:
            q = runnable_prefix(reg, p, i, source)
            if q is None:
                memo[i] = False  # cannot be judged alone: let the search move past it
            else:
                out = judge(q)
                probes += 1
                fresh += 1 if out.fresh else 0
                seen = verdict(out)
                if seen is None and retry is not None:
                    out = retry(q)
                    probes += 1
                    fresh += 1 if out.fresh else 0
                    seen = verdict(out)
                if seen is None:
                    why = (f"{out.failure['error_class']} at {out.failure['stage']}"
                           if out.failure else out.symptom)
                    raise Uncertain(f"the first {i} steps completed as {q.label()} showed {why}, "
                                    f"not {target.symptom if target else 'a divergence'}, twice")
                memo[i] = seen
        return memo[i]

    lo, hi = 0, len(p.steps) + 1  # diverges(lo) is False, diverges(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if diverges(mid):
            hi = mid
        else:
            lo = mid
    step = p.steps[hi - 1] if hi <= len(p.steps) else p.runtime
    return Culprit(hi, step, probes, fresh)


def fix_hint(reg: Registry, p: Pipeline, culprit: Step, judge: Judge,
             agreeing: list[tuple[str, Pipeline]], max_tries: int = 3) -> str | None:
    """The nearest configuration that agrees, as one line.

    Prefers a single change the 1-minimality check already saw agree, on the culprit first; else
    tries the culprit's other parameter values (at most ``max_tries`` judged).
    """
    for desc, _c in sorted(agreeing, key=lambda d: not d[0].startswith(culprit.name)):
        return desc
    op = reg.get(culprit.name)
    tries = 0
    elements = list(p.steps)
    idx = next((i for i, s in enumerate(elements) if s == culprit), None)
    for k, choices in sorted(op.choices.items()):
        for v in choices:
            if v == culprit.params.get(k) or tries >= max_tries:
                continue
            new = Step.make(culprit.name, op.canonical_params({**culprit.params, k: v}))
            try:
                if idx is None:
                    q = Pipeline.make(reg, p.model, list(p.steps), new, p.device,
                                      source_format=_source(reg, p))
                else:
                    q = Pipeline.make(reg, p.model, [*elements[:idx], new, *elements[idx + 1:]],
                                      p.runtime, p.device, source_format=_source(reg, p))
            except UsageError:
                continue
            tries += 1
            if judge(q).symptom is None:
                return f"{culprit.name} with {k}={json.dumps(v)} agrees"
    return None


def _source(reg: Registry, p: Pipeline) -> str:
    from ..zoo import get_model

    return get_model(p.model).source


def minimal_inputs(outcome: Outcome, ref_margins: list[float], names: list[str],
                   confirm: Callable[[int], bool], max_tries: int = 3) -> tuple[list[str], int]:
    """The one image that still shows the divergence, chosen for the largest reference margin.

    Returns:
        (the kept image names, how many images flip over the corpus).
    """
    flipped = list((outcome.comparison or {}).get("flipped", []))
    if not flipped:
        return [], 0
    ranked = sorted(flipped, key=lambda i: -ref_margins[i])
    for i in ranked[:max_tries]:
        if confirm(i):
            return [names[i]], len(flipped)
    return [names[i] for i in flipped], len(flipped)
