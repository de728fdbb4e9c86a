"""Judging one pipeline: evaluate it, compare with the reference, name its symptom.

The hunt, the shrinker and ``repro`` all ask the same question of a pipeline, so they share this
one answer. An :class:`Outcome` is what the search sees of an evaluation; :meth:`Outcome.key` is
the part of it that must stay the same while shrinking (distinct bugs never merge).

Staged images
-------------
Running every pipeline on every image is what made large models slow to hunt: untuned TVM takes
seconds per image. So a pipeline is first judged on a small **probe set**: the reference's most
fragile images, those with the lowest top-1/top-2 margin that is still above the tie margin
(a change in the logits flips them first). The set depends only on the reference's outputs, so
it is the same for every pipeline of a model and corpus, and their outputs stay cached.

The verdict goes to the full corpus (:meth:`Evaluator.outcome` "escalates") when the probe
shows a divergence (a flip, NaN, numeric drift), or when the largest logit change on the probe,
doubled for both logits of a pair and doubled again for safety, reaches the margin of the most
fragile image outside the probe: such a change could flip it. A crash or a hang needs no more
images. Otherwise the pipeline agrees *on the probe*: its :class:`Outcome` says so
(``stage == "probe"``, ``images`` the probe's size), and the store and every listing show it as
"agrees on N fragile images", never as agreement on the whole corpus. A finding's flip rate
always comes from the full corpus.

Slowdown
--------
By default (``slowdown_vs="base"``) a ``slowdown`` is an optimisation that makes the same
runtime slower than its unoptimised form: the pipeline with every optimisation knob of every step
and runtime at its declared unoptimised value (:attr:`fuzzconv.registry.Operation.unoptimized`)
and its optional steps (passes, rewrites) dropped. It is suspected when the pipeline infers more
than ``slowdown`` times slower per image than that base did on the same images, and confirmed by
timing both side by side, warm, repeated. The base's time is only looked up, never computed for
the check, unless the caller asks for it (the shrinker does, for a slowdown it shrinks).
``slowdown_vs="reference"`` compares with the source framework instead.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .executor import Evaluation, Executor
from .oracle import Comparison, Thresholds, compare, judge, margins
from .pipeline import Pipeline, Step

#: Images in the probe set (0 turns staging off).
PROBE_SIZE = 8
#: How much larger than the probe's largest logit change the full corpus's may be.
PROBE_SAFETY = 2.0
#: Timed passes per pipeline when a slowdown is confirmed side by side...
SLOWDOWN_REPEATS = 5
#: ... over as many images (up to the probe's) as fit in about this many seconds per pass.
SLOWDOWN_PASS_SECONDS = 4.0


@dataclass
class Outcome:
    """One evaluated pipeline as the search sees it.

    ``images`` is how many images the verdict rests on; ``probe`` is the probe's verdict
    (``images``, ``symptom``, ``max_abs_diff``, ``escalated``, ``why``) when the pipeline was
    judged on the probe set first. ``comparison["flipped"]`` holds corpus indices.
    """

    pipeline: Pipeline
    symptom: str | None
    comparison: dict[str, Any] | None
    failure: dict[str, Any] | None
    timings: dict[str, float]
    fresh: int
    cached: int
    images: int = 0
    probe: dict[str, Any] | None = None
    slowdown: dict[str, Any] | None = None
    measured: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str | None, ...]:
        """The signature a shrunk pipeline must keep: the symptom, and for crashes and timeouts
        the error class and the step that failed."""
        if self.failure is not None:
            return (self.symptom, self.failure["error_class"], self.failure["step"])
        return (self.symptom,)

    @property
    def stage(self) -> str:
        """``probe`` when the verdict rests on the probe set alone, else ``full``."""
        return "probe" if self.probe is not None and not self.probe.get("escalated") else "full"

    @property
    def energy(self) -> float:
        """How interesting this pipeline is to mutate: divergent or close to it."""
        c = self.comparison or {}
        e = 1.0
        if self.symptom:
            e += 8.0
        e += 10.0 * float(c.get("flip_rate") or 0.0)
        e += 2.0 * min(1.0, float(c.get("max_rel_diff") or 0.0) / 1e-3)
        e += 1.0 if c.get("tie_flips") else 0.0
        return e

    def verdict(self) -> str:
        """One line: the symptom, or how far the agreement goes."""
        if self.symptom is not None:
            return self.symptom
        c = self.comparison or {}
        d = c.get("max_abs_diff")
        delta = f", max |Δlogit| {d:.3g}" if d is not None else ""
        if self.stage == "probe":
            return f"agrees on {self.images} fragile images{delta}"
        return f"agrees on all {self.images} images{delta}"

    def to_dict(self) -> dict[str, Any]:
        """The outcome without its pipeline, as stored and as Ray workers send it."""
        d = asdict(self)
        d.pop("pipeline")
        return d

    @classmethod
    def from_dict(cls, p: Pipeline, d: dict[str, Any]) -> "Outcome":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "pipeline"}
        return cls(p, **known)


def unoptimized(reg: Any, p: Pipeline) -> Pipeline | None:
    """``p`` without its optimisations: optional steps dropped, every declared optimisation knob
    at its unoptimised value; None when that is ``p`` itself or not a valid pipeline."""
    steps = [Step.make(s.name, reg.get(s.name).unoptimized_params(s.params))
             for s in p.steps if not reg.get(s.name).optional]
    rt = Step.make(p.runtime.name, reg.get(p.runtime.name).unoptimized_params(p.runtime.params))
    try:
        base = Pipeline.make(reg, p.model, steps, rt, p.device)
    except Exception:  # noqa: BLE001 - e.g. a chain that only fits with its optional steps
        return None
    return None if base == p else base


class Evaluator:
    """Evaluates pipelines of one model on one corpus against its reference.

    Args:
        executor: runs pipelines.
        model: the zoo model.
        corpus: the images.
        thresholds: the oracle's tolerances.
        probe_size: images in the probe set; 0 judges every pipeline on the whole corpus.
            Defaults to :data:`PROBE_SIZE`.
        slowdown_vs: ``base`` (an optimisation slower than its unoptimised form) or
            ``reference`` (slower than the source framework). Defaults to ``base``.
    """

    def __init__(self, executor: Executor, model: str, corpus: Any,
                 thresholds: Thresholds = Thresholds(), probe_size: int = PROBE_SIZE,
                 slowdown_vs: str = "base"):
        self.ex = executor
        self.model = model
        self.corpus = corpus
        self.thresholds = thresholds
        self.probe_size = probe_size
        self.slowdown_vs = slowdown_vs
        self._ref: Evaluation | None = None
        self._probe: list[int] | None = None

    @property
    def has_reference(self) -> bool:
        """Whether the reference has been run already (planning must not run it)."""
        return self._ref is not None

    @property
    def reference(self) -> Evaluation:
        if self._ref is None:
            self._ref = self.ex.reference(self.model, self.corpus)
        return self._ref

    # -- the probe set -----------------------------------------------------------------------
    @property
    def probe_indices(self) -> list[int]:
        """The probe set: corpus indices of the most fragile images above the tie margin, in
        corpus order; empty when staging is off or the corpus is no larger than the probe."""
        if self._probe is None:
            if not self.probe_size or len(self.corpus) <= self.probe_size:
                self._probe = []
            else:
                m = margins(self._ref_logits())
                ok = [i for i in np.argsort(m, kind="stable") if m[i] >= self.thresholds.tie_margin]
                self._probe = sorted(int(i) for i in ok[:self.probe_size])
        return self._probe

    @property
    def probe_corpus(self) -> Any:
        return self.corpus.subset(self.probe_indices) if self.probe_indices else self.corpus

    def _ref_logits(self) -> np.ndarray:
        assert self.reference.logits is not None
        return self.reference.logits

    def next_margin(self) -> float:
        """The smallest reference margin above the tie margin outside the probe set."""
        m = margins(self._ref_logits())
        probe = set(self.probe_indices)
        rest = [float(m[i]) for i in range(len(m))
                if i not in probe and m[i] >= self.thresholds.tie_margin]
        return min(rest) if rest else float("inf")

    # -- judging -----------------------------------------------------------------------------
    def outcome(self, p: Pipeline, cold: bool | int = False, staged: bool = True,
                eager_slowdown: bool = False) -> Outcome:
        """Judge ``p``: on the probe set first when ``staged`` (see the module docstring), on the
        whole corpus otherwise. ``eager_slowdown`` computes the unoptimised base's time when it
        is not known yet."""
        probe = self.probe_indices if staged else []
        if not probe:
            out = self._judge(p, list(range(len(self.corpus))), cold)
        else:
            out = self._judge(p, probe, cold)
            why = self._escalation(out)
            out.probe = {"images": len(probe), "symptom": out.symptom,
                         "max_abs_diff": (out.comparison or {}).get("max_abs_diff"),
                         "escalated": why is not None, "why": why}
            if why is not None:
                full = self._judge(p, list(range(len(self.corpus))), cold)
                full.probe = out.probe
                full.fresh += out.fresh
                full.cached += out.cached
                full.measured = out.measured + full.measured
                out = full
        if out.symptom is None and out.comparison is not None:
            self.check_slowdown(out, eager_slowdown)
        return out

    def outcome_on(self, p: Pipeline, indices: list[int], cold: bool | int = False) -> Outcome:
        """Judge ``p`` on the corpus images at ``indices`` only (no staging, no slowdown);
        ``cold`` as for :meth:`fuzzconv.executor.Executor.evaluate`."""
        return self._judge(p, indices, cold)

    def _judge(self, p: Pipeline, indices: list[int], cold: bool | int) -> Outcome:
        whole = len(indices) == len(self.corpus)
        corpus = self.corpus if whole else self.corpus.subset(indices)
        ev = self.ex.evaluate(p, corpus, cold=cold)
        cmp: Comparison | None = None
        if ev.ok:
            assert ev.logits is not None
            ref = self._ref_logits() if whole else self._ref_logits()[indices]
            cmp = compare(ref, ev.logits, self.thresholds)
            if not whole:  # report corpus indices, so names and findings stay meaningful
                cmp.flipped = [indices[i] for i in cmp.flipped]
                cmp.tied = [indices[i] for i in cmp.tied]
        symptom = judge(cmp, self.thresholds, ev.failure)
        return Outcome(p, symptom, cmp.to_dict() if cmp else None,
                       ev.failure.to_dict() if ev.failure else None, ev.timings, ev.fresh,
                       ev.cached, images=len(indices), measured=list(ev.measured))

    def _escalation(self, out: Outcome) -> str | None:
        """Why the probe's verdict needs the full corpus, or None when it does not."""
        if out.failure is not None:
            return None
        if out.symptom is not None:
            return f"{out.symptom} on the probe"
        d = float((out.comparison or {}).get("max_abs_diff") or 0.0)
        m = self.next_margin()
        if 2.0 * d * PROBE_SAFETY >= m:
            return f"max |Δlogit| {d:.3g} could flip an image of margin {m:.3g}"
        return None

    # -- slowdown ----------------------------------------------------------------------------
    def slowdown_base(self, p: Pipeline) -> Pipeline | None:
        """What ``p``'s speed is measured against, or None when nothing is."""
        if self.slowdown_vs == "reference":
            ref = self.ex.reference_pipeline(self.model)
            return None if ref == p else ref
        return unoptimized(self.ex.registry, p)

    def check_slowdown(self, out: Outcome, eager: bool = False) -> None:
        """Set ``out.symptom`` to ``slowdown`` when it is one (see the module docstring)."""
        base = self.slowdown_base(out.pipeline)
        infer = out.timings.get("infer")
        if base is None or not infer or not out.images:
            return
        # Suspect it from seconds per image against the base's, from whichever of its runs is
        # known: the reference's, or one on the probe set or the corpus.
        per_image = infer / out.images
        if base == self.ex.reference_pipeline(self.model):
            base_ev = self.reference
        else:
            known = [c for c in (self.probe_corpus, self.corpus) if self.ex.output_cached(base, c)]
            if not known and not eager:
                return
            base_ev = self.ex.evaluate(base, known[0] if known else self.probe_corpus)
        base_infer = base_ev.timings.get("infer")
        base_images = base_ev.logits.shape[0] if base_ev.logits is not None else 0
        if not base_ev.ok or not base_infer or not base_images or (
                per_image < self.thresholds.slowdown * base_infer / base_images):
            return
        # Time both on the first images, as many as keep a pass of the slower one short: a
        # confirmation of untuned TVM on a large model must not cost minutes.
        pool = self.probe_indices or list(range(min(PROBE_SIZE, len(self.corpus))))
        n = max(1, min(len(pool), int(SLOWDOWN_PASS_SECONDS / max(per_image, 1e-9))))
        few = self.corpus.subset(pool[:n])
        t0 = time.perf_counter()
        b = self.ex.evaluate(base, few, repeats=SLOWDOWN_REPEATS)
        r = self.ex.evaluate(out.pipeline, few, repeats=SLOWDOWN_REPEATS)
        # Runtime work like a step's, which the timings should show (it can exceed the rest).
        out.timings["confirm"] = round(time.perf_counter() - t0, 3)
        if not (b.batch_seconds and r.batch_seconds):
            return
        seconds, base_seconds = _median(r.batch_seconds), _median(b.batch_seconds)
        factor = seconds / max(base_seconds, 1e-9)
        out.timings["slowdown_factor"] = round(factor, 3)
        out.slowdown = {"factor": round(factor, 3), "seconds": seconds,
                        "base_seconds": base_seconds, "vs": self.slowdown_vs,
                        "base": base.to_dict(), "batch": len(few)}
        if factor > self.thresholds.slowdown:
            out.symptom = "slowdown"


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
