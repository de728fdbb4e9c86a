"""Model reduction side by side: fuzzconv's reducer against Polygraphy's ``debug reduce``.

    python benchmarks/peers/reduce_vs_polygraphy.py [--store DIR] [--cases a,b,...]
        [--modes bisect,linear,bisect+linear] [--max-minutes 60] [--no-write] [--json FILE]
    python benchmarks/peers/reduce_vs_polygraphy.py --render STORE/report.json

Every case is a failing ONNX model, a chain that makes it fail (the part of a fuzzconv pipeline
from that model on: a fault step or a TVM build, then a runtime) and the recorded activations of
one or more input images. Each case is reduced by

- **fuzzconv**: the search of ``fuzzconv.shrink.reduce`` (bisect the output, bisect the input
  side, ddmin over node ranges; side inputs frozen from the recording) with this check as its
  predicate instead of its in-process one;
- **Polygraphy** ``debug reduce --mode bisect`` and ``--mode linear``, each from the original
  model, and ``bisect`` followed by ``linear`` on its result (what Polygraphy's tutorial
  recommends), all as its tutorial runs it: ``--load-inputs`` with every recorded tensor (the
  "layerwise inputs"), ``--model-input-shapes`` for the dynamic batch axis, ``--check`` the
  shared check, ``--fail-code 1``.

All of them call the same check, ``check_divergence.py``, as a separate process, which logs every
invocation: that log is the count of checks. Each result is then checked again independently (the
same check, not counted) and loaded and run in plain ONNX Runtime in Polygraphy's own venv, where
fuzzconv is not importable ("standalone").

**Cases.**

- The injected faults of ``benchmarks/faults`` on mobilenetv2. Each case's pipeline is
  ``keras.tf2onnx`` then the fault step(s) then ONNX Runtime (for ``tvm_after_legalize``:
  ``onnx.tvm``, ``tvm.pass(LegalizeOps)``, the fault, ``tvm.build``, the Relax VM). ``fuzzconv
  run`` judges that pipeline first (the label flips or the crash are fuzzconv's own verdict) and
  leaves its artifacts in the store's cache; the failing model is the ``keras.tf2onnx`` artifact
  from there: the model as it enters the faulty part of the chain, the same file for every
  reducer. The image is the first of the default corpus on which the check says the whole model
  fails (fuzzconv's reducer picks its image the same way).
- ``residual_sub`` (mobilenetv2): a fault whose smallest failing subgraph takes two activations
  (a several-input cut).
- ``clip_without_min`` (a small model): a ``Clip`` whose optional ``min`` is left out (an empty
  input name), with the ``clip_mode`` fault lowering its ``max``: NVIDIA/TensorRT#4571.
- ``several_samples`` (a small model, two images, the fault visible on the second only):
  Polygraphy takes the frozen side branches from the first sample whatever the check is fed
  (NVIDIA/TensorRT#4607). A control run gives Polygraphy only the failing image.
- ``gen_keras_slice_conv`` and ``gen_torch_resize_size``: two real divergences of the pinned stack
  that fuzzconv's hunts on generated models found (a channel slice into a convolution that TVM's
  Relax VM fails on; a resize to an explicit size that TVM's ONNX importer fails on), each inside
  a larger generated model of its family. The model is converted by ``fuzzconv run`` in a store
  of its own (``keras.tf2onnx`` or ``torch.onnx_export``); the chain is ``onnx.tvm``,
  ``tvm.build`` and the Relax VM, with no plugin.

Polygraphy is installed when absent into ``STORE/peers/polygraphy-venv`` (``python3.11 -m venv``,
then pip from PyPI, sympy included since Polygraphy asks for it); fuzzconv's environment is never
touched. A run saves its report to ``STORE/report.json`` (and ``--json FILE``); the tables are
written from it to the console and to ``benchmarks/RESULTS.md`` between the ``peers-reduce``
markers (not with ``--no-write``). ``--render`` writes them again from a saved report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAULTS = ROOT / "benchmarks" / "faults"
CHECK = HERE / "check_divergence.py"
PEER_SIDE = HERE / "peer_side.py"
PEER_FAULTS = HERE / "peer_faults.py"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "peers-reduce"


def markers(section: str) -> tuple[str, str]:
    """The RESULTS.md markers of a section (a run of some cases may be published on its own)."""
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"

# sympy: Polygraphy asks for it ("sympy is required for symbolic shape inference") and otherwise
# falls back from ONNX Runtime's shape inference to ONNX's; it is given what it asks for.
PEER_PACKAGES = ["polygraphy", "onnx-graphsurgeon", "onnx", "onnxruntime", "numpy", "sympy"]
ORT = {"name": "ort", "params": {"graph_optimization_level": "all", "threads": 0}}
CHECK_FAILS = 1  # check_divergence.REPRODUCES


# -- cases --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseDef:
    """One failing model to reduce.

    Args:
        name: the case's name in the table.
        plugin: the fuzzconv plugin file holding the fault step(s).
        steps: the chain after the failing model (fuzzconv pipeline steps).
        runtime: the pipeline's runtime.
        about: what the case shows, for the table's notes.
        build: for a small hand-built model, a function of the case directory that writes
            ``model.onnx`` and returns the samples (image batches of one) and the model spec;
            None for mobilenetv2, whose model comes from ``fuzzconv run``.
        control: also run Polygraphy given only the failing sample.
        generated: a generated model's spec (``fuzzconv.gen``): the case's source model instead
            of mobilenetv2, converted by ``source_step``; no plugin, the divergence is the stack's.
        source_step: the step that writes the failing ONNX model from the source model.
    """

    name: str
    plugin: Path | None
    steps: tuple[dict[str, Any], ...]
    runtime: dict[str, Any]
    about: str
    build: Callable[[Path], tuple[list[np.ndarray], dict[str, Any]]] | None = None
    control: bool = False
    generated: dict[str, Any] | None = None
    source_step: str = "keras.tf2onnx"


def _fault(name: str, step: str, params: dict[str, Any], about: str,
           also: tuple[dict[str, Any], ...] = ()) -> CaseDef:
    return CaseDef(name, FAULTS / f"{name}.py", (*also, {"step": step, "params": params}), ORT,
                   about)


def _small_spec() -> dict[str, Any]:
    return {"name": "peers_small", "source": "onnx", "input_shape": [4, 8, 8], "layout": "NCHW",
            "classes": 5}


def _conv(name: str, x: str, w: str, y: str, **kw: Any):
    from onnx import helper

    return helper.make_node("Conv", [x, w], [y], name=name, **kw)


def _small_model(nodes: list, inits: list, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _weights(rng: np.random.Generator, name: str, shape: tuple[int, ...]):
    from onnx import numpy_helper

    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)


def build_clip_without_min(d: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """stem conv → relu → depthwise conv → Clip(x, "", 6) → pointwise conv → head."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [_conv("stem", "x", "w0", "c0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             _conv("dw", "r0", "wd", "d0", group=4, pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["d0", "", "hi"], ["k0"], name="clip_no_min"),
             _conv("pw", "k0", "w1", "c1"),
             helper.make_node("GlobalAveragePool", ["c1"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc")]
    inits = [_weights(rng, "w0", (4, 4, 3, 3)), _weights(rng, "wd", (4, 1, 3, 3)),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
             _weights(rng, "w1", (4, 4, 1, 1)), _weights(rng, "fc", (4, 5))]
    _small_model(nodes, inits, d / "model.onnx")
    return [(rng.standard_normal((1, 4, 8, 8)) * 2).astype(np.float32)], _small_spec()


def build_several_samples(d: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """conv_a → relu ┐, conv_b ┘ → add → conv → head; sample 0 is a blank image."""
    from onnx import helper

    rng = np.random.default_rng(1)
    nodes = [_conv("conv_a", "x", "wa", "a", pads=[1, 1, 1, 1]),
             _conv("conv_b", "x", "wb", "b", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
             helper.make_node("Add", ["ra", "b"], ["s"], name="add"),
             _conv("pw", "s", "w1", "c1"),
             helper.make_node("GlobalAveragePool", ["c1"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc")]
    inits = [_weights(rng, "wa", (4, 4, 3, 3)), _weights(rng, "wb", (4, 4, 3, 3)),
             _weights(rng, "w1", (4, 4, 1, 1)), _weights(rng, "fc", (4, 5))]
    _small_model(nodes, inits, d / "model.onnx")
    blank = np.zeros((1, 4, 8, 8), np.float32)
    return [blank, rng.standard_normal((1, 4, 8, 8)).astype(np.float32)], _small_spec()


def _generated(framework: str, layers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A generated model's spec (``fuzzconv.gen.spec``): 32×32 input, ten classes; attributes
    left out take their plainest value."""
    return {"version": 1, "framework": framework, "size": 32, "classes": 10,
            "layers": [{"kind": k, "attrs": a} for k, a in layers]}


#: The TVM chain the two generated cases fail in: the ONNX importer, the build, the Relax VM.
TVM_CHAIN = ({"step": "onnx.tvm", "params": {}}, {"step": "tvm.build", "params": {}})


CASES: list[CaseDef] = [
    _fault("conv_padding", "fault.conv_padding", {"shift": True},
           "a convolution's padding shifted"),
    _fault("bn_scale", "fault.bn_scale", {"factor": 1.05}, "a batch-norm scale off by 5 %"),
    _fault("clip_mode", "fault.clip_mode", {"mode": "approx"}, "the first ReLU6 clips at 1"),
    _fault("int8_weight", "fault.int8_weight", {"round_int8": True},
           "the largest weight rounded through int8"),
    _fault("layout_transpose", "fault.layout_slip", {"transpose": True},
           "a transpose slipped after the first convolution: the fault adds a node"),
    _fault("two_steps", "fault.fire", {"scale": 0.5}, "two steps together: arm marks, fire acts",
           also=({"step": "fault.arm", "params": {"armed": True}},)),
    _fault("flaky_noise", "fault.flaky_noise", {"noise": True},
           "fresh random noise on the classifier at every conversion"),
    _fault("segfault", "fault.segfault", {"crash": True}, "a step that segfaults: a crash"),
    CaseDef("tvm_after_legalize", FAULTS / "tvm_after_legalize.py",
            ({"step": "onnx.tvm", "params": {}},
             {"step": "tvm.pass", "params": {"name": "LegalizeOps", "args": {}}},
             {"step": "fault.tvm_after_legalize", "params": {"scale": 1.5}},
             {"step": "tvm.build", "params": {}}),
            {"name": "tvm", "params": {}},
            "a Relax transform after LegalizeOps scales a depthwise weight; TVM builds and runs"),
    CaseDef("residual_sub", PEER_FAULTS, ({"step": "peers.residual_sub", "params": {"sub": True}},),
            ORT, "several-input cut: the first residual Add subtracts"),
    CaseDef("clip_without_min", FAULTS / "clip_mode.py",
            ({"step": "fault.clip_mode", "params": {"mode": "approx"}},), ORT,
            "optional input left out: Clip(x, \"\", max), TRT#4571", build=build_clip_without_min),
    CaseDef("several_samples", PEER_FAULTS,
            ({"step": "peers.relu_add_fusion", "params": {"fuse": True}},), ORT,
            "two samples, the fault visible on the second only, TRT#4607",
            build=build_several_samples, control=True),
    # Two divergences fuzzconv's hunts on generated models found (benchmarks/RESULTS.md,
    # "Generated models": F-65186773 and F-ea96c269), here inside larger models of the same
    # families, so each reducer has to find them.
    CaseDef("gen_keras_slice_conv", None, TVM_CHAIN, {"name": "tvm", "params": {}},
            "generated Keras model: a channel slice feeding a convolution fails in TVM's Relax "
            "VM (F-65186773)",
            generated=_generated("keras", [
                ("slice", {"axis": "channels", "start": 2}), ("conv", {"filters": 8}),
                ("act", {"fn": "relu"}), ("conv", {"filters": 8, "padding": "same"}),
                ("norm", {"type": "batch"}), ("pool", {"op": "avg"})])),
    CaseDef("gen_torch_resize_size", None, TVM_CHAIN, {"name": "tvm", "params": {}},
            "generated PyTorch model: a resize to an explicit size fails in TVM's ONNX importer "
            "(F-ea96c269)",
            generated=_generated("torch", [
                ("conv", {"filters": 8, "padding": "same"}), ("act", {"fn": "relu"}),
                ("resize", {"by": "size"}), ("conv", {"filters": 8}),
                ("norm", {"type": "batch"}), ("pool", {"op": "max"})]),
            source_step="torch.onnx_export"),
]


# -- the peer's environment ---------------------------------------------------------------------
@dataclass
class Peer:
    python: Path
    polygraphy: Path
    versions: dict[str, str]


def ensure_polygraphy(store: Path) -> Peer:
    """Polygraphy in ``STORE/peers/polygraphy-venv``, installed from PyPI when absent."""
    venv = store / "peers" / "polygraphy-venv"
    py, tool = venv / "bin" / "python", venv / "bin" / "polygraphy"
    if not tool.exists() or not list(venv.glob("lib/python*/site-packages/sympy")):
        say(f"installing Polygraphy into {venv}")
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv", str(venv)],
                       check=True)
        with (store / "peers" / "pip-install.log").open("w") as log:
            subprocess.run([str(py), "-m", "pip", "install", *PEER_PACKAGES], check=True,
                           env=_peer_env(), stdout=log, stderr=subprocess.STDOUT)
    out = subprocess.run(
        [str(py), "-c", "import json, importlib.metadata as m; print(json.dumps("
                        f"{{p: m.version(p) for p in {PEER_PACKAGES!r}}}))"],
        check=True, capture_output=True, text=True, env=_peer_env())
    return Peer(py, tool, json.loads(out.stdout))


def _peer_env() -> dict[str, str]:
    """The environment for the peer's processes: nothing of fuzzconv on the import path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _fuzzconv_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


# -- preparing a case ---------------------------------------------------------------------------
@dataclass
class Case:
    """A prepared case: its directory holds ``case.json``, ``model.onnx`` and the recordings."""

    d: CaseDef
    dir: Path
    nodes: int
    samples: list[str]  # recordings (``rec-K.npz``) of the samples given to Polygraphy
    failing: str  # the recording fuzzconv reduces on: the first sample that keeps the signature
    signature: list[str | None]
    pg_inputs: str  # the samples as a Polygraphy input file
    pg_failing_inputs: str  # the failing sample alone, for the control run
    input_shapes: str  # --model-input-shapes for the original model
    fuzzconv_run: dict[str, Any] | None = None

    @property
    def json(self) -> Path:
        return self.dir / "case.json"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_divergence", CHECK)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["check_divergence"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _fuzzconv_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from fuzzconv.cli import main; main()", *args],
                          capture_output=True, text=True, env=_fuzzconv_env())


def fuzzconv_store(store: Path, d: CaseDef) -> Path:
    """The fuzzconv store a case's source model is converted in: one for mobilenetv2's cases
    (they share its artifact), one of its own for each generated model (an artifact's meta.json
    names its step, not its model)."""
    return store / ("fuzzconv" if d.generated is None else f"fuzzconv-{d.name}")


def _source_model(d: CaseDef, fstore: Path) -> str:
    """The case's source model's name; a generated one is kept in ``fstore`` first, so that
    ``fuzzconv run --store`` and this process both resolve it."""
    if d.generated is None:
        return "mobilenetv2"
    from fuzzconv.gen import catalog
    from fuzzconv.gen.spec import GenSpec
    from fuzzconv.store import Store

    spec = GenSpec.from_dict(d.generated)
    with Store(fstore) as st:
        st.add_generated(spec.name, spec.canonical_json())
    return catalog.remember(spec)


def _cached_artifact(fstore: Path, step: str) -> Path | None:
    """The artifact the store's cache holds for ``step`` (the ``meta.json`` beside it says)."""
    for meta in sorted((fstore / "cache" / "artifacts").glob("*/*/meta.json")):
        m = json.loads(meta.read_text())
        if (m.get("step") or {}).get("step") == step and not m.get("failure"):
            files = [f for f in meta.parent.iterdir() if f.name != "meta.json"]
            if len(files) == 1:
                return files[0]
    return None


def prepare(d: CaseDef, store: Path, peer: Peer, images: int = 4) -> Case:
    """Write the case's directory: model, recordings, signature, Polygraphy's input files."""
    from fuzzconv.shrink.onnx_tensors import record

    cdir = store / "cases" / d.name
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    run_info = None
    if d.build is not None:
        batches, spec = d.build(cdir)
    else:
        from fuzzconv.corpora import select
        from fuzzconv.zoo import get_model

        fstore = fuzzconv_store(store, d)
        name = _source_model(d, fstore)
        spec_obj = get_model(name)
        spec = spec_obj.to_dict()
        pipeline = {"model": name,
                    "steps": [{"step": d.source_step, "params": {}}, *d.steps],
                    "runtime": d.runtime}
        (cdir / "pipeline.json").write_text(json.dumps(pipeline, indent=1))
        say(f"{d.name}: fuzzconv run (its own verdict on 8 images; fills the cache)")
        plugin = ["--plugin", str(d.plugin)] if d.plugin else []
        res = _fuzzconv_cli("run", str(cdir / "pipeline.json"), *plugin,
                            "--store", str(fstore), "--limit", "8", "--json")
        try:
            r = json.loads(res.stdout)
            run_info = {"symptom": r.get("symptom"), "flip_rate": r.get("flip_rate"),
                        "error": (r.get("error") or {}).get("error_class"), "exit": res.returncode}
        except json.JSONDecodeError:
            raise SystemExit(f"{d.name}: fuzzconv run failed: {res.stderr[-800:]}")
        art = _cached_artifact(fstore, d.source_step)
        if art is None:
            raise SystemExit(f"{d.name}: no {d.source_step} artifact in {fstore}")
        shutil.copy(art, cdir / "model.onnx")
        x = select(limit=images).load_inputs(spec_obj)
        batches = [x[i:i + 1] for i in range(len(x))]
    import onnx

    model = onnx.load(str(cdir / "model.onnx"))
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    case = {"plugins": [str(d.plugin)] if d.plugin else [], "steps": list(d.steps), "runtime": d.runtime,
            "model": spec, "device": "cpu", "thresholds": {"atol": 1e-2, "rtol": 1e-3},
            "timeout": 600, "signature": None, "data": []}
    check = _check_module()
    recs: list[str] = []
    failing, signature = None, None
    # The small cases record every sample (Polygraphy gets them all); mobilenetv2 records images
    # until one keeps a failure, as fuzzconv's reducer picks its image.
    for k, x in enumerate(batches):
        np.save(cdir / f"x-{k}.npy", x, allow_pickle=False)
        record(str(cdir / "model.onnx"), str(cdir / f"x-{k}.npy"), str(cdir / f"rec-{k}.npz"),
               spec["layout"])
        verdict = check.judge(case, str(cdir / "model.onnx"),
                              check.load_arrays(cdir / f"rec-{k}.npz"))
        say(f"{d.name}: whole model on sample {k}: {verdict.kind} {verdict.detail}")
        if d.build is not None or failing is None:
            recs.append(f"rec-{k}.npz")
        if failing is None and verdict.kind in ("diverges", "crash", "timeout"):
            failing, signature = f"rec-{k}.npz", verdict.key
            if d.build is None:
                break
    if failing is None:
        raise SystemExit(f"{d.name}: the whole model keeps no failure on any sample")
    case.update(signature=signature, data=recs)
    (cdir / "case.json").write_text(json.dumps(case, indent=1))
    subprocess.run([str(peer.python), str(PEER_SIDE), "to-polygraphy", str(cdir / "inputs.json"),
                    *[str(cdir / r) for r in recs]], check=True, env=_peer_env())
    subprocess.run([str(peer.python), str(PEER_SIDE), "to-polygraphy",
                    str(cdir / "inputs-failing.json"), str(cdir / failing)], check=True,
                   env=_peer_env())
    dims = [d_.dim_value for d_ in inp.type.tensor_type.shape.dim][1:]
    shapes = f"{inp.name}:[{','.join(str(v) for v in [1, *dims])}]"
    return Case(d, cdir, len(model.graph.node), recs, failing, signature,
                str(cdir / "inputs.json"), str(cdir / "inputs-failing.json"), shapes, run_info)


# -- one reduction ------------------------------------------------------------------------------
@dataclass
class Result:
    case: str
    reducer: str
    original_nodes: int
    nodes: int | None = None
    inputs: int | None = None
    checks: int = 0
    seconds: float = 0.0
    check_seconds: float = 0.0
    reproduces: bool | None = None
    standalone: bool | None = None
    standalone_error: str | None = None
    op_types: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    parsed_iterations: int | None = None
    stages: dict[str, int] | None = None  # checks per stage of the search
    in_hunt: dict[str, Any] | None = None

    def row(self) -> list[str]:
        def yn(b: bool | None) -> str:
            return "—" if b is None else ("yes" if b else "**no**")

        nodes = "—" if self.nodes is None else f"{self.nodes} of {self.original_nodes}"
        ops = ", ".join(self.op_types) if len(self.op_types) <= 4 else \
            f"{', '.join(self.op_types[:3])}, … ({len(self.op_types)})"
        # Polygraphy's messages end in a "Note:" listing tensors in set order: not for a table
        error = self.error.split(" Note: ")[0] if self.error else None
        notes = list(self.notes)
        if self.stages:
            notes.insert(0, "checks by stage: " + ", ".join(f"{k} {v}"
                                                           for k, v in self.stages.items()))
        if self.standalone is False and self.standalone_error:
            notes.append(f"standalone: {self.standalone_error}")
        note = "; ".join([*([f"failed: {error}"] if error else []), *notes])
        return [self.case, self.reducer, nodes, "—" if self.inputs is None else str(self.inputs),
                str(self.checks), f"{self.seconds:.0f}", yn(self.reproduces), yn(self.standalone),
                ops or "—", note or ""]


HEADER = ["case", "reducer", "nodes", "inputs", "checks", "wall (s)", "reproduces", "standalone",
          "ops kept", "notes"]


def check_wrapper(case: Case, data: list[str], log: Path, label: str, path: Path) -> Path:
    """A one-line shell script that runs the shared check on its argument.

    Polygraphy's ``--check`` takes the rest of its command line, but Python's argparse still
    reads every later word that looks like an option: one that abbreviates a Polygraphy option
    (``--log`` for ``--log-file``) stops it with "ambiguous option". The check's own options
    therefore live in this wrapper, which every reducer calls the same way.
    """
    args = [f"PYTHONPATH={shlex.quote(str(ROOT))}", shlex.quote(sys.executable),
            shlex.quote(str(CHECK)), shlex.quote(str(case.json)), '"$1"',
            "--log", shlex.quote(str(log)), "--label", shlex.quote(label)]
    for p in data:
        args += ["--data", shlex.quote(str(case.dir / p))]
    path.write_text("#!/bin/sh\nexec env " + " ".join(args) + "\n")
    path.chmod(0o755)
    return path


def read_log(log: Path) -> list[dict[str, Any]]:
    """The check's log: one JSON object per invocation."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _describe(path: Path) -> tuple[int, int, list[str]]:
    import onnx

    m = onnx.load(str(path))
    inits = {t.name for t in m.graph.initializer}
    return (len(m.graph.node), sum(i.name not in inits for i in m.graph.input),
            [n.op_type for n in m.graph.node])


def run_fuzzconv(case: Case, work: Path) -> Result:
    """fuzzconv's search (``reduce_cut``), every candidate judged by the shared check."""
    import onnx

    from fuzzconv.shrink.graph import GraphInfo, Recorded, make_cut
    from fuzzconv.shrink.onnx_tensors import build_subgraph, load_arrays
    from fuzzconv.shrink.reduce import reduce_cut

    res = Result(case.d.name, "fuzzconv", case.nodes)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "checks.jsonl"
    model = onnx.load(str(case.dir / "model.onnx"))
    info = GraphInfo.from_model(model)
    arrays = load_arrays(case.dir / case.failing)
    rec = Recorded(int(arrays[info.inputs[0]].shape[0]),
                   {k: (tuple(v.shape), str(v.dtype)) for k, v in arrays.items()})
    full = make_cut(info, rec, info.output_node())  # type: ignore[arg-type]
    if full is None:
        res.error = "the model's output is not a batched floating-point tensor"
        return res
    cand = work / "candidate.onnx"
    check = check_wrapper(case, [case.failing], log, "fuzzconv", work / "check.sh")

    def keeps(cut) -> bool:
        onnx.save(build_subgraph(model, info, cut, arrays), str(cand))
        p = subprocess.run([str(check), str(cand)], capture_output=True, text=True)
        return p.returncode == CHECK_FAILS

    t0 = time.monotonic()
    # The whole model is known to fail (the case was built on that), as Polygraphy assumes.
    red = reduce_cut(info, rec, keeps, start=full)
    res.seconds = time.monotonic() - t0
    assert red is not None
    out = work / "reduced.onnx"
    onnx.save(build_subgraph(model, info, red.cut, arrays), str(out))
    lines = read_log(log)
    res.checks, res.check_seconds = len(lines), sum(x["seconds"] for x in lines)
    res.stages = {"output": red.stages["bisect_output"], "input": red.stages["bisect_input"],
                  "ddmin": red.stages["ddmin"]}
    if red.cut.frozen:
        res.notes.append(f"{len(red.cut.frozen)} side input(s) frozen")
    res.nodes, res.inputs, res.op_types = _describe(out)
    return res


ITERATION = re.compile(r"\b(PASSED|FAILED) \| Iteration \d+")
FREEZING = re.compile(r"Freezing tensor: .* to eliminate branches")


def parse_polygraphy(output: str) -> dict[str, Any]:
    """What a ``debug reduce`` log says.

    Returns ``iterations`` (checks it ran: ``PASSED``/``FAILED | Iteration N`` lines), ``passed``,
    ``failed``, ``frozen`` (tensors it froze from its data to cut a branch away), ``phases``
    (iterations spent on the outputs and on the inputs, once the outputs are done) and ``error``:
    the last critical message (``[!]`` and its indented lines), leaving out the notes about
    optional modules it falls back without, or None.
    """
    found = ITERATION.findall(output)
    head, sep, _ = output.partition("Finished reducing model outputs")
    outputs_phase = len(ITERATION.findall(head)) if sep else None
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("[!]"):
            current = [text[3:].strip()]
            blocks.append(current)
        elif current is not None and line[:1].isspace() and text and not text.startswith("["):
            current.append(text)
        else:
            current = None
    errors = [" ".join(b) for b in blocks if "could not be imported" not in " ".join(b)]
    return {"iterations": len(found), "passed": found.count("PASSED"),
            "failed": found.count("FAILED"), "frozen": len(FREEZING.findall(output)),
            "phases": None if outputs_phase is None else
            {"outputs": outputs_phase, "inputs": len(found) - outputs_phase},
            "error": errors[-1] if errors else None}


def run_polygraphy(case: Case, peer: Peer, mode: str, work: Path, source: Path | None = None,
                   inputs: str | None = None, data: list[str] | None = None,
                   label: str | None = None, max_minutes: float = 60) -> Result:
    """``polygraphy debug reduce --mode MODE`` on ``source`` (the case's model by default)."""
    label = label or f"Polygraphy {mode}"
    res = Result(case.d.name, label, case.nodes)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "checks.jsonl"
    src = source or case.dir / "model.onnx"
    cmd = [str(peer.polygraphy), "debug", "reduce", str(src), "-o", "reduced.onnx",
           "--mode", mode, "--load-inputs", inputs or case.pg_inputs, "--fail-code", "1"]
    if source is None:
        cmd += ["--model-input-shapes", case.input_shapes]
    check = check_wrapper(case, data or case.samples, log, label, work / "check.sh")
    cmd += ["--check", str(check), "polygraphy_debug.onnx"]
    (work / "command.txt").write_text(" ".join(cmd) + "\n")
    t0 = time.monotonic()
    # Its own session, so a run that is stopped takes its check and the check's child with it.
    with (work / "polygraphy.log").open("w+") as out:
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=_peer_env(), start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=max_minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
            res.error = f"did not finish in {max_minutes:g} min"
        except BaseException:  # Ctrl-C, SIGTERM: its own session would outlive this process
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        out.seek(0)
        output = out.read()
    res.seconds = time.monotonic() - t0
    parsed = parse_polygraphy(output)
    lines = read_log(log)
    res.checks, res.check_seconds = len(lines), sum(x["seconds"] for x in lines)
    res.parsed_iterations = parsed["iterations"]
    res.stages = parsed["phases"]
    out = work / "reduced.onnx"
    if rc != 0 or not out.exists():  # a run that was stopped counts as one with no result
        res.error = res.error or (parsed["error"] or f"exit {rc}, no reduced model")
        if parsed["frozen"]:
            res.notes.append(f"froze {parsed['frozen']} tensor(s) from its data to cut branches")
        return res
    res.nodes, res.inputs, res.op_types = _describe(out)
    if parsed["iterations"] != res.checks:
        res.notes.append(f"its log shows {parsed['iterations']} iterations")
    if parsed["frozen"]:
        res.notes.append(f"froze {parsed['frozen']} tensor(s) from its data to cut branches")
    return res


def verify(res: Result, case: Case, peer: Peer, model: Path, data: list[str],
           work: Path) -> None:
    """Re-check the result independently (not counted) and run it in plain ONNX Runtime."""
    if res.nodes is None or not model.exists():
        return
    check = check_wrapper(case, data, work / "recheck.jsonl", "recheck", work / "recheck.sh")
    p = subprocess.run([str(check), str(model)], capture_output=True, text=True)
    res.reproduces = p.returncode == CHECK_FAILS
    if p.returncode not in (0, 1):
        res.notes.append("re-check could not judge it: " + (
            (read_log(work / "recheck.jsonl") or [{}])[-1].get("verdicts", [{}])[0].get("detail", "")
        )[:120])
    s = subprocess.run([str(peer.python), str(PEER_SIDE), "standalone", str(model),
                        str(case.dir / case.failing)], capture_output=True, text=True,
                       env=_peer_env())
    try:
        row = json.loads(s.stdout)
    except json.JSONDecodeError:
        row = {"ok": False, "error": s.stderr[-300:]}
    res.standalone = bool(row.get("ok")) and not row.get("fuzzconv_importable")
    res.standalone_error = row.get("error")


def frozen_from(model: Path, case: Case) -> list[str]:
    """For each initializer of ``model`` that holds a recorded activation: which sample it is."""
    import onnx
    from onnx import numpy_helper

    from fuzzconv.shrink.onnx_tensors import load_arrays

    recs = {r: load_arrays(case.dir / r) for r in case.samples}
    out = []
    for t in onnx.load(str(model)).graph.initializer:
        a = numpy_helper.to_array(t)
        for r, arrays in recs.items():
            for name, v in arrays.items():
                if v.shape == a.shape and v.size > 1 and np.allclose(v, a, atol=1e-5) and \
                        not any(np.allclose(w.get(name, np.nan), a, atol=1e-5)
                                for q, w in recs.items() if q != r and name in w
                                and w[name].shape == a.shape):
                    out.append(f"{t.name} = {name} of sample {r[4:-4]}")
    return out


def in_hunt(case: Case, store: Path) -> dict[str, Any] | None:
    """fuzzconv's reducer as a hunt runs it (its own in-process predicate), on the same image."""
    if case.d.build is not None or case.d.generated is not None:
        return None  # a hand-built model has no pipeline; a generated one no fault step to blame
    from fuzzconv.corpora import select
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.session import open_session
    from fuzzconv.shrink.reduce import reduce_subgraph

    pipe = json.loads((case.dir / "pipeline.json").read_text())
    image = int(case.failing[4:-4])
    fault_names = {s["step"] for s in case.d.steps if s["step"].startswith(("fault.", "peers."))}
    with open_session(store / "fuzzconv", [case.d.plugin]) as ex:
        p = Pipeline.from_dict(pipe, ex.registry)
        culprit = max(i for i, s in enumerate(p.steps, 1) if s.name in fault_names)
        t0 = time.monotonic()
        r = reduce_subgraph(ex, p, culprit, select(limit=image + 1).subset([image]),
                            store / "in-hunt" / case.d.name)
    return {"nodes": r.get("nodes"), "evaluations": r.get("evaluations"),
            "reason": r.get("reason"), "seconds": round(time.monotonic() - t0, 1),
            "op_types": r.get("op_types")}


# -- the run ------------------------------------------------------------------------------------
def run_case(d: CaseDef, store: Path, peer: Peer, modes: list[str], max_minutes: float,
             with_in_hunt: bool) -> tuple[Case, list[Result]]:
    case = prepare(d, store, peer)
    runs = store / "runs" / d.name
    shutil.rmtree(runs, ignore_errors=True)
    results: list[Result] = []
    say(f"{d.name}: fuzzconv")
    r = run_fuzzconv(case, runs / "fuzzconv")
    verify(r, case, peer, runs / "fuzzconv" / "reduced.onnx", [case.failing], runs / "fuzzconv")
    if with_in_hunt:
        try:
            r.in_hunt = in_hunt(case, store)
        except Exception as exc:  # noqa: BLE001 - reported, the comparison stands without it
            r.in_hunt = {"reason": f"{type(exc).__name__}: {exc}"}
    results.append(r)
    for mode in modes:
        if mode == "bisect+linear":
            first = runs / "polygraphy-bisect" / "reduced.onnx"
            base = next((x for x in results if x.reducer == "Polygraphy bisect"), None)
            if base is None or not first.exists():
                results.append(Result(d.name, "Polygraphy bisect+linear", case.nodes,
                                      error="not run: bisect made no model"))
                continue
            say(f"{d.name}: Polygraphy linear on the bisect result")
            r = run_polygraphy(case, peer, "linear", runs / "polygraphy-bisect+linear",
                               source=first, label="Polygraphy bisect+linear",
                               max_minutes=max_minutes)
            r.stages = None  # the linear part's phases alone would read as the whole run's
            r.checks += base.checks
            r.seconds += base.seconds
            r.check_seconds += base.check_seconds
            r.notes.insert(0, f"linear part {r.checks - base.checks} checks")
        else:
            say(f"{d.name}: Polygraphy {mode}")
            r = run_polygraphy(case, peer, mode, runs / f"polygraphy-{mode}",
                               max_minutes=max_minutes)
        out = runs / f"polygraphy-{mode}" / "reduced.onnx"
        verify(r, case, peer, out, case.samples, runs / f"polygraphy-{mode}")
        if len(case.samples) > 1 and out.exists():
            r.notes += frozen_from(out, case)
        results.append(r)
    if d.control:
        say(f"{d.name}: Polygraphy bisect given only the failing sample")
        r = run_polygraphy(case, peer, "bisect", runs / "polygraphy-failing-only",
                           inputs=case.pg_failing_inputs, data=[case.failing],
                           label="Polygraphy bisect, failing sample only",
                           max_minutes=max_minutes)
        verify(r, case, peer, runs / "polygraphy-failing-only" / "reduced.onnx", [case.failing],
               runs / "polygraphy-failing-only")
        results.append(r)
    if len(case.samples) > 1:
        results[0].notes.append(f"reduced on sample {case.failing[4:-4]} of {len(case.samples)}")
    for r in results:
        say(f"{d.name}: {' | '.join(r.row())}")
    (runs / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    return case, results


def _n(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


def goal(results: list[Result]) -> tuple[bool, str]:
    """fuzzconv at least as small, in no more checks, as every Polygraphy run that reproduces."""
    fz = next(r for r in results if r.reducer == "fuzzconv")
    peers = [r for r in results if r.reducer.startswith("Polygraphy") and r.nodes is not None
             and r.reproduces and "failing sample only" not in r.reducer]
    if fz.nodes is None or not fz.reproduces:
        return False, "fuzzconv's result does not reproduce"
    worse = [f"{p.reducer} ({_n(p.nodes, 'node')}, {_n(p.checks, 'check')})" for p in peers
             if p.nodes < fz.nodes or (p.nodes == fz.nodes and p.checks < fz.checks)]
    return not worse, ("met" if not worse else "not met: " + ", ".join(worse))


def observations(results: list[Result]) -> list[str]:
    """What the rows of one case show beyond the goal, read off the results."""
    fz = results[0]
    out = []
    pg = [r for r in results if r.reducer.startswith("Polygraphy")]
    wider = [r for r in pg if r.inputs is not None and fz.inputs is not None
             and r.inputs > fz.inputs]
    if wider:
        out.append("Polygraphy's results take " + ", ".join(
            f"{r.inputs} inputs ({r.reducer})" for r in wider) + f"; fuzzconv's takes "
            f"{fz.inputs}, the other cut tensors frozen from the same image")
    control = next((r for r in pg if "failing sample only" in r.reducer), None)
    full = next((r for r in pg if r.reducer == "Polygraphy bisect"), None)
    if control and full and control.nodes is not None and full.nodes is not None:
        out.append(f"given every sample, Polygraphy bisect keeps {_n(full.nodes, 'node')}; given "
                   f"only the failing one, {control.nodes}")
    slow = [r for r in pg if r.error and r.error.startswith("did not finish")]
    if slow:
        out.append("; ".join(f"{r.reducer} ran {r.checks} checks before it was stopped"
                             for r in slow))
    if fz.check_seconds and fz.checks:
        out.append(f"a check took {fz.check_seconds / fz.checks:.1f} s on average in "
                   f"fuzzconv's run")
    return out


READING = (
    "How to read it. Both reducers bisect first the output side and then the input side over "
    "the nodes in topological order, so on a fault in one node they try prefixes and suffixes "
    "of the same kind; where they differ by a check it is where each rounds the midpoint (the "
    "stage counts in the notes show where). fuzzconv then runs ddmin over what is left: it "
    "pays on branches and costs checks where nothing more can go. fuzzconv's runtimes feed one "
    "input, so it freezes every other cut tensor into an initializer holding the recorded "
    "value; a step that treats a constant differently from a computed tensor (a rewrite that "
    "matches two computed operands, constant folding) then sees another graph, and fuzzconv "
    "keeps the nodes that compute that tensor, where Polygraphy makes it a graph input. "
    "Polygraphy's linear mode runs one check per node in each of its two phases whatever it "
    "finds; with TVM every check is a build of the candidate.")


def case_report(case: Case, results: list[Result]) -> dict[str, Any]:
    """One case's part of the saved report: what the tables are written from."""
    return {"name": case.d.name, "about": case.d.about, "nodes": case.nodes,
            "signature": case.signature, "fuzzconv_run": case.fuzzconv_run,
            "samples": len(case.samples), "results": [asdict(r) for r in results]}


def _sentence(text: str) -> str:
    """Capitalised, except for a name that is written in lower case (fuzzconv, a step)."""
    return text if text.startswith(("fuzzconv", "`")) else text[0].upper() + text[1:]


def markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md section, from a saved report (see :func:`main`)."""
    stack = ", ".join(f"{k} {v}" for k, v in sorted(report["stack"].items()))
    peer_v = ", ".join(f"{k} {v}" for k, v in report["peer"].items())
    cases = report["cases"]
    section = report.get("section", SECTION)
    begin, end = markers(section)
    title = report.get("title") or "Side by side: model reduction vs Polygraphy"
    lines = [begin, f"## {title} (`benchmarks/peers/reduce_vs_polygraphy.py`)", "",
             f"Run {report['started']}; {report['machine']}; load (`uptime`) at the start: "
             f"{report['load'][0]}; at the end: {report['load'][1]}. Peer (its own venv, from "
             f"PyPI): {peer_v}. fuzzconv stack: {stack}.", "",
             "Each case's failing model is reduced by fuzzconv's search (bisect the output, "
             "bisect the input side, ddmin) and by Polygraphy's `debug reduce` as its tutorial "
             "runs it (`--load-inputs` with every recorded tensor, `--model-input-shapes`, "
             "`--fail-code 1`), all calling the same check (`check_divergence.py`: the case's "
             "chain against ONNX Runtime on the same model and inputs, fuzzconv's per-tensor "
             "tolerance; exit 1 when it still fails the same way) through a wrapper script, "
             "and the check logs every call: *checks* is that count. *Reproduces* is the check "
             "run again on the result; *standalone* is `onnx.checker` (full) and a run in plain "
             "ONNX Runtime in Polygraphy's venv, where fuzzconv is not importable, every input "
             "fed its recorded value. *Inputs* are the graph inputs left to feed. Polygraphy "
             "never checks the original model (it assumes it fails); neither do the fuzzconv "
             "runs here (each case was built on that check). Bisect+linear counts both runs. "
             f"A Polygraphy run is stopped after {report['max_minutes']:g} minutes. Wall times "
             "include every check and were taken on a shared, loaded machine.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for c in cases:
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in Result(**r).row()) + " |"
                  for r in c["results"]]
    lines += ["", "Per case (goal: fuzzconv at least as small, in no more checks, than each "
                  "Polygraphy run whose result reproduces):", ""]
    met = complete = 0
    totals: dict[str, list[int]] = {}
    for c in cases:
        results = [Result(**r) for r in c["results"]]
        ok, why = goal(results)
        met += ok
        fz = results[0]
        extra = []
        if c["fuzzconv_run"]:
            fr = c["fuzzconv_run"]
            extra.append(f"`fuzzconv run` of its pipeline: {fr['symptom']}"
                         + (f", flip rate {fr['flip_rate']:.0%}" if fr.get("flip_rate")
                            is not None else "")
                         + (f" ({fr['error']})" if fr.get("error") else ""))
        if fz.in_hunt:
            h = fz.in_hunt
            extra.append("fuzzconv's reducer with its own in-process predicate, as in a hunt: "
                         + (f"{_n(h['nodes'], 'node')} in {_n(h['evaluations'], 'evaluation')}"
                            if h.get("nodes") is not None else f"no reduction ({h.get('reason')})"))
        extra += observations(results)
        errs = [f"{r.reducer} stopped: `{r.error.split(' Note: ')[0]}`" for r in results
                if r.error and not r.error.startswith(("did not finish", "not run"))]
        lines.append(f"- **{c['name']}** ({c['about']}; {c['nodes']} nodes, signature "
                     f"`{':'.join(str(x) for x in c['signature'] if x)}`): goal {why}."
                     + "".join(f" {_sentence(e)}." for e in extra + errs))
        compared = [r for r in results if "failing sample only" not in r.reducer]
        if all(r.nodes is not None for r in compared):
            complete += 1
            for r in compared:
                t = totals.setdefault(r.reducer, [0, 0])
                t[0] += r.checks
                t[1] += r.nodes
    lines += ["", f"Goal met on {met} of {len(cases)} cases. Over the {complete} cases where "
              "every run made a model: "
              + "; ".join(f"{k} {v[0]} checks, {v[1]} nodes" for k, v in totals.items())
              + ".", "", READING, "", end]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path("fuzzconv-out/peers"),
                    help="work directory: the peer's venv, a fuzzconv store, cases and runs")
    ap.add_argument("--cases", default=None,
                    help=f"comma-separated, from: {', '.join(c.name for c in CASES)}")
    ap.add_argument("--modes", default="bisect,linear,bisect+linear")
    ap.add_argument("--max-minutes", type=float, default=60.0,
                    help="stop a Polygraphy run after this long (reported)")
    ap.add_argument("--no-in-hunt", action="store_true",
                    help="skip fuzzconv's reducer with its own predicate (the cross-check)")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the report here (it is always written to STORE/report.json)")
    ap.add_argument("--render", type=Path, default=None, metavar="REPORT.json",
                    help="write the tables from a saved report instead of running")
    ap.add_argument("--section", default=SECTION,
                    help="the RESULTS.md section to write (its markers are <!-- NAME:begin/end -->)"
                         "; another name publishes a run of some cases beside the full one")
    ap.add_argument("--title", default=None, help="that section's heading")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9-]+", args.section):
        print(f"--section {args.section!r}: lower-case letters, digits and '-' only",
              file=sys.stderr)
        return 2
    if args.render:
        report = json.loads(args.render.read_text())
    else:
        chosen = CASES
        if args.cases:
            wanted = args.cases.split(",")
            unknown = set(wanted) - {c.name for c in CASES}
            if unknown:
                print(f"unknown case(s): {', '.join(sorted(unknown))}", file=sys.stderr)
                return 2
            chosen = [c for c in CASES if c.name in wanted]
        # SIGTERM unwinds like Ctrl-C, so a running Polygraphy is stopped with this process
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        report = run(chosen, args.store.resolve(), args.modes.split(","), args.max_minutes,
                     not args.no_in_hunt)
        report.update(section=args.section, title=args.title)
        for path in [args.store.resolve() / "report.json", *filter(None, [args.json])]:
            path.write_text(json.dumps(report, indent=1))
    text = markdown(report)
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from run_faults import write_results

        write_results(text, *markers(report.get("section", SECTION)))
    return 0


def run(chosen: list[CaseDef], store: Path, modes: list[str], max_minutes: float,
        with_in_hunt: bool) -> dict[str, Any]:
    """Reduce every chosen case with every reducer; the report the tables are written from."""
    from fuzzconv.versions import stack_versions

    store.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    load0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    peer = ensure_polygraphy(store)
    say("peer: " + ", ".join(f"{k} {v}" for k, v in peer.versions.items()))
    cases = []
    for d in chosen:
        case, results = run_case(d, store, peer, modes, max_minutes, with_in_hunt)
        cases.append(case_report(case, results))
    load1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"started": started, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load": [load0, load1], "peer": peer.versions, "stack": stack_versions(),
            "max_minutes": max_minutes, "cases": cases}


if __name__ == "__main__":
    sys.exit(main())
