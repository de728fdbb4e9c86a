"""What a campaign is: its settings, how its findings are grouped, how long it may run.

Shared by the engine that runs campaigns and by everything that reads them back (``reports``,
``show``, bundles, the HTML report), which must not import the engine.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .versions import stack_versions
from .zoo import get_model


@dataclass
class HuntConfig:
    """What a hunt does. Stored with the campaign so ``--resume`` continues the same search."""

    model: str
    seed: int = 0
    budget_s: float = 900.0
    max_evals: int | None = None
    focus: str | None = None
    device: str = "cpu"
    max_chain: int = 3
    max_optional: int = 3
    images: int = 0
    images_dir: str | None = None
    weights: str = "calibrated"
    shrink: bool = True
    localize: bool = True
    thresholds: dict[str, float] = field(default_factory=dict)
    probe: int = 8  # images in the probe set (0: every pipeline on the whole corpus)
    slowdown_vs: str = "base"  # base (unoptimised form) or reference (source framework)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    probe_only: int = 0  # evaluations judged on the probe set alone
    escalated: int = 0  # evaluations the probe sent to the whole corpus
    masked: int = 0  # candidates judged with a known culprit reset
    covered: int = 0  # coverage candidates judged
    coverage: int = 0  # coverage candidates planned
    limitations: list[str] = field(default_factory=list)  # known limitations met (generated)


def new_finding(out: Any, model: str, cid: str, phase: str, signature: str,
                culprit: dict[str, Any] | None, hint: str | None, names: list[str], images: int,
                evaluations: dict[str, int]) -> dict[str, Any]:
    """A finding as first recorded, in the finding contract's shape, from the outcome ``out`` of
    the evaluation that showed it (:class:`fuzzconv.evaluator.Outcome`), before shrinking."""
    cmp = out.comparison or {}
    return {
        "model": model, "symptom": out.symptom, "signature": signature,
        "flip_rate": cmp.get("flip_rate"), "images": out.images or images,
        "pipeline": out.pipeline.to_dict(), "minimal_pipeline": None, "culprit": culprit,
        "failing_inputs": [names[i] for i in cmp.get("flipped", []) if i < len(names)],
        "flipping_images": len(cmp.get("flipped", [])), "first_divergent_node": None,
        "fix_hint": hint, "evaluations": evaluations, "flaky": False,
        "versions": stack_versions(), "bundle": None, "campaign": cid, "status": "new",
        "hits": 1,
        "comparison": {k: v for k, v in cmp.items() if k not in ("flipped", "tied")} or None,
        "tie_flips": cmp.get("tie_flips", 0), "failure": out.failure, "slowdown": out.slowdown,
        "probe": out.probe, "phase": phase, "found_as": signature,
        **({"model_spec": get_model(model).generated} if get_model(model).generated else {}),
    }


def bucket_of(finding: dict[str, Any]) -> str:
    """Findings with the same culprit step, parameters and symptom share a bucket, across models
    and campaigns; without a culprit, the signature alone. A generated model's finding also
    keys on its trigger (its minimal model's layers): one converter can go wrong on several."""
    c = finding.get("culprit")
    key = [finding["symptom"], c["step"], c["params"]] if c else [finding["signature"]]
    if finding.get("trigger") is not None:
        key.append(finding["trigger"])
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def parse_budget(text: str) -> float:
    """``15m``, ``90s``, ``1h30m``, ``2h`` or plain seconds → seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        secs = float(t)
    else:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
        if not parts or not any(parts.groups()):
            raise UsageError(f"bad budget {text!r}: use e.g. 90s, 15m, 1h30m")
        h, m, s = (float(x) if x else 0.0 for x in parts.groups())
        secs = h * 3600 + m * 60 + s
    if secs <= 0:
        raise UsageError(f"bad budget {text!r}: it must be positive")
    return secs
