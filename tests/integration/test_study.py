"""``fuzzconv study`` end to end on the tiny models (``tiny_keras`` and its twin ``tiny_torch``).

One study (10 images, two timed repeats) runs once for the module, through its own session over
the test session's store; the checks then read its files and recompute its label numbers from the
cached outputs through the ``executor`` fixture, which must find every output in the cache.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.conftest import needs

pytestmark = needs("tf", "torch", "ort", "tvm")

LIMIT = 10  # one batch of 8 and a last batch of 2
REPEATS = 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from fuzzconv.study import run_study

    out = tmp_path_factory.mktemp("study")
    log = io.StringIO()  # not a terminal, as in a batch job's log
    # The shipped photographs: the default corpus would first generate its synthetic images.
    result = run_study(models="tiny_keras", images=_images(), devices="cpu,cuda",
                       repeats=REPEATS, out=out, limit=LIMIT, store=store_dir,
                       console=Console(file=log, width=200))
    result["_out"], result["_log"] = out, log.getvalue()
    return result


def _images() -> Path:
    from fuzzconv.corpora import SHIPPED_DIR

    return SHIPPED_DIR / "natural"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_writes_every_output(study: dict[str, Any]) -> None:
    out = study["_out"]
    for name in ("labels.csv", "timing.csv", "study.json", "study.md",
                 "label_change_heatmap.png", "latency_optimizations.png", "latency_frameworks.png"):
        assert (out / name).stat().st_size > 0, name
    on_disk = json.loads((out / "study.json").read_text())
    assert on_disk["settings"]["models"] == ["tiny_keras"]
    assert on_disk["settings"]["twins"] == {"tiny_keras": "tiny_torch"}
    assert on_disk["settings"]["corpus"]["images"] == LIMIT
    assert on_disk["versions"]["onnxruntime"] and on_disk["machine"]["os_cpu_count"]
    # The thread count is pinned in every framework, and the frameworks say so.
    threads = on_disk["settings"]["threads"]
    assert on_disk["threads"]["torch"]["torch_num_threads"] == threads
    assert on_disk["threads"]["tvm"]["tvm_runtime_threads"] == threads


def test_tables_have_every_configuration(study: dict[str, Any]) -> None:
    out = study["_out"]
    keys = [c["key"] for c in study["configurations"]]
    # The paper's three experiments are all there.
    for key in ("keras", "tflite", "tflite-dynamic", "tflite-fp16", "onnx-ort", "onnx-torch",
                "onnx-tvm", "twin-torch", "twin-onnx-ort", "twin-onnx-tvm", "twin-onnx-torch",
                "tvm-O0", "tvm-O4", "tvm-disabled", "ort-disable", "keras-xla", "twin-compile"):
        assert key in keys
    rows = _rows(out / "labels.csv")
    assert {(r["config"], r["device"]) for r in rows} == {(k, d) for k in keys
                                                          for d in ("cpu", "cuda")}
    md = (out / "study.md").read_text()
    framework_header = next(line for line in md.splitlines() if line.startswith("| model | keras |"))
    for c in study["configurations"]:
        assert f"`{c['key']}`" in md
        if c["experiment"] == "framework":
            assert f" {c['key']} |" in framework_header
    assert "| model | device | O0 | O1 | O2 | O3 | O4 | disabled |" in md
    assert "| model | device | disable | basic | extended | all |" in md
    # Every configuration on CPU ran, or failed with its error recorded.
    for r in rows:
        if r["device"] == "cpu":
            assert r["status"] in ("ok", "failed"), r
            assert (r["status"] == "failed") == bool(r["error"]), r


def test_failures_are_the_pipelines_that_fail(study: dict[str, Any], executor, registry) -> None:
    # The study records a configuration as failed exactly when its pipeline fails, with the
    # step and error class the executor reports for it (the cache answers: nothing runs again).
    from fuzzconv.corpora import select
    from fuzzconv.pipeline import Pipeline

    corpus = select(_images(), LIMIT)
    rows = {r["config"]: r for r in _rows(study["_out"] / "labels.csv") if r["device"] == "cpu"}
    md = (study["_out"] / "study.md").read_text()
    for cell in study["cells"]:
        if cell["device"] != "cpu":
            continue
        if cell["pipeline"] is None:  # refused before it ran (no pipeline could be made)
            assert cell["status"] == "failed", cell
            continue
        ev = executor.evaluate(Pipeline.from_dict(cell["pipeline"], registry), corpus)
        assert ev.fresh == 0, cell["config"]
        assert (cell["status"] == "failed") == (not ev.ok), cell["config"]
        if not ev.ok:
            assert f"{ev.failure.stage}: {ev.failure.error_class}" in rows[cell["config"]]["error"]
            assert f"fail ({ev.failure.error_class})" in md
    # The disabled configuration turns passes off, and says which.
    plan = study["tvm_disable_plan"]
    assert plan["ok"] and plan["disabled"] and "LegalizeOps" in plan["required"]


def test_label_changes_match_the_cached_outputs(study: dict[str, Any], executor, registry) -> None:
    from fuzzconv.corpora import select
    from fuzzconv.oracle import compare
    from fuzzconv.pipeline import Pipeline

    corpus = select(_images(), LIMIT)
    by_key = {c["key"]: c for c in study["configurations"]}
    cells = {(c["config"], c["device"]): c for c in study["cells"]}
    csv_rows = {(r["config"], r["device"]): r for r in _rows(study["_out"] / "labels.csv")}
    checked = 0
    for (key, device), cell in cells.items():
        if device != "cpu" or cell["status"] != "ok" or by_key[key]["baseline"] == key:
            continue
        ev = executor.evaluate(Pipeline.from_dict(cell["pipeline"], registry), corpus)
        base = executor.evaluate(
            Pipeline.from_dict(cells[(by_key[key]["baseline"], "cpu")]["pipeline"], registry),
            corpus)
        # Everything was evaluated by the study: nothing is converted or run again.
        assert ev.fresh == 0 and base.fresh == 0, key
        cmp = compare(base.logits, ev.logits)
        expected = 100.0 * (cmp.flips + cmp.tie_flips) / len(corpus)
        assert cell["metrics"]["vs_baseline"]["label_change_pct"] == pytest.approx(expected), key
        assert float(csv_rows[(key, "cpu")]["label_change_pct"]) == pytest.approx(expected), key
        assert cell["metrics"]["vs_baseline"]["top5_jaccard"] == pytest.approx(cmp.top5_agreement)
        checked += 1
    assert checked >= 15


def test_timing_has_repeats_and_confidence_intervals(study: dict[str, Any]) -> None:
    timing = _rows(study["_out"] / "timing.csv")
    images = study["settings"]["timing_images"]
    assert images == 8
    ok_cpu = [c for c in study["cells"] if c["device"] == "cpu" and c["status"] == "ok"]
    assert ok_cpu
    for c in ok_cpu:
        t = c["timing"]
        assert t["image"]["samples"] == REPEATS * images, c["config"]
        assert t["batch"]["samples"] == REPEATS, c["config"]
        assert t["image"]["ci_low"] <= t["image"]["median"] <= t["image"]["ci_high"]
        assert len(t["image_seconds"]) == REPEATS and len(t["image_seconds"][0]) == images
    assert {(r["config"], r["unit"]) for r in timing if r["device"] == "cpu"} == {
        (c["config"], u) for c in ok_cpu for u in ("image", "batch")}
    for r in timing:
        assert r["meets_ci_goal"] == str(float(r["ci_half_width_pct"]) <= 2.0)


def test_timing_is_interleaved_in_rounds_with_a_control_pair(study: dict[str, Any]) -> None:
    rounds = study["timing_rounds"]["tiny_keras"]["cpu"]
    ok_cpu = {c["config"] for c in study["cells"] if c["device"] == "cpu" and c["status"] == "ok"}
    assert rounds["rounds"] == REPEATS and len(rounds["orders"]) == REPEATS
    assert all(set(o) == ok_cpu | {"keras-rebuilt"} for o in rounds["orders"])
    control = study["timing_control"]["tiny_keras"]["cpu"]
    assert control["config"] == "keras-rebuilt" and control["of"] == "keras"
    assert control["ratio"]["rounds"] == REPEATS and control["reads_one"] in (True, False)
    by_key = {c["key"]: c for c in study["configurations"]}
    for c in study["cells"]:
        if c["device"] == "cpu" and c["config"] in ok_cpu and c["timing"].get("rounds") \
                and by_key[c["config"]]["baseline"] != c["config"]:
            assert c["timing"]["ratio"]["to"] == by_key[c["config"]]["baseline"]
            r = c["timing"]["ratio"]["image"]
            assert r["ci_low"] <= r["ratio"] <= r["ci_high"]
    md = (study["_out"] / "study.md").read_text()
    assert "**Control pair**" in md and "`keras-rebuilt` / `keras`" in md


def test_plots_are_png_files(study: dict[str, Any]) -> None:
    from PIL import Image

    pngs = sorted(study["_out"].glob("*.png"))
    assert [p.name for p in pngs] == ["label_change_heatmap.png", "latency_frameworks.png",
                                      "latency_optimizations.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE, png.name
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.format == "PNG" and min(img.size) > 100, png.name


def test_gpu_column_says_not_measured(study: dict[str, Any]) -> None:
    from fuzzconv.pipeline import device_available

    if device_available("cuda"):
        pytest.skip("this machine has a GPU: the CUDA column is measured")
    assert study["settings"]["devices"] == {"cpu": "measured", "cuda": "not measured"}
    on_cuda = {c["key"] for c in study["configurations"] if "cuda" in c["devices"]}
    # ORT, torch and TVM paths run on CUDA; Keras and TFLite runtimes do not.
    assert {"onnx-ort", "twin-torch", "tvm-O3"} <= on_cuda and "keras" not in on_cuda
    cuda = [r for r in _rows(study["_out"] / "labels.csv") if r["device"] == "cuda"]
    assert cuda and all(r["label_change_pct"] == "" and not r["error"] for r in cuda)
    assert {r["config"] for r in cuda if r["status"] == "not measured"} == on_cuda
    assert {r["config"] for r in cuda if r["status"] == "not applicable"} == (
        {c["key"] for c in study["configurations"]} - on_cuda)
    assert not any(r["device"] == "cuda" for r in _rows(study["_out"] / "timing.csv"))
    md = (study["_out"] / "study.md").read_text()
    assert "**cuda** (not measured;" in md
    assert "| tiny_keras | cuda | not measured |" in md
    assert "| tiny_keras | cuda | not applicable | not applicable | not measured |" in md
    device_claim = next(c for c in study["paper"] if "device" in c["claim"])
    assert device_claim["verdict"] == "not measurable here"
    assert device_claim["why"] == "no GPU on this machine"


def _resume(study: dict[str, Any], store_dir: Path, out: Path, edit: Any = None) -> dict[str, Any]:
    """Run the study again with ``--resume`` over a copy of the module's ``study.json``."""
    from fuzzconv.study import run_study

    out.mkdir()
    old = json.loads((study["_out"] / "study.json").read_text())
    (out / "study.json").write_text(json.dumps(edit(old) if edit else old))
    log = io.StringIO()
    result = run_study(models="tiny_keras", images=_images(), devices="cpu,cuda",
                       repeats=REPEATS, out=out, limit=LIMIT, store=store_dir,
                       console=Console(file=log, width=200), resume=True)
    result["_log"] = log.getvalue()
    return result


def test_without_a_terminal_each_configuration_gets_a_line(study: dict[str, Any]) -> None:
    lines = study["_log"].splitlines()
    for cell in study["cells"]:
        start = f"tiny_keras {cell['config']} @{cell['device']}: {cell['status']}"
        assert sum(line.startswith(start) for line in lines) == 1, (start, study["_log"][-2000:])


def test_resume_keeps_what_was_measured(study: dict[str, Any], store_dir: Path, tmp_path: Path) -> None:
    first = study["_out"]
    again = _resume(study, store_dir, tmp_path / "resumed")
    assert again["resumed"]["models"] == ["tiny_keras"]
    old = json.loads((first / "study.json").read_text())
    # Timing samples differ from run to run: equal cells mean nothing was measured again.
    assert again["cells"] == old["cells"] and again["opt_spread"] == old["opt_spread"]
    for name in ("labels.csv", "timing.csv"):
        assert (tmp_path / "resumed" / name).read_text() == (first / name).read_text()
    assert again["elapsed_seconds"] > study["elapsed_seconds"]
    assert "- resumed: tiny_keras" in (tmp_path / "resumed" / "study.md").read_text()
    assert "tiny_keras: kept from" in again["_log"] and "@cpu" not in again["_log"]


def test_resume_refuses_another_stack_and_leaves_the_study(study: dict[str, Any], store_dir: Path,
                                                          tmp_path: Path) -> None:
    from fuzzconv.errors import UsageError

    def older_onnx(old: dict[str, Any]) -> dict[str, Any]:
        old["versions"]["onnx"] = "0.0.1"
        return old

    out = tmp_path / "other-stack"
    with pytest.raises(UsageError, match="other versions of onnx"):
        _resume(study, store_dir, out, older_onnx)
    assert json.loads((out / "study.json").read_text())["versions"]["onnx"] == "0.0.1"
