"""Reducing a divergent model to the smallest ONNX subgraph that still diverges under its culprit.

The shrinker makes the *pipeline* minimal and names the culprit step; this module makes the *model*
minimal, so a finding can ship a graph of a handful of nodes instead of a whole network. It also
holds what :mod:`.nodes` shares with it: the plain-data description of a graph
(:class:`GraphInfo`), subgraph candidates (:class:`Cut`), their extraction
(:func:`build_subgraph`), the per-tensor tolerance (:func:`activation_divergence`) and the
re-application of a pipeline's chain to a candidate (:class:`OnnxChain`).

Design
------
**Which graph.** The culprit's input when that is ONNX, else the nearest ONNX artifact upstream of
the culprit (the artifact after step ``start``, :func:`upstream_onnx`). Every candidate goes
through the pipeline's own chain from there (steps ``start+1`` to the last, then the runtime) as
ordinary worker ``step`` and ``run`` requests, so built-in steps and plugins behave exactly as in
the hunt. Candidates are throwaway: they run in a scratch directory, not through the cache.

**Predicate.** A candidate keeps the finding when its :class:`Verdict` has the same key as the
whole graph's: ``diverges`` (the chain's output differs from ONNX Runtime, graph optimisations
off, on the same unmodified candidate past :func:`activation_divergence`), or ``crash`` in the
same step with the same error class — so crash findings reduce too.

**Candidates.** A :class:`Cut` is one output tensor and a set of kept nodes: the subgraph is the
kept nodes needed to compute the output, and every tensor they read that is made outside them
becomes an input. The registered runtimes feed a model exactly one input, so one input is fed
(the largest activation, with its recorded value) and every other input is *frozen*: it becomes
an initializer holding the activation recorded on the same image. Extra graph inputs would need a
multi-input run protocol that the runtimes (``ort``, ``tvm``, ``torch`` …) do not have; freezing
keeps every candidate runnable by exactly the finding's runtime. The price: a step that folds
constants (``onnx.optimize``, TVM's ``FoldConstant``) may fold nodes that read only frozen inputs;
a candidate where that hides the bug just does not diverge and is not taken.

**One image.** Frozen activations carry the batch axis they were recorded with. TVM's ONNX
importer makes the fed input's batch symbolic, and Relax cannot broadcast a symbolic batch
against a constant batch of 2 (the build then fails with "CodeGenVM cannot emit this Relax
operator"), while a batch of 1 broadcasts. So the reduction runs on one image: the first of the
finding's minimal inputs on which the whole graph keeps the finding. Its fed and frozen values
always come from that same image (Polygraphy's reducer mixes intermediates of different samples
when given several: NVIDIA/TensorRT#4607).

**Search.** (1) Bisect the output by topological position: the earliest node whose prefix (the
graph up to it) keeps the finding. (2) Bisect the input side: the latest start position such that
the nodes from there to that output still keep it. (3) ddmin over contiguous ranges of the nodes
left (the output node stays): a range is removed by cutting at its outputs, which become inputs.
Each distinct candidate is judged once.

**Why not ``onnx.utils.Extractor``.** It needs a ``ValueInfo`` for every cut tensor, which ONNX
shape inference cannot give for tensors of contrib operators (``onnx.optimize`` makes
``com.microsoft`` fusions), and its search follows only a node's explicit inputs, missing tensors an
``If``/``Loop`` body reads from the outer scope. :func:`build_subgraph` types inputs from the
recorded arrays and :class:`GraphInfo` counts outer-scope reads as inputs. Like Extractor (and
unlike Polygraphy's reducer, which marks them as model inputs: NVIDIA/TensorRT#4571), empty
names — omitted optional inputs and outputs — are never tensors: they are neither inputs of a cut
nor matched to a producer.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import UsageError
from ..executor import Evaluation, Executor
from ..formats.layout import onnx_input_layout, to_layout
from ..oracle import Thresholds
from ..pipeline import Pipeline
from ..registry import ARTIFACT_FILE, Registry
from ..workers import WorkerFailure
from ..zoo import get_model

if TYPE_CHECKING:
    import onnx

#: Minimal inputs tried (one at a time) for an image on which the whole graph keeps the finding.
MAX_IMAGES = 4
_THIS = "fuzzconv.shrink.reduce"


# -- the per-tensor tolerance -------------------------------------------------------------------
@dataclass(frozen=True)
class TensorError:
    """How far one tensor is from its reference.

    ``max_rel`` is the max abs difference over the reference tensor's range (its peak-to-peak),
    the oracle's ``max_rel_diff`` applied per tensor; infinite for mismatched shapes or
    non-finite values.
    """

    max_abs: float
    max_rel: float
    diverges: bool
    note: str | None = None

    def row(self) -> dict[str, Any]:
        """JSON-safe numbers (infinity becomes None, with the reason in ``note``)."""
        row: dict[str, Any] = {"max_abs": _finite(self.max_abs), "max_rel": _finite(self.max_rel),
                               "diverges": self.diverges}
        if self.note:
            row["note"] = self.note
        return row


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def activation_divergence(ref: np.ndarray, out: np.ndarray,
                          thresholds: Thresholds = Thresholds()) -> TensorError:
    """Compare an intermediate tensor with its reference, with the oracle's tolerances adapted.

    Logit tolerances do not fit activations, whose scale varies from layer to layer, so both are
    taken relative to the reference tensor's range: the tensor diverges when its max abs
    difference exceeds ``rtol`` × that range (the oracle's ``max_rel_diff > rtol``) and also
    ``atol`` × ``rtol`` (1e-5 by default), a floor for near-constant tensors whose tiny range says
    nothing about their scale. A runtime that flattens the output (``(batch, -1)``) is compared
    element for element.
    """
    r = np.asarray(ref, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    inf = float("inf")
    if r.shape != o.shape:
        if r.size != o.size:
            return TensorError(inf, inf, True, f"shape {list(o.shape)} where the reference has "
                                               f"{list(r.shape)}")
        o = o.reshape(r.shape)
    fin = np.isfinite(r)
    if not np.array_equal(fin, np.isfinite(o)) or not np.array_equal(r[~fin], o[~fin],
                                                                      equal_nan=True):
        return TensorError(inf, inf, True, "non-finite values differ")
    if not fin.any():
        return TensorError(0.0, 0.0, False)
    max_abs = float(np.abs(o[fin] - r[fin]).max())
    span = float(np.ptp(r[fin]))
    max_rel = max_abs / span if span > 0 else (0.0 if max_abs == 0 else inf)
    return TensorError(max_abs, max_rel,
                       max_rel > thresholds.rtol and max_abs > thresholds.atol * thresholds.rtol)


# -- graphs as plain data -----------------------------------------------------------------------
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


# -- candidates ---------------------------------------------------------------------------------
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


def build_subgraph(model: "onnx.ModelProto", info: GraphInfo, cut: Cut,
                   arrays: Mapping[str, np.ndarray]) -> "onnx.ModelProto":
    """The ONNX model of ``cut``: fed input typed from its recorded value, others frozen.

    Args:
        model: the graph ``info`` describes.
        info: its description (node indices refer to its topological order).
        cut: the candidate.
        arrays: recorded values of at least the feed, the frozen inputs and the output.
    """
    import onnx
    from onnx import helper, numpy_helper

    nodes = topological_nodes(model.graph)
    picked = [nodes[i] for i in cut.nodes]
    reads = {t for i in cut.nodes for t in info.nodes[i].inputs}
    inits = [t for t in model.graph.initializer if t.name in reads]
    inits += [numpy_helper.from_array(np.ascontiguousarray(arrays[t]), t) for t in cut.frozen]

    def value_info(name: str) -> "onnx.ValueInfoProto":
        a = np.asarray(arrays[name])
        # A symbolic batch axis, as in the models the converters make.
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                             ["batch", *a.shape[1:]])

    graph = helper.make_graph(picked, f"{model.graph.name or 'graph'} to {cut.output}",
                              [value_info(cut.feed)], [value_info(cut.output)], inits)
    return helper.make_model(graph, opset_imports=list(model.opset_import),
                             ir_version=model.ir_version, functions=list(model.functions),
                             producer_name="fuzzconv.reduce")


# -- worker side (the ort worker, through the ``call`` op) ---------------------------------------
def _session(model: "onnx.ModelProto | str"):  # -> onnxruntime.InferenceSession
    """ONNX Runtime on the CPU with graph optimisations off: the reference semantics."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def expose_outputs(model: "onnx.ModelProto", names: Sequence[str]) -> "onnx.ModelProto":
    """A copy of ``model`` with ``names`` added as graph outputs.

    Each gets its element type from ONNX shape inference where that knows it (no shape: a
    symbolic axis that inference got wrong would make ONNX Runtime warn or refuse); ONNX Runtime
    accepts an untyped output for the rest, such as outputs of contrib operators.
    """
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info
                 if v.type.HasField("tensor_type")}
    except Exception:  # noqa: BLE001 - inference is only a help here; outputs can stay untyped
        types = {}
    have = {o.name for o in out.graph.output}
    for name in names:
        if name in have:
            continue
        if types.get(name):
            out.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
        else:
            out.graph.output.add().name = name
        have.add(name)
    return out


def onnx_feed(model: "onnx.ModelProto", x: np.ndarray, model_layout: str) -> np.ndarray:
    """A batch in the model's layout as the ONNX graph takes it (NCHW when a step recorded so)."""
    x = to_layout(x, model_layout, onnx_input_layout(model) or model_layout)
    return np.ascontiguousarray(x, dtype=np.float32)


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An ``.npz`` of named arrays; names (which hold ``/`` and ``:``) go in a ``names`` entry."""
    names = list(arrays)
    np.savez(path, names=np.array(names, dtype=str),
             **{f"t{i}": np.asarray(arrays[n]) for i, n in enumerate(names)})


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read what :func:`save_arrays` wrote."""
    with np.load(path, allow_pickle=False) as z:
        return {str(n): z[f"t{i}"] for i, n in enumerate(z["names"])}


def describe(model: str) -> dict[str, Any]:
    """Worker op: the :class:`GraphInfo` of an ONNX file, as a dict."""
    import onnx

    return GraphInfo.from_model(onnx.load(model)).to_dict()


def record(model: str, inputs: str, out: str, model_layout: str) -> dict[str, Any]:
    """Worker op: every tensor of the graph on ``inputs``, saved to ``out`` (:func:`save_arrays`).

    The graph runs in ONNX Runtime with graph optimisations off and every node output exposed;
    ``inputs`` are in the model's layout (transposed as :func:`onnx_feed` says).

    Returns:
        The :class:`Recorded` fields: ``batch`` and ``tensors`` (name → [shape, dtype]).
    """
    import onnx

    proto = onnx.load(model)
    info = GraphInfo.from_model(proto)
    if len(info.inputs) != 1:
        raise ValueError(f"the graph has {len(info.inputs)} inputs; one image input is expected")
    x = onnx_feed(proto, np.load(inputs, allow_pickle=False), model_layout)
    names = [t for n in info.nodes for t in n.outputs]
    sess = _session(expose_outputs(proto, names))
    got = sess.run(None, {info.inputs[0]: x})
    arrays = {info.inputs[0]: x}
    arrays.update({o.name: np.asarray(v) for o, v in zip(sess.get_outputs(), got)})
    save_arrays(out, arrays)
    return {"batch": int(len(x)),
            "tensors": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()}}


def materialize(model: str, cut: dict[str, Any], recorded: str, dst: str) -> dict[str, Any]:
    """Worker op: write the cut's subgraph to ``dst`` and its fed input beside it (``feed.npy``)."""
    import onnx

    proto = onnx.load(model)
    c = Cut.from_dict(cut)
    arrays = load_arrays(recorded)
    onnx.save(build_subgraph(proto, GraphInfo.from_model(proto), c, arrays), dst)
    np.save(Path(dst).parent / "feed.npy", arrays[c.feed], allow_pickle=False)
    return {"nodes": len(c.nodes)}


def reference(model: str, inputs: str, out: str) -> dict[str, Any]:
    """Worker op: ONNX Runtime (optimisations off) on a one-input model; first output to ``out``."""
    sess = _session(model)
    x = np.load(inputs, allow_pickle=False)
    y = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    np.save(out, y, allow_pickle=False)
    return {"shape": list(y.shape)}


def worker_call(executor: Executor, fn: str, family: str = "ort", **kwargs: Any) -> Any:
    """Run ``fn`` of this module (or ``module:fn``) in a ``family`` worker, within the deadline.

    Raises:
        WorkerFailure: it raised, or the worker died or hung.
    """
    target = fn if ":" in fn else f"{_THIS}:{fn}"
    return executor._request(family, {"op": "call", "fn": target, "kwargs": kwargs}, target)


# -- re-applying the chain to a candidate -------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What the chain made of one candidate graph.

    ``kind`` is ``diverges`` or ``agrees`` (with the error), ``crash`` or ``timeout`` (in
    ``step``, with ``error_class``), or ``invalid`` when the candidate or its ORT reference could
    not even be run — which never matches a finding.
    """

    kind: str
    error: TensorError | None = None
    step: str | None = None
    error_class: str | None = None

    @property
    def key(self) -> tuple[str | None, ...]:
        if self.kind in ("crash", "timeout"):
            return (self.kind, self.step, self.error_class)
        return (self.kind,)

    def row(self) -> dict[str, Any]:
        if self.error is not None:
            return self.error.row()
        where = f" in {self.step}: {self.error_class}" if self.step else ""
        return {"max_abs": None, "max_rel": None, "diverges": False, "note": self.kind + where}


def upstream_onnx(reg: Registry, pipeline: Pipeline, culprit_index: int) -> int | None:
    """The most steps ``s`` < ``culprit_index`` after which the artifact is ONNX, or None."""
    fmt = get_model(pipeline.model).source
    best = None
    for s in range(culprit_index):
        if s:
            fmt = reg.get(pipeline.steps[s - 1].name, "step").dst  # type: ignore[assignment]
        if fmt == "onnx":
            best = s
    return best


class OnnxChain:
    """Runs candidate ONNX graphs through a pipeline's chain from its ONNX artifact after ``start``.

    Args:
        executor: supplies the registry, the workers and the timeouts (and the hunt's deadline).
        pipeline: the (minimal) pipeline.
        start: the chain applied is ``pipeline.steps[start:]`` then the runtime.
        workdir: scratch space; each candidate gets its own directory, removed after judging.
        thresholds: the oracle's tolerances (see :func:`activation_divergence`).
    """

    def __init__(self, executor: Executor, pipeline: Pipeline, start: int, workdir: Path,
                 thresholds: Thresholds = Thresholds()):
        self.ex = executor
        self.pipeline = pipeline
        self.steps = pipeline.steps[start:]
        self.workdir = Path(workdir)
        self.thresholds = thresholds
        self.spec = get_model(pipeline.model).to_dict()

    def call(self, fn: str, family: str = "ort", **kwargs: Any) -> Any:
        return worker_call(self.ex, fn, family, **kwargs)

    def judge_cut(self, source: Path, recorded: Path, cut: Cut) -> Verdict:
        """Extract ``cut`` from ``source`` (values from ``recorded``) and judge it."""
        d = Path(tempfile.mkdtemp(prefix="cand-", dir=self.workdir))
        try:
            model = d / "candidate" / ARTIFACT_FILE["onnx"]
            model.parent.mkdir()
            try:
                self.call("materialize", model=str(source), cut=cut.to_dict(),
                          recorded=str(recorded), dst=str(model))
            except WorkerFailure:
                return Verdict("invalid")
            return self.judge(model, model.parent / "feed.npy")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def judge(self, model: Path, feed: Path) -> Verdict:
        """Apply the chain and the runtime to ``model`` fed ``feed``; compare with ORT on it."""
        reg = self.ex.registry
        x_shape = np.load(feed, mmap_mode="r", allow_pickle=False).shape
        # Steps and runtimes read the image shape from the spec (e.g. for a warm-up batch):
        # here the "image" is whatever the candidate takes.
        spec = {**self.spec, "input_shape": list(x_shape[1:])}
        art = model
        for k, s in enumerate(self.steps, 1):
            op = reg.get(s.name, "step")
            dst = model.parent.parent / f"step{k}" / ARTIFACT_FILE[op.dst]  # type: ignore[index]
            dst.parent.mkdir()
            try:
                self.ex._request(op.family, {
                    "op": "step", "step": s.name, "params": s.params, "src": str(art),
                    "dst": str(dst), "model": spec, "device": self.pipeline.device}, s.name)
            except WorkerFailure as exc:
                return Verdict(exc.symptom, step=s.name, error_class=exc.error_class)
            art = dst
        rt = reg.get(self.pipeline.runtime.name, "runtime")
        got = model.parent.parent / "outputs.npy"
        try:
            self.ex._request(rt.family, {
                "op": "run", "runtime": rt.name, "params": self.pipeline.runtime.params,
                "artifact": str(art), "inputs": str(feed), "outputs": str(got), "model": spec,
                "device": self.pipeline.device,
                # One batch: frozen activations hold the recorded batch.
                "batch_size": max(self.ex.batch_size, x_shape[0]), "repeats": 0}, rt.name)
        except WorkerFailure as exc:
            return Verdict(exc.symptom, step=rt.name, error_class=exc.error_class)
        ref = model.parent.parent / "reference.npy"
        try:
            self.call("reference", model=str(model), inputs=str(feed), out=str(ref))
        except WorkerFailure:
            return Verdict("invalid")
        # The runtime's output comes flattened to (batch, -1); the comparison allows for that.
        err = activation_divergence(np.load(ref, allow_pickle=False),
                                    np.load(got, allow_pickle=False), self.thresholds)
        return Verdict("diverges" if err.diverges else "agrees", err)


# -- the search ---------------------------------------------------------------------------------
@dataclass
class Reduction:
    """The result of :func:`reduce_cut`: the smallest cut found and what finding it cost."""

    cut: Cut
    evaluations: int
    stages: dict[str, int]


def reduce_cut(info: GraphInfo, rec: Recorded, keeps: Callable[[Cut], bool],
               start: Cut | None = None) -> Reduction | None:
    """Shrink a cut that keeps the finding: bisect the output, bisect the input side, ddmin.

    Args:
        info: the graph.
        rec: what was recorded on it (shapes and dtypes, on the image the predicate uses).
        keeps: the predicate; called once per distinct candidate.
        start: a cut known to keep the finding (not judged again); defaults to the whole
            graph up to its output, judged first.

    Returns:
        The reduction, or None when the whole graph does not keep the finding.
    """
    memo: dict[tuple[str, tuple[int, ...]], bool] = {}
    stages = {"bisect_output": 0, "bisect_input": 0, "ddmin": 0}

    def holds(cut: Cut | None, stage: str) -> bool:
        if cut is None:
            return False
        k = (cut.output, cut.nodes)
        if k not in memo:
            stages[stage] += 1
            memo[k] = keeps(cut)
        return memo[k]

    if start is None:
        last = info.output_node()
        start = None if last is None else make_cut(info, rec, last)
        if start is None or not holds(start, "bisect_output"):
            return None
    else:
        memo[(start.output, start.nodes)] = True
    last = info.producer[start.output]
    # (1) The earliest output whose prefix keeps the finding.
    outs = [i for i in range(last + 1) if cut_output(info, rec, i) is not None]
    lo, hi = -1, outs.index(last)
    best = start
    while hi - lo > 1:
        mid = (lo + hi) // 2
        c = make_cut(info, rec, outs[mid])
        if holds(c, "bisect_output"):
            hi, best = mid, c  # type: ignore[assignment]
        else:
            lo = mid
    b = outs[hi]
    # (2) The latest first node: nodes a..b keep it (a = 0 is the prefix, which does).
    lo, hi = 0, b + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        c = make_cut(info, rec, b, range(mid, b + 1))
        if holds(c, "bisect_input"):
            lo, best = mid, c  # type: ignore[assignment]
        else:
            hi = mid
    # (3) ddmin over contiguous ranges of what is left, the output node kept.
    items = [i for i in best.nodes if i != b]
    n = 2
    while items:
        n = min(n, len(items))
        size = -(-len(items) // n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        for chunk in chunks:
            c = make_cut(info, rec, b, set(items) - set(chunk))
            if holds(c, "ddmin"):
                best = c  # type: ignore[assignment]
                items = [i for i in best.nodes if i != b]
                n = max(n - 1, 2)
                break
        else:
            if n >= len(items):
                break
            n = min(len(items), 2 * n)
    return Reduction(best, sum(stages.values()), stages)


# -- the entry point ----------------------------------------------------------------------------
def reduce_subgraph(executor: Executor, pipeline: Pipeline, culprit_index: int, corpus: Any,
                    out_dir: Path, thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The smallest ONNX subgraph that still diverges (or crashes the same way) under the culprit.

    Args:
        executor: the session's executor (its workers must know the pipeline's plugins).
        pipeline: the minimal pipeline.
        culprit_index: 1-based index of the culprit step; ``len(steps) + 1`` for the runtime.
        corpus: the finding's minimal inputs (1–4 images); see "One image" above.
        out_dir: where ``reduced.onnx`` and its fed input ``reduced-input.npy`` are written.
        thresholds: the oracle's tolerances.

    Returns:
        ``{"path", "nodes", "inputs", "frozen_inputs", "outputs", "op_types", "node_names",
        "original_nodes", "evaluations", "stages", "verdict", "from_step", "image"}``; when no
        reduction can be made, ``{"path": None, "nodes": None, "reason": ...}``.
    """
    reg = executor.registry
    if not 1 <= culprit_index <= len(pipeline.steps) + 1:
        raise UsageError(f"culprit index {culprit_index} is outside 1..{len(pipeline.steps) + 1}")
    start = upstream_onnx(reg, pipeline, culprit_index)
    if start is None:
        return _no(f"no ONNX artifact at or before the culprit's input in {pipeline.label()}")
    ev = Evaluation(pipeline, None)
    source = executor.artifact(pipeline, start, ev)
    if source is None:
        return _no(f"the ONNX artifact after step {start} could not be made: "
                   f"{ev.failure.error_class if ev.failure else 'unknown'}")
    if not len(corpus):
        return _no("no minimal inputs to record activations on")
    spec = get_model(pipeline.model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="reduce-", dir=executor.store_dir))
    try:
        chain = OnnxChain(executor, pipeline, start, work, thresholds)
        try:
            info = GraphInfo.from_dict(chain.call("describe", model=str(source)))
        except WorkerFailure as exc:
            return _no(f"the ONNX graph after step {start} cannot be read: {exc}")
        last = info.output_node()
        if last is None:
            return _no("the graph's output is not made by a node")
        for i in range(min(len(corpus), MAX_IMAGES)):
            rec_path = work / f"recorded-{i}.npz"
            try:
                one = executor.inputs(spec, corpus.subset([i]))
                rec = Recorded.from_dict(chain.call("record", model=str(source), inputs=str(one),
                                                    out=str(rec_path), model_layout=spec.layout))
            except WorkerFailure as exc:
                return _no(f"ONNX Runtime cannot record the graph's tensors: {exc}")
            full = make_cut(info, rec, last)
            if full is None:
                return _no("the graph's output is not a batched floating-point tensor")
            whole = chain.judge_cut(source, rec_path, full)
            if whole.kind in ("diverges", "crash"):
                break
        else:
            return _no(f"the chain from the ONNX artifact after step {start} keeps the finding "
                       f"on none of the {min(len(corpus), MAX_IMAGES)} minimal inputs "
                       f"(the whole graph: {whole.kind})")
        verdicts: dict[Cut, Verdict] = {full: whole}

        def keeps(cut: Cut) -> bool:
            verdicts[cut] = chain.judge_cut(source, rec_path, cut)
            return verdicts[cut].key == whole.key

        red = reduce_cut(info, rec, keeps, full)
        assert red is not None  # the whole graph keeps it: that was just judged
        path = out_dir / "reduced.onnx"
        chain.call("materialize", model=str(source), cut=red.cut.to_dict(),
                   recorded=str(rec_path), dst=str(path))
        (out_dir / "feed.npy").replace(out_dir / "reduced-input.npy")
        nodes = [info.nodes[j] for j in red.cut.nodes]
        return {
            "path": str(path), "nodes": len(nodes), "inputs": [red.cut.feed],
            "frozen_inputs": list(red.cut.frozen), "outputs": [red.cut.output],
            "op_types": [n.op_type for n in nodes], "node_names": [n.name for n in nodes],
            "original_nodes": len(info.nodes), "evaluations": red.evaluations + 1,
            "stages": red.stages, "verdict": {"kind": whole.kind, **verdicts[red.cut].row()},
            "from_step": start, "image": list(getattr(corpus, "names", []))[i:i + 1],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _no(reason: str) -> dict[str, Any]:
    return {"path": None, "nodes": None, "reason": reason}


__all__ = ["reduce_subgraph", "reduce_cut", "make_cut", "build_subgraph", "GraphInfo", "Cut",
           "Recorded", "OnnxChain", "worker_call", "Verdict", "activation_divergence",
           "upstream_onnx"]
