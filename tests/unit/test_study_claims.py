"""The paper's claims get their verdicts from the intervals: on the committed reference study (timed
in blocks, 8 images) and on studies made from it with interleaved rounds, many images, a control
pair that does or does not read 1.00, and photographs apart from synthetic images."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fuzzconv.study.configs import PHOTOGRAPHS, SYNTHETIC
from fuzzconv.study.document import Table, plain
from fuzzconv.study.intervals import wilson_ci
from fuzzconv.study.paper import (CONTRADICTED, NOT_MEASURABLE, SUPPORTED, affects_time,
                                  compare_with_paper, insensitive, sensitive)
from fuzzconv.study.plots import PLOTS
from fuzzconv.study.report import render_markdown, study_report
from fuzzconv.study.rounds import Slot, control_verdict, paired_ratio, ratios, summarize
from fuzzconv.study.sections import PHOTOGRAPH_CAVEAT

REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "study"


def _reference() -> dict[str, Any]:
    return json.loads((REFERENCE / "study.json").read_text())


def _claims(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["claim"]: c for c in compare_with_paper(study)}


def test_label_verdicts_come_from_the_intervals() -> None:
    clear = [(12.0, 8.0, 17.0, "m, x"), (0.0, 0.0, 1.8, "m, y")]
    assert sensitive(clear, "f")[0] == SUPPORTED
    assert insensitive(clear, "f")[0] == CONTRADICTED
    none = [(0.0, 0.0, 1.8, "m, x"), (0.5, 0.1, 1.9, "m, y")]
    assert sensitive(none, "f")[0] == CONTRADICTED and insensitive(none, "f")[0] == SUPPORTED
    wide = [(0.0, 0.0, 32.4, "m, x")]  # 0 of 8 images: could be anything up to a third
    verdict, why = insensitive(wide, "f")
    assert verdict == NOT_MEASURABLE and "too few images" in why
    assert sensitive([], "f")[0] == NOT_MEASURABLE


def test_time_verdicts_come_from_the_intervals() -> None:
    big = {"size": 1.5, "ci_low": 1.4, "ci_high": 1.6, "where": "a"}
    small = {"size": 1.01, "ci_low": 1.0, "ci_high": 1.03, "where": "b"}
    unsure = {"size": 1.04, "ci_low": 1.0, "ci_high": 1.09, "where": "c"}
    assert affects_time([big, small], "f")[0] == SUPPORTED
    assert affects_time([small], "f")[0] == CONTRADICTED
    assert affects_time([small, unsure], "f")[0] == NOT_MEASURABLE
    assert affects_time([], "f")[0] == NOT_MEASURABLE


def test_the_reference_study_supports_only_what_8_images_can() -> None:
    claims = _claims(_reference())
    fw = claims["Top-1 labels are sensitive to the framework and conversion"]
    assert fw["verdict"] == SUPPORTED and "50.0 % [21.5–78.5]" in fw["here"]
    assert claims["The framework changes up to 57 % of labels"]["verdict"] == SUPPORTED
    opt = claims["Top-1 labels are insensitive to compiler optimization levels"]
    assert opt["verdict"] == NOT_MEASURABLE and "too few images" in opt["why"]
    assert claims["Top-1 labels are insensitive to the device"]["why"] == "no GPU on this machine"
    for c in ("Inference time is sensitive to every parameter",
              "The device changes inference time most"):
        assert claims[c]["verdict"] == NOT_MEASURABLE and "timed in blocks" in claims[c]["why"]
    assert {c["verdict"] for c in claims.values()} <= {SUPPORTED, CONTRADICTED, NOT_MEASURABLE}


def _per_config_speed(key: str) -> float:
    """A made-up time per image for each configuration: TVM levels alike, the rest apart."""
    if key.startswith("tvm-O") or key == "onnx-tvm":
        return 0.050
    return 0.010 * (1 + sum(map(ord, key)) % 17 / 4)


def at_scale(study: dict[str, Any], control_ratio: float = 1.0, images: int = 200,
             rounds: int = 30) -> dict[str, Any]:
    """The reference study as if measured on ``images`` images (no label changed between
    optimization settings) and timed in ``rounds`` interleaved rounds on a drifting machine."""
    s = copy.deepcopy(study)
    s["settings"]["corpus"]["images"] = images
    s["settings"]["timing"] = "interleaved rounds"
    rng = np.random.default_rng(0)
    drift = np.linspace(1.0, 2.0, rounds) * rng.uniform(0.97, 1.03, rounds)
    for info in (i for m in s["opt_spread"].values() for d in m.values() for i in d.values()):
        info.update(max_pairwise_label_change_pct=0.0, label_changes=0, images=images,
                    label_change_ci95=[100 * x for x in wilson_ci(0, images)])
    slots, control = {}, {}
    for model in s["settings"]["models"]:
        cells = [c for c in s["cells"] if c["model"] == model and c["status"] == "ok"]
        samples = {}
        for c in cells:
            t = _per_config_speed(c["config"]) * drift * rng.uniform(0.995, 1.005, rounds)
            samples[c["config"]] = {"rounds": list(range(rounds)), "batch_seconds": list(8 * t),
                                    "image_seconds": [[x] * 8 for x in t], "load_seconds": 1.0}
            base = next(k["baseline"] for k in s["configurations"] if k["key"] == c["config"])
            slots[c["config"]] = Slot(c["config"], "fake", {}, None if base == c["config"] else base)
            c["timing"] = summarize(samples[c["config"]])
            k = c["metrics"].get("vs_baseline")
            if k:
                k.update(images=images, label_changes=k["label_changes"] * images // 8,
                         label_change_pct=k["label_change_pct"],
                         label_change_ci95=[100 * x for x in wilson_ci(
                             k["label_changes"] * images // 8, images)])
                c["metrics"]["vs_baseline_by_kind"] = {
                    PHOTOGRAPHS: {**k, "images": 18, "label_changes": 0, "label_change_pct": 0.0,
                                  "label_change_ci95": [0.0, 17.6]},
                    SYNTHETIC: k}
        for key, r in ratios(list(slots.values()), samples).items():
            next(c for c in cells if c["config"] == key)["timing"]["ratio"] = r
        twin = {**samples["keras"], "image_seconds": [[x * control_ratio for x in row]
                                                      for row in samples["keras"]["image_seconds"]]}
        control[model] = {"cpu": {"config": "keras-rebuilt", "of": "keras",
                                  **control_verdict(paired_ratio(twin, samples["keras"]), 0.05)}}
    s["timing_rounds"] = {m: {"cpu": {"rounds": rounds, "seed": 0, "orders": []}}
                          for m in s["settings"]["models"]}
    s["timing_control"] = control
    s["paper"] = compare_with_paper(s)
    return s


def test_at_scale_with_a_control_that_reads_one() -> None:
    s = at_scale(_reference())
    claims = {c["claim"]: c for c in s["paper"]}
    assert claims["Top-1 labels are insensitive to compiler optimization levels"]["verdict"] \
        == SUPPORTED
    every = claims["Inference time is sensitive to every parameter"]
    assert every["factors"] == {"framework": SUPPORTED, "optimization": SUPPORTED,
                                "device": NOT_MEASURABLE}
    assert every["verdict"] == NOT_MEASURABLE and "device" in every["why"]
    assert claims["The device changes inference time most"]["why"] == "no GPU on this machine"
    md = render_markdown(s, PLOTS)
    assert "reads 1.00 within its interval" in md and "DOES NOT" not in md
    assert PHOTOGRAPH_CAVEAT in md and "**Real photographs** (18 images)" in md
    # Every claim sits in the table with its figure, verdict and why.
    table = [b for b in study_report(s, PLOTS) if isinstance(b, Table)
             and plain(b.header[0]) == "claim"][0]
    assert [plain(r[3]) for r in table.rows] == [c["verdict"] for c in s["paper"]]
    assert all(plain(r[4]) for r in table.rows)


def test_a_control_that_does_not_read_one_makes_time_claims_unmeasurable() -> None:
    s = at_scale(_reference(), control_ratio=1.15)
    claims = {c["claim"]: c for c in s["paper"]}
    for c in ("Inference time is sensitive to every parameter",
              "The device changes inference time most"):
        assert claims[c]["verdict"] == NOT_MEASURABLE
        assert "does not read 1.00" in claims[c]["why"]
    md = render_markdown(s, PLOTS)
    assert "DOES NOT read 1.00 within its interval" in md and "**The control failed**" in md


def test_the_reference_renders_intervals_in_its_tables() -> None:
    md = render_markdown(_reference(), PLOTS)
    assert "| mobilenetv2 | ref | 0.0 [0.0–32.4] | 50.0 [21.5–78.5] |" in md
    assert "timed each configuration in one block" in md


@pytest.mark.parametrize("ratio, reads", [(1.0, True), (1.15, False)])
def test_control_verdict_is_written_into_study_json(ratio: float, reads: bool) -> None:
    s = at_scale(_reference(), control_ratio=ratio)
    assert all(c["cpu"]["reads_one"] is reads for c in s["timing_control"].values())
