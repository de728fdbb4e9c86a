"""Triage listings on a large store: `reports` and `show` on 10,000 generated findings.

The store is written through fuzzconv's own store API (``Store.new_campaign``,
``Store.upsert_finding``, ``Store.set_finding_status``), so its schema and indexes are the real
ones. Findings have the contract's full shape and sizes like a hunt's (pipelines, minimal pipeline,
failing inputs, per-node errors, shrink profile, versions) and are spread over several models,
symptoms, culprit steps and parameters, statuses and campaigns; a share has no culprit and is
bucketed by its signature alone.

Each command runs as a subprocess, as a user runs it; the median of ``--rounds`` runs is reported,
next to the median of ``fuzzconv --help``, which is the part every command spends starting Python
and loading the command line. With ``--baseline DIR`` (a directory holding another version's
``fuzzconv`` package, e.g. from ``git archive REV fuzzconv | tar -x -C DIR``) the same commands
also run against that version on the same store, rounds interleaved, and the ratios are printed.

    .venv/bin/python benchmarks/perf/reports_speed.py [--findings 10000] [--rounds 5]
        [--baseline DIR --baseline-note TEXT] [--write-results] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fuzzconv.campaign import bucket_of  # noqa: E402
from fuzzconv.store import Store  # noqa: E402

CLI = [sys.executable, "-c", "from fuzzconv.cli import main; main()"]
SECTION = "## `fuzzconv reports` and `show` on a large store"

MODELS = ["mobilenetv2", "resnet101v2", "densenet121", "inceptionv3", "tiny_keras", "tiny_torch"]
# symptom weights: most findings are label flips, a few crash or hang
SYMPTOMS = [("label_flip", 55), ("numeric", 20), ("crash", 10), ("slowdown", 7), ("nan", 4),
            ("timeout", 4)]
STATUSES = [("new", 50), ("confirmed", 30), ("fixed", 12), ("flaky", 8)]
# culprit step -> parameter choices (as the step table names them)
CULPRITS: dict[str, dict[str, list[Any]]] = {
    "keras.tflite": {"optimizations": [[], ["DEFAULT"]], "supported_types": [[], ["float16"]]},
    "keras.tf2onnx": {"opset": [13, 15, 17], "inputs_as_nchw": [False, True]},
    "tflite.tf2onnx": {"opset": [13, 17]},
    "onnx.optimize": {"level": ["basic", "extended", "all"]},
    "onnx.tvm": {},
    "tvm.pass": {"name": ["FoldConstant", "FuseOps", "LegalizeOps", "ConvertLayout",
                          "DeadCodeElimination", "CanonicalizeBindings", "ToMixedPrecision"]},
    "tvm.build": {"opt_level": [0, 1, 2, 3, 4], "target": ["llvm", "llvm -mcpu=skylake",
                                                           "llvm -fast-math"]},
    "ort": {"graph_optimization_level": ["disable", "basic", "extended", "all"]},
    "tflite": {"xnnpack": [False, True], "threads": [1, 2, 4]},
    "torch": {"compile": [False, True]},
}
VERSIONS = {"fuzzconv": "0.1.0", "tensorflow": "2.21.0", "keras": "3.15.1", "tf2onnx": "1.17.0",
            "onnx": "1.23.2", "onnxruntime": "1.32.0", "torch": "2.14.1", "torchvision": "0.29.1",
            "tvm": "0.27.0.post1", "numpy": "2.4.6"}


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def _pipeline(rng: random.Random, model: str, culprit: dict[str, Any] | None) -> dict[str, Any]:
    steps = [{"step": "keras.tf2onnx", "params": {"opset": rng.choice([13, 15, 17])}},
             {"step": "onnx.tvm", "params": {}},
             {"step": "tvm.pass", "params": {"name": rng.choice(CULPRITS["tvm.pass"]["name"])}},
             {"step": "tvm.build", "params": {"opt_level": rng.randint(0, 4), "target": "llvm"}}]
    runtime = {"name": "tvm", "params": {"device": "cpu"}}
    if culprit and culprit["step"] in ("ort", "tflite", "torch"):
        runtime = dict(name=culprit["step"], params=culprit["params"])
    elif culprit:
        steps[rng.randrange(len(steps))] = {"step": culprit["step"], "params": culprit["params"]}
    return {"model": model, "steps": steps[: rng.randint(1, 4)], "runtime": runtime}


def make_finding(rng: random.Random, campaign: str, model: str) -> dict[str, Any]:
    symptom = _pick(rng, SYMPTOMS)
    culprit = None
    if rng.random() < 0.9:
        step = rng.choice(list(CULPRITS))
        culprit = {"step": step, "params": {k: rng.choice(v) for k, v in CULPRITS[step].items()
                                            if rng.random() < 0.7}}
    params = ",".join(f"{k}={v}" for k, v in (culprit or {}).get("params", {}).items())
    signature = (f"{symptom}:{culprit['step']}" + (f":{params}" if params else "") if culprit
                 else f"{symptom}:unattributed:{rng.randrange(400)}")
    images = rng.choice([24, 64, 200])
    flipped = sorted(rng.sample(range(images), rng.randint(1, min(images, 20))))
    flips = symptom == "label_flip"
    pipeline = _pipeline(rng, model, culprit)
    nodes = [f"/model/block_{i}/conv/Conv" for i in range(rng.randint(4, 16))]
    return {
        "id": f"F-{rng.getrandbits(32):08x}", "model": model, "symptom": symptom,
        "signature": signature, "flip_rate": round(len(flipped) / images, 4) if flips else None,
        "images": images, "pipeline": pipeline,
        "minimal_pipeline": {**pipeline, "steps": pipeline["steps"][-1:]},
        "culprit": culprit, "failing_inputs": [f"corpora/natural/{i:04d}.png" for i in flipped[:8]],
        "flipping_images": len(flipped) if flips else 0,
        "first_divergent_node": nodes[-1] if symptom in ("label_flip", "numeric") else None,
        "node_errors": [{"node": nd, "max_abs": rng.random() * 10 ** rng.randint(-6, 1)}
                        for nd in nodes],
        "fix_hint": f"dropping {culprit['step']} agrees" if culprit else None,
        "evaluations": {"hunt": rng.randint(1, 400), "shrink": rng.randint(0, 40),
                        "cache_hits": rng.randint(0, 900)},
        "flaky": False, "versions": VERSIONS, "bundle": None, "campaign": campaign,
        "status": "new", "hits": rng.randint(1, 12), "phase": rng.choice(["coverage", "mutate"]),
        "comparison": {"flip_rate": len(flipped) / images, "max_abs_diff": rng.random() * 8,
                       "max_rel_diff": rng.random()},
        "tie_flips": rng.randint(0, 3), "failure": None, "found_as": signature,
        "shrink": {"steps_before": len(pipeline["steps"]), "steps_after": 1, "one_minimal": True,
                   "profile": {p: {"calls": rng.randint(0, 9), "successes": rng.randint(0, 3)}
                               for p in ("drop_step", "shorten_chain", "reset_param",
                                         "lower_opt_level", "bisect_inputs")}},
    }


def generate(directory: Path, findings: int, campaigns: int, seed: int = 0) -> list[str]:
    """Write the store; returns the finding IDs."""
    rng = random.Random(seed)
    ids: list[str] = []
    seen: set[str] = set()
    start = time.time() - 30 * 86400
    with Store(directory) as db:
        cids = [db.new_campaign(rng.choice(MODELS), i, {"model": "x", "seed": i}, VERSIONS)
                for i in range(campaigns)]
        db.db.execute("BEGIN")
        for n in range(findings):
            cid = cids[n % campaigns]
            f = make_finding(rng, cid, rng.choice(MODELS))
            while f["id"] in seen:  # keep IDs unique, as the engine's hashes are
                f["id"] = f"F-{rng.getrandbits(32):08x}"
            db.upsert_finding(f, cid, bucket_of(f))
            status = _pick(rng, STATUSES)
            if status != "new":
                db.set_finding_status(f["id"], status)
            ids.append(f["id"])
            seen.add(f["id"])
        # spread sightings over a month, as campaigns over time would leave them
        for fid in ids:
            t = start + rng.random() * 30 * 86400
            db.db.execute("UPDATE findings SET first_seen = ?, last_seen = ? WHERE id = ?",
                          (t, t + rng.random() * 86400 * 3, fid))
        db.db.execute("COMMIT")
        for cid in cids:
            db.set_campaign_status(cid, "done")
    return ids


def unique_prefix(ids: list[str], fid: str) -> str:
    for k in range(4, len(fid) + 1):
        if sum(i.startswith(fid[:k]) for i in ids) == 1:
            return fid[:k]
    return fid


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall-clock and CPU seconds (user + system) of one run, and its stdout. On a loaded machine
    the CPU figure is the steadier of the two."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # outside the repository, so that PYTHONPATH alone says which fuzzconv runs
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:])} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def machine(load_before: float) -> str:
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}; 1-minute load average "
            f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after the timings, on a machine "
            f"shared with other work")


def write_results(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text()
    pattern = re.compile(r"^" + re.escape(SECTION) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda m: text, old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--findings", type=int, default=10_000)
    ap.add_argument("--campaigns", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="directory holding another fuzzconv package")
    ap.add_argument("--baseline-note", default="",
                    help="what the baseline is, for RESULTS.md (e.g. its commit)")
    ap.add_argument("--keep", action="store_true", help="keep the generated store")
    ap.add_argument("--write-results", action="store_true",
                    help="replace this benchmark's section of benchmarks/RESULTS.md")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fuzzconv-reports-"))
    store = work / "store"
    t0 = time.perf_counter()
    ids = generate(store, args.findings, args.campaigns)
    gen_s = time.perf_counter() - t0
    size_mb = (store / "fuzzconv.sqlite").stat().st_size / 2**20
    with Store(store) as db:
        nb = db.db.execute("SELECT COUNT(DISTINCT bucket) FROM findings").fetchone()[0]
        model, symptom, status = "mobilenetv2", "label_flip", "confirmed"
    prefix = unique_prefix(ids, ids[len(ids) // 2])
    print(f"store: {args.findings} findings, {nb} buckets, {args.campaigns} campaigns, "
          f"{size_mb:.1f} MB (written in {gen_s:.1f} s): {store}")

    s = ["--store", str(store)]
    commands = {
        "fuzzconv --help (start-up)": ["--help"],
        "reports": ["reports", *s],
        "reports --json": ["reports", "--json", *s],
        f"reports --model {model} --symptom {symptom} --status {status}":
            ["reports", "--model", model, "--symptom", symptom, "--status", status, *s],
        f"show {prefix}": ["show", prefix, *s],
    }
    env = dict(os.environ, COLUMNS="160")
    versions = {"this": dict(env, PYTHONPATH=str(ROOT))}
    if args.baseline:
        versions["baseline"] = dict(env, PYTHONPATH=str(args.baseline.resolve()))
    load_before = os.getloadavg()[0]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    outputs: dict[str, str] = {}
    for _ in range(args.rounds):
        for label, argv in commands.items():
            for v, venv in versions.items():
                wall, cpu, stdout = timed(CLI + argv, venv, work)
                times.setdefault((label, v), []).append((wall, cpu))
                if v == "this":
                    outputs[label] = stdout
    first_line = outputs["reports"].splitlines()[0]
    json_bytes = len(outputs["reports --json"].encode())

    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    head = "| command | wall s, median (min–max) | CPU s, median |" + (
        " baseline wall s | baseline CPU s | baseline ÷ this, CPU |" if args.baseline else "")
    rule = "|---|---|---|" + ("---|---|---|" if args.baseline else "")
    lines = [head, rule]
    for label in commands:
        k = (label, "this")
        ws = [w for w, _ in times[k]]
        row = f"| `{label}` | {wall[k]:.2f} ({min(ws):.2f}–{max(ws):.2f}) | {cpu[k]:.2f} |"
        if args.baseline:
            b = (label, "baseline")
            row += f" {wall[b]:.2f} | {cpu[b]:.2f} | {cpu[b] / cpu[k]:.1f}× |"
        lines.append(row)
    table = "\n".join(lines)
    print(table)
    print(f"reports prints: {first_line!r}; reports --json prints {json_bytes / 2**20:.1f} MB")

    if args.write_results:
        date = datetime.date.today().isoformat()
        startup = ("fuzzconv --help (start-up)", "this")
        intro = (f"`benchmarks/perf/reports_speed.py`: a generated store of {args.findings:,} "
                 f"findings ({nb} buckets, {args.campaigns} campaigns, {len(MODELS)} models, every "
                 f"symptom and status; {size_mb:.0f} MB) written through the store API; each "
                 f"command run {args.rounds} times as a subprocess. Date {date}; "
                 f"{machine(load_before)}, so absolute seconds are pessimistic.")
        after = (f"`reports` prints '{first_line}' and the first 50 buckets; `reports --json` "
                 f"prints every finding ({json_bytes / 2**20:.1f} MB). Of each figure, "
                 f"{cpu[startup]:.2f} s of CPU ({wall[startup]:.2f} s of wall clock) is starting "
                 f"Python and loading the command line (`fuzzconv --help`). CPU time is "
                 f"what a run costs on an idle machine; wall time here includes waiting for the "
                 f"other work's cores.")
        paras = [intro, table, after] + ([f"Baseline: {args.baseline_note}"] if args.baseline else [])
        text = SECTION + "\n\n" + "\n\n".join(
            p if p is table else textwrap.fill(p, 100, break_on_hyphens=False) for p in paras) + "\n"
        write_results(text)
        print("written to benchmarks/RESULTS.md")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
