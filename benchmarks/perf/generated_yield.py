"""What hunts on generated models find: distinct buckets, minimal models, and bundles that reproduce.

    .venv/bin/python benchmarks/perf/generated_yield.py [--families gen:keras,gen:torch]
        [--budget 60m] [--seed 0] [--no-bundles] [--work DIR] [--json FILE] [--no-write]

For each family it runs ``fuzzconv hunt --model FAMILY --budget B --json`` in a fresh store, one
family after the other. From each store it reads every bucket (findings that are one bug), and
for one finding of each bucket:

- its symptom, culprit, the minimal model's layers (the head is not a layer) and whether the
  model shrinker reached a 1-minimal model;
- whether it is a real divergence of the pinned stack: every finding here is, since no plugin is
  loaded (an undeclared converter refusal is a known limitation, listed, never a finding);
- with bundles (the default): ``fuzzconv bundle ID -o DIR --no-check``, then the bundle's
  ``repro.py`` run with an interpreter that cannot import fuzzconv (an import hook refuses it, so
  a bundle that still needed fuzzconv fails loudly), and its verdict line.

Results go to the console and, unless ``--no-write``, to ``benchmarks/RESULTS.md`` between the
``generated-yield`` markers, with the hunts' known limitations. Whether a bucket is a known
upstream issue is judged by a person reading the bundle's README against the trackers; this
script leaves that column for them. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results_section import add_output_options, publish, work_dir  # benchmarks/perf/, beside this script

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- generated-yield:begin -->", "<!-- generated-yield:end -->"

#: Runs a script as ``__main__`` with fuzzconv made unimportable.
NO_FUZZCONV = """
import importlib.abc, runpy, sys
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fuzzconv" or name.startswith("fuzzconv."):
            raise ModuleNotFoundError(f"{name}: a bundle must not need fuzzconv")
        return None
sys.meta_path.insert(0, _Refuse())
sys.path[:] = [p for p in sys.path if p not in ("", %(root)r)]
sys.argv = ["repro.py"]
runpy.run_path("repro.py", run_name="__main__")
"""


def fuzzconv_cli(args: list[str], log: Path, check: bool = True) -> subprocess.CompletedProcess:
    with open(log, "a") as f:
        res = subprocess.run([sys.executable, "-c", "from fuzzconv.cli import main; main()", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=f, text=True)
    if check and res.returncode not in (0, 1):
        raise SystemExit(f"fuzzconv {' '.join(args)} failed ({res.returncode}); see {log}")
    return res


def bucket_rows(store: Path) -> list[dict[str, Any]]:
    """One finding per bucket (the first seen), with how many findings the bucket holds."""
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    rows = db.execute("SELECT bucket, data, first_seen FROM findings ORDER BY first_seen").fetchall()
    started = db.execute("SELECT MIN(started) FROM campaigns").fetchone()[0]
    db.close()
    out: dict[str, dict[str, Any]] = {}
    for bucket, data, first_seen in rows:
        f = json.loads(data)
        if bucket in out:
            out[bucket]["findings"] += 1
            continue
        shrink = f.get("shrink") or {}
        spec = f.get("minimal_model_spec") or f.get("model_spec") or {}
        out[bucket] = {
            "bucket": bucket, "id": f["id"], "findings": 1, "symptom": f["symptom"],
            "signature": f["signature"], "culprit": f.get("culprit"),
            "error": (f.get("failure") or {}).get("error_class"),
            "flip_rate": f.get("flip_rate"),
            "minimal_layers": f.get("minimal_model_layers"),
            "layers": len(spec.get("layers", [])) if spec else None,
            "one_minimal": shrink.get("model_one_minimal"),
            "pipeline": " → ".join([s["step"] for s in (f.get("minimal_pipeline") or f["pipeline"])
                                    ["steps"]] + [(f.get("minimal_pipeline") or f["pipeline"])
                                                  ["runtime"]["name"]]),
            "at_s": round(first_seen - started, 1),
        }
    return list(out.values())


def repro_verdict(bundle: Path) -> str:
    """The verdict line of a bundle's repro.py, run where fuzzconv cannot be imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        res = subprocess.run([sys.executable, "-c", NO_FUZZCONV % {"root": str(ROOT)}],
                             cwd=bundle, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "TIMEOUT"
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    verdict = next((ln for ln in reversed(lines) if "REPRODUCED" in ln), None)
    if verdict is None:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return f"error: {tail[:160]}"
    return "REPRODUCED" if verdict.strip().startswith("REPRODUCED") else "NOT REPRODUCED"


def bundle_each(store: Path, rows: list[dict[str, Any]], out: Path, log: Path) -> None:
    """Bundle one finding of each bucket (``rows`` from :func:`bucket_rows`) into ``out/ID`` and set
    each row's ``repro`` to what its ``repro.py`` says where fuzzconv cannot be imported."""
    for b in rows:
        dest = out / b["id"]
        made = fuzzconv_cli(["bundle", b["id"], "-o", str(dest), "--no-check", "--store",
                             str(store)], log, check=False)
        b["repro"] = repro_verdict(dest) if made.returncode == 0 else "no bundle"
        print(f"  {b['id']} {b['signature'][:60]}: {b['repro']}", flush=True)


def run(families: list[str], budget: str, seed: int, bundles: bool,
        work: Path) -> list[dict[str, Any]]:
    rows = []
    for family in families:
        store = work / family.replace(":", "-")
        log = work / f"{store.name}.log"
        load0 = os.getloadavg()[0]
        print(f"{family}: hunting for {budget} ...", flush=True)
        t0 = time.time()
        res = fuzzconv_cli(["hunt", "--model", family, "--budget", budget, "--seed", str(seed),
                         "--json", "--store", str(store)], log)
        hunt = json.loads(res.stdout)
        row: dict[str, Any] = {
            "family": family, "evaluations": hunt["evaluations"], "wall_s": round(time.time() - t0),
            "load": [round(load0, 1), round(os.getloadavg()[0], 1)],
            "limitations": hunt.get("limitations", []), "buckets": bucket_rows(store)}
        if bundles:
            bundle_each(store, row["buckets"], work / "bundles", log)
        print(json.dumps({k: v for k, v in row.items() if k != "buckets"}), flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], budget: str) -> str:
    layers = [b["layers"] for r in rows for b in r["buckets"] if b["layers"] is not None]
    lines = [BEGIN, "## Generated models (`benchmarks/perf/generated_yield.py`)", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')}: `fuzzconv hunt --model FAMILY --budget "
             f"{budget}`, one fresh store per family, no plugin (every finding is the pinned "
             f"stack's own), on {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}. Each bucket's bundle ran its `repro.py` with fuzzconv "
             "unimportable.", "",
             "| family | evaluations | buckets | bundles reproduced | load |", "|---|---|---|---|---|"]
    for r in rows:
        rep = sum(b.get("repro") == "REPRODUCED" for b in r["buckets"])
        lines.append(f"| {r['family']} | {r['evaluations']} | {len(r['buckets'])} | "
                     f"{rep} of {len(r['buckets'])} | {r['load'][0]}–{r['load'][1]} |")
    lines += ["", f"Median minimal model: {statistics.median(layers):g} layers besides the head "
                  f"(over {len(layers)} buckets)." if layers else "No minimal models.", "",
              "| family | finding | symptom | minimal pipeline | culprit | minimal model | "
              "1-minimal | repro.py | upstream |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for b in r["buckets"]:
            c = b["culprit"]
            culprit = f"`{c['step']}` {json.dumps(c['params'])}" if c else "—"
            sym = b["symptom"] + (f" ({b['error']})" if b["error"] else "") + (
                f" {b['flip_rate']:.0%}" if b["flip_rate"] is not None else "")
            lines.append(f"| {r['family']} | {b['id']} | {sym} | {b['pipeline']} | {culprit} | "
                         f"`{b['minimal_layers']}` | {b['one_minimal']} | "
                         f"{b.get('repro', 'not run')} | to judge |")
    lim = sorted({x for r in rows for x in r["limitations"]})
    if lim:
        lines += ["", "Known limitations the hunts met (not findings):", ""]
        lines += [f"- {x}" for x in lim]
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default="gen:keras,gen:torch")
    ap.add_argument("--budget", default="60m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bundles", action="store_true")
    add_output_options(ap)
    a = ap.parse_args()
    work = work_dir(a, "generated-yield-")
    rows = run(a.families.split(","), a.budget, a.seed, not a.no_bundles, work)
    publish(a, rows, markdown(rows, a.budget), BEGIN, END, work)


if __name__ == "__main__":
    main()
