"""Fault that needs two steps together.

``fault.arm`` only marks the model (a ``metadata_props`` entry; the graph is untouched) and
``fault.fire`` only acts on a marked model: it halves the weights of the last convolution. Either
alone changes nothing, so the minimal pipeline must keep both, and the culprit — the step whose
output first differs — is ``fault.fire``.
"""

from _graph import conv_weight, first, is_conv, set_own_input

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "needs two steps together",
    "culprit": {"step": "fault.fire", "params": {"scale": 0.5}},
    "also": [{"step": "fault.arm", "params": {"armed": True}}],
    "symptom": "label_flip",
}

_MARK = "fault.armed"


def _target(model):
    return first(model, lambda n: is_conv(n) and conv_weight(model, n) is not None, last=True)


def affected_node(model):
    node = _target(model)
    return node.name if node is not None else None


@onnx_transform("fault.arm", armed=[False, True])
def arm(model, armed: bool = False):
    """Mark the model for ``fault.fire``."""
    if armed and not any(p.key == _MARK for p in model.metadata_props):
        p = model.metadata_props.add()
        p.key, p.value = _MARK, "1"
    return model


@onnx_transform("fault.fire", scale=[1.0, 0.5])
def fire(model, scale: float = 1.0):
    """On a model marked by ``fault.arm``, scale the last convolution's weights."""
    if scale == 1.0 or not any(p.key == _MARK for p in model.metadata_props):
        return model
    node = _target(model)
    if node is not None:
        w = conv_weight(model, node)
        set_own_input(model, node, 1, (w * scale).astype(w.dtype))
    return model
