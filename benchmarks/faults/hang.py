"""Fault: a step that hangs (symptom ``timeout``).

Registered with ``step`` rather than ``onnx_transform`` so it can carry its own 10-second timeout:
the hang costs seconds (its harmless setting copies a file in milliseconds), and every other step
keeps its normal timeout. Timeouts are never cached, so a hunt pays it at every judgement that
holds the hang: a few times over while shrinking and checking flakiness.
"""

from pathlib import Path

from fuzzconv.plugins import StepContext, step

GROUND_TRUTH = {
    "fault": "a step that hangs",
    "culprit": {"step": "fault.hang", "params": {"hang": True}},
    "symptom": "timeout",
}


def affected_node(model):
    return None


@step("fault.hang", src="onnx", dst="onnx", family="ort", timeout=10.0, hang=[False, True])
def hang(ctx: StepContext, src: Path, dst: Path, hang: bool = False) -> None:
    """Copy the model; sleep for a day first when ``hang`` is set."""
    import time

    if hang:
        time.sleep(86400)
    dst.write_bytes(src.read_bytes())
