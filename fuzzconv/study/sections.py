"""Sections of the study's report that read what the interleaved timing and the mixed corpus add
to ``study.json``: label changes on the real photographs apart from the synthetic images, each
configuration's time as a ratio to its baseline, the identical-code control, and the paper's
claims with their verdicts. :mod:`.report` places them; a study written before these existed
gets a sentence saying what it lacks instead."""

from __future__ import annotations

from typing import Any

from .cells import pct_ci
from .configs import (LABEL_EFFECT, NOT_APPLICABLE, NOT_MEASURED, PHOTOGRAPHS, RATIO_GOAL,
                      SYNTHETIC, TIME_EFFECT)
from .document import Block, Heading, Paragraph, code, strong, table, text

#: What calibrated weights mean for results on real photographs, said wherever those are shown.
PHOTOGRAPH_CAVEAT = (
    "Calibrated weights are random weights whose statistics were set on synthetic images; real "
    "(ImageNet) weights were trained on photographs. On real photographs the two may behave "
    "differently (a trained model is confident on a photograph, a calibrated one is not), so these "
    "figures need not carry over to the paper's trained models.")


def share(v: tuple[float, float, float] | None) -> str:
    """``12.5 [2.2–47.1]``: a label-change percentage and its Wilson 95 % interval."""
    return "—" if v is None else f"{v[0]:.1f} [{v[1]:.1f}–{v[2]:.1f}]"


def photographs(study: dict[str, Any], idx: dict, configs: dict[str, Any],
                fw: list[str], models: list[str]) -> list[Block]:
    """Label changes on the shipped photographs and on the synthetic images, apart."""
    kinds = [c["metrics"].get("vs_baseline_by_kind") for c in study["cells"]]
    if not any(kinds):
        return []
    compared = [k for k in fw if configs[k]["baseline"] != k]
    blocks: list[Block] = [Heading(2, text("1b. Real photographs and synthetic images, apart")),
                           Paragraph(text(
                               "The corpus holds the shipped real photographs (", code("corpora/natural"),
                               ") and synthetic images; the framework table above counts both. "
                               "Here each kind is counted alone (CPU, % of top-1 labels changed "
                               "against the source, Wilson 95 % interval). ",
                               *((PHOTOGRAPH_CAVEAT,) if study["settings"]["weights"] != "imagenet"
                                 else ("With ImageNet weights, the photographs are the figures "
                                       "to set beside the paper's.",))))]
    for kind, title in ((PHOTOGRAPHS, "Real photographs"), (SYNTHETIC, "Synthetic images")):
        n = next((k[kind]["images"] for k in kinds if k and kind in k), 0)
        blocks.append(Paragraph(text(strong(title), f" ({n} images)")))
        blocks.append(table(["model", *compared], [
            [m] + [_kind_cell(idx.get((m, k, "cpu")), kind) for k in compared] for m in models]))
    return blocks


def _kind_cell(cell: dict[str, Any] | None, kind: str) -> str:
    if cell is None:
        return "—"
    if cell["status"] != "ok":
        return cell["status"] if cell["status"] in (NOT_MEASURED, NOT_APPLICABLE) else "fail"
    return share(pct_ci(cell, kind=kind))


def ratio_blocks(study: dict[str, Any], idx: dict, configs: dict[str, Any], models: list[str],
                 devices: list[str]) -> list[Block]:
    """Each configuration's per-image time over its baseline's, paired by round, and the control."""
    if not study.get("timing_rounds"):
        return [Paragraph(text(
            "This study timed each configuration in one block, not in interleaved rounds, so it has "
            "no paired ratios and no identical-code control: drift on the machine between blocks "
            "reads as a difference between configurations."))]
    compared = [k for k, c in configs.items() if c["baseline"] != k]
    blocks: list[Block] = [Paragraph(text(
        strong("Ratio to the baseline"), " (per-image time over the baseline's, paired by round: "
        "each round's median image time, ratio of the medians over rounds, 95 % bootstrap interval "
        f"resampling rounds; † marks a half-width above {100 * RATIO_GOAL:.0f} % of the ratio)"))]
    blocks.append(table(["model", "device", *compared], [
        [m, d] + [_ratio_cell(idx.get((m, k, d))) for k in compared]
        for m in models for d in devices]))
    rows, off = [], []
    for m in models:
        for d, c in (study.get("timing_control") or {}).get(m, {}).items():
            if not c:
                continue
            r = c.get("ratio")
            if r is None:
                verdict = f"not timed: {c.get('error', '')}"
            elif c["reads_one"]:
                verdict = "reads 1.00 within its interval" + (
                    "" if c["within_goal"] else
                    f", but the interval reaches past ±{100 * RATIO_GOAL:.0f} %")
            else:
                verdict = ("DOES NOT read 1.00 within its interval: timing differences this size "
                           "are the machine, not the code")
                off.append(f"{m}@{d}")
            rows.append([m, d, text(code(c["config"]), " / ", code(c["of"])),
                         "—" if r is None else _ratio(r), verdict])
    if rows:
        blocks.append(Paragraph(text(
            strong("Control pair"), ": the baseline built twice (two independent builds of the "
            "same code) and timed as two configurations in the same rounds.")))
        blocks.append(table(["model", "device", "pair", "ratio [95 %]", "verdict"], rows))
    if off:
        blocks.append(Paragraph(text(
            strong("The control failed"), f" ({', '.join(off)}): identical code timed apart by more "
            "than its interval allows, so the intervals above understate the noise and the timing "
            "verdicts below are not measurable here.")))
    widths = [c["timing"]["ratio"]["image"]["rel_half_width"] for c in study["cells"]
              if (c["timing"].get("ratio") or {}).get("image")]
    if widths:
        blocks.append(Paragraph(text(
            f"{sum(w <= RATIO_GOAL for w in widths)} of {len(widths)} ratios have an interval "
            f"half-width of at most {100 * RATIO_GOAL:.0f} % (goal: 90 %).")))
    return blocks


def _ratio(r: dict[str, Any]) -> str:
    flag = "" if r["rel_half_width"] <= RATIO_GOAL else " †"
    fmt = ".2f" if r["ratio"] >= 0.1 else ".3g"  # a tiny ratio keeps its digits
    return f"{r['ratio']:{fmt}} [{r['ci_low']:{fmt}}–{r['ci_high']:{fmt}}]{flag}"


def _ratio_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "—"
    if cell["status"] != "ok":
        return cell["status"] if cell["status"] in (NOT_MEASURED, NOT_APPLICABLE) else "fail"
    r = (cell["timing"].get("ratio") or {}).get("image")
    return "—" if r is None else _ratio(r)


def paper_blocks(study: dict[str, Any]) -> list[Block]:
    """The paper's claims, the figure measured here with its interval, and the verdict."""
    return [
        Heading(2, text("Beside the paper")),
        Paragraph(text(
            "Each verdict is computed from the 95 % intervals, not chosen: ", strong("supported"),
            ", ", strong("contradicted"), " or ", strong("not measurable here"), " (and why). "
            f"Labels: a share whose whole Wilson interval lies above {LABEL_EFFECT:g} % is a "
            f"change, one whose whole interval lies below {LABEL_EFFECT:g} % is none, one across "
            "the line decides nothing (too few images). The paper's 57 % holds where it lies "
            "inside the largest change's interval. Time: a factor changes the time where some "
            "ratio's interval lies wholly outside ±"
            f"{100 * (TIME_EFFECT - 1):.0f} %, and does not where every interval lies inside; time "
            "verdicts need interleaved rounds and a control pair that reads 1.00.")),
        table(["claim", "paper", "measured here [95 % interval]", "verdict", "why"],
              [[c["claim"], c["paper"], c["here"], c["verdict"], c.get("why", "")]
               for c in study["paper"]])]
