"""The study's 95 % intervals: Wilson for proportions (label changes), the percentile bootstrap for
medians, and a paired bootstrap for the ratio of two configurations' medians timed in the same
rounds. Pure NumPy and seeded, so the report can recompute any of them from ``study.json``.

Why these: a label-change share is a count of images out of a corpus, where the normal
approximation fails exactly where the study lives (0 of 200, 1 of 8); Wilson's interval stays inside
[0, 1] and is not empty at 0. Times are skewed (a busy moment makes one pass slow), so the median and
a bootstrap that assumes nothing about the shape. Two configurations timed in one round share that
round's state of the machine, so their ratio is bootstrapped by resampling whole rounds: drift that
hits both cancels instead of widening the interval.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .configs import BOOTSTRAP_RESAMPLES

#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k`` of ``n``, as fractions in [0, 1].

    Args:
        k: successes (images whose top-1 label changed).
        n: trials (images); 0 gives the uninformative (0, 1).
        z: the normal quantile. Defaults to the 95 % one.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"{k} of {n} is not a proportion")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The exact ends are 0 and 1 at k = 0 and k = n; rounding must not leave them a hair inside.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def pct_ci(k: int, n: int) -> dict[str, float]:
    """``k`` of ``n`` as a percentage with its Wilson 95 % interval, in percent."""
    lo, hi = wilson_ci(k, n)
    return {"pct": 100.0 * k / n if n else 0.0, "ci_low": 100.0 * lo, "ci_high": 100.0 * hi}


def median_ci(samples: Sequence[float], seed: int = 0,
              resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """The median of ``samples`` with a seeded 95 % percentile-bootstrap confidence interval."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    rng = np.random.default_rng(seed)
    medians = np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
    lo, hi = np.quantile(medians, [0.025, 0.975])
    med = float(np.median(a))
    half = float(hi - lo) / 2
    return {"median": med, "ci_low": float(lo), "ci_high": float(hi), "half_width": half,
            "rel_half_width": half / med if med > 0 else math.inf, "samples": int(a.size)}


def paired_ratio_ci(num: Sequence[float], den: Sequence[float], seed: int = 0,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """median(num) / median(den) with a 95 % bootstrap interval that resamples rounds in pairs.

    Args:
        num: one time per round for the configuration measured.
        den: one time per round, the same rounds, for what it is compared with (its baseline).
        seed: the bootstrap's seed.
        resamples: bootstrap resamples.

    Returns:
        ``{"ratio", "ci_low", "ci_high", "half_width", "rel_half_width", "rounds"}``;
        ``rel_half_width`` is the half-width over the ratio.
    """
    a = np.asarray(num, dtype=np.float64)
    b = np.asarray(den, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need one value per round each, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no rounds")
    if np.any(b <= 0) or np.any(a <= 0):
        raise ValueError("times must be positive")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, a.size, size=(resamples, a.size))
    ratios = np.median(a[pick], axis=1) / np.median(b[pick], axis=1)
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    ratio = float(np.median(a) / np.median(b))
    half = float(hi - lo) / 2
    return {"ratio": ratio, "ci_low": float(lo), "ci_high": float(hi), "half_width": half,
            "rel_half_width": half / ratio, "rounds": int(a.size)}


def contains(ci: dict[str, float], value: float) -> bool:
    """Whether ``value`` lies within the interval ``ci`` (ends included)."""
    return ci["ci_low"] <= value <= ci["ci_high"]


def unpaired_ratio_ci(num: Sequence[float], den: Sequence[float], seed: int = 0,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """median(num) / median(den) with a 95 % bootstrap interval resampling each side alone: for
    times not taken in the same rounds (one device against another)."""
    a = np.asarray(num, dtype=np.float64)
    b = np.asarray(den, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("no samples")
    rng = np.random.default_rng(seed)
    ratios = (np.median(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)
              / np.median(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1))
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    ratio = float(np.median(a) / np.median(b))
    half = float(hi - lo) / 2
    return {"ratio": ratio, "ci_low": float(lo), "ci_high": float(hi), "half_width": half,
            "rel_half_width": half / ratio, "rounds": int(min(a.size, b.size))}


def effect(ratio: dict[str, float]) -> dict[str, float]:
    """A ratio as a size of effect, at least 1 (0.5× and 2× are the same size), with its interval
    mapped the same way (an interval across 1 starts at 1)."""
    r, lo, hi = ratio["ratio"], ratio["ci_low"], ratio["ci_high"]
    if r >= 1:
        return {"size": r, "ci_low": max(lo, 1.0) if hi >= 1 else 1 / hi, "ci_high": max(hi, 1 / lo)}
    return {"size": 1 / r, "ci_low": 1 / hi if hi < 1 else 1.0, "ci_high": max(1 / lo, hi)}
