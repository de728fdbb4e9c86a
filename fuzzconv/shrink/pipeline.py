"""Shrinking a divergent pipeline to a minimal one that fails the same way.

Design note — shrink passes
---------------------------
As in Hypothesis's shrinker, "simpler" is a total order (:func:`simplicity`): fewer steps first,
then fewer non-default parameters, then a lower TVM opt level, then CPU before GPU, then the
canonical JSON as a tie-break. A candidate is accepted only when it is strictly simpler *and*
fails with the same signature (:attr:`fuzzconv.evaluator.Outcome.key`: the symptom, and for
crashes and timeouts the error class and the failing step), so distinct bugs never merge.

The shrinker is a list of named passes (:data:`PASSES`, in the order they run: each is a method
of :class:`Shrinker` marked with :func:`shrink_pass`, and its docstring says what it tries, what it
costs and why it runs where it does). Each proposes candidates from the current pipeline; the
first strictly simpler one that keeps the signature is taken, and the next pass starts from it.
The passes run in order until a whole round makes no progress. Each pass counts its calls
(candidates judged) and successes (candidates accepted); the counts are the shrink profile stored
with the finding.

The order puts what removes most first: a dropped step or a shorter chain takes whole
conversions and compilations out of every later candidate, which then cost less to judge;
parameter resets and the narrower passes after them only polish what is left.

Candidates are judged through the cache, so re-proposing a pipeline costs nothing. At the fixed
point the result is 1-minimal: removing any one optional step or resetting any one parameter loses
the divergence; :meth:`Shrinker.verify_one_minimal` checks exactly that and records it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import UsageError
from ..evaluator import Outcome
from ..pipeline import Pipeline, Step
from ..registry import Registry

Judge = Callable[[Pipeline], Outcome]
#: The shrink passes, by method name, in the order they run (filled by :func:`shrink_pass`).
PASSES: list[str] = []


def shrink_pass(fn: Callable[..., Iterator[Pipeline]]) -> Callable[..., Iterator[Pipeline]]:
    """Mark a :class:`Shrinker` method as a shrink pass; passes run in the order they are
    defined."""
    PASSES.append(fn.__name__)
    return fn


def _non_default(reg: Registry, s: Step) -> int:
    op = reg.get(s.name)
    return sum(1 for k, v in s.params.items() if v != op.canonical_params({})[k])


def simplicity(reg: Registry, p: Pipeline) -> tuple:
    """The shrink order: smaller is simpler."""
    elements = (*p.steps, p.runtime)
    opt = sum(int(s.params.get("opt_level", 0)) for s in p.steps if s.name == "tvm.build")
    return (len(p.steps), sum(_non_default(reg, s) for s in elements), opt,
            0 if p.device == "cpu" else 1, p.canonical_json())


@dataclass
class PassStats:
    calls: int = 0
    successes: int = 0


@dataclass
class ShrinkResult:
    original: Pipeline
    minimal: Pipeline
    outcome: Outcome
    profile: dict[str, dict[str, int]]
    judged: int
    fresh: int
    one_minimal: bool
    agreeing_neighbours: list[tuple[str, Pipeline]] = field(default_factory=list)

    def profile_table(self) -> list[dict[str, Any]]:
        return [{"pass": k, **v} for k, v in self.profile.items()]


class Shrinker:
    """Shrinks one failing pipeline.

    Args:
        registry: steps and runtimes.
        judge: evaluates and judges a pipeline (through the cache).
        source_format: the model's source format.
        max_judged: give up after this many candidates. Defaults to 500.
        carries: whether a pipeline holding these steps and runtime can carry the model (a
            generated model's known limitations, :mod:`fuzzconv.gen.carriers`); a candidate
            that cannot is never proposed. Defaults to every pipeline.
    """

    def __init__(self, registry: Registry, judge: Judge, source_format: str,
                 max_judged: int = 500,
                 judge_many: Callable[[list[Pipeline]], list[Outcome]] | None = None,
                 parallel: int = 1, carries: Callable[[list[Step]], bool] | None = None):
        self.reg = registry
        self.judge = judge
        # With parallel judging, a pass's candidates are judged in chunks and the first failing
        # one in order is accepted: the same result as judging them one by one.
        self.judge_many = judge_many
        self.parallel = max(1, parallel) if judge_many is not None else 1
        self.source = source_format
        self.carries = carries or (lambda names: True)
        self.max_judged = max_judged
        self.stats: dict[str, PassStats] = {}
        self.judged = 0
        self.fresh = 0
        self._seen: dict[str, Outcome] = {}
        self.passes: list[tuple[str, Callable[[Pipeline], Iterator[Pipeline]]]] = [
            (name, getattr(self, name)) for name in PASSES]

    # -- judging -----------------------------------------------------------------------------
    def seed(self, p: Pipeline, out: Outcome) -> None:
        """Take ``out`` as ``p``'s outcome (judged by the caller), without judging it again."""
        self._seen[p.hash] = out

    def outcome(self, p: Pipeline) -> Outcome:
        if p.hash not in self._seen:
            self.judged += 1
            out = self.judge(p)
            self.fresh += 1 if out.fresh else 0
            self._seen[p.hash] = out
        return self._seen[p.hash]

    def _prefetch(self, chunk: list[Pipeline]) -> None:
        """Judge a chunk at once when a parallel judge is available."""
        todo = [c for c in chunk if c.hash not in self._seen]
        if self.judge_many is None or len(todo) < 2:
            return
        for c, out in zip(todo, self.judge_many(todo)):
            self.judged += 1
            self.fresh += 1 if out.fresh else 0
            self._seen[c.hash] = out

    def _make(self, p: Pipeline, steps: list[Step], runtime: Step | None = None,
              device: str | None = None) -> Pipeline | None:
        if not self.carries([*steps, runtime or p.runtime]):
            return None
        try:
            return Pipeline.make(self.reg, p.model, steps, runtime or p.runtime,
                                 device or p.device, source_format=self.source)
        except UsageError:
            return None

    # -- the loop ----------------------------------------------------------------------------
    def shrink(self, p: Pipeline) -> ShrinkResult:
        target = self.outcome(p)
        if target.symptom is None:
            raise ValueError("shrink needs a failing pipeline")
        key = target.key
        current, current_out = p, target
        self.stats = {name: PassStats() for name, _ in self.passes}
        progress = True
        while progress and self.judged < self.max_judged:
            progress = False
            for name, pass_fn in self.passes:
                simpler = [c for c in pass_fn(current)
                           if simplicity(self.reg, c) < simplicity(self.reg, current)]
                for start in range(0, len(simpler), self.parallel):
                    if self.judged >= self.max_judged:
                        break
                    chunk = simpler[start:start + self.parallel]
                    self._prefetch(chunk)
                    accepted = False
                    for cand in chunk:
                        self.stats[name].calls += 1
                        out = self.outcome(cand)
                        if out.key == key:
                            self.stats[name].successes += 1
                            current, current_out = cand, out
                            progress = accepted = True
                            break
                    if accepted:
                        break  # the next pass starts from the new, simpler pipeline
        one_min, neighbours = self.verify_one_minimal(current, key)
        return ShrinkResult(p, current, current_out,
                            {k: {"calls": v.calls, "successes": v.successes}
                             for k, v in self.stats.items()},
                            self.judged, self.fresh, one_min, neighbours)

    def single_changes(self, p: Pipeline) -> Iterator[tuple[str, Pipeline]]:
        """Every removal of one optional step and every reset of one parameter, described."""
        for i, s in enumerate(p.steps):
            if self.reg.get(s.name).optional:
                c = self._make(p, [*p.steps[:i], *p.steps[i + 1:]])
                if c is not None:
                    yield f"dropping {s.label()} agrees", c
        for desc, c in self._resets(p):
            yield desc, c

    def verify_one_minimal(self, p: Pipeline, key: tuple) -> tuple[bool, list[tuple[str, Pipeline]]]:
        """Check that no single removal or reset keeps the divergence; return the agreeing ones."""
        ok = True
        agreeing = []
        for desc, c in self.single_changes(p):
            out = self.outcome(c)
            if out.key == key:
                ok = False
            elif out.symptom is None:
                agreeing.append((desc, c))
        return ok, agreeing

    # -- passes, in the order they run ----------------------------------------------------------
    @shrink_pass
    def drop_step(self, p: Pipeline) -> Iterator[Pipeline]:
        """Remove one optional (same-format) step: a TVM pass, an ONNX rewrite, a plugin
        transform. One candidate per such step, each cheaper to judge than the pipeline (one
        step fewer to run, and usually a cached prefix). First, because a pass that is not
        needed is the most common excess in a found pipeline and every later candidate gets
        cheaper without it."""
        for i, s in enumerate(p.steps):
            if self.reg.get(s.name).optional:
                c = self._make(p, [*p.steps[:i], *p.steps[i + 1:]])
                if c is not None:
                    yield c

    @shrink_pass
    def shorten_chain(self, p: Pipeline) -> Iterator[Pipeline]:
        """Replace a run of conversions between two formats by a shorter chain of default
        conversions between the same formats (a round trip A→…→A becomes nothing), longest runs
        first. Candidates may convert afresh, so this can cost whole conversions; it runs
        second because a shorter chain removes more than any reset could, and duplicates of
        earlier candidates are served from the judged set."""
        fmts = [self.source] + [self.reg.get(s.name).dst for s in p.steps]
        n = len(p.steps)
        for i in range(n):
            for j in range(n, i, -1):  # longest runs first
                if j - i < 1:
                    continue
                for path in self._paths(fmts[i], fmts[j], j - i - 1):  # type: ignore[arg-type]
                    c = self._make(p, [*p.steps[:i], *path, *p.steps[j:]])
                    if c is not None:
                        yield c

    def _paths(self, src: str, dst: str, max_len: int) -> list[list[Step]]:
        """Conversion paths src→dst of at most ``max_len`` default steps, shortest first."""
        out: list[list[Step]] = []
        if src == dst:
            out.append([])
        frontier: list[tuple[str, list[Step]]] = [(src, [])]
        for _ in range(max_len):
            nxt = []
            for fmt, path in frontier:
                for op in self.reg.steps_from(fmt):
                    if op.optional:
                        continue
                    step = Step.make(op.name, op.canonical_params({}))
                    np_ = path + [step]
                    if op.dst == dst:
                        out.append(np_)
                    nxt.append((op.dst, np_))  # type: ignore[arg-type]
            frontier = nxt
        return out

    def _resets(self, p: Pipeline) -> Iterator[tuple[str, Pipeline]]:
        for idx, s in enumerate((*p.steps, p.runtime)):
            op = self.reg.get(s.name)
            defaults = op.canonical_params({})
            for k, v in s.params.items():
                if v == defaults[k]:
                    continue
                params = {**s.params, k: defaults[k]}
                new = Step.make(s.name, op.canonical_params(params))
                if idx < len(p.steps):
                    c = self._make(p, [*p.steps[:idx], new, *p.steps[idx + 1:]])
                else:
                    c = self._make(p, list(p.steps), new)
                if c is not None:
                    yield f"{s.name} with {k}={json.dumps(defaults[k])} agrees", c

    @shrink_pass
    def reset_param(self, p: Pipeline) -> Iterator[Pipeline]:
        """Set one parameter of one step or of the runtime back to its default, one candidate
        per non-default parameter. A reset re-runs from that step on; it runs after the
        structural passes, on the shortest pipeline they left."""
        for _desc, c in self._resets(p):
            yield c

    @shrink_pass
    def lower_opt_level(self, p: Pipeline) -> Iterator[Pipeline]:
        """Lower ``tvm.build``'s opt_level, lowest first: a cheaper reach than resetting it to
        its default (3) when the bug needs some optimisation but not all. One recompilation per
        candidate."""
        for i, s in enumerate(p.steps):
            level = s.params.get("opt_level")
            if s.name != "tvm.build" or not isinstance(level, int):
                continue
            for lower in range(0, level):
                new = Step.make(s.name, {**s.params, "opt_level": lower})
                c = self._make(p, [*p.steps[:i], new, *p.steps[i + 1:]])
                if c is not None:
                    yield c

    @shrink_pass
    def drop_disabled_passes(self, p: Pipeline) -> Iterator[Pipeline]:
        """Take one entry out of ``disabled_passes`` (which ``reset_param`` can only clear
        whole). One recompilation per entry; late, since few findings hold such a list."""
        for i, s in enumerate(p.steps):
            disabled = s.params.get("disabled_passes")
            if not disabled:
                continue
            for j in range(len(disabled)):
                new = Step.make(s.name, {**s.params,
                                         "disabled_passes": disabled[:j] + disabled[j + 1:]})
                c = self._make(p, [*p.steps[:i], new, *p.steps[i + 1:]])
                if c is not None:
                    yield c

    @shrink_pass
    def move_to_cpu(self, p: Pipeline) -> Iterator[Pipeline]:
        """Run on the CPU instead of the GPU: one candidate that rebuilds everything for the
        CPU, so it comes after the passes that shorten the pipeline it rebuilds."""
        if p.device != "cpu":
            c = self._make(p, list(p.steps), device="cpu")
            if c is not None:
                yield c

    @shrink_pass
    def swap_runtime(self, p: Pipeline) -> Iterator[Pipeline]:
        """The other runtimes of the final format, with default parameters: the artifact is
        cached, so each costs one run. Last, since a bug of a conversion shows in every runtime
        and only a runtime's own bug needs it."""
        fmt = self.reg.get(p.runtime.name).src
        for op in self.reg.runtimes_for(fmt):
            rt = Step.make(op.name, op.canonical_params({}))
            if rt != p.runtime:
                c = self._make(p, list(p.steps), rt)
                if c is not None:
                    yield c
