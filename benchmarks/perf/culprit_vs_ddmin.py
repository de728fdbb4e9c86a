"""Fresh evaluations to isolate the culprit of a k-step pipeline: fuzzconv's bisection vs plain ddmin.

    python benchmarks/perf/culprit_vs_ddmin.py [--ks 4,8,12] [--faults conv_padding,...] [--no-write]

Cases: ``tiny_keras``, one single-culprit injected fault of ``benchmarks/faults/`` at its firing
setting, placed at a seeded position in a chain of ``k`` steps: ``keras.tf2onnx`` first, then
onnx→onnx steps that change nothing the oracle sees (``onnx.optimize(level=basic)``, ascending
``onnx.version`` conversions and the fault's own step at its inert default), runtime ORT.

Both methods start from the same state — a fresh cache holding only the source model, the
reference run and the failing pipeline's own evaluation — and are counted the same way: a
*fresh* evaluation is a judged pipeline that was not served whole from the cache.

- **bisection** (``fuzzconv.shrink.localize.find_culprit``): judges prefixes of the chain, each
  made runnable by the format's plainest runtime, and bisects for the first whose output diverges.
- **ddmin** (Zeller & Hildebrandt's delta debugging, written out below): minimizes the set of
  removable steps (every step but ``keras.tf2onnx``) to a 1-minimal subset that still fails with
  the same symptom; the culprit is what is left.

Goal: bisection needs at most ⌈log2 k⌉ + 3 fresh evaluations. Results are printed and written to
``benchmarks/RESULTS.md`` between the ``ddmin`` markers.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from run_faults import FAULTS, Fault, versions, write_results  # noqa: E402
BEGIN, END = "<!-- ddmin:begin -->", "<!-- ddmin:end -->"
SINGLE = ["conv_padding", "bn_scale", "layout_transpose", "int8_weight", "clip_mode"]
console = Console()


def ddmin(items: list[int], fails: Callable[[list[int]], bool]) -> list[int]:
    """Plain ddmin: a 1-minimal subset of ``items`` for which ``fails`` holds (it holds for all)."""
    n = 2
    while len(items) >= 2:
        size = math.ceil(len(items) / n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        subset = next((c for c in chunks if fails(c)), None)
        if subset is not None:
            items, n = subset, 2
            continue
        # with two chunks a complement is the other chunk, already tested
        complement = next((rest for c in chunks if len(chunks) > 2
                           for rest in [[x for x in items if x not in c]] if fails(rest)), None)
        if complement is not None:
            items, n = complement, max(n - 1, 2)
            continue
        if n >= len(items):
            break
        n = min(2 * n, len(items))
    return items


def chain(fault_step: str, params: dict, k: int, rng: random.Random) -> list[tuple[str, dict]]:
    """``keras.tf2onnx``, then k-1 onnx→onnx steps of which one is the fault."""
    fillers = k - 2
    versions = [15, 17, 18, 21]
    pool: list[tuple[str, dict]] = []
    for i in range(fillers):
        kind = i % 3
        if kind == 0 and versions:
            pool.append(("onnx.version", {"opset": versions.pop(0)}))
        elif kind == 1:
            pool.append(("onnx.optimize", {"level": "basic"}))
        else:
            pool.append((fault_step, {}))
    where = rng.randrange(0, fillers + 1)
    steps = pool[:where] + [(fault_step, params)] + pool[where:]
    return [("keras.tf2onnx", {})] + steps


def run_case(fault: str, k: int, seed: int, work: Path) -> dict:
    from fuzzconv.corpora import select
    from fuzzconv.evaluator import Evaluator
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.session import open_session
    from fuzzconv.shrink.localize import find_culprit

    path = FAULTS / f"{fault}.py"
    truth = Fault.load(path).truth
    step, params = truth["culprit"]["step"], truth["culprit"]["params"]
    steps = chain(step, params, k, random.Random(f"{fault}-{k}-{seed}"))
    position = next(i for i, (s, p) in enumerate(steps, 1) if s == step and p == params)
    corpus = select(None, 32)
    out: dict = {"fault": fault, "k": k, "position": position, "bound": math.ceil(math.log2(k)) + 3}
    for method in ("bisection", "ddmin"):
        store = work / f"{fault}-{k}-{method}"
        shutil.rmtree(store, ignore_errors=True)
        with open_session(store, [path]) as ex:
            # the source model comes from the shared per-run cache, not rebuilt per method
            ex.source_cache = type(ex.cache)(work / "models")
            ev = Evaluator(ex, "tiny_keras", corpus)
            full = Pipeline.make(ex.registry, "tiny_keras", steps, "ort")
            failing = ev.outcome(full)
            if failing.symptom is None:
                out[method] = {"error": "the full pipeline agrees"}
                continue
            fresh0, t0 = ex.fresh_evaluations, time.perf_counter()
            if method == "bisection":
                c = find_culprit(ex.registry, full, ev.outcome, "keras")
                found = c.index
            else:
                removable = list(range(2, k + 1))  # 1-based step indices; step 1 stays

                def fails(subset: list[int]) -> bool:
                    keep = [steps[0]] + [steps[i - 1] for i in sorted(subset)]
                    return ev.outcome(Pipeline.make(ex.registry, "tiny_keras", keep,
                                                    "ort")).key == failing.key

                left = ddmin(removable, fails)
                found = left[0] if len(left) == 1 else None
            out[method] = {"fresh": ex.fresh_evaluations - fresh0,
                           "seconds": time.perf_counter() - t0,
                           "found": found, "exact": found == position}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="4,8,12")
    ap.add_argument("--faults", default=",".join(SINGLE))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fuzzconv-ddmin-"))
    rows = []
    cases = [(f, int(k)) for k in args.ks.split(",") for f in args.faults.split(",")]
    with console.status("") as status:
        for i, (fault, k) in enumerate(cases, 1):
            status.update(f"[{i}/{len(cases)}] {fault}, k={k}")
            rows.append(run_case(fault, k, args.seed, work))
    shutil.rmtree(work, ignore_errors=True)
    header = ["fault", "k", "culprit at", "goal ⌈log2 k⌉+3", "bisection fresh", "bisection s",
              "ddmin fresh", "ddmin s", "both exact"]
    table = Table(*header, title="culprit isolation")
    lines = [BEGIN, "## Culprit isolation: bisection vs plain ddmin "
             "(`benchmarks/perf/culprit_vs_ddmin.py`)", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')}, tiny_keras, 32 images, seed {args.seed}; "
             f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}. "
             f"Stack: {versions()}. Fresh = judged pipelines not served whole from the cache; "
             "both methods start after the failing pipeline's own evaluation.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    over = 0
    for r in rows:
        b, d = r["bisection"], r["ddmin"]
        if "error" in b or "error" in d:
            cells = [r["fault"], str(r["k"]), str(r["position"]), str(r["bound"]),
                     b.get("error", ""), "", d.get("error", ""), "", "—"]
        else:
            over += b["fresh"] > r["bound"]
            cells = [r["fault"], str(r["k"]), str(r["position"]), str(r["bound"]), str(b["fresh"]),
                     f"{b['seconds']:.1f}", str(d["fresh"]), f"{d['seconds']:.1f}",
                     "yes" if b["exact"] and d["exact"] else f"bisection {b['exact']}, ddmin {d['exact']}"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    ok = [r for r in rows if "fresh" in r["bisection"] and "fresh" in r["ddmin"]]
    if ok:
        sb = sum(r["bisection"]["fresh"] for r in ok)
        sd = sum(r["ddmin"]["fresh"] for r in ok)
        tb = sum(r["bisection"]["seconds"] for r in ok)
        td = sum(r["ddmin"]["seconds"] for r in ok)
        lines += ["", f"Total fresh evaluations: bisection {sb}, ddmin {sd} "
                      f"({sd / max(sb, 1):.1f}×); time {tb:.0f} s vs {td:.0f} s "
                      f"({td / max(tb, 1e-9):.1f}×). Cases over the ⌈log2 k⌉+3 goal: {over}."]
    console.print(table)
    if not args.no_write:
        write_results("\n".join(lines + [END]), BEGIN, END)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
