"""Versions of the stack, read from package metadata so nothing is imported."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from . import __version__

# Distribution names per family; the first one found names the family's main library.
PACKAGES = {
    "tf": ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx"),
    "torch": ("torch", "torchvision", "onnx2torch"),
    "tvm": ("apache-tvm",),
    "ort": ("onnxruntime", "onnxruntime-gpu", "onnx"),
}


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def family_versions(family: str) -> dict[str, str]:
    out = {}
    for dist in PACKAGES[family]:
        v = _version(dist)
        if v is not None:
            out[dist.replace("-cpu", "").replace("apache-", "")] = v
    return out


def stack_versions() -> dict[str, str]:
    """Every framework version present, plus fuzzconv, numpy and Python."""
    out = {"fuzzconv": __version__, "python": platform.python_version()}
    for fam in PACKAGES:
        out.update(family_versions(fam))
    np_v = _version("numpy")
    if np_v:
        out["numpy"] = np_v
    return dict(sorted(out.items()))


def machine() -> dict[str, str]:
    import os

    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpus": str(os.cpu_count())}
