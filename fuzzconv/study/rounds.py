"""Timing interleaved in rounds, and what the rounds give: medians with bootstrap intervals, each
configuration's ratio to its baseline paired by round, and the identical-code control.

A machine that drifts (another job starts, the clock throttles) makes whatever is timed during the
drift slower. Timing each configuration in one block hands the whole drift to one of them: on the
first reference run two TVM levels that compile the same program differed 1.78×. Here every
configuration gets one pass per round, rounds run one after another, and each round takes the
configurations in a fresh seeded random order (:func:`round_orders`), so drift spreads over all of
them, and a ratio computed round by round (:func:`summarize`) cancels what a round shares.

The **control pair** is the baseline configuration built twice, into two artifacts, and timed as two
configurations: identical code, so its ratio must read 1.00 within its interval. When it does not,
the machine's noise is larger than the intervals claim, and the report says so.

Nothing here talks to a worker: :func:`run_rounds` takes the function that times one pass, so the
order and the statistics are tested without frameworks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .intervals import contains, median_ci, paired_ratio_ci

#: The name of the control's second build of its baseline (``keras`` → ``keras-rebuilt``).
CONTROL_SUFFIX = "-rebuilt"
#: What one round contributes per configuration to a paired ratio.
ROUND_STAT = "median of the round's per-image times"


@dataclass(frozen=True)
class Slot:
    """One configuration to time: what the worker of ``family`` loads and runs.

    Args:
        key: the configuration's name (``onnx-tvm``; the control's second build ``keras-rebuilt``).
        family: the worker family of its runtime.
        kwargs: the arguments of :func:`.timed.timed_pass`, ``slot`` included.
        baseline: the key its ratio is taken against (None: itself a baseline).
    """

    key: str
    family: str
    kwargs: dict[str, Any]
    baseline: str | None


def round_orders(keys: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """The order of ``keys`` in each of ``rounds`` rounds: a fresh seeded permutation each round.

    The same seed gives the same orders; round ``r``'s order does not depend on how many rounds
    there are.
    """
    return [[keys[i] for i in np.random.default_rng([seed, r]).permutation(len(keys))]
            for r in range(rounds)]


def run_rounds(slots: Sequence[Slot], rounds: int, seed: int,
               time_pass: Callable[[Slot], dict[str, Any]],
               on_pass: Callable[[Slot, float], None] | None = None) -> dict[str, Any]:
    """Time every slot once per round, each round in its own order.

    Args:
        slots: what to time.
        rounds: how many rounds.
        seed: the seed of the orders.
        time_pass: times one pass of a slot: ``{"ok": True, "batch_seconds", "image_seconds",
            "load_seconds", ...}`` or ``{"ok": False, "error": ...}``. A slot that fails is left
            out of the rounds after that, keeping the passes it had.
        on_pass: called after each pass with the slot and the pass's wall seconds (progress).

    Returns:
        ``{"orders": [[key, ...] per round], "samples": {key: {"rounds": [r, ...],
        "batch_seconds": [...], "image_seconds": [[...] per round], "load_seconds"}},
        "errors": {key: error}}``.
    """
    by = {s.key: s for s in slots}
    orders = round_orders([s.key for s in slots], rounds, seed)
    samples: dict[str, dict[str, Any]] = {s.key: {"rounds": [], "batch_seconds": [],
                                                  "image_seconds": [], "load_seconds": None}
                                          for s in slots}
    errors: dict[str, Any] = {}
    for r, order in enumerate(orders):
        for key in order:
            if key in errors:
                continue
            t0 = time.perf_counter()
            res = time_pass(by[key])
            if on_pass is not None:
                on_pass(by[key], time.perf_counter() - t0)
            if not res.get("ok"):
                errors[key] = res.get("error")
                continue
            s = samples[key]
            s["rounds"].append(r)
            s["batch_seconds"].append(float(res["batch_seconds"]))
            s["image_seconds"].append([float(t) for t in res["image_seconds"]])
            if s["load_seconds"] is None or res.get("loaded"):
                s["load_seconds"] = float(res.get("load_seconds") or 0.0)
    return {"orders": orders, "samples": samples, "errors": errors}


def round_stats(sample: dict[str, Any], unit: str) -> dict[int, float]:
    """One time per round of a slot: the batch time, or the median of the round's image times."""
    if unit == "batch":
        return dict(zip(sample["rounds"], sample["batch_seconds"]))
    return {r: float(np.median(row)) for r, row in zip(sample["rounds"], sample["image_seconds"])
            if row}


def paired_ratio(num: dict[str, Any], den: dict[str, Any], unit: str = "image",
                 seed: int = 0) -> dict[str, float] | None:
    """``num``'s time over ``den``'s with its interval, over the rounds both were timed in.

    Args:
        num, den: samples as :func:`run_rounds` (or a cell's ``timing``) holds them.
        unit: ``image`` or ``batch``.
        seed: the bootstrap's seed.
    """
    a, b = round_stats(num, unit), round_stats(den, unit)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return paired_ratio_ci([a[r] for r in common], [b[r] for r in common], seed=seed)


def summarize(sample: dict[str, Any]) -> dict[str, Any]:
    """A slot's timing record: its samples, and the medians of per-image and per-batch times
    with their bootstrap intervals (every image pass of every round counts)."""
    out: dict[str, Any] = {"rounds": sample["rounds"], "batch_seconds": sample["batch_seconds"],
                           "image_seconds": sample["image_seconds"],
                           "load_seconds": round(sample["load_seconds"] or 0.0, 4)}
    images = [t for row in sample["image_seconds"] for t in row]
    if images:
        out["image"] = median_ci(images)
    if sample["batch_seconds"]:
        out["batch"] = median_ci(sample["batch_seconds"])
    return out


def ratios(slots: Sequence[Slot], samples: dict[str, Any]) -> dict[str, Any]:
    """Each slot's ratio to its baseline (per image and per batch), paired by round."""
    out: dict[str, Any] = {}
    for s in slots:
        if s.baseline is None or s.baseline not in samples:
            continue
        out[s.key] = {"to": s.baseline, "statistic": ROUND_STAT,
                      **{u: paired_ratio(samples[s.key], samples[s.baseline], u)
                         for u in ("image", "batch")}}
    return out


def control_verdict(ratio: dict[str, Any] | None, tolerance: float) -> dict[str, Any]:
    """Whether the identical-code control reads 1.00 within its interval.

    Args:
        ratio: the control's per-image ratio (:func:`paired_ratio`), None when it was not timed.
        tolerance: how far from 1 the whole interval may reach for the goal (0.05: 1.00 ± 0.05).

    Returns:
        ``{"reads_one": bool | None, "within_goal": bool | None, "ratio": ...}``; None where the
        control was not timed.
    """
    if ratio is None:
        return {"reads_one": None, "within_goal": None, "ratio": None}
    return {"reads_one": contains(ratio, 1.0),
            "within_goal": contains(ratio, 1.0) and 1 - tolerance <= ratio["ci_low"]
            and ratio["ci_high"] <= 1 + tolerance, "ratio": ratio}
