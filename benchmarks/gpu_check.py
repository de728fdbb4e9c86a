"""Run mobilenetv2 pipelines on CUDA, compare labels with the CPU reference, time them.

Called by gpu_check.sh; prints one Markdown table (paste it into RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzzconv.corpora import select  # noqa: E402
from fuzzconv.evaluator import Evaluator  # noqa: E402
from fuzzconv.pipeline import Pipeline  # noqa: E402
from fuzzconv.session import open_session  # noqa: E402

PIPELINES = {
    "ORT CUDA provider": ([("keras.tf2onnx", {})], ("ort", {})),
    "TVM cuda target": ([("keras.tf2onnx", {}), ("onnx.tvm", {}), ("tvm.build", {})], ("tvm", {})),
    "torch cuda (onnx2torch)": ([("keras.tf2onnx", {}), ("onnx.onnx2torch", {})], ("torch", {})),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--images", type=int, default=64)
    args = ap.parse_args()
    corpus = select(None, args.images)
    rows = []
    with open_session(Path(tempfile.mkdtemp(prefix="gpu-store-"))) as ex:
        ev = Evaluator(ex, args.model, corpus)
        ref = ev.reference
        for name, (steps, rt) in PIPELINES.items():
            for device in ("cpu", "cuda"):
                t0 = time.perf_counter()
                try:
                    p = Pipeline.make(ex.registry, args.model, steps, rt, device)
                    out = ev.outcome(p)
                    timed = ex.evaluate(p, corpus.subset(list(range(8))), repeats=10).batch_seconds
                    med = sorted(timed)[len(timed) // 2] if timed else float("nan")
                    cmp = out.comparison or {}
                    rows.append((name, device, out.symptom or "agrees", cmp.get("flip_rate"),
                                 cmp.get("max_abs_diff"), med * 1000 / 8, time.perf_counter() - t0,
                                 (out.failure or {}).get("message", "")[:80]))
                except Exception as exc:  # noqa: BLE001 - a failing configuration is a result
                    rows.append((name, device, "error", None, None, None,
                                 time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:80]))
    print(f"\nmobilenetv2, {len(corpus)} images, reference: Keras on CPU "
          f"(infer {ref.timings.get('infer', 0):.2f} s)\n")
    print("| pipeline | device | verdict | flip rate | max abs diff | ms/image (batch 8, median of 10) | wall s | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda v, fmt: "—" if v is None else format(v, fmt)  # noqa: E731
        print(f"| {r[0]} | {r[1]} | {r[2]} | {f(r[3], '.1%')} | {f(r[4], '.2e')} | {f(r[5], '.2f')} "
              f"| {r[6]:.0f} | {r[7]} |")


if __name__ == "__main__":
    main()
