"""Input layout: which axis order a model, an ONNX graph or an artifact takes its images in.

Corpus batches always come in the model's own layout (``NHWC`` for Keras models, ``NCHW`` for
PyTorch ones). A step may make an artifact that takes another: ``keras.tf2onnx(inputs_as_nchw=
True)`` makes an NCHW ONNX input for an NHWC model. Such a step records it, and every runtime
transposes the batches it is given to what it records:

- in an ONNX model, as ``metadata_props[INPUT_LAYOUT_KEY]`` (read by :func:`onnx_input_layout`;
  without the entry the input is in the model's own layout);
- beside a Relax module or a compiled library, as ``layout.json`` (:func:`write_input_layout`,
  :func:`read_input_layout`);
- in a torch artifact's manifest (:mod:`.torch`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

#: ``metadata_props`` key recording an ONNX input layout that differs from the model's.
INPUT_LAYOUT_KEY = "fuzzconv.input_layout"
#: The file beside an artifact that records the layout its input takes.
LAYOUT_FILE = "layout.json"
#: Axis permutations of a 4-D batch from one layout to the other.
TRANSPOSE = {("NHWC", "NCHW"): (0, 3, 1, 2), ("NCHW", "NHWC"): (0, 2, 3, 1)}


def onnx_input_layout(model: "onnx.ModelProto") -> str | None:
    """The input layout a step recorded in ``model`` (``"NCHW"``), or None when it kept the
    model's."""
    for prop in model.metadata_props:
        if prop.key == INPUT_LAYOUT_KEY:
            return prop.value
    return None


def to_layout(batch: np.ndarray, src: str, dst: str) -> np.ndarray:
    """A 4-D batch moved from layout ``src`` to ``dst`` (NHWC/NCHW), contiguous."""
    if src == dst:
        return batch
    return np.ascontiguousarray(batch.transpose(TRANSPOSE[(src, dst)]))


def image_shape(ctx: Any, layout: str) -> list[int]:
    """One image's shape (no batch axis) in ``layout``, for the model a step context describes."""
    shape = ctx.input_shape
    if layout == ctx.model["layout"]:
        return shape
    perm = TRANSPOSE[(ctx.model["layout"], layout)]
    return [shape[i - 1] for i in perm[1:]]


def write_input_layout(artifact_dir: Path, layout: str) -> None:
    """Record the layout the artifact in ``artifact_dir`` takes."""
    (Path(artifact_dir) / LAYOUT_FILE).write_text(json.dumps({"input_layout": layout}) + "\n")


def read_input_layout(artifact_dir: Path) -> str | None:
    """The input layout recorded beside an artifact, or None when there is no record."""
    f = Path(artifact_dir) / LAYOUT_FILE
    return json.loads(f.read_text())["input_layout"] if f.exists() else None
