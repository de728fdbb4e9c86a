"""Which of fuzzconv's bundled findings are real: the same third opinion NNSmith's reports get.

A bundle (``fuzzconv bundle``) holds the culprit's input, the inputs, ``expected.npy`` (what the
pipeline gave before the culprit step) and, for a generated PyTorch model, the minimal model as
``model/model.py`` with its weights. Each bucket's bundle is judged here:

* **fails** — a crash or hang the bundle's ``repro.py`` reproduces: a converter or runtime
  failing on a model its source framework runs (documented refusals are limitations, never
  findings, so they never reach a bundle). That it also does so where fuzzconv cannot be
  imported is the comparison's separate "repro.py" column.
* **differs, well conditioned** — the model computed in float64 (the PyTorch model, every weight,
  input and cast raised to double) agrees with ``expected.npy`` under fuzzconv's oracle (default
  thresholds), the culprit's output (``repro.py --actual-out``) does not, and its difference is
  more than ten times what the float64 result moves when every input value moves by 1e-5 of
  itself: the arithmetic is stable and the culprit alone changed it.
* **nearer float64** — the culprit's output agrees with the float64 result: the culprit is the
  more exact. Not a bug.
* **ill-conditioned** — ``expected.npy`` is itself off the float64 result, or the culprit's
  difference is within ten times what that input noise does (a floor, a comparison or a sign
  right at a boundary after arithmetic that rounds differently): undecided, and not counted as
  real.
* **not reproduced**, **cannot judge** — ``repro.py`` no longer shows it, or there is no model in
  float64 to judge against (a Keras-sourced bundle) or it failed.

Run with fuzzconv's venv (its oracle, numpy, torch, onnxruntime); ``repro.py`` runs in a child
process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fuzzconv.oracle import compare, judge

REAL = ("fails", "differs, well conditioned")
VERDICTS = (*REAL, "nearer float64", "ill-conditioned", "not reproduced", "cannot judge")
SECONDS = 600
#: The conditioning test: the float64 result on ``NOISY_RUNS`` copies of the inputs, each value
#: moved by ``NOISE`` of itself (over 100 times float32's rounding); the culprit's difference must
#: exceed ``MARGIN`` times the most that moved it.
NOISE, NOISY_RUNS, MARGIN = 1e-5, 4, 10.0


def diverges(ref: np.ndarray, out: np.ndarray) -> bool:
    """fuzzconv's own oracle, at its default thresholds, on two logit arrays (images x classes):
    a label flip (ties aside), NaN, or a numeric difference."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return ref.shape != out.shape or judge(compare(ref, out)) is not None


def float64_logits(bundle: Path, noise: float = 0.0, seed: int = 0) -> np.ndarray | None:
    """The bundle's PyTorch model in float64 on its inputs, each value moved by ``noise`` of
    itself at random (None without a PyTorch model)."""
    source = bundle / "model" / "model.py"
    if not source.is_file():
        return None
    import torch

    # the generated model's casts back from integers and booleans follow its input's type
    namespace: dict[str, Any] = {"__name__": f"bundle_model_{bundle.name}"}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    model = namespace["Model"]()
    with np.load(bundle / "model" / "weights.npz", allow_pickle=False) as w:
        model.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files})
    model = model.double().eval()
    x = np.load(bundle / "inputs.npy", allow_pickle=False).astype(np.float64)
    if noise:
        x = x * (1 + noise * np.random.default_rng(seed).standard_normal(x.shape))
    x = torch.from_numpy(x)
    with torch.no_grad():
        return model(x).numpy()


def actual_of(bundle: Path) -> tuple[str, np.ndarray | None]:
    """``repro.py``'s verdict line and the culprit's output (None for a crash)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "actual.npy"
        try:
            p = subprocess.run([sys.executable, "repro.py", "--actual-out", str(out)], cwd=bundle,
                               capture_output=True, text=True, timeout=SECONDS)
        except subprocess.TimeoutExpired:
            return "TIMEOUT", None
        lines = [ln.strip() for ln in p.stdout.splitlines() if "REPRODUCED" in ln]
        verdict = lines[-1] if lines else "error"
        return verdict, (np.load(out, allow_pickle=False) if out.is_file() else None)


def judge_bundle(bundle: Path) -> dict[str, Any]:
    """The verdict on one bundle, with why."""
    try:
        finding = json.loads((bundle / "finding.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"verdict": "cannot judge", "why": f"finding.json: {type(e).__name__}"}
    said, actual = actual_of(bundle)
    if said != "REPRODUCED":
        return {"verdict": "not reproduced", "why": f"repro.py: {said}"}
    if finding["symptom"] in ("crash", "timeout"):
        return {"verdict": "fails", "why": f"{finding['symptom']} in {finding['culprit']['step']}"}
    try:
        truth = float64_logits(bundle)
    except Exception as e:  # noqa: BLE001  (a model that will not run in double)
        return {"verdict": "cannot judge", "why": f"float64: {str(e).splitlines()[0][:120]}"}
    if truth is None or actual is None:
        return {"verdict": "cannot judge", "why": "no PyTorch model to compute in float64"}
    expected = np.load(bundle / "expected.npy", allow_pickle=False)
    off_e = float(np.abs(expected - truth).max())
    off_a = float(np.abs(np.nan_to_num(actual, nan=np.inf) - truth).max())
    why = f"max |expected - float64| {off_e:.3g}, max |actual - float64| {off_a:.3g}"
    if diverges(truth, expected):
        return {"verdict": "ill-conditioned", "why": why}
    if not diverges(truth, actual):
        return {"verdict": "nearer float64", "why": why}
    # how far the float64 result itself moves when the inputs move by far more than float32
    # rounding: a difference that is not well above that is a boundary case, not the culprit's
    spread = max(float(np.abs(float64_logits(bundle, NOISE, seed) - truth).max())
                 for seed in range(NOISY_RUNS))
    why += f"; float64 moves by {spread:.3g} under {NOISE:g} relative input noise"
    if off_a <= MARGIN * spread:
        return {"verdict": "ill-conditioned", "why": why}
    return {"verdict": "differs, well conditioned", "why": why}


if __name__ == "__main__":  # python bundle_triage.py BUNDLE...
    for arg in sys.argv[1:]:
        print(json.dumps({"bundle": arg, **judge_bundle(Path(arg))}))
