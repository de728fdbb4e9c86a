"""A one-layer fault for the generated-model tests: an ONNX rewrite that poisons every Resize.

With ``on`` it multiplies each Resize node's output by infinity (the outputs become NaN/Inf); a
graph without a Resize passes through unchanged, so a model keeps the fault's finding exactly as
long as it keeps its resize layer: the model shrinker must come down to that one layer.
"""

from fuzzconv.plugins import onnx_transform


@onnx_transform("gen_fault.poison_resize", on=[False, True])
def poison_resize(model, on: bool = False):
    """Multiply the output of every Resize node by +inf."""
    import numpy as np
    from onnx import helper, numpy_helper

    if not on:
        return model
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for node in nodes:
        if node.op_type != "Resize":
            model.graph.node.append(node)
            continue
        out = node.output[0]
        node.output[0] = f"{out}/before_poison"
        model.graph.node.append(node)
        factor = f"{out}/poison"
        model.graph.initializer.append(numpy_helper.from_array(np.array(np.inf, np.float32),
                                                               factor))
        model.graph.node.append(helper.make_node("Mul", [node.output[0], factor], [out],
                                                 name=f"{node.name}/poison"))
    return model
