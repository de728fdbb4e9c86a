"""The 2022 paper's sensitivity study, repeated on this stack with repeated, honest timing.

Louloudakis et al. (2022), "Exploring Effects of Computational Parameter Changes to Image
Recognition Systems", ran MobileNetV2, ResNet101V2, DenseNet121 and InceptionV3 under different
frameworks, converters, TVM optimization levels and devices, and reported that top-1 labels changed
for up to 57 % of the images with the framework, did not change with optimization levels or
devices, and that inference time changed with everything. Their scripts timed each image once.

:func:`run_study` evaluates a fixed list of configurations (:func:`configurations`) per model, each
one a :class:`~fuzzconv.pipeline.Pipeline` run through the session's executor, so every artifact and
every output is cached and a rerun recomputes only the timing. Three experiments:

1. framework and conversion: the Keras model against TFLite (fp32, dynamic-range, float16),
   ONNX Runtime, onnx2torch and TVM, and its PyTorch twin (a ``torch:`` zoo model) against ONNX
   Runtime, TVM and onnx2torch. Twin paths are compared with the twin's own source;
2. compiler and runtime optimizations: TVM ``opt_level`` 0-4 and every pass disabled that can be
   (:func:`tvm_disable_plan`), ONNX Runtime graph-optimization levels, torch.compile, Keras XLA;
3. devices: every configuration whose steps and runtime run on CUDA, on CUDA too, when a GPU is
   present; otherwise each table says "not measured".

Timing runs in the workers after the labelled run: ``repeats`` timed passes over the first batch
and over each of its images alone, after a warm-up, with the thread count pinned in every
framework; the median gets a seeded 95 % bootstrap confidence interval, and a configuration whose
interval is wider than :data:`CI_GOAL` of its median is flagged.

The outputs (``labels.csv``, ``timing.csv``, ``study.json``, ``study.md`` and PNG plots) are written
by :func:`write_outputs`; matplotlib runs in this process with the Agg backend (it imports no
deep-learning framework). Functions that need TVM (:func:`tvm_disable_plan`) or report a
framework's thread settings (:func:`thread_report`) run inside a worker through op ``call``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .cache import cache_home
from .errors import UsageError
from .executor import Evaluation, Executor
from .oracle import compare
from .pipeline import DEVICES, Pipeline, device_available
from .protocol import Call, RunRequest, worker_function
from .registry import FAMILIES
from .workers import WorkerFailure
from .zoo import get_model

#: The paper's four models, Keras as source.
PAPER_MODELS = ("mobilenetv2", "resnet101v2", "densenet121", "inceptionv3")
#: Each Keras model's PyTorch twin: the same architecture in torchvision (different weights).
TWINS = {
    "mobilenetv2": "torch:mobilenet_v2",
    "resnet101v2": "torch:resnet101",
    "densenet121": "torch:densenet121",
    "inceptionv3": "torch:inception_v3",
    "tiny_keras": "tiny_torch",
}
#: The paper's headline: the share of images whose top-1 label changed with the framework.
PAPER_MAX_FRAMEWORK_CHANGE = 57.0
#: The timing goal: the 95 % CI half-width of a median at most this share of the median.
CI_GOAL = 0.02
#: Below this ratio of slowest to fastest median, a timing difference is called negligible.
TIME_EFFECT = 1.05
BOOTSTRAP_RESAMPLES = 4000
NOT_MEASURED = "not measured"
NOT_APPLICABLE = "not applicable"  # a step or the runtime does not run on that device
#: Environment variables that fix each framework's intra-op thread count in its worker.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TVM_NUM_THREADS")


# -- configurations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One column of the study: a chain of steps and a runtime, applied to a model or its twin.

    Args:
        key: the column name (``onnx-tvm``, ``tvm-O2``, ...).
        experiment: ``framework`` or ``optimization``.
        side: ``keras`` (the model itself) or ``twin`` (its PyTorch twin).
        title: what the configuration is, in words.
        steps: (step, params) pairs.
        runtime: (runtime, params).
        baseline: the key of the configuration its labels are compared with (its side's source).
        reduced_precision: True when the conversion changes the arithmetic on purpose
            (quantization, float16), False for an fp32 path that should keep the labels.
    """

    key: str
    experiment: str
    side: str
    title: str
    steps: tuple[tuple[str, dict[str, Any]], ...]
    runtime: tuple[str, dict[str, Any]]
    baseline: str
    reduced_precision: bool = False


_ONNX = ("keras.tf2onnx", {})
_TWIN_ONNX = ("torch.onnx_export", {})
_TO_TVM = ("onnx.tvm", {})


def configurations(threads: int, disabled_passes: Sequence[str]) -> list[Config]:
    """Every configuration of the study, in table order.

    Args:
        threads: the intra-op thread count given to the runtimes that take one (ONNX Runtime,
            TFLite); the others get it from the environment (see :data:`THREAD_ENV`).
        disabled_passes: the TVM passes the ``tvm-disabled`` configuration turns off.
    """
    ort = ("ort", {"threads": threads})
    tflite = ("tflite", {"threads": threads})
    tvm_rt = ("tvm", {})
    k, t = "keras", "twin-torch"
    out = [
        Config("keras", "framework", "keras", "Keras 3 (source, eager)", (), ("keras", {}), k),
        Config("tflite", "framework", "keras", "Keras → TFLite fp32",
               (("keras.tflite", {}),), tflite, k),
        Config("tflite-dynamic", "framework", "keras",
               "Keras → TFLite, Optimize.DEFAULT (dynamic-range int8 weights)",
               (("keras.tflite", {"optimizations": ["DEFAULT"]}),), tflite, k, True),
        Config("tflite-fp16", "framework", "keras", "Keras → TFLite, Optimize.DEFAULT + float16",
               (("keras.tflite", {"optimizations": ["DEFAULT"], "supported_types": ["float16"]}),),
               tflite, k, True),
        Config("onnx-ort", "framework", "keras", "Keras → ONNX (tf2onnx) → ONNX Runtime",
               (_ONNX,), ort, k),
        Config("onnx-torch", "framework", "keras", "Keras → ONNX → onnx2torch → PyTorch eager",
               (_ONNX, ("onnx.onnx2torch", {})), ("torch", {}), k),
        Config("onnx-tvm", "framework", "keras",
               "Keras → ONNX → TVM Relax (tvm.compile defaults: opt_level 3, default pipeline)",
               (_ONNX, _TO_TVM, ("tvm.build", {})), tvm_rt, k),
        Config("twin-torch", "framework", "twin", "PyTorch twin (source, eager)", (), ("torch", {}), t),
        Config("twin-onnx-ort", "framework", "twin", "PyTorch → ONNX (torch.onnx) → ONNX Runtime",
               (_TWIN_ONNX,), ort, t),
        Config("twin-onnx-tvm", "framework", "twin", "PyTorch → ONNX → TVM Relax (defaults)",
               (_TWIN_ONNX, _TO_TVM, ("tvm.build", {})), tvm_rt, t),
        Config("twin-onnx-torch", "framework", "twin", "PyTorch → ONNX → onnx2torch → PyTorch",
               (_TWIN_ONNX, ("onnx.onnx2torch", {})), ("torch", {}), t),
    ]
    # Opt levels under the target's full Relax pipeline (constant folding, fusion): under
    # tvm.compile's default CPU pipeline every pass is registered at opt_level 0, so the level
    # selects nothing there (see tvm_disable_plan's pass levels).
    for level in range(5):
        out.append(Config(f"tvm-O{level}", "optimization", "keras",
                          f"Keras → ONNX → TVM, target pipeline, opt_level {level}",
                          (_ONNX, _TO_TVM, ("tvm.build", {"opt_level": level,
                                                          "relax_pipeline": "target"})), tvm_rt, k))
    out.append(Config("tvm-disabled", "optimization", "keras",
                      f"Keras → ONNX → TVM, target pipeline, opt_level 3, "
                      f"{len(disabled_passes)} passes disabled",
                      (_ONNX, _TO_TVM, ("tvm.build", {"opt_level": 3, "relax_pipeline": "target",
                                                      "disabled_passes": list(disabled_passes)})),
                      tvm_rt, k))
    for level in ("disable", "basic", "extended"):
        out.append(Config(f"ort-{level}", "optimization", "keras",
                          f"Keras → ONNX → ONNX Runtime, graph optimization {level}",
                          (_ONNX,), ("ort", {"threads": threads,
                                             "graph_optimization_level": level}), k))
    out.append(Config("keras-xla", "optimization", "keras", "Keras under XLA (jit_compile)", (),
                      ("keras", {"jit_compile": True}), k))
    out.append(Config("twin-compile", "optimization", "twin", "PyTorch twin under torch.compile",
                      (), ("torch", {"compile": True}), t))
    return out


#: Columns of the optimization tables: (config key, header). ``onnx-ort`` is ORT's level "all".
OPT_TABLES = {
    "TVM opt_level (target pipeline) and all passes disabled":
        [(f"tvm-O{i}", f"O{i}") for i in range(5)] + [("tvm-disabled", "disabled")],
    "ONNX Runtime graph optimization level":
        [("ort-disable", "disable"), ("ort-basic", "basic"), ("ort-extended", "extended"),
         ("onnx-ort", "all")],
    "Eager vs compiled":
        [("keras", "Keras eager"), ("keras-xla", "Keras XLA"), ("twin-torch", "torch eager"),
         ("twin-compile", "torch.compile")],
}


# -- what runs inside workers --------------------------------------------------------------------
# Passes of the target's Relax pipeline that lower the program: turning any one of them off makes
# tvm.compile fail (or crash), so "every pass disabled" means every other pass. Found by disabling
# each pass alone on the TVM probe module (apache-tvm 0.27.0.post1); tvm_disable_plan checks the
# remaining set still builds, and searches again, one pass at a time, on a TVM where it does not.
REQUIRED_PASSES = frozenset({
    "LegalizeOps", "CallTIRRewrite", "LowerAllocTensor", "LowerRuntimeBuiltin", "VMShapeLower",
    "AttachGlobalSymbol", "s_tir.LowerInitBlock", "s_tir.ConvertBlocksToOpaque",
    "s_tir.LowerOpaqueBlock", "tirx.FlattenBuffer", "tirx.MakePackedAPI", "tirx.LowerTVMBuiltin",
    "tirx.LowerIntrin",
})
# Not passes of their own: the containers the pipeline's passes run in.
_CONTAINERS = frozenset({"_pipeline", "sequential"})


def tvm_probe_build(disabled: Sequence[str], relax_pipeline: str,
                     record: list[tuple[str, int]] | None = None) -> np.ndarray:
    """Build the TVM probe module with ``disabled`` passes off and return its outputs."""
    import tvm
    from tvm import relax

    from .formats.relax import vm_output
    from .steps.relax_passes import probe_module

    target = tvm.target.Target("llvm")
    instruments = []
    if record is not None:
        @tvm.instrument.pass_instrument
        class _Record:
            def run_before_pass(self, mod: Any, info: Any) -> None:
                record.append((str(info.name), int(info.opt_level)))

        instruments.append(_Record())
    pipeline = relax.get_default_pipeline(target) if relax_pipeline == "target" else "default"
    with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled),
                                   instruments=instruments):
        ex = tvm.compile(probe_module(), target=target, relax_pipeline=pipeline)
    x = np.random.default_rng(1).normal(size=(3, 12, 12, 3)).astype(np.float32)
    return vm_output(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)))


def _probe_in_child(disabled: Sequence[str], relax_pipeline: str) -> np.ndarray | str:
    """:func:`tvm_probe_build` in a fresh process, since some disabled passes segfault TVM."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "y.npy"
        build = tvm_probe_build
        code = (f"import json, sys, numpy as np; from {build.__module__} import {build.__name__}; "
                f"np.save(sys.argv[3], {build.__name__}(json.loads(sys.argv[1]), sys.argv[2]))")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(disabled)),
                               relax_pipeline, str(out)], capture_output=True, text=True)
        if proc.returncode == 0 and out.exists():
            return np.load(out, allow_pickle=False)
        lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        return f"exit {proc.returncode}: {lines[-1][:200] if lines else 'no message'}"


@worker_function
def tvm_disable_plan(relax_pipeline: str = "target", refresh: bool = False) -> dict[str, Any]:
    """Which passes of TVM's build pipeline the study's ``tvm-disabled`` configuration turns off.

    Runs in a tvm worker (op ``call``). One instrumented build of the probe module from
    :mod:`fuzzconv.steps.relax_passes` lists the passes ``tvm.compile`` runs, with the
    ``opt_level`` each is registered at; every one but :data:`REQUIRED_PASSES` is disabled, and the probe is built again
    that way (in a child process) to check the set works. Where it does not (another TVM), the
    passes are tried one at a time instead and only those whose absence alone builds are kept.
    The answer is cached in ``$FUZZCONV_CACHE/tvm-disable-<version>-<pipeline>.json``.

    Args:
        relax_pipeline: ``target`` (``relax.get_default_pipeline``) or ``default``.
        refresh: ignore the cached answer.

    Returns:
        ``{"tvm", "relax_pipeline", "passes": [[name, opt_level], ...], "disabled": [...],
        "required": [...], "probe_max_abs_diff", "searched": bool, "seconds"}``.
    """
    from .formats.relax import tvm_version

    path = cache_home() / f"tvm-disable-{tvm_version()}-{relax_pipeline}.json"
    if path.exists() and not refresh:
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    record: list[tuple[str, int]] = []
    ref = tvm_probe_build([], relax_pipeline, record)
    levels = dict(record)
    names = [n for n in levels if n not in _CONTAINERS]
    disabled = [n for n in names if n not in REQUIRED_PASSES]
    got = _probe_in_child(disabled, relax_pipeline)
    searched = isinstance(got, str)
    if searched:
        disabled = [n for n in names if not isinstance(_probe_in_child([n], relax_pipeline), str)]
        got = _probe_in_child(disabled, relax_pipeline)
        if isinstance(got, str):
            raise RuntimeError(f"no set of disabled passes builds the probe module: {got}")
    answer = {"tvm": tvm_version(), "relax_pipeline": relax_pipeline,
              "passes": [[n, levels[n]] for n in names],
              "disabled": disabled, "required": [n for n in names if n not in disabled],
              "probe_max_abs_diff": float(np.abs(got - ref).max()), "searched": searched,
              "seconds": round(time.perf_counter() - t0, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(answer, indent=1) + "\n")
    os.replace(tmp, path)
    return answer


@worker_function
def thread_report(family: str) -> dict[str, Any]:
    """The thread settings a framework worker runs with (op ``call``), as it reports them."""
    out: dict[str, Any] = {"env": {k: os.environ.get(k) for k in THREAD_ENV}}
    if family == "torch":
        import torch

        out.update(torch_num_threads=torch.get_num_threads(),
                   torch_num_interop_threads=torch.get_num_interop_threads())
    elif family == "tf":
        import tensorflow as tf

        # 0 means "TensorFlow's default", which reads TF_NUM_INTRAOP_THREADS.
        out.update(tf_intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
                   tf_inter_op=tf.config.threading.get_inter_op_parallelism_threads())
    elif family == "tvm":
        import tvm

        out["tvm_runtime_threads"] = int(tvm.get_global_func("runtime.NumThreads")())
    elif family == "ort":
        import onnxruntime

        out["ort"] = onnxruntime.__version__
    return out


# -- statistics ----------------------------------------------------------------------------------
def median_ci(samples: Sequence[float], seed: int = 0,
              resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """The median of ``samples`` with a seeded 95 % percentile-bootstrap confidence interval."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    rng = np.random.default_rng(seed)
    medians = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    lo, hi = np.quantile(medians, [0.025, 0.975])
    med = float(np.median(a))
    half = float(hi - lo) / 2
    return {"median": med, "ci_low": float(lo), "ci_high": float(hi), "half_width": half,
            "rel_half_width": half / med if med > 0 else math.inf, "samples": int(a.size)}


# -- running -------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One configuration of one model on one device: its labels and its timing."""

    model: str
    config: str
    device: str
    status: str  # ok | failed | not measured | not applicable
    pipeline: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the labelled run and the timing, conversions included
    logits: np.ndarray | None = field(default=None, repr=False)
    kept: bool = False  # read back from an earlier run's study.json (``--resume``): no logits

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        return cls(d["model"], d["config"], d["device"], d["status"], pipeline=d.get("pipeline"),
                   error=d.get("error"), metrics=d.get("metrics") or {},
                   timing=d.get("timing") or {}, seconds=float(d.get("seconds") or 0.0),
                   kept=True)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "config": self.config, "device": self.device,
                "status": self.status, "pipeline": self.pipeline, "error": self.error,
                "metrics": self.metrics, "timing": self.timing,
                "seconds": round(self.seconds, 2)}


def _parse_list(value: str | Sequence[str], what: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise UsageError(f"--{what} needs at least one name")
    return items


def _pin_threads(ex: Executor, threads: int) -> dict[str, str]:
    """Give every worker the same intra-op thread count (before any of them starts)."""
    env = {k: str(threads) for k in THREAD_ENV}
    for fam in FAMILIES:
        worker = ex.pool.get(fam)
        worker.env = {**(worker.env or {}), **env}
    return env


class _Runner:
    """Evaluates the configurations of one study through an executor."""

    def __init__(self, ex: Executor, corpus: Any, repeats: int):
        self.ex = ex
        self.corpus = corpus
        self.repeats = repeats
        self.timing_corpus = corpus.subset(list(range(min(ex.batch_size, len(corpus)))))

    def evaluate(self, model: str, cfg: Config, device: str) -> Cell:
        """The labelled run of one configuration (cached), then its timing when asked for.

        Args:
            model: the study's row, a Keras model; twin configurations run on its twin.
            cfg: the configuration.
            device: where it runs.
        """
        runs_on = model if cfg.side == "keras" else TWINS[model]
        try:
            pipeline = Pipeline.make(self.ex.registry, runs_on, list(cfg.steps), cfg.runtime,
                                     device)
        except UsageError as exc:
            return Cell(model, cfg.key, device, "failed",
                        error={"stage": "pipeline", "error_class": "UsageError",
                               "message": str(exc), "symptom": "unsupported"})
        cell = Cell(model, cfg.key, device, "ok", pipeline=pipeline.to_dict())
        try:
            ev = self.ex.evaluate(pipeline, self.corpus)
        except UsageError as exc:  # the source model itself could not be built
            cell.status, cell.error = "failed", {"stage": "source", "error_class": "UsageError",
                                                 "message": str(exc), "symptom": "crash"}
            return cell
        if not ev.ok:
            cell.status, cell.error = "failed", ev.failure.to_dict()  # type: ignore[union-attr]
            cell.error.pop("stderr_tail", None)
            return cell
        cell.logits = ev.logits
        cell.timing["stage_seconds"] = {k: round(v, 3) for k, v in ev.timings.items()}
        if self.repeats:
            self._time(pipeline, cell, self._artifact(pipeline))
        return cell

    def _artifact(self, pipeline: Pipeline) -> Path | None:
        spec = get_model(pipeline.model)
        calibration = (self.ex.calibration_inputs(spec) if self.ex.weights == "calibrated"
                       else None)
        return self.ex.artifact(pipeline, len(pipeline.steps), Evaluation(pipeline, None),
                                calibration=calibration)

    def _time(self, pipeline: Pipeline, cell: Cell, artifact: Path | None) -> None:
        """Time the runtime on the first batch: per batch and per image, ``repeats`` each.

        A request of its own (Executor.evaluate times batches only): the runtime loads the cached
        artifact, infers the batch once (the cold pass, also compared with the cached outputs),
        warms up, then times.
        """
        if artifact is None:
            return
        spec = get_model(pipeline.model)
        rt = self.ex.registry.get(pipeline.runtime.name, "runtime")
        inputs = self.ex.inputs(spec, self.timing_corpus)
        with tempfile.TemporaryDirectory(dir=self.ex.store_dir) as tmp:
            try:
                res = self.ex.pool.request(rt.family, RunRequest(
                    rt.name, pipeline.runtime.params, str(artifact), str(inputs),
                    str(Path(tmp) / "logits.npy"), spec.to_dict(), pipeline.device,
                    self.ex.batch_size, repeats=self.repeats, image_repeats=self.repeats),
                    timeout=self.ex.timeout_for(rt.name))
            except WorkerFailure as exc:
                cell.timing["error"] = {"symptom": exc.symptom, "error_class": exc.error_class,
                                        "message": exc.message[:500]}
                return
            again = np.load(Path(tmp) / "logits.npy", allow_pickle=False)
        first = cell.logits[:len(again)]  # type: ignore[index]
        images = [t for row in res.image_seconds for t in row]
        cell.timing.update(
            load_seconds=round(res.load_seconds, 4),
            batch_size=len(again),
            image=median_ci(images),
            batch=median_ci(res.batch_seconds),
            image_seconds=res.image_seconds,
            batch_seconds=res.batch_seconds,
            # The timing run's outputs against the labelled run's, same images: 0 unless the
            # runtime is not deterministic from one load to the next.
            rerun_max_abs_diff=float(np.abs(again.astype(np.float64) - first).max()),
        )


def _label_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    """Top-1 and top-5 agreement of ``out`` with ``ref`` (from oracle.compare)."""
    cmp = compare(ref, out)
    # The paper counts every changed top-1 label; the oracle splits them into flips and near-tie
    # flips (reference margin below its tie_margin), and both are kept in the record.
    changes = cmp.flips + cmp.tie_flips
    return {"images": cmp.images, "label_changes": changes,
            "label_change_pct": 100.0 * changes / cmp.images if cmp.images else 0.0,
            "flips": cmp.flips, "tie_flips": cmp.tie_flips, "nan": cmp.nan,
            "top5_jaccard": cmp.top5_agreement, "kendall_tau": cmp.kendall_tau,
            "max_abs_diff": cmp.max_abs_diff}


def _accuracy(logits: np.ndarray, labels: Sequence[int | None] | None) -> float | None:
    if labels is None:
        return None
    known = [(p, t) for p, t in zip(logits.argmax(axis=1), labels) if t is not None]
    return float(np.mean([p == t for p, t in known])) if known else None


def run_study(models: str | Sequence[str] = PAPER_MODELS, images: Path | None = None,
              weights: str = "calibrated", devices: str | Sequence[str] = ("cpu", "cuda"),
              repeats: int = 10, out: Path = Path("fuzzconv-study"), limit: int | None = None,
              *, store: Path = Path("fuzzconv-out"), threads: int | None = None,
              timeout: float | None = None, console: Any = None,
              show_progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """Run the sensitivity study and write its tables, plots and data under ``out``.

    Args:
        models: Keras zoo models with a PyTorch twin (see :data:`TWINS`), a list or a
            comma-separated string.
        images: a folder of images; None takes the default corpus.
        weights: ``calibrated`` or ``imagenet`` (twins are compared with Keras only with the latter).
        devices: devices to measure; one absent here is reported as "not measured".
        repeats: timed passes per configuration, per batch and per image; 0 skips timing.
        out: where the outputs go.
        limit: use only the first ``limit`` images.
        store: the store whose cache holds the artifacts and outputs (reruns reuse it).
        threads: intra-op threads for every framework; defaults to ``os.cpu_count()``.
        timeout: seconds per step or run (the executor's default when None).
        console: a rich Console for progress (stderr); one is made when None.
        show_progress: show the progress bar.
        resume: keep the models that ``out/study.json`` already holds, when it was made with the
            same settings, stack and configurations (see :func:`earlier_study`); measure the rest.

    Returns:
        The ``study.json`` object.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .corpora import select
    from .session import open_session
    from .versions import machine, stack_versions

    names = _parse_list(models, "models")
    for name in names:
        get_model(name)
        if name not in TWINS:
            raise UsageError(f"the study runs Keras models with a PyTorch twin; {name!r} is not one "
                             f"(known: {', '.join(TWINS)})")
    wanted = _parse_list(devices, "devices")
    for d in wanted:
        if d not in DEVICES:
            raise UsageError(f"unknown device {d!r} (known: {', '.join(DEVICES)})")
    if repeats < 0:
        raise UsageError("--repeats must be 0 or more")
    threads = int(threads or os.cpu_count() or 1)
    corpus = select(images, limit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    present = {d: device_available(d) for d in wanted}
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    early = {"weights": weights, "repeats": repeats, "limit": limit, "threads": threads,
             "images": str(images) if images else None,
             "devices": {d: ("measured" if present[d] else NOT_MEASURED) for d in wanted},
             "corpus": {"name": corpus.name, "images": len(corpus), "digest": corpus.digest,
                        "labelled": corpus.labels is not None}}
    if resume:  # bad input fails here, before any worker starts
        earlier_study(out / "study.json", {"settings": early})

    with open_session(store, weights=weights, timeout=timeout) as ex:
        env = _pin_threads(ex, threads)
        threads_seen = {fam: _call(ex, fam, Call.to(thread_report, family=fam))
                        for fam in FAMILIES}
        plan = _call(ex, "tvm", Call.to(tvm_disable_plan, relax_pipeline="target"),
                     timeout=3600.0)
        configs = configurations(threads, plan.get("disabled", []) if plan["ok"] else [])
        runner = _Runner(ex, corpus, repeats)
        head = {
            "study": "Louloudakis et al. 2022 sensitivity study, repeated",
            "settings": {"models": [], "requested_models": names,
                         "twins": {m: TWINS[m] for m in names}, **early,
                         "batch_size": ex.batch_size, "timing_images": len(runner.timing_corpus),
                         "thread_env": env, "ci_goal": CI_GOAL,
                         "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "store": str(store)},
            "versions": stack_versions(),
            "machine": {**machine(), "os_cpu_count": os.cpu_count(),
                        # Other work on the machine slows and spreads the timings: say how much.
                        "load_average_start": list(os.getloadavg())},
            "threads": threads_seen,
            "tvm_disable_plan": plan,
            "configurations": [{**_config_dict(c),
                                "devices": [d for d in DEVICES if _runs_on(ex, c, d)]}
                               for c in configs],
            "model_seconds": {},
        }
        earlier = earlier_study(out / "study.json", head) if resume else None
        kept = [m for m in names if earlier and m in earlier["settings"]["models"]]
        if earlier is not None:
            head["resumed"] = {"models": kept, "elapsed_seconds": earlier["elapsed_seconds"],
                               "load_average_start": earlier["machine"]["load_average_start"]}
        cells: list[Cell] = []
        todo = [(m, c, d) for m in names for c in configs for d in wanted]
        # Without a terminal the bar is not drawn: a line per configuration shows the way instead.
        log_lines = show_progress and not console.is_terminal
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, disable=not show_progress,
                      transient=False) as progress:
            task = progress.add_task("study", total=len(todo))
            for model in names:
                if model in kept:
                    assert earlier is not None
                    cells += [Cell.from_dict(c) for c in earlier["cells"] if c["model"] == model]
                    head["model_seconds"][model] = earlier["model_seconds"][model]
                    progress.advance(task, len(configs) * len(wanted))
                    if log_lines:
                        console.print(f"{model}: kept from {out / 'study.json'}")
                else:
                    tm = time.perf_counter()
                    for cfg in configs:
                        for device in wanted:
                            progress.update(task, description=f"{model} {cfg.key} @{device}")
                            cells.append(_cell(runner, model, cfg, device, present, plan))
                            progress.advance(task)
                            if log_lines:
                                c = cells[-1]
                                console.print(f"{model} {cfg.key} @{device}: {c.status}"
                                              + (f" ({c.seconds:.0f} s)" if c.seconds else ""))
                    head["model_seconds"][model] = round(time.perf_counter() - tm, 1)
                head["settings"]["models"].append(model)
                # Written after every model, so a long study that is stopped keeps what it did
                # (and a rerun finds all of it in the cache, or keeps it with --resume).
                study = _assemble(head, cells, configs, corpus, weights, t0, earlier)
                write_outputs(study, out)
    return study


def _cell(runner: _Runner, model: str, cfg: Config, device: str, present: dict[str, bool],
          plan: dict[str, Any]) -> Cell:
    """One configuration of one model on one device, or why it was not run."""
    if not _runs_on(runner.ex, cfg, device):
        return Cell(model, cfg.key, device, NOT_APPLICABLE)
    if not present[device]:
        return Cell(model, cfg.key, device, NOT_MEASURED)
    if cfg.key == "tvm-disabled" and not plan["ok"]:
        return Cell(model, cfg.key, device, "failed", error={
            "stage": "finding the passes to disable", "symptom": "crash",
            "error_class": "DisablePlan", "message": plan["error"]})
    tc = time.perf_counter()
    cell = runner.evaluate(model, cfg, device)
    cell.seconds = time.perf_counter() - tc
    return cell


#: Settings a kept model must share with the models measured now, for the tables to compare them.
_RESUME_SETTINGS = ("weights", "repeats", "limit", "images", "threads", "devices", "corpus",
                    "batch_size", "timing_images", "thread_env", "ci_goal", "bootstrap_resamples")


def earlier_study(path: Path, head: dict[str, Any]) -> dict[str, Any] | None:
    """The study at ``path`` when its models can stand beside the ones this run measures.

    None when there is no such file. A file that cannot be read, or that was made with other
    settings, another framework stack or other configurations, is a :class:`UsageError` naming the
    difference; the file itself is left as it is. Only what ``head`` holds is compared, so a
    check before the workers start can take the settings known by then.
    """
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
        settings = old["settings"]
        _ = (old["cells"], old["elapsed_seconds"], old["machine"]["load_average_start"])
        _ = [(old["model_seconds"][m], old["opt_spread"][m]) for m in settings["models"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--resume: {path} is not a study this version wrote ({exc})") from exc
    mine = head["settings"]
    for key in _RESUME_SETTINGS:
        if key in mine and settings.get(key) != mine[key]:
            raise UsageError(f"--resume: {path} was made with {key} = {settings.get(key)!r}, this run "
                             f"has {mine.get(key)!r}; use the same settings or another --out")
    if "versions" in head and old.get("versions") != head["versions"]:
        changed = sorted(k for k in set(old.get("versions") or {}) | set(head["versions"])
                         if (old.get("versions") or {}).get(k) != head["versions"].get(k))
        raise UsageError(f"--resume: {path} was made with other versions of "
                         f"{', '.join(changed)}; use another --out")
    if "configurations" in head and ([c.get("key") for c in old.get("configurations", [])]
                                     != [c["key"] for c in head["configurations"]]):
        raise UsageError(f"--resume: {path} has other configurations; use another --out")
    return old


def _assemble(head: dict[str, Any], cells: list[Cell], configs: list[Config], corpus: Any,
              weights: str, t0: float, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``study.json`` object for the models done so far (kept ones from ``earlier``)."""
    _fill_metrics(cells, configs, corpus, weights)
    measured = [d for d, s in head["settings"]["devices"].items() if s == "measured"]
    kept = (head.get("resumed") or {}).get("models", [])
    spread = _spread(cells, [m for m in head["settings"]["models"] if m not in kept], measured)
    for model in kept:
        spread[model] = earlier["opt_spread"][model]  # type: ignore[index]
    elapsed = time.perf_counter() - t0 + (head.get("resumed") or {}).get("elapsed_seconds", 0.0)
    study = {**head, "cells": [c.to_dict() for c in cells], "opt_spread": spread,
             "elapsed_seconds": round(elapsed, 1)}
    study["machine"] = {**head["machine"], "load_average_end": list(os.getloadavg())}
    if kept:  # the load the kept models were measured under counts too
        study["machine"]["load_average_start"] = head["resumed"]["load_average_start"]
    study["paper"] = compare_with_paper(study)
    return study


def _runs_on(ex: Executor, cfg: Config, device: str) -> bool:
    ops = [ex.registry.get(n) for n, _ in cfg.steps] + [ex.registry.get(cfg.runtime[0])]
    return all(device in op.devices for op in ops)


def _call(ex: Executor, family: str, call: Call, timeout: float = 600.0) -> dict[str, Any]:
    """A worker function's answer; a failure becomes ``{"ok": False, "error": ...}``."""
    try:
        return {"ok": True, **ex.pool.request(family, call, timeout=timeout)}
    except WorkerFailure as exc:
        return {"ok": False, "error": f"{exc.error_class}: {exc.message[:500]}"}


def _config_dict(c: Config) -> dict[str, Any]:
    return {"key": c.key, "experiment": c.experiment, "side": c.side, "title": c.title,
            "steps": [{"step": n, "params": p} for n, p in c.steps],
            "runtime": {"name": c.runtime[0], "params": c.runtime[1]}, "baseline": c.baseline,
            "reduced_precision": c.reduced_precision}


def _fill_metrics(cells: list[Cell], configs: list[Config], corpus: Any, weights: str) -> None:
    """Label metrics of every cell against its baseline (its side's source on CPU), plus for
    CUDA cells against the same configuration on CPU, plus with real weights twin against Keras."""
    by = {(c.model, c.config, c.device): c for c in cells}
    cfg_of = {c.key: c for c in configs}
    for cell in cells:
        if cell.status != "ok" or cell.kept:  # a kept cell's metrics came with it
            continue
        cfg = cfg_of[cell.config]
        base = by.get((cell.model, cfg.baseline, "cpu"))
        if base is None or base.status != "ok":
            cell.metrics["vs_baseline"] = None
        else:
            cell.metrics["vs_baseline"] = _label_metrics(base.logits, cell.logits)
        cell.metrics["accuracy"] = _accuracy(cell.logits, corpus.labels)  # type: ignore[arg-type]
        if cell.device != "cpu":
            cpu = by.get((cell.model, cell.config, "cpu"))
            cell.metrics["vs_cpu"] = (_label_metrics(cpu.logits, cell.logits)
                                      if cpu is not None and cpu.status == "ok" else None)
        if cfg.side == "twin" and weights == "imagenet":
            keras = by.get((cell.model, "keras", "cpu"))
            if keras is not None and keras.status == "ok" and keras.logits.shape == cell.logits.shape:
                cell.metrics["vs_keras"] = _label_metrics(keras.logits, cell.logits)


def _spread(cells: list[Cell], models: Sequence[str], devices: Sequence[str]) -> dict[str, Any]:
    """Per model, device and optimization table: the largest top-1 label change between any two
    of its configurations."""
    by = {(c.model, c.config, c.device): c for c in cells}
    out: dict[str, Any] = {}
    for model in models:
        for device in devices:
            for title, cols in OPT_TABLES.items():
                ok = [by[(model, k, device)] for k, _ in cols
                      if (model, k, device) in by and by[(model, k, device)].status == "ok"]
                worst, pair = None, None
                for i, a in enumerate(ok):
                    for b in ok[i + 1:]:
                        if _side(a) != _side(b):  # a table may hold both; they share no model
                            continue
                        pct = _label_metrics(a.logits, b.logits)["label_change_pct"]  # type: ignore[arg-type]
                        if worst is None or pct > worst:
                            worst, pair = pct, [a.config, b.config]
                out.setdefault(model, {}).setdefault(device, {})[title] = {
                    "configs": [c.config for c in ok],
                    "max_pairwise_label_change_pct": worst, "pair": pair}
    return out


def _side(cell: Cell) -> str:
    return "twin" if cell.config.startswith("twin") else "keras"


# -- the paper's claims, computed ----------------------------------------------------------------
def _index(study: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(c["model"], c["config"], c["device"]): c for c in study["cells"]}


def _pct(cell: dict[str, Any] | None, against: str = "vs_baseline") -> float | None:
    if cell is None or cell["status"] != "ok":
        return None
    m = cell["metrics"].get(against)
    return None if m is None else m["label_change_pct"]


def _where(found: tuple) -> str:
    """``12.5 % (model, config)``, or just ``0.0 %`` when nothing changed anywhere."""
    pct, model, what = found[:3]
    return f"{pct:.1f} % ({model}, {what})" if pct else "0.0 %"


def _disjoint(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]


def _time_effect(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Slowest against fastest per-image median among ``cells``, and whether their CIs separate."""
    timed = [c for c in cells if c and c["status"] == "ok" and "image" in c["timing"]]
    if len(timed) < 2:
        return None
    fast = min(timed, key=lambda c: c["timing"]["image"]["median"])
    slow = max(timed, key=lambda c: c["timing"]["image"]["median"])
    ratio = slow["timing"]["image"]["median"] / fast["timing"]["image"]["median"]
    return {"fastest": fast["config"], "slowest": slow["config"], "ratio": ratio,
            "separated": _disjoint(fast["timing"]["image"], slow["timing"]["image"]),
            "significant": ratio >= TIME_EFFECT and _disjoint(fast["timing"]["image"],
                                                              slow["timing"]["image"])}


def compare_with_paper(study: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's four claims set beside this study's numbers, each with a computed verdict.

    Rules (stated in ``study.md`` too): a label claim holds where the relevant top-1 changes are
    all zero; a timing claim holds for a factor where, for some model, the slowest and fastest
    configurations' medians differ by at least :data:`TIME_EFFECT` and their 95 % CIs are disjoint.
    """
    idx = _index(study)
    models = study["settings"]["models"]
    devices = [d for d, s in study["settings"]["devices"].items() if s == "measured"]
    configs = {c["key"]: c for c in study["configurations"]}
    claims = []

    # 1. labels and the framework
    fw = [k for k, c in configs.items() if c["experiment"] == "framework" and k != c["baseline"]]
    vals = [(p, m, k) for m in models for k in fw
            if (p := _pct(idx.get((m, k, "cpu")))) is not None]
    fp32 = [v for v in vals if not configs[v[2]]["reduced_precision"]]
    failed = sum(1 for m in models for k in fw
                 if idx.get((m, k, "cpu"), {}).get("status") == "failed")
    if not vals:
        verdict, here = NOT_MEASURED, "no conversion produced outputs"
    else:
        top, top32 = max(vals), max(fp32) if fp32 else None
        here = (f"largest change {_where(top)}; "
                + (f"fp32 conversions at most {_where(top32)}" if top32 else "no fp32 conversion ran")
                + f"; {sum(1 for v in vals if v[0] > 0)} of {len(vals)} conversions changed "
                  f"at least one label; {failed} failed to convert or run")
        if top[0] == 0:
            verdict = "disagrees: no conversion changed a top-1 label"
        elif top32 is None or top32[0] == 0:
            verdict = (f"partly agrees: only reduced-precision conversions changed labels "
                       f"(up to {top[0]:.1f} %, paper up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} %); "
                       "every fp32 conversion kept every label")
        else:
            verdict = (f"agrees in kind: fp32 conversions changed labels, up to {top32[0]:.1f} % "
                       f"(paper up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} %)")
    cross = [(p, m) for m in models if (p := _pct(idx.get((m, "twin-torch", "cpu")), "vs_keras")) is not None]
    if study["settings"]["weights"] == "imagenet" and cross:
        here += ("; Keras model vs its PyTorch twin (each with ImageNet weights): "
                 + ", ".join(f"{m} {p:.1f} %" for p, m in cross))
    else:
        here += ("; Keras model vs its PyTorch twin: not comparable (calibrated weights differ "
                 "between twins by construction)")
    claims.append({"claim": "Top-1 labels are sensitive to the framework and conversion",
                   "paper": f"up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} % of labels changed",
                   "here": here, "verdict": verdict})

    # 2. labels and optimization levels
    spread = study.get("opt_spread", {})
    rows = []
    for m in models:
        for title, info in spread.get(m, {}).get("cpu", {}).items():
            if info["max_pairwise_label_change_pct"] is not None:
                rows.append((info["max_pairwise_label_change_pct"], m, title, info["pair"]))
    if not rows:
        verdict, here = NOT_MEASURED, "fewer than two optimization settings ran"
    else:
        worst = max(rows, key=lambda r: r[0])
        vs_src = [(p, m, k) for m in models for cols in OPT_TABLES.values() for k, _ in cols
                  if not configs[k]["baseline"] == k
                  and (p := _pct(idx.get((m, k, "cpu")))) is not None]
        here = (f"largest change between two settings of one optimizer "
                f"{_where((worst[0], worst[1], ' vs '.join(worst[3])))}")
        if vs_src:
            here += f"; largest change against the source {_where(max(vs_src))}"
        verdict = ("agrees: no optimization setting changed a label relative to another"
                   if worst[0] == 0 else
                   f"disagrees: optimization settings changed up to {worst[0]:.1f} % of labels")
    claims.append({"claim": "Top-1 labels are insensitive to compiler optimization levels",
                   "paper": "no label changes across TVM opt levels", "here": here,
                   "verdict": verdict})

    # 3. labels and devices
    dev = [(p, m, k, d) for (m, k, d), c in idx.items() if d != "cpu"
           and (p := _pct(c, "vs_cpu")) is not None]
    if not dev:
        why = ("no GPU on this machine" if any(s == NOT_MEASURED for s in
                                                study["settings"]["devices"].values())
               else "no configuration ran on a second device")
        claims.append({"claim": "Top-1 labels are insensitive to the device",
                       "paper": "no label changes between CPU and GPU",
                       "here": f"{NOT_MEASURED} ({why})", "verdict": NOT_MEASURED})
    else:
        top = max(dev)
        claims.append({"claim": "Top-1 labels are insensitive to the device",
                       "paper": "no label changes between CPU and GPU",
                       "here": f"largest CPU→{top[3]} change {_where(top[:3])} "
                               f"over {len(dev)} configurations",
                       "verdict": "agrees" if top[0] == 0 else
                       f"disagrees: the device changed up to {top[0]:.1f} % of labels"})

    # 4. time and everything
    factors: dict[str, list[dict[str, Any]]] = {"framework": [], "optimization": [], "device": []}
    for m in models:
        for side in ("keras", "twin"):
            eff = _time_effect([idx.get((m, k, "cpu")) for k, c in configs.items()
                                if c["side"] == side and c["experiment"] == "framework"])
            if eff:
                factors["framework"].append({"model": m, "side": side, **eff})
        for title, cols in OPT_TABLES.items():
            for side in ("keras", "twin"):
                group = [idx.get((m, k, "cpu")) for k, _ in cols if configs[k]["side"] == side]
                eff = _time_effect(group)
                if eff:
                    factors["optimization"].append({"model": m, "table": title, **eff})
        for k in configs:
            for d in devices:
                if d != "cpu":
                    eff = _time_effect([idx.get((m, k, "cpu")), idx.get((m, k, d))])
                    if eff:
                        factors["device"].append({"model": m, "config": k, **eff})
    parts, verdicts = [], []
    for factor, effs in factors.items():
        if not effs:
            parts.append(f"{factor}: {NOT_MEASURED}")
            continue
        sig = [e for e in effs if e["significant"]]
        top = max(effs, key=lambda e: e["ratio"])
        parts.append(f"{factor}: {len(sig)} of {len(effs)} comparisons significant, largest "
                     f"{top['ratio']:.2f}× ({top['model']}, {top['slowest']} vs {top['fastest']})")
        verdicts.append((factor, bool(sig)))
    if not verdicts:
        verdict = NOT_MEASURED
    elif all(v for _, v in verdicts):
        verdict = "agrees for " + ", ".join(f for f, _ in verdicts)
    else:
        verdict = ("agrees for " + (", ".join(f for f, v in verdicts if v) or "none") +
                   "; disagrees for " + ", ".join(f for f, v in verdicts if not v))
    if not factors["device"]:
        verdict += f"; device {NOT_MEASURED}"
    # A control for the test above: opt levels that run the very same passes compile the same
    # program, so a "significant" time difference between them measures the machine, not TVM.
    same = [g for g in same_pass_levels(study["tvm_disable_plan"]) if len(g) > 1]
    control = []
    for group in same:
        for m in models:
            eff = _time_effect([idx.get((m, f"tvm-O{k}", "cpu")) for k in group])
            if eff:
                control.append({"model": m, "levels": group, **eff})
    if control:
        top = max(control, key=lambda e: e["ratio"])
        parts.append(f"control: TVM opt levels {', '.join(f'O{k}' for k in top['levels'])} run the "
                     f"same passes, yet {top['slowest']} vs {top['fastest']} differ "
                     f"{top['ratio']:.2f}× ({top['model']}, CIs "
                     f"{'disjoint' if top['separated'] else 'overlapping'})")
        if any(e["significant"] for e in control):
            verdict += ("; but the control (same passes, different opt level) is significant too, "
                        "so this machine's timing noise exceeds the CIs and the timing verdicts are "
                        "not reliable here")
    claims.append({"claim": "Inference time is sensitive to everything",
                   "paper": "time changed with framework, opt level and device (one sample per image)",
                   "here": "; ".join(parts), "verdict": verdict, "factors": factors,
                   "control": control})
    return claims


def same_pass_levels(plan: dict[str, Any]) -> list[list[int]]:
    """TVM opt levels 0-4 grouped by the passes they run (a pass runs at levels ≥ its own)."""
    if not plan.get("ok"):
        return [[k] for k in range(5)]
    groups: dict[frozenset, list[int]] = {}
    for k in range(5):
        groups.setdefault(frozenset(n for n, lvl in plan["passes"] if lvl <= k), []).append(k)
    return list(groups.values())


# -- outputs -------------------------------------------------------------------------------------
LABELS_COLUMNS = ("model", "config", "device", "experiment", "side", "baseline", "status",
                  "images", "label_change_pct", "label_changes", "flips", "tie_flips", "nan",
                  "top5_jaccard", "kendall_tau", "max_abs_diff", "accuracy",
                  "device_label_change_pct", "vs_keras_label_change_pct", "error")
TIMING_COLUMNS = ("model", "config", "device", "unit", "batch_size", "samples", "median_ms",
                  "ci_low_ms", "ci_high_ms", "ci_half_width_pct", "meets_ci_goal", "load_s",
                  "threads", "rerun_max_abs_diff")


def _error_text(cell: dict[str, Any]) -> str:
    e = cell.get("error")
    if not e:
        return ""
    msg = " ".join(str(e.get("message", "")).split())
    return f"{e.get('stage', '')}: {e.get('error_class', '')}: {msg[:300]}"


def write_outputs(study: dict[str, Any], out: Path) -> None:
    """Write ``labels.csv``, ``timing.csv``, ``study.json``, the PNG plots and ``study.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configs = {c["key"]: c for c in study["configurations"]}
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, LABELS_COLUMNS)
        w.writeheader()
        for c in study["cells"]:
            cfg = configs[c["config"]]
            m = c["metrics"].get("vs_baseline") or {}
            w.writerow({
                "model": c["model"], "config": c["config"], "device": c["device"],
                "experiment": cfg["experiment"], "side": cfg["side"], "baseline": cfg["baseline"],
                "status": c["status"], **{k: m.get(k) for k in (
                    "images", "label_change_pct", "label_changes", "flips", "tie_flips", "nan",
                    "top5_jaccard", "kendall_tau", "max_abs_diff")},
                "accuracy": c["metrics"].get("accuracy"),
                "device_label_change_pct": _pct(c, "vs_cpu"),
                "vs_keras_label_change_pct": _pct(c, "vs_keras"),
                "error": _error_text(c)})
    with open(out / "timing.csv", "w", newline="") as f:
        w = csv.DictWriter(f, TIMING_COLUMNS)
        w.writeheader()
        for c in study["cells"]:
            t = c["timing"]
            for unit in ("image", "batch"):
                if unit not in t:
                    continue
                s = t[unit]
                w.writerow({
                    "model": c["model"], "config": c["config"], "device": c["device"],
                    "unit": unit, "batch_size": 1 if unit == "image" else t["batch_size"],
                    "samples": s["samples"], "median_ms": s["median"] * 1e3,
                    "ci_low_ms": s["ci_low"] * 1e3, "ci_high_ms": s["ci_high"] * 1e3,
                    "ci_half_width_pct": 100 * s["rel_half_width"],
                    "meets_ci_goal": s["rel_half_width"] <= CI_GOAL,
                    "load_s": t["load_seconds"], "threads": study["settings"]["threads"],
                    "rerun_max_abs_diff": t["rerun_max_abs_diff"]})
    (out / "study.json").write_text(json.dumps(study, indent=1, default=_json_default) + "\n")
    plots = write_plots(study, out)
    (out / "study.md").write_text(render_markdown(study, plots))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# -- plots ---------------------------------------------------------------------------------------
def write_plots(study: dict[str, Any], out: Path) -> dict[str, str]:
    """The heatmap of label changes and the latency plots; returns {what: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = _index(study)
    models = study["settings"]["models"]
    configs = [c for c in study["configurations"] if c["key"] != c["baseline"]]
    files = {}

    # Heatmap: models x configurations, % of top-1 labels changed against the side's source (CPU).
    data = np.full((len(models), len(configs)), np.nan)
    notes = [["" for _ in configs] for _ in models]
    for i, m in enumerate(models):
        for j, c in enumerate(configs):
            cell = idx.get((m, c["key"], "cpu"))
            p = _pct(cell)
            if p is not None:
                data[i, j] = p
                notes[i][j] = f"{p:.1f}"
            else:
                notes[i][j] = "fail" if cell and cell["status"] == "failed" else "—"
    fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(configs) + 2), 2.4 + 0.5 * len(models)))
    vmax = max(1.0, float(np.nanmax(data)) if np.isfinite(data).any() else 1.0)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="Reds", vmin=0, vmax=vmax, aspect="auto")
    ax.set_facecolor("#d9d9d9")
    ax.set_xticks(range(len(configs)), [c["key"] for c in configs], rotation=60, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=9)
    for i in range(len(models)):
        for j in range(len(configs)):
            ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(data[i, j]) and data[i, j] > vmax / 2 else "black")
    fig.colorbar(im, ax=ax, label="% top-1 changed", fraction=0.03, pad=0.01)
    ax.set_title("Top-1 label change vs the source model (twin columns: vs the PyTorch twin)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "label_change_heatmap.png", dpi=110)
    plt.close(fig)
    files["heatmap"] = "label_change_heatmap.png"

    devices = list(study["settings"]["devices"])
    groups = [("latency_optimizations.png", "optimizations", list(OPT_TABLES.items())),
              ("latency_frameworks.png", "frameworks",
               [("framework and conversion",
                 [(c["key"], c["key"]) for c in study["configurations"]
                  if c["experiment"] == "framework"])])]
    for fname, what, tables in groups:
        fig, axes = plt.subplots(len(tables), len(models), squeeze=False,
                                 figsize=(max(6.5, 4.2 * len(models)), 3.4 * len(tables)))
        for r, (title, cols) in enumerate(tables):
            for col, m in enumerate(models):
                _latency_bars(axes[r][col], idx, m, cols, devices, study)
                axes[r][col].set_title(f"{m}: {title}", fontsize=8)
        fig.suptitle(f"Per-image latency (median, 95 % bootstrap CI), {what}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        files[what] = fname
    return files


def _latency_bars(ax: Any, idx: dict, model: str, cols: list[tuple[str, str]],
                  devices: list[str], study: dict[str, Any]) -> None:
    """Per-image median latency with its CI as error bars, one bar per device and configuration;
    a device that was not measured gets a hatched legend entry saying so, and no bar."""
    from matplotlib.patches import Patch

    width = 0.8 / max(1, len(devices))
    handles = []
    for d_i, device in enumerate(devices):
        xs, meds, lo, hi = [], [], [], []
        for x, (key, _) in enumerate(cols):
            cell = idx.get((model, key, device))
            if cell and "image" in cell["timing"]:
                s = cell["timing"]["image"]
                xs.append(x + d_i * width)
                meds.append(s["median"] * 1e3)
                lo.append((s["median"] - s["ci_low"]) * 1e3)
                hi.append((s["ci_high"] - s["median"]) * 1e3)
        if xs:
            handles.append(ax.bar(xs, meds, width=width, yerr=[lo, hi], capsize=3, label=device))
        elif study["settings"]["devices"].get(device) == NOT_MEASURED:
            handles.append(Patch(facecolor="none", edgecolor="grey", hatch="//",
                                 label=f"{device}: {NOT_MEASURED}"))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cols))], [h for _, h in cols],
                  rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("ms per image", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    if handles:
        ax.legend(handles=handles, fontsize=6)


# -- markdown ------------------------------------------------------------------------------------
def _md_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _label_cell(cell: dict[str, Any] | None, configs: dict[str, Any], against: str = "vs_baseline") -> str:
    if cell is None:
        return "—"
    if cell["status"] in (NOT_MEASURED, NOT_APPLICABLE):
        return cell["status"]
    if cell["status"] == "failed":
        return f"fail ({cell['error'].get('error_class', '?')})"
    if against == "vs_baseline" and configs[cell["config"]]["baseline"] == cell["config"] \
            and cell["device"] == "cpu":
        return "ref"
    p = _pct(cell, against)
    return "—" if p is None else f"{p:.1f}"


def _time_cell(cell: dict[str, Any] | None, unit: str = "image") -> str:
    if cell is None:
        return "—"
    if cell["status"] != "ok":
        return cell["status"] if cell["status"] in (NOT_MEASURED, NOT_APPLICABLE) else "fail"
    t = cell["timing"]
    if unit not in t:
        return "timing failed" if "error" in t else "not timed"
    s = t[unit]
    flag = "" if s["rel_half_width"] <= CI_GOAL else " †"
    return f"{s['median'] * 1e3:.2f} ±{100 * s['rel_half_width']:.1f}%{flag}"


def render_markdown(study: dict[str, Any], plots: dict[str, str]) -> str:
    """``study.md``: the paper's tables for this stack, the timing tables and the comparison."""
    idx = _index(study)
    st = study["settings"]
    models = st["models"]
    devices = list(st["devices"])
    configs = {c["key"]: c for c in study["configurations"]}
    fw = [k for k, c in configs.items() if c["experiment"] == "framework"]
    L: list[str] = []
    L.append("# Sensitivity study: frameworks, conversions, optimizations, devices\n")
    L.append("A repetition of Louloudakis et al. 2022, *Exploring Effects of Computational Parameter "
             "Changes to Image Recognition Systems*, on this stack. Generated by `fuzzconv study`; "
             "all numbers below are computed from `study.json` beside this file.\n")
    twins = st["twins"]
    L.append("- models: " + ", ".join(f"{m} (twin {twins[m]})" for m in models))
    if len(models) < len(st["requested_models"]):
        L.append(f"- **partial**: {len(models)} of {len(st['requested_models'])} models done; not "
                 f"yet: {', '.join(m for m in st['requested_models'] if m not in models)}")
    L.append(f"- weights: {st['weights']}; corpus: {st['corpus']['name']}, {st['corpus']['images']} "
             f"images{' (labelled)' if st['corpus']['labelled'] else ' (no ground truth: accuracy not reported)'}")
    L.append(f"- devices: " + ", ".join(f"{d} ({s})" for d, s in st["devices"].items()))
    L.append(f"- timing: {st['repeats']} timed passes per configuration over the first batch "
             f"({st['timing_images']} images) and over each of its images alone, after a warm-up; "
             f"{st['threads']} intra-op threads everywhere (os.cpu_count() = "
             f"{study['machine']['os_cpu_count']}); median with a seeded 95 % bootstrap CI "
             f"({st['bootstrap_resamples']} resamples); goal: CI half-width ≤ {100 * CI_GOAL:.0f} % "
             "of the median, † marks a miss")
    load = study["machine"]
    L.append(f"- machine: {load['platform']}, {load['cpus']} CPUs, load average (1 min) "
             f"{load['load_average_start'][0]:.1f} at the start and {load['load_average_end'][0]:.1f} "
             f"at the end (other work on the machine slows and spreads the timings); "
             f"total time {study['elapsed_seconds']:.0f} s "
             f"({', '.join(f'{m} {s:.0f} s' for m, s in study['model_seconds'].items())})")
    if (study.get("resumed") or {}).get("models"):
        L.append(f"- resumed: {', '.join(study['resumed']['models'])} measured by an earlier run "
                 "with the same settings and stack (`--resume`); total time and load cover both")
    L.append("- versions: " + ", ".join(f"{k} {v}" for k, v in study["versions"].items()) + "\n")

    L.append("## Configurations\n")
    L.append(_md_table(["key", "experiment", "compared with", "what"],
                       [[f"`{k}`", c["experiment"], "—" if c["baseline"] == k else f"`{c['baseline']}`",
                         c["title"]] for k, c in configs.items()]))
    plan = study["tvm_disable_plan"]
    if plan.get("ok"):
        L.append(f"\n`tvm-disabled` turns off {len(plan['disabled'])} of the "
                 f"{len(plan['passes'])} passes `tvm.compile` runs with the target pipeline "
                 f"(TVM {plan['tvm']}); the other {len(plan['required'])} lower the program and "
                 f"the build fails without any one of them: {', '.join(plan['required'])}. "
                 "Pass opt levels: " + _levels(plan) + ". Disabled: "
                 + ", ".join(f"`{n}`" for n in plan["disabled"]) + ".")
    else:
        L.append(f"\nThe list of TVM passes to disable could not be found: {plan.get('error')}")

    L.append("\n## 1. Framework and conversion: % of top-1 labels changed\n")
    L.append("Rows are models, columns configurations (CPU). Keras-side columns are compared with "
             "the Keras model, `twin-*` columns with the PyTorch twin (`ref` marks each source). "
             + ("With calibrated weights the twin's weights are not the Keras model's (each is "
                "calibrated on its own), so label changes *between* the Keras model and its twin "
                "mean nothing and are not reported."
                if st["weights"] != "imagenet" else
                "With ImageNet weights the twin is compared with the Keras model too (last table)."))
    L.append("")
    L.append(_md_table(["model"] + fw, [[m] + [_label_cell(idx.get((m, k, "cpu")), configs)
                                          for k in fw] for m in models]))
    L.append("\nTop-5 agreement (mean Jaccard of the top-5 sets) / Kendall τ over the source's top 5:\n")
    L.append(_md_table(["model"] + [k for k in fw if configs[k]["baseline"] != k],
                       [[m] + [_agreement(idx.get((m, k, "cpu"))) for k in fw
                               if configs[k]["baseline"] != k] for m in models]))
    if st["weights"] == "imagenet":
        L.append("\nPyTorch twin against the Keras model (% top-1 changed, both with ImageNet weights):\n")
        L.append(_md_table(["model", "twin-torch vs keras"],
                           [[m, _label_cell(idx.get((m, "twin-torch", "cpu")), configs, "vs_keras")]
                            for m in models]))
    if any(c["metrics"].get("accuracy") is not None for c in study["cells"]):
        L.append("\nTop-1 accuracy against the corpus labels:\n")
        L.append(_md_table(["model"] + fw, [[m] + [_acc(idx.get((m, k, "cpu"))) for k in fw]
                                              for m in models]))

    L.append("\n## 2. Optimizations: % of top-1 labels changed against the source\n")
    for title, cols in OPT_TABLES.items():
        L.append(f"**{title}**\n")
        rows = [[m, d] + [_label_cell(idx.get((m, k, d)), configs) for k, _ in cols]
                for m in models for d in devices]
        L.append(_md_table(["model", "device"] + [h for _, h in cols], rows))
        L.append("")
    L.append("Largest label change between two settings of the same optimizer (same model, CPU):\n")
    spread = study.get("opt_spread", {})
    L.append(_md_table(["model"] + list(OPT_TABLES),
                       [[m] + [_spread_cell(spread.get(m, {}).get("cpu", {}).get(t))
                               for t in OPT_TABLES] for m in models]))

    L.append("\n## 3. Devices: % of top-1 labels changed from CPU to the device\n")
    other = [d for d in devices if d != "cpu"]
    if not other:
        L.append("Only the CPU was asked for.")
    else:
        for d in other:
            dev_cfgs = [k for k, c in configs.items() if d in c["devices"]]
            L.append(f"**{d}** ({st['devices'][d]}; configurations whose steps and runtime all "
                     f"run there)\n")
            L.append(_md_table(["model"] + dev_cfgs,
                               [[m] + [_label_cell(idx.get((m, k, d)), configs, "vs_cpu")
                                       for k in dev_cfgs] for m in models]))
            L.append("")

    L.append(f"\n![label change heatmap]({plots['heatmap']})\n")

    L.append("## 4. Inference time per image (ms, median ±95 % CI half-width)\n")
    L.append("Batch size 1, after a warm-up; † marks a CI half-width above "
             f"{100 * CI_GOAL:.0f} % of the median."
             + (" The torch runtime runs a lone image under torch.compile as a batch of two copies "
                "(its compiled graph covers batches of two and more), so `twin-compile`'s per-image "
                "time is that of two images." if "twin-compile" in configs else "") + "\n")
    L.append("**Framework and conversion**\n")
    L.append(_md_table(["model", "device"] + fw,
                       [[m, d] + [_time_cell(idx.get((m, k, d))) for k in fw]
                        for m in models for d in devices]))
    for title, cols in OPT_TABLES.items():
        L.append(f"\n**{title}**\n")
        L.append(_md_table(["model", "device"] + [h for _, h in cols],
                           [[m, d] + [_time_cell(idx.get((m, k, d))) for k, _ in cols]
                            for m in models for d in devices]))
    same = [g for g in same_pass_levels(study["tvm_disable_plan"]) if len(g) > 1]
    if same:
        L.append("\nTVM opt levels " + "; ".join(" = ".join(f"O{k}" for k in g) for g in same)
                 + " run the same passes (each pass runs at the levels at or above the one it is "
                 "registered at), so they compile the same program: differences between them in "
                 "these tables are measurement noise, a yardstick for the others.")
    L.append(f"\n![latency per optimization setting and device]({plots['optimizations']})\n")
    L.append(f"![latency per framework and conversion]({plots['frameworks']})\n")
    L.append(f"**Per batch** (ms per batch of {st['timing_images']}, median ±95 % CI half-width)\n")
    L.append(_md_table(["config", "device"] + models,
                       [[k, d] + [_time_cell(idx.get((m, k, d)), "batch") for m in models]
                        for k in configs for d in devices]))
    L.append("")
    L.extend(_ci_summary(study))
    drift = [c for c in study["cells"] if c["timing"].get("rerun_max_abs_diff", 0) > 0]
    if drift:
        L.append("\nOutputs that changed between the labelled run and the timing run (same images, "
                 "a fresh load): " + ", ".join(
                     f"{c['model']} {c['config']}@{c['device']} (max |Δ| "
                     f"{c['timing']['rerun_max_abs_diff']:.3g})" for c in drift))

    failures = [c for c in study["cells"] if c["status"] == "failed" or "error" in c["timing"]]
    L.append("\n## Failures\n")
    if failures:
        L.append(_md_table(["model", "config", "device", "what failed"],
                           [[c["model"], c["config"], c["device"],
                             _error_text(c) if c["status"] == "failed"
                             else "timing: " + c["timing"]["error"]["message"][:200]]
                            for c in failures]))
    else:
        L.append("None: every configuration converted and ran.")

    L.append("\n## Beside the paper\n")
    L.append("Verdicts are computed: a label claim holds where the relevant top-1 changes are all "
             f"zero; a timing claim holds for a factor where, for some model, the slowest and fastest "
             f"configurations' medians differ by at least {100 * (TIME_EFFECT - 1):.0f} % and their "
             "95 % CIs are disjoint.\n")
    L.append(_md_table(["claim", "paper", "here", "verdict"],
                       [[c["claim"], c["paper"], c["here"], c["verdict"]] for c in study["paper"]]))
    L.append("")
    return "\n".join(L)


def _levels(plan: dict[str, Any]) -> str:
    by: dict[int, list[str]] = {}
    for name, level in plan["passes"]:
        by.setdefault(level, []).append(name)
    return "; ".join(f"{len(v)} at {k}" + (f" ({', '.join(v)})" if k else "")
                     for k, v in sorted(by.items()))


def _agreement(cell: dict[str, Any] | None) -> str:
    if cell is None or cell["status"] != "ok" or not cell["metrics"].get("vs_baseline"):
        return "—" if cell is None or cell["status"] == "ok" else cell["status"]
    m = cell["metrics"]["vs_baseline"]
    return f"{m['top5_jaccard']:.3f} / {m['kendall_tau']:.3f}"


def _acc(cell: dict[str, Any] | None) -> str:
    a = None if cell is None else cell["metrics"].get("accuracy")
    return "—" if a is None else f"{100 * a:.1f} %"


def _spread_cell(info: dict[str, Any] | None) -> str:
    if not info or info["max_pairwise_label_change_pct"] is None:
        return "—"
    text = f"{info['max_pairwise_label_change_pct']:.1f} %"
    if info["max_pairwise_label_change_pct"]:
        text += f" ({' vs '.join(info['pair'])})"
    return text


def _ci_summary(study: dict[str, Any]) -> list[str]:
    """How many timings met the CI goal, and the ones that did not, widest first."""
    timed, missed = 0, []
    for c in study["cells"]:
        widths = {u: c["timing"][u]["rel_half_width"] for u in ("image", "batch") if u in c["timing"]}
        timed += len(widths)
        bad = {u: w for u, w in widths.items() if w > CI_GOAL}
        if bad:
            missed.append((max(bad.values()), c, bad))
    lines = [f"{timed - sum(len(b) for _, _, b in missed)} of {timed} medians met the CI goal "
             f"(half-width ≤ {100 * CI_GOAL:.0f} % of the median)."]
    if missed:
        lines.append("Missed (per image / per batch half-width):\n")
        lines.append(_md_table(["model", "config", "device", "per image", "per batch"], [
            [c["model"], c["config"], c["device"]] + [
                f"±{100 * c['timing'][u]['rel_half_width']:.1f} %" if u in c["timing"] else "—"
                for u in ("image", "batch")]
            for _, c, _ in sorted(missed, key=lambda t: -t[0])]))
    return lines
