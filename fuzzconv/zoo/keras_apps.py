"""Keras source models: the paper's four ``keras.applications`` networks and ``tiny_keras``.

Each builder runs inside the ``tf`` worker (``Server.op_build``), builds the architecture, gives it
weights and saves it as a ``.keras`` file, the source artifact every Keras pipeline starts from.
Weights are either real ImageNet weights already on disk (``imagenet`` or a path; nothing is ever
downloaded) or ``calibrated``: the recipe of :mod:`fuzzconv.zoo.weights`, whose Keras half is
:func:`calibrate` here.

Models output logits (``classifier_activation=None``): the oracle compares logits, and a softmax
would squash the differences it looks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import UsageError
from ..gen.keras_source import render_keras
from ..gen.spec import GenSpec
from .weights import calibrated_classifier, check_spread, find_imagenet_weights

if TYPE_CHECKING:
    import keras


def _seed_everything(seed: int) -> None:
    """Make initialisation and the calibration pass repeatable bit for bit.

    Keras draws each initialiser's seed from Python's ``random``, which ``set_random_seed`` seeds
    (with NumPy's and TensorFlow's). Op determinism is process-wide and stays on in the worker,
    which is what the ``keras`` reference runtime wants too.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def calibrate(model: "keras.Model", batch: np.ndarray, seed: int) -> np.ndarray:
    """Give a randomly initialised classifier data-dependent weights, in place.

    1. Every BatchNormalization layer's moving statistics become those of ``batch``: with
       momentum 0, one forward pass in training mode replaces them outright. Layers are updated in
       one pass, so each sees its input normalised by the statistics already set upstream, exactly
       as at inference.
    2. The final Dense layer gets :func:`calibrated_classifier` on the penultimate (global-pool)
       features of ``batch``, computed in inference mode with the new statistics.

    Args:
        model: a functional model whose last layer is the Dense classifier.
        batch: the calibration inputs, float32, in the model's input shape.
        seed: seeds the classifier draw.

    Returns:
        The penultimate features the classifier was fitted to.
    """
    import keras

    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise TypeError(f"{model.name}: the last layer is {type(head).__name__}, not Dense")
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0
        model(batch, training=True)
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum
    features = keras.Model(model.input, head.input)(batch, training=False)
    kernel, bias = calibrated_classifier(np.asarray(features), head.units, seed)
    head.set_weights([kernel, bias])
    return np.asarray(features)


def _build(spec: dict[str, Any], make: Callable[[], "keras.Model"], weights: str, seed: int,
           dst: Path, calibration: str | None,
           check: Callable[[np.ndarray], None] | None = None) -> dict[str, Any]:
    """Build with ``make``, give it ``weights``, save to ``dst``; the info ``op_build`` returns.
    ``check`` is given the calibration features (and may refuse the model)."""
    _seed_everything(seed)
    model = make()
    info: dict[str, Any] = {"weights": weights}
    if weights == "calibrated":
        if calibration is None:
            raise UsageError(f"{spec['name']}: calibrated weights need a calibration batch")
        batch = np.load(calibration, allow_pickle=False).astype(np.float32, copy=False)
        expected = tuple(spec["input_shape"])
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise UsageError(f"{spec['name']}: calibration batch has shape {batch.shape}, "
                             f"the model takes (N, {', '.join(map(str, expected))})")
        features = calibrate(model, batch, seed)
        if check is not None:
            check(features)
        info["calibration_images"] = int(len(batch))
    else:
        path = find_imagenet_weights(spec, weights)
        model.load_weights(str(path))
        info["weights_file"] = str(path)
    model.save(str(dst))
    info["params"] = int(model.count_params())
    return info


def _application(name: str) -> Callable[..., dict[str, Any]]:
    """A builder for ``keras.applications.<name>`` with 1000 logits and no weights download."""

    def builder(*, model: dict[str, Any], weights: str, seed: int, dst: Path,
                calibration: str | None) -> dict[str, Any]:
        import keras

        def make() -> "keras.Model":
            return getattr(keras.applications, name)(
                input_shape=tuple(model["input_shape"]), weights=None,
                classes=model["classes"], classifier_activation=None)

        return _build(model, make, weights, seed, dst, calibration)

    builder.__name__ = name.lower()
    builder.__doc__ = f"Build ``keras.applications.{name}`` (see :func:`_build`)."
    return builder


mobilenetv2 = _application("MobileNetV2")
resnet101v2 = _application("ResNet101V2")
densenet121 = _application("DenseNet121")
inceptionv3 = _application("InceptionV3")


def tiny_architecture(input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10) -> "keras.Model":
    """A small network with the operators that matter in the paper's four.

    Convolutions with ``same`` and ``valid`` padding, a depthwise convolution, batch norm, ReLU6,
    a residual add, a concatenation, max and average pooling, global average pooling and a dense
    head. Standard layers only (no Lambda), so it loads with ``safe_mode=True``; every layer is
    named, so two builds have the same weight paths.
    """
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    shortcut = x
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_conv")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(6.0, name="dw_relu6")(x)
    x = layers.Conv2D(16, 1, use_bias=False, name="pw_conv")(x)
    x = layers.BatchNormalization(name="pw_bn")(x)
    x = layers.Add(name="residual_add")([shortcut, x])
    x = layers.MaxPooling2D(2, name="max_pool")(x)
    conv = layers.Conv2D(24, 3, padding="valid", name="valid_conv")(x)
    pooled = layers.AveragePooling2D(3, strides=1, padding="valid", name="avg_pool")(x)
    x = layers.Concatenate(name="concat")([conv, pooled])
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_keras")


def tiny_keras(*, model: dict[str, Any], weights: str, seed: int, dst: Path,
               calibration: str | None) -> dict[str, Any]:
    """Build :func:`tiny_architecture` (32x32x3 → 10 logits); converts and runs in seconds."""
    return _build(model, lambda: tiny_architecture(tuple(model["input_shape"]), model["classes"]),
                  weights, seed, dst, calibration)


def generated_keras(spec: GenSpec) -> "keras.Model":
    """A generated model's architecture: its Keras source (:func:`render_keras`), executed."""
    namespace: dict[str, Any] = {}
    exec(compile(render_keras(spec.annotated(), spec.name), f"<{spec.name}>", "exec"), namespace)
    return namespace["build"]()


def gen(*, model: dict[str, Any], weights: str, seed: int, dst: Path,
        calibration: str | None) -> dict[str, Any]:
    """Build a generated model (:mod:`fuzzconv.gen`) from the spec the model carries;
    calibrated weights only, as it has no real ones."""
    if weights != "calibrated":
        raise UsageError(f"{model['name']} is generated: it has calibrated weights only")
    import keras

    spec = GenSpec.from_dict(model["generated"], model["name"])
    # Cleared before seeding: the names Keras gives the model's operations then do not depend
    # on what the worker built before, so a spec always gives the same model file.
    keras.backend.clear_session()
    return _build(model, lambda: generated_keras(spec), weights, seed, dst, calibration,
                  check=lambda features: check_spread(features, spec.name))


#: The builders :class:`fuzzconv.zoo.ModelSpec` names (``builder``), for the ``tf`` worker.
BUILDERS = {f.__name__: f for f in (mobilenetv2, resnet101v2, densenet121, inceptionv3, tiny_keras,
                                    gen)}
