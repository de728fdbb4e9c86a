"""The oracle: how a run's outputs compare with the reference, and what symptom that is.

Comparisons are values, as in Polygraphy's ``CompareFunc``: :class:`Thresholds` holds the
tolerances, :func:`compare` turns two logit arrays into a :class:`Comparison`, and
:func:`judge` names the symptom (or None when the run agrees). The *signature* of a divergence is
what shrinking must preserve: the symptom plus, for crashes, the error class and the failing step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Every symptom a run can show, in the order listings present them.
SYMPTOMS = ("label_flip", "numeric", "crash", "timeout", "nan", "slowdown")


@dataclass(frozen=True)
class Thresholds:
    """When a difference is a divergence.

    Args:
        atol: numeric divergence when the max abs logit difference exceeds this (and no label
            flips). Defaults to 1e-2.
        rtol: ... and the max relative difference (to the reference logit range) exceeds this.
            Defaults to 1e-3.
        tie_margin: a flip on an image whose reference top-1/top-2 margin is below this is a tie
            flip: reported, but not a finding on its own. Defaults to 0.05.
        min_flips: label flips (not counting tie flips) needed for ``label_flip``. Defaults to 1.
        slowdown: inference slower than this factor of the source runtime's is ``slowdown``.
            Defaults to 3.0.
    """

    atol: float = 1e-2
    rtol: float = 1e-3
    tie_margin: float = 0.05
    min_flips: int = 1
    slowdown: float = 3.0


@dataclass
class Comparison:
    """Per-corpus agreement between a run and the reference."""

    images: int
    flips: int
    tie_flips: int
    flip_rate: float
    top5_agreement: float  # mean Jaccard of the top-5 sets
    kendall_tau: float  # mean Kendall τ over the reference's top-5, in the run's order
    max_abs_diff: float
    max_rel_diff: float
    nan: int  # images whose outputs hold NaN or Inf
    flipped: list[int] = field(default_factory=list)  # indices of non-tie flips
    tied: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top_k(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the k largest logits per row, largest first (stable on ties)."""
    k = min(k, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def margins(logits: np.ndarray) -> np.ndarray:
    part = np.sort(logits, axis=1)
    return part[:, -1] - part[:, -2] if logits.shape[1] > 1 else np.full(len(logits), np.inf)


def _kendall_tau(ref_order: np.ndarray, run_logits: np.ndarray) -> float:
    """Kendall τ between the reference's top-k order and the run's scores for those labels."""
    scores = run_logits[ref_order]
    k = len(ref_order)
    concordant = discordant = 0
    for i in range(k):
        for j in range(i + 1, k):
            # reference ranks i above j; concordant when the run agrees
            d = scores[i] - scores[j]
            if d > 0:
                concordant += 1
            elif d < 0:
                discordant += 1
    pairs = k * (k - 1) / 2
    return (concordant - discordant) / pairs if pairs else 1.0


def compare(ref: np.ndarray, out: np.ndarray, thresholds: Thresholds = Thresholds()) -> Comparison:
    """Compare run logits ``out`` with reference logits ``ref`` (both (N, classes))."""
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    n = len(ref)
    bad = ~np.isfinite(out).all(axis=1)
    ref_top = top_k(ref)
    out_clean = np.where(np.isfinite(out), out, -np.inf)
    out_top = top_k(out_clean)
    differs = ref_top[:, 0] != out_top[:, 0]
    tie = margins(ref) < thresholds.tie_margin
    flipped = np.flatnonzero(differs & ~tie & ~bad)
    tied = np.flatnonzero(differs & tie & ~bad)
    jacc = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(ref_top, out_top)]
    taus = [_kendall_tau(r, o) for r, o in zip(ref_top, out_clean)]
    finite = ~bad
    if finite.any():
        diff = np.abs(out[finite].astype(np.float64) - ref[finite])
        max_abs = float(diff.max())
        span = float(np.ptp(ref[finite])) or 1.0
        max_rel = max_abs / span
    else:
        max_abs = max_rel = float("inf")
    return Comparison(
        images=n, flips=int(len(flipped) + bad.sum()), tie_flips=int(len(tied)),
        flip_rate=float((len(flipped) + bad.sum()) / n) if n else 0.0,
        top5_agreement=float(np.mean(jacc)) if n else 1.0,
        kendall_tau=float(np.mean(taus)) if n else 1.0,
        max_abs_diff=max_abs, max_rel_diff=max_rel, nan=int(bad.sum()),
        flipped=[int(i) for i in flipped], tied=[int(i) for i in tied],
    )


def judge(cmp: Comparison | None, thresholds: Thresholds = Thresholds(), failure: Any = None,
          slowdown_factor: float | None = None) -> str | None:
    """The symptom of a run, or None when it agrees with the reference."""
    if failure is not None:
        return failure.symptom
    assert cmp is not None
    if cmp.nan:
        return "nan"
    if cmp.flips - cmp.nan >= thresholds.min_flips:
        return "label_flip"
    if cmp.max_abs_diff > thresholds.atol and cmp.max_rel_diff > thresholds.rtol:
        return "numeric"
    if slowdown_factor is not None and slowdown_factor > thresholds.slowdown:
        return "slowdown"
    return None
