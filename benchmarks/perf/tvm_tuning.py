"""Tuned TVM against untuned TVM and ONNX Runtime, and what tuning costs.

Speed (one model, default resnet101v2): the same images through three pipelines of one store,
``keras.tf2onnx ⇒ ort``, ``keras.tf2onnx → onnx.tvm → tvm.build ⇒ tvm`` and the same with
``tvm.build(tuning=metaschedule)``, each timed per image (batch 1, after a warm-up image,
``--passes`` passes over the images) in its own worker request, the three interleaved pass by
pass so machine load hits all alike; medians. Labels are compared with the Keras reference.

Tuning cost (``--tune``, default the paper's four models): ``fuzzconv tune --model M --budget B``
for each, as a user runs it; the figures are the tuning index's (wall seconds, trials, tasks), so
a model tuned before this run reports what its tuning cost then.

    nice -n 10 .venv/bin/python benchmarks/perf/tvm_tuning.py [--model resnet101v2]
        [--tune mobilenetv2,resnet101v2,densenet121,inceptionv3] [--budget 30m] [--images 4]
        [--passes 3] [--store DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fuzzconv.corpora import default_corpus  # noqa: E402
from fuzzconv.executor import Evaluation, Executor  # noqa: E402
from fuzzconv.oracle import compare  # noqa: E402
from fuzzconv.pipeline import Pipeline  # noqa: E402
from fuzzconv.session import open_session  # noqa: E402
from fuzzconv.tuning import tuning_status  # noqa: E402
from fuzzconv.versions import stack_versions  # noqa: E402
from fuzzconv.zoo import get_model  # noqa: E402

RELAX = [("keras.tf2onnx", {}), ("onnx.tvm", {})]
PIPELINES = {
    "ORT": ([("keras.tf2onnx", {})], "ort"),
    "TVM untuned": ([*RELAX, ("tvm.build", {})], "tvm"),
    "TVM tuned": ([*RELAX, ("tvm.build", {"tuning": "metaschedule"})], "tvm"),
}


def tune(model: str, budget: str, store: Path) -> dict[str, Any]:
    """``fuzzconv tune`` as a user runs it; its report and the index entry after it."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fuzzconv.cli", "tune", "--model", model,
                        "--budget", budget, "--store", str(store), "--json"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        return {"model": model, "error": r.stderr.strip()[-500:]}
    report = json.loads(r.stdout)
    return {"model": model, "wall_s": round(time.perf_counter() - t0, 1),
            "this_run": {k: report[k] for k in ("tasks", "covered", "tuned", "trials", "seconds",
                                                "stopped", "complete")},
            "index": tuning_status(model)}


def time_images(ex: Executor, pipeline: Pipeline, artifact: Path, inputs: Path) -> list[float]:
    """One pass of per-image timings (batch 1, warm) in the runtime's worker."""
    rt = ex.registry.get(pipeline.runtime.name, "runtime")
    spec = get_model(pipeline.model)
    with tempfile.TemporaryDirectory(dir=ex.store_dir) as tmp:
        res = ex.pool.request(rt.family, {
            "op": "run", "runtime": rt.name, "params": pipeline.runtime.params,
            "artifact": str(artifact), "inputs": str(inputs),
            "outputs": str(Path(tmp) / "logits.npy"), "model": spec.to_dict(),
            "device": "cpu", "batch_size": len(np.load(inputs, mmap_mode="r")),
            "image_repeats": 1}, timeout=3600)
    return [t for row in res["image_seconds"] for t in row]


def speed(model: str, store: Path, images: int, passes: int) -> dict[str, Any]:
    corpus = default_corpus(n=images)
    out: dict[str, Any] = {"model": model, "images": images, "passes": passes, "runtimes": {}}
    with open_session(store, listener=lambda s: print("  " + s, file=sys.stderr)) as ex:
        ref = ex.reference(model, corpus)
        inputs = ex.inputs(get_model(model), corpus)
        ready = {}
        for name, (steps, runtime) in PIPELINES.items():
            p = Pipeline.make(ex.registry, model, steps, runtime)
            ev = ex.evaluate(p, corpus)
            if not ev.ok:
                out["runtimes"][name] = {"error": ev.failure.to_dict()}  # type: ignore[union-attr]
                continue
            cmp = compare(ref.logits, ev.logits)
            art = ex.artifact(p, len(p.steps), Evaluation(p, None))
            ready[name] = (p, art)
            out["runtimes"][name] = {"pipeline": p.label(), "flips": cmp.flips,
                                     "max_abs_diff": cmp.max_abs_diff, "seconds": []}
        for _ in range(passes):
            for name, (p, art) in ready.items():
                out["runtimes"][name]["seconds"] += time_images(ex, p, art, inputs)
    for r in out["runtimes"].values():
        if r.get("seconds"):
            r["median_s"] = statistics.median(r["seconds"])
    ort = out["runtimes"].get("ORT", {}).get("median_s")
    for r in out["runtimes"].values():
        if ort and r.get("median_s"):
            r["vs_ort"] = r["median_s"] / ort
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet101v2", help="model to time ('' for none)")
    ap.add_argument("--tune", default="mobilenetv2,resnet101v2,densenet121,inceptionv3",
                    help="models to tune first ('' for none)")
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "fuzzconv-tvm-tuning")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "uptime": subprocess.run(
            ["uptime"], capture_output=True, text=True).stdout.strip(),
        "cores": os.cpu_count(), "versions": stack_versions(), "tuning": []}
    for m in [m for m in args.tune.split(",") if m]:
        print(f"tuning {m} (budget {args.budget})", file=sys.stderr)
        result["tuning"].append(tune(m, args.budget, args.store))
        print("  " + json.dumps(result["tuning"][-1]), file=sys.stderr)
    if args.model:
        print(f"timing {args.model}", file=sys.stderr)
        result["speed"] = speed(args.model, args.store, args.images, args.passes)
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = json.dumps(result, indent=1, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
