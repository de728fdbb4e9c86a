"""A bundle's repro.py runs fuzzconv's own step and runtime functions, copied from its source.

So "repro.py computes what fuzzconv computed" holds by construction, provided every copy is
complete: these checks copy the function of every built-in step and runtime, and check that the
copy defines every global name it uses and imports nothing of fuzzconv, without running any
framework (frameworks are imported inside the functions). ``tests/integration/test_bundle.py``
runs a few real ones.
"""

from __future__ import annotations

import builtins
import dis
import inspect
import json
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fuzzconv.oracle import Thresholds
from fuzzconv.pipeline import Pipeline, runnable_prefix
from fuzzconv.registry import default_registry
from fuzzconv.report.bundle import harness, script
from fuzzconv.report.bundle.case import Case, Variant
from fuzzconv.report.bundle.sources import CopyError, Sources
from fuzzconv.zoo import get_model

REGISTRY = default_registry()
BUILTINS = sorted(n for n, op in REGISTRY.ops.items() if not op.is_plugin)


def copied(*objects: object) -> tuple[Sources, dict[str, object]]:
    """The sources of ``objects`` and the namespace they define when run (no framework loads)."""
    sources = Sources()
    for obj in objects:
        sources.add(obj)
    namespace: dict[str, object] = {}
    exec(compile("from __future__ import annotations\n" + sources.text(), "<copy>", "exec"),
         namespace)
    return sources, namespace


def unresolved(namespace: dict[str, object]) -> set[str]:
    """Global names the copied functions load that neither the copy nor Python defines."""
    missing: set[str] = set()

    def scan(code: types.CodeType) -> None:
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in namespace \
                    and not hasattr(builtins, ins.argval):
                missing.add(ins.argval)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                scan(const)

    def copied_here(fn: object) -> bool:
        return isinstance(fn, types.FunctionType) and fn.__code__.co_filename == "<copy>"

    for value in namespace.values():
        if copied_here(value):
            scan(value.__code__)  # type: ignore[union-attr]
        elif isinstance(value, type):
            for member in vars(value).values():
                if copied_here(member):
                    scan(member.__code__)
    return missing


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_step_and_runtime_copies_whole(name: str) -> None:
    fn = REGISTRY.get(name).repro_fn
    sources, namespace = copied(fn)
    assert unresolved(namespace) == set()
    assert "fuzzconv" not in sources.modules
    assert not re.search(r"^\s*(from|import) fuzzconv", sources.text(), re.M)
    # The copy is the function's own text, not a rewrite (its registration decorator aside).
    own = textwrap.dedent(inspect.getsource(fn))
    assert own.rstrip().endswith(sources.source_of(fn.__name__).rstrip())


def test_tvm_pass_copies_the_transformation_not_the_probe() -> None:
    # repro.py must not probe TVM's pass list (minutes): the step's recipe skips that check.
    sources, namespace = copied(REGISTRY.get("tvm.pass").repro_fn)
    assert "list_relax_passes" not in namespace and "apply_pass" in namespace


def test_the_harness_imports_become_copies() -> None:
    # What repro.py's check uses of fuzzconv: the oracle, the per-tensor tolerance, the step
    # context and the batched inference the workers do.
    names = [n for _, ns in script._template_imports() for n in ns]
    assert {"compare", "judge", "Thresholds", "activation_divergence", "StepContext",
            "infer_batches"} <= set(names)
    import importlib

    objects = [getattr(importlib.import_module(m), n) for m, ns in script._template_imports()
               for n in ns]
    sources, namespace = copied(*objects)
    assert unresolved(namespace) == set()
    assert sources.modules == sorted(set(sources.modules) - {"fuzzconv"})


def test_what_cannot_be_copied_is_refused() -> None:
    from fuzzconv.zoo.keras_apps import mobilenetv2  # made by a function, around its name

    with pytest.raises(CopyError, match="closure"):
        Sources().add(mobilenetv2)
    s = Sources()
    s.add(1, "LIMIT")
    with pytest.raises(CopyError, match="two different things"):
        s.add(2, "LIMIT")
    with pytest.raises(CopyError, match="cannot be copied"):
        Sources().add(object(), "THING")


def _case(tmp_path: Path) -> tuple[Case, Variant]:
    """A finding whose culprit is keras.tf2onnx(inputs_as_nchw=True), without a store."""
    spec = get_model("tiny_keras")
    p = Pipeline.make(REGISTRY, "tiny_keras", [("keras.tf2onnx", {"inputs_as_nchw": True})], "ort")
    after = runnable_prefix(REGISTRY, p, 1, "keras")
    assert after is not None
    ex = SimpleNamespace(registry=REGISTRY, batch_size=8, timeout_for=lambda name: 600.0)
    finding = {"id": "F-12345678", "symptom": "label_flip", "versions": {"numpy": "2.4.6"}}
    case = Case(finding, ex, spec, p, 1, p.steps[0], REGISTRY.get("keras.tf2onnx"),  # type: ignore[arg-type]
                [*after.steps, after.runtime], None, Thresholds())
    inputs = np.zeros((2, *spec.input_shape), np.float32)
    variant = Variant([tmp_path / "model.keras"], inputs, ["a.png", "b.png"], inputs,
                      spec.to_dict(), "label_flip")
    return case, variant


def test_repro_py_defines_everything_without_fuzzconv(tmp_path: Path) -> None:
    case, variant = _case(tmp_path)
    text, dists = script.render(case, variant)
    assert dists == ["numpy", "onnx", "onnxruntime", "tensorflow", "keras", "tf2onnx"]
    repro = tmp_path / "repro.py"
    repro.write_text(text)
    # Load it as a module (not as __main__, so nothing runs) where fuzzconv cannot be imported.
    check = ("import runpy, sys, json; sys.modules['fuzzconv'] = None; "
             f"ns = runpy.run_path({str(repro)!r}); "
             "print(json.dumps({'chain': ns['CHAIN'], 'functions': sorted(ns['FUNCTIONS']), "
             "'modules': ns['MODULES']}))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert loaded["chain"] == [["keras.tf2onnx", {"inputs_as_nchw": True, "opset": 13},
                                "model.onnx"],
                               ["ort", {"graph_optimization_level": "all", "threads": 0}, None]]
    assert loaded["functions"] == ["keras.tf2onnx", "ort"]
    assert loaded["modules"][0] == "numpy" and "tf2onnx" in loaded["modules"]


@pytest.mark.parametrize("symptom,shift,expected", [
    ("label_flip", 1.0, True),     # the runner-up overtakes the top-1 on every image
    ("label_flip", 0.0, False),
    ("numeric", 1e-6, False),      # within the tolerances
    ("nan", np.nan, True),
])
def test_the_harness_judges_with_the_oracle(monkeypatch: pytest.MonkeyPatch, symptom: str,
                                            shift: float, expected: bool) -> None:
    monkeypatch.setattr(harness, "SYMPTOM", symptom)
    monkeypatch.setattr(harness, "COMPARE", symptom)
    monkeypatch.setattr(harness, "THRESHOLDS", {})
    before = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], np.float32)
    after = before.copy()
    if np.isnan(shift):
        after[0, 0] = np.nan
    else:
        for row in after:
            order = np.argsort(-row)
            row[order[1]] += (row[order[0]] - row[order[1]]) * 2 * shift
    assert harness.verdict(before, after)[0] is expected


def test_the_harness_judges_a_reduced_subgraph_per_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "COMPARE", "activation")
    monkeypatch.setattr(harness, "THRESHOLDS", {"rtol": 1e-3})
    act = np.linspace(0, 10, 24, dtype=np.float32).reshape(1, 2, 3, 4)
    assert harness.verdict(act, act + 0.5)[0] is True  # 5 % of the tensor's range
    assert harness.verdict(act, act + 1e-5)[0] is False


def test_a_memo_the_process_filled_is_copied_as_the_module_writes_it(monkeypatch) -> None:
    # A worker's recently loaded Relax modules are frameworks' objects: the copy starts empty.
    from fuzzconv.formats import relax

    monkeypatch.setitem(relax.RECENT_MODULES, ("key",), object())
    sources, namespace = copied(relax.load_relax)
    assert namespace["RECENT_MODULES"] == {} and namespace["RECENT_SIZE"] == relax.RECENT_SIZE
    assert "RECENT_MODULES = {}" in sources.text()


def test_the_harness_keeps_the_error_raised_not_what_a_library_logs_after_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # TVM logs "BlockBuilder destroyed with remaining blocks" after an importer's traceback: the
    # last line of stderr is then a warning, while the finding's error class is the exception's.
    def importer(ctx, src, dst):
        raise TypeError("Reshape requires the input new shape to be Shape\nmore detail")

    np.save(tmp_path / "inputs.npy", np.zeros((1, 2), np.float32))
    monkeypatch.setattr(harness, "HERE", tmp_path)
    monkeypatch.setattr(harness, "MODULES", [])
    monkeypatch.setattr(harness, "INPUT", tmp_path / "model.onnx")
    monkeypatch.setattr(harness, "MODEL", {"classes": 2})
    monkeypatch.setattr(harness, "CHAIN", [("onnx.tvm", {}, "model.json"), ("tvm", {}, None)])
    monkeypatch.setattr(harness, "FUNCTIONS", {"onnx.tvm": importer})
    stage = tmp_path / "run" / "stage"
    stage.parent.mkdir()
    with pytest.raises(TypeError):
        harness.child(str(stage), str(tmp_path / "actual.npy"))
    assert stage.read_text() == "0"
    raised = (stage.parent / "error").read_text()
    assert raised == "TypeError: Reshape requires the input new shape to be Shape"
    monkeypatch.setattr(harness, "ERROR_CLASS", "TypeError")
    logged = "Traceback ...\nTypeError: Reshape ...\n[07:53:51] Warning: BlockBuilder destroyed\n"
    assert not harness.same_class(harness.error_of(1, logged))
    assert harness.same_class(harness.error_of(1, logged + raised))
