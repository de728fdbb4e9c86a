"""The hunt: generate pipelines, evaluate them against the reference, record divergences.

Design note — how the search spends its budget
----------------------------------------------
1. **Replay.** Known findings of the model are re-checked first, like Hypothesis's example
   database: those that still diverge become ``confirmed``, the others ``fixed`` with the versions
   that fixed them.
2. **Coverage.** Every operation and every parameter value reachable from the model is tried once,
   as a single-option variant of the all-defaults pipeline of the shortest chain that can hold it.
   The order is expected findings per second: risk over measured cost, recomputed before every
   pick as the cache fills (:mod:`fuzzconv.plan`). A variant that diverges has its culprit by
   construction once its base is known to agree (the base is judged then if it was not yet).
3. **Mutation.** The rest of the budget mutates evaluated pipelines chosen by energy
   (:mod:`fuzzconv.mutate`); of a few mutants drawn at a time, the one with the most expected
   findings per second goes first.

Every pipeline is judged on the probe set of fragile images first and on the whole corpus only
when the probe calls for it (:mod:`fuzzconv.evaluator`). Known culprits are reset in every later
candidate (:func:`fuzzconv.plan.mask`), so a known bug does not eat the budget.

Everything is driven by one seeded :class:`random.Random` and by measurements made before the
campaign started, so the same seed on the same stack and store gives the same pipelines and
findings, and ``--resume`` replays the decisions from stored outcomes without re-evaluating.

The budget is held by giving the executor a deadline: a step still running at the deadline is
killed and not recorded, and the hunt stops.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any, Callable, Iterator

from .campaign import HuntConfig, HuntResult, bucket_of, new_finding
from .errors import UsageError
from .evaluator import Evaluator, Outcome
from .executor import BudgetExhausted, Executor
from .gen.catalog import family_of
from .gen.hunt import GeneratedSubject
from .oracle import Thresholds
from .pipeline import Pipeline
from .plan import Candidate, mask
from .shrink import finish, minimize, signature_of
from .store import Store
from .subjects import ModelContext, ZooSubject
from .versions import stack_versions

PHASES = ("replay", "coverage", "mutate")
#: The last share of a hunt's budget goes to finishing its findings (see :meth:`Hunt._finish`).
FINISH_SHARE = 0.25


Listener = Callable[[str, dict[str, Any]], None]


class Hunt:
    """One campaign over one model, or over the models a generated family draws.

    Args:
        executor: evaluates pipelines.
        store: where campaigns, evaluations and findings go.
        config: the hunt's settings (``model`` a zoo model, or ``gen:keras`` / ``gen:torch``).
        corpus: the images.
        listener: called with (event, info) for progress displays.
        outcomes_many: judges a round of pipelines at once (e.g. on Ray).
        parallel: pipelines per round with ``outcomes_many``.
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
        self.rng = random.Random(config.seed)
        self.outcomes: dict[str, Outcome] = {}
        self.findings: dict[str, dict[str, Any]] = {}  # signature -> finding
        # provisional signature -> signatures after shrinking (a generated family's divergence
        # of one pipeline can be several bugs, told apart by the layers that trigger them)
        self.aliases: dict[str, list[str]] = {}
        # signatures found (or, on --resume, found again) so far in this run's sequence: their
        # culprits are masked from then on, exactly as in the run that first found them
        self.active: set[str] = set()
        self.stored: dict[str, dict[str, Any]] = {}
        self.known_culprits: list[dict[str, Any]] = []  # from earlier campaigns
        self.unfinished: list[tuple[str, Any]] = []  # (signature, Finishing) of minimized findings
        self.cid = ""
        self.evals = 0
        self.cache_hits = 0
        self.fresh = 0
        self.probe_only = 0
        self.escalated = 0
        self.masked_count = 0
        self.covered = 0
        self.deadline: float | None = None
        self.evaluators: dict[str, Evaluator] = {}
        self.contexts: dict[str, ModelContext] = {}
        self.subject: ZooSubject | GeneratedSubject = (
            GeneratedSubject(self) if family_of(config.model) == config.model else ZooSubject(self))
        self.coverage_done = False  # findings are finished from then on

    # -- the campaign ------------------------------------------------------------------------
    def run(self, resume: str | None = None) -> HuntResult:
        t0 = time.monotonic()
        self.deadline = t0 + self.config.budget_s
        self.ex.deadline = self.deadline
        if resume:
            self.cid = resume
            self.store.set_campaign_status(resume, "running")
            self.stored = {e["pipeline_hash"]: e for e in self.store.evaluations(resume)}
            for f in self.store.findings(campaign=resume):
                self.findings[f["signature"]] = f
                self._alias(f.get("found_as", f["signature"]), f["signature"])
        else:
            self.cid = self.store.new_campaign(self.config.model, self.config.seed,
                                               self.config.to_dict(), stack_versions())
        self.listener("campaign", {"campaign": self.cid, "budget": self.config.budget_s})
        stopped = "exhausted"
        replayed: dict[str, str] = {}
        try:
            self.subject.start(resume is not None)
            replayed = self._replay()
            candidates = self.subject.candidates()
            while True:
                if self.config.max_evals is not None and self.evals >= self.config.max_evals:
                    stopped = "max_evals"
                    break
                if time.monotonic() >= self.deadline:
                    stopped = "budget"
                    break
                if self._finishing_time():
                    self._finish()
                    continue
                room = self.parallel if self.config.max_evals is None else min(
                    self.parallel, self.config.max_evals - self.evals)
                batch = self._next_round(candidates, room)
                if not batch:
                    break
                for cand, out in zip(batch, self._outcomes(batch)):
                    self._record(cand, out)
            while self.unfinished:
                self._finish()
        except BudgetExhausted:
            stopped = "budget"
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            self.ex.deadline = None
            self.store.set_campaign_status(self.cid, "interrupted" if stopped == "interrupted" else "done")
        return HuntResult(self.cid, self.evals, list(self.findings.values()),
                          time.monotonic() - t0, stopped, self.cache_hits, self.fresh, replayed,
                          self.probe_only, self.escalated, self.masked_count, self.covered,
                          self.subject.planned, self.subject.limitations())

    def evaluator_for(self, model: str) -> Evaluator:
        """The evaluator of one model (its reference and probe set), made once."""
        if model not in self.evaluators:
            cfg = self.config
            self.evaluators[model] = Evaluator(self.ex, model, self.corpus, self.thresholds,
                                               probe_size=cfg.probe, slowdown_vs=cfg.slowdown_vs)
        return self.evaluators[model]

    @property
    def evaluator(self) -> Evaluator:
        """The evaluator of the hunt's zoo model."""
        return self.evaluator_for(self.config.model)

    def coverage_plan(self) -> list[Candidate]:
        """The coverage candidates in the order the hunt would take them now (nothing is run;
        costs from the store and the cache)."""
        return self.subject.coverage_plan()

    # -- replay ------------------------------------------------------------------------------
    def _replay(self) -> dict[str, str]:
        """Re-check the known findings of the model (of the family, for generated models) from
        earlier campaigns."""
        result = {}
        for f in self.subject.replay_findings():
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
            if not still and f.get("culprit") in self.known_culprits:
                self.known_culprits.remove(f["culprit"])
            if still and f["signature"] not in self.findings:
                # this campaign has met the bug too: it is its finding as well, minimized
                # already, and masked from here on instead of being found and shrunk again
                mine = {k: v for k, v in f.items() if k not in ("first_seen", "last_seen")}
                mine.update(campaign=self.cid, status="confirmed", phase="replay", hits=1,
                            replayed_from=f["id"])
                self._store_new(mine)
            self.listener("replay", {"finding": f["id"], "status": status})
        return result

    # -- generation --------------------------------------------------------------------------
    def _next_round(self, candidates: Iterator[Candidate], size: int) -> list[Candidate]:
        """Up to ``size`` candidates to evaluate together (one, unless evaluation is parallel).

        Candidates drawn for one round see the outcomes up to the round's start, so a round of
        one is exactly the sequential search.
        """
        batch: list[Candidate] = []
        self.pending.clear()
        for cand in candidates:
            batch.append(cand)
            self.pending.add(cand.pipeline.hash)
            if len(batch) >= size:
                break
        return batch

    def taken(self, p: Pipeline) -> bool:
        """Whether ``p`` was judged already, is in this round, or is its model's reference."""
        return (p.hash in self.outcomes or p.hash in self.pending
                or p.hash == self.ex.reference_pipeline(p.model).hash)

    def _culprits(self) -> list[dict[str, Any]]:
        return self.known_culprits + [f["culprit"] for sig, f in self.findings.items()
                                      if sig in self.active and f.get("culprit")]

    def masked(self, cand: Candidate) -> Candidate | None:
        """``cand`` with known culprits reset; None when that was judged already."""
        p, reset = mask(self.subject.space_of(cand.pipeline.model), cand.pipeline,
                        self._culprits())
        if not reset:
            return cand
        if p is None or self.taken(p):
            return None
        self.masked_count += 1
        return Candidate(p, cand.phase, cand.base, cand.atom, cand.risk, cand.why,
                         cand.estimate, reset)

    def seconds_left(self) -> float | None:
        if self.config.max_evals is not None or self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    # -- evaluation --------------------------------------------------------------------------
    def _outcome(self, p: Pipeline) -> Outcome:
        """Evaluate (or load from this campaign's stored evaluations) and judge one pipeline."""
        stored = self.stored.get(p.hash)
        if stored is not None:
            o = stored["outcome"]
            out = Outcome.from_dict(p, {**o, "symptom": stored["symptom"],
                                        "timings": stored["timings"], "fresh": 0,
                                        "cached": stored["cached"] + stored["fresh"]})
            return out
        return self.evaluator_for(p.model).outcome(p)

    def _outcomes(self, batch: list[Candidate]) -> list[Outcome]:
        """Judge a round: stored outcomes (resume) are reused, the rest evaluated — in parallel
        when the hunt was given ``outcomes_many``."""
        for c in batch:
            self.listener("eval", {"pipeline": c.pipeline.brief(self.ex.registry), "phase": c.phase,
                                   "expected": c.estimate.seconds if c.estimate else None,
                                   "why": c.reason(), "covered": self.covered,
                                   "coverage": self.subject.planned})
        pipelines = [c.pipeline for c in batch]
        if self.outcomes_many is None or len(pipelines) == 1:
            return [self._outcome(p) for p in pipelines]
        todo = [p for p in pipelines if p.hash not in self.stored]
        fresh = dict(zip([p.hash for p in todo], self.outcomes_many(todo))) if todo else {}
        return [fresh[p.hash] if p.hash in fresh else self._outcome(p) for p in pipelines]

    def _record(self, cand: Candidate, out: Outcome) -> None:
        p = cand.pipeline
        self.outcomes[p.hash] = out
        stage = (out.failure or {}).get("stage", "")
        ctx = self.contexts.get(p.model)
        if ctx is not None:
            ctx.note(p, int(stage.split()[1]) if stage.startswith("step ") else None)
        self.evals += 1
        self.covered += cand.phase == "coverage"
        self.cache_hits += out.cached
        self.fresh += out.fresh
        self.probe_only += out.stage == "probe"
        self.escalated += bool(out.probe and out.probe.get("escalated"))
        if p.hash not in self.stored:
            stored = {k: v for k, v in out.to_dict().items() if k not in ("measured", "timings")}
            stored.update(why=cand.reason(), masked=cand.masked)
            self.store.add_evaluation(self.cid, cand.phase, p.to_dict(), p.hash, out.symptom,
                                      stored, out.timings, out.fresh, out.cached)
            if out.measured:
                self.store.add_costs(p.model, self.cid, out.measured)
        self.subject.note(cand, out)
        new = None
        if out.symptom and self.subject.limitation(out) is None:
            new = self._record_finding(cand, out)
        else:
            new = self._revisit_slowdowns(out)
        self.listener("evaluated", {"pipeline": p.brief(self.ex.registry), "symptom": out.symptom,
                                    "verdict": out.verdict(), "stage": out.stage,
                                    "evaluations": self.evals, "findings": len(self.findings),
                                    "cache_hits": self.cache_hits, "fresh": self.fresh,
                                    "covered": self.covered, "coverage": self.subject.planned,
                                    "new_finding": new})

    def _revisit_slowdowns(self, base: Outcome) -> str | None:
        """A pipeline judged before its unoptimised base could not be timed against it: now that
        the base is in, check the ones whose base this is."""
        new = None
        evaluator = self.evaluator_for(base.pipeline.model)
        for o in list(self.outcomes.values()):
            if (o.symptom is None and o.comparison is not None and o.slowdown is None
                    and o.pipeline.model == base.pipeline.model
                    and evaluator.slowdown_base(o.pipeline) == base.pipeline):
                evaluator.check_slowdown(o, eager=False)
                if o.symptom == "slowdown":
                    new = self._record_finding(Candidate(o.pipeline, "coverage"), o) or new
        return new

    # -- findings ----------------------------------------------------------------------------
    def _attribute(self, cand: Candidate, out: Outcome) -> tuple[dict[str, Any] | None, str | None]:
        """The culprit and fix hint this evaluation proves on its own, if any."""
        if out.failure is not None:
            step = out.failure["step"]
            el = next((s for s in (*out.pipeline.steps, out.pipeline.runtime) if s.name == step), None)
            return ({"step": step, "params": el.params if el else {}}, None)
        if cand.base is None or cand.atom is None or out.symptom == "slowdown":
            return None, None
        base = self.outcomes.get(cand.base.hash)
        if base is None and not self.taken(cand.base):
            # a variant judged before its base: judge the base now, to know the variant's culprit
            base = self._outcome(cand.base)
            self._record(Candidate(cand.base, "coverage", why="base of a diverging variant"), base)
        if base is None or base.symptom is not None:
            return None, None
        return cand.proven_culprit(self.ex.registry)

    def _alias(self, provisional: str, signature: str) -> None:
        names = self.aliases.setdefault(provisional, [])
        if signature not in names:
            names.append(signature)

    def _known(self, signature: str, model: str) -> dict[str, Any] | None:
        """The finding a divergence of ``model`` with this signature is known as, if any."""
        for sig in self.aliases.get(signature, [signature]):
            f = self.findings.get(sig)
            if f is not None and self.subject.same_bug(f, model):
                return f
        return None

    def _count_hit(self, f: dict[str, Any], p: Pipeline) -> None:
        """Another pipeline showed finding ``f`` (a stored evaluation replayed by ``--resume``
        was counted when it was made)."""
        if f["signature"] not in self.active:
            self.active.add(f["signature"])  # --resume reached the evaluation that found it
            if p.hash in self.stored:
                return
        if p.hash in self.stored:
            return
        f["hits"] = f.get("hits", 1) + 1
        self.store.upsert_finding(f, self.cid, f["bucket"])

    def _record_finding(self, cand: Candidate, out: Outcome) -> str | None:
        culprit, hint = self._attribute(cand, out)
        provisional = signature_of(out, culprit)
        model = out.pipeline.model
        known = self._known(provisional, model)
        if known is not None:
            self._count_hit(known, out.pipeline)
            return None
        # A mutated pipeline holding an option that is already a finding with the same symptom
        # is most likely that finding again: count it there rather than shrink it anew.
        if culprit is None:
            for f in self.findings.values():
                c = f.get("culprit")
                if c and f["symptom"] == out.symptom and self.subject.same_bug(f, model) and any(
                        s.name == c["step"] and s.params == c["params"]
                        for s in (*out.pipeline.steps, out.pipeline.runtime)):
                    self._count_hit(f, out.pipeline)
                    return None
        finding = new_finding(
            out, model, self.cid, cand.phase, provisional, culprit, hint,
            list(self.corpus.names), len(self.corpus),
            {"hunt": self.evals, "shrink": 0, "cache_hits": self.cache_hits})
        if self.config.shrink:
            self.listener("stage", {"what": f"shrinking {out.pipeline.brief(self.ex.registry)}"})
            try:
                extra = minimize(self.evaluator_for(model), out.pipeline,
                                 lambda what: self.listener("stage", {"what": what}),
                                 localize=self.config.localize, judge_many=self.outcomes_many,
                                 parallel=self.parallel, target=out, known_culprit=culprit,
                                 finish_now=False, evaluator_for=self.evaluator_for)
            except BudgetExhausted:
                self._store_new(finding)  # kept unshrunk; `fuzzconv shrink ID` can finish it
                raise
            finishing = extra.pop("finishing")
            # The hunt's own attribution stands when the shrinker could not do better.
            if extra["culprit"] is None:
                extra.pop("culprit")
            finding.update({k: v for k, v in extra.items() if k not in ("shrink_fresh", "shrink_cache_hits")})
            finding["evaluations"]["shrink"] = extra["shrink_fresh"]
            finding["evaluations"]["cache_hits"] += extra["shrink_cache_hits"]
            if finding["fix_hint"] is None:
                finding["fix_hint"] = hint
            known = self._known(finding["signature"], model)
            if known is not None:
                self._alias(provisional, known["signature"])
                self._count_hit(known, out.pipeline)
                return None
            self._alias(provisional, finding["signature"])
            # Stored minimized now; its reduced model and cold re-runs wait (see _finish).
            self.unfinished.append((finding["signature"], finishing))
        return self._store_new(finding)

    def _finish(self) -> None:
        """Reduce the model and re-run cold the oldest finding that still needs it.

        Finishing a finding is for filing it; trying the next candidates is for finding more,
        so a hunt finishes its findings once coverage is done (mutants are worth less than a
        finished finding) or in the last :data:`FINISH_SHARE` of its budget, whichever comes
        first, and at the end; a ``--focus`` hunt finishes each as soon as it is stored. A finding left unfinished says so (``pending``); ``fuzzconv shrink ID``
        completes it.
        """
        sig, finishing = self.unfinished[0]
        f = self.findings[sig]
        self.listener("stage", {"what": f"finishing {f['id']}: reduced model, cold re-runs"})
        f.update(finish(self.evaluator_for(finishing.minimal.model), finishing, f["shrink"],
                        lambda what: self.listener("stage", {"what": f"{f['id']}: {what}"})))
        self.unfinished.pop(0)
        self.store.upsert_finding(f, self.cid, f["bucket"])

    def _finishing_time(self) -> bool:
        left = self.seconds_left()
        # a focused hunt is about one step: its findings are what it is for, finish them now
        return bool(self.unfinished) and (self.coverage_done or self.config.focus is not None or (
            left is not None and left < FINISH_SHARE * self.config.budget_s))

    def _store_new(self, finding: dict[str, Any]) -> str:
        sig = finding["signature"]
        finding["id"] = "F-" + hashlib.sha256(f"{self.cid}|{sig}".encode()).hexdigest()[:8]
        finding["bucket"] = bucket_of(finding)
        self.findings[sig] = finding
        self.active.add(sig)
        self.subject.keep_models(finding)
        self.store.upsert_finding(finding, self.cid, finding["bucket"])
        return finding["id"]
