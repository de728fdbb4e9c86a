"""Fault: the padding of one convolution shifted (same output size, contents moved by a pixel).

The first 3×3, stride-1 Conv with pads (1, 1, 1, 1) gets pads (2, 2, 0, 0) when ``shift`` is set:
the output keeps its shape, so nothing downstream notices, but every value is taken one pixel up
and left of where it should be — the bug of a converter that mistranslates SAME padding.
"""

from _graph import attr, first, is_conv, set_attr

from fuzzconv.plugins import onnx_transform

GROUND_TRUTH = {
    "fault": "padding changed on one convolution",
    "culprit": {"step": "fault.conv_padding", "params": {"shift": True}},
    "symptom": "label_flip",
}


def _target(node) -> bool:
    return (is_conv(node) and list(attr(node, "kernel_shape", [])) == [3, 3]
            and list(attr(node, "strides", [1, 1])) == [1, 1]
            and list(attr(node, "pads", [])) == [1, 1, 1, 1])


def affected_node(model):
    node = first(model, _target)
    return node.name if node is not None else None


@onnx_transform("fault.conv_padding", shift=[False, True])
def conv_padding(model, shift: bool = False):
    """Shift the padding of the first 3×3 stride-1 convolution by one pixel."""
    node = first(model, _target) if shift else None
    if node is not None:
        set_attr(node, "pads", [2, 2, 0, 0])
    return model
