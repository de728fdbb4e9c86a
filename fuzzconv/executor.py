"""Evaluating pipelines: build each artifact of a chain, run the last one, through the cache.

The executor is lazy like Polygraphy's loaders: asking for the outputs of a pipeline asks for its
last artifact, which asks for the one before, down to the source model; every answer found in the
cache stops the walk. Each step and each run goes to the worker of its family. A step or run that
fails becomes part of the :class:`Evaluation` (symptom, stage, error class, stderr tail), never an
exception, so a campaign survives whatever a converter does.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cache import Cache, cache_home, key_of
from .costs import run_params
from .errors import UsageError
from .pipeline import Pipeline
from .protocol import Build, Request, RunRequest, StepRequest
from .registry import ARTIFACT_FILE, Registry
from .workers import START_TIMEOUT, WorkerFailure, WorkerPool
from .zoo import ModelSpec, get_model

# The runtime that defines the reference for each source format: the source framework, fp32, CPU.
SOURCE_RUNTIME = {"keras": "keras", "torch": "torch"}
# Bump when a change to fuzzconv makes old cached artifacts wrong.
CACHE_EPOCH = 3  # 3: tf2onnx's generated node names are renumbered canonically


@dataclass
class Failure:
    """Why an evaluation produced no outputs."""

    symptom: str  # crash | timeout
    stage: str  # e.g. "step 2 keras.tflite" or "runtime tflite"
    step: str
    error_class: str
    message: str
    stderr_tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(symptom=self.symptom, stage=self.stage, step=self.step,
                    error_class=self.error_class, message=self.message,
                    stderr_tail=self.stderr_tail)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Failure":
        return cls(**d)


@dataclass
class Evaluation:
    """What running one pipeline on one corpus gave."""

    pipeline: Pipeline
    logits: np.ndarray | None
    failure: Failure | None = None
    timings: dict[str, float] = field(default_factory=dict)
    batch_seconds: list[float] = field(default_factory=list)
    fresh: int = 0  # steps and runs actually executed
    cached: int = 0  # steps and runs served from the cache
    # What each fresh step and run cost: {"op", "params", "kind" (step|load|image), "seconds"}
    # (see :mod:`fuzzconv.costs`).
    measured: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None


def _deterministic(failure: Failure) -> bool:
    """Whether a failure belongs to the configuration rather than to the machine's state at the
    time: a timeout or a SIGKILL (the kernel's OOM killer) may not recur, so they are not cached."""
    return failure.symptom != "timeout" and failure.error_class != "SIGKILL"


def _stage_kind(step_name: str) -> str:
    return "compile" if step_name.endswith(".build") else "convert"


class BudgetExhausted(Exception):
    """The caller's deadline passed while a step or run was in flight; nothing was recorded."""


class Executor:
    """Turns pipelines into outputs, with a content-addressed cache and framework workers.

    Args:
        store_dir: the store directory; the cache lives in ``store_dir/cache``.
        registry: steps and runtimes (built-ins plus plugins).
        pool: the worker pool.
        weights: ``calibrated``, ``imagenet`` or a path to a weights file.
        seed: the calibration seed.
        timeouts: seconds per step or runtime name; ``"*"`` is the default. Defaults to 600 s.
        batch_size: images per inference call. Defaults to 8.
    """

    def __init__(self, store_dir: Path, registry: Registry, pool: WorkerPool,
                 weights: str = "calibrated", seed: int = 0,
                 timeouts: dict[str, float] | None = None, batch_size: int = 8,
                 cache_cap_bytes: int | None = None, source_cache: Path | None = None,
                 listener: Callable[[str], None] | None = None):
        self.store_dir = Path(store_dir)
        self.listener = listener
        # A hunt sets this (time.monotonic() seconds) so no request outlives its budget.
        self.deadline: float | None = None
        # Evaluations that had to run at least one step or runtime (not all from the cache).
        self.fresh_evaluations = 0
        self.registry = registry
        self.pool = pool
        self.weights = weights
        self.seed = seed
        self.timeouts = {"*": 600.0, **(timeouts or {})}
        self.batch_size = batch_size
        kw = {} if cache_cap_bytes is None else {"cap_bytes": cache_cap_bytes}
        self.cache = Cache(self.store_dir / "cache", **kw)
        self.source_cache = Cache(Path(source_cache or cache_home() / "models"))
        self._weights_key = self._weights_identity(weights)

    def _say(self, what: str) -> None:
        if self.listener is not None:
            self.listener(what)

    # -- keys --------------------------------------------------------------------------------
    @staticmethod
    def _weights_identity(weights: str) -> str:
        if weights in ("calibrated", "imagenet"):
            return weights
        p = Path(weights)
        if not p.is_file():
            raise UsageError(f"weights file not found: {weights}")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "file:" + h.hexdigest()[:16]

    def source_key(self, spec: ModelSpec) -> str:
        return key_of("source", CACHE_EPOCH, spec.to_dict(), self._weights_key, self.seed)

    def artifact_key(self, pipeline: Pipeline, n: int) -> str:
        """Key of the artifact after the first ``n`` steps of ``pipeline``."""
        spec = get_model(pipeline.model)
        steps = [(s.name, s.params, self.registry.plugin_digest(s.name)) for s in pipeline.steps[:n]]
        return key_of("artifact", self.source_key(spec), steps, pipeline.device)

    def timeout_for(self, name: str) -> float:
        """The configured timeout of a step or runtime (``timeouts[name]``, its own, or ``*``)."""
        op = self.registry.ops.get(name)
        default = op.timeout if op is not None and op.timeout else self.timeouts["*"]
        return float(self.timeouts.get(name, default))

    def _request(self, family: str, msg: Request, name: str) -> Any:
        """A worker request bounded by both the step's timeout and the caller's deadline.

        A worker that is not running is started and imports its frameworks first, so the timeout
        measures the step alone, not a restart after a crash (see :mod:`fuzzconv.workers`).
        A timeout at the deadline is the budget running out, not a finding.
        """
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise BudgetExhausted()
        try:
            return self.pool.request(family, msg, timeout=self.timeout_for(name),
                                     start_timeout=START_TIMEOUT, deadline=self.deadline)
        except WorkerFailure as exc:
            if (exc.symptom == "timeout" and self.deadline is not None
                    and time.monotonic() >= self.deadline):
                raise BudgetExhausted() from None
            raise

    # -- the source model --------------------------------------------------------------------
    def source_artifact(self, spec: ModelSpec, calibration: Path | None = None) -> Path:
        """The source model with its weights, built once and shared by every store.

        ``calibration`` is the calibration batch for ``calibrated`` weights; when None it is
        prepared here, only if the model has to be built.
        """
        key = self.source_key(spec)
        hit = self.source_cache.lookup("artifacts", key)
        if hit is not None:
            return hit / ARTIFACT_FILE[spec.source]
        if calibration is None and self.weights == "calibrated":
            calibration = self.calibration_inputs(spec)
        tmp = self.source_cache.begin("artifacts", key)
        dst = tmp / ARTIFACT_FILE[spec.source]
        self._say(f"building {spec.name} ({self.weights} weights)")
        try:
            built = self.pool.request(spec.family, Build(
                spec.to_dict(), self.weights, self.seed, str(dst),
                str(calibration) if calibration else None), timeout=max(self.timeouts["*"], 1800.0))
        except WorkerFailure as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.error_class in ("UsageError", "WeightsNotFound", "MissingExtra", "SpecError",
                                   "DegenerateModel"):
                raise UsageError(exc.message) from None
            raise UsageError(f"building {spec.name} failed: {exc}") from None
        final = self.source_cache.commit("artifacts", key, tmp, {"model": spec.name,
                                                                 "seconds": built.seconds,
                                                                 **built.info})
        # Calibration runs a training-mode pass whose memory the framework keeps for good (10 GB
        # for resnet101v2's TF worker); a fresh worker for what follows gives it back. A
        # generated model keeps kilobytes, and a generated hunt builds one every few seconds:
        # restarting its worker each time would cost more than all its evaluations.
        if spec.generated is None:
            self.pool.get(spec.family).close()
        return final / ARTIFACT_FILE[spec.source]

    # -- artifacts of a chain ----------------------------------------------------------------
    def artifact(self, pipeline: Pipeline, n: int, ev: Evaluation, cold: bool | int = False,
                 calibration: Path | None = None) -> Path | None:
        """The artifact after ``n`` steps, or None after recording the failure in ``ev``."""
        spec = get_model(pipeline.model)
        if n == 0:
            return self.source_artifact(spec, calibration)
        key = self.artifact_key(pipeline, n)
        step = pipeline.steps[n - 1]
        op = self.registry.get(step.name, "step")
        # cold=k (an int) rebuilds from step k on and takes what comes before from the cache
        rebuild = cold is True or (cold is not False and n >= cold)
        hit = None if rebuild else self.cache.lookup("artifacts", key)
        if hit is not None:
            meta = self.cache.meta(hit)
            ev.cached += 1
            if meta.get("failure"):
                ev.failure = Failure.from_dict(meta["failure"])
                return None
            return hit / ARTIFACT_FILE[op.dst]  # type: ignore[index]
        src = self.artifact(pipeline, n - 1, ev, cold, calibration)
        if src is None:
            return None
        tmp = self.cache.begin("artifacts", key)
        dst = tmp / ARTIFACT_FILE[op.dst]  # type: ignore[index]
        ev.fresh += 1
        self._say(f"step {n}/{len(pipeline.steps)} {step.brief(self.registry)}")
        try:
            res = self._request(op.family, StepRequest(step.name, step.params, str(src), str(dst),
                                                       spec.to_dict(), pipeline.device), step.name)
        except BudgetExhausted:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except WorkerFailure as exc:
            failure = Failure(exc.symptom, f"step {n} {step.name}", step.name, exc.error_class,
                              exc.message, exc.stderr_tail)
            if _deterministic(failure):
                for f in tmp.iterdir():
                    f.unlink() if f.is_file() else shutil.rmtree(f, ignore_errors=True)
                self.cache.commit("artifacts", key, tmp, {"failure": failure.to_dict()})
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            ev.failure = failure
            return None
        kind = _stage_kind(step.name)
        ev.timings[kind] = ev.timings.get(kind, 0.0) + res.seconds
        ev.measured.append({"op": step.name, "params": step.params, "kind": "step",
                            "seconds": res.seconds})
        final = self.cache.commit("artifacts", key, tmp,
                                  {"step": step.to_dict(), "seconds": res.seconds})
        return final / ARTIFACT_FILE[op.dst]  # type: ignore[index]

    # -- inputs and outputs ------------------------------------------------------------------
    def inputs(self, spec: ModelSpec, corpus: Any) -> Path:
        """The corpus preprocessed for ``spec``, as one ``.npy`` batch (cached)."""
        from .corpora import preprocess_id

        key = key_of("inputs", corpus.digest, preprocess_id(spec))
        hit = self.cache.lookup("outputs", key)
        if hit is not None:
            return hit / "inputs.npy"
        tmp = self.cache.begin("outputs", key)
        np.save(tmp / "inputs.npy", corpus.load_inputs(spec), allow_pickle=False)
        return self.cache.commit("outputs", key, tmp, {"corpus": corpus.name,
                                                       "images": len(corpus)}) / "inputs.npy"

    def calibration_inputs(self, spec: ModelSpec) -> Path:
        from .corpora import calibration_corpus

        return self.inputs(spec, calibration_corpus())

    def evaluate(self, pipeline: Pipeline, corpus: Any, cold: bool | int = False,
                 repeats: int = 0) -> Evaluation:
        """Outputs of ``pipeline`` on ``corpus``; failures are recorded, never raised.

        ``cold=True`` runs every step and the runtime again, ignoring the cache; ``cold=k``
        runs step k (1-based) and what follows again but takes the earlier artifacts from the
        cache: enough to see whether step k's result is reproducible."""
        spec = get_model(pipeline.model)
        ev = Evaluation(pipeline, None)
        inputs = self.inputs(spec, corpus)
        out_key = self.output_key(pipeline, str(inputs.parent.name))
        hit = None if (cold or repeats) else self.cache.lookup("outputs", out_key)
        if hit is not None:
            meta = self.cache.meta(hit)
            ev.cached += 1 + len(pipeline.steps)
            ev.timings = dict(meta.get("timings", {}))
            if meta.get("failure"):
                ev.failure = Failure.from_dict(meta["failure"])
            else:
                ev.logits = np.load(hit / "logits.npy", allow_pickle=False)
            return ev
        artifact = self.artifact(pipeline, len(pipeline.steps), ev, cold)
        tmp = self.cache.begin("outputs", out_key)
        if artifact is not None:
            rt = self.registry.get(pipeline.runtime.name, "runtime")
            ev.fresh += 1
            self._say(f"running {pipeline.runtime.brief(self.registry)} on {len(corpus)} images")
            try:
                res = self._request(rt.family, RunRequest(
                    rt.name, pipeline.runtime.params, str(artifact), str(inputs),
                    str(tmp / "logits.npy"), spec.to_dict(), pipeline.device, self.batch_size,
                    repeats), rt.name)
                ev.timings["load"] = res.load_seconds
                ev.timings["infer"] = res.infer_seconds
                if not repeats:
                    rt_params = run_params(pipeline.runtime,
                                           pipeline.steps[-1] if pipeline.steps else None)
                    ev.measured += [
                        {"op": rt.name, "params": rt_params, "kind": "load",
                         "seconds": res.load_seconds},
                        {"op": rt.name, "params": rt_params, "kind": "image",
                         "seconds": res.infer_seconds / max(1, len(corpus))}]
                ev.batch_seconds = res.batch_seconds
                ev.logits = np.load(tmp / "logits.npy", allow_pickle=False)
            except BudgetExhausted:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            except WorkerFailure as exc:
                ev.failure = Failure(exc.symptom, f"runtime {rt.name}", rt.name, exc.error_class,
                                     exc.message, exc.stderr_tail)
        if ev.fresh:
            self.fresh_evaluations += 1
        meta = {"pipeline": pipeline.to_dict(), "timings": ev.timings}
        if ev.failure is not None:
            meta["failure"] = ev.failure.to_dict()
        if ev.failure is None or _deterministic(ev.failure):
            self.cache.commit("outputs", out_key, tmp, meta)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        return ev

    def output_key(self, pipeline: Pipeline, inputs_dir: str) -> str:
        return key_of("outputs", self.artifact_key(pipeline, len(pipeline.steps)),
                      pipeline.runtime.name, pipeline.runtime.params, pipeline.device, inputs_dir,
                      self.batch_size, self.registry.plugin_digest(pipeline.runtime.name))

    def outputs_key(self, pipeline: Pipeline, corpus: Any) -> str:
        """The cache key of ``pipeline``'s outputs on ``corpus``."""
        from .corpora import preprocess_id

        inputs = key_of("inputs", corpus.digest, preprocess_id(get_model(pipeline.model)))
        return self.output_key(pipeline, inputs)

    def cached(self, kind: str, key: str) -> bool:
        """Whether the cache holds ``key`` (``artifacts`` or ``outputs``); a failure recorded
        there counts, as it is not run again."""
        return self.cache.contains(kind, key)

    def output_cached(self, pipeline: Pipeline, corpus: Any) -> bool:
        """Whether ``pipeline``'s outputs on ``corpus`` are in the cache (nothing would run)."""
        return self.cached("outputs", self.outputs_key(pipeline, corpus))

    def warm_in_background(self, pipelines: list[Pipeline]) -> None:
        """Start the workers these pipelines and their references need, importing their
        frameworks while the caller prepares inputs (see :meth:`WorkerPool.warm_in_background`)."""
        families: list[str] = []
        for p in pipelines:
            names = [s.name for s in p.steps] + [p.runtime.name]
            names.append(SOURCE_RUNTIME[get_model(p.model).source])
            for name in names:
                op = self.registry.ops.get(name)
                if op is not None and op.family not in families:
                    families.append(op.family)
        self.pool.warm_in_background(families)

    def reference_pipeline(self, model: str) -> Pipeline:
        spec = get_model(model)
        return Pipeline.make(self.registry, model, [], SOURCE_RUNTIME[spec.source])

    def reference(self, model: str, corpus: Any) -> Evaluation:
        """The source model in its own framework, fp32, on CPU: what every pipeline is judged by."""
        ev = self.evaluate(self.reference_pipeline(model), corpus)
        if not ev.ok:
            raise UsageError(f"the reference run of {model} failed: "
                             f"{ev.failure.error_class}: {ev.failure.message}")  # type: ignore[union-attr]
        return ev

