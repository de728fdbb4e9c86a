"""Localizing a divergence inside the model: the first node whose output diverges under the culprit.

:func:`first_divergent_node` takes the culprit step that :func:`.localize.find_culprit` found and
compares per-node outputs of what goes into it with what comes out, on the finding's minimal
inputs. How depends on the culprit:

- **ONNX → ONNX** (``onnx.optimize``, ``onnx.version``, ``onnx_transform`` plugins), method
  ``exposed-outputs``: every node output of both graphs becomes a graph output, both run in ONNX
  Runtime with graph optimisations off, and nodes are matched by output tensor name (a culprit
  that renames or fuses nodes leaves some unmatched: ``matched`` of ``nodes`` says how many were
  compared). The first node in topological order whose output diverges is the answer. When none
  does (the difference needs the pipeline's runtime), the next method is tried.
- **Downstream of an ONNX artifact** (``onnx.tvm``, ``tvm.pass``, ``tvm.build``, the ``tvm``
  runtime, ``onnx.onnx2torch`` …), method ``prefix-bisect``: the nearest ONNX artifact upstream is
  the reference graph. A prefix of it (everything needed for one node's output) is run through the
  pipeline's chain from there and compared with ONNX Runtime on the same prefix. Relax keeps no
  ONNX node names, and the VM's ``set_instrument`` hook only sees calls of lowered kernels, so
  cutting the ONNX graph is the one way to name an ONNX node; it costs a conversion and a build
  per probe, so the prefixes are bisected by topological position, then the answer is walked
  upstream while one of its inputs' producers diverges too (so the result is a node whose inputs
  agree).
- **Keras → ONNX / TFLite** (``keras.tf2onnx``, ``keras.tflite``), method ``keras-layers``: the
  outputs of every Keras layer (a multi-output model, in the tf worker) against the converted
  model's tensors (ONNX Runtime with every node output exposed; the TFLite interpreter with
  ``experimental_preserve_all_tensors`` and no delegate), mapped by the layer names the converters
  keep in node, initializer and tensor names. A converted tensor belongs to the last layer (in model
  order) its names mention — converters fuse a layer into the next (BatchNormalization into the
  convolution before it), and the fused output is the later layer's — and a layer maps to the last
  tensor it owns, unless a later tensor owned by another layer still mentions it (TFLite fuses a
  BatchNormalization's final add into the ReLU after it, leaving only its multiply on its own).
  Initializers shared by several nodes (tf2onnx shares the ReLU6 bounds) are not names to match
  by. 4-D Keras tensors are compared in NHWC or NCHW, whichever shape fits.

Whatever the method, the result is a dict: ``node`` (the name; None when nothing can be said,
with ``reason``), ``op_type``, ``method``, ``matched`` and ``nodes`` (nodes compared, of all; for
``prefix-bisect`` the nodes a prefix can end at, of which ``probes`` were run), and ``path``:
``{"node", "op_type", "max_abs", "max_rel", "diverges"}`` in order, the last :data:`PATH_BEFORE`
compared nodes before the first divergent one, it, and :data:`PATH_AFTER` after it. The
tolerance is :func:`fuzzconv.activations.activation_divergence`. It never raises for a culprit it
cannot look into, nor for a worker failure while looking.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..activations import TensorError, activation_divergence
from ..executor import Evaluation, Executor
from ..interfaces import Corpus
from ..oracle import Thresholds
from ..pipeline import Pipeline
from ..workers import WorkerFailure
from ..zoo import get_model
from .chain import OnnxChain, Verdict, upstream_onnx, worker_call
from .graph import GraphInfo, Recorded, cut_output, make_cut
from .keras_tensors import keras_layer_outputs, tflite_tensors
from .onnx_tensors import describe, load_arrays, record

#: Compared nodes kept in ``path`` before the first divergent one, and after it.
PATH_BEFORE = 8
PATH_AFTER = 3


def first_divergent_node(executor: Executor, pipeline: Pipeline, culprit_index: int,
                         corpus: Corpus, thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The first node whose output diverges under the culprit step, on ``corpus``.

    Args:
        executor: the session's executor (its workers must know the pipeline's plugins).
        pipeline: the minimal pipeline.
        culprit_index: 1-based index of the culprit step; ``len(steps) + 1`` for the runtime.
        corpus: the finding's minimal inputs (1–4 images).
        thresholds: the oracle's tolerances, adapted per tensor.

    Returns:
        See the module docstring; ``{"node": None, "reason": ...}`` when nothing can be said.
    """
    reg = executor.registry
    steps = pipeline.steps
    if not 1 <= culprit_index <= len(steps) + 1:
        return _no(f"culprit index {culprit_index} is outside 1..{len(steps) + 1}")
    culprit = steps[culprit_index - 1] if culprit_index <= len(steps) else pipeline.runtime
    op = reg.get(culprit.name)
    work = Path(tempfile.mkdtemp(prefix="nodes-", dir=executor.store_dir))
    tried: dict[str, Any] | None = None
    try:
        if op.kind == "step" and op.src == op.dst == "onnx":
            tried = _exposed(executor, pipeline, culprit_index, corpus, thresholds, work)
            if tried["node"] is not None:
                return tried
        elif op.kind == "step" and op.src == "keras" and op.dst in ("onnx", "tflite"):
            return _keras_layers(executor, pipeline, culprit_index, corpus, thresholds, work)
        start = upstream_onnx(reg, pipeline, culprit_index)
        if start is None:
            return _no(f"no per-node comparison for a {op.src} → {op.dst or 'run'} culprit "
                       f"({culprit.name}) without an ONNX artifact upstream")
        res = _prefix_bisect(executor, pipeline, start, corpus, thresholds, work)
        if res["node"] is None and tried is not None:
            res["exposed_outputs"] = tried
        return res
    except WorkerFailure as exc:
        return _no(f"localization failed in a worker: {exc.error_class}: {exc.message[:300]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _no(reason: str, **extra: Any) -> dict[str, Any]:
    return {"node": None, "reason": reason, **extra}


def _artifact(executor: Executor, pipeline: Pipeline, n: int) -> Path:
    ev = Evaluation(pipeline, None)
    path = executor.artifact(pipeline, n, ev)
    if path is None:
        f = ev.failure
        assert f is not None  # the executor records why it made no artifact
        raise WorkerFailure(f.symptom, f.error_class,
                            f"the artifact after step {n} could not be made: {f.message}")
    return path


def _window(rows: list[dict[str, Any]], first: int | None) -> list[dict[str, Any]]:
    if first is None:
        return rows[-PATH_BEFORE:]
    return rows[max(0, first - PATH_BEFORE):first + 1 + PATH_AFTER]


def _row(name: str, op_type: str, err: TensorError, **extra: Any) -> dict[str, Any]:
    return {"node": name, "op_type": op_type, **err.row(), **extra}


def _answer(rows: list[dict[str, Any]], method: str, matched: int, total: int,
            first: int | None = None, **extra: Any) -> dict[str, Any]:
    """The result for compared ``rows`` in order: row ``first`` (by default the first divergent
    one), or why there is none."""
    if first is None:
        first = next((i for i, r in enumerate(rows) if r["diverges"]), None)
    base = {"method": method, "matched": matched, "nodes": total, "path": _window(rows, first),
            **extra}
    if first is None:
        return {"node": None, "op_type": None, **base,
                "reason": f"none of the {matched} compared node outputs diverges"}
    hit = rows[first]
    keep = {k: v for k, v in hit.items() if k not in ("node", "op_type", "max_abs", "max_rel",
                                                      "diverges", "note")}
    return {"node": hit["node"], "op_type": hit["op_type"], **keep, **base}


# -- ONNX → ONNX: expose every node output ------------------------------------------------------
def _exposed(executor: Executor, pipeline: Pipeline, ci: int, corpus: Corpus,
             thresholds: Thresholds, work: Path) -> dict[str, Any]:
    spec = get_model(pipeline.model)
    inputs = str(executor.inputs(spec, corpus))
    graphs, values = [], []
    for n, tag in ((ci - 1, "before"), (ci, "after")):
        art = _artifact(executor, pipeline, n)
        graphs.append(GraphInfo.from_dict(worker_call(executor, describe, model=str(art))))
        worker_call(executor, record, model=str(art), inputs=inputs,
                    out=str(work / f"{tag}.npz"), model_layout=spec.layout)
        values.append(load_arrays(work / f"{tag}.npz"))
    ref_info, test_info = graphs
    ref, test = values
    rows = []
    for node in ref_info.nodes:
        common = [t for t in node.outputs if t in ref and t in test and t in test_info.producer]
        if not common:
            continue
        errs = [activation_divergence(ref[t], test[t], thresholds) for t in common]
        worst = max(errs, key=lambda e: (e.diverges, e.max_rel))
        rows.append(_row(node.name, node.op_type, worst))
    renamed = len(ref_info.nodes) - len(rows)
    return _answer(rows, "exposed-outputs", len(rows), len(ref_info.nodes),
                   reference=f"onnx after step {ci - 1}", images=len(corpus),
                   **({"unmatched_note": f"{renamed} nodes have no same-named output after the "
                                         "culprit (renamed, fused or removed)"} if renamed else {}))


# -- downstream of ONNX: bisect over prefixes ---------------------------------------------------
def _prefix_bisect(executor: Executor, pipeline: Pipeline, start: int, corpus: Corpus,
                   thresholds: Thresholds, work: Path) -> dict[str, Any]:
    spec = get_model(pipeline.model)
    source = _artifact(executor, pipeline, start)
    chain = OnnxChain(executor, pipeline, start, work, thresholds)
    info = GraphInfo.from_dict(worker_call(executor, describe, model=str(source)))
    rec_path = work / "recorded.npz"
    rec = Recorded.from_dict(worker_call(
        executor, record, model=str(source), inputs=str(executor.inputs(spec, corpus)),
        out=str(rec_path), model_layout=spec.layout))
    outs = [i for i in range(len(info.nodes)) if cut_output(info, rec, i) is not None]
    last = info.output_node()
    if last is None or last not in outs:
        return _no("the graph's output is not a batched floating-point tensor")
    verdicts: dict[int, Verdict] = {}

    def diverges(i: int) -> bool:
        if i not in verdicts:
            cut = make_cut(info, rec, i)
            verdicts[i] = Verdict("invalid") if cut is None else chain.judge_cut(source, rec_path,
                                                                                 cut)
        return verdicts[i].kind == "diverges"

    def rows() -> list[dict[str, Any]]:
        return [{"node": info.nodes[i].name, "op_type": info.nodes[i].op_type,
                 **verdicts[i].row()} for i in sorted(verdicts)]

    extra = {"reference": f"onnx after step {start}", "images": len(corpus)}
    if not diverges(last):
        return _no(f"the chain from the ONNX artifact after step {start} does not diverge from "
                   f"ONNX Runtime on the whole graph (verdict: {verdicts[last].kind})",
                   method="prefix-bisect",
                   path=rows(), probes=len(verdicts), **extra)
    lo, hi = -1, outs.index(last)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if diverges(outs[mid]):
            hi = mid
        else:
            lo = mid
    b = outs[hi]
    # Bisection assumes divergence persists downstream; a side branch can break that, so move
    # to a diverging producer of an input until the node's inputs all agree.
    moved = True
    while moved:
        moved = False
        for t in info.nodes[b].inputs:
            p = info.producer.get(t)
            if p is not None and p in outs and diverges(p):
                b, moved = p, True
                break
    return _answer(rows(), "prefix-bisect", len(outs), len(info.nodes),
                   first=sorted(verdicts).index(b), probes=len(verdicts), **extra)


# -- Keras → ONNX / TFLite: layers by name ------------------------------------------------------
def _mentions(text: str, index: dict[str, int]) -> list[int]:
    """Positions of the layers whose names are segments of ``text``.

    TensorFlow name scopes add ``_<n>`` to a layer's name (``stem_conv_1/convolution``): a
    segment that is not itself a layer name counts for the layer it extends.
    """
    found = []
    for seg in re.split(r"[/;:]", text):
        if seg in index:
            found.append(index[seg])
            continue
        m = re.fullmatch(r"(.+)_\d+", seg)
        if m and m.group(1) in index:
            found.append(index[m.group(1)])
    return found


def map_layers(layers: Sequence[str], tensors: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Keras layer → converted tensor (see the module docstring for the rule).

    Args:
        layers: layer names in model order.
        tensors: (tensor key, the names that describe it) in execution order.
    """
    index = {name: i for i, name in enumerate(layers)}
    owned: dict[int, tuple[int, str]] = {}  # layer → (position, key) of the last tensor it owns
    last_seen: dict[int, int] = {}  # layer → position of the last tensor that mentions it
    for pos, (key, text) in enumerate(tensors):
        found = _mentions(text, index)
        if found:
            owned[max(found)] = (pos, key)
            last_seen.update((f, pos) for f in found)
    # A layer whose last op went into a later layer's tensor has no output of its own to compare.
    return {layers[i]: key for i, (pos, key) in owned.items() if last_seen[i] == pos}


def _onnx_descriptions(info: GraphInfo) -> list[tuple[str, str]]:
    """(first output, names that describe it) per ONNX node, from its names and own weights."""
    uses: dict[str, int] = {}
    for n in info.nodes:
        for t in set(n.inputs):
            uses[t] = uses.get(t, 0) + 1
    out = []
    for n in info.nodes:
        if not n.outputs:
            continue
        own = [t for t in n.inputs if t in info.initializers and uses[t] == 1]
        out.append((n.outputs[0], ";".join([n.name, *n.outputs, *own])))
    return out


def _compare_layouts(ref: np.ndarray, out: np.ndarray, thresholds: Thresholds) -> TensorError:
    """Compare a Keras (NHWC) tensor with a converted one that may be NCHW."""
    options = [ref]
    if ref.ndim == 4:
        options.append(ref.transpose(0, 3, 1, 2))
    fits = [o for o in options if o.shape == out.shape]
    if not fits:
        return activation_divergence(ref, out, thresholds)
    return min((activation_divergence(o, out, thresholds) for o in fits),
               key=lambda e: e.max_abs)


def _keras_layers(executor: Executor, pipeline: Pipeline, ci: int, corpus: Corpus,
                  thresholds: Thresholds, work: Path) -> dict[str, Any]:
    spec = get_model(pipeline.model)
    inputs = str(executor.inputs(spec, corpus))
    src, dst = _artifact(executor, pipeline, ci - 1), _artifact(executor, pipeline, ci)

    def call(fn: Callable[..., Any], family: str = "ort", **kwargs: Any) -> Any:
        return worker_call(executor, fn, family, **kwargs)

    layers = call(keras_layer_outputs, family="tf", model=str(src), inputs=inputs,
                  out=str(work / "keras.npz"))["layers"]
    ref = load_arrays(work / "keras.npz")
    if dst.suffix == ".onnx":
        info = GraphInfo.from_dict(call(describe, model=str(dst)))
        call(record, model=str(dst), inputs=inputs, out=str(work / "test.npz"),
             model_layout=spec.layout)
        described = _onnx_descriptions(info)
        kinds = {n.outputs[0]: (n.name, n.op_type) for n in info.nodes if n.outputs}
    else:
        tensors = call(tflite_tensors, family="tf", model=str(dst), inputs=inputs,
                       out=str(work / "test.npz"))["tensors"]
        described = [(name, name) for name, _ in tensors]
        kinds = {name: (name, op) for name, op in tensors}
    test = load_arrays(work / "test.npz")
    mapping = map_layers([name for name, _ in layers], described)
    rows = []
    for name, cls in layers:
        key = mapping.get(name)
        if key is None or key not in test:
            continue
        err = _compare_layouts(ref[name], test[key], thresholds)
        rows.append(_row(name, cls, err, converted_node=kinds[key][0],
                         converted_op_type=kinds[key][1]))
    return _answer(rows, "keras-layers", len(rows), len(layers),
                   reference="keras source", images=len(corpus))
