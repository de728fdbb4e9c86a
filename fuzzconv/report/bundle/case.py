"""What a bundle reproduces: the culprit, what ``repro.py`` runs after it, its input and inputs.

The culprit is the step the shrinker named in the minimal pipeline. ``repro.py`` runs the culprit,
then the plainest way to get outputs from what it made — the same completion the culprit search
judged (:func:`fuzzconv.pipeline.runnable_prefix`) — on the culprit's input artifact from the cache.
``expected.npy`` is that input run by the plainest completion too, and the inputs are chosen where
the two disagree the way the finding says, preferring the finding's minimal inputs. A finding
whose reduced ONNX subgraph feeds exactly the culprit is bundled with that subgraph instead (see
:func:`reduced_variant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...campaign import HuntConfig
from ...errors import UsageError
from ...executor import Evaluation, Executor
from ...oracle import Thresholds, compare
from ...pipeline import Pipeline, Step, plainest_runtime, runnable_prefix
from ...protocol import RunRequest
from ...registry import ARTIFACT_FILE, Operation
from ...store import Store
from ...workers import WorkerFailure
from ...zoo import ModelSpec, get_model

#: Most bundled inputs: enough to show the symptom, small enough to read in an issue.
MAX_INPUTS = 4


@dataclass
class Case:
    """Everything about the finding a bundle needs, found once.

    Args:
        index: the culprit's 1-based position; ``len(steps) + 1`` for the runtime.
        chain: what repro.py runs on the culprit's input: the culprit, then the plainest
            completion of what it made (steps, then a runtime).
    """

    finding: dict[str, Any]
    ex: Executor
    spec: ModelSpec
    pipeline: Pipeline
    index: int
    element: Step
    op: Operation
    chain: list[Step]
    corpus: Any
    thresholds: Thresholds

    @property
    def label(self) -> str:
        return self.element.label()

    @property
    def input_format(self) -> str:
        if self.index == 1:
            return self.spec.source
        before = self.pipeline.steps[self.index - 2]
        return self.ex.registry.get(before.name).dst  # type: ignore[return-value]

    def output_file(self, step: Step) -> str | None:
        """The file a chain element writes (None for the runtime)."""
        op = self.ex.registry.get(step.name)
        return ARTIFACT_FILE[op.dst] if op.kind == "step" else None  # type: ignore[index]


@dataclass
class Variant:
    """One way of bundling the case: the full input artifact, or the reduced subgraph.

    Args:
        input_files: what goes into ``input/``; the first is the artifact's main file.
        inputs: the bundled inputs (images preprocessed for the model, or an activation).
        input_names: one name per input row, for the printouts.
        expected: outputs before the culprit (None for crash and timeout findings).
        model: the model spec the chain's functions are given (its ``input_shape`` is the fed
            activation's for a reduced subgraph).
        compare: how repro.py judges (the symptom, or ``activation``).
        reduced: True for the reduced subgraph.
        note: a paragraph for the README.
    """

    input_files: list[Path]
    inputs: np.ndarray
    input_names: list[str]
    expected: np.ndarray | None
    model: dict[str, Any]
    compare: str
    reduced: bool = False
    note: str = ""

    @property
    def input_file(self) -> str:
        return self.input_files[0].name


def plan(ex: Executor, db: Store, f: dict[str, Any]) -> Case:
    """The case of a stored finding.

    Raises:
        UsageError: the finding cannot be bundled (a slowdown, a GPU run, no culprit yet, no
            plain way to run what the culprit makes).
    """
    from ...corpora import select

    if f["symptom"] == "slowdown":
        raise UsageError(f"{f['id']} is a slowdown: a standalone bundle reproduces wrong outputs, "
                         "crashes and hangs, not timings (use fuzzconv repro)")
    cfg = HuntConfig(**db.campaign(f["campaign"])["config"])
    reg = ex.registry
    pipeline = Pipeline.from_dict(f.get("minimal_pipeline") or f["pipeline"], reg)
    if pipeline.device != "cpu":
        raise UsageError(f"{f['id']} ran on {pipeline.device}; bundles reproduce on the CPU only")
    index = culprit_index(pipeline, f)
    spec = get_model(pipeline.model)
    if index <= len(pipeline.steps):
        element = pipeline.steps[index - 1]
        after = runnable_prefix(reg, pipeline, index, spec.source)
        if after is None:
            raise UsageError(f"{element.name} makes {reg.get(element.name).dst} artifacts, which "
                             "no runtime here runs: there is nothing to compare its output with")
        chain = [*after.steps[index - 1:], after.runtime]
    else:
        element = pipeline.runtime
        chain = [element]
    return Case(f, ex, spec, pipeline, index, element, reg.get(element.name), chain,
                select(cfg.images_dir, cfg.images or None), Thresholds(**cfg.thresholds))


def culprit_index(p: Pipeline, f: dict[str, Any]) -> int:
    """The 1-based position of the finding's culprit in its minimal pipeline."""
    c = f.get("culprit")
    if not c:
        raise UsageError(f"{f['id']} has no culprit step yet: run `fuzzconv shrink {f['id']}` "
                         "first")
    elements = [*p.steps, p.runtime]
    for match in (lambda s: s.name == c["step"] and s.params == c["params"],
                  lambda s: s.name == c["step"]):
        for i, s in enumerate(elements, 1):
            if match(s):
                return i
    raise UsageError(f"{f['id']}: the culprit {c['step']} is not in its minimal pipeline")


# -- variants -------------------------------------------------------------------------------------
def full_variant(case: Case, say: Callable[[str], None]) -> Variant:
    """The culprit's input artifact from the cache, inputs where the culprit shows the symptom."""
    ex, spec, p, f = case.ex, case.spec, case.pipeline, case.finding
    reg = ex.registry
    failing = [case.corpus.names.index(n) for n in f.get("failing_inputs") or []
               if n in case.corpus.names]
    before = None
    if f["symptom"] in ("crash", "timeout"):
        indices = failing[:1] or [0]
    else:
        before = runnable_prefix(reg, p, case.index - 1, spec.source)
        if before is None:
            raise UsageError(f"the input of {case.label} ({case.input_format}) has no runtime to "
                             "compute the expected outputs with")
        # The culprit applied, then the plainest completion: what the culprit search judged.
        after = (runnable_prefix(reg, p, case.index, spec.source) if case.op.kind == "step"
                 else None) or p
        say(f"evaluating the culprit's input and output on {len(case.corpus)} images")
        indices = pick_inputs(f["symptom"], _logits(ex, before, case.corpus),
                              _logits(ex, after, case.corpus, missing_ok=True), failing,
                              case.thresholds)
    subset = case.corpus.subset(indices)
    calibration = ex.calibration_inputs(spec) if ex.weights == "calibrated" else None
    ev = Evaluation(p, None)
    art = ex.artifact(p, case.index - 1, ev, calibration=calibration)
    if art is None:
        raise UsageError(f"the input artifact of {case.label} cannot be made: "
                         f"{ev.failure.error_class if ev.failure else 'unknown'}")
    files = [art] + sorted(x for x in art.parent.iterdir()
                           if x.is_file() and x not in (art, art.parent / "meta.json"))
    return Variant(
        input_files=files, inputs=np.load(ex.inputs(spec, subset), allow_pickle=False),
        input_names=list(subset.names),
        expected=None if before is None else _logits(ex, before, subset),
        model=spec.to_dict(), compare=f["symptom"])


def reduced_variant(case: Case, say: Callable[[str], None]) -> Variant | None:
    """The finding's reduced ONNX subgraph, when the culprit reads exactly that graph."""
    red = case.finding.get("reduced_model") or {}
    path = Path(red["path"]) if red.get("path") else None
    if (path is None or not path.is_file() or case.op.src != "onnx"
            or red.get("from_step") != case.index - 1):
        return None
    feed_file = path.parent / "reduced-input.npy"
    if not feed_file.is_file():
        return None
    feed = np.load(feed_file, allow_pickle=False)
    # The steps and the runtime read the image shape from the spec: here the "image" is whatever
    # the subgraph takes.
    model = {**case.spec.to_dict(), "input_shape": list(feed.shape[1:])}
    symptom = case.finding["symptom"]
    expected = None
    if symptom not in ("crash", "timeout"):
        say("running the reduced subgraph with the plainest ONNX runtime")
        try:
            expected = _run_file(case, path, feed_file, model, len(feed))
        except WorkerFailure as exc:
            say(f"the reduced subgraph does not run on its own ({exc}); bundling the full model")
            return None
    image = (red.get("image") or ["?"])[0]
    tensor = (red.get("inputs") or ["input"])[0]
    return Variant(
        input_files=[path], inputs=feed, input_names=[f"{tensor} @ {image}"] * len(feed),
        expected=expected, model=model,
        compare=symptom if symptom in ("crash", "timeout") else "activation", reduced=True,
        note=(f"`input/{path.name}` is the finding's reduced subgraph: {red.get('nodes')} of "
              f"{red.get('original_nodes')} nodes ({', '.join(red.get('op_types') or [])}), fed "
              f"the activation `{tensor}` recorded on `{image}`; its other inputs are frozen to "
              "their recorded values. Its output is an activation, not logits, so `repro.py` "
              "judges it per tensor: divergent past the campaign's rtol of the tensor's range."))


def _logits(ex: Executor, p: Pipeline, corpus: Any, missing_ok: bool = False) -> np.ndarray | None:
    """The pipeline's outputs on the corpus (from the cache when it has them)."""
    ev = ex.evaluate(p, corpus)
    if ev.failure is None and ev.logits is not None:
        return ev.logits
    if missing_ok:
        return None
    fail = ev.failure
    raise UsageError(f"{p.label()} failed while bundling: "
                     f"{fail.error_class if fail else '?'}: {fail.message if fail else ''}"[:400])


def pick_inputs(symptom: str, ref: np.ndarray, got: np.ndarray | None, failing: list[int],
                thresholds: Thresholds = Thresholds()) -> list[int]:
    """Images on which the culprit's output differs from its input the way the symptom says (as
    the oracle counts it), the finding's minimal inputs first."""
    if got is None or got.shape != ref.shape:
        return failing[:MAX_INPUTS] or [0]
    finite = np.isfinite(got).all(axis=1)
    if symptom == "label_flip":
        shows = sorted([*compare(ref, got, thresholds).flipped,
                        *(int(i) for i in np.flatnonzero(~finite))])
    elif symptom == "nan":
        shows = [int(i) for i in np.flatnonzero(~finite)]
    else:  # numeric: the largest differences
        diff = np.where(finite[:, None], np.abs(got.astype(np.float64) - ref), 0.0).max(axis=1)
        shows = [int(i) for i in np.argsort(-diff, kind="stable")[:2]]
    picked = [i for i in failing if i in shows]
    picked += [i for i in shows if i not in failing]
    return picked[:MAX_INPUTS] or failing[:MAX_INPUTS] or [0]


def _run_file(case: Case, artifact: Path, inputs_file: Path, model: dict[str, Any],
              images: int) -> np.ndarray:
    """The plainest ONNX runtime on an ONNX file outside the cache (the reduced subgraph)."""
    import tempfile

    ex = case.ex
    rt = plainest_runtime(ex.registry, "onnx")
    assert rt is not None
    op = ex.registry.get(rt.name, "runtime")
    with tempfile.TemporaryDirectory(dir=ex.store_dir) as tmp:
        out = Path(tmp) / "outputs.npy"
        ex.pool.request(op.family, RunRequest(rt.name, rt.params, str(artifact), str(inputs_file),
                                              str(out), model,
                                              batch_size=max(ex.batch_size, images)),
                        timeout=ex.timeout_for(rt.name))
        return np.load(out, allow_pickle=False)
