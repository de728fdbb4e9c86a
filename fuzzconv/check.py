"""``fuzzconv models --check``: are a model's predictions usable for comparing conversions?

Degenerate weights (every image the same label, flat logits) would make every conversion look
safe. The check runs each model's reference on the corpus and reports the number of distinct
top-1 labels and the median top-1/top-2 logit margin, plus accuracy when the corpus has labels.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .oracle import margins
from .session import open_session
from .zoo import ModelSpec


def prediction_stats(logits: np.ndarray, labels: list[int | None] | None = None) -> dict[str, Any]:
    top1 = logits.argmax(axis=1)
    stats: dict[str, Any] = {
        "images": int(len(logits)),
        "distinct_labels": int(len(np.unique(top1))),
        "median_margin": float(np.median(margins(logits))) if len(logits) else 0.0,
        "accuracy": None,
    }
    if labels is not None:
        known = [(p, t) for p, t in zip(top1, labels) if t is not None]
        if known:
            stats["accuracy"] = float(np.mean([p == t for p, t in known]))
    return stats


def check_models(specs: list[ModelSpec], corpus: Any, *, store: Path, weights: str = "calibrated",
                 listener: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    results = []
    with open_session(store, weights=weights, listener=listener) as ex:
        for spec in specs:
            t0 = time.perf_counter()
            ref = ex.reference(spec.name, corpus)
            stats = prediction_stats(ref.logits, corpus.labels)  # type: ignore[arg-type]
            stats["seconds"] = round(time.perf_counter() - t0, 2)
            results.append(stats)
    return results
