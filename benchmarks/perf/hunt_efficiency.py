"""How much of a hunt's wall time is real conversion and inference work, and how a hunt compares
with a naive loop that has no cache and no long-lived workers.

Two measurements, side by side in one run:

* **overhead ratio** — hunt wall time ÷ the summed irreducible step time, i.e. the seconds workers
  spent inside steps and runtimes (convert, compile, load, infer) for every evaluation that ran
  something fresh, the reference included (an evaluation served whole from the cache carries the
  timings of the run that made it, which this hunt did not spend), plus the side-by-side timing
  runs that confirm a suspected slowdown (``confirm``: the reference and the pipeline, warm, five
  times each). Goal ≤ 1.15.
* **evaluations per hour** — the hunt against a naive loop over the same pipelines: the reference
  once, then for each pipeline a fresh worker pool (imports paid every time) and an empty cache
  (every prefix converted again). The loop times an evenly spaced sample of the hunt's pipelines
  and is extrapolated to the hunt's number of evaluations: reference + mean per pipeline × N.

    .venv/bin/python benchmarks/perf/hunt_efficiency.py [--model tiny_keras] [--evals 30] [--naive 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fuzzconv.corpora import select  # noqa: E402
from fuzzconv.campaign import HuntConfig
from fuzzconv.engine import Hunt  # noqa: E402
from fuzzconv.executor import Executor  # noqa: E402
from fuzzconv.pipeline import Pipeline  # noqa: E402
from fuzzconv.registry import default_registry  # noqa: E402
from fuzzconv.store import Store  # noqa: E402
from fuzzconv.workers import WorkerPool  # noqa: E402

WORK_KEYS = ("convert", "compile", "load", "infer")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny_keras")
    ap.add_argument("--evals", type=int, default=30)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--naive", type=int, default=8, help="pipelines to time in the naive loop")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fuzzconv-hunt-bench-"))
    os.environ.setdefault("FUZZCONV_CACHE", str(work / "home"))
    reg = default_registry()
    corpus = select(None, args.images)

    # Build the calibrated source once, as a user's would already be.
    with WorkerPool(work / "logs0") as pool:
        Executor(work / "prep", reg, pool).reference(args.model, corpus)

    store_dir = work / "hunt"
    with WorkerPool(store_dir / "logs") as pool, Store(store_dir) as db:
        ex = Executor(store_dir, reg, pool)
        hunt = Hunt(ex, db, HuntConfig(model=args.model, budget_s=3600, max_evals=args.evals,
                                        shrink=False), corpus)
        t0 = time.perf_counter()
        result = hunt.run()
        wall = time.perf_counter() - t0
        evals = list(db.evaluations(result.campaign))
    ref_t = hunt.evaluator.reference.timings
    fresh = [e for e in evals if e["fresh"]]
    confirm_s = sum(e["timings"].get("confirm", 0.0) for e in evals)  # run even on a cache hit
    work_s = sum(sum(e["timings"].get(k, 0.0) for k in WORK_KEYS) for e in fresh)
    work_s += confirm_s + sum(ref_t.get(k, 0.0) for k in WORK_KEYS)

    # The naive loop: the reference once, then an evenly spaced sample of the hunt's pipelines,
    # each from scratch (new workers, empty cache; the calibrated source model is kept).
    k = max(1, min(args.naive, len(evals)))
    sample = [evals[round(i * (len(evals) - 1) / max(1, k - 1))] for i in range(k)] if evals else []
    naive = [Pipeline.from_dict(e["pipeline"], reg) for e in sample]
    t1 = time.perf_counter()
    with WorkerPool(work / "naive-ref" / "logs") as pool:
        Executor(work / "naive-ref", reg, pool).reference(args.model, corpus)
    naive_ref_s = time.perf_counter() - t1
    per_pipeline = []
    for i, p in enumerate(naive):
        d = work / f"naive{i}"
        t = time.perf_counter()
        with WorkerPool(d / "logs") as pool:
            Executor(d, reg, pool).evaluate(p, corpus)
        per_pipeline.append(time.perf_counter() - t)
    mean_s = sum(per_pipeline) / len(per_pipeline) if per_pipeline else 0.0
    naive_wall = naive_ref_s + mean_s * result.evaluations
    hunt_rate = result.evaluations / wall * 3600
    naive_rate = result.evaluations / naive_wall * 3600 if naive_wall else 0.0
    print(json.dumps({
        "model": args.model, "images": args.images, "evaluations": result.evaluations,
        "hunt_wall_s": round(wall, 2), "irreducible_s": round(work_s, 2),
        "overhead_ratio": round(wall / work_s, 3) if work_s else None,
        "confirm_s": round(confirm_s, 2),
        "fresh_evaluations": len(fresh), "cache_hits": result.cache_hits, "fresh": result.fresh,
        "hunt_evals_per_hour": round(hunt_rate), "naive_evals_per_hour": round(naive_rate),
        "speedup": round(hunt_rate / naive_rate, 2) if naive_rate else None,
        "naive_reference_s": round(naive_ref_s, 2),
        "naive_pipeline_s": [round(x, 2) for x in per_pipeline],
        "naive_pipelines": [p.label() for p in naive],
    }, indent=1))


if __name__ == "__main__":
    main()
