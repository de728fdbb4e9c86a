"""Image sets to feed the models, and each model's preprocessing.

A :class:`Corpus` is an ordered list of image files with a content digest; the digest, together
with :func:`~fuzzconv.preprocessing.preprocess_id`, is what the cache keys model inputs and
outputs on. Three sources:

- :func:`default_corpus`: the shipped real photographs (``corpora/natural/``) followed by a
  deterministic synthetic set (:mod:`fuzzconv.synthetic`) generated into the cache folder on first
  use.
- :func:`from_directory`: any folder of JPEG/PNG images, labelled from an ImageNet-style synset
  layout or a ``filename label`` list file when one is there.
- :meth:`Corpus.subset`: the few images the input shrinker keeps.

Each model's preprocessing (:mod:`fuzzconv.preprocessing`) turns a corpus into its input batch.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from .cache import cache_home as cache_root
from .errors import UsageError
from .preprocessing import RECIPES, Recipe, center_crop_box, preprocess, preprocess_id
from .synthetic import SYNTHETIC_VERSION, generate_synthetic
from .zoo import ModelSpec

__all__ = ["Corpus", "select", "default_corpus", "calibration_corpus", "from_directory",
           "imagenet_synsets", "SHIPPED_DIR", "IMAGE_SUFFIXES", "LABEL_FILES",
           # each model's preprocessing, which a corpus is turned into input batches with
           "RECIPES", "Recipe", "center_crop_box", "preprocess", "preprocess_id"]

#: The shipped corpus: real photographs and the ImageNet synset list (a source checkout's
#: ``corpora/`` folder, next to the package).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "corpora"

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: Ground-truth list files recognised at the top of a corpus folder, in order of preference.
LABEL_FILES = ("labels.txt", "val.txt", "ground_truth.txt")
_SYNSET = re.compile(r"^n\d{8}$")


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
            h.update(_file_digest(Path(path)))
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


#: What this process learnt of each image file, by (path, size, modification time): whether it
#: decodes, and its sha256. A generated-model hunt builds a model every few seconds, and each
#: asks again for the calibration images and for a corpus's digest.
_DECODED: dict[tuple[str, int, int], bool] = {}
_DIGESTS: dict[tuple[str, int, int], bytes] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _file_digest(path: Path) -> bytes:
    key = _file_key(path)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(path.read_bytes()).digest()
    return _DIGESTS[key]


def _readable(path: Path) -> bool:
    # Image.open only reads the header; load() decodes, which is what finds truncated files.
    try:
        key = _file_key(path)
    except OSError:
        return False
    if key not in _DECODED:
        try:
            with Image.open(path) as img:
                img.load()
            _DECODED[key] = True
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            _DECODED[key] = False
    return _DECODED[key]


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
