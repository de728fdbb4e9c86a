"""Top-5 for the report's failing images: logits read from the store's cache, never computed.

The reference and a finding's minimal pipeline were evaluated on the campaign's corpus when it was
hunted, so their outputs are in the cache. An executor over :class:`fuzzconv.workers.NoWorkers`
finds them there by the same keys, and reports whatever is missing (a cleared cache, a plugin not
given) instead of starting a framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...campaign import HuntConfig
from ...errors import UsageError
from ...executor import Executor
from ...pipeline import Pipeline
from ...registry import fresh_registry
from ...workers import NoWorkers


class CachedOutputs:
    """Reference and minimal-pipeline logits on a campaign's corpus, from the store's cache.

    Args:
        store: the store directory.
        plugins: plugin files the findings' pipelines use (their steps must be known to name
            the cache entries).
    """

    def __init__(self, store: Path, plugins: Sequence[Path]):
        self.store = Path(store)
        self.registry = fresh_registry([str(Path(p).resolve()) for p in plugins])
        self._executors: dict[str, Executor] = {}

    def executor(self, weights: str) -> Executor:
        """An executor of the campaign's weights, over no workers."""
        if weights not in self._executors:
            self._executors[weights] = Executor(self.store, self.registry, NoWorkers(),  # type: ignore[arg-type]
                                                weights=weights)
        return self._executors[weights]

    def logits(self, camp: dict[str, Any], finding: dict[str, Any]
               ) -> tuple[Any, np.ndarray, np.ndarray | None, str | None]:
        """(corpus, reference logits, minimal pipeline logits or None, why not).

        Raises:
            UsageError: the reference's outputs are not in the cache.
        """
        from ...corpora import select

        cfg = HuntConfig(**camp["config"])
        corpus = select(cfg.images_dir, cfg.images or None)
        ex = self.executor(cfg.weights)
        ref = ex.reference(finding["model"], corpus).logits
        try:
            p = Pipeline.from_dict(finding.get("minimal_pipeline") or finding["pipeline"],
                                   ex.registry)
        except UsageError as exc:
            return corpus, ref, None, f"{exc} (pass its plugin with --plugin)"
        ev = ex.evaluate(p, corpus)
        if ev.failure is not None:
            return corpus, ref, None, f"{ev.failure.error_class}: {ev.failure.message}"[:300]
        return corpus, ref, ev.logits, None
