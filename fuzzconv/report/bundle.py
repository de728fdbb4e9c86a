"""Standalone bug bundles: ``fuzzconv bundle ID -o DIR``.

A bundle is a directory a library's maintainers can run without fuzzconv::

    README.md                 the issue text: title, environment, steps, expected vs actual,
                              flip rate
    repro.py                  numpy + the culprit's own libraries; prints REPRODUCED (exit 1) or
                              NOT REPRODUCED (exit 0); exit 2 when a library is missing
    input/                    the culprit step's input artifact (model.onnx, model.keras,
                              model.tflite, module.json + module.constants.npz + layout.json,
                              model.torch.json + its files, lib.so), or the reduced ONNX subgraph
                              when the finding has one
    inputs.npy                the finding's minimal inputs, preprocessed for the model
    expected.npy              what those inputs gave *before* the culprit: its input artifact run
                              by the plainest runtime of that format (not for crash/timeout)
    actual.npy                what repro.py got when the bundle was written
    finding.json              the finding as stored, pipeline.json its minimal pipeline
    plugin/<file>.py          the plugin file, when the culprit is a plugin step
    fuzzconv_plugins_shim.py  stands in for ``fuzzconv.plugins`` so the plugin file imports alone

How it is made
--------------
The culprit is the step the shrinker named in the minimal pipeline. Its input artifact comes from
the cache (:meth:`~fuzzconv.executor.Executor.artifact`). ``expected.npy`` is that artifact run by
:func:`~fuzzconv.shrink.localize.probe` — the plainest completion the culprit search judged to
agree — and the inputs are chosen where that probe and the next one (the culprit applied, then the
plainest completion) disagree the way the finding says, preferring the finding's minimal inputs.

``repro.py`` applies the culprit the way the library's users do, from a table of code templates
(:data:`RECIPES`, one per culprit kind, and :data:`RUNNERS`, one per kind of result), in a child
process so that a segfault is observable. It judges by the finding's symptom: any top-1 change
(``label_flip``), max |Δ| past the campaign's ``atol``/``rtol`` (``numeric``), non-finite outputs
(``nan``), the culprit failing with the same error class (``crash``), or not finishing
(``timeout``). A reduced subgraph is judged per tensor (:func:`fuzzconv.shrink.reduce.
activation_divergence`), since its output is an activation, not logits.

Before returning, :func:`write_bundle` runs the bundle's ``repro.py`` once with this interpreter
and puts its output in the README; a reduced subgraph that does not reproduce on its own is
replaced by the full input artifact. Nothing is written outside the output directory: every path
is resolved and checked, symlinks included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..campaign import HuntConfig
from ..errors import UsageError
from ..executor import Evaluation, Executor
from ..oracle import Thresholds, top_k
from ..pipeline import Pipeline, Step
from ..protocol import RunRequest, worker_function
from ..registry import ARTIFACT_FILE, Operation, plugin_files
from ..findings import finding_session
from ..store import Store
from ..versions import stack_versions
from ..workers import WorkerFailure
from ..zoo import ModelSpec, get_model

#: Most bundled inputs: enough to show the symptom, small enough to read in an issue.
MAX_INPUTS = 4
#: Exit code of ``repro.py``'s child when a library is missing (the parent exits 2).
EXIT_MISSING = 3

# ================================================================================================
# Templates. Everything below up to the builder is text that goes into repro.py.
# ================================================================================================

#: Whose bug it is: project name and where its issues go.
PROJECTS: dict[str, tuple[str, str | None]] = {
    "tvm": ("Apache TVM", "https://github.com/apache/tvm/issues"),
    "tf2onnx": ("tf2onnx", "https://github.com/onnx/tensorflow-onnx/issues"),
    "tflite": ("TensorFlow Lite", "https://github.com/tensorflow/tensorflow/issues"),
    "tensorflow": ("TensorFlow", "https://github.com/tensorflow/tensorflow/issues"),
    "ort": ("ONNX Runtime", "https://github.com/microsoft/onnxruntime/issues"),
    "onnx": ("ONNX", "https://github.com/onnx/onnx/issues"),
    "onnx2torch": ("onnx2torch", "https://github.com/ENOT-AutoDL/onnx2torch/issues"),
    "torch": ("PyTorch", "https://github.com/pytorch/pytorch/issues"),
    "plugin": ("the plugin's author", None),
}

#: pip distribution → (module repro.py imports, key in a finding's ``versions``).
DISTRIBUTIONS: dict[str, tuple[str, str]] = {
    "numpy": ("numpy", "numpy"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "tensorflow": ("tensorflow", "tensorflow"),
    "keras": ("keras", "keras"),
    "tf2onnx": ("tf2onnx", "tf2onnx"),
    "torch": ("torch", "torch"),
    "torchvision": ("torchvision", "torchvision"),
    "onnx2torch": ("onnx2torch", "onnx2torch"),
    "onnxscript": ("onnxscript", "onnxscript"),
    "apache-tvm": ("tvm", "tvm"),
}


@dataclass(frozen=True)
class Runner:
    """Code defining ``run_output(model, x) -> logits``, what it runs, what it imports."""

    code: str
    label: str
    packages: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """How ``repro.py`` applies one kind of culprit.

    Args:
        project: a key of :data:`PROJECTS`.
        packages: distributions ``apply_culprit`` imports.
        apply: code defining ``apply_culprit(src: Path, workdir: Path)``.
        runner: a key of :data:`RUNNERS` for what ``apply_culprit`` returns; None when it
            depends on the step's output format (plugin ``@step`` functions).
        stage: where the culprit runs in repro.py: ``step`` (``apply_culprit``) or ``run``.
        what: what the culprit is, for the issue title.
    """

    project: str
    packages: tuple[str, ...]
    apply: str
    runner: str | None
    stage: str = "step"
    what: str = ""


_VM_OUTPUT = '''
def vm_output(out) -> np.ndarray:
    """A Relax VM result as numpy; a tuple result gives its first element (the logits)."""
    while not hasattr(out, "numpy"):
        out = out[0]
    return out.numpy()
'''

RUNNERS: dict[str, Runner] = {
    "onnx": Runner('''
def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the CPU with its default session options (all graph optimisations)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]
''', "ONNX Runtime (CPU, default session options)", ("onnxruntime",)),
    "tflite": Runner('''
def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """The TFLite interpreter with its default delegate (XNNPACK), one thread."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(
        model_path=str(model), num_threads=1,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN)
    inp = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(inp, list(x.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp, np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
''', "the TFLite interpreter (XNNPACK, 1 thread)", ("tensorflow",)),
    "keras": Runner('''
def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """Keras 3 on TensorFlow, eager: model(x, training=False)."""
    import keras
    import tensorflow as tf

    net = keras.models.load_model(str(model), safe_mode=True, compile=False)
    return np.asarray(net(tf.constant(x, dtype=tf.float32), training=False))
''', "Keras (eager, fp32)", ("tensorflow", "keras")),
    "torch": Runner('''
def run_output(model: "Path | torch.nn.Module", x: np.ndarray) -> np.ndarray:
    """PyTorch, eager, on the CPU."""
    import torch

    module = load_torch(model) if isinstance(model, Path) else model
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()
''', "PyTorch (eager)", ("torch",)),
    "relax": Runner(_VM_OUTPUT + '''

def run_output(model: "tvm.IRModule", x: np.ndarray) -> np.ndarray:
    """Build the Relax module the default way (tvm.compile, opt level 3, llvm) and run main."""
    import tvm
    from tvm import relax

    with tvm.transform.PassContext(opt_level=3):
        executable = tvm.compile(model, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm_output(vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32))))
''', "tvm.compile with defaults (opt level 3, llvm) and the Relax VM", ("apache-tvm",)),
    "tvm_lib": Runner(_VM_OUTPUT + '''

def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """Load the compiled library and run main in the Relax VM on the CPU."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(model)), tvm.cpu())
    return vm_output(vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32))))
''', "the Relax VM on the CPU", ("apache-tvm",)),
    # Runtimes as culprits: the same, with the culprit's parameters.
    "ort_culprit": Runner('''
ORT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime with the culprit's graph optimisation level and intra-op thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            ORT_LEVELS[PARAMS["graph_optimization_level"]])
    opts.intra_op_num_threads = int(PARAMS["threads"])
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]
''', "ONNX Runtime with the culprit's options", ("onnxruntime",)),
    "tflite_culprit": Runner('''
def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """The TFLite interpreter with (xnnpack) or without its default delegate, PARAMS["threads"]."""
    import tensorflow as tf

    resolvers = tf.lite.experimental.OpResolverType
    interpreter = tf.lite.Interpreter(
        model_path=str(model), num_threads=int(PARAMS["threads"]),
        experimental_op_resolver_type=resolvers.BUILTIN if PARAMS["xnnpack"]
        else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(inp, list(x.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp, np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
''', "the TFLite interpreter with the culprit's options", ("tensorflow",)),
    "keras_culprit": Runner('''
def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """Keras 3 on TensorFlow, under XLA (tf.function(jit_compile=True)) with jit_compile."""
    import keras
    import tensorflow as tf

    net = keras.models.load_model(str(model), safe_mode=True, compile=False)

    def call(t):
        return net(t, training=False)

    if PARAMS["jit_compile"]:
        call = tf.function(call, jit_compile=True)
    return np.asarray(call(tf.constant(x, dtype=tf.float32)))
''', "Keras with the culprit's options", ("tensorflow", "keras")),
    "torch_culprit": Runner('''
def run_output(model: Path, x: np.ndarray) -> np.ndarray:
    """PyTorch on the CPU, under torch.compile when PARAMS["compile"], else eager."""
    import torch

    module = load_torch(model)
    fn = torch.compile(module) if PARAMS["compile"] else module
    with torch.no_grad():
        return fn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()
''', "PyTorch with the culprit's options", ("torch",)),
}

#: ``load_relax`` for a Relax input artifact (fuzzconv's file: TVMScript text + constants).
RELAX_LOADER = '''
def load_relax(path: Path) -> "tvm.IRModule":
    """Read the Relax module as fuzzconv saved it: TVMScript text (JSON) plus an .npz of constants.

    The text names each tensor constant metadata["ir.GenericConst"][i] and non-finite scalars
    inf / nan; parsing binds those names to the saved values.
    """
    import tvm
    from tvm import relax
    from tvm.script.parser.core.entry import _default_globals

    doc = json.loads(path.read_text())
    with np.load(path.parent / doc["constants"], allow_pickle=False) as npz:
        arrays = [npz[f"c{i}"] for i in range(doc["count"])]
    names = dict(_default_globals())
    names.update(inf=float("inf"), nan=float("nan"))
    names["metadata"] = {"ir.GenericConst": [relax.const(a) for a in arrays]}
    return tvm.script.from_source(doc["script"], extra_vars=names)
'''

#: ``load_torch`` for a torch artifact that onnx2torch made: the ONNX model is beside it.
TORCH_ONNX2TORCH_LOADER = '''
def load_torch(path: Path) -> "torch.nn.Module":
    """The PyTorch module: onnx2torch's conversion of the ONNX model the manifest names."""
    import onnx2torch

    manifest = json.loads(path.read_text())
    return onnx2torch.convert(str(path.parent / manifest["onnx"])).eval()
'''

_TORCH_ZOO_LOADER = '''
def load_torch(path: Path) -> "torch.nn.Module":
    """The PyTorch module: the architecture above with the weights (.npz) the manifest names."""
    import torch

    manifest = json.loads(path.read_text())
    module = {function}(**(manifest.get("options") or {{}}))
    with np.load(path.parent / manifest["weights"], allow_pickle=False) as npz:
        module.load_state_dict({{k: torch.from_numpy(npz[k]) for k in npz.files}}, strict=True)
    return module.eval()
'''

_IDENTITY = '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """The culprit is the runtime: the input artifact is run as it is (see run_output)."""
    return src
'''

RECIPES: dict[str, Recipe] = {
    "keras.tf2onnx": Recipe("tf2onnx", ("tensorflow", "keras", "tf2onnx", "onnx"), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """tf2onnx.convert.from_keras with a dynamic batch; inputs_as_nchw transposes the input."""
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(str(src), safe_mode=True, compile=False)
    signature = [tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_keras(
        model, input_signature=signature, opset=int(PARAMS["opset"]),
        inputs_as_nchw=["input:0"] if PARAMS["inputs_as_nchw"] else None)
    dst = workdir / "model.onnx"
    onnx.save(proto, str(dst))
    return dst
''', "onnx", what="tf2onnx's Keras converter"),
    "keras.tflite": Recipe("tflite", ("tensorflow", "keras"), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """TFLiteConverter.from_keras_model with the culprit's optimizations and supported types."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(str(src), safe_mode=True, compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize[name] for name in PARAMS["optimizations"]]
    converter.target_spec.supported_types = [tf.dtypes.as_dtype(name)
                                             for name in PARAMS["supported_types"]]
    dst = workdir / "model.tflite"
    dst.write_bytes(converter.convert())
    return dst
''', "tflite", what="the TFLite converter"),
    "tflite.tf2onnx": Recipe("tf2onnx", ("tensorflow", "tf2onnx"), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """tf2onnx.convert.from_tflite."""
    import tf2onnx

    dst = workdir / "model.onnx"
    tf2onnx.convert.from_tflite(str(src), opset=int(PARAMS["opset"]), output_path=str(dst))
    return dst
''', "onnx", what="tf2onnx's TFLite converter"),
    "onnx.optimize": Recipe("ort", ("onnxruntime",), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """ONNX Runtime's offline graph optimisation, saved as a new ONNX model."""
    import onnxruntime as ort

    levels = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
    dst = workdir / "optimized.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, levels[PARAMS["level"]])
    opts.optimized_model_filepath = str(dst)
    # Creating the session is what writes the optimised model.
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return dst
''', "onnx", what="ONNX Runtime's offline graph optimisation"),
    "onnx.version": Recipe("onnx", ("onnx",), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """onnx.version_converter.convert_version to the culprit's opset, then onnx's checker."""
    import onnx
    from onnx import version_converter

    model = version_converter.convert_version(onnx.load(str(src)), int(PARAMS["opset"]))
    onnx.checker.check_model(model)
    dst = workdir / "converted.onnx"
    onnx.save(model, str(dst))
    return dst
''', "onnx", what="onnx's opset version converter"),
    "onnx.onnx2torch": Recipe("onnx2torch", ("onnx2torch", "onnx"), '''
def apply_culprit(src: Path, workdir: Path) -> "torch.nn.Module":
    """onnx2torch.convert: the ONNX graph as a torch.fx module."""
    import onnx2torch

    return onnx2torch.convert(str(src)).eval()
''', "torch", what="onnx2torch's converter"),
    "torch.onnx_export": Recipe("torch", ("torch", "onnx", "onnxscript"), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """torch.onnx.export, TorchScript-based (dynamo=False) or torch.export-based (dynamo=True)."""
    import torch

    module = load_torch(src)
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would pin the batch axis.
    example = (torch.zeros([2, *IMAGE_SHAPE]),)
    if PARAMS["dynamo"]:
        dynamic = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)}
    else:
        dynamic = {"dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}}
    dst = workdir / "model.onnx"
    torch.onnx.export(module, example, str(dst), input_names=["input"], output_names=["logits"],
                      opset_version=int(PARAMS["opset"]), dynamo=bool(PARAMS["dynamo"]),
                      external_data=False, **dynamic)
    return dst
''', "onnx", what="torch.onnx.export"),
    "onnx.tvm": Recipe("tvm", ("apache-tvm", "onnx"), '''
def apply_culprit(src: Path, workdir: Path) -> "tvm.IRModule":
    """The Relax ONNX frontend (tvm.relax.frontend.onnx.from_onnx), batch axis symbolic."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(src))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    if batch.HasField("dim_value"):
        batch.dim_param = "batch"
    return from_onnx(model)
''', "relax", what="TVM's Relax ONNX frontend"),
    "torch.tvm": Recipe("tvm", ("apache-tvm", "torch"), '''
def apply_culprit(src: Path, workdir: Path) -> "tvm.IRModule":
    """torch.export with a dynamic batch, then the Relax exported-program frontend."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    module = load_torch(src)
    example = (torch.zeros([2, *IMAGE_SHAPE]),)
    exported = torch.export.export(module, example,
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    return from_exported_program(exported, run_ep_decomposition=bool(PARAMS["decompose"]),
                                 unwrap_unit_return_tuple=True)
''', "relax", what="TVM's Relax PyTorch frontend"),
    "tvm.pass": Recipe("tvm", ("apache-tvm",), '''
def apply_culprit(src: Path, workdir: Path) -> "tvm.IRModule":
    """One pass of tvm.relax.transform with its arguments, at opt level 3, llvm target in scope."""
    import inspect

    import tvm
    from tvm import relax

    make = getattr(relax.transform, PARAMS["name"])
    takes = inspect.signature(make).parameters
    args = {k: v for k, v in PARAMS["args"].items() if k in takes}
    with tvm.transform.PassContext(opt_level=3), tvm.target.Target("llvm"):
        out = make(**args)(load_relax(src))
    relax.analysis.well_formed(out)
    return out
''', "relax", what="a TVM Relax pass"),
    "tvm.build": Recipe("tvm", ("apache-tvm",), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """tvm.compile under PassContext(opt_level, disabled_pass), exported as a shared library."""
    import tvm
    from tvm import relax

    target = tvm.target.Target(PARAMS["target"])
    if PARAMS["relax_pipeline"] == "target":
        pipeline = relax.get_default_pipeline(target)
    else:
        pipeline = "default"
    with tvm.transform.PassContext(opt_level=int(PARAMS["opt_level"]),
                                   disabled_pass=list(PARAMS["disabled_passes"])):
        executable = tvm.compile(load_relax(src), target=target, relax_pipeline=pipeline)
    dst = workdir / "lib.so"
    executable.export_library(str(dst))
    return dst
''', "tvm_lib", what="TVM's compiler"),
    # Runtimes.
    "keras": Recipe("tensorflow", (), _IDENTITY, "keras_culprit", "run", what="Keras under XLA"),
    "tflite": Recipe("tflite", (), _IDENTITY, "tflite_culprit", "run",
                     what="the TFLite interpreter"),
    "ort": Recipe("ort", (), _IDENTITY, "ort_culprit", "run", what="an ONNX Runtime session"),
    "torch": Recipe("torch", (), _IDENTITY, "torch_culprit", "run", what="torch.compile"),
    "tvm": Recipe("tvm", (), _IDENTITY, "tvm_lib", "run", what="TVM's Relax VM"),
    # Plugin steps, by the decorator that registered them.
    "plugin:onnx_transform": Recipe("plugin", ("onnx",), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """The plugin's ONNX transform (ModelProto -> ModelProto), imported from the plugin file."""
    import onnx

    import fuzzconv_plugins_shim

    transform = fuzzconv_plugins_shim.load(PLUGIN, STEP)
    dst = workdir / "transformed.onnx"
    onnx.save(transform(onnx.load(str(src)), **PARAMS), str(dst))
    return dst
''', "onnx", what="a plugin's ONNX transform"),
    "plugin:tvm_transform": Recipe("plugin", ("apache-tvm",), '''
def apply_culprit(src: Path, workdir: Path) -> "tvm.IRModule":
    """The plugin's TVM transform (IRModule -> IRModule), imported from the plugin file."""
    import fuzzconv_plugins_shim

    return fuzzconv_plugins_shim.load(PLUGIN, STEP)(load_relax(src), **PARAMS)
''', "relax", what="a plugin's TVM transform"),
    "plugin:step": Recipe("plugin", (), '''
def apply_culprit(src: Path, workdir: Path) -> Path:
    """The plugin's step function fn(ctx, src, dst, **params), imported from the plugin file."""
    import fuzzconv_plugins_shim

    step = fuzzconv_plugins_shim.load(PLUGIN, STEP)
    dst = workdir / OUTPUT_FILE
    step(fuzzconv_plugins_shim.StepContext(MODEL), src, dst, **PARAMS)
    return dst
''', None, what="a plugin step"),
}

#: Runners for what a plugin ``@step`` writes, by its output format: only formats the libraries
#: read themselves (fuzzconv's relax and torch files need fuzzconv's readers).
PLUGIN_STEP_RUNNERS = {"onnx": "onnx", "tflite": "tflite", "keras": "keras"}

#: ``fuzzconv_plugins_shim.py``: stands in for ``fuzzconv.plugins`` when repro.py imports the
#: bundled plugin file.
PLUGIN_SHIM = '''"""Stands in for fuzzconv.plugins, so that a plugin file imports without fuzzconv.

fuzzconv's decorators register a function as a pipeline step; these only remember it under its
step name, which is all repro.py needs to call it. load() installs this module as
fuzzconv.plugins (under an empty fuzzconv package) before importing the plugin file.
"""

import importlib.util
import sys
import types
from pathlib import Path

STEPS = {}


def _remember(name, **options):
    def deco(fn):
        STEPS[name] = fn
        return fn
    return deco


onnx_transform = tvm_transform = step = runtime = _remember


class StepContext:
    """What a plugin step function may read besides its artifact: the model spec and device."""

    def __init__(self, model, device="cpu", workdir=None):
        self.model, self.device, self.workdir = model, device, workdir

    @property
    def input_shape(self):
        return list(self.model["input_shape"])


def load(path, name):
    """Import the plugin file at path; return the function it registered as step name."""
    package = sys.modules.setdefault("fuzzconv", types.ModuleType("fuzzconv"))
    package.__path__ = getattr(package, "__path__", [])
    package.plugins = sys.modules["fuzzconv.plugins"] = sys.modules[__name__]
    here = str(Path(path).resolve().parent)  # the modules of its own it imports sit beside it
    if here not in sys.path:
        sys.path.insert(0, here)
    spec = importlib.util.spec_from_file_location("bundled_plugin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return STEPS[name]
'''

_HEAD = '''#!/usr/bin/env python3
"""{title}

Standalone reproduction of fuzzconv finding {fid}. It needs Python 3 with {packages} only:

    pip install {pins}
    python repro.py     # REPRODUCED: exit 1; NOT REPRODUCED: exit 0; a package missing: exit 2

{summary}
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

'''

#: repro.py's constants: name, comment, and whether the harness always reads it (else only
#: when the recipe's code does).
_CONSTANTS: list[tuple[str, str, bool]] = [
    ("FINDING", "", True),
    ("SYMPTOM", "", True),
    ("COMPARE", "How actual is judged against expected: the symptom, or \"activation\" for a "
                "reduced subgraph.", True),
    ("CULPRIT", "", True),
    ("STEP", "", False),
    ("PARAMS", "The culprit's parameters, as in the finding's minimal pipeline.", False),
    ("CULPRIT_STAGE", "Where the culprit runs: \"step\" (apply_culprit) or \"run\" (it is the "
                      "runtime: run_output).", True),
    ("ERROR_CLASS", "The error class the finding recorded (crash findings).", True),
    ("INPUT", "The culprit's input.", True),
    ("INPUTS", "What each row of inputs.npy is.", True),
    ("INPUTS_LAYOUT", "inputs.npy holds images in INPUTS_LAYOUT; what apply_culprit returns takes "
                      "OUTPUT_LAYOUT.", True),
    ("OUTPUT_LAYOUT", "", True),
    ("IMAGE_SHAPE", "One image, in the layout the culprit's input takes.", False),
    ("MODEL", "The model as fuzzconv's zoo describes it (what a plugin step's ctx.model holds).",
     False),
    ("PLUGIN", "", False),
    ("OUTPUT_FILE", "", False),
    ("ATOL", "The campaign's tolerances: numeric divergence past ATOL, and past RTOL of the "
             "expected range.", True),
    ("RTOL", "", True),
    ("TIMEOUT_S", "", True),
    ("MODULES", "What must import before anything runs; PINS installs it.", True),
    ("PINS", "", True),
    ("EXIT_MISSING", "The child's exit code when a package is missing.", True),
]


def _constants(values: dict[str, str], body: str) -> str:
    """The constants block: ``NAME = value`` lines (values already Python source)."""
    import re

    lines = []
    for name, comment, always in _CONSTANTS:
        if not always and not re.search(rf"\b{name}\b", body):
            continue
        if comment:
            lines.append(f"#: {comment}")
        lines.append(f"{name} = {values[name]}")
    return "\n".join(lines) + "\n"


_HARNESS = '''

# -- the check ------------------------------------------------------------------------------------
_TRANSPOSE = {("NHWC", "NCHW"): (0, 3, 1, 2), ("NCHW", "NHWC"): (0, 2, 3, 1)}


def to_layout(x: np.ndarray, src: str | None, dst: str | None) -> np.ndarray:
    """A batch moved from layout src to dst (NHWC/NCHW); unchanged when they agree."""
    if src is None or dst is None or src == dst:
        return x
    return np.ascontiguousarray(x.transpose(_TRANSPOSE[(src, dst)]))


def child(stage_file: str, actual_file: str) -> int:
    """Apply the culprit and run the result, writing the stage reached (in a child process)."""
    stage = Path(stage_file)
    stage.write_text("import")
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"cannot import {module} ({exc}): pip install {PINS}", file=sys.stderr)
            return EXIT_MISSING
    x = np.load(HERE / "inputs.npy", allow_pickle=False)
    with tempfile.TemporaryDirectory() as tmp:
        stage.write_text("step")
        model = apply_culprit(INPUT, Path(tmp))
        stage.write_text("run")
        y = run_output(model, to_layout(x, INPUTS_LAYOUT, OUTPUT_LAYOUT))
    np.save(actual_file, np.asarray(y, dtype=np.float32).reshape(len(x), -1), allow_pickle=False)
    stage.write_text("done")
    return 0


def run_child() -> tuple[str, int | None, str, np.ndarray | None]:
    """(stage reached, exit code or None after TIMEOUT_S, its stderr, the outputs it wrote)."""
    with tempfile.TemporaryDirectory() as tmp:
        stage, actual = Path(tmp) / "stage", Path(tmp) / "actual.npy"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(stage), str(actual)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
            code, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code = None
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        reached = stage.read_text() if stage.exists() else "start"
        y = np.load(actual, allow_pickle=False) if code == 0 else None
    return reached, code, err, y


def error_of(code: int | None, err: str) -> str:
    """The error class (a signal name, or the exception's class) and its message."""
    if code is None:
        return f"Timeout: did not finish within {TIMEOUT_S:g} s"
    if code < 0:
        return f"{signal.Signals(-code).name}: killed by a signal"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {code}"


def same_class(error: str) -> bool:
    """Whether the error is of the finding's class (exception names compared unqualified)."""
    return error.split(":", 1)[0].strip().rsplit(".", 1)[-1] == ERROR_CLASS


def compare(expected: np.ndarray, actual: np.ndarray) -> tuple[bool, str]:
    """Print expected against actual per input; whether actual shows the symptom, and why."""
    if expected.shape != actual.shape:
        return False, f"output shape {actual.shape} differs from the expected {expected.shape}"
    finite = np.isfinite(actual).all(axis=1)
    e_top = expected.argmax(axis=1)
    a_top = np.where(np.isfinite(actual), actual, -np.inf).argmax(axis=1)
    diff = np.abs(actual.astype(np.float64) - expected)
    if COMPARE == "activation":
        print(f"{'input':<60} {'max |diff|':>11} {'expected range':>15}")
        for i, name in enumerate(INPUTS):
            print(f"{name:<60} {np.nanmax(diff[i]):>11.4g} {np.ptp(expected[i]):>15.4g}")
    else:
        print(f"{'input':<44} {'expected top-1 (logit)':>24} {'actual top-1 (logit)':>24} "
              f"{'max |diff|':>11}")
        for i, name in enumerate(INPUTS):
            print(f"{name:<44} {f'{e_top[i]} ({expected[i, e_top[i]]:.4f})':>24} "
                  f"{f'{a_top[i]} ({actual[i, a_top[i]]:.4f})':>24} {np.nanmax(diff[i]):>11.4g}")
    n = len(expected)
    if COMPARE == "label_flip":
        changed = int(((e_top != a_top) | ~finite).sum())
        return changed > 0, f"the top-1 label changed on {changed} of {n} inputs"
    if COMPARE == "nan":
        bad = int((~finite & np.isfinite(expected).all(axis=1)).sum())
        return bad > 0, f"{bad} of {n} outputs hold NaN or Inf where the expected ones are finite"
    ok = np.isfinite(diff)
    max_abs = float(diff[ok].max()) if ok.any() else float("inf")
    max_rel = max_abs / (float(np.ptp(expected[np.isfinite(expected)])) or 1.0)
    if COMPARE == "numeric":
        hit = max_abs > ATOL and max_rel > RTOL
        rule = f"> {ATOL:g} and > {RTOL:g} of the expected range"
    else:  # an activation of a reduced subgraph: tolerance relative to the tensor's own range
        hit = max_rel > RTOL and max_abs > ATOL * RTOL
        rule = f"> {RTOL:g} of the expected range and > {ATOL * RTOL:g}"
    return hit, (f"max |actual - expected| = {max_abs:.4g}, {max_rel:.3g} of the expected range "
                 f"(divergent when {rule})")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2])
    print(f"fuzzconv finding {FINDING}: {SYMPTOM} in {CULPRIT}")
    print(f"input artifact: {INPUT.relative_to(HERE)}; {len(INPUTS)} input(s) in inputs.npy")
    reached, code, err, actual = run_child()
    if code == EXIT_MISSING:
        print(err.strip())
        print("CANNOT RUN")
        return 2
    failed = code != 0
    if failed:
        if err.strip():
            print("".join(err.strip().splitlines(keepends=True)[-15:]))
        where = "apply_culprit" if reached == "step" else "run_output"
        print(f"{where} failed: {error_of(code, err)}")
    if SYMPTOM == "timeout":
        reproduced = code is None and reached == CULPRIT_STAGE
    elif SYMPTOM == "crash":
        reproduced = failed and code is not None and reached == CULPRIT_STAGE and same_class(
            error_of(code, err))
        if failed and not reproduced:
            print(f"the finding's error was {ERROR_CLASS} in {CULPRIT}")
        elif not failed:
            print(f"{CULPRIT} ran to completion")
    elif failed:
        reproduced = False
        print(f"that is not the {SYMPTOM} this bundle is about")
    else:
        if "--actual-out" in argv:
            np.save(argv[argv.index("--actual-out") + 1], actual, allow_pickle=False)
        reproduced, why = compare(np.load(HERE / "expected.npy", allow_pickle=False), actual)
        print(why)
    print("REPRODUCED" if reproduced else "NOT REPRODUCED")
    return 1 if reproduced else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

_SYMPTOM_PHRASES = {
    "label_flip": "changes top-1 predictions",
    "numeric": "changes outputs beyond tolerance",
    "crash": "crashes",
    "timeout": "hangs",
    "nan": "produces NaN/Inf outputs",
}

# ================================================================================================
# Building a bundle
# ================================================================================================


class _OutDir:
    """The bundle directory. Every path is resolved (symlinks too) and must stay inside it."""

    #: What a bundle holds; removed before writing so no file of an earlier bundle lingers.
    OWNED = ("README.md", "repro.py", "inputs.npy", "expected.npy", "actual.npy", "finding.json",
             "pipeline.json", "fuzzconv_plugins_shim.py", "input", "plugin")

    def __init__(self, path: Path):
        p = Path(path).expanduser()
        if p.exists() and not p.is_dir():
            raise UsageError(f"bundle output {p} exists and is not a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create bundle directory {p}: {exc.strerror or exc}") from None
        self.root = p.resolve()

    def path(self, rel: str) -> Path:
        target = self.root / rel
        if not target.resolve().is_relative_to(self.root):
            raise UsageError(f"refusing to write {target}: it resolves to {target.resolve()}, "
                             f"outside the bundle directory {self.root}")
        return target

    def clear(self) -> None:
        for name in self.OWNED:
            t = self.path(name)
            if t.is_dir():
                shutil.rmtree(t)
            elif t.exists():
                t.unlink()

    def write_text(self, rel: str, text: str) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def save(self, rel: str, array: np.ndarray) -> Path:
        p = self.path(rel)
        np.save(p, np.asarray(array), allow_pickle=False)
        return p

    def copy(self, src: Path, rel: str) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, p)
        return p


@dataclass
class _Case:
    """Everything about the finding a bundle needs, found once."""

    finding: dict[str, Any]
    ex: Executor
    spec: ModelSpec
    pipeline: Pipeline
    index: int  # 1-based culprit index; len(steps) + 1 for the runtime
    element: Step
    op: Operation
    recipe: Recipe
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

    @property
    def runner_key(self) -> str:
        if self.recipe.runner is not None:
            return self.recipe.runner
        runner = PLUGIN_STEP_RUNNERS.get(self.op.dst or "")
        if runner is None:
            raise UsageError(f"{self.op.name} writes {self.op.dst} artifacts, which only fuzzconv "
                             f"reads; a standalone bundle supports plugin steps that write "
                             f"{', '.join(PLUGIN_STEP_RUNNERS)}")
        return runner


@dataclass
class _Variant:
    """One way of bundling the case: the full input artifact, or the reduced subgraph.

    Args:
        input_files: what goes into ``input/``; the first is the artifact's main file.
        inputs: the bundled inputs (images preprocessed for the model, or an activation).
        input_names: one name per input row, for the printouts.
        expected: outputs before the culprit (None for crash and timeout findings).
        inputs_layout: the layout of ``inputs`` (None: feed as they are).
        input_layout: the layout the culprit's input takes.
        output_layout: the layout what the culprit makes takes.
        compare: how repro.py judges (the symptom, or ``activation``).
        note: a paragraph for the README.
        loaders: code defining ``load_relax`` / ``load_torch`` for the input artifact.
        loader_packages: distributions that code imports.
    """

    input_files: list[Path]
    inputs: np.ndarray
    input_names: list[str]
    expected: np.ndarray | None
    inputs_layout: str | None
    input_layout: str | None
    output_layout: str | None
    compare: str
    note: str = ""
    loaders: list[str] = field(default_factory=list)
    loader_packages: tuple[str, ...] = ()

    @property
    def input_file(self) -> str:
        return self.input_files[0].name


def write_bundle(store: Path, finding_id: str, out_dir: Path, plugins: list[Path] | tuple = (),
                 *, verify: bool = True, say: Callable[[str], None] = lambda s: None) -> Path:
    """Write the standalone bug case of a stored finding to ``out_dir``.

    Args:
        store: the store directory.
        finding_id: a finding ID or unique prefix.
        out_dir: the bundle directory (created; an existing file is refused).
        plugins: plugin files the finding's pipeline uses.
        verify: run the bundle's ``repro.py`` once (with this interpreter, which has the culprit's
            libraries) and record its output in the README. Defaults to True.
        say: progress messages.

    Returns:
        The bundle directory, resolved. The finding's ``bundle`` field is set to it.
    """
    with finding_session(store, finding_id, plugins, say) as (ex, db, f, _cfg, _corpus):
        case = _plan(ex, db, f)
        out = _OutDir(out_dir)
        variant, run = None, None
        reduced = _reduced_variant(case, say)
        if reduced is not None:
            run = _assemble(out, case, reduced, verify, say)
            if run is None or run[0] == 1:
                variant = reduced
            else:
                say("the reduced subgraph does not reproduce on its own; bundling the full model")
        if variant is None:
            variant = _full_variant(case, say)
            if reduced is not None:
                variant.note = ("The finding's reduced ONNX subgraph did not reproduce on its own "
                                "with the plainest runtime, so the full input artifact is bundled.")
            run = _assemble(out, case, variant, verify, say)
        out.write_text("README.md", _readme(case, variant, run, _recorded(out)))
        db.set_finding_status(f["id"], f["status"], {"bundle": str(out.root)})
        out.write_text("finding.json", json.dumps(db.finding(f["id"]), indent=2, sort_keys=True,
                                                  default=str) + "\n")
    return out.root


# -- planning -------------------------------------------------------------------------------------
def _plan(ex: Executor, db: Store, f: dict[str, Any]) -> _Case:
    from ..corpora import select

    if f["symptom"] == "slowdown":
        raise UsageError(f"{f['id']} is a slowdown: a standalone bundle reproduces wrong outputs, "
                         "crashes and hangs, not timings (use fuzzconv repro)")
    camp = db.campaign(f["campaign"])
    cfg = HuntConfig(**camp["config"])
    reg = ex.registry
    pipeline = Pipeline.from_dict(f.get("minimal_pipeline") or f["pipeline"], reg)
    if pipeline.device != "cpu":
        raise UsageError(f"{f['id']} ran on {pipeline.device}; bundles reproduce on the CPU only")
    index = _culprit_index(pipeline, f)
    element = pipeline.steps[index - 1] if index <= len(pipeline.steps) else pipeline.runtime
    op = reg.get(element.name)
    return _Case(f, ex, get_model(pipeline.model), pipeline, index, element, op, _recipe_of(op),
                 select(cfg.images_dir, cfg.images or None), Thresholds(**cfg.thresholds))


def _culprit_index(p: Pipeline, f: dict[str, Any]) -> int:
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


def _recipe_of(op: Operation) -> Recipe:
    if op.is_plugin:
        # onnx_transform / tvm_transform register a wrapper defined in fuzzconv.plugins.
        wrapped = op.fn.__module__ == "fuzzconv.plugins"
        key = {"onnx": "plugin:onnx_transform", "relax": "plugin:tvm_transform"}.get(
            op.src, "plugin:step") if wrapped else "plugin:step"
    else:
        key = op.name
    if key not in RECIPES:
        raise UsageError(f"no standalone recipe for {op.name} (known: "
                         f"{', '.join(k for k in RECIPES if not k.startswith('plugin:'))} and "
                         "plugin steps)")
    return RECIPES[key]


# -- variants -------------------------------------------------------------------------------------
def _full_variant(case: _Case, say: Callable[[str], None]) -> _Variant:
    """The culprit's input artifact from the cache, inputs where the culprit shows the symptom."""
    from ..shrink.localize import probe

    ex, spec, p, f = case.ex, case.spec, case.pipeline, case.finding
    reg = ex.registry
    failing = [case.corpus.names.index(n) for n in f.get("failing_inputs") or []
               if n in case.corpus.names]
    before = None
    if f["symptom"] in ("crash", "timeout"):
        indices = failing[:1] or [0]
    else:
        before = probe(reg, p, case.index - 1, spec.source)
        if before is None:
            raise UsageError(f"the input of {case.label} ({case.input_format}) has no runtime to "
                             "compute the expected outputs with")
        # The culprit applied, then the plainest completion: what the culprit search judged.
        after = (probe(reg, p, case.index, spec.source) if case.op.kind == "step" else None) or p
        say(f"evaluating the culprit's input and output on {len(case.corpus)} images")
        indices = _pick_inputs(f["symptom"], _logits(ex, before, case.corpus),
                               _logits(ex, after, case.corpus, missing_ok=True), failing)
    subset = case.corpus.subset(indices)
    calibration = ex.calibration_inputs(spec) if ex.weights == "calibrated" else None
    ev = Evaluation(p, None)
    art = ex.artifact(p, case.index - 1, ev, calibration=calibration)
    if art is None:
        raise UsageError(f"the input artifact of {case.label} cannot be made: "
                         f"{ev.failure.error_class if ev.failure else 'unknown'}")
    layout = _artifact_layout(case, art)
    files = [art] + sorted(x for x in art.parent.iterdir()
                           if x.is_file() and x not in (art, art.parent / "meta.json"))
    variant = _Variant(
        input_files=files, inputs=np.load(ex.inputs(spec, subset), allow_pickle=False),
        input_names=list(subset.names),
        expected=None if before is None else _logits(ex, before, subset),
        inputs_layout=spec.layout, input_layout=layout,
        output_layout=_output_layout(case, layout), compare=f["symptom"])
    _add_loaders(case, art, variant)
    return variant


def _reduced_variant(case: _Case, say: Callable[[str], None]) -> _Variant | None:
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
    symptom = case.finding["symptom"]
    expected = None
    if symptom not in ("crash", "timeout"):
        say("running the reduced subgraph with the plainest ONNX runtime")
        try:
            expected = _run_file(case, path, feed_file, feed)
        except WorkerFailure as exc:
            say(f"the reduced subgraph does not run on its own ({exc}); bundling the full model")
            return None
    image = (red.get("image") or ["?"])[0]
    tensor = (red.get("inputs") or ["input"])[0]
    return _Variant(
        input_files=[path], inputs=feed, input_names=[f"{tensor} @ {image}"] * len(feed),
        expected=expected, inputs_layout=None, input_layout=None, output_layout=None,
        compare=symptom if symptom in ("crash", "timeout") else "activation",
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


def _pick_inputs(symptom: str, ref: np.ndarray, got: np.ndarray | None,
                 failing: list[int]) -> list[int]:
    """Images on which the culprit's output differs from its input the way the symptom says,
    the finding's minimal inputs first."""
    if got is None or got.shape != ref.shape:
        return failing[:MAX_INPUTS] or [0]
    finite = np.isfinite(got).all(axis=1)
    if symptom == "label_flip":
        got_top = top_k(np.where(finite[:, None], got, -np.inf), 1)[:, 0]
        shows = np.flatnonzero((top_k(ref, 1)[:, 0] != got_top) | ~finite)
    elif symptom == "nan":
        shows = np.flatnonzero(~finite)
    else:  # numeric: the largest differences
        diff = np.where(finite[:, None], np.abs(got.astype(np.float64) - ref), 0.0).max(axis=1)
        shows = np.argsort(-diff, kind="stable")[:2]
    shows_set = {int(i) for i in shows}
    picked = [i for i in failing if i in shows_set]
    picked += [int(i) for i in shows if int(i) not in failing]
    return picked[:MAX_INPUTS] or failing[:MAX_INPUTS] or [0]


def _run_file(case: _Case, artifact: Path, inputs_file: Path, inputs: np.ndarray) -> np.ndarray:
    """The plainest ONNX runtime on an ONNX file outside the cache (the reduced subgraph)."""
    from ..shrink.localize import plainest_runtime

    ex = case.ex
    rt = plainest_runtime(ex.registry, "onnx")
    assert rt is not None
    op = ex.registry.get(rt.name, "runtime")
    with tempfile.TemporaryDirectory(dir=ex.store_dir) as tmp:
        out = Path(tmp) / "outputs.npy"
        ex.pool.request(op.family, RunRequest(
            rt.name, rt.params, str(artifact), str(inputs_file), str(out),
            {**case.spec.to_dict(), "input_shape": list(inputs.shape[1:])},
            batch_size=max(ex.batch_size, len(inputs))), timeout=ex.timeout_for(rt.name))
        return np.load(out, allow_pickle=False)


def _artifact_layout(case: _Case, art: Path) -> str:
    """The layout the culprit's input artifact takes (recorded beside or inside it)."""
    from ..formats.layout import read_input_layout
    from ..formats.torch import module_input_layout
    from ..shrink.chain import worker_call

    fmt, model_layout = case.input_format, case.spec.layout
    if fmt in ("relax", "tvm"):
        return read_input_layout(art.parent) or model_layout
    if fmt == "torch":
        return module_input_layout(art, model_layout)
    if fmt == "onnx":
        return worker_call(case.ex, onnx_layout, "ort", path=str(art)) or model_layout
    return model_layout


def _output_layout(case: _Case, input_layout: str) -> str:
    # keras.tf2onnx(inputs_as_nchw=True) is the one step that changes the layout a model takes.
    if case.element.name == "keras.tf2onnx" and case.element.params.get("inputs_as_nchw"):
        return "NCHW"
    return input_layout


def _add_loaders(case: _Case, art: Path, variant: _Variant) -> None:
    """``load_relax`` / ``load_torch`` for an input in fuzzconv's relax or torch format."""
    from ..formats.torch import read_manifest

    if case.input_format == "relax":
        variant.loaders.append(RELAX_LOADER)
    elif case.input_format == "torch":
        manifest = read_manifest(art)
        if manifest["kind"] == "onnx2torch":
            variant.loaders.append(TORCH_ONNX2TORCH_LOADER)
            variant.loader_packages = ("onnx2torch", "onnx")
        else:
            code, packages = _torch_zoo_loader(manifest["architecture"])
            variant.loaders.append(code)
            variant.loader_packages = packages


def _torch_zoo_loader(architecture: str) -> tuple[str, tuple[str, ...]]:
    """``load_torch`` for a zoo artifact: the architecture's own source, then its weights."""
    import inspect

    from ..zoo.torch_architectures import ARCHITECTURES

    fn = ARCHITECTURES[architecture]
    source = inspect.getsource(fn)
    packages = ("torch", "torchvision") if "torchvision" in source else ("torch",)
    return "\n" + source + "\n" + _TORCH_ZOO_LOADER.format(function=fn.__name__), packages


# -- writing --------------------------------------------------------------------------------------
def _packages(case: _Case, variant: _Variant) -> list[str]:
    runner = RUNNERS[case.runner_key]
    seen: list[str] = []
    for d in ("numpy", *case.recipe.packages, *runner.packages, *variant.loader_packages):
        if d not in seen:
            seen.append(d)
    return seen


def _pins(case: _Case, packages: list[str]) -> str:
    versions = case.finding.get("versions") or {}
    out = []
    for d in packages:
        v = versions.get(DISTRIBUTIONS[d][1])
        out.append(f"{d}=={v}" if v else d)
    return " ".join(out)


def _title(case: _Case) -> str:
    what = case.recipe.what
    if case.recipe.project == "plugin":
        what = f"plugin step {case.op.name}"
    return (f"{what[:1].upper()}{what[1:]} {_SYMPTOM_PHRASES[case.finding['symptom']]} "
            f"({case.label}, {case.spec.name})")


def _assemble(out: _OutDir, case: _Case, variant: _Variant, verify: bool,
              say: Callable[[str], None]) -> tuple[int, str] | None:
    """Write repro.py and its data; run it when ``verify``. Returns (exit code, stdout)."""
    f = case.finding
    out.clear()
    for src in variant.input_files:
        out.copy(src, f"input/{src.name}")
    out.save("inputs.npy", variant.inputs.astype(np.float32))
    if variant.expected is not None:
        out.save("expected.npy", np.asarray(variant.expected, dtype=np.float32))
    plugin = "None"
    if case.op.is_plugin:
        name = Path(case.op.source_file or "plugin.py").name
        for rel, source in plugin_files(case.op.source_file or ""):  # with the helpers it imports
            out.copy(source, f"plugin/{rel}")
        out.write_text("fuzzconv_plugins_shim.py", PLUGIN_SHIM)
        plugin = f"HERE / 'plugin' / {name!r}"
    packages = _packages(case, variant)
    pins = _pins(case, packages)
    runner = RUNNERS[case.runner_key]
    failure = f.get("failure") or {}
    shape = list(case.spec.input_shape)
    if variant.input_layout and variant.input_layout != case.spec.layout:
        perm = {("NHWC", "NCHW"): (2, 0, 1), ("NCHW", "NHWC"): (1, 2, 0)}[(case.spec.layout,
                                                                         variant.input_layout)]
        shape = [shape[i] for i in perm]
    summary = textwrap.fill(
        f"It loads the artifact in input/, applies {case.label} to it ({case.recipe.what}) the "
        "way the library's users do, runs the result on inputs.npy and compares with "
        "expected.npy: what the same inputs gave before this step. The step runs in a child "
        "process, so a crash (even a segfault) is observed.", 96)
    head = _HEAD.format(title=_title(case), fid=f["id"], packages=", ".join(packages), pins=pins,
                        summary=summary)
    code = "\n\n\n".join(part.strip("\n") for part in (*variant.loaders, case.recipe.apply,
                                                        runner.code))
    values = {
        "FINDING": repr(f["id"]), "SYMPTOM": repr(f["symptom"]), "COMPARE": repr(variant.compare),
        "CULPRIT": repr(case.label), "STEP": repr(case.element.name),
        "PARAMS": repr(case.element.params), "CULPRIT_STAGE": repr(case.recipe.stage),
        "ERROR_CLASS": repr(failure.get("error_class")),
        "INPUT": f"HERE / 'input' / {variant.input_file!r}", "INPUTS": repr(variant.input_names),
        "INPUTS_LAYOUT": repr(variant.inputs_layout), "OUTPUT_LAYOUT": repr(variant.output_layout),
        "IMAGE_SHAPE": repr(shape), "MODEL": repr(case.spec.to_dict()), "PLUGIN": plugin,
        "OUTPUT_FILE": repr(ARTIFACT_FILE.get(case.op.dst or "", "")),
        "ATOL": repr(case.thresholds.atol), "RTOL": repr(case.thresholds.rtol),
        "TIMEOUT_S": repr(float(case.ex.timeout_for(case.element.name))),
        "MODULES": repr([DISTRIBUTIONS[d][0] for d in packages]), "PINS": repr(pins),
        "EXIT_MISSING": repr(EXIT_MISSING)}
    body = _constants(values, code) + "\n\n" + code + "\n\n\n" + _HARNESS.lstrip("\n")
    out.write_text("repro.py", head + body)
    out.write_text("pipeline.json", json.dumps(case.pipeline.to_dict(), indent=2) + "\n")
    if not verify or f["symptom"] == "timeout":
        return None
    say("checking the bundle: python repro.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    limit = case.ex.timeout_for(case.element.name) + 600
    try:
        proc = subprocess.run([sys.executable, str(out.path("repro.py")), "--actual-out",
                               str(out.path("actual.npy"))], cwd=out.root, env=env,
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return -1, f"repro.py did not finish within {limit:g} s"
    return proc.returncode, proc.stdout


def _recorded(out: _OutDir) -> np.ndarray | None:
    """The outputs repro.py recorded when the bundle was checked, if it got that far."""
    p = out.path("actual.npy")
    return np.load(p, allow_pickle=False) if p.exists() else None


# -- the issue text -------------------------------------------------------------------------------
def _readme(case: _Case, variant: _Variant, run: tuple[int, str] | None,
            actual: np.ndarray | None) -> str:
    f, spec, p = case.finding, case.spec, case.pipeline
    project, url = PROJECTS[case.recipe.project]
    packages = _packages(case, variant)
    versions = f.get("versions") or {}
    L: list[str] = [f"# {_title(case)}", ""]
    before = p.steps[:case.index - 1]
    made = (" → ".join(s.label() for s in before) if before else "nothing (the source model)")
    where = ("the runtime" if case.recipe.stage == "run" else f"step {case.index} of "
             f"{len(p.steps)}")
    L.append(f"Applying {case.recipe.what} — `{case.label}`, {where} of the pipeline "
             f"`{p.label()}` — {_SYMPTOM_PHRASES[f['symptom']]} of the image classifier "
             f"`{spec.name}` ({spec.source} source, input {'×'.join(map(str, spec.input_shape))} "
             f"{spec.layout}, {spec.classes} classes). Its input is the model after {made}; "
             f"`input/{variant.input_file}` is that artifact, so `repro.py` starts right before "
             "the culprit.")
    L.append("")
    if case.recipe.project == "plugin":
        plugin = Path(case.op.source_file or "").name
        L.append(f"**Report to:** the author of the plugin `{plugin}` (step `{case.op.name}`).")
    else:
        L.append(f"**Report to:** {project}" + (f" — {url}" if url else "") + ".")
    L.append(f"**Found by:** fuzzconv {versions.get('fuzzconv', '?')}, finding `{f['id']}`, "
             f"campaign `{f.get('campaign')}`, signature `{f['signature']}`.")
    L += ["", "## Environment", "", "| package | version |", "|---|---|"]
    for d in ("python", *packages):
        key = DISTRIBUTIONS[d][1] if d in DISTRIBUTIONS else d
        L.append(f"| {d} | {versions.get(key, '?')} |")
    now = stack_versions()
    changed = {k: (v, now.get(k)) for k, v in versions.items() if now.get(k) != v}
    L.append("")
    L.append("Whole stack when found: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    if changed:
        L.append("Bundled on a different stack: " + ", ".join(
            f"{k} {a} → {b or 'absent'}" for k, (a, b) in changed.items()) + ".")
    L += ["", "## Steps to reproduce", "", "```sh", "python -m venv venv && . venv/bin/activate",
          f"pip install {_pins(case, packages)}", "python repro.py", "```", ""]
    runner = RUNNERS[case.runner_key]
    if case.recipe.stage == "run":
        how = f"runs `input/{variant.input_file}` with {runner.label}"
    else:
        how = (f"applies `{case.label}` to `input/{variant.input_file}` as below, runs the "
               f"result with {runner.label}")
    L.append(f"`repro.py` (numpy and the packages above only; no fuzzconv) {how} on "
             f"`inputs.npy` ({_describe_inputs(variant)}) and compares with `expected.npy`. It "
             "prints `REPRODUCED` and exits 1 while the bug is there, `NOT REPRODUCED` and exits 0 "
             "once it is fixed (2: a package is missing). The culprit, as `repro.py` applies it:")
    shown = case.recipe.apply if case.recipe.stage == "step" else runner.code
    L += ["", "```python", shown.strip(), "```", ""]
    L += ["## Expected vs actual", ""]
    L += _expected_vs_actual(case, variant, actual)
    L += ["", "## How often", ""]
    L += _how_often(case)
    if variant.note:
        L += ["", variant.note]
    L += ["", "## Bundle contents", ""]
    L += _contents(case, variant)
    L += ["", "## Checked when bundled", ""]
    if run is None:
        L.append("`repro.py` was not run when the bundle was written"
                 + (" (a hang takes its full timeout)." if f["symptom"] == "timeout" else "."))
    else:
        verdict = {1: "reproduced", 0: "did not reproduce",
                   2: "could not run"}.get(run[0], "failed")
        used = ", ".join(f"{d} {now.get(DISTRIBUTIONS[d][1], '?')}" for d in packages)
        L.append(f"On {time.strftime('%Y-%m-%d %H:%M')} with fuzzconv's interpreter ({used}), "
                 f"`python repro.py` {verdict} (exit {run[0]}):")
        L += ["", "```", run[1].strip()[-4000:], "```"]
    return "\n".join(L) + "\n"


def _describe_inputs(variant: _Variant) -> str:
    shape = "×".join(map(str, variant.inputs.shape))
    if variant.inputs_layout is None:
        return f"a recorded activation, {shape}"
    names = ", ".join(f"`{n}`" for n in variant.input_names)
    return f"{len(variant.inputs)} image(s), {shape} {variant.inputs_layout} float32: {names}"


def _expected_vs_actual(case: _Case, variant: _Variant, actual: np.ndarray | None) -> list[str]:
    f = case.finding
    if f["symptom"] in ("crash", "timeout"):
        fail = f.get("failure") or {}
        L = [f"Expected: `{case.label}` completes. Actual: it "
             + ("hangs" if f["symptom"] == "timeout" else "fails")
             + f" with `{fail.get('error_class', '?')}`"
             + (f" at {fail.get('stage')}" if fail.get("stage") else "") + ":", "",
             "```", (fail.get("message") or "").strip()[:1500], "```"]
        tail = (fail.get("stderr_tail") or "").strip()
        if tail:
            L += ["", "Last lines of its stderr:", "", "```", tail[-1500:], "```"]
        return L
    if variant.compare == "activation":
        L = ["Expected (`expected.npy`): the reduced subgraph run by ONNX Runtime with default "
             "options — what the recorded activation gave before the step. Actual "
             "(`actual.npy`): after it."]
    else:
        L = [f"Expected (`expected.npy`): `input/{variant.input_file}` run by the plainest "
             "runtime of its format — what the same inputs gave before the step. Actual "
             "(`actual.npy`): after it."]
    exp = variant.expected
    if actual is None or exp is None or actual.shape != exp.shape:
        return L + ["", "(no actual outputs were recorded: see the check below)"]
    if variant.compare == "activation":
        L += ["", "| input | max abs diff | expected range | max abs diff / range |",
              "|---|---|---|---|"]
        for i, name in enumerate(variant.input_names):
            diff = float(np.nanmax(np.abs(actual[i].astype(np.float64) - exp[i])))
            span = float(np.ptp(exp[i])) or 1.0
            L.append(f"| `{name}` | {diff:.4g} | {span:.4g} | {diff / span:.3g} |")
        return L
    L += ["", "| input | expected top-5 (logit) | actual top-5 (logit) | max abs diff |",
          "|---|---|---|---|"]
    e5, a5 = top_k(exp), top_k(np.where(np.isfinite(actual), actual, -np.inf))
    for i, name in enumerate(variant.input_names):
        expected_cells = ", ".join(f"{int(j)} ({exp[i, j]:.3f})" for j in e5[i])
        actual_cells = ", ".join(f"{int(j)} ({actual[i, j]:.3f})" for j in a5[i])
        diff = np.abs(actual[i].astype(np.float64) - exp[i])
        L.append(f"| `{name}` | {expected_cells} | {actual_cells} | {np.nanmax(diff):.4g} |")
    return L


def _how_often(case: _Case) -> list[str]:
    f = case.finding
    cmp = f.get("comparison") or {}
    minimal = Pipeline.from_dict(f.get("minimal_pipeline") or f["pipeline"], case.ex.registry)
    L = []
    if f.get("flip_rate") is not None:
        flips = f.get("flipping_images", cmp.get("flips"))
        ties = f" ({f['tie_flips']} more flips were near-ties)" if f.get("tie_flips") else ""
        L.append(f"On the campaign's {f['images']} images the pipeline as found flipped the top-1 "
                 f"label on {flips}: flip rate **{f['flip_rate']:.1%}**{ties}.")
        if cmp:
            L.append(f"Max |Δlogit| {cmp.get('max_abs_diff', float('nan')):.4g}, top-5 agreement "
                     f"{cmp.get('top5_agreement', float('nan')):.3f}, Kendall τ "
                     f"{cmp.get('kendall_tau', float('nan')):.3f}, NaN/Inf outputs "
                     f"{cmp.get('nan', 0)}.")
    else:
        L.append(f"`{f['symptom']}` on the campaign's corpus ({f['images']} images): the step "
                 "fails whatever the images.")
    L.append(f"Minimal pipeline: `{minimal.label()}`; seen {f.get('hits', 1)} time(s) in the "
             "campaign" + ("; **flaky**: reruns disagreed" if f.get("flaky") else "") + ".")
    if f.get("fix_hint"):
        L.append(f"Nearest agreeing configuration: {f['fix_hint']}.")
    if f.get("first_divergent_node"):
        L.append(f"First divergent node: `{f['first_divergent_node']}`.")
    path = f.get("node_errors") or []
    if path:
        L += ["", "| node | max abs error | diverges |", "|---|---|---|"]
        for n in path:
            err = n.get("max_abs")
            L.append(f"| `{n.get('node')}` | {'—' if err is None else f'{err:.3g}'} | "
                     f"{'yes' if n.get('diverges') else 'no'} |")
    return L


def _contents(case: _Case, variant: _Variant) -> list[str]:
    what = ("the reduced subgraph" if variant.inputs_layout is None
            else "the culprit's input artifact")
    extra = ", with the files it refers to" if len(variant.input_files) > 1 else ""
    L = [f"- `repro.py` — the reproduction; `input/` — {what} (`{variant.input_file}`{extra})",
         "- `inputs.npy`, `expected.npy`, `actual.npy` — the inputs, the outputs before the "
         "step, the outputs after it (as recorded when bundled): plain `.npy`, loaded with "
         "`allow_pickle=False`",
         "- `finding.json`, `pipeline.json` — the finding and its minimal pipeline as fuzzconv "
         "stores them"]
    if case.op.is_plugin:
        name = Path(case.op.source_file or "").name
        helpers = [f"`plugin/{rel}`" for rel, _ in plugin_files(case.op.source_file or "")[1:]]
        L.append(f"- `plugin/{name}` — the plugin file that defines `{case.op.name}`, as it was "
                 "loaded" + (f", beside the modules of its own it imports ({', '.join(helpers)})"
                             if helpers else "") +
                 ". It imports `fuzzconv.plugins`; `fuzzconv_plugins_shim.py` stands in "
                 "for it (its decorators only remember each function under its step name), so "
                 "`repro.py` imports the plugin without fuzzconv.")
    return L


# -- worker side ----------------------------------------------------------------------------------
@worker_function
def onnx_layout(path: str) -> str | None:
    """Worker op (ort worker): the input layout a step recorded in an ONNX file, or None."""
    import onnx

    from ..formats.layout import onnx_input_layout

    return onnx_input_layout(onnx.load(path, load_external_data=False))
