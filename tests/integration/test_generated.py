"""Generated models through the real frameworks: drawn specs build and calibrate in their own
framework's worker, as do the kinds beyond image layers; a hunt on a tiny generated model with an
injected one-layer fault (a plugin) shrinks the model to that layer; and a hunt finds the
exporter's floor division, shrinks it to that layer, and its bundle is judged real."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fuzzconv.cli import app
from fuzzconv.corpora import select
from fuzzconv.gen import catalog
from fuzzconv.gen.draw import draw_spec, seeded
from fuzzconv.gen.spec import GenSpec, Layer
from fuzzconv.session import open_session
from fuzzconv.store import Store
from tests.conftest import needs

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: Drawn specs built per framework: few and small, each a build, a calibration and a run.
DRAWN = 4


@needs("tf", "torch")
def test_drawn_specs_build_in_their_framework_with_the_shapes_their_spec_says(tmp_path):
    corpus = select(None, 12)
    rng = random.Random(11)
    specs = [draw_spec(fw, seeded(rng), max_layers=4) for fw in ("keras", "torch")
             for _ in range(DRAWN)]
    with open_session(tmp_path / "store") as ex:
        for spec in specs:
            catalog.remember(spec)
            try:
                ref = ex.reference(spec.name, corpus)
            except Exception as exc:  # noqa: BLE001 - only a degenerate model may be refused
                assert "degenerate" in str(exc), (spec.label(), exc)
                continue
            assert ref.logits is not None and ref.logits.shape == (len(corpus), spec.classes)
            assert np.isfinite(ref.logits).all(), spec.label()
            # calibrated like the zoo's: not one label for every image
            assert len(set(ref.logits.argmax(axis=1))) > 1, spec.label()
            # the same spec, built again from its stored form, gives the same bits
            again = GenSpec.from_dict(json.loads(spec.canonical_json()), spec.name)
            assert again.name == spec.name


@needs("tf", "ort")
def test_an_injected_one_layer_fault_shrinks_to_that_layer(tmp_path):
    store = tmp_path / "store"
    spec = GenSpec("keras", 16, ())
    # a non-integer scale: tf2onnx writes a Resize node (an integer one becomes Tile); the
    # poisoned values reach the head through the (inactive) dropout, so the symptom stays nan
    for kind, attrs in [("conv", {"filters": 8, "padding": "same"}), ("resize", {"factor": 1.5}),
                        ("dropout", {"rate": 0.2})]:
        spec = spec.insert(len(spec.layers), Layer.make(kind, attrs, len(spec.layers), "keras"))
    with Store(store) as db:
        db.add_generated(spec.name, spec.canonical_json())
    r = CliRunner().invoke(app, [
        "hunt", "--model", spec.name, "--plugin", str(ASSETS / "gen_fault_plugin.py"),
        "--focus", "gen_fault.poison_resize", "--max-evals", "4", "--limit", "16",
        "--slowdown", "1000", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    found = [f for f in json.loads(r.stdout)["findings"]
             if f["culprit"] == {"step": "gen_fault.poison_resize", "params": {"on": True}}]
    assert found, r.stdout
    f = found[0]
    assert f["model"] == spec.name and f["model_spec"] == spec.to_dict()
    assert f["minimal_model_layers"] == "resize(factor=1.5)"
    assert f["shrink"]["layers_before"] == 3 and f["shrink"]["layers_after"] == 1
    assert f["shrink"]["model_one_minimal"] is True
    assert f["shrink"]["model_profile"]["drop_layer"]["successes"] == 2
    # the minimal model is in the store and in show --json, and resolves from there
    shown = CliRunner().invoke(app, ["show", f["id"], "--store", str(store), "--json"])
    assert json.loads(shown.stdout)["minimal_model_spec"] == f["minimal_model_spec"]
    assert GenSpec.from_dict(f["minimal_model_spec"]).name == f["minimal_pipeline"]["model"]


@needs("torch", "ort")
def test_a_drawn_model_the_focus_cannot_reach_is_skipped_and_the_hunt_goes_on(tmp_path,
                                                                               monkeypatch):
    import fuzzconv.gen.hunt as gen_hunt

    def torch_spec(*layers):
        spec = GenSpec("torch", 16, ())
        for kind, attrs in layers:
            spec = spec.insert(len(spec.layers), Layer.make(kind, attrs, len(spec.layers),
                                                            "torch"))
        return spec

    # an antialiased resize: torch.onnx.export refuses it, so no pipeline reaches ONNX Runtime
    blocked = torch_spec(("conv", {"filters": 8, "padding": "same"}),
                         ("resize", {"mode": "bilinear", "antialias": True}))
    plain = torch_spec(("conv", {"filters": 8, "padding": "same"}), ("act", {"fn": "relu"}))
    drawn = iter([blocked, plain])
    monkeypatch.setattr(gen_hunt, "draw_spec", lambda *a, **k: next(drawn, None))
    monkeypatch.setattr(gen_hunt, "P_NEW", 1.0)  # draw, never mutate
    r = CliRunner().invoke(app, ["hunt", "--model", "gen:torch", "--focus", "ort",
                                 "--max-evals", "2", "--limit", "16", "--slowdown", "1000",
                                 "--store", str(tmp_path / "store"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert f"{blocked.name} skipped: no pipeline containing ort is reachable" in "\n".join(
        out["limitations"])
    assert out["evaluations"] >= 1  # the next model was hunted


def _spec(framework: str, *layers: tuple[str, dict]) -> GenSpec:
    spec = GenSpec(framework, 16, ())
    for kind, attrs in layers:
        spec = spec.insert(len(spec.layers), Layer.make(kind, attrs, len(spec.layers), framework))
    return spec


#: The kinds beyond image layers (element-wise functions, comparisons, integer arithmetic,
#: cumulative sums, the other reductions, floor division and remainder), a few to a model.
BEYOND_IMAGES = [
    [("conv", {"filters": 8}), ("math", {"fn": "logsigmoid", "scale": 10.0}),
     ("compare", {"op": "greater", "against": "channel", "then": "where"}),
     ("cumsum", {"axis": "height", "reverse": True})],
    [("conv", {"filters": 8}), ("integer", {"op": "mod", "divisor": -2, "dtype": "int64"}),
     ("binary", {"op": "floordiv", "operand": "channel"}),
     ("reduce", {"op": "logsumexp", "axes": "channels"})],
    [("conv", {"filters": 8}), ("math", {"fn": "erf"}),
     ("compare", {"op": "equal", "against": "max", "then": "mask"}),
     ("binary", {"op": "mod", "operand": "scalar"}), ("reduce", {"op": "var"})],
]


@needs("tf", "torch")
def test_the_kinds_beyond_image_layers_build_and_run_in_both_frameworks(tmp_path):
    corpus = select(None, 12)
    with open_session(tmp_path / "store") as ex:
        for fw in ("keras", "torch"):
            for layers in BEYOND_IMAGES:
                spec = _spec(fw, *layers)
                catalog.remember(spec)
                ref = ex.reference(spec.name, corpus)
                assert ref.logits is not None and ref.logits.shape == (len(corpus), spec.classes)
                assert np.isfinite(ref.logits).all(), (fw, spec.label())


@needs("torch", "ort")
def test_the_exporters_floor_division_is_found_minimized_and_judged_real(tmp_path):
    # torch.onnx.export (TorchScript) writes floor division as a truncating Div and Cast: every
    # negative quotient that is not whole comes out one too high
    from tests.unit.peer_scripts import load_peer

    store = tmp_path / "store"
    spec = _spec("torch", ("conv", {"filters": 8}), ("act", {"fn": "tanh"}),
                 ("binary", {"op": "floordiv", "operand": "scalar"}))
    with Store(store) as db:
        db.add_generated(spec.name, spec.canonical_json())
    r = CliRunner().invoke(app, [
        "hunt", "--model", spec.name, "--focus", "torch.onnx_export", "--max-evals", "4",
        "--limit", "8", "--slowdown", "1000", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    found = [f for f in json.loads(r.stdout)["findings"] if f.get("culprit")
             and f["culprit"]["step"] == "torch.onnx_export"
             and not f["culprit"]["params"].get("dynamo")]
    assert found, r.stdout
    f = found[0]
    assert f["symptom"] in ("label_flip", "numeric")
    # the convolution and activation dropped, the operand reset to its plainest (x // (|x| + 1)):
    # the floor division alone still shows it
    assert f["minimal_model_layers"] == "binary(op=floordiv)"
    assert f["shrink"]["layers_before"] == 3 and f["shrink"]["layers_after"] == 1
    out = tmp_path / "bundle"
    b = CliRunner().invoke(app, ["bundle", f["id"], "-o", str(out), "--store", str(store)])
    assert b.exit_code == 0, b.output
    verdict = load_peer("bundle_triage").judge_bundle(out)
    assert verdict["verdict"] == "differs, well conditioned", verdict
