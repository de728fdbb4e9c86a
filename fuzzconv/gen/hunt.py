"""What a ``gen:keras`` or ``gen:torch`` hunt judges next: models drawn, and the paths they take.

Design note — drawing models as well as pipelines
--------------------------------------------------
The hunt of a generated family goes model by model. For each, a *round*:

1. **A model.** A fresh draw (with probability :data:`P_NEW`, and always while no model has an
   energy yet), or a mutant of a model that diverged or came close, picked by energy as
   pipelines are (a model's energy is the largest :attr:`~fuzzconv.evaluator.Outcome.energy` of
   its outcomes). Its spec goes into the store, so its name resolves everywhere.
2. **Every path that can carry it.** The all-defaults pipeline of every conversion chain its
   space holds (a chain a limitation of one of its layers names is left out and listed, not
   judged); for a mutant, its parent's most energetic pipelines come first, with the same steps.
3. **A few options.** :data:`VARIANTS_PER_MODEL` single-option variants of those paths, the
   options tried on the fewest models first and, among them, the most expected findings per
   second (risk over measured cost, :mod:`fuzzconv.plan`), so the options rotate across models.
4. **A few pipeline mutants** (:data:`MUTANTS_PER_MODEL`) of the round's energetic outcomes.

A round's candidates are ranked again before every pick and masked for known culprits, as a zoo
hunt's are. Every decision comes from the hunt's seeded random source and from what the store
held when the campaign started, so the same seed gives the same models and pipelines.

A model whose own framework cannot build or run it (which the vocabulary's shape rules should
prevent) is skipped with its reason, never a finding. A divergence is a known finding when the
model holds that finding's trigger (the layers of its minimal model); otherwise it is shrunk
anew: the same converter can go wrong on several layers.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

from ..costs import CostModel, Measurement
from ..errors import UsageError
from ..evaluator import Outcome
from ..mutate import Mutator
from ..plan import P_CHAIN, P_DIVERGED_ELSEWHERE, CacheView, Candidate, History, Planner
from ..strategies import Atom
from ..subjects import ModelContext, best_first, best_mutant, space_of
from .carriers import limits_of, refusal
from .catalog import family_of, lookup, remember
from .draw import draw_spec, mutate, seeded
from .spec import GenSpec

if TYPE_CHECKING:
    from ..strategies import Space

#: :class:`fuzzconv.engine.Hunt` (not imported here: the engine imports this module).
Hunt = Any
#: Chance that a round draws a fresh model rather than mutating an energetic one.
P_NEW = 0.5
#: Single-option variants judged per model, and pipeline mutants.
VARIANTS_PER_MODEL = 2
MUTANTS_PER_MODEL = 2
#: Pipelines of a mutant's parent tried first on it (its most energetic).
PARENT_PIPELINES = 2


class GeneratedSubject:
    """Draws models of one framework and sends them down every path (see the module note)."""

    def __init__(self, hunt: Hunt):
        self.hunt = hunt
        self.family = hunt.config.model
        self.framework = self.family.split(":")[1]
        if hunt.config.focus:  # checked now, before a campaign exists
            hunt.ex.registry.get(hunt.config.focus)
        self.models: list[str] = []
        self.parents: dict[str, str] = {}
        self.energy: dict[str, float] = {}
        self.tried: Counter[Atom] = Counter()  # option → models it was tried on
        self.limited: Counter[str] = Counter()  # limitation → models it kept off a path
        self.skipped: dict[str, str] = {}  # model → why its own framework could not run it
        self.planned = 0
        self.measurements: list[Measurement] = []
        self.history = History()

    # -- the campaign ------------------------------------------------------------------------
    def start(self, resume: bool) -> None:
        """Read what the store knew when the campaign started: costs, options that diverged
        or agreed, and the culprits of the family's unfixed findings (masked from the start)."""
        h = self.hunt
        before = h.store.campaign(h.cid)["started"]
        self.measurements = [Measurement(*row) for row in h.store.costs(before)]
        findings = [f for f in h.store.findings() if f["first_seen"] < before]
        self.history = History.read(h.ex.registry, findings, h.store.evaluated_pipelines(before))
        h.known_culprits = [f["culprit"] for f in findings
                            if family_of(f["model"]) == self.family and f.get("culprit")
                            and f.get("status") != "fixed"]

    def context(self, model: str) -> ModelContext:
        h = self.hunt
        if model not in h.contexts:
            space = space_of(h, model)
            first = min(h.config.probe, len(h.corpus)) or len(h.corpus)
            planner = Planner(space, CostModel(model, self.measurements, h.ex.registry),
                              self.history, first)
            evaluator = h.evaluator_for(model)
            view = CacheView(h.ex.artifact_key,
                             lambda p: h.ex.outputs_key(p, evaluator.probe_corpus))
            planner.cached_steps, planner.output_cached = view.cached_steps, view.output_cached
            h.contexts[model] = ModelContext(model, space, evaluator, planner,
                                             Mutator(space, h.rng), view)
        return h.contexts[model]

    def candidates(self) -> Iterator[Candidate]:
        h = self.hunt
        h.listener("plan", {"coverage": 0})
        h.coverage_done = True  # no coverage phase: each model's findings are finished as found
        while True:
            model = self._next_model()
            if model is None:
                return
            try:
                # a model no path of the hunt's focus can reach, or its own framework cannot
                # run, is skipped with the reason, never the end of the hunt
                ctx = self.context(model)
                ctx.evaluator.reference  # noqa: B018 - builds and calibrates it
            except UsageError as exc:
                self.skipped[model] = str(exc)
                h.listener("stage", {"what": f"skipped {model}: {exc}"})
                continue
            yield from self._round(ctx)

    # -- models ------------------------------------------------------------------------------
    def _next_model(self, tries: int = 50) -> str | None:
        h = self.hunt
        choose = seeded(h.rng)
        for _ in range(tries):
            pop = [m for m in self.models if self.energy.get(m)]
            parent = None
            if pop and h.rng.random() >= P_NEW:
                parent = h.rng.choices(pop, weights=[self.energy[m] for m in pop])[0]
                spec = mutate(lookup(parent), choose)
            else:
                spec = draw_spec(self.framework, choose)
            if spec is None or spec.name in self.models:
                continue
            name = remember(spec)
            h.store.add_generated(name, spec.canonical_json())
            self.models.append(name)
            if parent is not None:
                self.parents[name] = parent
            for _i, lim in limits_of(spec):
                self.limited[f"{' + '.join(lim.steps)} cannot carry {lim.label()}: "
                             f"{lim.reason}"] += 1
            h.listener("stage", {"what": f"model {len(self.models)}: {name} "
                                         f"{spec.label()}" + (f" (from {parent})" if parent else "")})
            return name
        return None

    def _round(self, ctx: ModelContext) -> Iterator[Candidate]:
        h = self.hunt
        ref = h.ex.reference_pipeline(ctx.model)
        pool = [Candidate(b, "coverage", risk=P_CHAIN, why="a conversion path of a new model")
                for b in ctx.space.bases() if b != ref]
        pool = self._from_parent(ctx) + pool
        variants = [c for c in ctx.planner.coverage(exclude={ref.hash}) if c.atom is not None]
        variants.sort(key=lambda c: (self.tried[c.atom], -c.risk, c.pipeline.canonical_json()))
        for c in variants[:VARIANTS_PER_MODEL]:
            self.tried[c.atom] += 1  # type: ignore[index]
            pool.append(c)
        seen: set[str] = set()
        pool = [c for c in pool if not (c.pipeline.hash in seen or seen.add(c.pipeline.hash))]
        self.planned += len(pool) + MUTANTS_PER_MODEL
        yield from best_first(h, ctx, pool)
        for _ in range(MUTANTS_PER_MODEL):
            mine = [o for o in h.outcomes.values() if o.pipeline.model == ctx.model]
            cand = best_mutant(h, ctx, mine)
            if cand is None:
                break
            yield cand

    def _from_parent(self, ctx: ModelContext) -> list[Candidate]:
        """A mutant's parent's most energetic pipelines, with the same steps on the mutant."""
        parent = self.parents.get(ctx.model)
        if parent is None:
            return []
        theirs = sorted((o for o in self.hunt.outcomes.values() if o.pipeline.model == parent),
                        key=lambda o: (-o.energy, o.pipeline.hash))
        out = []
        for o in theirs[:PARENT_PIPELINES]:
            try:
                p = ctx.space.make(list(o.pipeline.steps), o.pipeline.runtime)
            except UsageError:
                continue  # the mutant cannot go that way
            out.append(Candidate(p, "mutate", risk=P_DIVERGED_ELSEWHERE,
                                 why=f"{o.verdict()} on its parent {parent}"))
        return out

    def note(self, cand: Candidate, out: Outcome) -> None:
        m = out.pipeline.model
        self.energy[m] = max(self.energy.get(m, 0.0), out.energy)

    # -- findings ----------------------------------------------------------------------------
    def same_bug(self, finding: dict[str, Any], model: str) -> bool:
        """A known finding explains a divergence of ``model`` when the model holds the
        finding's trigger (its minimal model's layers); without one, only on its own model."""
        trigger = finding.get("trigger")
        if trigger is None:
            return model in (finding["model"], (finding.get("minimal_pipeline") or {}).get("model"))
        return lookup(model).holds(trigger)

    def space_of(self, model: str) -> "Space":
        return self.context(model).space

    def replay_findings(self) -> list[dict[str, Any]]:
        """The family's findings from earlier campaigns, re-checked first."""
        return self.hunt.store.findings(model_prefix=self.family + ":")

    def keep_models(self, finding: dict[str, Any]) -> None:
        """Store the spec of the finding's model and of its minimal model."""
        for name in {finding["model"], (finding.get("minimal_pipeline") or {}).get("model")}:
            if name and family_of(name):
                spec: GenSpec = lookup(name)
                self.hunt.store.add_generated(name, spec.canonical_json())

    def limitation(self, out: Outcome) -> str | None:
        """A converter refusing an operator no limit declares yet (:func:`.carriers.refusal`) is
        a limitation: counted and listed with the others, never a finding."""
        why = refusal(out.failure)
        if why is not None:
            self.limited[why] += 1
        return why

    def limitations(self) -> list[str]:
        """Known limitations met, with how many models each kept off a path; then the models
        their own framework could not run."""
        return ([f"{why} ({n} model{'s' if n > 1 else ''})"
                 for why, n in sorted(self.limited.items())]
                + [f"{m} skipped: {why}" for m, why in sorted(self.skipped.items())])

    def coverage_plan(self) -> list[Candidate]:
        raise UsageError(f"--plan lists the coverage of one model; a {self.family} hunt draws its "
                         f"models as it goes (--model {self.family}:<id> plans one of them)")
