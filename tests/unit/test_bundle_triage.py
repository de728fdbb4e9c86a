"""The third opinion on fuzzconv's own bundles (``benchmarks/peers/bundle_triage.py``), on real
PyTorch: a bundle holds a minimal model as ``model/model.py`` with its weights, the inputs, what
the pipeline gave before the culprit (``expected.npy``) and a ``repro.py`` that says REPRODUCED and
writes the culprit's output with ``--actual-out``. Here ``repro.py`` is a stand-in that answers
with a given array, so each verdict is reached on purpose; the end-to-end judgement of a real
bundle is in ``tests/integration/test_generated.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fuzzconv.gen.spec import GenSpec, Layer
from fuzzconv.gen.torch_source import render_torch

from .peer_scripts import load_peer

torch = pytest.importorskip("torch")
tri = load_peer("bundle_triage")

REPRO = '''import sys
import numpy as np
print({said!r})
if "--actual-out" in sys.argv:
    np.save(sys.argv[sys.argv.index("--actual-out") + 1], np.load("answer.npy"))
'''


def _bundle(tmp: Path, layers: list[tuple[str, dict]], answer, symptom: str = "numeric",
            said: str = "REPRODUCED", scale: float = 1.0) -> tuple[Path, np.ndarray]:
    """A bundle of a generated PyTorch model; ``answer(expected)`` is the culprit's output."""
    spec = GenSpec("torch", 16, ())
    for kind, attrs in layers:
        spec = spec.insert(len(spec.layers), Layer.make(kind, attrs, len(spec.layers), "torch"))
    d = tmp / "B"
    (d / "model").mkdir(parents=True)
    source = render_torch(spec.annotated())
    (d / "model" / "model.py").write_text(source)
    ns: dict = {}
    exec(source, ns)
    torch.manual_seed(0)
    model = ns["Model"]().eval()
    np.savez(d / "model" / "weights.npz",
             **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    x = (np.random.default_rng(1).standard_normal((3, 3, 16, 16)) * scale).astype(np.float32)
    np.save(d / "inputs.npy", x)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.save(d / "expected.npy", expected)
    np.save(d / "answer.npy", answer(expected))
    (d / "repro.py").write_text(REPRO.format(said=said))
    (d / "finding.json").write_text(json.dumps(
        {"symptom": symptom, "culprit": {"step": "torch.onnx_export", "params": {}}}))
    return d, expected


def test_a_culprit_far_off_a_stable_float64_result_is_real(tmp_path):
    d, _ = _bundle(tmp_path, [("conv", {}), ("act", {})], lambda e: e + 1.0)
    v = tri.judge_bundle(d)
    assert v["verdict"] == "differs, well conditioned", v


def test_a_culprit_that_agrees_with_float64_is_not_a_bug(tmp_path):
    d, _ = _bundle(tmp_path, [("conv", {}), ("act", {})], lambda e: e + 1e-5)
    assert tri.judge_bundle(d)["verdict"] == "nearer float64"


def test_a_difference_no_larger_than_what_input_noise_does_is_ill_conditioned(tmp_path,
                                                                            monkeypatch):
    d, expected = _bundle(tmp_path, [("conv", {})], lambda e: e + 0.2)
    truth = tri.float64_logits(d)
    # the float64 result moves by 0.05 when the inputs move by 1e-5 of themselves: a culprit
    # 0.2 off is within ten times that
    monkeypatch.setattr(tri, "float64_logits",
                        lambda b, noise=0.0, seed=0: truth + (0.05 if noise else 0.0))
    v = tri.judge_bundle(d)
    assert v["verdict"] == "ill-conditioned" and "moves by 0.05" in v["why"], v


def test_a_floor_at_the_boundaries_of_its_inputs_is_ill_conditioned(tmp_path):
    # inputs on a 1/100 grid, floored after scaling by 100: every value sits on a boundary, so
    # float32 and float64 (and any two runtimes) floor them differently
    d, expected = _bundle(tmp_path, [("math", {"fn": "floor", "scale": 100.0})], lambda e: e + 1.0)
    x = np.round(np.load(d / "inputs.npy") * 100) / 100
    np.save(d / "inputs.npy", x.astype(np.float32))
    ns: dict = {}
    exec((d / "model" / "model.py").read_text(), ns)
    model = ns["Model"]()
    with np.load(d / "model" / "weights.npz") as w:
        model.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files})
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x.astype(np.float32))).numpy()
    np.save(d / "expected.npy", expected)
    np.save(d / "answer.npy", expected + 0.05)
    v = tri.judge_bundle(d)
    assert v["verdict"] == "ill-conditioned", v


def test_casts_back_to_float_are_raised_to_double_too(tmp_path):
    # integer arithmetic casts back to its input's type: the float64 model stays float64
    d, expected = _bundle(tmp_path, [("integer", {"scale": 10.0})], lambda e: e + 5.0)
    assert tri.float64_logits(d).dtype == np.float64
    assert tri.judge_bundle(d)["verdict"] == "differs, well conditioned"


def test_a_crash_its_repro_reproduces_is_a_failure_and_one_it_does_not_is_not(tmp_path):
    d, _ = _bundle(tmp_path, [("conv", {})], lambda e: e, symptom="crash")
    assert tri.judge_bundle(d)["verdict"] == "fails"
    (d / "repro.py").write_text(REPRO.format(said="NOT REPRODUCED"))
    assert tri.judge_bundle(d)["verdict"] == "not reproduced"


def test_a_bundle_without_a_pytorch_model_cannot_be_judged(tmp_path):
    d, _ = _bundle(tmp_path, [("conv", {})], lambda e: e + 1.0)
    (d / "model" / "model.py").unlink()
    assert tri.judge_bundle(d)["verdict"] == "cannot judge"
