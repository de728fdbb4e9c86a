"""The study's files: ``labels.csv``, ``timing.csv``, ``study.json``, the plots and ``study.md``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .cells import error_text, pct, pct_ci
from .configs import CI_GOAL, PHOTOGRAPHS, SYNTHETIC
from .plots import write_plots
from .report import render_markdown

LABELS_COLUMNS = ("model", "config", "device", "experiment", "side", "baseline", "status",
                  "images", "label_change_pct", "label_changes", "flips", "tie_flips", "nan",
                  "top5_jaccard", "kendall_tau", "max_abs_diff", "accuracy",
                  "device_label_change_pct", "vs_keras_label_change_pct", "error",
                  "label_change_ci_low", "label_change_ci_high", "photographs_label_change_pct",
                  "synthetic_label_change_pct")
TIMING_COLUMNS = ("model", "config", "device", "unit", "batch_size", "samples", "median_ms",
                  "ci_low_ms", "ci_high_ms", "ci_half_width_pct", "meets_ci_goal", "load_s",
                  "threads", "rerun_max_abs_diff", "ratio_to", "ratio", "ratio_ci_low",
                  "ratio_ci_high")


def write_outputs(study: dict[str, Any], out: Path) -> None:
    """Write ``labels.csv``, ``timing.csv``, ``study.json``, the PNG plots and ``study.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configs = {c["key"]: c for c in study["configurations"]}
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, LABELS_COLUMNS)
        w.writeheader()
        for c in study["cells"]:
            cfg = configs[c["config"]]
            m = c["metrics"].get("vs_baseline") or {}
            w.writerow({
                "model": c["model"], "config": c["config"], "device": c["device"],
                "experiment": cfg["experiment"], "side": cfg["side"], "baseline": cfg["baseline"],
                "status": c["status"], **{k: m.get(k) for k in (
                    "images", "label_change_pct", "label_changes", "flips", "tie_flips", "nan",
                    "top5_jaccard", "kendall_tau", "max_abs_diff")},
                "accuracy": c["metrics"].get("accuracy"),
                "device_label_change_pct": pct(c, "vs_cpu"),
                "vs_keras_label_change_pct": pct(c, "vs_keras"),
                "error": error_text(c),
                "label_change_ci_low": (pct_ci(c) or (None, None, None))[1],
                "label_change_ci_high": (pct_ci(c) or (None, None, None))[2],
                "photographs_label_change_pct": (pct_ci(c, kind=PHOTOGRAPHS) or (None,))[0],
                "synthetic_label_change_pct": (pct_ci(c, kind=SYNTHETIC) or (None,))[0]})
    with open(out / "timing.csv", "w", newline="") as f:
        w = csv.DictWriter(f, TIMING_COLUMNS)
        w.writeheader()
        for c in study["cells"]:
            t = c["timing"]
            for unit in ("image", "batch"):
                if unit not in t:
                    continue
                s = t[unit]
                r = (t.get("ratio") or {}).get(unit) or {}
                w.writerow({
                    "model": c["model"], "config": c["config"], "device": c["device"],
                    "unit": unit, "batch_size": 1 if unit == "image" else t["batch_size"],
                    "samples": s["samples"], "median_ms": s["median"] * 1e3,
                    "ci_low_ms": s["ci_low"] * 1e3, "ci_high_ms": s["ci_high"] * 1e3,
                    "ci_half_width_pct": 100 * s["rel_half_width"],
                    "meets_ci_goal": s["rel_half_width"] <= CI_GOAL,
                    "load_s": t.get("load_seconds"), "threads": study["settings"]["threads"],
                    "rerun_max_abs_diff": t.get("rerun_max_abs_diff"),
                    "ratio_to": (t.get("ratio") or {}).get("to") if r else None,
                    "ratio": r.get("ratio"), "ratio_ci_low": r.get("ci_low"),
                    "ratio_ci_high": r.get("ci_high")})
    (out / "study.json").write_text(json.dumps(study, indent=1, default=_json_default) + "\n")
    plots = write_plots(study, out)
    (out / "study.md").write_text(render_markdown(study, plots))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
