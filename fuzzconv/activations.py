"""Comparing an intermediate tensor with its reference: the oracle's tolerances, per tensor.

Logit tolerances (:class:`fuzzconv.oracle.Thresholds`) do not fit activations, whose scale varies
from layer to layer, so :func:`activation_divergence` takes both relative to the reference
tensor's range. The shrinker's localization and reduction judge nodes and subgraphs with it, and a
bug bundle of a reduced subgraph judges its output with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .oracle import Thresholds


@dataclass(frozen=True)
class TensorError:
    """How far one tensor is from its reference.

    ``max_rel`` is the max abs difference over the reference tensor's range (its peak-to-peak),
    the oracle's ``max_rel_diff`` applied per tensor; infinite for mismatched shapes or
    non-finite values.
    """

    max_abs: float
    max_rel: float
    diverges: bool
    note: str | None = None

    def row(self) -> dict[str, Any]:
        """JSON-safe numbers (infinity becomes None, with the reason in ``note``)."""
        row: dict[str, Any] = {"max_abs": _finite(self.max_abs), "max_rel": _finite(self.max_rel),
                               "diverges": self.diverges}
        if self.note:
            row["note"] = self.note
        return row


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def activation_divergence(ref: np.ndarray, out: np.ndarray,
                          thresholds: Thresholds = Thresholds()) -> TensorError:
    """Compare an intermediate tensor with its reference, with the oracle's tolerances adapted.

    Logit tolerances do not fit activations, whose scale varies from layer to layer, so both are
    taken relative to the reference tensor's range: the tensor diverges when its max abs
    difference exceeds ``rtol`` × that range (the oracle's ``max_rel_diff > rtol``) and also
    ``atol`` × ``rtol`` (1e-5 by default), a floor for near-constant tensors whose tiny range says
    nothing about their scale. A runtime that flattens the output (``(batch, -1)``) is compared
    element for element.
    """
    r = np.asarray(ref, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    inf = float("inf")
    if r.shape != o.shape:
        if r.size != o.size:
            return TensorError(inf, inf, True, f"shape {list(o.shape)} where the reference has "
                                               f"{list(r.shape)}")
        o = o.reshape(r.shape)
    fin = np.isfinite(r)
    if not np.array_equal(fin, np.isfinite(o)) or not np.array_equal(r[~fin], o[~fin],
                                                                      equal_nan=True):
        return TensorError(inf, inf, True, "non-finite values differ")
    if not fin.any():
        return TensorError(0.0, 0.0, False)
    max_abs = float(np.abs(o[fin] - r[fin]).max())
    span = float(np.ptp(r[fin]))
    max_rel = max_abs / span if span > 0 else (0.0 if max_abs == 0 else inf)
    return TensorError(max_abs, max_rel,
                       max_rel > thresholds.rtol and max_abs > thresholds.atol * thresholds.rtol)
