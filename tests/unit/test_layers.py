"""The layers hold: reporters import neither the hunt engine nor the shrinker, reading a bundle
someone sent loads neither reporter, and the orchestrator's modules import no framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE_AND_SHRINKER = ("fuzzconv.engine", "fuzzconv.launch", "fuzzconv.shrink")
FRAMEWORKS = ("tensorflow", "keras", "torch", "torchvision", "tvm", "onnx", "onnxruntime",
              "tf2onnx", "onnx2torch")


def loaded_after(*modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``modules``."""
    code = ("import importlib, json, sys\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("reporter", ["fuzzconv.report.bundle", "fuzzconv.report.html",
                                      "fuzzconv.report.bundle_import"])
def test_reporters_import_neither_the_engine_nor_the_shrinker(reporter: str) -> None:
    loaded = loaded_after(reporter)
    assert not {m for m in loaded if m.startswith(ENGINE_AND_SHRINKER)}
    assert not {m for m in loaded if m.split(".")[0] in FRAMEWORKS}


def test_checking_a_received_bundle_loads_no_reporter() -> None:
    # What `fuzzconv repro BUNDLE` imports: the bundle reader and the finding commands.
    loaded = loaded_after("fuzzconv.report.bundle_import", "fuzzconv.findings")
    assert not {m for m in loaded if m.startswith(("fuzzconv.report.bundle.",
                                                   "fuzzconv.report.html"))}
    assert not {m for m in loaded if m.startswith(ENGINE_AND_SHRINKER)}


def test_reading_a_study_loads_no_executor() -> None:
    loaded = loaded_after("fuzzconv.study.report")
    assert "fuzzconv.executor" not in loaded and "fuzzconv.workers" not in loaded
