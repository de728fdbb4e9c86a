"""fuzzconv's numpy preprocessing against the frameworks' own, on the shipped photographs.

Each framework runs in its own subprocess (TensorFlow and torchvision in one process segfault, and
the test process imports neither); the subprocess writes its batch as ``.npy`` and the comparison
happens here. The reference recipes are written out below from the frameworks' documentation, not
read from fuzzconv, so a wrong entry in ``fuzzconv.preprocessing.RECIPES`` cannot agree with itself.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fuzzconv.corpora import SHIPPED_DIR
from fuzzconv.preprocessing import RECIPES, preprocess
from fuzzconv.zoo import MODELS, ModelSpec

pytestmark = pytest.mark.frameworks

PHOTOS = sorted(str(p) for p in (SHIPPED_DIR / "natural").glob("*.png"))
TOLERANCE = 1e-5

# One model per (preprocessing id, size) the zoo uses, plus a probe for the Caffe mode no zoo model
# uses yet.
CASES: dict[str, ModelSpec] = {
    "keras_tf-224": MODELS["mobilenetv2"],
    "keras_tf-299": MODELS["inceptionv3"],
    "keras_torch-224": MODELS["densenet121"],
    "keras_caffe-224": dataclasses.replace(
        MODELS["mobilenetv2"], name="caffe-probe", preprocessing="keras_caffe"
    ),
    "keras_tf_32-32": MODELS["tiny_keras"],
    "torchvision_224-224": MODELS["torch:resnet101"],
    "torchvision_299-299": MODELS["torch:inception_v3"],
    "torchvision_32-32": MODELS["tiny_torch"],
}

# keras.applications module whose preprocess_input each Keras id stands for.
KERAS_MODULES = {
    "keras_tf": "mobilenet_v2",
    "keras_torch": "densenet",
    "keras_caffe": "resnet50",
    "keras_tf_32": "mobilenet_v2",
}
# torchvision (Resize, CenterCrop) of each torchvision id: the models' documented eval transforms.
TORCHVISION_SIZES = {
    "torchvision_224": (256, 224),
    "torchvision_299": (342, 299),
    "torchvision_32": (36, 32),
}

KERAS_SCRIPT = """
import importlib, json, sys
import numpy as np
import keras

cases, photos = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for case in cases:
    module = importlib.import_module("keras.applications." + case["module"])
    size = (case["size"], case["size"])
    pixels = [
        keras.utils.img_to_array(keras.utils.load_img(p, target_size=size, interpolation="bilinear"))
        for p in photos
    ]
    np.save(case["out"], np.asarray(module.preprocess_input(np.stack(pixels)), dtype=np.float32))
"""

TORCHVISION_SCRIPT = """
import json, sys
import numpy as np
import torch
from PIL import Image
from torchvision import transforms

cases, photos = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for case in cases:
    transform = transforms.Compose([
        transforms.Resize(case["resize"]),
        transforms.CenterCrop(case["crop"]),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])
    np.save(case["out"], batch.numpy())
"""


def _available(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _run(script: str, cases: list[dict[str, object]]) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases), json.dumps(PHOTOS)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _available("tensorflow", "keras"):
        pytest.skip("keras/tensorflow not installed")
    out = tmp_path_factory.mktemp("keras")
    _run(KERAS_SCRIPT, [
        {"module": KERAS_MODULES[spec.preprocessing], "size": spec.image_size,
         "out": str(out / f"{case}.npy")}
        for case, spec in CASES.items() if spec.preprocessing in KERAS_MODULES
    ])
    return out


@pytest.fixture(scope="module")
def torchvision_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _available("torch", "torchvision"):
        pytest.skip("torch/torchvision not installed")
    out = tmp_path_factory.mktemp("torchvision")
    _run(TORCHVISION_SCRIPT, [
        {"resize": TORCHVISION_SIZES[spec.preprocessing][0],
         "crop": TORCHVISION_SIZES[spec.preprocessing][1], "out": str(out / f"{case}.npy")}
        for case, spec in CASES.items() if spec.preprocessing in TORCHVISION_SIZES
    ])
    return out


def test_every_recipe_has_a_reference() -> None:
    tested = {spec.preprocessing for spec in CASES.values()}
    assert tested == set(RECIPES) == set(KERAS_MODULES) | set(TORCHVISION_SIZES)
    assert {(m.preprocessing, m.image_size) for m in MODELS.values()} <= {
        (s.preprocessing, s.image_size) for s in CASES.values()
    }
    assert len(PHOTOS) >= 10


@pytest.mark.parametrize("case", [c for c, s in CASES.items() if s.preprocessing in KERAS_MODULES])
def test_matches_keras(case: str, keras_reference: Path) -> None:
    _compare(case, np.load(keras_reference / f"{case}.npy"))


@pytest.mark.parametrize(
    "case", [c for c, s in CASES.items() if s.preprocessing in TORCHVISION_SIZES]
)
def test_matches_torchvision(case: str, torchvision_reference: Path) -> None:
    _compare(case, np.load(torchvision_reference / f"{case}.npy"))


def _compare(case: str, expected: np.ndarray) -> None:
    ours = preprocess(PHOTOS, CASES[case])
    assert ours.dtype == np.float32
    assert ours.shape == expected.shape
    assert float(np.abs(ours - expected).max()) <= TOLERANCE
