"""Helpers that run in the peer's own virtual environment, where fuzzconv is not installed.

    python peer_side.py to-polygraphy OUT.json REC.npz [REC.npz ...]
    python peer_side.py standalone MODEL.onnx REC.npz

``to-polygraphy`` writes recorded activations (``fuzzconv.shrink.reduce.save_arrays`` files, one
per input sample) as a Polygraphy input file: a list with one feed dict per sample, every tensor
of the graph in it, as the "layerwise inputs" of Polygraphy's reduction tutorial.

``standalone`` says whether a reduced model runs on its own: it must pass ``onnx.checker`` (full
check) and load and run in plain ONNX Runtime, every graph input fed its recorded value by name.
It prints one JSON object and exits 0 either way; fuzzconv must not be importable here.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np


def load_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {str(n): z[f"t{i}"] for i, n in enumerate(z["names"])}


def to_polygraphy(out: str, recs: list[str]) -> None:
    from polygraphy.json import save_json

    save_json([load_arrays(r) for r in recs], out, description="layerwise inputs")


def standalone(model_path: str, rec: str) -> dict:
    import onnx
    import onnxruntime as ort

    row: dict = {"fuzzconv_importable": importlib.util.find_spec("fuzzconv") is not None,
                 "ok": False}
    try:
        model = onnx.load(model_path)
        inits = {t.name for t in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in inits]
        row["inputs"] = names
        onnx.checker.check_model(model, full_check=True)
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        data = load_arrays(rec)
        missing = [n for n in names if n not in data]
        if missing:
            row["error"] = f"no value for input {missing[0]!r}"
            return row
        outs = sess.run(None, {n: data[n] for n in names})
        row["ok"] = all(np.all(np.isfinite(o)) for o in outs if np.issubdtype(o.dtype, np.floating))
        if not row["ok"]:
            row["error"] = "non-finite outputs"
    except Exception as exc:  # noqa: BLE001 - the answer is whether it runs
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    return row


def main(argv: list[str]) -> int:
    if argv[:1] == ["to-polygraphy"] and len(argv) >= 3:
        to_polygraphy(argv[1], argv[2:])
        return 0
    if argv[:1] == ["standalone"] and len(argv) == 3:
        print(json.dumps(standalone(argv[1], argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
