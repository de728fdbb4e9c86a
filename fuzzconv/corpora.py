"""Image sets to feed the models, and each model's preprocessing.

A :class:`Corpus` is an ordered list of image files with a content digest; the digest, together
with :func:`preprocess_id`, is what the cache keys model inputs and outputs on. Three sources:

- :func:`default_corpus`: the shipped real photographs (``corpora/natural/``) followed by a
  deterministic synthetic set generated into the cache folder on first use.
- :func:`from_directory`: any folder of JPEG/PNG images, labelled from an ImageNet-style synset
  layout or a ``filename label`` list file when one is there.
- :meth:`Corpus.subset`: the few images the input shrinker keeps.

Preprocessing is pure numpy + PIL, so the orchestrator can build input batches without importing a
framework. Each id of :attr:`fuzzconv.zoo.ModelSpec.preprocessing` names a :class:`Recipe` (how to
resize and crop, how to scale pixels) that reproduces the framework's own functions: Keras's
``load_img(target_size, interpolation="bilinear")`` + ``preprocess_input`` and torchvision's
``Resize`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize``; ``tests/integration/
test_preprocessing.py`` checks each id against the framework. The output layout is the model's
(``spec.layout``), so a recipe is independent of how a model lays out its input.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .cache import cache_home as cache_root
from .errors import UsageError
from .zoo import ModelSpec

#: The shipped corpus: real photographs and the ImageNet synset list (a source checkout's
#: ``corpora/`` folder, next to the package).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "corpora"

#: Bump when the synthetic generator changes, so caches keyed on the old images are not reused.
SYNTHETIC_VERSION = "synthetic-v1"
SYNTHETIC_SIZE = 256

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: Ground-truth list files recognised at the top of a corpus folder, in order of preference.
LABEL_FILES = ("labels.txt", "val.txt", "ground_truth.txt")
_SYNSET = re.compile(r"^n\d{8}$")


# --------------------------------------------------------------------------------------------
# Preprocessing


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


# --------------------------------------------------------------------------------------------
# Corpus


@dataclass(frozen=True)
class Corpus:
    """An ordered set of images.

    Args:
        name: what to call it in reports.
        paths: the image files, absolute.
        names: one stable relative name per image (``corpora/natural/coffee.png``); it goes into
            the digest and into findings' ``failing_inputs``.
        labels: ImageNet class index per image (None for an image without one), or None when
            the corpus has no labels. Defaults to None.
        skipped: unreadable files left out when the corpus was built. Defaults to 0.
    """

    name: str
    paths: tuple[str, ...]
    names: tuple[str, ...]
    labels: tuple[int | None, ...] | None = None
    skipped: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.paths):
            raise ValueError("Corpus needs one name per path")
        if self.labels is not None and len(self.labels) != len(self.paths):
            raise ValueError("Corpus needs one label per path")

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def digest(self) -> str:
        """sha256 over each image's name and file bytes, in order.

        Labels are left out on purpose: they do not change what a model computes, so relabelling
        a corpus must not invalidate cached outputs.
        """
        h = hashlib.sha256()
        for name, path in zip(self.names, self.paths):
            h.update(name.encode())
            h.update(b"\0")
            h.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return h.hexdigest()

    def load_inputs(self, spec: ModelSpec) -> np.ndarray:
        """The whole corpus as one input batch for ``spec``'s model (see :func:`preprocess`)."""
        return preprocess(self.paths, spec)

    def subset(self, indices: Sequence[int]) -> Corpus:
        """The images at ``indices``, in that order."""
        if not indices:
            raise ValueError("a subset needs at least one index")
        picked = [self._index(i) for i in indices]
        return Corpus(
            name=f"{self.name}[{len(picked)} of {len(self)}]",
            paths=tuple(self.paths[i] for i in picked),
            names=tuple(self.names[i] for i in picked),
            labels=None if self.labels is None else tuple(self.labels[i] for i in picked),
        )

    def _index(self, i: int) -> int:
        # Negative indices would silently pick from the end; for a shrinker that is a bug.
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for a corpus of {len(self)}")
        return i


def select(images: str | os.PathLike[str] | None = None, limit: int | None = None) -> Corpus:
    """The corpus a command works on: ``images`` or the default set, cut to the first ``limit``."""
    corpus = from_directory(images) if images is not None else default_corpus()
    if limit is not None:
        if limit < 1:
            raise UsageError("--limit must be at least 1")
        corpus = corpus.subset(list(range(min(limit, len(corpus)))))
    return corpus


def _readable(path: Path) -> bool:
    # Image.open only reads the header; load() decodes, which is what finds truncated files.
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True


def _keep_readable(paths: list[Path], where: Path) -> tuple[list[Path], int]:
    good, bad = [], []
    for p in paths:
        (good if _readable(p) else bad).append(p)
    if bad and good:  # with nothing usable the caller's error says it all
        warnings.warn(
            f"skipped {len(bad)} unreadable image file(s) in {where} (first: {bad[0].name})",
            stacklevel=3,
        )
    return good, len(bad)


def _synthetic(n: int, seed: int) -> list[Path]:
    folder = SYNTHETIC_VERSION if seed == 0 else f"{SYNTHETIC_VERSION}-seed{seed}"
    return generate_synthetic(cache_root() / "corpora" / folder, n, seed)


def _shipped_name(path: Path) -> str:
    # Synthetic files live in the cache, under corpora/<version>/ like the shipped ones under the
    # checkout, so both get names of the same shape.
    if path.is_relative_to(SHIPPED_DIR):
        return f"corpora/{path.relative_to(SHIPPED_DIR).as_posix()}"
    return f"corpora/{path.parent.name}/{path.name}"


def _shipped_corpus(name: str, paths: list[Path]) -> Corpus:
    paths, skipped = _keep_readable(paths, SHIPPED_DIR)
    return Corpus(name, tuple(map(str, paths)), tuple(map(_shipped_name, paths)), skipped=skipped)


def default_corpus(n: int = 200) -> Corpus:
    """The shipped default: the real photographs first, then synthetic images up to ``n``.

    The synthetic images (seed 0) are generated once into ``cache_root()/corpora/synthetic-v1/``
    and reused; the same index always gives the same image, whatever ``n``.
    """
    if n < 1:
        raise UsageError(f"the default corpus needs n >= 1, got {n}")
    natural_dir = SHIPPED_DIR / "natural"
    natural = sorted(p for p in natural_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not natural:
        raise UsageError(f"the shipped photographs are missing: no images in {natural_dir}")
    natural = natural[:n]
    return _shipped_corpus("default", natural + _synthetic(n - len(natural), seed=0))


def calibration_corpus(n: int = 32) -> Corpus:
    """Images for calibrating random weights (see :mod:`fuzzconv.zoo.weights`).

    Synthetic images drawn with seed 1, so the batch that sets a model's statistics is never one of
    the images the model is then evaluated on.
    """
    if n < 1:
        raise UsageError(f"the calibration corpus needs n >= 1, got {n}")
    return _shipped_corpus("calibration", _synthetic(n, seed=1))


def from_directory(path: str | os.PathLike[str]) -> Corpus:
    """Every JPEG and PNG under ``path``, recursively, sorted by relative path.

    Labels come from a ground-truth list at the top of the folder (the first of
    :data:`LABEL_FILES` present: ``filename label`` per line, label an ImageNet class index or a
    synset id such as ``n01440764``), or else from synset-named parent folders
    (``n01440764/x.JPEG``), mapped to class indices by ``corpora/imagenet_synsets.txt``, the 1000
    ImageNet-1k synsets in the standard (sorted) order. Without that file, folders are numbered in
    sorted order of those present, which equals the standard indices only for a folder holding all
    1000 classes. Files that PIL cannot decode are skipped with a warning and counted in
    ``skipped``.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise UsageError(f"corpus directory {root} does not exist")
    if not root.is_dir():
        raise UsageError(f"corpus path {root} is not a directory")
    found = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not found:
        raise UsageError(f"no JPEG or PNG images in {root}")
    paths, skipped = _keep_readable(found, root)
    if not paths:
        raise UsageError(f"no readable images in {root} ({skipped} file(s) could not be decoded)")
    names = [p.relative_to(root).as_posix() for p in paths]
    labels = _labels_from_file(root, names) or _labels_from_synsets(paths)
    return Corpus(root.name or str(root), tuple(map(str, paths)), tuple(names), labels, skipped)


@cache
def imagenet_synsets() -> tuple[str, ...] | None:
    """The 1000 ImageNet-1k synsets in class-index order, or None when the list is not shipped."""
    listing = SHIPPED_DIR / "imagenet_synsets.txt"
    if not listing.is_file():
        return None
    return tuple(listing.read_text().split())


def _class_index(token: str, where: str) -> int:
    if token.isdigit():
        return int(token)
    synsets = imagenet_synsets()
    if _SYNSET.match(token) and synsets is not None and token in synsets:
        return synsets.index(token)
    raise UsageError(f"{where}: label {token!r} is neither a class index nor a known ImageNet synset")


def _labels_from_file(root: Path, names: list[str]) -> tuple[int | None, ...] | None:
    listing = next((root / f for f in LABEL_FILES if (root / f).is_file()), None)
    if listing is None:
        return None
    by_name: dict[str, int] = {}
    for lineno, line in enumerate(listing.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise UsageError(f"{listing}:{lineno}: expected 'filename label', got {line!r}")
        by_name[parts[0]] = _class_index(parts[1], f"{listing}:{lineno}")
    # ImageNet's list names files by base name; a nested layout may name them by relative path.
    labels = tuple(by_name.get(n, by_name.get(n.rsplit("/", 1)[-1])) for n in names)
    if all(label is None for label in labels):
        warnings.warn(f"{listing} names none of the images found; ignoring it", stacklevel=3)
        return None
    return labels


def _labels_from_synsets(paths: list[Path]) -> tuple[int | None, ...] | None:
    folders = [p.parent.name if _SYNSET.match(p.parent.name) else None for p in paths]
    present = sorted({f for f in folders if f is not None})
    if not present:
        return None
    synsets = imagenet_synsets()
    if synsets is None:
        warnings.warn(
            "corpora/imagenet_synsets.txt is missing: numbering synset folders in sorted order",
            stacklevel=3,
        )
        synsets = tuple(present)
    index = {s: i for i, s in enumerate(synsets)}
    return tuple(None if f is None else index.get(f) for f in folders)


# --------------------------------------------------------------------------------------------
# Synthetic images
#
# Everything random is drawn with Generator.random(), whose stream NumPy keeps stable across
# versions (unlike normal() or integers(), whose algorithms it may change), and each image gets
# its own generator seeded by (seed, index), so image i is the same whatever n is.

_Canvas = np.ndarray  # float64, (S, S, 3), values in [0, 1]


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.random(3)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:SYNTHETIC_SIZE, 0:SYNTHETIC_SIZE] / SYNTHETIC_SIZE
    return yy, xx


def _mix(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> _Canvas:
    return a * (1.0 - t[..., None]) + b * t[..., None]


def _gradient(rng: np.random.Generator) -> _Canvas:
    yy, xx = _grid()
    if rng.random() < 0.3:
        cy, cx = rng.random(2)
        t = np.hypot(yy - cy, xx - cx) / np.sqrt(2.0)
    else:
        angle = 2 * np.pi * rng.random()
        t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) / np.sqrt(2.0) + 0.5
    return _mix(np.clip(t, 0.0, 1.0), _colour(rng), _colour(rng))


def _grating(rng: np.random.Generator) -> _Canvas:
    yy, xx = _grid()
    freq = 2 + 46 * rng.random()
    angle = np.pi * rng.random()
    wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + 2 * np.pi * rng.random())
    t = (wave > 0).astype(float) if rng.random() < 0.4 else 0.5 + 0.5 * wave
    return _mix(t, _colour(rng), _colour(rng))


def _checker(rng: np.random.Generator) -> _Canvas:
    yy, xx = _grid()
    cell = (4 + 60 * rng.random()) / SYNTHETIC_SIZE
    angle = 0.5 * np.pi * rng.random()
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    t = (np.floor(u / cell) + np.floor(v / cell)) % 2
    return _mix(t, _colour(rng), _colour(rng))


def _shapes(rng: np.random.Generator) -> _Canvas:
    img = Image.new("RGB", (SYNTHETIC_SIZE, SYNTHETIC_SIZE), _rgb(_colour(rng)))
    draw = ImageDraw.Draw(img)
    for _ in range(3 + int(10 * rng.random())):
        kind = rng.random()
        x0, y0 = rng.random(2) * SYNTHETIC_SIZE
        w, h = (0.05 + 0.45 * rng.random(2)) * SYNTHETIC_SIZE
        fill = _rgb(_colour(rng))
        if kind < 0.35:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        elif kind < 0.7:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            corners = 3 + int(4 * rng.random())
            pts = rng.random((corners, 2)) * [w, h] + [x0, y0]
            draw.polygon([tuple(p) for p in pts], fill=fill)
    return np.asarray(img, dtype=np.float64) / 255.0


def _clouds(rng: np.random.Generator) -> _Canvas:
    # Value noise: random coarse grids, smoothly upscaled, summed over octaves.
    field = np.zeros((SYNTHETIC_SIZE, SYNTHETIC_SIZE))
    octaves = 2 + int(4 * rng.random())
    for k in range(octaves):
        cells = 2 ** (k + 2)
        coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
        fine = coarse.resize((SYNTHETIC_SIZE, SYNTHETIC_SIZE), Image.Resampling.BICUBIC)
        field += np.asarray(fine, dtype=np.float64) * 0.5**k
    field = (field - field.min()) / max(field.max() - field.min(), 1e-9)
    low, mid, high = _colour(rng), _colour(rng), _colour(rng)
    return np.where(field[..., None] < 0.5, _mix(2 * field, low, mid), _mix(2 * field - 1, mid, high))


def _noise_field(rng: np.random.Generator) -> _Canvas:
    return _colour(rng) + (0.1 + 0.4 * rng.random()) * _gaussian(rng, (SYNTHETIC_SIZE, SYNTHETIC_SIZE, 3))


def _gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # Box-Muller on random(), for the stream stability noted above, using both the cosine and
    # the sine half of each pair; 1 - u keeps the log away from 0.
    half = (int(np.prod(shape)) + 1) // 2
    radius = np.sqrt(-2.0 * np.log(1.0 - rng.random(half)))
    angle = 2 * np.pi * rng.random(half)
    pairs = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])
    return pairs[: int(np.prod(shape))].reshape(shape)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.round(np.clip(c, 0.0, 1.0) * 255))
    return r, g, b


#: Content kinds, cycled by index so every kind is equally present in any prefix of the set.
SYNTHETIC_KINDS: dict[str, Callable[[np.random.Generator], _Canvas]] = {
    "gradient": _gradient,
    "grating": _grating,
    "checker": _checker,
    "shapes": _shapes,
    "clouds": _clouds,
    "noise": _noise_field,
}
#: Standard deviation of the Gaussian noise added on top, cycled after the kinds.
NOISE_LEVELS = (0.0, 0.01, 0.03, 0.08, 0.2)
#: Colour casts: (per-channel gain, offset added after), cycled after the noise levels.
COLOUR_CASTS: dict[str, tuple[tuple[float, float, float], float]] = {
    "none": ((1.0, 1.0, 1.0), 0.0),
    "warm": ((1.15, 1.0, 0.75), 0.0),
    "cool": ((0.8, 0.95, 1.2), 0.0),
    "green": ((0.85, 1.15, 0.85), 0.0),
    "dim": ((0.45, 0.45, 0.45), 0.0),
    "washed": ((0.55, 0.55, 0.55), 0.4),
}


def _plan(index: int) -> tuple[str, float, str]:
    kinds, casts = list(SYNTHETIC_KINDS), list(COLOUR_CASTS)
    return (
        kinds[index % len(kinds)],
        NOISE_LEVELS[index // len(kinds) % len(NOISE_LEVELS)],
        casts[index // (len(kinds) * len(NOISE_LEVELS)) % len(casts)],
    )


def _synthetic_stem(index: int) -> str:
    kind, level, cast = _plan(index)
    return f"{index:04d}-{kind}-n{round(level * 100):02d}-{cast}"


def synthetic_image(index: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """Synthetic image ``index``: its file stem and its pixels, uint8 ``(256, 256, 3)``."""
    kind, level, cast = _plan(index)
    rng = np.random.default_rng([seed, index])
    canvas = SYNTHETIC_KINDS[kind](rng)
    if level:
        canvas = canvas + level * _gaussian(rng, canvas.shape)
    gain, offset = COLOUR_CASTS[cast]
    canvas = canvas * np.asarray(gain) + offset
    pixels = np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)
    return _synthetic_stem(index), pixels


def generate_synthetic(directory: str | os.PathLike[str], n: int, seed: int = 0) -> list[Path]:
    """Write synthetic images ``0..n-1`` as PNGs into ``directory``, keeping those already there.

    A directory holds the images of one seed: files present are trusted, not regenerated.

    Returns:
        list[Path]: the ``n`` files, in index order.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(n):
        target = out / f"{_synthetic_stem(index)}.png"
        if not target.is_file():
            _, pixels = synthetic_image(index, seed)
            # Write then rename, so a concurrent reader or an interrupted run never sees half a PNG.
            partial = out / f".{target.stem}.{os.getpid()}.tmp"
            # Level 1: these are cache files, and on noisy images it saves little less than the
            # default level in about half the time.
            Image.fromarray(pixels).save(partial, format="PNG", compress_level=1)
            os.replace(partial, target)
        files.append(target)
    return files
