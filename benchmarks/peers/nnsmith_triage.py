"""Which of NNSmith's reports are ONNX Runtime's bugs: a third opinion on each.

NNSmith reports any output of ONNX Runtime that differs from PyTorch eager's beyond rtol 1e-2,
atol 1e-3, and any exception; it does not say whose the difference is. Here each saved report
(``model.onnx``, ``oracle.pkl``: the inputs and PyTorch's outputs) is run again in ONNX Runtime
(all graph optimisations, as NNSmith ran it) and in onnx's own reference evaluator
(``onnx.reference``, the operators' specification in numpy), and judged:

* **ORT alone differs** — the reference agrees with PyTorch, ONNX Runtime with neither, the
  reference at the model's own precision is on the float64 result (below) where ONNX Runtime is
  not, and ONNX Runtime's difference is more than ten times what the float64 result moves when
  every floating input value moves by 1e-5 of itself (the conditioning test fuzzconv's bundles
  get in ``bundle_triage.py``): the computation is well conditioned and ONNX Runtime alone is
  off, a candidate ONNX Runtime bug.
* **ill-conditioned** — as above, but within ten times that input noise: an argmax tie, a cast
  or comparison right at a boundary. Undecided, and not counted as real.
* **ORT follows the ONNX reference** — the difference is PyTorch's semantics against the ONNX
  operator's (a float16 rounding, a cast of an out-of-range value, a tie): not a runtime bug.
* **ORT nearer float64** — ONNX Runtime differs from both, but the same model computed in float64
  (every floating type raised to double, in the reference evaluator) is at least as close to
  ONNX Runtime's output as to PyTorch's: ONNX Runtime rounds less often (it evidently computes
  such float16 operators in float32; the results are the same with every optimisation
  disabled). Not a bug.
* **all three differ** — no two agree, or the reference itself is off the float64 result
  (ill-conditioned arithmetic such as ``Tan`` near a pole), and ONNX Runtime is not nearer it:
  undecided.
* **ORT fails** — the exception happens again on a model ``onnx.checker`` accepts (full check):
  an ONNX Runtime failure; **invalid model** when the checker rejects it (NNSmith's doing).
* **not reproduced** — ONNX Runtime now agrees with PyTorch, or no longer raises.

Run with the fuzzconv venv (onnx, onnxruntime, numpy; no NNSmith needed). The versions must be
NNSmith's, which the report records.
"""

from __future__ import annotations

import collections
import json
import pickle
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

# the conditioning test fuzzconv's bundles get, with its one setting (beside this file)
from bundle_triage import MARGIN, NOISE, NOISY_RUNS

RTOL, ATOL = 1e-2, 1e-3  # NNSmith's
#: What one judgement may take: a few of NNSmith's models expand to tens of GB in float64.
MEMORY_BYTES, SECONDS = 4 * 2**30, 120

REAL = ("ORT alone differs", "ORT fails")
VERDICTS = ("ORT alone differs", "ORT fails", "ORT follows the ONNX reference",
            "ORT nearer float64", "ill-conditioned", "all three differ", "invalid model",
            "not reproduced", "cannot judge")


def _close(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return bool(np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=RTOL, atol=ATOL,
                                equal_nan=True))
    return bool(np.array_equal(a, b))


def _ort(model: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs), strict=True))


def _reference(m: onnx.ModelProto, inputs: dict[str, Any]) -> dict[str, Any]:
    names = [o.name for o in m.graph.output]
    with np.errstate(all="ignore"):
        return dict(zip(names, ReferenceEvaluator(m).run(None, inputs), strict=True))


def _float64(model: Any) -> Any:
    """``model`` with every floating type (inputs, outputs, initializers, constants, casts)
    raised to double, and its intermediate types dropped for the evaluator to infer."""
    floats = {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT}
    m = type(model)()
    m.CopyFrom(model)
    g = m.graph

    def wide(t: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype("float64"), t.name)

    for vi in [*g.input, *g.output]:
        if vi.type.tensor_type.elem_type in floats:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    del g.value_info[:]
    for i, t in enumerate(g.initializer):
        if t.data_type in floats:
            g.initializer[i].CopyFrom(wide(t))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i in floats:
                a.i = TensorProto.DOUBLE
            elif a.type == AttributeProto.TENSOR and a.t.data_type in floats:
                a.t.CopyFrom(wide(a.t))
    return m


def _misses(got: Any, truth: Any) -> int:
    """How many elements of ``got`` are not close to ``truth``."""
    got, truth = np.asarray(got, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    return int((~np.isclose(got, truth, rtol=RTOL, atol=ATOL, equal_nan=True)).sum())


def _float64_result(model: onnx.ModelProto, inputs: dict[str, Any], out: str) -> Any:
    """Output ``out`` of ``model`` computed in float64 by the reference evaluator (None when it
    cannot be)."""
    wide = {k: (v.astype(np.float64) if np.asarray(v).dtype.kind == "f" else v)
            for k, v in inputs.items()}
    try:
        return _reference(_float64(model), wide)[out]
    except Exception:  # noqa: BLE001  (an operator the reference lacks for doubles)
        return None


def _conditioning(model: onnx.ModelProto, inputs: dict[str, Any], out: str, got: Any,
                  truth: Any) -> tuple[float, float]:
    """How far ONNX Runtime's output is off the float64 result, and the most the float64 result
    moves when every floating input value moves by ``NOISE`` of itself (integer and boolean
    inputs stay as they are)."""
    truth = np.asarray(truth, np.float64)
    off = float(np.abs(np.nan_to_num(np.asarray(got, np.float64), nan=np.inf) - truth).max())
    spread = 0.0
    for seed in range(NOISY_RUNS):
        rng = np.random.default_rng(seed)
        # in float64, where the model is computed: a float16 input could not hold the noise
        noisy = {k: (np.asarray(v, np.float64) * (1 + NOISE * rng.standard_normal(np.shape(v)))
                     if np.asarray(v).dtype.kind == "f" else v) for k, v in inputs.items()}
        moved = _float64_result(model, noisy, out)
        if moved is not None and np.shape(moved) == truth.shape:
            spread = max(spread, float(np.nan_to_num(
                np.abs(np.asarray(moved, np.float64) - truth), nan=np.inf).max()))
    return off, spread


def judge(bug: Path) -> dict[str, Any]:
    """The verdict on one NNSmith bug directory, with the output it is about."""
    model = bug / "model.onnx"
    try:
        oracle = pickle.loads((bug / "oracle.pkl").read_bytes())
        inputs, expected = oracle["input"], oracle["output"]
    except Exception as e:  # noqa: BLE001  (a report written half-way: nothing to judge)
        return {"verdict": "cannot judge", "why": f"oracle.pkl: {type(e).__name__}"}
    try:
        got = _ort(model, inputs)
    except Exception as e:  # noqa: BLE001  (the report's own symptom, or a new one)
        try:
            onnx.checker.check_model(str(model), full_check=True)
        except Exception as bad:  # noqa: BLE001
            return {"verdict": "invalid model", "why": str(bad).splitlines()[0][:160]}
        return {"verdict": "ORT fails", "why": str(e).splitlines()[0][:160]}
    differ = [k for k, v in expected.items() if k in got and not _close(got[k], v)]
    if not differ:
        return {"verdict": "not reproduced", "why": "ONNX Runtime agrees with PyTorch"}
    m = onnx.load(str(model))
    try:
        ref = _reference(m, inputs)
    except Exception as e:  # noqa: BLE001  (an operator or type the reference lacks)
        return {"verdict": "cannot judge", "why": f"onnx.reference: {str(e).splitlines()[0][:120]}"}
    out = differ[0]
    if _close(got[out], ref[out]):
        return {"verdict": "ORT follows the ONNX reference", "why": f"output {out}"}
    truth = _float64_result(m, inputs, out)
    if truth is None or np.asarray(truth).shape != np.asarray(got[out]).shape:
        verdict, why = ("ORT alone differs" if _close(expected[out], ref[out])
                        else "all three differ"), "; no float64 result"
    elif _misses(got[out], truth) <= _misses(expected[out], truth):
        verdict, why = "ORT nearer float64", ""
    elif _close(expected[out], ref[out]) and _misses(ref[out], truth) == 0:
        verdict, why = "ORT alone differs", "; PyTorch and the reference are on float64's"
        off, spread = _conditioning(m, inputs, out, got[out], truth)
        why += f"; ORT off by {off:.3g}, float64 moves by {spread:.3g} under input noise"
        if off <= MARGIN * spread:
            verdict = "ill-conditioned"
    else:
        verdict, why = "all three differ", "; the reference is off float64 too (ill-conditioned)"
    return {"verdict": verdict, "why": f"output {out}{why}"}


def judge_apart(bug: Path) -> dict[str, Any]:
    """:func:`judge` in a child process held to ``MEMORY_BYTES`` and ``SECONDS``; one that goes
    past either cannot be judged (and takes nothing else down with it)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))

    try:
        p = subprocess.run([sys.executable, __file__, str(bug)], capture_output=True, text=True,
                           timeout=SECONDS, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"verdict": "cannot judge", "why": f"over {SECONDS} s"}
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return {"verdict": "cannot judge", "why": f"over {MEMORY_BYTES / 2**30:g} GB or failed: "
                f"{last[:120]}"}
    return json.loads(lines[-1])


def triage(bugs: list[dict[str, Any]], root: Path, per_bucket: int = 5) -> dict[str, Any]:
    """Judge up to ``per_bucket`` reports of each bucket (``bugs``: :func:`nnsmith_bucket` rows
    with their ``run`` folder under ``root``); a bucket is real when any judged report is (and
    judging it stops there)."""
    by_key: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for b in bugs:
        by_key[b["key"]].append(b)
    buckets = {}
    for key, rows in sorted(by_key.items()):
        verdicts = collections.Counter()
        example = None
        for b in rows[:per_bucket]:
            v = judge_apart(root / b["run"] / b["dir"])
            verdicts[v["verdict"]] += 1
            if example is None or (v["verdict"] in REAL and example["verdict"] not in REAL):
                example = {**v, "report": f"{b['run']}/{b['dir']}"}
            if v["verdict"] in REAL:
                break  # the bucket is real; the rest would not change that
        real = [v for v in REAL if verdicts[v]]
        verdict = real[0] if real else verdicts.most_common(1)[0][0]
        buckets[key] = {"verdict": verdict, "judged": dict(verdicts), "example": example}
    counts = collections.Counter(b["verdict"] for b in buckets.values())
    return {"per_bucket": per_bucket, "buckets": buckets,
            "counts": {v: counts[v] for v in VERDICTS if counts[v]},
            "real": sum(counts[v] for v in REAL)}


def triage_text(tri: dict[str, Any]) -> str:
    """What the verdict column below says, with the counts."""
    counts = "; ".join(f"{v}: {n}" for v, n in tri["counts"].items())
    return ("Each bucket judged on up to "
            f"{tri['per_bucket']} of its reports by `benchmarks/peers/nnsmith_triage.py`: the "
            "saved model run again in ONNX Runtime, in onnx's reference evaluator (the operators' "
            "specification), and, raised to float64, in the reference evaluator again. A bucket "
            "is real when ONNX Runtime fails on a model the ONNX checker accepts, or is off a "
            "float64 result that PyTorch and the reference both meet, by more than ten times what "
            "1e-5 relative input noise moves that result (the conditioning test fuzzconv's "
            "bundles get; within it, \"ill-conditioned\"); \"ORT nearer float64\" means "
            "ONNX Runtime rounded less often (float16 operators evidently computed in float32) "
            f"and is the more exact of the two. Buckets: {counts}.")


if __name__ == "__main__":  # one judgement, for judge_apart
    print(json.dumps(judge(Path(sys.argv[1]))))
