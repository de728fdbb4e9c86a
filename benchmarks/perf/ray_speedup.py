"""Wall time of one hunt run locally, on one Ray worker and on two: what `--ray` buys on a machine.

The same hunt (same seed, ``--max-evals N``, shrinking on) runs three times, each into a fresh
store so every run evaluates from a cold cache: locally (no Ray), then with ``--ray-workers 1``
and ``--ray-workers 2``, each on a private single-node Ray instance started here (loopback only,
its own auth token). The calibrated source model is built once before timing, as a user's would
already be. Each Ray run's time includes starting its actors and their framework workers;
starting Ray itself is reported apart (``ray_start_s``). Other load on the machine is not
controlled: ``load_average`` (1, 5, 15 min, at the end) says how busy it was.

With one Ray worker the hunt judges rounds of one pipeline, and the engine judges a round of one
(and a shrink pass of one candidate) in the driver itself: ``ray_1`` is a local hunt plus Ray's
start-up, not one remote worker. Prints one JSON object with the three times, the
speed-ups over the local run, and whether all three runs found the same findings.

    .venv/bin/python benchmarks/perf/ray_speedup.py [--model tiny_keras] [--evals 20]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from fuzzconv.corpora import select  # noqa: E402
from fuzzconv.executor import Executor  # noqa: E402
from fuzzconv.launch import run_hunt  # noqa: E402
from fuzzconv.registry import fresh_registry  # noqa: E402
from fuzzconv.workers import WorkerPool  # noqa: E402


def hunt(args: argparse.Namespace, store: Path, ray: str | None, workers: int | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = run_hunt(model=args.model, budget="2h", max_evals=args.evals, seed=args.seed, images=None,
                 limit=args.images, device="cpu", plugins=args.plugin, focus=args.focus,
                 store=store, resume=None, weights="calibrated", timeout=None,
                 max_chain=args.max_chain, thresholds={}, console=Console(stderr=True),
                 show_progress=False, ray=ray, ray_workers=workers)
    return {"seconds": round(time.perf_counter() - t0, 1), "evaluations": r.evaluations,
            "findings": sorted(json.dumps([f["signature"], f["culprit"]], sort_keys=True)
                               for f in r.findings)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny_keras")
    ap.add_argument("--evals", type=int, default=20)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chain", type=int, default=2)
    ap.add_argument("--plugin", type=Path, action="append",
                    help="a plugin file, repeatable; defaults to tests/assets/fault_plugin.py, "
                         "which injects a fault so that shrinking has work")
    ap.add_argument("--focus", default=None)
    args = ap.parse_args()
    args.plugin = args.plugin or [ROOT / "tests" / "assets" / "fault_plugin.py"]
    work = Path(tempfile.mkdtemp(prefix="fzray-bench-"))
    os.environ.setdefault("FUZZCONV_CACHE", str(work / "home"))
    # Ray reads these when imported: keep the instance on loopback and out of ~/.ray (and its
    # session files out of /tmp/ray, below).
    os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                       "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})

    reg = fresh_registry([str(p.resolve()) for p in args.plugin])
    with WorkerPool(work / "prep" / "logs") as pool:
        Executor(work / "prep", reg, pool).reference(args.model, select(None, args.images))

    # torch.compile keeps compiled kernels on disk, keyed among others by the thread count
    # (which Ray sets to 1 in its workers): give every run its own, empty kernel cache, or the
    # first run would pay for compiling what the later ones find there.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor-local")
    runs = {"local": hunt(args, work / "local", None, None)}
    import ray

    ray_start = []
    for n in (1, 2):
        # A fresh Ray instance per run, so its workers inherit this run's kernel cache.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / f"inductor-ray{n}")
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, _temp_dir=str(work / "ray"))
        ray_start.append(round(time.perf_counter() - t0, 1))
        try:
            runs[f"ray_{n}"] = hunt(args, work / f"ray{n}", "auto", n)
        finally:
            ray.shutdown()
    local = runs["local"]["seconds"]
    print(json.dumps({
        "model": args.model, "evaluations": args.evals, "images": args.images,
        "cpus": os.cpu_count(), "ray_start_s": ray_start, "load_average": os.getloadavg(),
        "seconds": {k: v["seconds"] for k, v in runs.items()},
        "speedup_vs_local": {k: round(local / v["seconds"], 2) for k, v in runs.items()
                             if k != "local"},
        "speedup_2_vs_1_workers": round(runs["ray_1"]["seconds"] / runs["ray_2"]["seconds"], 2),
        "same_findings": len({tuple(v["findings"]) for v in runs.values()}) == 1,
        "findings": runs["local"]["findings"],
    }, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
