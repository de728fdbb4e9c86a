"""Which conversion paths can carry which layers: the known limitations of this stack.

A :class:`Limit` says that a pipeline holding certain steps cannot carry a layer (of a kind, with
some attribute values, from one source framework): the converter refuses the operator, or leaves
one in the graph that nothing after it runs. Such a pipeline is a known limitation, not a finding,
so the hunt never builds it: :class:`fuzzconv.strategies.Space` leaves out of a generated model's
space every chain that a limit of one of its layers names (all of the limit's steps together),
and the shrinker never proposes one. A hunt lists the limitations it met.

Every entry was measured on the pinned stack by sending a one-layer model with that attribute
value down every all-defaults chain; its
``reason`` is the error that gives. Only refusals are limitations: a converter that accepts a
layer and computes something else, or writes a model its own runtime rejects, is a finding.

A refusal nobody declared yet (:func:`refusal`: ``NotImplementedError``, ``OpNotImplemented``,
``UnsupportedOperatorError``, or a message saying an operator is not supported or implemented)
is judged the same way when a generated model meets it: listed as a limitation with the model,
never a finding.
"""

from __future__ import annotations

import functools

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from .spec import GenSpec
from .vocabulary import FRAMEWORKS


@dataclass(frozen=True)
class Limit:
    """A combination of steps that cannot carry a layer (see the module docstring).

    Args:
        kind: the layer kind.
        steps: steps and runtimes that, all in one pipeline, cannot carry it (one step: any
            pipeline through it); ``name(param=value)`` when only some of its settings cannot.
        reason: the error, as measured.
        when: attribute values under which it applies (every one must hold; empty: always).
        frameworks: the source frameworks it applies to.
    """

    kind: str
    steps: tuple[str, ...]
    reason: str
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    frameworks: tuple[str, ...] = FRAMEWORKS

    def holds(self, kind: str, attrs: dict[str, Any], framework: str) -> bool:
        return (kind == self.kind and framework in self.frameworks
                and all(attrs.get(k) in vs for k, vs in self.when.items()))

    def blocks(self, elements: Iterable[Any]) -> bool:
        """Whether a pipeline holding ``elements`` (steps and its runtime: names, or
        :class:`~fuzzconv.pipeline.Step` values with their parameters) hits this limit. A bare
        name never matches a step that only some settings cannot carry."""
        held = [_element(e) for e in elements]
        return all(any(name == n and all(ps.get(k) == v for k, v in params.items())
                       for n, ps in held) for name, params in map(_token, self.steps))

    def label(self) -> str:
        cond = ",".join(f"{k}={'/'.join(map(str, v))}" for k, v in self.when.items())
        return f"{self.kind}({cond})" if cond else self.kind


_K = ("keras",)
_T = ("torch",)
_DYNAMIC_PADS = ("TVM's ONNX frontend: Dynamic pads are not supported yet (torch.onnx.export writes "
                 "the pads of F.pad as a computed tensor)")
_UNSUPPORTED = "tf2onnx leaves the TensorFlow op {} in the graph (unsupported), so nothing runs it"

#: What this stack cannot carry (see the module docstring).
LIMITS: list[Limit] = [
    Limit("conv", ("keras.tf2onnx",), _UNSUPPORTED.format("StatefulPartitionedCall") +
          " (a grouped convolution)", {"groups": (2,)}, _K),
    Limit("conv", ("keras.tflite", "onnx.onnx2torch"),
          "onnx2torch: Converter is not implemented (SpaceToDepth), which tflite.tf2onnx writes "
          "for a dilated convolution", {"dilation": (2,)}, _K),
    Limit("conv_transpose", ("onnx.onnx2torch",),
          "onnx2torch: ConvTranspose with non symmetrical padding is not implemented",
          {"padding": ("same",)}, _K),
    Limit("conv_transpose", ("onnx.onnx2torch",),
          "onnx2torch: ConvTranspose with non symmetrical padding is not implemented",
          {"output_padding": (1,)}, _K),
    Limit("resize", ("keras.tflite",),
          "TFLite converter: ResizeBicubic is not a TFLite builtin (Could not translate MLIR to "
          "FlatBuffer)", {"mode": ("bicubic",)}, _K),
    Limit("resize", ("keras.tflite",),
          "TFLite converter: ScaleAndTranslate (antialiased resize) is not a TFLite builtin",
          {"antialias": (True,)}, _K),
    Limit("resize", ("keras.tf2onnx",), _UNSUPPORTED.format("ScaleAndTranslate") +
          " (an antialiased resize)", {"antialias": (True,)}, _K),
    Limit("act", ("keras.tf2onnx",), _UNSUPPORTED.format("Erfc") + " (exact GELU)",
          {"fn": ("gelu",), "approximate": (False,)}, _K),
    Limit("act", ("keras.tflite", "tflite.tf2onnx"),
          "tflite.tf2onnx leaves TFL_GELU in the graph (unsupported)", {"fn": ("gelu",)}, _K),
    Limit("act", ("keras.tflite", "tflite.tf2onnx"),
          "tflite.tf2onnx leaves TFL_RELU_N1_TO_1 (a clip to [-1, 1]) in the graph "
          "(unsupported)", {"fn": ("clip",), "bounds": ([-1.0, 1.0],)}, _K),
    Limit("global_pool", ("onnx.onnx2torch",),
          "onnx2torch: Converter is not implemented (GlobalMaxPool)", {"op": ("max",)}, _K),
    Limit("pool", ("onnx.onnx2torch",),
          "onnx2torch: AvgPool with non symmetrical padding is not implemented",
          {"op": ("avg",), "padding": ("same",)}, _K),
    Limit("pad", ("keras.tf2onnx", "onnx.onnx2torch"),
          "onnx2torch: Converter is not implemented (ScatterElements), which tf2onnx writes for "
          "a symmetric pad", {"mode": ("symmetric",)}, _K),
    Limit("resize", ("keras(jit_compile=true)",),
          "XLA: Detected unsupported operations (ScaleAndTranslate) on XLA_CPU_JIT",
          {"mode": ("bicubic",)}, _K),
    Limit("resize", ("keras(jit_compile=true)",),
          "XLA: Detected unsupported operations (ScaleAndTranslate) on XLA_CPU_JIT",
          {"antialias": (True,)}, _K),
    Limit("conv", ("torch.onnx_export", "onnx.tvm"), _DYNAMIC_PADS,
          {"padding": ("explicit",), "pads": ([0, 1, 0, 1], [1, 0, 2, 1])}, _T),
    Limit("pad", ("torch.onnx_export", "onnx.tvm"), _DYNAMIC_PADS, {}, _T),
    Limit("global_pool", ("torch.tvm",),
          "TVM's exported-program frontend: Unsupported function types "
          "['adaptive_max_pool2d.default']", {"op": ("max",)}, _T),
    Limit("reduce", ("torch.tvm",),
          "TVM's exported-program frontend: Unsupported function types ['amax.default']",
          {"op": ("max",)}, _T),
    *(Limit("math", ("torch.onnx_export",),
            f"torch.onnx.export (TorchScript): Exporting the operator 'aten::{fn}' to ONNX opset "
            "version 17 is not supported", {"fn": (fn,)}, _T)
      for fn in ("sinh", "cosh", "asinh", "trunc")),
    Limit("resize", ("torch.onnx_export",),
          "torch.onnx.export: Exporting the operator 'aten::_upsample_bilinear2d_aa' (or its "
          "bicubic twin) is not supported", {"antialias": (True,)}, _T),
    *(Limit("act", ("onnx.optimize(level=\"%s\")" % level, "onnx.tvm"),
            "TVM's ONNX frontend: The following operators are not supported: QuickGelu (ONNX "
            "Runtime's com.microsoft op, which its optimizer makes of x * sigmoid(x))",
            {"fn": ("silu",)}) for level in ("extended", "all")),
]


def _token(step: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name(param=value,...)`` (values as JSON) → (name, params)."""
    name, _, rest = step.partition("(")
    params = {}
    for part in filter(None, rest.rstrip(")").split(",")):
        k, _, v = part.partition("=")
        params[k.strip()] = json.loads(v)
    return name, params


def _element(e: Any) -> tuple[str, dict[str, Any]]:
    return (e, {}) if isinstance(e, str) else (e.name, e.params)


#: Error classes that say "this operator is not supported", whatever the message.
REFUSING_ERRORS = ("NotImplementedError", "OpNotImplemented", "UnsupportedOperatorError")
#: Words of a message that say the same (the converter refused; it did not go wrong).
REFUSING_WORDS = re.compile(r"not (?:yet )?(?:supported|implemented)|unsupported (?:function|op)"
                            r"|neither a custom op nor a flex op", re.IGNORECASE)


#: What names one model or one trace in a converter's message (``gen_keras_86c74dae79_1``,
#: ``__inference_function_248759``).
MODEL_NAMES = re.compile(r"gen_(?:keras|torch)_[0-9a-f]+(?:_\d+)?|__inference_\w+?_\d+")


def refusal(failure: dict[str, Any] | None) -> str | None:
    """Why a failure is a converter refusing an operator it does not support (a limitation
    nobody declared yet), in one line; None for anything else (a crash that is a finding)."""
    if not failure or failure.get("symptom") != "crash":
        return None
    message = (failure.get("message") or "").strip()
    if failure.get("error_class") in REFUSING_ERRORS or REFUSING_WORDS.search(message):
        first = message.splitlines()[0] if message else ""
        # one line per refusal, not per model: drop the model's and the trace's own names
        first = MODEL_NAMES.sub("<model>", first)
        return f"{failure.get('step')} refused: {failure.get('error_class')}: {first[:200]}"
    return None


@functools.lru_cache(maxsize=1024)
def limits_of(spec: GenSpec) -> tuple[tuple[int, Limit], ...]:
    """The limits that apply to a model: (1-based layer number, limit). Remembered per spec:
    a hunt asks this of every pipeline it considers for a model."""
    return tuple((i, lim) for i, layer in enumerate(spec.layers, 1) for lim in LIMITS
                 if lim.holds(layer.kind, layer.attrs, spec.framework))


def carries(spec: GenSpec | None, elements: Iterable[Any]) -> str | None:
    """None when a pipeline holding ``elements`` (names or steps, see :meth:`Limit.blocks`) can
    carry ``spec``; else why not (one line)."""
    if spec is None:
        return None
    held = list(elements)
    for i, lim in limits_of(spec):
        if lim.blocks(held):
            return (f"{' + '.join(lim.steps)} cannot carry layer {i} {lim.label()}: "
                    f"{lim.reason}")
    return None


def table(framework: str | None = None) -> list[dict[str, Any]]:
    """Every limit as plain data (``fuzzconv models --vocabulary``)."""
    return [{"kind": lim.kind, "when": {k: list(v) for k, v in lim.when.items()},
             "steps": list(lim.steps), "frameworks": list(lim.frameworks), "reason": lim.reason}
            for lim in LIMITS if framework is None or framework in lim.frameworks]
