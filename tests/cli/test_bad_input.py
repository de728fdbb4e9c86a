"""Bad input of every class: one line on stderr, exit code 2, no traceback, the store unchanged."""

from __future__ import annotations

import io
import json
import pickle
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fuzzconv.cli import app
from fuzzconv.gen.spec import GenSpec, Layer
from fuzzconv.store import Store

runner = CliRunner()
ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store holding one campaign and one finding, as a hunt leaves it."""
    d = tmp_path / "store"
    with Store(d) as db:
        cid = db.new_campaign("tiny_keras", 0, {"model": "tiny_keras"}, {"fuzzconv": "0"})
        db.upsert_finding({"id": "F-0000abcd", "model": "tiny_keras", "symptom": "label_flip",
                           "signature": "label_flip:x", "flip_rate": 0.5}, cid, "b1")
        # a generated model whose stored spec a newer version wrote (or someone edited)
        spec = GenSpec("keras", 16, (Layer.make("conv", {}, 0, "keras"),))
        edited = spec.to_dict()
        edited["layers"][0]["kind"] = "frobnicate"
        db.add_generated(spec.name, json.dumps(edited))
        db.upsert_finding({"id": "F-0000fe11", "model": spec.name, "symptom": "label_flip",
                           "campaign": cid,
                           "signature": "label_flip:y", "flip_rate": 0.5,
                           "pipeline": {"model": spec.name, "steps": [{"step": "keras.tf2onnx"}],
                                        "runtime": {"name": "ort"}}, "culprit": None}, cid, "b2")
        db.set_campaign_status(cid, "done")
    return d


def dump(store: Path) -> str:
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    text = "\n".join(db.iterdump())
    db.close()
    return text


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def bundle_dir(tmp: Path, name: str) -> Path:
    """A bundle laid out as `fuzzconv bundle` writes it; its repro.py leaves tmp/repro-ran."""
    b = tmp / name
    (b / "input").mkdir(parents=True)
    (b / "input" / "model.onnx").write_bytes(b"\x08\x07")
    for array in ("inputs.npy", "expected.npy"):
        np.save(b / array, np.zeros((1, 4), np.float32), allow_pickle=False)
    (b / "finding.json").write_text(json.dumps({"id": "F-0000abcd", "symptom": "label_flip"}))
    ran = tmp / "repro-ran"
    (b / "repro.py").write_text(f"from pathlib import Path\nFINDING = 'F-0000abcd'\n"
                                f"TIMEOUT_S = 60.0\nPath({str(ran)!r}).write_text('')\n"
                                "print('NOT REPRODUCED')\n")
    return b


def bundle_tar(tmp: Path, name: str, member: str, data: bytes = b"x",
               link: str | None = None) -> Path:
    """That bundle as a .tar.gz, plus one more member (a symlink to ``link`` if given)."""
    dst = tmp / f"{name}.tar.gz"
    with tarfile.open(dst, "w:gz") as tar:
        tar.add(bundle_dir(tmp, name), arcname=name)
        info = tarfile.TarInfo(member)
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def bundle_zip(tmp: Path, name: str, member: str) -> Path:
    b = bundle_dir(tmp, name)
    dst = tmp / f"{name}.zip"
    with zipfile.ZipFile(dst, "w") as zf:
        for p in b.rglob("*"):
            zf.write(p, p.relative_to(tmp).as_posix())
        zf.writestr(member, b"x")
    return dst


def cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    empty = tmp / "empty"
    empty.mkdir()
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    (corrupt / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    bad_plugin = write(tmp / "bad_plugin.py", "import nonexistent_module_xyz\n")
    escaped = tmp / "escaped.txt"  # where a member leaving its extraction directory would land
    climb = "../" * 40 + str(escaped).lstrip("/")
    object_array = bundle_dir(tmp, "object-array")
    np.save(object_array / "inputs.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    plugin_bundle = bundle_dir(tmp, "with-plugin")
    (plugin_bundle / "plugin").mkdir()
    write(plugin_bundle / "plugin" / "acme.py", "def transform(x):\n    return x\n")
    from fuzzconv.corpora import SHIPPED_DIR

    natural = str(SHIPPED_DIR / "natural")
    half_written = tmp / "half-written-study"
    half_written.mkdir()
    write(half_written / "study.json", '{"settings": {"models": ["tiny_keras"]')
    other_settings = tmp / "other-study"
    other_settings.mkdir()
    write(other_settings / "study.json", json.dumps({
        "settings": {"models": [], "repeats": 10, "weights": "calibrated"}, "cells": [],
        "model_seconds": {}, "opt_spread": {}, "elapsed_seconds": 1.0,
        "machine": {"load_average_start": [0.0, 0.0, 0.0]}}))
    return [
        ("unknown model", ["hunt", "--model", "alexnet", "--max-evals", "1"], "unknown model"),
        ("unknown generated family", ["hunt", "--model", "gen:nosuch", "--max-evals", "1"],
         "gen:keras:<id>"),
        ("a stored generated model this version cannot build", ["repro", "F-0000fe11"],
         "layer 1 (frobnicate): not in this version's vocabulary"),
        ("the same, to bundle", ["bundle", "F-0000fe11", "-o", str(tmp / "b")],
         "layer 1 (frobnicate)"),
        ("the same, to shrink", ["shrink", "F-0000fe11"], "layer 1 (frobnicate)"),
        ("--plan of a generated family", ["hunt", "--model", "gen:torch", "--plan"],
         "draws its models as it goes"),
        ("a study to resume that is not one", ["study", "--models", "tiny_keras", "--images",
                                               natural, "--out", str(half_written), "--resume"],
         "is not a study"),
        ("a study to resume made with other settings", [
            "study", "--models", "tiny_keras", "--images", natural, "--repeats", "2",
            "--out", str(other_settings), "--resume"], "repeats = 10"),
        ("an unknown study configuration", ["study", "--models", "tiny_keras", "--images",
                                            natural, "--configs", "onnx-tvm,tvm-O9",
                                            "--out", str(tmp / "unknown-config-study")],
         "unknown configuration 'tvm-O9'"),
        ("an empty list of study configurations", ["study", "--models", "tiny_keras",
                                                   "--configs", " , ", "--out",
                                                   str(tmp / "no-config-study")],
         "--configs needs at least one name"),
        ("unknown step", ["run", str(write(tmp / "p1.json", json.dumps(
            {"model": "tiny_keras", "steps": [{"step": "acme.nope"}], "runtime": {"name": "ort"}})))],
         "unknown step"),
        ("malformed pipeline JSON", ["run", str(write(tmp / "p2.json", '{"model": '))], "not valid JSON"),
        ("chain whose formats do not fit", ["run", str(write(tmp / "p3.json", json.dumps(
            {"model": "tiny_keras", "steps": [{"step": "keras.tf2onnx"}],
             "runtime": {"name": "tflite"}})))], "runs tflite"),
        ("pipeline that is not an object", ["run", str(write(tmp / "p4.json", "[1, 2]"))],
         "must be a JSON object"),
        ("empty image directory", ["hunt", "--model", "tiny_keras", "--images", str(empty),
                                   "--max-evals", "1"], "no JPEG or PNG"),
        ("corrupt image directory", ["hunt", "--model", "tiny_keras", "--images", str(corrupt),
                                     "--max-evals", "1"], "no readable images"),
        ("missing image directory", ["hunt", "--model", "tiny_keras", "--images",
                                     str(tmp / "nope"), "--max-evals", "1"], "nope"),
        ("bad budget string", ["hunt", "--model", "tiny_keras", "--budget", "a while"], "bad budget"),
        ("unknown finding ID", ["show", "F-ffffffff"], "no finding"),
        ("unknown finding ID to repro", ["repro", "F-ffffffff"], "no finding"),
        ("plugin that raises on import", ["hunt", "--model", "tiny_keras", "--plugin",
                                          str(bad_plugin), "--max-evals", "1"], "failed on import"),
        ("missing plugin file", ["hunt", "--model", "tiny_keras", "--plugin", str(tmp / "none.py"),
                                 "--max-evals", "1"], "plugin file not found"),
        ("unknown focus step", ["hunt", "--model", "tiny_keras", "--focus", "x.y", "--max-evals", "1"],
         "unknown step"),
        ("bad status filter", ["reports", "--status", "zombie"], "unknown status"),
        ("bad weights", ["hunt", "--model", "tiny_keras", "--weights", "/no/such.h5",
                         "--max-evals", "1"], "--weights"),
        ("unknown option", ["hunt", "--model", "tiny_keras", "--turbo"], "No such option"),
        ("a bundle with path traversal", ["repro", str(bundle_tar(tmp, "climb", climb))],
         "leaves the extraction directory"),
        ("a zip bundle with an absolute path", ["repro", str(bundle_zip(tmp, "absolute",
                                                                        str(escaped)))],
         "leaves the extraction directory"),
        ("a bundle with a link pointing out", ["repro", str(bundle_tar(
            tmp, "link-out", "link-out/input/weights", link=str(escaped)))],
         "outside the extraction directory"),
        ("a bundle that contains a pickle", ["repro", str(bundle_tar(
            tmp, "pickled", "pickled/input/weights.pkl", pickle.dumps({"w": [1.0]})))],
         "input/weights.pkl is a pickle file"),
        ("a bundle with an array that needs allow_pickle", ["repro", str(object_array)],
         "allow_pickle"),
        ("a bundle carrying a plugin, not trusted", ["repro", str(plugin_bundle)],
         "plugin/acme.py"),
        ("a bundle path that does not exist", ["repro", str(tmp / "nope.tar.gz")], "no bundle at"),
    ]


def test_every_bad_input_class_is_one_line_exit_2_and_leaves_the_store(tmp_path, store):
    before = dump(store)
    seen = []
    for name, args, fragment in cases(tmp_path):
        r = runner.invoke(app, [*args, "--store", str(store)])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.exit_code == 2, (name, r.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
        assert fragment in lines[0], (name, lines[0])
        assert "Traceback" not in r.output, name
        assert dump(store) == before, name
        seen.append(name)
    assert len(seen) >= 12
    # A study that could not be resumed is left as it was.
    assert (tmp_path / "half-written-study" / "study.json").read_text().endswith('["tiny_keras"]')
    assert json.loads((tmp_path / "other-study" / "study.json").read_text())["settings"]["repeats"] == 10
    # No refused bundle ran its repro.py or wrote outside its extraction directory.
    assert not (tmp_path / "repro-ran").exists() and not (tmp_path / "escaped.txt").exists()


def test_unwritable_store_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = runner.invoke(app, ["hunt", "--model", "tiny_keras", "--store", str(blocker / "s"),
                            "--max-evals", "1"])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "store" in r.stderr


def test_missing_framework_extra_names_the_extra(tmp_path, monkeypatch):
    from fuzzconv import registry

    monkeypatch.setitem(registry.FAMILY_MODULES, "tf", ("tensorflow_that_is_not_installed",))
    f = write(tmp_path / "p.json", json.dumps({"model": "tiny_keras", "steps": [],
                                               "runtime": {"name": "keras"}}))
    r = runner.invoke(app, ["run", str(f), "--store", str(tmp_path / "s"), "--limit", "2"])
    assert r.exit_code == 2, r.output
    assert "pip install 'fuzzconv[tf]'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
