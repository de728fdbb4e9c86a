"""The hunt's live display reads whole in an 80-column terminal as in a wide one.

It is fed the events a hunt sends (plan, eval, step, evaluated) and rendered by rich at a fixed
width: every step name of the pipeline being judged, the counters and the time left must appear
unbroken on some line, whatever the width.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from fuzzconv.launch import _Progress

PIPELINE = ('keras.tflite(optimizations=["DEFAULT"],supported_types=["float16"]) → '
            'tflite.tf2onnx → onnx.optimize(level=extended) → ort(graph_optimization_level=all)')


def _screen(width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    progress = _Progress(console, budget=900, enabled=False)  # no Live: render by hand
    progress("plan", {"coverage": 98})
    progress("evaluated", {"evaluations": 12, "findings": 1, "cache_hits": 3, "fresh": 9,
                           "covered": 7, "coverage": 98, "pipeline": "keras.tf2onnx → ort",
                           "verdict": "agrees on 8 fragile images, max |Δlogit| 0.00042"})
    progress("eval", {"pipeline": PIPELINE, "phase": "coverage", "expected": 50.0,
                      "why": "quantises (keras.tflite optimizations) · ~50 s"})
    progress("step", {"what": "step 1/3 keras.tflite"})
    console.print(progress._render())
    return console.file.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_every_name_and_counter_is_whole_at(width):
    lines = _screen(width)
    assert all(len(line.rstrip()) <= width for line in lines)
    words = {w for line in lines for w in line.split()}
    for step in re.split(r" → ", PIPELINE):
        assert step in words, f"{step!r} broken at width {width}:\n" + "\n".join(lines)
    text = "\n".join(lines)
    for whole in ("7/98", "evaluations 12", "findings 1", "cache hits 25%", "left",
                  "~0m50s expected", "keras.tflite"):
        assert whole in text or all(part in words for part in whole.split()), whole
    assert "…" not in text  # nothing is cut short


def test_a_wide_terminal_shows_the_counters_on_one_line():
    first = _screen(200)[0]
    assert "options covered 7/98" in first and "evaluations 12" in first and "left" in first
