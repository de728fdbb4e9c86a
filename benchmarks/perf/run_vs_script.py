"""`fuzzconv run` against a hand-written script doing the same work, cold and warm.

The script does what `fuzzconv run` does for one pipeline — Keras reference inference, tf2onnx,
ONNX Runtime inference — in one plain process with no cache. Both read the same calibrated source
model (built once before timing, as a user's would already be) and the same images. Rounds
alternate script / cold run / warm run so machine noise hits all three alike; the medians' ratios
are reported.

    .venv/bin/python benchmarks/perf/run_vs_script.py [--model mobilenetv2] [--images 32] [--rounds 3]
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

ROOT = Path(__file__).resolve().parents[2]
FUZZCONV = [sys.executable, "-m", "fuzzconv.cli"]

SCRIPT = r'''
import sys, numpy as np
src, inputs, out = sys.argv[1:4]
import keras, tensorflow as tf, tf2onnx, onnxruntime as ort
model = keras.models.load_model(src, safe_mode=True, compile=False)
x = np.load(inputs)
ref = np.concatenate([np.asarray(model(x[i:i+8], training=False)) for i in range(0, len(x), 8)])
spec = (tf.TensorSpec((None, *x.shape[1:]), tf.float32, name="input"),)
fn = tf.function(lambda t: model(t, training=False), input_signature=spec)
proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=13, output_path=out)
sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
y = np.concatenate([sess.run(None, {name: x[i:i+8]})[0] for i in range(0, len(x), 8)])
print((ref.argmax(1) != y.argmax(1)).mean(), np.abs(ref - y).max())
'''


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:4]} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fuzzconv-bench-"))
    env = dict(os.environ, FUZZCONV_CACHE=str(work / "home"), TF_CPP_MIN_LOG_LEVEL="2")
    pipeline = work / "p.json"
    pipeline.write_text(json.dumps({"model": args.model, "steps": [
        {"step": "keras.tf2onnx", "params": {"opset": 13}}], "runtime": {"name": "ort"}}))
    # Build the calibrated source model and the inputs once, outside the timing.
    warm_store = work / "prep"
    subprocess.run([*FUZZCONV, "run", str(pipeline), "--limit", str(args.images), "--store",
                    str(warm_store), "--json"], env=env, cwd=ROOT, check=False, capture_output=True)
    src = next((work / "home" / "models").rglob("model.keras"))
    inputs = next((warm_store / "cache" / "outputs").rglob("inputs.npy"))
    script = work / "script.py"
    script.write_text(SCRIPT)

    rows: dict[str, list[float]] = {"script": [], "cold": [], "warm": []}
    for r in range(args.rounds):
        rows["script"].append(timed([sys.executable, str(script), str(src), str(inputs),
                                     str(work / f"s{r}.onnx")], env))
        store = work / f"store{r}"
        cmd = [*FUZZCONV, "run", str(pipeline), "--limit", str(args.images), "--store", str(store), "--json"]
        rows["cold"].append(timed(cmd, env))
        rows["warm"].append(timed(cmd, env))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(json.dumps({"model": args.model, "images": args.images, "rounds": args.rounds,
                      "seconds": rows, "median": med,
                      "cold_over_script": med["cold"] / med["script"],
                      "warm_over_script": med["warm"] / med["script"]}, indent=1))


if __name__ == "__main__":
    main()
