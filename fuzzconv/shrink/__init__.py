"""Turning a divergence into a fileable finding: shrink, localize, minimise inputs, check flakiness.

:func:`minimize` is what the hunt calls on every new divergence and what ``fuzzconv shrink ID``
calls on a stored finding. The pieces live in :mod:`.pipeline` (the shrink passes) and
:mod:`.localize` (culprit, fix hint, minimal inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..evaluator import Evaluator, Outcome
from ..gen.carriers import carries
from ..gen.spec import GenSpec
from ..oracle import margins
from ..pipeline import Pipeline, Step
from ..zoo import get_model
from .localize import Uncertain, find_culprit, fix_hint, minimal_inputs
from .model import model_record, shrink_model
from .nodes import first_divergent_node
from .reduce import reduce_subgraph
from .pipeline import Shrinker, simplicity

__all__ = ["Finishing", "finish", "flakiness", "minimize", "signature_of", "Shrinker",
           "simplicity"]

FLAKY_RERUNS = 3
#: Images the cold re-runs judge: the probe set and up to this many of the flipping images.
FLAKY_IMAGES = 8


def signature_of(out: Outcome, culprit: dict[str, Any] | None) -> str:
    """``symptom:step[:params]``, or ``crash:step:ErrorClass`` — what buckets and dedup key on."""
    if out.failure is not None:
        return f"{out.symptom}:{out.failure['step']}:{out.failure['error_class']}"
    if culprit is None:
        return f"{out.symptom}:{out.pipeline.label()}"
    params = Step.make(culprit["step"], culprit["params"]).label()[len(culprit["step"]):]
    return f"{out.symptom}:{culprit['step']}" + (f":{params[1:-1]}" if params else "")


def minimize(evaluator: Evaluator, pipeline: Pipeline,
             say: Callable[[str], None] = lambda s: None, localize: bool = True,
             judge_many: Callable[[list[Pipeline]], list[Outcome]] | None = None,
             parallel: int = 1, target: Outcome | None = None,
             known_culprit: dict[str, Any] | None = None,
             finish_now: bool = True,
             evaluator_for: Callable[[str], Evaluator] | None = None) -> dict[str, Any]:
    """Shrink ``pipeline`` (which must diverge) and localize what it shows.

    A generated model is shrunk too, once the pipeline is 1-minimal (:mod:`.model`); the
    culprit, inputs and node are then localized on the minimal model, and the signature ends
    with the minimal model's layers (``@resize(mode=bicubic)``), which tell its bugs apart.

    Args:
        target: ``pipeline``'s outcome when the caller has it (else it is judged).
        known_culprit: the culprit the caller proved already (a coverage variant against its
            agreeing base); it stands when the culprit search here is uncertain.
        finish_now: also reduce the model and re-run the minimal case cold here
            (:func:`finish`); a caller that wants the finding out sooner passes False, gets a
            ``finishing`` entry (a :class:`Finishing`) and calls :func:`finish` when it can.
        evaluator_for: the evaluator of another model (a shrunk generated model), set up as
            ``evaluator`` is; by default one is made per model.

    Returns the finding fields this adds: ``minimal_pipeline``, ``culprit`` (None with
    ``culprit_uncertain`` when the search could not tell), ``fix_hint``, ``failing_inputs``,
    ``flipping_images``, ``signature``, ``flaky`` (+ ``flaky_spread``), ``shrink`` (profile,
    1-minimality) and the evaluation counts; with ``localize`` also the first divergent node
    (``first_divergent_node``, ``node_errors``) and the reduced ONNX subgraph
    (``reduced_model``), which need real frameworks.
    """
    ex = evaluator.ex
    reg = ex.registry
    source = get_model(pipeline.model).source
    fresh0, hits0 = _counts(ex)
    if target is None:
        target = evaluator.outcome(pipeline)
    slow = target.symptom == "slowdown"

    def judge(p: Pipeline) -> Outcome:
        return evaluator.outcome(p, eager_slowdown=slow)

    generated = get_model(pipeline.model).generated
    gen = GenSpec.from_dict(generated, pipeline.model) if generated else None
    say("shrinking")
    shrinker = Shrinker(reg, judge, source, judge_many=None if slow else judge_many,
                        parallel=parallel, carries=lambda held: carries(gen, held) is None)
    shrinker.seed(pipeline, target)
    res = shrinker.shrink(pipeline)
    out, minimal, agreeing, one_min = res.outcome, res.minimal, res.agreeing_neighbours, \
        res.one_minimal
    model_shrink: dict[str, Any] = {}
    extra_model: dict[str, Any] = {}
    if gen is not None:
        say("shrinking the model")
        others = evaluator_for or _evaluators(evaluator)
        ms = shrink_model(lambda q: others(q.model).outcome(q, eager_slowdown=slow), minimal,
                          out, gen)
        model_shrink = model_record(ms)
        if ms.minimal != gen:
            minimal, out, evaluator = ms.pipeline, ms.outcome, others(ms.pipeline.model)
            # the pipeline is checked 1-minimal again, on the minimal model (judge now uses it)
            one_min, agreeing = Shrinker(reg, judge, source).verify_one_minimal(minimal, out.key)
        extra_model = {"minimal_model": minimal.model, "minimal_model_spec": ms.minimal.to_dict(),
                       "minimal_model_layers": ms.minimal.label(),
                       "trigger": ms.minimal.trigger()}
    elements = (*minimal.steps, minimal.runtime)
    uncertain = None
    probes = 0
    if out.failure is not None:
        # "step N name" or "runtime name": the failing stage is the culprit
        stage = out.failure["stage"].split()
        culprit_index = int(stage[1]) if stage[0] == "step" else len(elements)
        step = elements[culprit_index - 1]
        culprit: dict[str, Any] | None = {"step": step.name, "params": step.params}
    elif slow:
        # the optimisation the minimal pipeline still holds is what made it slower
        culprit_index = next((i + 1 for i, s in enumerate(elements)
                              if reg.get(s.name).optional or s.params != reg.get(
                                  s.name).unoptimized_params(s.params)), len(elements))
        step = elements[culprit_index - 1]
        culprit = {"step": step.name, "params": step.params}
    else:
        say("bisecting for the culprit step")
        try:
            c = find_culprit(reg, minimal, judge, source, target=out,
                             retry=lambda q: evaluator.outcome(q, cold=True))
            culprit, step, probes, culprit_index = c.to_dict(), c.step, c.probes, c.index
        except Uncertain as exc:
            uncertain = str(exc)
            culprit = known_culprit
            step = next((s for s in elements if culprit and s.name == culprit["step"]),
                        elements[-1])
            culprit_index = elements.index(step) + 1
    hint = fix_hint(reg, minimal, step, judge, agreeing)

    failing: list[str] = []
    flipping = 0
    names = list(evaluator.corpus.names)
    if out.comparison is not None and out.symptom != "slowdown":
        say("minimising inputs")
        ref = evaluator.reference.logits
        assert ref is not None

        def confirm(i: int) -> bool:
            return evaluator.outcome_on(minimal, [i]).key == out.key

        failing, flipping = minimal_inputs(out, list(margins(ref)), names, confirm)

    nodes: dict[str, Any] = {}
    picked = [names.index(n) for n in failing if n in names][:4] or [0]
    if localize and not slow:
        say("localizing inside the model")
        nodes = (first_divergent_node(ex, minimal, culprit_index,
                                      evaluator.corpus.subset(picked), evaluator.thresholds)
                 if out.failure is None else
                 {"node": None, "reason": "the culprit failed: there are no outputs to compare"})
    finishing = Finishing(minimal, out, culprit_index, picked, localize and not slow)
    later = {} if finish_now else {"finishing": finishing, "pending": finishing.pending()}
    fresh1, hits1 = _counts(ex)
    extra = {
        "minimal_pipeline": minimal.to_dict(),
        "culprit": culprit,
        "culprit_uncertain": uncertain,
        "fix_hint": hint,
        "failing_inputs": failing,
        "flipping_images": flipping,
        "signature": signature_of(out, culprit) + (
            f"@{extra_model['minimal_model_layers']}" if extra_model else ""),
        "flaky": False,
        "flaky_spread": None,
        "first_divergent_node": nodes.get("node"),
        "node_errors": nodes.get("path", []),
        "node_localization": {k: v for k, v in nodes.items() if k != "path"} or None,
        "reduced_model": None,
        "reduced_model_reason": None,
        "slowdown": out.slowdown if slow else None,
        "shrink": {"profile": res.profile, "one_minimal": one_min, "judged": res.judged,
                   "culprit_probes": probes, "node_probes": nodes.get("probes", 0),
                   "reduce_evaluations": 0, "steps_before": len(pipeline.steps),
                   "steps_after": len(minimal.steps), **model_shrink},
        "shrink_fresh": fresh1 - fresh0,
        "shrink_cache_hits": hits1 - hits0,
        **extra_model,
        **later,
    }
    if finish_now:
        extra.update(finish(evaluator, finishing, extra["shrink"], say))
    return extra


@dataclass
class Finishing:
    """What is left to do for a minimized finding: the reduced model and the cold re-runs.

    Attributes:
        minimal: the minimal pipeline; outcome: its outcome; culprit_index: 1-based, past the
        last step for the runtime; images: the corpus indices the reduction may use; reduce:
        whether the model is to be reduced (it needs real frameworks).
    """

    minimal: Pipeline
    outcome: Outcome
    culprit_index: int
    images: list[int]
    reduce: bool = True

    def pending(self) -> list[str]:
        return (["reduced model"] if self.reduce else []) + ["cold re-runs"]


def finish(evaluator: Evaluator, f: Finishing, shrink: dict[str, Any],
           say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Reduce the model (:func:`~.reduce.reduce_subgraph`) and judge flakiness
    (:func:`flakiness`) for a minimized finding; returns the finding fields this sets
    (``shrink`` is the finding's shrink record, updated in place)."""
    ex = evaluator.ex
    reduced: dict[str, Any] = {}
    if f.reduce:
        say("reducing the model")
        reduced = reduce_subgraph(ex, f.minimal, f.culprit_index, evaluator.corpus.subset(f.images),
                                  ex.store_dir / "reduced" / f.minimal.hash, evaluator.thresholds)
    say("re-running the minimal case cold")
    flaky, spread = flakiness(evaluator, f.minimal, f.outcome, f.culprit_index)
    shrink["reduce_evaluations"] = reduced.get("evaluations") or 0
    return {"reduced_model": reduced if reduced.get("path") else None,
            "reduced_model_reason": reduced.get("reason"), "flaky": flaky,
            "flaky_spread": spread, "pending": [], "shrink": shrink}


def flakiness(evaluator: Evaluator, minimal: Pipeline, out: Outcome,
              culprit_index: int = 1) -> tuple[bool, dict[str, Any]]:
    """Re-run the minimal case cold :data:`FLAKY_RERUNS` times on the probe set and some of its
    flipping images: it is flaky when the symptom or the set of flipping images changes.

    Each re-run rebuilds from the culprit (``culprit_index``, 1-based; past the last step: the
    runtime) and takes the artifacts before it from the cache, and judges a few images: that
    keeps a cold re-run of a large model affordable. The images are those most likely to change
    (the most fragile ones and those that flipped).
    """
    flipped = list((out.comparison or {}).get("flipped", []))
    picked = sorted(set(evaluator.probe_indices) | set(flipped[:FLAKY_IMAGES])) or list(
        range(min(FLAKY_IMAGES, len(evaluator.corpus))))
    cold = max(1, min(culprit_index, len(minimal.steps) + 1))
    reruns = [evaluator.outcome_on(minimal, picked, cold=cold) for _ in range(FLAKY_RERUNS)]
    keys = {r.key for r in reruns} | {out.key}
    seen = set(picked)
    sets = {tuple(sorted(r.comparison.get("flipped", []))) for r in reruns if r.comparison}
    if out.comparison is not None:
        sets.add(tuple(sorted(i for i in flipped if i in seen)))
    rates = [r.comparison["flip_rate"] for r in reruns if r.comparison]
    flaky = len(keys) > 1 or len(sets) > 1
    return flaky, {"symptoms": sorted(str(k[0]) for k in keys), "flip_rates": rates,
                   "flipped_sets": len(sets), "images": len(picked)}


def _evaluators(first: Evaluator) -> Callable[[str], Evaluator]:
    """Evaluators of other models, made once each, set up as ``first`` is."""
    made = {first.model: first}

    def get(model: str) -> Evaluator:
        if model not in made:
            made[model] = Evaluator(first.ex, model, first.corpus, first.thresholds,
                                    probe_size=first.probe_size, slowdown_vs=first.slowdown_vs)
        return made[model]

    return get


def _counts(ex: Any) -> tuple[int, int]:
    cache = getattr(ex, "cache", None)
    fresh = getattr(ex, "fresh_evaluations", 0)
    return fresh, (cache.hits if cache is not None else 0)

