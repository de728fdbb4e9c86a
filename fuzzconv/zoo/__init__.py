"""The model zoo: what each model is, without building it.

A :class:`ModelSpec` is plain data the orchestrator can read without importing a framework. The
builders (``keras_apps``, ``torchvision_models``) run inside the worker of the model's
source framework, which writes the source artifact; see :mod:`fuzzconv.zoo.weights` for where
the weights come from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..errors import UsageError
from ..gen import catalog


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo.

    Args:
        name: the zoo name (PyTorch twins carry a ``torch:`` prefix).
        source: the source format, ``keras`` or ``torch``.
        family: the worker family that builds and runs the source.
        input_shape: one image without batch axis, in the model's layout (HWC or CHW).
        layout: ``NHWC`` or ``NCHW``.
        preprocessing: the preprocessing id in :mod:`fuzzconv.corpora`.
        classes: the number of output classes.
        builder: the name of the function that builds it and gives it weights, among the
            builders of its source framework (see :func:`builder_of`).
        imagenet_files: file names of real weights in the framework's own cache folder.
        tiny: True for the small test models.
        paper: True for the four models of the 2022 study and their twins.
        params_m: weights, in millions (what converting and compiling scale with).
        gmacs: multiply-accumulates per image, in billions (what inference scales with).
        generated: a generated model's spec (:mod:`fuzzconv.gen`), its canonical JSON as a dict;
            None for the zoo's own models.
    """

    name: str
    source: str
    family: str
    input_shape: tuple[int, int, int]
    layout: str
    preprocessing: str
    classes: int
    builder: str
    imagenet_files: tuple[str, ...] = ()
    tiny: bool = False
    paper: bool = False
    params_m: float = 1.0
    gmacs: float = 0.1
    generated: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def image_size(self) -> int:
        return self.input_shape[0] if self.layout == "NHWC" else self.input_shape[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["imagenet_files"] = list(self.imagenet_files)
        return d


# Published sizes: weights (M) and multiply-accumulates per image (G) at the input size used.
SIZES = {"mobilenetv2": (3.5, 0.30), "resnet101v2": (44.7, 7.8), "densenet121": (8.1, 2.87),
         "inceptionv3": (23.9, 5.7)}


def _keras(name: str, fn: str, size: int, prep: str, weights_file: str) -> ModelSpec:
    return ModelSpec(name, "keras", "tf", (size, size, 3), "NHWC", prep, 1000,
                     fn, (weights_file,), paper=True, params_m=SIZES[name][0],
                     gmacs=SIZES[name][1])


def _torch(name: str, fn: str, size: int, prep: str, twin: str, *weights_files: str) -> ModelSpec:
    return ModelSpec(name, "torch", "torch", (3, size, size), "NCHW", prep, 1000,
                     fn, weights_files, paper=True, params_m=SIZES[twin][0],
                     gmacs=SIZES[twin][1])


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        # The paper's four, Keras as source. Real weights: Keras's cache file names.
        _keras("mobilenetv2", "mobilenetv2", 224, "keras_tf",
               "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"),
        _keras("resnet101v2", "resnet101v2", 224, "keras_tf",
               "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5"),
        _keras("densenet121", "densenet121", 224, "keras_torch",
               "densenet121_weights_tf_dim_ordering_tf_kernels.h5"),
        _keras("inceptionv3", "inceptionv3", 299, "keras_tf",
               "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"),
        # Their PyTorch twins. Real weights: torchvision's hub checkpoint names.
        _torch("torch:mobilenet_v2", "mobilenet_v2", 224, "torchvision_224", "mobilenetv2",
               "mobilenet_v2-7ebf99e0.pth", "mobilenet_v2-b0353104.pth"),
        _torch("torch:resnet101", "resnet101", 224, "torchvision_224", "resnet101v2",
               "resnet101-cd907fc2.pth",
               "resnet101-63fe2227.pth"),
        _torch("torch:densenet121", "densenet121", 224, "torchvision_224", "densenet121",
               "densenet121-a639ec97.pth"),
        _torch("torch:inception_v3", "inception_v3", 299, "torchvision_299", "inceptionv3",
               "inception_v3_google-0cc3c7bd.pth"),
        # Tiny models with the operators that matter in the paper's networks.
        ModelSpec("tiny_keras", "keras", "tf", (32, 32, 3), "NHWC", "keras_tf_32", 10,
                  "tiny_keras", tiny=True, params_m=0.02, gmacs=0.002),
        ModelSpec("tiny_torch", "torch", "torch", (3, 32, 32), "NCHW", "torchvision_32", 10,
                  "tiny_torch", tiny=True, params_m=0.02, gmacs=0.002),
    ]
}


_GENERATED: dict[str, ModelSpec] = {}


def get_model(name: str) -> ModelSpec:
    """The zoo model or generated model (``gen:keras:<id>``, ``gen:torch:<id>``) of a name.

    Raises:
        UsageError: an unknown name, or a generated model's stored spec that this version
            cannot build (one line, naming the layer).
    """
    spec = MODELS.get(name)
    if spec is not None:
        return spec
    if catalog.is_generated(name):
        if name not in _GENERATED:  # names are digests of their specs: one name, one model
            _GENERATED[name] = ModelSpec(**catalog.model_fields(catalog.lookup(name)))
        return _GENERATED[name]
    raise UsageError(f"unknown model {name!r} (known: {', '.join(MODELS)}; generated: "
                     f"{', '.join(catalog.FAMILIES)})")


def builder_of(model: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """The function that builds a model (given as :meth:`ModelSpec.to_dict`), in the worker of its
    source framework: ``keras`` builders in :mod:`.keras_apps`, ``torch`` ones in
    :mod:`.torchvision_models` (imported here, so the orchestrator never loads them)."""
    if model["source"] == "keras":
        from .keras_apps import BUILDERS
    elif model["source"] == "torch":
        from .torchvision_models import BUILDERS
    else:
        raise UsageError(f"{model['name']}: no builders for source {model['source']!r}")
    try:
        return BUILDERS[model["builder"]]
    except KeyError:
        raise UsageError(f"{model['name']}: no {model['source']} builder "
                         f"{model['builder']!r}") from None
