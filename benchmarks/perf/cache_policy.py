"""What walking the cache on every commit cost a generated-model hunt, side by side.

    .venv/bin/python benchmarks/perf/cache_policy.py [--budget 150] [--seed 3]
        [--work DIR] [--json FILE] [--no-write]

The cache keeps to its cap by counting what each commit adds and walking itself only when the
count passes the cap or is old (:mod:`fuzzconv.cache`). Before, every commit walked every entry.
This runs ``fuzzconv hunt --model gen:torch --focus ort`` for the same budget and seed twice, one
after the other on the same machine: once as shipped, once with every commit walking the cache
again (the old policy, patched in for that run only), and reports evaluations, generated models
and findings of each, and their ratio. Results go to the console and, unless ``--no-write``, to
``benchmarks/RESULTS.md`` between the ``cache-policy`` markers. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results_section import add_output_options, publish, work_dir  # benchmarks/perf/, beside this script

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- cache-policy:begin -->", "<!-- cache-policy:end -->"
#: The old policy: every commit walks the whole cache.
WALK_EVERY_COMMIT = "import fuzzconv.cache as c; c.Cache._grew = lambda self, entry: self.evict(); "


def hunt(store: Path, budget: int, seed: int, walk_always: bool) -> dict[str, Any]:
    code = (WALK_EVERY_COMMIT if walk_always else "") + "from fuzzconv.cli import main; main()"
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", code, "hunt", "--model", "gen:torch", "--focus",
                        "ort", "--budget", f"{budget}s", "--seed", str(seed), "--json",
                        "--store", str(store)], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"hunt failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    out, _ = json.JSONDecoder().raw_decode(p.stdout[p.stdout.index("{"):])
    with sqlite3.connect(store / "fuzzconv.sqlite") as db:
        models = db.execute("select count(*) from generated_models").fetchone()[0]
    files = sum(len(f) for _, _, f in os.walk(store / "cache"))
    return {"policy": "walk on every commit" if walk_always else "count, walk when needed",
            "evaluations": out["evaluations"], "models": models,
            "findings": len(out["findings"]), "cache_files": files,
            "wall_s": round(time.time() - t0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=150, help="each hunt's budget, seconds")
    ap.add_argument("--seed", type=int, default=3)
    add_output_options(ap)
    args = ap.parse_args(argv)
    work = work_dir(args, "cache-policy-")
    load = [os.getloadavg()[0]]
    rows = [hunt(work / "walk", args.budget, args.seed, True),
            hunt(work / "count", args.budget, args.seed, False)]
    load.append(os.getloadavg()[0])
    old, new = rows
    lines = [BEGIN, "## Cache policy in a generated-model hunt (`benchmarks/perf/cache_policy.py`)",
             "", f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, "
             f"{os.cpu_count()} cores, load {load[0]:.1f} at the start and {load[1]:.1f} at the "
             f"end: `fuzzconv hunt --model gen:torch --focus ort --budget {args.budget}s "
             f"--seed {args.seed}` twice, one after the other, each on an empty store.", "",
             "| cache policy | evaluations | generated models | findings | files in the cache "
             "| wall s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['policy']} | {r['evaluations']} | {r['models']} | {r['findings']} | "
              f"{r['cache_files']} | {r['wall_s']} |" for r in rows]
    ratio = new["evaluations"] / max(old["evaluations"], 1)
    lines += ["", f"Counting instead of walking: {ratio:.1f}x the evaluations in the same "
              f"budget ({new['models'] / max(old['models'], 1):.1f}x the models). Every commit "
              "walked every entry, so a hunt slowed as its cache grew.", END]
    publish(args, rows, "\n".join(lines), BEGIN, END, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
