"""Each model's preprocessing: images to input batches exactly as its framework's own functions do.

Preprocessing is pure numpy + PIL, so the orchestrator can build input batches without importing a
framework. Each id of :attr:`fuzzconv.zoo.ModelSpec.preprocessing` names a :class:`Recipe` (how to
resize and crop, how to scale pixels) that reproduces the framework's own functions: Keras's
``load_img(target_size, interpolation="bilinear")`` + ``preprocess_input`` and torchvision's
``Resize`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize``; ``tests/integration/
test_preprocessing.py`` checks each id against the framework. The output layout is the model's
(``spec.layout``), so a recipe is independent of how a model lays out its input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import UsageError
from .zoo import ModelSpec


def _scale_tf(x: np.ndarray) -> np.ndarray:
    x /= 127.5
    x -= 1.0
    return x


_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def _scale_torch(x: np.ndarray) -> np.ndarray:
    # Divide, subtract, divide, all in float32: the order and precision both Keras and
    # torchvision use, so the results agree bit for bit rather than within rounding.
    x /= 255.0
    x -= _IMAGENET_MEAN
    x /= _IMAGENET_STD
    return x


def _scale_caffe(x: np.ndarray) -> np.ndarray:
    x = x[..., ::-1].copy()
    x -= _CAFFE_MEAN_BGR
    return x


#: Pixel scaling modes on a float32 NHWC RGB batch of 0..255 values, named as Keras names them.
SCALINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tf": _scale_tf,
    "torch": _scale_torch,
    "caffe": _scale_caffe,
}


@dataclass(frozen=True)
class Recipe:
    """How one preprocessing id turns an image into model input.

    Args:
        scaling: a key of :data:`SCALINGS`.
        size: the output side the recipe is defined for; None takes the model's
            ``spec.image_size`` (Keras's applications share one recipe across input sizes).
            Defaults to None.
        resize_short: None stretches the image to ``size x size`` (Keras ``load_img`` with a
            target size); a number resizes the short side to it, keeping the aspect ratio, then
            centre-crops ``size x size`` (torchvision ``Resize`` + ``CenterCrop``). Defaults to None.
    """

    scaling: str
    size: int | None = None
    resize_short: int | None = None


RECIPES: dict[str, Recipe] = {
    "keras_tf": Recipe("tf"),
    "keras_torch": Recipe("torch"),
    "keras_caffe": Recipe("caffe"),
    "keras_tf_32": Recipe("tf", size=32),
    "torchvision_224": Recipe("torch", size=224, resize_short=256),
    "torchvision_299": Recipe("torch", size=299, resize_short=342),
    "torchvision_32": Recipe("torch", size=32, resize_short=36),
}


def _recipe(spec: ModelSpec) -> tuple[Recipe, int]:
    try:
        recipe = RECIPES[spec.preprocessing]
    except KeyError:
        raise UsageError(
            f"model {spec.name!r} has unknown preprocessing {spec.preprocessing!r} "
            f"(known: {', '.join(RECIPES)})"
        ) from None
    if recipe.size is not None and recipe.size != spec.image_size:
        raise UsageError(
            f"model {spec.name!r} takes {spec.image_size}px images but preprocessing "
            f"{spec.preprocessing!r} makes {recipe.size}px ones"
        )
    return recipe, spec.image_size


def preprocess_id(spec: ModelSpec) -> str:
    """A stable name of what :func:`preprocess` does for ``spec``, for cache keys."""
    _, size = _recipe(spec)
    return f"{spec.preprocessing}:{size}:{spec.layout}"


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` box torchvision's ``CenterCrop(size)`` cuts.

    torchvision rounds the offset with Python's ``round``, which rounds halves to even
    (``16.5 -> 16``, ``17.5 -> 18``); flooring instead shifts odd margins by a pixel.
    """
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def _resize(img: Image.Image, recipe: Recipe, size: int) -> Image.Image:
    if recipe.resize_short is None:
        return img.resize((size, size), Image.Resampling.BILINEAR)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    # torchvision truncates the long side (int(), not round()).
    new_long = int(recipe.resize_short * long / short)
    new_w, new_h = (recipe.resize_short, new_long) if w <= h else (new_long, recipe.resize_short)
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return img.crop(center_crop_box(new_w, new_h, size))


def _open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def preprocess(images: Sequence[Image.Image | str | os.PathLike[str]], spec: ModelSpec) -> np.ndarray:
    """Turn images into one float32 input batch for ``spec``'s model, in ``spec.layout``.

    Args:
        images (list[PIL.Image.Image] | list[Path | str]): images, or paths to open.
        spec (ModelSpec): the model; its ``preprocessing`` id and ``image_size`` choose the recipe.

    Returns:
        np.ndarray: shape ``(N, size, size, 3)`` for NHWC models, ``(N, 3, size, size)`` for NCHW.
    """
    if not images:
        raise ValueError("preprocess needs at least one image")
    recipe, size = _recipe(spec)
    pixels = []
    for image in images:
        img = image.convert("RGB") if isinstance(image, Image.Image) else _open_rgb(image)
        pixels.append(np.asarray(_resize(img, recipe, size), dtype=np.float32))
    batch = SCALINGS[recipe.scaling](np.stack(pixels))
    if spec.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)
