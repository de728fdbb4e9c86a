"""Two faults for the reducer comparison, written as fuzzconv plugins like ``benchmarks/faults``.

Each needs a subgraph with two activation inputs to show, which none of the injected-fault
suite's faults does (they change one node fed by one activation):

- ``peers.residual_sub``: the first ``Add`` of two computed tensors (a residual connection)
  computes ``a - b`` instead. The smallest failing subgraph is that one node, fed by two
  activations: a several-input cut.
- ``peers.relu_add_fusion``: the first ``Add(Relu(a), b)`` is fused wrongly into
  ``Relu(Add(a, b))`` — the activation moved past the addition, as a fusion pass that reorders
  them would. The smallest failing subgraph is the ``Relu`` and the ``Add``, and its output
  differs only where ``a < 0`` and ``b != 0``: on an image where ``b`` is all zeros the fault is
  invisible, which is what the several-samples case needs.
"""

from fuzzconv.plugins import onnx_transform


def _computed(model, name: str) -> bool:
    inits = {t.name for t in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return bool(name) and name not in inits and name not in consts


@onnx_transform("peers.residual_sub", sub=[False, True])
def residual_sub(model, sub: bool = False):
    """Compute the first residual Add (two computed inputs) as a subtraction."""
    if not sub:
        return model
    for node in model.graph.node:
        if node.op_type == "Add" and len(node.input) == 2 and \
                all(_computed(model, t) for t in node.input):
            node.op_type = "Sub"
            break
    return model


@onnx_transform("peers.relu_add_fusion", fuse=[False, True])
def relu_add_fusion(model, fuse: bool = False):
    """Rewrite the first Add(Relu(a), b) as Relu(Add(a, b))."""
    if not fuse:
        return model
    made_by = {o: n for n in model.graph.node for o in n.output}
    for add in model.graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for i, t in enumerate(add.input):
            relu = made_by.get(t)
            if relu is None or relu.op_type != "Relu":
                continue
            # Add(a, b) now takes the Relu's input; the Relu takes the sum and makes the output.
            summed, out = f"{add.output[0]}/fused_sum", add.output[0]
            add.input[i] = relu.input[0]
            add.output[0] = summed
            fused = type(relu)()
            fused.CopyFrom(relu)
            fused.name = f"{relu.name}/fused"
            del fused.input[:]
            fused.input.append(summed)
            del fused.output[:]
            fused.output.append(out)
            nodes = list(model.graph.node)
            nodes.insert(nodes.index(add) + 1, fused)
            del model.graph.node[:]
            model.graph.node.extend(nodes)
            return model
    return model
