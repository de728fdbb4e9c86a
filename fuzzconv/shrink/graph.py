"""ONNX graphs as plain data: nodes in topological order, tensors, and candidate subgraphs.

:class:`GraphInfo` describes a graph without ONNX objects (it travels as JSON from a worker), so
the orchestrator can plan cuts without importing onnx. A :class:`Cut` is one output tensor and the
kept nodes that compute it from one fed activation, every other input frozen to its recorded value
(see :mod:`.reduce` for why); :func:`make_cut` finds the inputs a set of kept nodes needs.

Like ``onnx.utils.Extractor`` (and unlike Polygraphy's reducer, which marks them as model inputs:
NVIDIA/TensorRT#4571), empty names — omitted optional inputs and outputs — are never tensors: they
are neither inputs of a cut nor matched to a producer; and tensors an ``If``/``Loop`` body reads
from the enclosing graph count as inputs of the node that holds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class NodeInfo:
    """One node: its name (its first output when unnamed), type, and non-empty tensor names.

    ``inputs`` include tensors that a subgraph attribute (an ``If``/``Loop`` body) reads from
    the enclosing graph: the node depends on them as much as on its explicit inputs.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class GraphInfo:
    """A graph's nodes in topological order and its tensors, without ONNX objects.

    It travels as JSON from a worker (:func:`describe`), so the orchestrator can plan cuts
    without importing onnx.
    """

    nodes: list[NodeInfo]
    inputs: list[str]  # graph inputs that are not initializers
    outputs: list[str]
    initializers: frozenset[str]
    producer: dict[str, int] = field(init=False)
    dynamic: frozenset[str] = field(init=False)  # tensors computed from a graph input

    def __post_init__(self) -> None:
        self.producer = {t: i for i, n in enumerate(self.nodes) for t in n.outputs}
        dyn = set(self.inputs)
        for n in self.nodes:
            if any(t in dyn for t in n.inputs):
                dyn.update(n.outputs)
        self.dynamic = frozenset(dyn)

    @classmethod
    def from_model(cls, model: "onnx.ModelProto") -> "GraphInfo":
        g = model.graph
        inits = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
        nodes = [NodeInfo(n.name or next((o for o in n.output if o), n.op_type), n.op_type,
                          tuple(_node_reads(n)), tuple(o for o in n.output if o))
                 for n in topological_nodes(g)]
        return cls(nodes, [i.name for i in g.input if i.name not in inits],
                   [o.name for o in g.output], frozenset(inits))

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [asdict(n) for n in self.nodes], "inputs": self.inputs,
                "outputs": self.outputs, "initializers": sorted(self.initializers)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphInfo":
        return cls([NodeInfo(n["name"], n["op_type"], tuple(n["inputs"]), tuple(n["outputs"]))
                    for n in d["nodes"]], list(d["inputs"]), list(d["outputs"]),
                   frozenset(d["initializers"]))

    def output_node(self) -> int | None:
        """The node that makes the graph's first output."""
        return self.producer.get(self.outputs[0]) if self.outputs else None


def _outer_reads(graph: "onnx.GraphProto") -> set[str]:
    """Names a (sub)graph reads without defining them: what it takes from the enclosing scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    reads: set[str] = set()
    for n in graph.node:
        reads.update(_node_reads(n))
        defined.update(n.output)
    return {t for t in reads if t and t not in defined}


def _node_reads(node: "onnx.NodeProto") -> list[str]:
    """A node's explicit non-empty inputs, then what its subgraph attributes read from outside."""
    import onnx

    reads = [t for t in node.input if t]
    for a in node.attribute:
        subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else (
            list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else [])
        for sub in subs:
            reads.extend(sorted(_outer_reads(sub) - set(reads)))
    return reads


def topological_nodes(graph: "onnx.GraphProto") -> list["onnx.NodeProto"]:
    """The graph's nodes in a topological order, stable with respect to the file's order.

    ONNX requires files to be sorted, but not every producer complies; a node whose inputs are
    never made (a malformed graph) keeps its place at the end rather than being dropped.
    """
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    ready |= {t.values.name for t in graph.sparse_initializer}
    made = {o for n in graph.node for o in n.output if o}
    todo = list(graph.node)
    order: list = []
    progress = True
    while todo and progress:
        progress = False
        left = []
        for n in todo:
            if all(t in ready or t not in made for t in _node_reads(n)):
                order.append(n)
                ready.update(o for o in n.output if o)
                progress = True
            else:
                left.append(n)
        todo = left
    return order + todo


@dataclass(frozen=True)
class Recorded:
    """What a recording says about tensors: shape and dtype by name, on ``batch`` images."""

    batch: int
    tensors: dict[str, tuple[tuple[int, ...], str]]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recorded":
        return cls(int(d["batch"]), {k: (tuple(v[0]), v[1]) for k, v in d["tensors"].items()})

    def size(self, name: str) -> int:
        return int(np.prod(self.tensors[name][0]))


@dataclass(frozen=True)
class Cut:
    """A candidate subgraph: the kept nodes that compute ``output`` from ``feed`` and ``frozen``.

    Args:
        output: the subgraph's one output.
        nodes: indices into :attr:`GraphInfo.nodes`, ascending (so topological).
        feed: the input fed at run time (a recorded activation).
        frozen: the other inputs, frozen to their recorded values as initializers.
    """

    output: str
    nodes: tuple[int, ...]
    feed: str
    frozen: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Cut":
        return cls(d["output"], tuple(d["nodes"]), d["feed"], tuple(d["frozen"]))


def _batched(info: GraphInfo, rec: Recorded, name: str) -> bool:
    """Whether ``name`` is an activation: computed from the input, floating point, batched."""
    if name not in info.dynamic or name not in rec.tensors:
        return False
    shape, dtype = rec.tensors[name]
    return dtype.startswith(("float", "bfloat")) and len(shape) >= 1 and shape[0] == rec.batch


def cut_output(info: GraphInfo, rec: Recorded, node: int) -> str | None:
    """The node's first output that can end a subgraph (an activation), or None."""
    return next((t for t in info.nodes[node].outputs if _batched(info, rec, t)), None)


def make_cut(info: GraphInfo, rec: Recorded, out_node: int,
             kept: Iterable[int] | None = None) -> Cut | None:
    """The subgraph ending at ``out_node`` made of the ``kept`` nodes it needs (all when None).

    Returns None when it cannot be run alone: the node makes no activation, or no input is an
    activation to feed, or an input was not recorded.
    """
    output = cut_output(info, rec, out_node)
    if output is None:
        return None
    keep = None if kept is None else set(kept) | {out_node}
    needed: set[int] = set()
    boundary: set[str] = set()
    seen: set[str] = set()
    stack = [output]
    while stack:
        t = stack.pop()
        if t in seen or t in info.initializers:
            continue
        seen.add(t)
        p = info.producer.get(t)
        if p is None or (keep is not None and p not in keep):
            boundary.add(t)
            continue
        needed.add(p)
        stack.extend(info.nodes[p].inputs)
    if any(t not in rec.tensors for t in boundary):
        return None
    feedable = [t for t in boundary if _batched(info, rec, t)]
    if not feedable:
        return None
    order = {t: info.producer.get(t, -1) for t in boundary}
    # The largest activation is the main data path; ties go to the earliest made.
    feed = max(feedable, key=lambda t: (rec.size(t), -order[t], t))
    frozen = tuple(sorted((t for t in boundary if t != feed), key=lambda t: (order[t], t)))
    return Cut(output, tuple(sorted(needed)), feed, frozen)
