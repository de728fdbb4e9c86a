"""What a hunt judges pipelines of: one zoo model, or a stream of generated ones.

A :class:`ModelContext` is what the hunt knows of one model: its space of pipelines (which leaves
out what cannot carry a generated model), its evaluator (reference and probe set), its planner
(risk and measured cost) and the cache as the planner sees it. The hunt keeps one per model it
has met.

A *subject* is where the hunt's candidates come from. :class:`ZooSubject` is the hunt of one zoo
model: coverage of every option, then mutation (:mod:`fuzzconv.engine` explains both);
:class:`fuzzconv.gen.hunt.GeneratedSubject` draws models as well as pipelines. Both answer the
same questions: ``start`` (before the search), ``candidates`` (the search), ``note`` (an outcome
came back), ``same_bug`` (whether a known finding explains a divergence on this model),
``replay_findings`` (what a new campaign re-checks first), ``limitations`` (what could not be
carried), ``keep_models`` (store what a finding's models need).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .evaluator import Evaluator, Outcome
from .mutate import Mutator
from .plan import CacheView, Candidate, Planner, planner_from_store
from .strategies import Space

#: :class:`fuzzconv.engine.Hunt` (not imported here: the engine imports this module).
Hunt = Any
#: Mutants drawn per pick in the mutation phase; the best by expected findings per second runs.
MUTANTS_PER_PICK = 6


@dataclass
class ModelContext:
    """What a hunt knows of one model (see the module docstring)."""

    model: str
    space: Space
    evaluator: Evaluator
    planner: Planner
    mutator: Mutator
    view: CacheView | None = None
    coverage: list[Candidate] = field(default_factory=list)

    def note(self, p: Any, failed_step: int | None) -> None:
        if self.view is not None:
            self.view.note(p, failed_step)


def space_of(hunt: Hunt, model: str) -> Space:
    cfg = hunt.config
    return Space(hunt.ex.registry, model, cfg.device, cfg.max_chain, cfg.max_optional, cfg.focus)


class ZooSubject:
    """The hunt of one zoo model: coverage of every option, then mutation."""

    def __init__(self, hunt: Hunt):
        self.hunt = hunt
        self.model = hunt.config.model
        # made now: a model, focus or device that does not fit fails before a campaign exists
        self.space = space_of(hunt, self.model)

    def context(self, before: float | None = None) -> ModelContext:
        """The model's context, with what the store knew ``before`` a time (the campaign's
        start); also reads the culprits of the model's unfixed findings from then."""
        h = self.hunt
        space = self.space
        first = min(h.config.probe, len(h.corpus)) or len(h.corpus)
        planner, h.known_culprits = planner_from_store(h.store, space, first, before)
        return ModelContext(self.model, space, h.evaluator_for(self.model), planner,
                            Mutator(space, h.rng))

    def start(self, resume: bool) -> None:
        """The reference run (fail early, before any search), then the coverage plan."""
        h = self.hunt
        h.listener("stage", {"what": f"reference run of {self.model}"})
        h.evaluator_for(self.model).reference  # noqa: B018
        ctx = h.contexts[self.model] = self.context(h.store.campaign(h.cid)["started"])
        self.plan(ctx, resume)

    def plan(self, ctx: ModelContext, resume: bool) -> None:
        """The coverage candidates, and the cache as the planner sees it: what was cached when
        the campaign started (recorded, so ``--resume`` takes the same decisions)."""
        h = self.hunt
        ref = h.ex.reference_pipeline(self.model).hash
        ctx.coverage = ctx.planner.coverage(exclude={ref})
        ctx.view = CacheView.at_start(h.ex, h.store, h.cid, resume, self.first_images(ctx),
                                      [c.pipeline for c in ctx.coverage])
        ctx.planner.cached_steps = ctx.view.cached_steps
        ctx.planner.output_cached = ctx.view.output_cached

    def first_images(self, ctx: ModelContext) -> Any:
        """The images a pipeline is first judged on: the probe set, once the reference is known
        (before, for ``--plan``, the first images stand in for it)."""
        if ctx.evaluator.has_reference:
            return ctx.evaluator.probe_corpus
        n = min(self.hunt.config.probe, len(self.hunt.corpus)) or len(self.hunt.corpus)
        return self.hunt.corpus.subset(list(range(n)))

    def coverage_plan(self) -> list[Candidate]:
        """The coverage candidates in the order the hunt would take them now (nothing is run)."""
        h = self.hunt
        ctx = h.contexts.get(self.model)
        if ctx is None:
            ctx = h.contexts[self.model] = self.context()
            self.plan(ctx, False)
        return ctx.planner.rank(list(ctx.coverage))

    @property
    def planned(self) -> int:
        ctx = self.hunt.contexts.get(self.model)
        return len(ctx.coverage) if ctx else 0

    def candidates(self) -> Iterator[Candidate]:
        h = self.hunt
        ctx = h.contexts[self.model]
        h.listener("plan", {"coverage": len(ctx.coverage)})
        yield from best_first(h, ctx, list(ctx.coverage))
        h.coverage_done = True
        while True:
            cand = best_mutant(h, ctx, list(h.outcomes.values()))
            if cand is None:
                return
            yield cand

    def note(self, cand: Candidate, out: Outcome) -> None:
        """An outcome came back (the zoo hunt keeps nothing of its own)."""

    def same_bug(self, finding: dict[str, Any], model: str) -> bool:
        """Whether a known finding explains a divergence of ``model`` (one model: always)."""
        return True

    def space_of(self, model: str) -> Space:
        return self.hunt.contexts[model].space

    def replay_findings(self) -> list[dict[str, Any]]:
        """The findings a new campaign re-checks first: those of its model."""
        return self.hunt.store.findings(model=self.model)

    def limitations(self) -> list[str]:
        """Known limitations the hunt met (a zoo model has none)."""
        return []

    def limitation(self, out: Outcome) -> str | None:
        """Why an outcome is a known limitation rather than a finding (a zoo model: never)."""
        return None

    def keep_models(self, finding: dict[str, Any]) -> None:
        """Store what a finding's models need to be rebuilt (a zoo model needs nothing)."""


def best_first(hunt: Hunt, ctx: ModelContext, pool: list[Candidate]) -> Iterator[Candidate]:
    """``pool`` best first by expected findings per second, ranked again before every pick (as
    the cache fills, costs fall), known culprits masked, what was judged skipped."""
    while pool:
        ranked = ctx.planner.rank(pool, hunt.seconds_left())
        if not ranked:
            break  # what is left cannot finish in the time left
        best = ranked[0]
        pool.remove(best)
        cand = hunt.masked(best)
        if cand is None or hunt.taken(cand.pipeline):
            continue
        yield cand


def best_mutant(hunt: Hunt, ctx: ModelContext, outcomes: list[Outcome]) -> Candidate | None:
    """The best of a few mutants of ``outcomes``' pipelines (energetic ones more often), by
    expected findings per second."""
    pop = sorted(outcomes, key=lambda o: o.pipeline.hash)
    drawn: list[Candidate] = []
    for _ in range(MUTANTS_PER_PICK * 10):  # masking a known bug may lead back to a judged one
        p = ctx.mutator.draw(pop, lambda q: hunt.taken(q) or any(
            c.pipeline.hash == q.hash for c in drawn))
        if p is None:
            break
        risk, why = ctx.planner.pipeline_risk(p)
        cand = hunt.masked(Candidate(p, "mutate", risk=risk, why=why))
        if cand is not None and all(c.pipeline.hash != cand.pipeline.hash for c in drawn):
            drawn.append(cand)
            if len(drawn) >= MUTANTS_PER_PICK:
                break
    ranked = ctx.planner.rank(drawn, hunt.seconds_left())
    return ranked[0] if ranked else None
