"""Fault: a step that hangs (symptom ``timeout``).

The hunt runs with a short ``--timeout`` (``HUNT_ARGS``) so the hang costs seconds, not the
default step timeout.
"""

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "a step that hangs",
    "culprit": {"step": "fault.hang", "params": {"hang": True}},
    "symptom": "timeout",
}

HUNT_ARGS = ["--timeout", "60"]


def affected_node(model):
    return None


@onnx_transform("fault.hang", hang=[False, True])
def hang(model, hang: bool = False):
    """Sleep for a day when ``hang`` is set."""
    import time

    if hang:
        time.sleep(86400)
    return model
