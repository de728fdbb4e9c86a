"""What a pipeline will cost to evaluate, from what steps and runtimes measurably cost.

Every fresh step and run a hunt makes is measured (seconds per step; a runtime's load time and
its inference seconds per image) and kept in the store's ``costs`` table, for every model and
campaign. :class:`CostModel` estimates from those measurements, most specific first:

1. the same step with the same parameters on this model (median of the measurements);
2. the same step with other parameters on this model;
3. the same step on other models, scaled by model size (weights for steps, which read and
   rewrite every weight; multiply-accumulates per image for runtimes);
4. before any measurement, a prior for the step scaled by the model's size (:data:`PRIORS`).

A runtime's cost depends on what made its artifact as much as on its own parameters (a TVM
library runs twenty times faster tuned than untuned), so its measurements are keyed by
:func:`run_params`: its parameters and those of the step that made the artifact
(``after.<name>``); an estimate prefers measurements with the same producing step.

Each estimate carries its basis ("measured", "measured on X, scaled", "prior"), which
``fuzzconv hunt --plan`` shows. A hunt reads the measurements made before it started, so its
decisions depend on its seed and on what its store knew then, not on timing noise during the run.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any, Iterable

from .canonical import canonical_json
from .pipeline import Pipeline, Step
from .zoo import ModelSpec, get_model

#: Kinds of measurement: a step's seconds, a runtime's load seconds, its seconds per image.
KINDS = ("step", "load", "image")


@dataclass(frozen=True)
class Prior:
    """A guess before any measurement: ``fixed + per_size × size`` seconds, where size is the
    model's weights in millions (steps, loads) or its GMACs per image (per-image inference)."""

    fixed: float
    per_size: float

    def seconds(self, size: float) -> float:
        return self.fixed + self.per_size * size


# Measured on 2 cores with resnet101v2 (44.7 M weights, 7.8 GMACs per image) and mobilenetv2
# (3.5 M, 0.3 GMACs). They only order candidates until the first measurement of a step replaces
# them, so they need to be right within a factor of a few, not exactly.
PRIORS: dict[str, dict[str, Prior]] = {
    "step": {
        "keras.tf2onnx": Prior(6.0, 0.55),
        "keras.tflite": Prior(8.0, 0.37),
        "tflite.tf2onnx": Prior(3.0, 0.3),
        "onnx.onnx2torch": Prior(1.0, 0.05),
        "torch.onnx_export": Prior(3.0, 0.2),
        "onnx.tvm": Prior(1.0, 0.03),
        "torch.tvm": Prior(10.0, 0.3),
        "tvm.pass": Prior(2.0, 0.1),
        "tvm.build": Prior(4.0, 0.07),
        "onnx.optimize": Prior(1.0, 0.1),
        "onnx.version": Prior(1.0, 0.1),
        "*": Prior(3.0, 0.3),
    },
    "load": {
        "keras": Prior(2.0, 0.06),
        "tflite": Prior(0.2, 0.01),
        "ort": Prior(0.2, 0.01),
        "torch": Prior(0.5, 0.02),
        "tvm": Prior(0.2, 0.01),
        "*": Prior(1.0, 0.05),
    },
    "image": {
        "keras": Prior(0.1, 0.04),
        "tflite": Prior(0.002, 0.009),
        "ort": Prior(0.002, 0.005),
        "torch": Prior(0.002, 0.0065),
        "tvm": Prior(0.01, 0.45),  # untuned Relax leaves convolutions unscheduled
        "*": Prior(0.01, 0.05),
    },
}

# Parameter values that change a cost by far more than a factor of a few, before measurement:
# (kind, op, param, value) -> (extra fixed seconds, factor).
PRIOR_ADJUSTMENTS: dict[tuple[str, str, str, str], tuple[float, float]] = {
    ("load", "torch", "compile", "true"): (40.0, 1.0),  # inductor compiles on the first call
    ("load", "keras", "jit_compile", "true"): (20.0, 1.0),  # XLA compiles on the first call
    ("step", "keras.tflite", "optimizations", '["DEFAULT"]'): (0.0, 2.0),
    # tuned schedules: within a few times ONNX Runtime instead of fifty (benchmarks/RESULTS.md)
    ("image", "tvm", "after.tuning", '"metaschedule"'): (0.0, 0.2),
    # LLVM at -O0: resnet101v2's probe took 183 s against 24-34 s for its sibling targets
    ("image", "tvm", "after.target", '{"kind": "llvm", "opt-level": 0}'): (0.0, 6.0),
}
# They also carry an estimate over from measurements made with other values of the parameter.


def _value(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def adjusted(kind: str, op: str, seconds: float, had: dict[str, Any],
             want: dict[str, Any]) -> float:
    """``seconds`` measured with parameters ``had``, carried over to parameters ``want`` by the
    :data:`PRIOR_ADJUSTMENTS` of the values in which they differ."""
    for param, value in had.items():
        extra, factor = PRIOR_ADJUSTMENTS.get((kind, op, param, _value(value)), (0.0, 1.0))
        if (extra, factor) != (0.0, 1.0) and _value(want.get(param)) != _value(value):
            seconds = max(seconds - extra, 0.0) / factor
    for param, value in want.items():
        extra, factor = PRIOR_ADJUSTMENTS.get((kind, op, param, _value(value)), (0.0, 1.0))
        if (extra, factor) != (0.0, 1.0) and _value(had.get(param)) != _value(value):
            seconds = seconds * factor + extra
    return seconds


def run_params(runtime: Step, after: Step | None) -> dict[str, Any]:
    """The parameters a runtime's load and per-image costs are keyed by: its own, and those of
    the step that made its artifact, as ``after`` (the step's name) and ``after.<param>``."""
    out: dict[str, Any] = dict(runtime.params)
    if after is not None:
        out["after"] = after.name
        out.update({f"after.{k}": v for k, v in after.params.items()})
    return out


def _after_part(params_json: str) -> str:
    params = json.loads(params_json)
    return params_key({k: v for k, v in params.items() if k == "after" or k.startswith("after.")})


def size_of(spec: ModelSpec, kind: str) -> float:
    """The size a cost of ``kind`` scales with: weights (M) for steps and loads, GMACs per image
    for inference."""
    return spec.gmacs if kind == "image" else spec.params_m


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # measured | measured (other parameters) | measured on M, scaled | prior


@dataclass(frozen=True)
class Measurement:
    model: str
    op: str
    params: str  # canonical JSON
    kind: str
    seconds: float


def params_key(params: dict[str, Any]) -> str:
    return canonical_json(params)


class CostModel:
    """Estimates of step and run costs for one model, from measurements of any model.

    Args:
        model: the zoo model whose costs are estimated.
        measurements: what was measured (this model and others).
    """

    def __init__(self, model: str, measurements: Iterable[Measurement] = (),
                 registry: Any = None):
        self.spec = get_model(model)
        self.model = model
        self.registry = registry
        self._extra: dict[tuple[str, str], tuple[float, str] | None] = {}
        self._exact: dict[tuple[str, str, str], list[float]] = {}
        self._made: dict[tuple[str, str, str], list[float]] = {}  # by the producing step
        self._op: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self._other: dict[tuple[str, str], list[tuple[float, str]]] = {}
        for m in measurements:
            self.add(m)

    def add(self, m: Measurement) -> None:
        if m.model == self.model:
            self._exact.setdefault((m.kind, m.op, m.params), []).append(m.seconds)
            self._made.setdefault((m.kind, m.op, _after_part(m.params)), []).append(m.seconds)
            self._op.setdefault((m.kind, m.op), []).append((m.seconds, m.params))
            return
        try:
            other = get_model(m.model)
        except Exception:  # noqa: BLE001 - a model of a newer version: its numbers do not help
            return
        mine, theirs = size_of(self.spec, m.kind), size_of(other, m.kind)
        if theirs > 0:
            self._other.setdefault((m.kind, m.op), []).append((m.seconds * mine / theirs, m.model))

    def estimate(self, kind: str, op: str, params: dict[str, Any]) -> Estimate:
        """Seconds for one step (``step``), one runtime load (``load``), or one image of
        inference (``image``), with the basis of the figure."""
        exact = self._exact.get((kind, op, params_key(params)))
        if exact:
            return Estimate(statistics.median(exact), "measured")
        made = self._made.get((kind, op, _after_part(params_key(params))))
        if made and kind != "step":
            return Estimate(statistics.median(made), "measured (same artifact, other parameters)")
        same = self._op.get((kind, op))
        if same:
            return Estimate(statistics.median(adjusted(kind, op, sec, json.loads(had), params)
                                              for sec, had in same),
                            "measured (other parameters)")
        other = self._other.get((kind, op))
        if other:
            models = sorted({m for _, m in other})
            return Estimate(statistics.median(s for s, _ in other),
                            f"measured on {', '.join(models)}, scaled by size")
        prior = PRIORS[kind].get(op) or PRIORS[kind]["*"]
        # a prior is for no parameter in particular: every declared adjustment applies
        seconds = adjusted(kind, op, prior.seconds(size_of(self.spec, kind)), {}, params)
        return Estimate(seconds, "prior from model size")

    def step(self, s: Step) -> Estimate:
        """A step's estimate, plus what the step says a run costs beyond it (asked once per
        configuration, so a campaign's view stays what it was when it started)."""
        est = self.estimate("step", s.name, s.params)
        op = self.registry.ops.get(s.name) if self.registry is not None else None
        if op is None or op.cost is None:
            return est
        key = (s.name, s.params_json)
        if key not in self._extra:
            self._extra[key] = op.cost(self.model, s.params)
        extra = self._extra[key]
        return est if extra is None else Estimate(est.seconds + extra[0], extra[1])

    def run(self, runtime: Step, images: int, after: Step | None = None) -> Estimate:
        params = run_params(runtime, after)
        load = self.estimate("load", runtime.name, params)
        per = self.estimate("image", runtime.name, params)
        basis = load.basis if load.basis == per.basis else f"{per.basis} per image"
        return Estimate(load.seconds + images * per.seconds, basis)

    def pipeline(self, p: Pipeline, images: int, cached_steps: int = 0,
                 output_cached: bool = False) -> Estimate:
        """Seconds to evaluate ``p`` on ``images`` images when its first ``cached_steps``
        artifacts (or its outputs) are already in the cache; the basis of the largest part."""
        if output_cached:
            return Estimate(0.0, "cached")
        parts = [self.step(s) for s in p.steps[cached_steps:]] + [
            self.run(p.runtime, images, p.steps[-1] if p.steps else None)]
        main = max(parts, key=lambda e: e.seconds)
        return Estimate(sum(e.seconds for e in parts), main.basis)
