"""Faults in exactly one identifiable node, for the localization tests.

The node is the first grouped (depthwise) convolution — in ``tiny_keras`` the ``dw_conv`` layer,
the ONNX node ``tiny_keras_1/dw_conv_1/depthwise``. The two ``scale`` faults scale its weights
(the default 1.0 changes nothing); ``reject_depthwise`` with ``strict`` raises, like a converter
that does not support the node. A graph without such a convolution passes through unchanged, so a
reduced subgraph keeps the fault's finding only if it still holds that node.
"""

from fuzzconv.plugins import onnx_transform, tvm_transform


def _grouped(node) -> bool:
    from onnx import helper

    groups = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
    return node.op_type == "Conv" and groups > 1


@onnx_transform("node_fault.scale_depthwise", scale=[1.0, 1.5])
def scale_depthwise(model, scale: float = 1.0):
    """Scale the weight initializer of the first ONNX Conv with ``group`` > 1."""
    from onnx import numpy_helper

    if scale == 1.0:
        return model
    for node in model.graph.node:
        if not _grouped(node):
            continue
        inits = {t.name: t for t in model.graph.initializer}
        w = inits[node.input[1]]
        scaled = numpy_helper.from_array(numpy_helper.to_array(w) * scale, w.name)
        if sum(name == w.name for n in model.graph.node for name in n.input) == 1:
            w.CopyFrom(scaled)
        else:  # shared: give this node its own copy, so no other node changes
            scaled.name = f"{w.name}/scaled"
            model.graph.initializer.append(scaled)
            node.input[1] = scaled.name
        break
    return model


@onnx_transform("node_fault.reject_depthwise", strict=[False, True])
def reject_depthwise(model, strict: bool = False):
    """With ``strict``, raise on a graph holding a grouped Conv."""
    if strict and any(_grouped(n) for n in model.graph.node):
        raise NotImplementedError("grouped convolutions are not supported")
    return model


@tvm_transform("node_fault.tvm_scale_depthwise", scale=[1.0, 1.5])
def tvm_scale_depthwise(mod, scale: float = 1.0):
    """Scale the constant weight of the first ``relax.nn.conv2d`` with ``groups`` > 1 in main."""
    import tvm
    from tvm import relax

    if scale == 1.0:
        return mod

    @relax.expr_functor.mutator
    class _Scale(relax.PyExprMutator):
        done = False

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if (not self.done and getattr(call.op, "name", "") == "relax.nn.conv2d"
                    and int(call.attrs.groups) > 1
                    and isinstance(call.args[1], tvm.ir.GenericConst)):
                self.done = True
                w = relax.const(call.args[1].value.numpy() * scale)
                return relax.Call(call.op, [call.args[0], w], call.attrs, call.ty_args)
            return call

    mod["main"] = _Scale().visit_expr(mod["main"])
    return mod
