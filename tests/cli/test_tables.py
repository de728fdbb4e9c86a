"""Every table at 80 and 120 columns: names and IDs whole, words never split, tables that fit.

Each command runs through typer's CliRunner with ``COLUMNS`` set, as in a terminal of that width.
Stores are written through the store API; ``hunt``, ``run`` and ``models --check`` get their
results from stand-ins for the library calls behind them, so no framework runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from fuzzconv.campaign import bucket_of
from fuzzconv.cli import app
from fuzzconv.campaign import HuntResult
from fuzzconv.store import Store
from fuzzconv.zoo import MODELS

runner = CliRunner()
WIDTHS = (80, 120)
BOX = "┏┃┡│└┗╇┣┠╭╰├┌"

CHAIN = [{"step": "torch.onnx_export", "params": {"opset": 17, "dynamo": True}},
         {"step": "onnx.optimize", "params": {"level": "extended"}},
         {"step": "onnx.tvm", "params": {}},
         {"step": "tvm.pass", "params": {"name": "AttachAttrLayoutFreeBuffers"}},
         {"step": "tvm.build", "params": {
             "opt_level": 3, "disabled_passes": ["StaticPlanBlockMemory", "KillAfterLastUse"],
             "target": {"kind": "llvm", "mcpu": "x86-64-v4", "fast-math": True}}}]
CULPRITS = [CHAIN[4], {"step": "ort", "params": {"graph_optimization_level": "extended"}},
            {"step": "keras.tflite", "params": {"optimizations": ["DEFAULT"],
                                                 "supported_types": ["float16"]}},
            CHAIN[0], {"step": "onnx.onnx2torch", "params": {}}]
FIND_MODELS = ["torch:mobilenet_v2", "torch:inception_v3", "densenet121", "tiny_keras"]


def invoke(width: int, *args: Any):
    r = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})
    assert r.exit_code == 0, r.output
    return r.stdout


def pieces(text: str) -> list[str]:
    """The words a cell may not be broken inside (the tables' policy, restated)."""
    return [p.rstrip() for p in re.findall(r"\(?[^\s,;(=/]*[,;(=/]*\s*", text) if p.strip()]


def assert_whole(out: str, needles: list[str]) -> None:
    lines = out.splitlines()
    broken = [n for n in needles if not any(n in line for line in lines)]
    assert not broken, f"not whole on one line: {broken}\n{out}"


def assert_fits(out: str, width: int) -> None:
    table = [line for line in out.splitlines() if line[:1] in BOX]
    assert table, out
    assert max(cell_len(line) for line in table) <= width, out


def headers_or_hidden(out: str, headers: list[str], width: int) -> None:
    """Each column is shown (its header's words are in the header) or named as hidden."""
    hidden = re.search(rf"hidden at {width} columns: (.*) \(--wide shows them\)", out)
    gone = hidden.group(1).split(", ") if hidden else []
    head = " ".join(line for line in out.splitlines() if line.startswith("┃"))
    for h in headers:
        assert (h in gone) != all(w in head for w in h.split()), (h, out)


def finding(i: int) -> dict[str, Any]:
    model = FIND_MODELS[i % len(FIND_MODELS)]
    culprit = CULPRITS[i % len(CULPRITS)]
    pipeline = {"model": model, "steps": CHAIN, "device": "cpu",
                "runtime": {"name": "tvm", "params": {}}}
    symptom = ("label_flip", "numeric", "crash")[i // len(CULPRITS) % 3]  # buckets of 1 or 2
    return {
        "id": f"F-{(0x3a9c1e2b + 7919 * i) % 16**8:08x}", "model": model, "symptom": symptom,
        "signature": f"{symptom}:{culprit['step']}", "flip_rate": 0.05 * (i % 19),
        "images": 64, "pipeline": pipeline, "minimal_pipeline": {**pipeline, "steps": CHAIN[:2]},
        "culprit": culprit, "failing_inputs": ["corpora/natural/0003.png"],
        "first_divergent_node": "/features/features.18/features.18.0/Conv",
        "fix_hint": "opt_level=2 agrees on all images",
        "evaluations": {"hunt": 14, "shrink": 6, "cache_hits": 21}, "flaky": False,
        "versions": {"torch": "2.14.1", "tvm": "0.27.0"}, "bundle": None,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Findings in buckets of at most three (the table lists three IDs a bucket)."""
    d = tmp_path_factory.mktemp("tables") / "store"
    found = []
    with Store(d) as db:
        cids = [db.new_campaign(m, 0, {"model": m}, {"fuzzconv": "0"}) for m in FIND_MODELS]
        for i in range(21):
            f = finding(i)
            f["campaign"] = cids[i % len(cids)]
            db.upsert_finding(f, f["campaign"], bucket_of(f))
            found.append(f)
        for cid in cids:
            db.set_campaign_status(cid, "done")
    return d, found


@pytest.mark.parametrize("width", WIDTHS)
def test_models(width: int) -> None:
    out = invoke(width, "models")
    assert_whole(out, list(MODELS))
    assert_fits(out, width)
    headers_or_hidden(out, ["name", "source", "input shape", "preprocessing", "classes",
                            "weights"], width)
    wide = invoke(width, "models", "--wide")
    assert_whole(wide, list(MODELS) + ["weights", "calibrated"])
    assert "hidden at" not in wide


@pytest.mark.parametrize("width", WIDTHS)
def test_models_check(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import fuzzconv.check

    def check_models(specs: list[Any], corpus: Any, **_: Any) -> list[dict[str, Any]]:
        return [{"distinct_labels": 9, "median_margin": 0.125, "accuracy": None, "seconds": 3.5}
                for _ in specs]

    monkeypatch.setattr(fuzzconv.check, "check_models", check_models)
    out = invoke(width, "models", "--check")
    assert_whole(out, list(MODELS))
    assert_fits(out, width)
    headers_or_hidden(out, ["distinct labels", "median margin", "accuracy", "seconds"], width)


@pytest.mark.parametrize("width", WIDTHS)
def test_steps(width: int) -> None:
    described = json.loads(invoke(width, "steps", "--json"))
    out = invoke(width, "steps")
    assert_whole(out, [d["name"] for d in described])
    assert_fits(out, width)
    # the parameter choices fold between values, never inside one
    assert_whole(out, [p for d in described for k, c in d["params"].items()
                       for p in pieces(f"{k}: " + ", ".join(json.dumps(v) for v in c["choices"]))])
    headers_or_hidden(out, ["name", "kind", "from → to", "usable here"], width)


@pytest.mark.parametrize("width", WIDTHS)
def test_reports(width: int, store: tuple[Path, list[dict[str, Any]]]) -> None:
    d, found = store
    out = invoke(width, "reports", "--store", d)
    assert_whole(out, [f["id"] for f in found] + [c["step"] for c in CULPRITS])
    assert_fits(out, width)
    culprits = [c["step"] + (f"({','.join(f'{k}={json.dumps(v, sort_keys=True)}' for k, v in sorted(c['params'].items()))})"
                             if c["params"] else "") for c in CULPRITS]
    assert_whole(out, [p for c in culprits for p in pieces(c)])
    headers = ["ids", "symptom", "culprit", "count", "worst flip", "models", "first seen",
               "last seen", "status"]
    headers_or_hidden(out, headers, width)
    if "hidden at" not in out:
        assert_whole(out, FIND_MODELS)
    wide = invoke(width, "reports", "--wide", "--store", d)
    assert_whole(wide, [f["id"] for f in found] + FIND_MODELS + culprits)
    assert all(h.split()[0] in wide for h in headers) and "hidden at" not in wide


@pytest.mark.parametrize("width", WIDTHS)
def test_show(width: int, store: tuple[Path, list[dict[str, Any]]]) -> None:
    d, found = store
    for f in found[:5]:
        out = invoke(width, "show", f["id"], "--store", d)
        assert_whole(out, [f["id"], f["model"], f["culprit"]["step"], f["first_divergent_node"]]
                     + [s["step"] for s in CHAIN] + pieces(json.dumps(CHAIN[4]["params"]["target"], sort_keys=True)))
        assert_fits(out, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_hunt_summary(width: int, store: tuple[Path, list[dict[str, Any]]],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    import fuzzconv.launch

    d, found = store
    cid = "C-20261203-025049-b7ca"
    monkeypatch.setattr(fuzzconv.launch, "run_hunt", lambda **_: HuntResult(
        cid, 120, found[:6], 901.0, "budget", 40, 80, {"confirmed": 2}))
    out = invoke(width, "hunt", "--model", "tiny_keras", "--store", d)
    assert_whole(out, [cid] + [f["id"] for f in found[:6]]
                 + [f["culprit"]["step"] for f in found[:6]])
    assert_fits(out, width)
    headers_or_hidden(out, ["id", "symptom", "flip rate", "culprit", "pipeline"], width)
    wide = invoke(width, "hunt", "--model", "tiny_keras", "--wide", "--store", d)
    assert_whole(wide, [s["step"] for s in CHAIN])


@pytest.mark.parametrize("width", WIDTHS)
def test_run(width: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fuzzconv.pipeline_file as runner_module

    label = ("torch:inception_v3: torch.onnx_export(dynamo=True,opset=17) → onnx.tvm → "
             "tvm.build(disabled_passes=[StaticPlanBlockMemory,KillAfterLastUse],opt_level=3) ⇒ tvm")
    monkeypatch.setattr(runner_module, "run_pipeline", lambda *a, **k: {
        "label": label, "symptom": "label_flip", "flip_rate": 0.25, "flips": 16, "images": 64,
        "tie_flips": 1, "top5_agreement": 0.9, "kendall_tau": 0.8, "max_abs_diff": 3.5,
        "max_rel_diff": 0.2, "nan": 0, "error": None, "cache": {"hits": 3, "fresh": 2},
        "timings": {"convert": 1.5, "compile": 30.25, "load": 0.5, "infer": 2.0}})
    r = runner.invoke(app, ["run", str(tmp_path / "p.json")], env={"COLUMNS": str(width)})
    assert r.exit_code == 1, r.output  # it diverges
    assert_whole(r.stdout, ["torch:inception_v3:", "torch.onnx_export(", "tvm.build(",
                            "StaticPlanBlockMemory,", "label_flip"])
    assert_fits(r.stdout, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_campaigns(width: int, store: tuple[Path, list[dict[str, Any]]]) -> None:
    d, _ = store
    listed = json.loads(invoke(width, "campaigns", "--json", "--store", d))
    out = invoke(width, "campaigns", "--store", d)
    assert_whole(out, [c["id"] for c in listed] + [c["model"] for c in listed])
    assert_fits(out, width)
    headers_or_hidden(out, ["campaign", "model", "status", "last seen", "evaluations",
                            "findings", "started", "host"], width)


def test_a_terminal_narrower_than_a_name_widens_the_table_rather_than_cut_it() -> None:
    out = invoke(30, "models")
    assert_whole(out, list(MODELS))
    assert "hidden at 30 columns" in out
