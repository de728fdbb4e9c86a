"""The hunt: generate pipelines, evaluate them against the reference, record divergences.

Design note — how the search spends its budget
----------------------------------------------
1. **Replay.** Known findings of the model are re-checked first, like Hypothesis's example
   database: those that still diverge become ``confirmed``, the others ``fixed`` with the versions
   that fixed them.
2. **Coverage.** Every operation and every parameter value reachable from the model (an
   :class:`~fuzzconv.strategies.Atom`) is tried once, each as a *single-option variant* of the
   all-defaults pipeline of the shortest chain that can hold it. The default hunt therefore finds
   whatever one exhaustive pass over single-option variants would find. Bases come first, then
   variants, cheapest chains first. A variant whose base agrees and which diverges has its culprit
   by construction: the one option that differs.
3. **Mutation.** The rest of the budget mutates evaluated pipelines chosen by *energy* (fuzzer
   style): pipelines that diverged or came close (large logit difference, near-tie flips) are picked
   more often. Mutations change a parameter, insert, drop or reorder an optional step, swap the
   runtime, copy an option from another pipeline on the same chain (combining options), or draw a
   fresh pipeline from the strategies.

Everything is driven by one seeded :class:`random.Random` whose decisions depend only on the seed
and on evaluation outcomes, so the same seed on the same stack gives the same pipelines and
findings, and ``--resume`` replays the decisions from stored outcomes without re-evaluating.

The budget is held by giving the executor a deadline: a step still running at the deadline is
killed and not recorded, and the hunt stops.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import UsageError
from .evaluator import Evaluator, Outcome
from .campaign import HuntConfig, bucket_of
from .executor import BudgetExhausted, Executor
from .oracle import Thresholds
from .pipeline import Pipeline, Step
from .store import Store
from .shrink import minimize, signature_of
from .strategies import Atom, Space, seeded_chooser
from .versions import stack_versions

PHASES = ("replay", "coverage", "mutate")


@dataclass
class Candidate:
    pipeline: Pipeline
    phase: str
    base: Pipeline | None = None  # the all-defaults pipeline a coverage variant differs from
    atom: Atom | None = None


@dataclass
class HuntResult:
    campaign: str
    evaluations: int
    findings: list[dict[str, Any]]
    elapsed: float
    stopped: str  # budget | max_evals | exhausted | interrupted
    cache_hits: int
    fresh: int
    replayed: dict[str, str] = field(default_factory=dict)


Listener = Callable[[str, dict[str, Any]], None]


class Hunt:
    """One campaign over one model.

    Args:
        executor: evaluates pipelines.
        store: where campaigns, evaluations and findings go.
        config: the hunt's settings.
        corpus: the images.
        listener: called with (event, info) for progress displays.
    """

    def __init__(self, executor: Executor, store: Store, config: HuntConfig, corpus: Any,
                 listener: Listener | None = None,
                 outcomes_many: Callable[[list[Pipeline]], list[Outcome]] | None = None,
                 parallel: int = 1):
        self.ex = executor
        self.store = store
        self.config = config
        self.corpus = corpus
        self.listener = listener or (lambda event, info: None)
        # Parallel evaluation (e.g. Ray): judge rounds of `parallel` pipelines at once.
        self.outcomes_many = outcomes_many
        self.parallel = max(1, parallel)
        self.pending: set[str] = set()
        self.thresholds = Thresholds(**config.thresholds)
        self.space = Space(executor.registry, config.model, config.device, config.max_chain,
                           config.max_optional, config.focus)
        self.rng = random.Random(config.seed)
        self.outcomes: dict[str, Outcome] = {}
        self.findings: dict[str, dict[str, Any]] = {}  # signature -> finding
        self.aliases: dict[str, str] = {}  # provisional signature -> signature after shrinking
        self.known: set[str] = set()  # hashes evaluated in this campaign (resume)
        self.stored: dict[str, dict[str, Any]] = {}
        self.cid = ""
        self.evals = 0
        self.cache_hits = 0
        self.fresh = 0
        self.evaluator = Evaluator(executor, config.model, corpus, self.thresholds)

    # -- the campaign ------------------------------------------------------------------------
    def run(self, resume: str | None = None) -> HuntResult:
        t0 = time.monotonic()
        deadline = t0 + self.config.budget_s
        self.ex.deadline = deadline
        if resume:
            self.cid = resume
            self.store.set_campaign_status(resume, "running")
            self.stored = {e["pipeline_hash"]: e for e in self.store.evaluations(resume)}
            for f in self.store.findings(campaign=resume):
                self.findings[f["signature"]] = f
                self.aliases[f.get("found_as", f["signature"])] = f["signature"]
        else:
            self.cid = self.store.new_campaign(self.config.model, self.config.seed,
                                               self.config.to_dict(), stack_versions())
        self.listener("campaign", {"campaign": self.cid, "budget": self.config.budget_s})
        stopped = "exhausted"
        replayed: dict[str, str] = {}
        try:
            self.listener("stage", {"what": f"reference run of {self.config.model}"})
            self.evaluator.reference  # noqa: B018 - fail early, before any search
            replayed = self._replay()
            candidates = self._candidates()
            while True:
                if self.config.max_evals is not None and self.evals >= self.config.max_evals:
                    stopped = "max_evals"
                    break
                if time.monotonic() >= deadline:
                    stopped = "budget"
                    break
                room = self.parallel if self.config.max_evals is None else min(
                    self.parallel, self.config.max_evals - self.evals)
                batch = self._next_round(candidates, room)
                if not batch:
                    break
                for cand, out in zip(batch, self._outcomes([c.pipeline for c in batch])):
                    self._record(cand, out)
        except BudgetExhausted:
            stopped = "budget"
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            self.ex.deadline = None
            self.store.set_campaign_status(self.cid, "interrupted" if stopped == "interrupted" else "done")
        return HuntResult(self.cid, self.evals, list(self.findings.values()),
                          time.monotonic() - t0, stopped, self.cache_hits, self.fresh, replayed)

    # -- replay ------------------------------------------------------------------------------
    def _replay(self) -> dict[str, str]:
        """Re-check the model's known findings from earlier campaigns."""
        result = {}
        for f in self.store.findings(model=self.config.model):
            if f.get("campaign") == self.cid or f.get("status") == "fixed":
                continue
            try:
                p = Pipeline.from_dict(f.get("minimal_pipeline") or f["pipeline"], self.ex.registry)
            except UsageError:
                continue  # a plugin step that is not loaded in this hunt
            out = self._outcome(p)
            still = out.symptom == f["symptom"]
            status = "confirmed" if still else "fixed"
            extra = {} if still else {"fixed_in": stack_versions()}
            self.store.set_finding_status(f["id"], status, extra)
            result[f["id"]] = status
            self.listener("replay", {"finding": f["id"], "status": status})
        return result

    # -- generation --------------------------------------------------------------------------
    def _next_round(self, candidates: Iterator[Candidate], size: int) -> list[Candidate]:
        """Up to ``size`` candidates to evaluate together (one, unless evaluation is parallel).

        Mutants drawn for one round see the outcomes up to the round's start, so a round of one
        is exactly the sequential search.
        """
        batch: list[Candidate] = []
        self.pending.clear()
        for cand in candidates:
            batch.append(cand)
            self.pending.add(cand.pipeline.hash)
            if len(batch) >= size:
                break
        return batch

    def _candidates(self) -> Iterator[Candidate]:
        for cand in self.coverage_plan():
            yield cand
        while True:
            cand = self._mutant()
            if cand is None:
                return
            yield cand

    def _cost(self, steps: tuple[Step, ...] | list[Step]) -> float:
        """A rough relative cost of running these steps fresh, plus a runtime: compiling costs
        most, converting less, an optional rewrite least."""
        reg = self.ex.registry
        return 1.0 + sum(10.0 if s.name.endswith(".build") else
                         1.0 if reg.get(s.name).optional else 3.0 for s in steps)

    def _fresh_cost(self, variant: Pipeline, base: Pipeline) -> float:
        """What a variant costs once its base is cached: the steps from where they part."""
        i = 0
        while i < min(len(variant.steps), len(base.steps)) and variant.steps[i] == base.steps[i]:
            i += 1
        return self._cost(variant.steps[i:])

    def coverage_plan(self) -> list[Candidate]:
        """Bases, then one single-option variant per atom not yet covered, cheapest first.

        Cheapest first means a variant that reuses most of its base's cached artifacts (a
        runtime option) comes before one that must recompile (a TVM pass), so a short budget
        covers as many options as it can.

        With a focus step, the user wants their step tried against everything else: every
        option is covered once per setting of the focus step (its defaults, then each other
        value of each parameter), and an option that can stand on either side of the focus step
        is covered on both, since a step may only go wrong on what another made (after
        LegalizeOps, say).
        """
        ref_hash = self.ex.reference_pipeline(self.config.model).hash
        groups = [self.space.bases()]
        for setting in self._focus_settings():
            groups.append([b for b in (self._set_focus(b, setting) for b in groups[0])
                           if b is not None])
        plan: list[Candidate] = [Candidate(b, "coverage") for b in
                                 sorted((b for g in groups for b in g),
                                        key=lambda b: self._cost(b.steps))
                                 if b.hash != ref_hash]
        # at equal cost, the focus step's own non-default settings go first: they are what its
        # author is testing (the defaults are usually its harmless no-op)
        variants = [(cost, 1 if g == 0 else 0, c) for g, bases in enumerate(groups)
                    for c, cost in self._single_option_variants(bases)]
        plan += [c for *_, c in sorted(variants, key=lambda v: v[:2])]
        seen: set[str] = set()
        unique = []
        for c in plan:
            if c.pipeline.hash not in seen and c.pipeline.hash != ref_hash:
                seen.add(c.pipeline.hash)
                unique.append(c)
        return unique

    def _single_option_variants(self, bases: list[Pipeline]) -> list[tuple[Candidate, float]]:
        """One variant per atom not yet covered (two around a focus step), with its fresh cost;
        both placements of one option take the cost of the later one, so they stay together."""
        covered = {a for b in bases for a in _atoms_of(b)}
        variants: list[tuple[Candidate, float]] = []
        for atom in self.space.atoms():
            if atom in covered:
                continue
            for base in bases:
                variant = self._variant(base, atom)
                if variant is not None:
                    cost = self._fresh_cost(variant, base)
                    variants.append((Candidate(variant, "coverage", base, atom), cost))
                    covered.update(_atoms_of(variant))
                    early = self._variant(base, atom, before_focus=True)
                    if early is not None and early.hash != variant.hash:
                        variants.append((Candidate(early, "coverage", base, atom), cost))
                    break
        return variants

    def _focus_settings(self) -> list[dict[str, Any]]:
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
            return self._make(steps, Step.make(f.name, f.canonical_params({**base.runtime.params, **setting})))
        for i, st in enumerate(steps):
            if st.name == f.name:
                steps[i] = Step.make(f.name, f.canonical_params({**st.params, **setting}))
                return self._make(steps, base.runtime)
        return None

    def _variant(self, base: Pipeline, atom: Atom, before_focus: bool = False) -> Pipeline | None:
        """``base`` changed in exactly the one way ``atom`` names, or None if it cannot hold it.

        An optional step is inserted at its last possible place, or with ``before_focus`` at the
        last place before the focus step (None when there is none, or no focus).
        """
        op = self.ex.registry.get(atom.op)
        value = json.loads(atom.value_json) if atom.value_json is not None else None
        steps = list(base.steps)
        if op.kind == "runtime":
            if op.src != self.ex.registry.get(base.runtime.name).src:
                return None
            params = op.canonical_params({atom.param: value} if atom.param else {})
            return self._make(steps, Step.make(op.name, params))
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
            return self._make(steps, base.runtime)
        for i, s in enumerate(steps):
            if s.name == op.name:
                params = s.params
                if atom.param:
                    params[atom.param] = value
                steps[i] = Step.make(op.name, op.canonical_params(params))
                return self._make(steps, base.runtime)
        return None

    def _make(self, steps: list[Step], runtime: Step) -> Pipeline | None:
        try:
            return self.space.with_focus(self.space.make(steps, runtime))
        except UsageError:
            return None

    def _mutant(self, tries: int = 200) -> Candidate | None:
        """A pipeline not evaluated yet, mutated from an energetic parent or drawn fresh."""
        choose = seeded_chooser(self.rng)
        pop = sorted(self.outcomes.values(), key=lambda o: o.pipeline.hash)
        for _ in range(tries):
            if not pop or self.rng.random() < 0.2:
                p = self.space.draw(choose)
            else:
                parent = self.rng.choices(pop, weights=[o.energy for o in pop])[0].pipeline
                p = self._mutate(parent, pop)
            if p is None or not self.space.contains_focus(p):
                continue
            if (p.hash not in self.outcomes and p.hash not in self.pending
                    and p.hash != self.ex.reference_pipeline(self.config.model).hash):
                return Candidate(p, "mutate")
        return None

    def _mutate(self, p: Pipeline, pop: list[Outcome]) -> Pipeline | None:
        reg = self.ex.registry
        choose = seeded_chooser(self.rng)
        steps = list(p.steps)
        kind = choose(["param", "param", "insert", "drop", "swap", "runtime", "combine"])
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
        chain = _chain_key(p, reg)
        mates = [o.pipeline for o in pop if _chain_key(o.pipeline, reg) == chain and o.pipeline != p]
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

    # -- evaluation --------------------------------------------------------------------------
    def _outcome(self, p: Pipeline) -> Outcome:
        """Evaluate (or load from this campaign's stored evaluations) and judge one pipeline."""
        stored = self.stored.get(p.hash)
        if stored is not None:
            o = stored["outcome"]
            return Outcome(p, stored["symptom"], o.get("comparison"), o.get("failure"),
                           stored["timings"], 0, stored["cached"] + stored["fresh"])
        return self.evaluator.outcome(p)

    def _outcomes(self, pipelines: list[Pipeline]) -> list[Outcome]:
        """Judge a round: stored outcomes (resume) are reused, the rest evaluated — in parallel
        when the hunt was given ``outcomes_many``."""
        for p in pipelines:
            self.listener("eval", {"pipeline": p.label(), "phase": "evaluate"})
        if self.outcomes_many is None or len(pipelines) == 1:
            return [self._outcome(p) for p in pipelines]
        todo = [p for p in pipelines if p.hash not in self.stored]
        fresh = dict(zip([p.hash for p in todo], self.outcomes_many(todo))) if todo else {}
        return [fresh[p.hash] if p.hash in fresh else self._outcome(p) for p in pipelines]

    def _record(self, cand: Candidate, out: Outcome) -> None:
        p = cand.pipeline
        self.outcomes[p.hash] = out
        self.evals += 1
        self.cache_hits += out.cached
        self.fresh += out.fresh
        if p.hash not in self.stored:
            self.store.add_evaluation(
                self.cid, cand.phase, p.to_dict(), p.hash, out.symptom,
                {"comparison": out.comparison, "failure": out.failure}, out.timings, out.fresh,
                out.cached)
        new = None
        if out.symptom:
            new = self._record_finding(cand, out)
        self.listener("evaluated", {"pipeline": p.label(), "symptom": out.symptom,
                                    "evaluations": self.evals, "findings": len(self.findings),
                                    "cache_hits": self.cache_hits, "fresh": self.fresh,
                                    "new_finding": new})

    # -- findings ----------------------------------------------------------------------------
    def _attribute(self, cand: Candidate, out: Outcome) -> tuple[dict[str, Any] | None, str | None]:
        """The culprit and fix hint this evaluation proves on its own, if any."""
        if out.failure is not None:
            step = out.failure["step"]
            el = next((s for s in (*out.pipeline.steps, out.pipeline.runtime) if s.name == step), None)
            return ({"step": step, "params": el.params if el else {}}, None)
        if cand.base is None or cand.atom is None:
            return None, None
        base = self.outcomes.get(cand.base.hash)
        if base is None or base.symptom is not None:
            return None, None
        op = self.ex.registry.get(cand.atom.op)
        changed = next(s for s in (*out.pipeline.steps, out.pipeline.runtime) if s.name == op.name)
        if op.optional:
            hint = f"dropping {op.name} agrees"
        elif cand.atom.param is not None:
            hint = f"{cand.atom.param}={json.dumps(op.defaults[cand.atom.param])} agrees"
        else:
            hint = f"the all-defaults {cand.base.label()} agrees"
        return {"step": op.name, "params": changed.params}, hint

    def _known(self, signature: str) -> dict[str, Any] | None:
        return self.findings.get(self.aliases.get(signature, signature))

    def _count_hit(self, f: dict[str, Any]) -> None:
        f["hits"] = f.get("hits", 1) + 1
        self.store.upsert_finding(f, self.cid, f["bucket"])

    def _record_finding(self, cand: Candidate, out: Outcome) -> str | None:
        culprit, hint = self._attribute(cand, out)
        provisional = signature_of(out, culprit)
        known = self._known(provisional)
        if known is not None:
            self._count_hit(known)
            return None
        # A mutated pipeline holding an option that is already a finding with the same symptom
        # is most likely that finding again: count it there rather than shrink it anew.
        if culprit is None:
            for f in self.findings.values():
                c = f.get("culprit")
                if c and f["symptom"] == out.symptom and any(
                        s.name == c["step"] and s.params == c["params"]
                        for s in (*out.pipeline.steps, out.pipeline.runtime)):
                    self._count_hit(f)
                    return None
        cmp = out.comparison or {}
        names = list(getattr(self.corpus, "names", getattr(self.corpus, "paths", [])))
        finding: dict[str, Any] = {
            "model": self.config.model,
            "symptom": out.symptom,
            "signature": provisional,
            "flip_rate": cmp.get("flip_rate"),
            "images": len(self.corpus),
            "pipeline": out.pipeline.to_dict(),
            "minimal_pipeline": None,
            "culprit": culprit,
            "failing_inputs": [names[i] for i in cmp.get("flipped", []) if i < len(names)],
            "flipping_images": len(cmp.get("flipped", [])),
            "first_divergent_node": None,
            "fix_hint": hint,
            "evaluations": {"hunt": self.evals, "shrink": 0, "cache_hits": self.cache_hits},
            "flaky": False,
            "versions": stack_versions(),
            "bundle": None,
            "campaign": self.cid,
            "status": "new",
            "hits": 1,
            "comparison": {k: v for k, v in cmp.items() if k not in ("flipped", "tied")} or None,
            "tie_flips": cmp.get("tie_flips", 0),
            "failure": out.failure,
            "phase": cand.phase,
            "found_as": provisional,
        }
        if self.config.shrink:
            self.listener("stage", {"what": f"shrinking {out.pipeline.label()}"})
            try:
                extra = minimize(self.evaluator, out.pipeline,
                                 lambda what: self.listener("stage", {"what": what}),
                                 localize=self.config.localize, judge_many=self.outcomes_many,
                                 parallel=self.parallel)
            except BudgetExhausted:
                self._store_new(finding)  # kept unshrunk; `fuzzconv shrink ID` can finish it
                raise
            # The hunt's own attribution stands when the shrinker could not do better.
            if extra["culprit"] is None:
                extra.pop("culprit")
            finding.update({k: v for k, v in extra.items() if k not in ("shrink_fresh", "shrink_cache_hits")})
            finding["evaluations"]["shrink"] = extra["shrink_fresh"]
            finding["evaluations"]["cache_hits"] += extra["shrink_cache_hits"]
            if finding["fix_hint"] is None:
                finding["fix_hint"] = hint
            known = self._known(finding["signature"])
            if known is not None:
                self.aliases[provisional] = known["signature"]
                self._count_hit(known)
                return None
            self.aliases[provisional] = finding["signature"]
        return self._store_new(finding)

    def _store_new(self, finding: dict[str, Any]) -> str:
        sig = finding["signature"]
        finding["id"] = "F-" + hashlib.sha256(f"{self.cid}|{sig}".encode()).hexdigest()[:8]
        finding["bucket"] = bucket_of(finding)
        self.findings[sig] = finding
        self.store.upsert_finding(finding, self.cid, finding["bucket"])
        return finding["id"]


def _atoms_of(p: Pipeline) -> set[Atom]:
    out = set()
    for s in (*p.steps, p.runtime):
        out.add(Atom(s.name))
        for k, v in s.params.items():
            out.add(Atom(s.name, k, json.dumps(v, sort_keys=True)))
    return out


def _chain_key(p: Pipeline, reg: Any) -> tuple[str, ...]:
    return tuple(s.name for s in p.steps if not reg.get(s.name).optional)
