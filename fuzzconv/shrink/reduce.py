"""Reducing a divergent model to the smallest ONNX subgraph that still diverges under its culprit.

The shrinker makes the *pipeline* minimal and names the culprit step; this module makes the *model*
minimal, so a finding can ship a graph of a handful of nodes instead of a whole network. What it
shares with :mod:`.nodes` lives beside it: graphs and cuts as plain data (:mod:`.graph`), the worker
functions that record and extract them (:mod:`.onnx_tensors`), re-applying the pipeline's chain to a
candidate (:mod:`.chain`) and the per-tensor tolerance (:mod:`fuzzconv.activations`).

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
``If``/``Loop`` body reads from the outer scope. :func:`.onnx_tensors.build_subgraph` types inputs
from the recorded arrays and :class:`.graph.GraphInfo` counts outer-scope reads as inputs (see
:mod:`.graph` for empty names).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from ..executor import Evaluation, Executor
from ..interfaces import Corpus
from ..oracle import Thresholds
from ..pipeline import Pipeline
from ..workers import WorkerFailure
from ..zoo import get_model
from .chain import OnnxChain, Verdict, upstream_onnx
from .graph import Cut, GraphInfo, Recorded, cut_output, make_cut
from .onnx_tensors import describe, materialize, record

#: Minimal inputs tried (one at a time) for an image on which the whole graph keeps the finding.
MAX_IMAGES = 4


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
def reduce_subgraph(executor: Executor, pipeline: Pipeline, culprit_index: int, corpus: Corpus,
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
            info = GraphInfo.from_dict(chain.call(describe, model=str(source)))
        except WorkerFailure as exc:
            return _no(f"the ONNX graph after step {start} cannot be read: {exc}")
        last = info.output_node()
        if last is None:
            return _no("the graph's output is not made by a node")
        for i in range(min(len(corpus), MAX_IMAGES)):
            rec_path = work / f"recorded-{i}.npz"
            try:
                one = executor.inputs(spec, corpus.subset([i]))
                rec = Recorded.from_dict(chain.call(record, model=str(source), inputs=str(one),
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
        chain.call(materialize, model=str(source), cut=red.cut.to_dict(),
                   recorded=str(rec_path), dst=str(path))
        (out_dir / "feed.npy").replace(out_dir / "reduced-input.npy")
        nodes = [info.nodes[j] for j in red.cut.nodes]
        return {
            "path": str(path), "nodes": len(nodes), "inputs": [red.cut.feed],
            "frozen_inputs": list(red.cut.frozen), "outputs": [red.cut.output],
            "op_types": [n.op_type for n in nodes], "node_names": [n.name for n in nodes],
            "original_nodes": len(info.nodes), "evaluations": red.evaluations + 1,
            "stages": red.stages, "verdict": {"kind": whole.kind, **verdicts[red.cut].row()},
            "from_step": start, "image": list(corpus.names)[i:i + 1],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _no(reason: str) -> dict[str, Any]:
    return {"path": None, "nodes": None, "reason": reason}


__all__ = ["reduce_subgraph", "reduce_cut", "Reduction"]
