"""A pipeline file, and ``fuzzconv run``: one pipeline evaluated against the reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .corpora import select
from .errors import UsageError
from .oracle import Thresholds, compare, judge
from .pipeline import Pipeline
from .registry import Registry
from .session import open_session


def load_pipeline_file(path: Path, registry: Registry) -> Pipeline:
    """Read and check a pipeline JSON file; every problem is one UsageError line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"pipeline file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return Pipeline.from_dict(data, registry)


def run_pipeline(pipeline_file: Path, images: Path | None, limit: int | None, *, store: Path, plugins: list[Path],
                 weights: str = "calibrated", timeout: float | None = None,
                 thresholds: Thresholds = Thresholds(),
                 listener: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a pipeline and its reference; return the ``run --json`` object."""
    with open_session(store, plugins, weights=weights, timeout=timeout,
                      listener=listener) as ex:
        pipeline = load_pipeline_file(pipeline_file, ex.registry)
        # The workers import their frameworks (seconds) while the images are read here.
        ex.warm_in_background([pipeline])
        corpus = select(images, limit)
        ref = ex.reference(pipeline.model, corpus)
        ev = ex.evaluate(pipeline, corpus)
        cmp = compare(ref.logits, ev.logits, thresholds) if ev.ok else None  # type: ignore[arg-type]
        symptom = judge(cmp, thresholds, ev.failure)
        result: dict[str, Any] = {
            "pipeline": pipeline.to_dict(),
            "label": pipeline.label(),
            "symptom": symptom,
            "flip_rate": cmp.flip_rate if cmp else None,
            "images": len(corpus),
            "max_abs_diff": cmp.max_abs_diff if cmp else None,
            "timings": {k: round(v, 4) for k, v in ev.timings.items()},
            "error": ev.failure.to_dict() if ev.failure else None,
            "cache": {"hits": ev.cached, "fresh": ev.fresh},
        }
        if cmp is not None:
            result.update(flips=cmp.flips, tie_flips=cmp.tie_flips,
                          top5_agreement=cmp.top5_agreement, kendall_tau=cmp.kendall_tau,
                          max_rel_diff=cmp.max_rel_diff, nan=cmp.nan)
        return result
