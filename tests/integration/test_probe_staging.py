"""A hunt that judges pipelines on the fragile images first finds what a whole-corpus hunt finds.

Real frameworks, the tiny Keras model and injected faults of ``benchmarks/faults`` (an obvious
one and a subtle one, which flips few images or none): the same focused hunt runs with the
probe set (the default) and with ``--probe 0``, and both must blame the fault's own step and
parameters, with the flip rate of the whole corpus.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ROOT / "benchmarks" / "faults"


def _hunt(store: Path, fault: str, probe: int) -> dict:
    step = "fault." + fault
    r = subprocess.run([sys.executable, "-m", "fuzzconv.cli", "hunt", "--model", "tiny_keras",
                        "--plugin", str(FAULTS / f"{fault}.py"), "--focus", step,
                        "--max-evals", "14", "--budget", "20m", "--probe", str(probe),
                        "--store", str(store), "--json"],
                       capture_output=True, text=True, timeout=1800, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def _truth(fault: str) -> dict:
    import ast

    tree = ast.parse((FAULTS / f"{fault}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "GROUND_TRUTH":
            return ast.literal_eval(node.value)
    raise AssertionError(fault)


@needs("tf", "ort")
@pytest.mark.parametrize("fault", ["conv_padding", "bn_scale"])
def test_probe_staged_hunt_finds_what_a_whole_corpus_hunt_finds(tmp_path, fault):
    truth = _truth(fault)
    found = {}
    for probe in (8, 0):
        out = _hunt(tmp_path / f"probe{probe}", fault, probe)
        injected = [f for f in out["findings"] if f["culprit"] == truth["culprit"]]
        assert injected, (probe, [f["signature"] for f in out["findings"]])
        found[probe] = injected[0]
        if probe:
            assert out["probe_only"] > 0  # some pipelines really were judged on the probe alone
        else:
            assert out["probe_only"] == 0 and out["escalated"] == 0
    staged, whole = found[8], found[0]
    assert staged["symptom"] == whole["symptom"] and staged["signature"] == whole["signature"]
    # the flip rate always comes from the whole corpus
    assert staged["images"] == whole["images"] == 64
    assert staged["flip_rate"] == pytest.approx(whole["flip_rate"])
