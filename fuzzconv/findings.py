"""Working with stored findings: re-shrink and reproduce (listing by bucket is ``Store.buckets``).

Each function opens what it needs from a store directory and leaves the store consistent whatever
happens: a finding is rewritten only once its new state is complete.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .campaign import HuntConfig, bucket_of
from .evaluator import Evaluator
from .oracle import Thresholds
from .pipeline import Pipeline
from .session import finding_session
from .versions import stack_versions


def _evaluator(ex: Any, f: dict[str, Any], cfg: HuntConfig, corpus: Any) -> Evaluator:
    """An evaluator set up as the finding's campaign judged (probe set, slowdown base)."""
    return Evaluator(ex, f["model"], corpus, Thresholds(**cfg.thresholds), probe_size=cfg.probe,
                     slowdown_vs=cfg.slowdown_vs)


def shrink_finding(store: Path, fid: str, plugins: list[Path],
                   say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Shrink and localize a stored finding again; returns the updated finding."""
    from .shrink import minimize

    with finding_session(store, fid, plugins, say) as (ex, db, f, cfg, corpus):
        ev = _evaluator(ex, f, cfg, corpus)
        p = Pipeline.from_dict(f["pipeline"], ex.registry)
        out = ev.outcome(p, eager_slowdown=f["symptom"] == "slowdown")
        if out.symptom is None:
            f["status"] = "fixed"
            f["fixed_in"] = stack_versions()
        else:
            extra = minimize(ev, p, say, target=out, known_culprit=f.get("culprit"))
            f.update({k: v for k, v in extra.items()
                      if k not in ("shrink_fresh", "shrink_cache_hits")})
            f["evaluations"]["shrink"] = f["evaluations"].get("shrink", 0) + extra["shrink_fresh"]
            f["evaluations"]["cache_hits"] += extra["shrink_cache_hits"]
            if f["flaky"]:
                f["status"] = "flaky"
        db.upsert_finding(f, f["campaign"], bucket_of(f))
        return f


def repro_finding(store: Path, fid: str, plugins: list[Path],
                  say: Callable[[str], None] = lambda s: None) -> tuple[bool, dict[str, Any]]:
    """Re-run the minimal case from a cold cache. Returns (still reproduces, finding)."""
    with finding_session(store, fid, plugins, say) as (ex, db, f, cfg, corpus):
        ev = _evaluator(ex, f, cfg, corpus)
        p = Pipeline.from_dict(f.get("minimal_pipeline") or f["pipeline"], ex.registry)
        out = ev.outcome(p, cold=True, staged=False, eager_slowdown=f["symptom"] == "slowdown")
        still = out.symptom == f["symptom"]
        if still:
            db.set_finding_status(f["id"], "confirmed" if f["status"] != "flaky" else "flaky",
                                  {"last_reproduced": time.time()})
        else:
            db.set_finding_status(f["id"], "fixed", {"fixed_in": stack_versions()})
        return still, db.finding(f["id"])
