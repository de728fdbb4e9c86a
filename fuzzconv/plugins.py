"""The plugin API. Built-in steps register through exactly these decorators.

A plugin is a Python file (``--plugin path.py``) or a module under the entry-point group
``fuzzconv.plugins``::

    from fuzzconv.plugins import onnx_transform, tvm_transform

    @onnx_transform("acme.fuse_bn", eps=[1e-5, 1e-3])
    def fuse_bn(model, eps=1e-5):   # onnx.ModelProto -> onnx.ModelProto
        ...

    @tvm_transform("acme.my_pass", level=[1, 2])
    def my_pass(mod, level=1):      # tvm.IRModule -> tvm.IRModule
        ...

The decorator's keyword arguments are the choices a hunt draws from; the function's defaults are
the values the shrinker resets to. Import frameworks inside the function where you can: the
orchestrating process reads the plugin file to learn its steps, and only workers call them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .formats.relax import load_relax, save_relax
from .registry import register

__all__ = ["onnx_transform", "tvm_transform", "step", "runtime", "StepContext"]


class StepContext:
    """What a step or runtime function may know besides its artifact.

    Args:
        model: the model spec as a dict (name, source, input_shape, layout, classes, ...).
        device: ``cpu`` or ``cuda``.
        workdir: a scratch directory the function may use.
    """

    def __init__(self, model: dict[str, Any], device: str = "cpu", workdir: str | None = None):
        self.model = model
        self.device = device
        self.workdir = workdir

    @property
    def input_shape(self) -> list[int]:
        """Shape of one input image without the batch axis, in the model's own layout."""
        return list(self.model["input_shape"])


def step(name: str, *, src: str, dst: str, family: str, doc: str = "",
         devices: tuple[str, ...] = ("cpu", "cuda"), timeout: float | None = None,
         arithmetic: bool | dict[str, list] = False, precision: bool | dict[str, list] = False,
         quantization: bool | dict[str, list] = False, unoptimized: dict[str, Any] | None = None,
         normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
         cost: Callable[[str, dict[str, Any]], tuple[float, str] | None] | None = None,
         **choices: list) -> Callable:
    """Register a conversion step ``fn(ctx, src: Path, dst: Path, **params) -> None``.

    The function reads the artifact at ``src`` and writes one at ``dst`` (the directory exists; it may
    write side files beside ``dst``).

    Args:
        arithmetic: True when the step changes the numbers the model computes, or for each
            parameter the values that do (fast-math, fusion, layout, generated schedules);
            hunts try these early. Defaults to False.
        precision: the same for computing in reduced precision (float16), which hunts try
            before those. Defaults to False.
        quantization: the same for quantising (int8 and the like), which hunts try first of all.
            Defaults to False.
        unoptimized: for each optimisation knob, its unoptimised value: a ``slowdown`` is an
            optimisation slower than this form. Defaults to none.
        normalize: maps canonical parameters to the equal configuration's form, so parameter
            values that cannot differ in effect hash alike. Defaults to none.
        cost: ``cost(model, params)`` gives seconds a run costs beyond what the hunt's cost
            model knows, with the reason, or None (a tuned build that must tune first).
            Called framework-free, in the orchestrator. Defaults to none.
    """

    def deco(fn: Callable) -> Callable:
        fn.fuzzconv_op = register(dict(name=name, kind="step", src=src, dst=dst, family=family,
                                       doc=doc or _first_line(fn), devices=devices,
                                       timeout=timeout, choices=choices, arithmetic=arithmetic,
                                       precision=precision, quantization=quantization,
                                       unoptimized=dict(unoptimized or {}),
                                       normalize=normalize, cost=cost), fn)
        return fn

    return deco


def runtime(name: str, *, format: str, family: str, doc: str = "",
            devices: tuple[str, ...] = ("cpu",), arithmetic: bool | dict[str, list] = False,
            precision: bool | dict[str, list] = False, quantization: bool | dict[str, list] = False,
            unoptimized: dict[str, Any] | None = None, **choices: list) -> Callable:
    """Register a runtime ``fn(ctx, artifact: Path, **params) -> predict``.

    ``predict(batch: np.ndarray) -> np.ndarray`` maps a float32 batch in the model's layout to
    logits of shape ``(batch, classes)``. Loading and compiling happen before it returns, so the
    worker can time them apart from inference. ``arithmetic``, ``precision``, ``quantization``
    and ``unoptimized`` are as for :func:`step`.
    """

    def deco(fn: Callable) -> Callable:
        fn.fuzzconv_op = register(dict(name=name, kind="runtime", src=format, dst=None,
                                       family=family, doc=doc or _first_line(fn),
                                       devices=devices, choices=choices, arithmetic=arithmetic,
                                       precision=precision, quantization=quantization,
                                       unoptimized=dict(unoptimized or {})), fn)
        return fn

    return deco


def apply_onnx_transform(transform: Callable, src: Path, dst: Path, **params: Any) -> None:
    """What an :func:`onnx_transform` step does: the ONNX model at ``src``, transformed, at ``dst``."""
    import onnx

    onnx.save(transform(onnx.load(str(src)), **params), str(dst))


def apply_tvm_transform(transform: Callable, src: Path, dst: Path, **params: Any) -> None:
    """What a :func:`tvm_transform` step does: the Relax module at ``src``, transformed, at ``dst``."""
    save_relax(transform(load_relax(src), **params), dst)


def onnx_transform(name: str, **choices: list) -> Callable:
    """Register ``fn(model: onnx.ModelProto, **params) -> onnx.ModelProto`` as an onnx→onnx step."""
    return _transform(name, "onnx", "ort", apply_onnx_transform, choices)


def tvm_transform(name: str, **choices: list) -> Callable:
    """Register ``fn(mod: tvm.IRModule, **params) -> tvm.IRModule`` as a relax→relax step."""
    return _transform(name, "relax", "tvm", apply_tvm_transform, choices)


def _transform(name: str, fmt: str, family: str, apply: Callable,
               choices: dict[str, list]) -> Callable:
    """Register a ``fmt``→``fmt`` step that runs ``apply(fn, src, dst, **params)``."""

    def deco(fn: Callable) -> Callable:
        def run(ctx: StepContext, src: Path, dst: Path, **params: Any) -> None:
            apply(fn, src, dst, **params)

        # A bug bundle runs the user's function through the same ``apply``.
        run.fuzzconv_transform = (apply, fn)  # type: ignore[attr-defined]
        _copy_signature(run, fn)
        fn.fuzzconv_op = register(dict(name=name, kind="step", src=fmt, dst=fmt, family=family,
                                       doc=_first_line(fn), devices=("cpu", "cuda"),
                                       timeout=None, choices=choices), run)
        return fn

    return deco


def _copy_signature(wrapper: Callable, fn: Callable) -> None:
    """Give the wrapper the user's parameter defaults, which the registry reads."""
    import inspect

    params = [p for p in inspect.signature(fn).parameters.values()][1:]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__


def _first_line(fn: Callable) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
