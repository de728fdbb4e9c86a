"""The study's numbers: medians with bootstrap confidence intervals, and label agreement between
configurations (the oracle's comparison, counted the paper's way)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..oracle import compare
from .cells import Cell
from .configs import OPT_TABLES, PHOTOGRAPHS, SYNTHETIC, Config
from .intervals import median_ci, wilson_ci

__all__ = ["median_ci", "label_metrics", "accuracy", "fill_metrics", "opt_spread",
           "corpus_kinds"]

def label_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    """Top-1 and top-5 agreement of ``out`` with ``ref`` (from oracle.compare)."""
    cmp = compare(ref, out)
    # The paper counts every changed top-1 label; the oracle splits them into flips and near-tie
    # flips (reference margin below its tie_margin), and both are kept in the record.
    changes = cmp.flips + cmp.tie_flips
    lo, hi = wilson_ci(changes, cmp.images)
    return {"images": cmp.images, "label_changes": changes,
            "label_change_pct": 100.0 * changes / cmp.images if cmp.images else 0.0,
            "label_change_ci95": [100.0 * lo, 100.0 * hi],
            "flips": cmp.flips, "tie_flips": cmp.tie_flips, "nan": cmp.nan,
            "top5_jaccard": cmp.top5_agreement, "kendall_tau": cmp.kendall_tau,
            "max_abs_diff": cmp.max_abs_diff}


def accuracy(logits: np.ndarray, labels: Sequence[int | None] | None) -> float | None:
    if labels is None:
        return None
    known = [(p, t) for p, t in zip(logits.argmax(axis=1), labels) if t is not None]
    return float(np.mean([p == t for p, t in known])) if known else None


def corpus_kinds(corpus: Any) -> dict[str, list[int]]:
    """The corpus's image indices split into the shipped real photographs and the rest
    (synthetic), when it holds both; ``{}`` when it is one kind only (nothing to report apart)."""
    names = list(getattr(corpus, "names", ()))
    photos = [i for i, n in enumerate(names) if n.startswith("corpora/natural/")]
    rest = [i for i in range(len(names)) if i not in set(photos)]
    return {PHOTOGRAPHS: photos, SYNTHETIC: rest} if photos and rest else {}


def _by_kind(kinds: dict[str, list[int]], ref: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    return {kind: label_metrics(ref[idx], out[idx]) for kind, idx in kinds.items()}


def fill_metrics(cells: list[Cell], configs: list[Config], corpus: Any, weights: str) -> None:
    """Label metrics of every cell against its baseline (its side's source on CPU), plus for
    CUDA cells against the same configuration on CPU, plus with real weights twin against Keras;
    where the corpus mixes the shipped photographs with synthetic images, each kind apart too."""
    by = {(c.model, c.config, c.device): c for c in cells}
    cfg_of = {c.key: c for c in configs}
    kinds = corpus_kinds(corpus)
    for cell in cells:
        if cell.status != "ok" or cell.kept:  # a kept cell's metrics came with it
            continue
        cfg = cfg_of[cell.config]
        base = by.get((cell.model, cfg.baseline, "cpu"))
        if base is None or base.status != "ok":
            cell.metrics["vs_baseline"] = None
        else:
            cell.metrics["vs_baseline"] = label_metrics(base.logits, cell.logits)
            if kinds:  # real photographs and synthetic images, reported apart
                cell.metrics["vs_baseline_by_kind"] = _by_kind(kinds, base.logits, cell.logits)
        cell.metrics["accuracy"] = accuracy(cell.logits, corpus.labels)  # type: ignore[arg-type]
        if cell.device != "cpu":
            cpu = by.get((cell.model, cell.config, "cpu"))
            cell.metrics["vs_cpu"] = (label_metrics(cpu.logits, cell.logits)
                                      if cpu is not None and cpu.status == "ok" else None)
        if cfg.side == "twin" and weights == "imagenet":
            keras = by.get((cell.model, "keras", "cpu"))
            if keras is not None and keras.status == "ok" and keras.logits.shape == cell.logits.shape:
                cell.metrics["vs_keras"] = label_metrics(keras.logits, cell.logits)


def opt_spread(cells: list[Cell], models: Sequence[str], devices: Sequence[str]) -> dict[str, Any]:
    """Per model, device and optimization table: the largest top-1 label change between any two
    of its configurations."""
    by = {(c.model, c.config, c.device): c for c in cells}
    out: dict[str, Any] = {}
    for model in models:
        for device in devices:
            for title, cols in OPT_TABLES.items():
                ok = [by[(model, k, device)] for k, _ in cols
                      if (model, k, device) in by and by[(model, k, device)].status == "ok"]
                worst: dict[str, Any] | None = None
                pair = None
                for i, a in enumerate(ok):
                    for b in ok[i + 1:]:
                        if _side(a) != _side(b):  # a table may hold both; they share no model
                            continue
                        m = label_metrics(a.logits, b.logits)  # type: ignore[arg-type]
                        if worst is None or m["label_change_pct"] > worst["label_change_pct"]:
                            worst, pair = m, [a.config, b.config]
                out.setdefault(model, {}).setdefault(device, {})[title] = {
                    "configs": [c.config for c in ok],
                    "max_pairwise_label_change_pct": worst and worst["label_change_pct"],
                    "label_changes": worst and worst["label_changes"],
                    "images": worst and worst["images"],
                    "label_change_ci95": worst and worst["label_change_ci95"], "pair": pair}
    return out


def _side(cell: Cell) -> str:
    return "twin" if cell.config.startswith("twin") else "keras"
