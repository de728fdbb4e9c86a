"""Fault: a batch norm's scale constant changed by 5 % (subtle).

After conversion a Keras BatchNormalization that is not folded into the convolution before it is a
``Mul`` by a per-channel [1, C, 1, 1] constant and an ``Add``. With ``factor`` ≠ 1 the first such
multiply's constant is scaled — the kind of error an epsilon or a folding mistake leaves behind.
"""

from _graph import constant, first, per_channel_mul, set_own_input

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "batch-norm scale constant changed",
    "culprit": {"step": "fault.bn_scale", "params": {"factor": 1.05}},
    "symptom": ["label_flip", "numeric"],  # few or no flips: subtle
    "subtle": True,
}


def _target(model):
    return first(model, lambda n: per_channel_mul(model, n))


def affected_node(model):
    node = _target(model)
    return node.name if node is not None else None


@onnx_transform("fault.bn_scale", factor=[1.0, 1.05])
def bn_scale(model, factor: float = 1.0):
    """Scale the first per-channel batch-norm multiply's constant by ``factor``."""
    node = _target(model) if factor != 1.0 else None
    if node is not None:
        for i, name in enumerate(node.input):
            c = constant(model, name)
            if c is not None and c.ndim == 4:
                set_own_input(model, node, i, (c * factor).astype(c.dtype))
                break
    return model
