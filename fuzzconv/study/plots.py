"""The study's plots: the label-change heatmap and the latency bars (matplotlib, Agg backend, in
this process: it imports no deep-learning framework)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .cells import index, pct
from .configs import NOT_MEASURED, OPT_TABLES

#: The plot files, by what they show.
PLOTS = {"heatmap": "label_change_heatmap.png", "optimizations": "latency_optimizations.png",
         "frameworks": "latency_frameworks.png"}

def write_plots(study: dict[str, Any], out: Path) -> dict[str, str]:
    """The heatmap of label changes and the latency plots; returns {what: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = index(study)
    models = study["settings"]["models"]
    configs = [c for c in study["configurations"] if c["key"] != c["baseline"]]
    files = {}

    # Heatmap: models x configurations, % of top-1 labels changed against the side's source (CPU).
    data = np.full((len(models), len(configs)), np.nan)
    notes = [["" for _ in configs] for _ in models]
    for i, m in enumerate(models):
        for j, c in enumerate(configs):
            cell = idx.get((m, c["key"], "cpu"))
            p = pct(cell)
            if p is not None:
                data[i, j] = p
                notes[i][j] = f"{p:.1f}"
            else:
                notes[i][j] = "fail" if cell and cell["status"] == "failed" else "—"
    fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(configs) + 2), 2.4 + 0.5 * len(models)))
    vmax = max(1.0, float(np.nanmax(data)) if np.isfinite(data).any() else 1.0)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="Reds", vmin=0, vmax=vmax, aspect="auto")
    ax.set_facecolor("#d9d9d9")
    ax.set_xticks(range(len(configs)), [c["key"] for c in configs], rotation=60, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=9)
    for i in range(len(models)):
        for j in range(len(configs)):
            ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(data[i, j]) and data[i, j] > vmax / 2 else "black")
    fig.colorbar(im, ax=ax, label="% top-1 changed", fraction=0.03, pad=0.01)
    ax.set_title("Top-1 label change vs the source model (twin columns: vs the PyTorch twin)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / PLOTS["heatmap"], dpi=110)
    plt.close(fig)
    files["heatmap"] = PLOTS["heatmap"]

    devices = list(study["settings"]["devices"])
    groups = [("optimizations", list(OPT_TABLES.items())),
              ("frameworks", [("framework and conversion",
                               [(c["key"], c["key"]) for c in study["configurations"]
                                if c["experiment"] == "framework"])])]
    for what, tables in groups:
        fname = PLOTS[what]
        fig, axes = plt.subplots(len(tables), len(models), squeeze=False,
                                 figsize=(max(6.5, 4.2 * len(models)), 3.4 * len(tables)))
        for r, (title, cols) in enumerate(tables):
            for col, m in enumerate(models):
                _latency_bars(axes[r][col], idx, m, cols, devices, study)
                axes[r][col].set_title(f"{m}: {title}", fontsize=8)
        fig.suptitle(f"Per-image latency (median, 95 % bootstrap CI), {what}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        files[what] = fname
    return files


def _latency_bars(ax: Any, idx: dict, model: str, cols: list[tuple[str, str]],
                  devices: list[str], study: dict[str, Any]) -> None:
    """Per-image median latency with its CI as error bars, one bar per device and configuration;
    a device that was not measured gets a hatched legend entry saying so, and no bar."""
    from matplotlib.patches import Patch

    width = 0.8 / max(1, len(devices))
    handles = []
    for d_i, device in enumerate(devices):
        xs, meds, lo, hi = [], [], [], []
        for x, (key, _) in enumerate(cols):
            cell = idx.get((model, key, device))
            if cell and "image" in cell["timing"]:
                s = cell["timing"]["image"]
                xs.append(x + d_i * width)
                meds.append(s["median"] * 1e3)
                lo.append((s["median"] - s["ci_low"]) * 1e3)
                hi.append((s["ci_high"] - s["median"]) * 1e3)
        if xs:
            handles.append(ax.bar(xs, meds, width=width, yerr=[lo, hi], capsize=3, label=device))
        elif study["settings"]["devices"].get(device) == NOT_MEASURED:
            handles.append(Patch(facecolor="none", edgecolor="grey", hatch="//",
                                 label=f"{device}: {NOT_MEASURED}"))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cols))], [h for _, h in cols],
                  rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("ms per image", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    if handles:
        ax.legend(handles=handles, fontsize=6)
