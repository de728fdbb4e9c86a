"""Turning a divergence into a fileable finding: shrink, localize, minimise inputs, check flakiness.

:func:`minimize` is what the hunt calls on every new divergence and what ``fuzzconv shrink ID``
calls on a stored finding. The pieces live in :mod:`.pipeline` (the shrink passes) and
:mod:`.localize` (culprit, fix hint, minimal inputs).
"""

from __future__ import annotations

from typing import Any, Callable

from ..evaluator import Evaluator, Outcome
from ..oracle import margins
from ..pipeline import Pipeline, _short
from ..zoo import get_model
from .localize import find_culprit, fix_hint, minimal_inputs
from .nodes import first_divergent_node
from .reduce import reduce_subgraph
from .pipeline import Shrinker, simplicity

__all__ = ["minimize", "signature_of", "Shrinker", "simplicity"]

FLAKY_RERUNS = 3


def signature_of(out: Outcome, culprit: dict[str, Any] | None) -> str:
    """``symptom:step[:params]``, or ``crash:step:ErrorClass`` — what buckets and dedup key on."""
    if out.failure is not None:
        return f"{out.symptom}:{out.failure['step']}:{out.failure['error_class']}"
    if culprit is None:
        return f"{out.symptom}:{out.pipeline.label()}"
    params = ",".join(f"{k}={_short(v)}" for k, v in sorted(culprit["params"].items()))
    return f"{out.symptom}:{culprit['step']}" + (f":{params}" if params else "")


def minimize(evaluator: Evaluator, pipeline: Pipeline,
             say: Callable[[str], None] = lambda s: None, localize: bool = True,
             judge_many: Callable[[list[Pipeline]], list[Outcome]] | None = None,
             parallel: int = 1) -> dict[str, Any]:
    """Shrink ``pipeline`` (which must diverge) and localize what it shows.

    Returns the finding fields this adds: ``minimal_pipeline``, ``culprit``, ``fix_hint``,
    ``failing_inputs``, ``flipping_images``, ``signature``, ``flaky`` (+ ``flaky_spread``),
    ``shrink`` (profile, 1-minimality) and the evaluation counts; with ``localize`` also the
    first divergent node (``first_divergent_node``, ``node_errors``) and the reduced ONNX
    subgraph (``reduced_model``), which need real frameworks.
    """
    ex = evaluator.ex
    reg = ex.registry
    source = get_model(pipeline.model).source
    fresh0, hits0 = _counts(ex)
    say("shrinking")
    shrinker = Shrinker(reg, evaluator.outcome, source, judge_many=judge_many, parallel=parallel)
    res = shrinker.shrink(pipeline)
    out = res.outcome
    elements = (*res.minimal.steps, res.minimal.runtime)
    if out.failure is not None:
        # "step N name" or "runtime name": the failing stage is the culprit
        stage = out.failure["stage"].split()
        culprit_index = int(stage[1]) if stage[0] == "step" else len(elements)
        step = elements[culprit_index - 1]
        culprit = {"step": step.name, "params": step.params}
        probes = 0
    else:
        say("bisecting for the culprit step")
        c = find_culprit(reg, res.minimal, evaluator.outcome, source)
        culprit, step, probes, culprit_index = c.to_dict(), c.step, c.probes, c.index
    hint = fix_hint(reg, res.minimal, step, evaluator.outcome, res.agreeing_neighbours)

    failing: list[str] = []
    flipping = 0
    if out.comparison is not None:
        say("minimising inputs")
        ref = evaluator.reference.logits
        assert ref is not None
        names = list(getattr(evaluator.corpus, "names", getattr(evaluator.corpus, "paths", [])))

        def confirm(i: int) -> bool:
            one = Evaluator(ex, pipeline.model, evaluator.corpus.subset([i]), evaluator.thresholds)
            return one.outcome(res.minimal).key == out.key

        failing, flipping = minimal_inputs(out, list(margins(ref)), names, confirm)

    nodes: dict[str, Any] = {}
    reduced: dict[str, Any] = {}
    if localize:
        say("localizing inside the model")
        names = list(getattr(evaluator.corpus, "names", []))
        picked = [names.index(n) for n in failing if n in names][:4] or [0]
        few = evaluator.corpus.subset(picked)
        nodes = (first_divergent_node(ex, res.minimal, culprit_index, few, evaluator.thresholds)
                 if out.failure is None else
                 {"node": None, "reason": "the culprit failed: there are no outputs to compare"})
        reduced = reduce_subgraph(ex, res.minimal, culprit_index, few,
                                  ex.store_dir / "reduced" / res.minimal.hash, evaluator.thresholds)

    say("re-running the minimal case cold")
    reruns = [evaluator.outcome(res.minimal, cold=True) for _ in range(FLAKY_RERUNS)]
    rates = [r.comparison["flip_rate"] if r.comparison else None for r in reruns]
    keys = {r.key for r in reruns} | {out.key}
    # the outcome varies when the symptom, the flip rate or which images flip does: a fault that
    # flips nearly everything flips as many images on every run, but not the same ones
    flipped = {tuple(sorted(r.comparison.get("flipped", []))) for r in (out, *reruns)
               if r.comparison}
    flaky = len(keys) > 1 or len({x for x in rates if x is not None} | (
        {out.comparison["flip_rate"]} if out.comparison else set())) > 1 or len(flipped) > 1
    fresh1, hits1 = _counts(ex)
    return {
        "minimal_pipeline": res.minimal.to_dict(),
        "culprit": culprit,
        "fix_hint": hint,
        "failing_inputs": failing,
        "flipping_images": flipping,
        "signature": signature_of(out, culprit),
        "flaky": flaky,
        "flaky_spread": {"symptoms": sorted(str(k[0]) for k in keys),
                         "flip_rates": [x for x in rates if x is not None],
                         "flipped_sets": len(flipped)},
        "first_divergent_node": nodes.get("node"),
        "node_errors": nodes.get("path", []),
        "node_localization": {k: v for k, v in nodes.items() if k != "path"} or None,
        "reduced_model": reduced if reduced.get("path") else None,
        "reduced_model_reason": reduced.get("reason"),
        "shrink": {"profile": res.profile, "one_minimal": res.one_minimal, "judged": res.judged,
                   "culprit_probes": probes, "node_probes": nodes.get("probes", 0),
                   "reduce_evaluations": reduced.get("evaluations") or 0,
                   "steps_before": len(pipeline.steps), "steps_after": len(res.minimal.steps)},
        "shrink_fresh": fresh1 - fresh0,
        "shrink_cache_hits": hits1 - hits0,
    }


def _counts(ex: Any) -> tuple[int, int]:
    cache = getattr(ex, "cache", None)
    fresh = getattr(ex, "fresh_evaluations", 0)
    return fresh, (cache.hits if cache is not None else 0)

