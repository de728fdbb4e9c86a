"""Pipelines: a model, a chain of steps, a runtime and a device, as frozen values.

The canonical form (defaults filled, keys sorted) is what is hashed, cached and stored. A pipeline
is built only through :meth:`Pipeline.from_dict` or :meth:`Pipeline.make`, which check the chain
against the registry, so an invalid chain never reaches a worker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .canonical import canonical_json
from .errors import UsageError
from .registry import Registry

DEVICES = ("cpu", "cuda")


def device_available(device: str) -> bool:
    """Whether ``device`` exists on this machine, without importing a framework."""
    if device == "cpu":
        return True
    import glob
    import shutil

    return bool(glob.glob("/dev/nvidia[0-9]*")) and shutil.which("nvidia-smi") is not None


@dataclass(frozen=True, order=True)
class Step:
    """One application of a registered step or runtime with canonical parameters."""

    name: str
    params_json: str = "{}"

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @classmethod
    def make(cls, name: str, params: dict[str, Any] | None = None) -> "Step":
        return cls(name, canonical_json(params or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.name, "params": self.params}

    def label(self) -> str:
        p = self.params
        inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(p.items()))
        return f"{self.name}({inner})" if inner else self.name

    def brief(self, registry: Registry) -> str:
        """Like :meth:`label`, with only the parameters that differ from their defaults."""
        op = registry.ops.get(self.name)
        defaults = op.canonical_params({}) if op is not None else {}
        p = {k: v for k, v in self.params.items() if k not in defaults or v != defaults[k]}
        inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(p.items()))
        return f"{self.name}({inner})" if inner else self.name


def _short(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


@dataclass(frozen=True)
class Pipeline:
    """A model, steps, a runtime and a device. Build with :meth:`make` or :meth:`from_dict`."""

    model: str
    steps: tuple[Step, ...]
    runtime: Step
    device: str = "cpu"

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def make(cls, registry: Registry, model: str, steps: list[tuple[str, dict] | Step],
             runtime: tuple[str, dict] | Step | str, device: str = "cpu",
             source_format: str | None = None) -> "Pipeline":
        """Canonicalise and check a pipeline. ``source_format`` defaults to the zoo's."""
        if device not in DEVICES:
            raise UsageError(f"unknown device {device!r} (known: {', '.join(DEVICES)})")
        if not device_available(device):
            raise UsageError(f"device {device} is not present on this machine")
        raw_steps = [(s.name, s.params) if isinstance(s, Step) else s for s in steps]
        if isinstance(runtime, Step):
            raw_rt = (runtime.name, runtime.params)
        elif isinstance(runtime, str):
            raw_rt = (runtime, {})
        else:
            raw_rt = runtime
        if source_format is None:
            from .zoo import get_model

            source_format = get_model(model).source
        registry.check_chain(source_format, raw_steps, raw_rt[0])
        canon = tuple(
            Step.make(n, registry.get(n, "step").canonical_params(p)) for n, p in raw_steps
        )
        rt = Step.make(raw_rt[0], registry.get(raw_rt[0], "runtime").canonical_params(raw_rt[1]))
        for s in (*canon, rt):
            op = registry.get(s.name)
            if device not in op.devices:
                raise UsageError(f"{s.name} does not run on {device}")
        return cls(model, canon, rt, device)

    @classmethod
    def from_dict(cls, d: Any, registry: Registry, source_format: str | None = None) -> "Pipeline":
        """Parse the pipeline JSON contract; one clear error for any malformed part."""
        if not isinstance(d, dict):
            raise UsageError("a pipeline must be a JSON object with model, steps and runtime")
        for key in ("model", "steps", "runtime"):
            if key not in d:
                raise UsageError(f"pipeline is missing {key!r}")
        if not isinstance(d["model"], str) or not d["model"]:
            raise UsageError("pipeline 'model' must be a non-empty string")
        if not isinstance(d["steps"], list):
            raise UsageError("pipeline 'steps' must be a list")
        steps = []
        for i, s in enumerate(d["steps"]):
            if not isinstance(s, dict) or not isinstance(s.get("step"), str):
                raise UsageError(f"pipeline step {i + 1} must be an object with a 'step' name")
            params = s.get("params", {})
            if not isinstance(params, dict):
                raise UsageError(f"pipeline step {i + 1} ({s['step']}): 'params' must be an object")
            steps.append((s["step"], params))
        rt = d["runtime"]
        if isinstance(rt, str):
            rt = {"name": rt}
        if not isinstance(rt, dict) or not isinstance(rt.get("name"), str):
            raise UsageError("pipeline 'runtime' must be an object with a 'name'")
        if not isinstance(rt.get("params", {}), dict):
            raise UsageError("pipeline runtime 'params' must be an object")
        device = d.get("device", "cpu")
        if not isinstance(device, str):
            raise UsageError("pipeline 'device' must be a string")
        return cls.make(registry, d["model"], steps, (rt["name"], rt.get("params", {})),
                        device, source_format=source_format)

    # -- views -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "steps": [s.to_dict() for s in self.steps],
            "runtime": {"name": self.runtime.name, "params": self.runtime.params},
            "device": self.device,
        }

    def canonical_json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def label(self) -> str:
        chain = " → ".join(s.label() for s in self.steps) or "(source)"
        dev = "" if self.device == "cpu" else f" @{self.device}"
        return f"{self.model}: {chain} ⇒ {self.runtime.label()}{dev}"

    def brief(self, registry: Registry) -> str:
        """The chain and runtime with non-default parameters only, without the model's name."""
        chain = " → ".join(s.brief(registry) for s in self.steps) or "(source)"
        dev = "" if self.device == "cpu" else f" @{self.device}"
        return f"{chain} ⇒ {self.runtime.brief(registry)}{dev}"

    def replace(self, **kw: Any) -> "Pipeline":
        d = dict(model=self.model, steps=self.steps, runtime=self.runtime, device=self.device)
        d.update(kw)
        return Pipeline(**d)


# -- completing a prefix -----------------------------------------------------------------------
def plainest_runtime(reg: Registry, fmt: str) -> Step | None:
    """The default-parameter runtime for ``fmt`` (by name order: the registry's stable choice)."""
    rts = reg.runtimes_for(fmt)
    if not rts:
        return None
    return Step.make(rts[0].name, rts[0].canonical_params({}))


def runnable_prefix(reg: Registry, p: Pipeline, n: int, source: str) -> Pipeline | None:
    """The first ``n`` steps of ``p`` made runnable by the plainest means: the format's default
    runtime, or for a format no runtime takes (a Relax module) its default non-optional step
    (``tvm.build``) first. None when there is no plain completion."""
    steps = list(p.steps[:n])
    fmt = reg.get(steps[-1].name).dst if steps else source
    rt = plainest_runtime(reg, fmt)  # type: ignore[arg-type]
    if rt is None:
        for op in reg.steps_from(fmt):  # type: ignore[arg-type]
            if not op.optional and reg.runtimes_for(op.dst):  # type: ignore[arg-type]
                steps.append(Step.make(op.name, op.canonical_params({})))
                rt = plainest_runtime(reg, op.dst)  # type: ignore[arg-type]
                break
    if rt is None:
        return None
    try:
        return Pipeline.make(reg, p.model, steps, rt, p.device, source_format=source)
    except UsageError:
        return None
