"""The issue text of a bundle (``README.md``) and ``repro.py``'s docstring: whose bug it is, the
environment, how to reproduce it, expected against actual, how often, what the bundle holds."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np

from ...oracle import top_k
from ...pipeline import Pipeline
from ...registry import plugin_files
from ...versions import stack_versions
from .case import Case, Variant
from .packages import DISTRIBUTIONS, pins

#: Whose bug it is: project name and where its issues go.
PROJECTS: dict[str, tuple[str, str | None]] = {
    "tvm": ("Apache TVM", "https://github.com/apache/tvm/issues"),
    "tf2onnx": ("tf2onnx", "https://github.com/onnx/tensorflow-onnx/issues"),
    "tflite": ("TensorFlow Lite", "https://github.com/tensorflow/tensorflow/issues"),
    "tensorflow": ("TensorFlow", "https://github.com/tensorflow/tensorflow/issues"),
    "ort": ("ONNX Runtime", "https://github.com/microsoft/onnxruntime/issues"),
    "onnx": ("ONNX", "https://github.com/onnx/onnx/issues"),
    "onnx2torch": ("onnx2torch", "https://github.com/ENOT-AutoDL/onnx2torch/issues"),
    "torch": ("PyTorch", "https://github.com/pytorch/pytorch/issues"),
    "plugin": ("the plugin's author", None),
}

#: Each built-in step and runtime as a culprit: (a key of PROJECTS, what it is in words).
CULPRITS: dict[str, tuple[str, str]] = {
    "keras.tf2onnx": ("tf2onnx", "tf2onnx's Keras converter"),
    "keras.tflite": ("tflite", "the TFLite converter"),
    "tflite.tf2onnx": ("tf2onnx", "tf2onnx's TFLite converter"),
    "onnx.optimize": ("ort", "ONNX Runtime's offline graph optimisation"),
    "onnx.version": ("onnx", "onnx's opset version converter"),
    "onnx.onnx2torch": ("onnx2torch", "onnx2torch's converter"),
    "torch.onnx_export": ("torch", "torch.onnx.export"),
    "onnx.tvm": ("tvm", "TVM's Relax ONNX frontend"),
    "torch.tvm": ("tvm", "TVM's Relax PyTorch frontend"),
    "tvm.pass": ("tvm", "a TVM Relax pass"),
    "tvm.build": ("tvm", "TVM's compiler"),
    "keras": ("tensorflow", "Keras under XLA"),
    "tflite": ("tflite", "the TFLite interpreter"),
    "ort": ("ort", "an ONNX Runtime session"),
    "torch": ("torch", "torch.compile"),
    "tvm": ("tvm", "TVM's Relax VM"),
}

SYMPTOM_PHRASES = {
    "label_flip": "changes top-1 predictions",
    "numeric": "changes outputs beyond tolerance",
    "crash": "crashes",
    "timeout": "hangs",
    "nan": "produces NaN/Inf outputs",
}


def culprit_of(case: Case) -> tuple[str, str]:
    """(the project whose bug it is, what the culprit is in words)."""
    op = case.op
    if op.is_plugin:
        transform = getattr(op.fn, "fuzzconv_transform", None)
        kind = {"onnx": "ONNX transform", "relax": "TVM transform"}.get(op.src, "")
        return "plugin", f"a plugin's {kind}" if transform and kind else "a plugin step"
    return CULPRITS.get(op.name, ("plugin", op.name))


def title(case: Case) -> str:
    project, what = culprit_of(case)
    if project == "plugin":
        what = f"plugin step {case.op.name}"
    return (f"{what[:1].upper()}{what[1:]} {SYMPTOM_PHRASES[case.finding['symptom']]} "
            f"({case.label}, {case.spec.name})")


def script_head(case: Case, dists: list[str]) -> str:
    """``repro.py``'s docstring."""
    _, what = culprit_of(case)
    summary = textwrap.fill(
        f"It loads the artifact in input/, applies {case.label} to it ({what}) with the code "
        "fuzzconv ran (copied below), runs the result on inputs.npy the plainest way and compares "
        "with expected.npy: what the same inputs gave before this step. The step runs in a child "
        "process, so a crash (even a segfault) is observed.", 96)
    return (f'"""{title(case)}\n\nStandalone reproduction of fuzzconv '
            f"finding {case.finding['id']}. It needs Python 3 with {', '.join(dists)} only:\n\n"
            f"    pip install {pins(case, dists)}\n    python repro.py     # REPRODUCED: exit 1; "
            "NOT REPRODUCED: exit 0; a package missing: exit 2\n\n" + summary + '\n"""\n')


def readme(case: Case, variant: Variant, dists: list[str], culprit_code: str,
           run: tuple[int, str] | None, actual: np.ndarray | None,
           model_files: list[str] | tuple = ()) -> str:
    """``README.md``: the issue text; ``model_files`` lists a generated model's own files."""
    f, spec, p = case.finding, case.spec, case.pipeline
    project_key, what = culprit_of(case)
    project, url = PROJECTS[project_key]
    versions = f.get("versions") or {}
    L: list[str] = [f"# {title(case)}", ""]
    before = p.steps[:case.index - 1]
    made = (" → ".join(s.label() for s in before) if before else "nothing (the source model)")
    stage = "run" if case.op.kind == "runtime" else "step"
    where = "the runtime" if stage == "run" else f"step {case.index} of {len(p.steps)}"
    L.append(f"Applying {what} — `{case.label}`, {where} of the pipeline "
             f"`{p.label()}` — {SYMPTOM_PHRASES[f['symptom']]} of the image classifier "
             f"`{spec.name}` ({spec.source} source, input {'×'.join(map(str, spec.input_shape))} "
             f"{spec.layout}, {spec.classes} classes). Its input is the model after {made}; "
             f"`input/{variant.input_file}` is that artifact, so `repro.py` starts right before "
             "the culprit.")
    if spec.generated:
        L += ["", f"The model is generated by fuzzconv and minimal (dropping any one layer or "
                  f"resetting any one attribute loses the bug): `{f.get('minimal_model_layers')}`"
                  ", then global average pooling and a dense classifier. `model/model.py` is "
                  "its source and `model.onnx` its ONNX (see the bundle's contents)."]
    L.append("")
    if project_key == "plugin":
        plugin = Path(case.op.source_file or "").name
        L.append(f"**Report to:** the author of the plugin `{plugin}` (step `{case.op.name}`).")
    else:
        L.append(f"**Report to:** {project}" + (f" — {url}" if url else "") + ".")
    L.append(f"**Found by:** fuzzconv {versions.get('fuzzconv', '?')}, finding `{f['id']}`, "
             f"campaign `{f.get('campaign')}`, signature `{f['signature']}`.")
    keys = {d: k for d, k in DISTRIBUTIONS.values()}
    L += ["", "## Environment", "", "| package | version |", "|---|---|"]
    for d in ("python", *dists):
        L.append(f"| {d} | {versions.get(keys.get(d, d), '?')} |")
    now = stack_versions()
    changed = {k: (v, now.get(k)) for k, v in versions.items() if now.get(k) != v}
    L.append("")
    L.append("Whole stack when found: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    if changed:
        L.append("Bundled on a different stack: " + ", ".join(
            f"{k} {a} → {b or 'absent'}" for k, (a, b) in changed.items()) + ".")
    L += ["", "## Steps to reproduce", "", "```sh", "python -m venv venv && . venv/bin/activate",
          f"pip install {pins(case, dists)}", "python repro.py", "```", ""]
    after = [e.label() for e in case.chain[1:]]
    then = f", then {' → '.join(f'`{a}`' for a in after)}," if after else ""
    how = (f"runs `input/{variant.input_file}` with `{case.label}`" if stage == "run" else
           f"applies `{case.label}` to `input/{variant.input_file}`{then}")
    L.append(f"`repro.py` (numpy and the packages above only; no fuzzconv) {how} on "
             f"`inputs.npy` ({_describe_inputs(variant)}) with the code fuzzconv ran, copied from "
             "its source, and compares with `expected.npy`. It prints `REPRODUCED` and exits 1 "
             "while the bug is there, `NOT REPRODUCED` and exits 0 once it is fixed (2: a package "
             "is missing). The culprit, as `repro.py` runs it:")
    L += ["", "```python", culprit_code.strip(), "```", ""]
    L += ["## Expected vs actual", ""]
    L += _expected_vs_actual(case, variant, actual)
    L += ["", "## How often", ""]
    L += _how_often(case)
    if variant.note:
        L += ["", variant.note]
    L += ["", "## Bundle contents", ""]
    L += _contents(case, variant) + list(model_files)
    L += ["", "## Checked when bundled", ""]
    if run is None:
        L.append("`repro.py` was not run when the bundle was written"
                 + (" (a hang takes its full timeout)." if f["symptom"] == "timeout" else "."))
    else:
        verdict = {1: "reproduced", 0: "did not reproduce",
                   2: "could not run"}.get(run[0], "failed")
        used = ", ".join(f"{d} {now.get(keys[d], '?')}" for d in dists)
        L.append(f"On {time.strftime('%Y-%m-%d %H:%M')} with fuzzconv's interpreter ({used}), "
                 f"`python repro.py` {verdict} (exit {run[0]}):")
        L += ["", "```", run[1].strip()[-4000:], "```"]
    return "\n".join(L) + "\n"


def _describe_inputs(variant: Variant) -> str:
    shape = "×".join(map(str, variant.inputs.shape))
    if variant.reduced:
        return f"a recorded activation, {shape}"
    names = ", ".join(f"`{n}`" for n in variant.input_names)
    return (f"{len(variant.inputs)} image(s), {shape} {variant.model['layout']} float32: "
            f"{names}")


def _expected_vs_actual(case: Case, variant: Variant, actual: np.ndarray | None) -> list[str]:
    f = case.finding
    if f["symptom"] in ("crash", "timeout"):
        fail = f.get("failure") or {}
        L = [f"Expected: `{case.label}` completes. Actual: it "
             + ("hangs" if f["symptom"] == "timeout" else "fails")
             + f" with `{fail.get('error_class', '?')}`"
             + (f" at {fail.get('stage')}" if fail.get("stage") else "") + ":", "",
             "```", (fail.get("message") or "").strip()[:1500], "```"]
        tail = (fail.get("stderr_tail") or "").strip()
        if tail:
            L += ["", "Last lines of its stderr:", "", "```", tail[-1500:], "```"]
        return L
    if variant.compare == "activation":
        L = ["Expected (`expected.npy`): the reduced subgraph run by ONNX Runtime with default "
             "options — what the recorded activation gave before the step. Actual "
             "(`actual.npy`): after it."]
    else:
        L = [f"Expected (`expected.npy`): `input/{variant.input_file}` run by the plainest "
             "runtime of its format — what the same inputs gave before the step. Actual "
             "(`actual.npy`): after it."]
    exp = variant.expected
    if actual is None or exp is None or actual.shape != exp.shape:
        return L + ["", "(no actual outputs were recorded: see the check below)"]
    if variant.compare == "activation":
        L += ["", "| input | max abs diff | expected range | max abs diff / range |",
              "|---|---|---|---|"]
        for i, name in enumerate(variant.input_names):
            diff = float(np.nanmax(np.abs(actual[i].astype(np.float64) - exp[i])))
            span = float(np.ptp(exp[i])) or 1.0
            L.append(f"| `{name}` | {diff:.4g} | {span:.4g} | {diff / span:.3g} |")
        return L
    L += ["", "| input | expected top-5 (logit) | actual top-5 (logit) | max abs diff |",
          "|---|---|---|---|"]
    e5, a5 = top_k(exp), top_k(np.where(np.isfinite(actual), actual, -np.inf))
    for i, name in enumerate(variant.input_names):
        expected_cells = ", ".join(f"{int(j)} ({exp[i, j]:.3f})" for j in e5[i])
        actual_cells = ", ".join(f"{int(j)} ({actual[i, j]:.3f})" for j in a5[i])
        diff = np.abs(actual[i].astype(np.float64) - exp[i])
        L.append(f"| `{name}` | {expected_cells} | {actual_cells} | {np.nanmax(diff):.4g} |")
    return L


def _how_often(case: Case) -> list[str]:
    f = case.finding
    cmp = f.get("comparison") or {}
    minimal = Pipeline.from_dict(f.get("minimal_pipeline") or f["pipeline"], case.ex.registry)
    L = []
    if f.get("flip_rate") is not None:
        flips = f.get("flipping_images", cmp.get("flips"))
        ties = f" ({f['tie_flips']} more flips were near-ties)" if f.get("tie_flips") else ""
        L.append(f"On the campaign's {f['images']} images the pipeline as found flipped the top-1 "
                 f"label on {flips}: flip rate **{f['flip_rate']:.1%}**{ties}.")
        if cmp:
            L.append(f"Max |Δlogit| {cmp.get('max_abs_diff', float('nan')):.4g}, top-5 agreement "
                     f"{cmp.get('top5_agreement', float('nan')):.3f}, Kendall τ "
                     f"{cmp.get('kendall_tau', float('nan')):.3f}, NaN/Inf outputs "
                     f"{cmp.get('nan', 0)}.")
    else:
        L.append(f"`{f['symptom']}` on the campaign's corpus ({f['images']} images): the step "
                 "fails whatever the images.")
    L.append(f"Minimal pipeline: `{minimal.label()}`; seen {f.get('hits', 1)} time(s) in the "
             "campaign" + ("; **flaky**: reruns disagreed" if f.get("flaky") else "") + ".")
    if f.get("fix_hint"):
        L.append(f"Nearest agreeing configuration: {f['fix_hint']}.")
    if f.get("first_divergent_node"):
        L.append(f"First divergent node: `{f['first_divergent_node']}`.")
    path = f.get("node_errors") or []
    if path:
        L += ["", "| node | max abs error | diverges |", "|---|---|---|"]
        for n in path:
            err = n.get("max_abs")
            L.append(f"| `{n.get('node')}` | {'—' if err is None else f'{err:.3g}'} | "
                     f"{'yes' if n.get('diverges') else 'no'} |")
    return L


def _contents(case: Case, variant: Variant) -> list[str]:
    what = "the reduced subgraph" if variant.reduced else "the culprit's input artifact"
    extra = ", with the files it refers to" if len(variant.input_files) > 1 else ""
    L = [f"- `repro.py` — the reproduction; `input/` — {what} (`{variant.input_file}`{extra})",
         "- `inputs.npy`, `expected.npy`, `actual.npy` — the inputs, the outputs before the "
         "step, the outputs after it (as recorded when bundled): plain `.npy`, loaded with "
         "`allow_pickle=False`",
         "- `finding.json`, `pipeline.json` — the finding and its minimal pipeline as fuzzconv "
         "stores them"]
    if case.op.is_plugin:
        name = Path(case.op.source_file or "").name
        helpers = [f"`plugin/{rel}`" for rel, _ in plugin_files(case.op.source_file or "")[1:]]
        L.append(f"- `plugin/{name}` — the plugin file that defines `{case.op.name}`, as it was "
                 "loaded" + (f", beside the modules of its own it imports ({', '.join(helpers)})"
                             if helpers else "") +
                 ". It imports `fuzzconv.plugins`; `fuzzconv_plugins_shim.py` stands in "
                 "for it (its decorators only remember each function under its step name), so "
                 "`repro.py` imports the plugin without fuzzconv.")
    return L
