"""Fault: a step that hangs (symptom ``timeout``).

Registered with ``step`` rather than ``onnx_transform`` so it can carry its own 30-second timeout:
the hang costs seconds, and every other step keeps its normal timeout.
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


@step("fault.hang", src="onnx", dst="onnx", family="ort", timeout=30.0, hang=[False, True])
def hang(ctx: StepContext, src: Path, dst: Path, hang: bool = False) -> None:
    """Copy the model; sleep for a day first when ``hang`` is set."""
    import time

    if hang:
        time.sleep(86400)
    dst.write_bytes(src.read_bytes())
