"""One measured configuration of one model on one device (a :class:`Cell`), and reading them back
from ``study.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .intervals import wilson_ci

@dataclass
class Cell:
    """One configuration of one model on one device: its labels and its timing."""

    model: str
    config: str
    device: str
    status: str  # ok | failed | not measured | not applicable
    pipeline: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the labelled run and the timing, conversions included
    logits: np.ndarray | None = field(default=None, repr=False)
    kept: bool = False  # read back from an earlier run's study.json (``--resume``): no logits

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        return cls(d["model"], d["config"], d["device"], d["status"], pipeline=d.get("pipeline"),
                   error=d.get("error"), metrics=d.get("metrics") or {},
                   timing=d.get("timing") or {}, seconds=float(d.get("seconds") or 0.0),
                   kept=True)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "config": self.config, "device": self.device,
                "status": self.status, "pipeline": self.pipeline, "error": self.error,
                "metrics": self.metrics, "timing": self.timing,
                "seconds": round(self.seconds, 2)}


def index(study: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(c["model"], c["config"], c["device"]): c for c in study["cells"]}


def pct(cell: dict[str, Any] | None, against: str = "vs_baseline") -> float | None:
    if cell is None or cell["status"] != "ok":
        return None
    m = cell["metrics"].get(against)
    return None if m is None else m["label_change_pct"]


def pct_ci(cell: dict[str, Any] | None, against: str = "vs_baseline",
           kind: str | None = None) -> tuple[float, float, float] | None:
    """A cell's label-change percentage with its Wilson 95 % interval, ``(pct, low, high)``.

    ``kind`` picks the part of the corpus (``photographs`` or ``synthetic``). The interval is
    the one ``study.json`` holds, or is computed from the counts for a study written before
    intervals were recorded.
    """
    if cell is None or cell["status"] != "ok":
        return None
    m = cell["metrics"].get(against) if kind is None else (
        cell["metrics"].get(against + "_by_kind") or {}).get(kind)
    return None if m is None else metric_ci(m)


def metric_ci(m: dict[str, Any]) -> tuple[float, float, float]:
    """``(pct, low, high)`` of a label-metrics record (see :func:`.stats.label_metrics`)."""
    if m.get("label_change_ci95"):
        lo, hi = m["label_change_ci95"]
    else:
        lo, hi = (100.0 * x for x in wilson_ci(int(m["label_changes"]), int(m["images"])))
    return float(m["label_change_pct"]), float(lo), float(hi)


def error_text(cell: dict[str, Any]) -> str:
    e = cell.get("error")
    if not e:
        return ""
    msg = " ".join(str(e.get("message", "")).split())
    return f"{e.get('stage', '')}: {e.get('error_class', '')}: {msg[:300]}"
