"""The minimal generated model in a bundle: its source script, and the ONNX the culprit received.

A finding on a generated model (:mod:`fuzzconv.gen`) ships its minimal model twice, so whoever
gets the bundle can take the model itself, without fuzzconv:

    model/model.py       the model in its own framework: the very source fuzzconv built it from
                         (:mod:`fuzzconv.gen.keras_source`, :mod:`fuzzconv.gen.torch_source`)
                         and a short main that loads model/weights.npz, predicts
                         model/inputs.npy and compares with model/reference.npy
    model/weights.npz    its (calibrated) weights, by variable path (Keras) or state-dict key
    model/inputs.npy     the images, preprocessed for the model
    model/reference.npy  what the model gives on them in its own framework
    model.onnx           the model as ONNX: what the culprit received (or, for a converter to
                         ONNX, what it made; for a path without ONNX, the plainest conversion)
    test_data_set_0/     ONNX's backend-test layout beside model.onnx: input_0.pb (the images,
                         in the ONNX input's layout) and output_0.pb (the reference outputs), so
                         onnx_test_runner and ONNX Runtime's and TVM's own harnesses run it
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ...executor import Evaluation
from ...gen.export import backend_test_case, keras_weights
from ...gen.keras_source import render_keras
from ...gen.spec import GenSpec
from ...gen.torch_source import render_torch
from ...pipeline import Pipeline, Step, plainest_runtime
from ...protocol import Call
from ...registry import ARTIFACT_FILE
from .case import MAX_INPUTS, Case, Variant
from .outdir import OutDir

#: The plainest conversion of each source format to ONNX.
TO_ONNX = {"keras": "keras.tf2onnx", "torch": "torch.onnx_export"}

KERAS_MAIN = '''

if __name__ == "__main__":
    from pathlib import Path

    import numpy as np

    here = Path(__file__).resolve().parent
    model = build()
    with np.load(here / "weights.npz", allow_pickle=False) as weights:
        for variable in model.weights:
            variable.assign(weights[variable.path])
    x = np.load(here / "inputs.npy", allow_pickle=False)
    y = np.asarray(model(x, training=False))
    reference = np.load(here / "reference.npy", allow_pickle=False)
    print("top-1:", y.argmax(axis=1).tolist(), "max |y - reference|:",
          float(np.abs(y - reference).max()))
'''

TORCH_MAIN = '''

if __name__ == "__main__":
    from pathlib import Path

    import numpy as np

    here = Path(__file__).resolve().parent
    model = Model()
    with np.load(here / "weights.npz", allow_pickle=False) as weights:
        model.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files})
    model.eval()
    x = torch.from_numpy(np.load(here / "inputs.npy", allow_pickle=False))
    with torch.no_grad():
        y = model(x).numpy()
    reference = np.load(here / "reference.npy", allow_pickle=False)
    print("top-1:", y.argmax(axis=1).tolist(), "max |y - reference|:",
          float(np.abs(y - reference).max()))
'''


def model_script(spec: GenSpec, finding: str) -> str:
    """``model/model.py``: the model's source in its framework, runnable alone."""
    head = (f'"""The minimal model of fuzzconv finding {finding} ({spec.name}), in '
            f'{"Keras" if spec.framework == "keras" else "PyTorch"}:\n{spec.label()}, input '
            f"{spec.size}x{spec.size} RGB, {spec.classes} logits.\n\n"
            "`python model.py` rebuilds it with weights.npz, predicts inputs.npy and compares "
            "with reference.npy\n(what fuzzconv's reference run gave). It needs numpy and "
            f"{'keras (TensorFlow)' if spec.framework == 'keras' else 'torch'} only.\n" + '"""\n')
    if spec.framework == "keras":
        return head + render_keras(spec.annotated(), spec.name) + KERAS_MAIN
    return head + render_torch(spec.annotated()) + TORCH_MAIN


def _onnx_artifact(case: Case) -> tuple[Pipeline, int, str]:
    """(pipeline, steps, what it is) whose artifact is the ONNX to ship (module docstring)."""
    reg, p = case.ex.registry, case.pipeline
    fmts = [case.spec.source] + [reg.get(s.name).dst for s in p.steps]
    received = case.index - 1
    for n, why in ([(received, "the culprit's input")]
                   + [(k, "the ONNX the pipeline made before the culprit")
                      for k in range(received - 1, 0, -1)]
                   + ([(case.index, "the culprit's output")] if case.index <= len(p.steps)
                      else [])):
        if fmts[n] == "onnx":
            return p, n, why
    op = reg.get(TO_ONNX[case.spec.source])
    rt = plainest_runtime(reg, "onnx")
    plain = Pipeline.make(reg, p.model, [Step.make(op.name, op.canonical_params({}))], rt,
                          source_format=case.spec.source)
    return plain, 1, f"the plainest conversion to ONNX ({op.name}); the culprit reads " \
                     f"{fmts[received]}"


def write_model(out: OutDir, case: Case, variant: Variant,
                say: Callable[[str], None] = lambda s: None) -> list[str]:
    """Write the files of the module docstring; returns the README's lines about them."""
    ex, spec = case.ex, GenSpec.from_dict(case.spec.generated, case.spec.name)
    say("writing the minimal model: its source, weights and ONNX")
    names = list(case.corpus.names)
    picked = variant.input_names if not variant.reduced else [
        n for n in case.finding.get("failing_inputs") or [] if n in names]
    images = case.corpus.subset([names.index(n) for n in picked[:MAX_INPUTS]
                                 if n in names] or [0])
    inputs = np.load(ex.inputs(case.spec, images), allow_pickle=False)
    reference = ex.reference(case.spec.name, images).logits
    calibration = ex.calibration_inputs(case.spec)
    source = ex.source_artifact(case.spec, calibration)
    out.write_text("model/model.py", model_script(spec, case.finding["id"]))
    out.save("model/inputs.npy", inputs.astype(np.float32))
    out.save("model/reference.npy", np.asarray(reference, dtype=np.float32))
    with tempfile.TemporaryDirectory(dir=ex.store_dir) as tmp:
        weights = Path(tmp) / "weights.npz"
        if spec.framework == "keras":
            ex.pool.request("tf", Call.to(keras_weights, src=str(source), dst=str(weights)),
                            timeout=ex.timeout_for("keras"))
        else:
            weights = source.parent / "weights.npz"
        out.copy(weights, "model/weights.npz")
        p, n, what = _onnx_artifact(case)
        ev = Evaluation(p, None)
        onnx_file = ex.artifact(p, n, ev, calibration=calibration)
        lines = [f"- `model/model.py` — the minimal model `{spec.name}` ({spec.label()}) in "
                 f"{'Keras' if spec.framework == 'keras' else 'PyTorch'}: the source fuzzconv "
                 "built it from; `python model/model.py` rebuilds it with `model/weights.npz` and "
                 "predicts `model/inputs.npy` (compare with `model/reference.npy`, its own "
                 "framework's outputs), without fuzzconv"]
        if onnx_file is None or onnx_file.name != ARTIFACT_FILE["onnx"]:
            return lines + [f"- no `model.onnx`: {what} could not be made "
                            f"({ev.failure.error_class if ev.failure else '?'})"]
        out.copy(onnx_file, "model.onnx")
        np.save(Path(tmp) / "x.npy", inputs.astype(np.float32), allow_pickle=False)
        np.save(Path(tmp) / "y.npy", np.asarray(reference, dtype=np.float32), allow_pickle=False)
        names_pb = ex.pool.request("ort", Call.to(
            backend_test_case, model=str(onnx_file), inputs=str(Path(tmp) / "x.npy"),
            expected=str(Path(tmp) / "y.npy"), dst=str(Path(tmp) / "case"),
            model_layout=case.spec.layout), timeout=ex.timeout_for("ort"))
        for name in ("input_0.pb", "output_0.pb"):
            out.copy(Path(tmp) / "case" / name, f"test_data_set_0/{name}")
    step = p.steps[n - 1].label() if n else "the source"
    return lines + [
        f"- `model.onnx` — the minimal model as ONNX: {what} (after `{step}`)",
        f"- `test_data_set_0/` — ONNX's backend-test layout for `model.onnx`: `input_0.pb` (the "
        f"{len(inputs)} image(s) as `{names_pb['input']}`, {names_pb['layout']}) and "
        f"`output_0.pb` (`{names_pb['output']}`: what the model gives in its own framework), "
        "for `onnx_test_runner` and ONNX Runtime's and TVM's own harnesses"]
