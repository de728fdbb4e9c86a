"""Worker functions on ONNX graphs (the ``ort`` worker): describe, record, cut out, run.

The shrinker's localization (:mod:`.nodes`) and reduction (:mod:`.reduce`) plan in the
orchestrator on plain data (:mod:`.graph`) and send these through :class:`fuzzconv.protocol.Call`;
arrays travel as ``.npz`` files (:func:`save_arrays`). ONNX Runtime runs with graph optimisations
off: the reference semantics of a graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..formats.layout import INPUT_LAYOUT_KEY, onnx_input_layout, to_layout
from ..protocol import worker_function
from .graph import Cut, GraphInfo, topological_nodes

if TYPE_CHECKING:
    import onnx


def build_subgraph(model: "onnx.ModelProto", info: GraphInfo, cut: Cut,
                   arrays: Mapping[str, np.ndarray]) -> "onnx.ModelProto":
    """The ONNX model of ``cut``: fed input typed from its recorded value, others frozen.

    Args:
        model: the graph ``info`` describes.
        info: its description (node indices refer to its topological order).
        cut: the candidate.
        arrays: recorded values of at least the feed, the frozen inputs and the output.
    """
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
    sub = helper.make_model(graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version, functions=list(model.functions),
                            producer_name="fuzzconv.reduce")
    # Marks that steps leave for later steps travel with the subgraph; the input layout does
    # not: the fed tensor is an activation, in whatever layout the graph computes it.
    sub.metadata_props.extend(p for p in model.metadata_props if p.key != INPUT_LAYOUT_KEY)
    return sub



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


@worker_function
def describe(model: str) -> dict[str, Any]:
    """Worker op: the :class:`GraphInfo` of an ONNX file, as a dict."""
    import onnx

    return GraphInfo.from_model(onnx.load(model)).to_dict()


@worker_function
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


@worker_function
def materialize(model: str, cut: dict[str, Any], recorded: str, dst: str) -> dict[str, Any]:
    """Worker op: write the cut's subgraph to ``dst`` and its fed input beside it (``feed.npy``)."""
    import onnx

    proto = onnx.load(model)
    c = Cut.from_dict(cut)
    arrays = load_arrays(recorded)
    onnx.save(build_subgraph(proto, GraphInfo.from_model(proto), c, arrays), dst)
    np.save(Path(dst).parent / "feed.npy", arrays[c.feed], allow_pickle=False)
    return {"nodes": len(c.nodes)}


@worker_function
def reference(model: str, inputs: str, out: str) -> dict[str, Any]:
    """Worker op: ONNX Runtime (optimisations off) on a one-input model; first output to ``out``."""
    sess = _session(model)
    x = np.load(inputs, allow_pickle=False)
    y = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    np.save(out, y, allow_pickle=False)
    return {"shape": list(y.shape)}
