"""What a default hunt yields on the paper's models, against an earlier version, side by side.

    .venv/bin/python benchmarks/perf/hunt_yield.py [--models resnet101v2,mobilenetv2]
        [--budget 15m] [--baseline REF] [--no-baseline] [--overturn N] [--no-write]

For each model it runs ``fuzzconv hunt --model M --budget B --json`` exactly as the README does,
each hunt in a fresh store (the calibrated source model is built into the per-user cache first,
so no hunt pays for calibrating it), once with this checkout and once with ``--baseline`` (a git
revision, checked out into a temporary worktree and run with the same interpreter), one after
the other in one run. From each store it reads:

- evaluations, findings by symptom, and which label-flip findings are *minimized*: shrunk, with
  a culprit and a first divergent node;
- time from the campaign's start to the first finding and to the first minimized label flip
  (the finding's ``first_seen``);
- how many evaluations were judged on the probe set alone and how many the probe sent on to the
  whole corpus;
- with ``--overturn N``: up to N of the probe-only evaluations (cheapest first, by their own
  measured cost) judged again on the whole corpus, and how many of those verdicts the whole
  corpus overturned.

Results go to the console and, unless ``--no-write``, to ``benchmarks/RESULTS.md`` between the
``hunt-yield`` markers. Wall times depend on the machine's load, which is recorded; nothing here
asserts a time.
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
BEGIN, END = "<!-- hunt-yield:begin -->", "<!-- hunt-yield:end -->"
BASELINE = "a41b3f6"  # the hunt before measured costs, probes and risk order


def _fuzzconv(tree: Path, args: list[str], log: Path) -> Any:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.time()
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, "-c", "from fuzzconv.cli import main; main()", *args],
                             cwd=tree, env=env, stdout=subprocess.PIPE, stderr=f, text=True)
    if res.returncode != 0:
        raise SystemExit(f"fuzzconv {' '.join(args)} failed ({res.returncode}); see {log}")
    out = json.loads(res.stdout)
    if isinstance(out, dict):  # a hunt (``models --check`` gives a list)
        out["wall_s"] = round(time.time() - t0, 1)
    return out


def _read_store(store: Path) -> dict[str, Any]:
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    started = db.execute("SELECT started FROM campaigns").fetchone()[0]
    findings = [dict(json.loads(d), first_seen=fs) for d, fs in
                db.execute("SELECT data, first_seen FROM findings ORDER BY first_seen")]
    evals = [dict(json.loads(o), symptom=sym) for o, sym in
             db.execute("SELECT outcome, symptom FROM evaluations")]
    db.close()

    def minimized(f: dict[str, Any]) -> bool:
        return bool(f.get("minimal_pipeline") and f.get("culprit")
                    and f.get("first_divergent_node"))

    flips = [f for f in findings if f["symptom"] == "label_flip"]
    done = [f for f in flips if minimized(f)]
    # judged on the probe alone: agreed there (or only slower), never sent on to the corpus
    probe = [e for e in evals if e.get("probe") and not e["probe"].get("escalated")
             and e["symptom"] in (None, "slowdown")]
    return {
        "findings": len(findings),
        "by_symptom": {s: sum(f["symptom"] == s for f in findings)
                       for s in sorted({f["symptom"] for f in findings})},
        "label_flips": len(flips),
        "minimized_flips": len(done),
        "first_finding_s": round(findings[0]["first_seen"] - started, 1) if findings else None,
        "first_minimized_flip_s": round(done[0]["first_seen"] - started, 1) if done else None,
        "flips": [{"id": f["id"], "signature": f["signature"], "flip_rate": f.get("flip_rate"),
                   "culprit": f.get("culprit"), "node": f.get("first_divergent_node"),
                   "minimized": minimized(f), "at_s": round(f["first_seen"] - started, 1)}
                  for f in flips],
        "probe_only": len(probe),
        "escalated": sum(bool(e.get("probe") and e["probe"].get("escalated")) for e in evals),
    }


def _overturned(store: Path, n: int) -> dict[str, int]:
    """Judge up to ``n`` probe-only evaluations again on the whole corpus."""
    sys.path.insert(0, str(ROOT))
    from fuzzconv.campaign import HuntConfig
    from fuzzconv.corpora import select
    from fuzzconv.evaluator import Evaluator
    from fuzzconv.oracle import Thresholds
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.session import open_session

    db = sqlite3.connect(store / "fuzzconv.sqlite")
    cfg = HuntConfig(**json.loads(db.execute("SELECT config FROM campaigns").fetchone()[0]))
    rows = [(json.loads(p), json.loads(o), json.loads(t)) for p, o, t in
            db.execute("SELECT pipeline, outcome, timings FROM evaluations WHERE symptom IS NULL")]
    db.close()
    # the verdicts to check: "agrees", on the probe alone
    probe = [(p, t) for p, o, t in rows if o.get("probe") and not o["probe"].get("escalated")]
    probe.sort(key=lambda r: sum(v for k, v in r[1].items() if k in ("convert", "compile", "infer")))
    checked = overturned = 0
    which: list[str] = []
    with open_session(store, weights=cfg.weights) as ex:
        ev = Evaluator(ex, cfg.model, select(cfg.images_dir, cfg.images),
                       Thresholds(**cfg.thresholds), probe_size=cfg.probe,
                       slowdown_vs=cfg.slowdown_vs)
        for p, _t in probe[:n]:
            out = ev.outcome(Pipeline.from_dict(p, ex.registry), staged=False)
            checked += 1
            if out.symptom not in (None, "slowdown"):
                overturned += 1
                which.append(f"{out.pipeline.brief(ex.registry)}: {out.verdict()}")
    return {"checked": checked, "overturned": overturned, "probe_only": len(probe),
            "which": which}


def _prepare(tree: Path, model: str, work: Path) -> None:
    """Build the calibrated source model into the per-user cache (no hunt pays for it)."""
    _fuzzconv(tree, ["models", "--check", "--only", model, "--json", "--store",
                     str(work / "prepare")], work / f"prepare-{model}.log")


def run(models: list[str], budget: str, baseline: str | None, overturn: int,
        work: Path) -> list[dict[str, Any]]:
    trees = [("this", ROOT)]
    if baseline:
        base = work / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), baseline], cwd=ROOT,
                       check=True, capture_output=True)
        trees.append((f"baseline {baseline}", base))
    rows = []
    try:
        for model in models:
            _prepare(ROOT, model, work)
            for name, tree in trees:
                store = work / f"{model}-{name.split()[0]}"
                load0 = os.getloadavg()[0]
                print(f"{model} / {name}: hunting for {budget} ...", flush=True)
                hunt = _fuzzconv(tree, ["hunt", "--model", model, "--budget", budget, "--json",
                                        "--store", str(store)], work / f"{store.name}.log")
                row = {"model": model, "version": name, "evaluations": hunt["evaluations"],
                       "wall_s": hunt["wall_s"], "load": [round(load0, 1),
                                                          round(os.getloadavg()[0], 1)],
                       **_read_store(store)}
                if overturn and name == "this":
                    row["overturn"] = _overturned(store, overturn)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        if baseline:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "baseline")],
                           cwd=ROOT, capture_output=True)
    return rows


def _secs(v: Any) -> str:
    return "—" if v is None else f"{v:.0f}"


def markdown(rows: list[dict[str, Any]], budget: str) -> str:
    lines = [BEGIN, "## Hunt yield (`benchmarks/perf/hunt_yield.py`)", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')}: `fuzzconv hunt --model M --budget {budget}`, "
             f"fresh store each, calibrated model cached beforehand, both versions one after the "
             f"other on {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}. Load average is the 1-minute figure at the start and "
             "end of each hunt.", "",
             "| model | version | evaluations | findings (by symptom) | label flips minimized | "
             "first finding (s) | first minimized flip (s) | probe only / escalated | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sym = ", ".join(f"{k} {v}" for k, v in r["by_symptom"].items()) or "none"
        lines.append(f"| {r['model']} | {r['version']} | {r['evaluations']} | {r['findings']} "
                     f"({sym}) | {r['minimized_flips']} of {r['label_flips']} | "
                     f"{_secs(r['first_finding_s'])} | {_secs(r['first_minimized_flip_s'])} | "
                     f"{r['probe_only']} / {r['escalated']} | {r['load'][0]}–{r['load'][1]} |")
    lines.append("")
    for r in rows:
        for f in r["flips"]:
            c = f["culprit"]
            culprit = f"{c['step']} {json.dumps(c['params'])}" if c else "—"
            lines.append(f"- {r['model']} ({r['version']}): {f['id']} at {f['at_s']:.0f} s, flip "
                         f"rate {f['flip_rate']:.1%}, culprit {culprit}, first divergent node "
                         f"`{f['node']}`{'' if f['minimized'] else ' (not minimized)'}")
    for r in rows:
        o = r.get("overturn")
        if o:
            lines.append(f"- {r['model']}: {o['probe_only']} evaluations were judged on the probe "
                         f"alone; {o['checked']} of them (cheapest first) judged again on the "
                         f"whole corpus: {o['overturned']} overturned"
                         + (f" ({'; '.join(o['which'])})." if o.get("which") else "."))
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet101v2,mobilenetv2")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--overturn", type=int, default=12)
    add_output_options(ap)
    a = ap.parse_args()
    work = work_dir(a, "hunt-yield-")
    rows = run(a.models.split(","), a.budget, None if a.no_baseline else a.baseline,
               a.overturn, work)
    publish(a, rows, markdown(rows, a.budget), BEGIN, END, work)


if __name__ == "__main__":
    main()
