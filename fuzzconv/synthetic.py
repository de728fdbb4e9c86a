"""Deterministic synthetic images: textures, shapes, gradients, noise levels and colour casts.

The default corpus follows the shipped photographs with these (:func:`fuzzconv.corpora.
default_corpus`), and random weights are calibrated on another seed of them. Image ``i`` of a seed
is the same whatever ``n`` and wherever it is generated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Bump when the generator changes, so caches keyed on the old images are not reused.
SYNTHETIC_VERSION = "synthetic-v1"
SYNTHETIC_SIZE = 256


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
