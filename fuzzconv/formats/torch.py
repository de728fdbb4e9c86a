"""PyTorch artifacts: a small JSON manifest (``model.torch.json``), never a pickle.

- ``{"kind": "zoo", "architecture": ..., "options": {...}, "weights": "weights.npz"}``: a zoo
  architecture from :data:`fuzzconv.zoo.torch_architectures.ARCHITECTURES` and its state dict
  beside the manifest (written by the zoo builders);
- ``{"kind": "onnx2torch", "onnx": "model.onnx", "input_layout": ...}``: the ONNX model beside the
  manifest, rebuilt with ``onnx2torch.convert`` at load time.

Both carry ``"format": "fuzzconv.torch"`` and ``"version"``. :func:`load_torch_module` turns either
into an ``nn.Module`` in eval mode; the ``torch`` runtime, ``torch.onnx_export`` and TVM's
``torch.tvm`` step all load artifacts through it, and :func:`module_input_layout` says which layout
the module takes. Torch is imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..zoo.torch_architectures import architecture

if TYPE_CHECKING:
    import torch

MANIFEST_FORMAT = "fuzzconv.torch"
MANIFEST_VERSION = 1


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a torch artifact, checked for format and version."""
    manifest = json.loads(Path(path).read_text())
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path} is not a fuzzconv torch artifact (version {MANIFEST_VERSION})")
    return manifest


def write_manifest(dst: Path, kind: str, model: str, **fields: Any) -> None:
    """Write a torch artifact's manifest; ``fields`` name the files beside it and their options."""
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "kind": kind,
                "model": model, **fields}
    Path(dst).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def load_torch_module(path: Path) -> "torch.nn.Module":
    """The module of a torch artifact (``model.torch.json``), in eval mode, on CPU.

    Args:
        path: the manifest; the files it names lie beside it.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if manifest["kind"] == "zoo":
        import torch

        module = architecture(manifest["architecture"], manifest.get("options"))
        with np.load(path.parent / manifest["weights"], allow_pickle=False) as npz:
            state = {k: torch.from_numpy(npz[k]) for k in npz.files}
        module.load_state_dict(state, strict=True)
        return module.eval()
    if manifest["kind"] == "onnx2torch":
        import onnx2torch

        return onnx2torch.convert(str(path.parent / manifest["onnx"])).eval()
    raise ValueError(f"{path}: unknown torch artifact kind {manifest['kind']!r}")


def module_input_layout(path: Path, model_layout: str) -> str:
    """The layout the artifact's module takes: the model's, unless the manifest says otherwise."""
    return read_manifest(Path(path)).get("input_layout") or model_layout
