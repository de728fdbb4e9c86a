"""The study's configurations: the columns of its tables, and the settings every table shares.

Three experiments: framework and conversion (the Keras model against TFLite, ONNX Runtime,
onnx2torch and TVM, and its PyTorch twin against ONNX Runtime, TVM and onnx2torch; twin paths are
compared with the twin's own source), compiler and runtime optimizations (TVM ``opt_level`` 0-4
and every pass disabled that can be, ONNX Runtime's graph-optimization levels, torch.compile,
Keras XLA) and devices (every configuration whose steps and runtime run there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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
#: The goal for a timing ratio: its 95 % interval's half-width at most this share of the ratio;
#: and how far from 1.00 the identical-code control's interval may reach.
RATIO_GOAL = 0.05
#: A label-change share whose whole 95 % interval lies below this (in %) is "no change" for the
#: paper's insensitivity claims; one whose interval lies above it is a change.
LABEL_EFFECT = 2.0
#: Below this ratio of slowest to fastest median, a timing difference is called negligible.
TIME_EFFECT = 1.05
BOOTSTRAP_RESAMPLES = 4000
#: The two kinds of image the default corpus mixes, reported apart: the shipped real photographs
#: and the generated ones.
PHOTOGRAPHS, SYNTHETIC = "photographs", "synthetic"
NOT_MEASURED = "not measured"
NOT_APPLICABLE = "not applicable"  # a step or the runtime does not run on that device
#: Environment variables that fix each framework's intra-op thread count in its worker.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TVM_NUM_THREADS")


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


def config_dict(c: Config) -> dict[str, Any]:
    return {"key": c.key, "experiment": c.experiment, "side": c.side, "title": c.title,
            "steps": [{"step": n, "params": p} for n, p in c.steps],
            "runtime": {"name": c.runtime[0], "params": c.runtime[1]}, "baseline": c.baseline,
            "reduced_precision": c.reduced_precision}


def config_keys() -> list[str]:
    """The names of every configuration, in table order (what ``--configs`` chooses from)."""
    return [c.key for c in configurations(1, ["a pass"])]


def select_configs(configs: list[Config], chosen: Sequence[str] | None) -> list[Config]:
    """The configurations named in ``chosen`` and the baselines they are compared with, in table
    order; all of them when ``chosen`` is None."""
    if chosen is None:
        return configs
    base = {c.key: c.baseline for c in configs}
    keep = set(chosen) | {base[k] for k in chosen if k in base}
    return [c for c in configs if c.key in keep]
