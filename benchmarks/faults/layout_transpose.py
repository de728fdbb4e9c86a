"""Fault: a layout transposition slipped onto one tensor.

With ``transpose`` set, the output of the first ungrouped Conv goes through a ``Transpose`` with
perm (0, 1, 3, 2): height and width swap. Images are square, so every shape still fits and the
model runs — the bug of a layout pass that inserts a transpose for the wrong layout. The Transpose
takes over the Conv's output name, so the Conv's output (as a consumer sees it) is what changed.
"""

from _graph import attr, first, is_conv

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "layout transposition slipped onto one tensor",
    "culprit": {"step": "fault.layout_slip", "params": {"transpose": True}},
    "symptom": "label_flip",
}


def _target(node) -> bool:
    return is_conv(node) and attr(node, "group", 1) == 1


def affected_node(model):
    node = first(model, _target)
    return node.name if node is not None else None


@onnx_transform("fault.layout_slip", transpose=[False, True])
def layout_slip(model, transpose: bool = False):
    """Swap height and width of the first ungrouped convolution's output."""
    from onnx import helper

    node = first(model, _target) if transpose else None
    if node is None:
        return model
    out = node.output[0]
    node.output[0] = f"{out}/before_slip"
    slip = helper.make_node("Transpose", [node.output[0]], [out], name=f"{node.name}/slip",
                            perm=[0, 1, 3, 2])
    nodes = list(model.graph.node)
    nodes.insert(nodes.index(node) + 1, slip)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
