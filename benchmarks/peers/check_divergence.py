"""The one check every reducer uses: does this (reduced) model still diverge the same way?

    python check_divergence.py CASE.json MODEL.onnx [--data REC.npz ...] [--log FILE]

Exit status: **1** when the model keeps the case's signature (it still diverges, or crashes in
the same step with the same error class), **0** when it does not, **2** when it cannot be judged
(a graph input with no recorded value, a model ONNX Runtime cannot run as the reference, a bad
case file). Any error of the check itself also ends in 2, never 1, so a broken check is never
taken for a reproduction; Polygraphy is run with ``--fail-code 1`` for the same reason.

What is judged is what fuzzconv's reducer judges (``fuzzconv.shrink.reduce``, "Predicate"): the
case's chain (``steps`` then ``runtime``, the failing part of a fuzzconv pipeline, applied with
fuzzconv's own step functions and plugins) against ONNX Runtime with graph optimisations off on
the same unmodified model, both fed the same values, compared per output tensor with
:func:`fuzzconv.activations.activation_divergence`. Two differences from the reducer's own
runs make it usable by any reducer:

- every graph input is fed, by name, from the recorded activations (``--data``, the
  ``save_arrays`` format of ``fuzzconv.shrink.reduce``), so the several-input subgraphs
  Polygraphy makes run too (fuzzconv's runtimes feed exactly one input);
- the runtime is ONNX Runtime or the Relax VM driven here with those feeds, with the options
  fuzzconv's ``ort`` and ``tvm`` runtimes use.

With several ``--data`` files (one per input sample) the model keeps the signature when it does
on at least one of them.

The chain runs in a forked child, so a segfault in a step is seen as a crash in that step.
``--log`` appends one JSON line per invocation (verdict, exit status, seconds, node and input
counts): that is how checks are counted, whoever calls this.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPRODUCES, AGREES, UNJUDGED = 1, 0, 2

_ORT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class Verdict:
    """What the chain made of the model on one sample.

    ``kind`` is ``diverges`` or ``agrees``, ``crash`` or ``timeout`` (with the ``step`` and the
    ``error_class``), or ``invalid`` when the model could not be judged at all.
    """

    kind: str
    step: str | None = None
    error_class: str | None = None
    detail: str = ""

    @property
    def key(self) -> list[str | None]:
        """The signature: what must match for two verdicts to be the same failure."""
        if self.kind in ("crash", "timeout"):
            return [self.kind, self.step, self.error_class]
        return [self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "error_class": self.error_class,
                "detail": self.detail[:300]}


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``fuzzconv.shrink.reduce.save_arrays`` file: tensor names are in ``names``."""
    with np.load(path, allow_pickle=False) as z:
        return {str(n): z[f"t{i}"] for i, n in enumerate(z["names"])}


def graph_inputs(model: Any) -> list[str]:
    """The inputs to feed: graph inputs that are not initializers, in graph order."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def feeds_for(model: Any, data: dict[str, np.ndarray]) -> dict[str, np.ndarray] | str:
    """Every graph input's recorded value, or why there is none."""
    names = graph_inputs(model)
    if not names:
        return "the model has no input to feed"
    missing = [n for n in names if n not in data]
    if missing:
        return f"no recorded value for input {missing[0]!r}" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    return {n: np.ascontiguousarray(data[n]) for n in names}


def compare(ref: Sequence[np.ndarray], got: Sequence[np.ndarray],
            atol: float, rtol: float) -> Verdict:
    """``diverges`` when any output is past the reducer's per-tensor tolerance."""
    from fuzzconv.oracle import Thresholds
    from fuzzconv.activations import activation_divergence

    th = Thresholds(atol=atol, rtol=rtol)
    if len(got) < len(ref):
        return Verdict("diverges", detail=f"{len(got)} outputs where the reference has {len(ref)}")
    worst = ""
    for i, (r, g) in enumerate(zip(ref, got)):
        err = activation_divergence(r, g, th)
        if err.diverges:
            return Verdict("diverges", detail=f"output {i}: max abs {err.max_abs:.3g}, "
                                              f"max rel {err.max_rel:.3g} {err.note or ''}")
        worst = f"max rel {err.max_rel:.3g}"
    return Verdict("agrees", detail=worst)


def _ort_session(path: str, level: str = "disable", threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[level])
    opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def reference(model_path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime on the CPU, graph optimisations off: the reference semantics."""
    sess = _ort_session(model_path, "disable")
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _run_artifact(runtime: dict[str, Any], artifact: Path, order: list[str],
                  feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the chain's artifact with fuzzconv's runtime options, every input fed."""
    name, params = runtime["name"], runtime.get("params", {})
    if name == "ort":
        sess = _ort_session(str(artifact), params.get("graph_optimization_level", "all"),
                            params.get("threads", 0))
        return [np.asarray(o) for o in sess.run(None, feeds)]
    if name == "tvm":
        import tvm
        from tvm import relax

        dev = tvm.cpu(0)
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact)), dev)
        out = vm["main"](*[tvm.runtime.tensor(feeds[n], device=dev) for n in order])
        flat: list[np.ndarray] = []

        def walk(o: Any) -> None:
            if hasattr(o, "numpy"):
                flat.append(o.numpy())
            else:
                for x in o:
                    walk(x)

        walk(out)
        return flat
    raise ValueError(f"runtime {name!r}: this check drives 'ort' and 'tvm' only")


def _chain_child(case: dict[str, Any], model_path: str, feeds_path: str, out: str,
                 where: str) -> None:
    """In the forked child: apply the steps, run the runtime, save the outputs to ``out``."""
    from fuzzconv.plugins import StepContext
    from fuzzconv.registry import ARTIFACT_FILE, fresh_registry

    feeds = load_arrays(feeds_path)
    order = json.loads(Path(where).with_suffix(".order").read_text())
    reg = fresh_registry([str(p) for p in case.get("plugins", [])])
    biggest = max(feeds.values(), key=lambda a: a.size)
    spec = {**case["model"], "input_shape": list(biggest.shape[1:])}
    art = Path(model_path)
    for k, s in enumerate(case["steps"], 1):
        Path(where).write_text(s["step"])
        op = reg.get(s["step"], "step")
        dst = Path(out).parent / f"step{k}" / ARTIFACT_FILE[op.dst]
        dst.parent.mkdir()
        op.fn(StepContext(spec, case.get("device", "cpu"), str(dst.parent)), art, dst,
              **s.get("params", {}))
        art = dst
    Path(where).write_text(case["runtime"]["name"])
    got = _run_artifact(case["runtime"], art, order, feeds)
    np.savez(out, *got)


def _child_main(*args: Any) -> None:
    try:
        _chain_child(*args)
    except BaseException as exc:  # noqa: BLE001 - every failure of the chain is a verdict
        Path(args[4]).with_suffix(".error").write_text(type(exc).__name__ + "\n" + str(exc)[:500])
        os._exit(3)
    os._exit(0)


def run_chain(case: dict[str, Any], model_path: str, feeds: dict[str, np.ndarray],
              order: list[str], work: Path) -> list[np.ndarray] | Verdict:
    """The chain's outputs, or the crash or timeout it ended in."""
    fpath = work / "feeds.npz"
    names = list(feeds)
    np.savez(fpath, names=np.array(names, dtype=str),
             **{f"t{i}": feeds[n] for i, n in enumerate(names)})
    where = work / "stage.txt"
    where.with_suffix(".order").write_text(json.dumps(order))
    out = work / "outputs.npz"
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child_main, args=(case, model_path, str(fpath), str(out),
                                                 str(where)))
    proc.start()
    proc.join(float(case.get("timeout", 600)))
    stage = where.read_text() if where.exists() else None
    if proc.is_alive():
        proc.kill()
        proc.join()
        return Verdict("timeout", stage, None, f"past {case.get('timeout', 600)} s")
    if proc.exitcode and proc.exitcode < 0:
        return Verdict("crash", stage, signal.Signals(-proc.exitcode).name)
    err = where.with_suffix(".error")
    if proc.exitcode or err.exists():
        cls, _, msg = (err.read_text() if err.exists() else "Error\n").partition("\n")
        return Verdict("crash", stage, cls, msg)
    with np.load(out, allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def judge(case: dict[str, Any], model_path: str, data: dict[str, np.ndarray]) -> Verdict:
    """The verdict on one sample."""
    import onnx

    try:
        model = onnx.load(model_path)
    except Exception as exc:  # noqa: BLE001 - an unreadable model cannot be judged
        return Verdict("invalid", detail=f"onnx.load: {type(exc).__name__}: {exc}")
    feeds = feeds_for(model, data)
    if isinstance(feeds, str):
        return Verdict("invalid", detail=feeds)
    with tempfile.TemporaryDirectory(prefix="check-") as tmp:
        # The chain runs first, in a child forked before this process makes any session.
        got = run_chain(case, model_path, feeds, graph_inputs(model), Path(tmp))
    try:
        ref = reference(model_path, feeds)
    except Exception as exc:  # noqa: BLE001 - no reference, no judgement
        return Verdict("invalid", detail=f"reference: {type(exc).__name__}: {str(exc)[:200]}")
    if isinstance(got, Verdict):
        return got
    th = case.get("thresholds", {})
    return compare(ref, got, th.get("atol", 1e-2), th.get("rtol", 1e-3))


def decide(signature: list[str | None] | None, verdicts: Sequence[Verdict]) -> int:
    """Exit status: 1 when a sample keeps the signature, 2 when no sample could be judged."""
    if signature is not None and any(v.key == list(signature) for v in verdicts):
        return REPRODUCES
    if verdicts and all(v.kind == "invalid" for v in verdicts):
        return UNJUDGED
    return AGREES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, action="append",
                    help="recorded activations of one input sample (repeatable); "
                         "defaults to the case's")
    ap.add_argument("--log", type=Path, help="append one JSON line per invocation here")
    ap.add_argument("--label", default="", help="goes into the log line")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    verdicts: list[Verdict] = []
    nodes = inputs = None
    code = UNJUDGED
    try:
        case = json.loads(args.case.read_text())
        here = args.case.parent
        paths = args.data or [here / p for p in case["data"]]
        try:
            import onnx

            m = onnx.load(str(args.model), load_external_data=False)
            nodes, inputs = len(m.graph.node), len(graph_inputs(m))
        except Exception:  # noqa: BLE001 - judge() says why
            pass
        for p in paths:
            verdicts.append(judge(case, str(args.model), load_arrays(p)))
        code = decide(case.get("signature"), verdicts)
    except Exception as exc:  # noqa: BLE001 - a broken check must never read as a reproduction
        verdicts.append(Verdict("invalid", detail=f"check error: {type(exc).__name__}: {exc}"))
        code = UNJUDGED
    line = {"label": args.label, "model": args.model.name, "nodes": nodes, "inputs": inputs,
            "exit": code, "verdicts": [v.to_dict() for v in verdicts],
            "seconds": round(time.monotonic() - t0, 3), "time": time.time()}
    print(json.dumps(line))
    if args.log:
        with args.log.open("a") as f:
            f.write(json.dumps(line) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
