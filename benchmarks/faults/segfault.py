"""Fault: a step that segfaults its worker process (symptom ``crash``)."""

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "a step that segfaults",
    "culprit": {"step": "fault.segfault", "params": {"crash": True}},
    "symptom": "crash",
}


def affected_node(model):
    return None  # nothing comes out to compare


@onnx_transform("fault.segfault", crash=[False, True])
def segfault(model, crash: bool = False):
    """Kill the worker with SIGSEGV when ``crash`` is set."""
    import os
    import signal

    if crash:
        os.kill(os.getpid(), signal.SIGSEGV)
    return model
