"""Where a model's weights come from: real ImageNet weights already on disk, or calibration.

Nothing here downloads. ``imagenet`` weights are looked for in the frameworks' own cache folders
(Keras: ``$KERAS_HOME/models`` or ``~/.keras/models``; torchvision: ``$TORCH_HOME/hub/checkpoints``
or ``~/.cache/torch/hub/checkpoints``) or taken from a file the user names.

``calibrated`` weights make a randomly initialised architecture behave like a trained classifier
for the purpose of comparing conversions (with ``weights=None`` every image gets the same label):

1. Batch-norm statistics are set from a calibration batch: momentum such that one forward pass in
   training mode replaces the moving statistics by the batch's.
2. The classifier is drawn at random (seeded), its logits centred per class on the calibration
   features and scaled to a standard deviation of :data:`LOGIT_STD`.

The framework-specific halves live in ``keras_apps`` and ``torchvision_models``; this module holds
the parts that are plain numpy and path logic, so both frameworks share them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UsageError

LOGIT_STD = 4.0


class WeightsNotFound(UsageError):
    """Real weights were asked for but are not on disk."""


def keras_weight_dirs() -> list[Path]:
    home = os.environ.get("KERAS_HOME")
    dirs = [Path(home) / "models"] if home else []
    return dirs + [Path.home() / ".keras" / "models"]


def torch_weight_dirs() -> list[Path]:
    home = os.environ.get("TORCH_HOME")
    dirs = [Path(home) / "hub" / "checkpoints"] if home else []
    return dirs + [Path.home() / ".cache" / "torch" / "hub" / "checkpoints"]


def find_imagenet_weights(model: dict, weights: str) -> Path:
    """The real weights file for ``model``: the user's path, or one found in the framework cache.

    Raises:
        WeightsNotFound: naming every place that was looked in.
    """
    if weights not in ("imagenet", "calibrated"):
        p = Path(weights).expanduser()
        if p.is_file():
            return p
        raise WeightsNotFound(f"weights file not found: {p}")
    dirs = keras_weight_dirs() if model["source"] == "keras" else torch_weight_dirs()
    for d in dirs:
        for name in model["imagenet_files"]:
            if (d / name).is_file():
                return d / name
    looked = ", ".join(str(d / n) for d in dirs for n in model["imagenet_files"]) or "nowhere"
    raise WeightsNotFound(
        f"no ImageNet weights for {model['name']} on disk (looked for {looked}); "
        f"fuzzconv never downloads: put the file there, pass --weights PATH, or use --weights calibrated"
    )


def calibrated_classifier(features: np.ndarray, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random classifier over ``features`` (N, d) whose logits are centred and scaled.

    Returns:
        (W, b) with W of shape (d, classes) and b of shape (classes,), float32. Deterministic in
        ``seed`` and ``features``.
    """
    rng = np.random.default_rng(seed)
    feats = features.astype(np.float64)
    w = rng.standard_normal((feats.shape[1], classes))
    logits = feats @ w
    b = -logits.mean(axis=0)
    centred = logits + b
    scale = LOGIT_STD / max(float(centred.std()), 1e-12)
    return (w * scale).astype(np.float32), (b * scale).astype(np.float32)


class DegenerateModel(UsageError):
    """A model whose classifier sees features that barely vary from image to image."""


#: How much a generated model's head features must vary across the calibration images (the
#: largest standard deviation of one feature), absolutely and against their magnitude.
MIN_FEATURE_SPREAD = 1e-3


def check_spread(features: np.ndarray, name: str) -> None:
    """Refuse a model whose features (N, d) are all but constant across images.

    Calibration scales the classifier to a logit spread of :data:`LOGIT_STD` whatever the
    features' spread, so features that vary by rounding alone (a global average over an
    instance-normalised tensor is zero by construction) would turn rounding into labels, and
    every conversion would "flip" them. Such a generated model is refused, never hunted.

    Raises:
        DegenerateModel: naming the model.
    """
    feats = features.astype(np.float64).reshape(len(features), -1)
    spread = float(feats.std(axis=0).max()) if feats.size else 0.0
    scale = float(np.abs(feats).max()) if feats.size else 0.0
    if spread < MIN_FEATURE_SPREAD or spread < MIN_FEATURE_SPREAD * scale:
        raise DegenerateModel(f"{name} is degenerate: the features its classifier sees vary by "
                              f"{spread:.2g} across images (magnitude {scale:.2g})")


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per row."""
    part = np.sort(logits, axis=1)
    return part[:, -1] - part[:, -2]
