"""Fault that fires only at one parameter value.

``fault.clip_mode`` has three modes; ``exact`` and ``fast`` leave the model alone, ``approx``
lowers the upper bound of the first ``Clip`` (a ReLU6) from 6 to 1 — the bug of an "approximate"
code path that only one option reaches. The shrinker must keep ``mode=approx`` and nothing else.
"""

from _graph import constant, first, set_own_input

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "fires only at one parameter value",
    "culprit": {"step": "fault.clip_mode", "params": {"mode": "approx"}},
    "symptom": "label_flip",
}


def _target(model):
    return first(model, lambda n: n.op_type == "Clip" and len(n.input) > 2
                 and constant(model, n.input[2]) is not None)


def affected_node(model):
    node = _target(model)
    return node.name if node is not None else None


@onnx_transform("fault.clip_mode", mode=["exact", "fast", "approx"])
def clip_mode(model, mode: str = "exact"):
    """Lower the first ReLU6's upper bound to 1, in mode ``approx`` only."""
    node = _target(model) if mode == "approx" else None
    if node is not None:
        hi = constant(model, node.input[2])
        set_own_input(model, node, 2, (hi * 0 + 1).astype(hi.dtype))
    return model
