"""Fault: one weight tensor rounded through int8 (subtle).

With ``round_int8`` set, the largest convolution weight is quantised per tensor, symmetric, to
int8 and back — what a converter does when it quantises a layer it was told to keep in float.
"""

from _graph import conv_weight, is_conv, set_own_input

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "one weight tensor rounded through int8",
    "culprit": {"step": "fault.int8_weight", "params": {"round_int8": True}},
    "symptom": ["label_flip", "numeric"],  # few or no flips: subtle
    "subtle": True,
}


def _target(model):
    convs = [(n, w) for n in model.graph.node if is_conv(n)
             and (w := conv_weight(model, n)) is not None]
    return max(convs, key=lambda nw: nw[1].size) if convs else None


def affected_node(model):
    t = _target(model)
    return t[0].name if t is not None else None


@onnx_transform("fault.int8_weight", round_int8=[False, True])
def int8_weight(model, round_int8: bool = False):
    """Round the largest convolution weight through symmetric per-tensor int8."""
    import numpy as np

    t = _target(model) if round_int8 else None
    if t is not None:
        node, w = t
        scale = float(np.abs(w).max()) / 127.0 or 1.0
        q = np.clip(np.round(w / scale), -127, 127)
        set_own_input(model, node, 1, (q * scale).astype(w.dtype))
    return model
