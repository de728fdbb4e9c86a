"""Re-applying a pipeline's chain to a candidate ONNX graph, and judging what it makes.

:class:`OnnxChain` takes the nearest ONNX artifact upstream of the culprit (:func:`upstream_onnx`)
as its reference graph and runs a candidate (a prefix, a subgraph) through the rest of the chain
(steps ``start+1`` to the last, then the runtime) as ordinary worker requests, so built-in steps
and plugins behave exactly as in the hunt; ONNX Runtime with graph optimisations off on the same
candidate is what it is compared with. Candidates run in a scratch directory, not through the
cache.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..activations import TensorError, activation_divergence
from ..executor import Executor
from ..oracle import Thresholds
from ..pipeline import Pipeline
from ..protocol import Call, RunRequest, StepRequest, wire_name
from ..registry import ARTIFACT_FILE, Registry
from ..workers import WorkerFailure
from ..zoo import get_model
from .graph import Cut
from .onnx_tensors import materialize, reference


def worker_call(executor: Executor, fn: Callable[..., Any], family: str = "ort",
                **kwargs: Any) -> Any:
    """Run the worker function ``fn`` in a ``family`` worker, within the executor's deadline.

    Raises:
        WorkerFailure: it raised, or the worker died or hung.
    """
    return executor._request(family, Call.to(fn, **kwargs), wire_name(fn))


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

    def call(self, fn: Callable[..., Any], family: str = "ort", **kwargs: Any) -> Any:
        """Run the worker function ``fn`` (see :func:`worker_call`)."""
        return worker_call(self.ex, fn, family, **kwargs)

    def judge_cut(self, source: Path, recorded: Path, cut: Cut) -> Verdict:
        """Extract ``cut`` from ``source`` (values from ``recorded``) and judge it."""
        d = Path(tempfile.mkdtemp(prefix="cand-", dir=self.workdir))
        try:
            model = d / "candidate" / ARTIFACT_FILE["onnx"]
            model.parent.mkdir()
            try:
                self.call(materialize, model=str(source), cut=cut.to_dict(),
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
                self.ex._request(op.family, StepRequest(s.name, s.params, str(art), str(dst),
                                                        spec, self.pipeline.device), s.name)
            except WorkerFailure as exc:
                return Verdict(exc.symptom, step=s.name, error_class=exc.error_class)
            art = dst
        rt = reg.get(self.pipeline.runtime.name, "runtime")
        got = model.parent.parent / "outputs.npy"
        try:
            self.ex._request(rt.family, RunRequest(
                rt.name, self.pipeline.runtime.params, str(art), str(feed), str(got), spec,
                self.pipeline.device,
                # One batch: frozen activations hold the recorded batch.
                batch_size=max(self.ex.batch_size, x_shape[0])), rt.name)
        except WorkerFailure as exc:
            return Verdict(exc.symptom, step=rt.name, error_class=exc.error_class)
        ref = model.parent.parent / "reference.npy"
        try:
            self.call(reference, model=str(model), inputs=str(feed), out=str(ref))
        except WorkerFailure:
            return Verdict("invalid")
        # The runtime's output comes flattened to (batch, -1); the comparison allows for that.
        err = activation_divergence(np.load(ref, allow_pickle=False),
                                    np.load(got, allow_pickle=False), self.thresholds)
        return Verdict("diverges" if err.diverges else "agrees", err)
