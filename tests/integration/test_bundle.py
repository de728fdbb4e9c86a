"""Bug bundles run where fuzzconv is not installed.

The session's real hunt on ``tiny_keras`` with the fault plugin (``fault_hunt``) finds
``fault.perturb(strength=0.5)``; its bundle's ``repro.py`` then runs in a fresh virtual environment
holding only numpy, onnx and onnxruntime (installed from the package index once per session: about
40 s here). Crash bundles are made from findings written into a copy of that store, for a plugin
step that raises and one that segfaults: the segfault must be observed through repro.py's child
process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fuzzconv.cli import app
from fuzzconv.campaign import bucket_of
from fuzzconv.errors import UsageError
from fuzzconv.report.bundle import write_bundle
from fuzzconv.store import Store

from ..conftest import FaultHunt, needs
from ..contracts import contract_errors

ASSETS = Path(__file__).resolve().parents[1] / "assets"
FAULT = ASSETS / "fault_plugin.py"
MISBEHAVING = ASSETS / "misbehaving_plugin.py"
NODE_FAULT = ASSETS / "node_fault_plugin.py"
PLUGINS = [FAULT, MISBEHAVING, NODE_FAULT]
#: What the repro.py of an ONNX-transform plugin needs, pinned like the project's extras.
PLAIN_PACKAGES = ["numpy==2.4.6", "onnx==1.23.2", "onnxruntime==1.32.0"]

pytestmark = needs("tf", "ort")


@pytest.fixture(scope="module")
def hunted(fault_hunt: FaultHunt, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, dict[str, Any]]:
    """A copy of the shared hunt's store (the tests add findings to it), and its fault.perturb
    finding."""
    return fault_hunt.copy(tmp_path_factory.mktemp("bundle") / "store"), fault_hunt.finding


@pytest.fixture(scope="module")
def bundle(hunted: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    store, finding = hunted
    return write_bundle(store, finding["id"], tmp_path_factory.mktemp("bundles") / "b", PLUGINS)


@pytest.fixture(scope="session")
def plain_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtual environment with numpy, onnx and onnxruntime only."""
    venv = tmp_path_factory.mktemp("plain-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # This interpreter's pip installs into the new environment (--python), which saves
    # bootstrapping pip there.
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                        *PLAIN_PACKAGES], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot install {' '.join(PLAIN_PACKAGES)} from the package index: "
                    f"{r.stderr.strip()[-300:]}")
    return python


def plain_env() -> dict[str, str]:
    """This environment without what would let a plain interpreter find fuzzconv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def run_repro(python: Path, bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "repro.py"], cwd=bundle, env=plain_env(),
                          capture_output=True, text=True, timeout=300)


def verdict(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def add_finding(store: Path, like: dict[str, Any], pipeline: dict[str, Any], culprit: int,
                failure: dict[str, Any] | None = None, campaign: str | None = None) -> str:
    """Store a finding like ``like`` for ``pipeline``, its culprit the ``culprit``-th element."""
    elements = [*pipeline["steps"], {"step": pipeline["runtime"]["name"],
                                     "params": pipeline["runtime"].get("params", {})}]
    f = {**like, "model": pipeline["model"], "pipeline": pipeline, "minimal_pipeline": pipeline,
         "culprit": {"step": elements[culprit - 1]["step"],
                     "params": elements[culprit - 1]["params"]},
         "symptom": "crash" if failure else like["symptom"], "failure": failure,
         "flip_rate": None if failure else like["flip_rate"], "reduced_model": None,
         "signature": json.dumps(pipeline, sort_keys=True), "bundle": None,
         "campaign": campaign or like["campaign"]}
    f["id"] = "F-" + hashlib.sha256(f["signature"].encode()).hexdigest()[:8]
    with Store(store) as db:
        db.upsert_finding(f, f["campaign"], bucket_of(f))
    return f["id"]


def test_bundle_layout(bundle: Path, hunted: tuple[Path, dict[str, Any]],
                       fault_hunt: FaultHunt) -> None:
    store, finding = hunted
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {"README.md", "repro.py", "inputs.npy", "expected.npy", "actual.npy", "finding.json",
            "pipeline.json", "fuzzconv_plugins_shim.py", "plugin/fault_plugin.py",
            "plugin/fault_noise.py", "plugin/fault_rng/__init__.py", "plugin/fault_rng/seeds.py",
            } <= names  # with the helper module the plugin imports, and the package it imports
    # The culprit takes ONNX and the finding has a reduced subgraph: that is what is bundled.
    assert finding["reduced_model"] and "input/reduced.onnx" in names
    repro = (bundle / "repro.py").read_text()
    assert "import fuzzconv\n" not in repro and "from fuzzconv" not in repro
    assert "allow_pickle=False" in repro and "pickle.load" not in repro
    for name in ("inputs.npy", "expected.npy", "actual.npy"):
        assert np.load(bundle / name, allow_pickle=False).dtype == np.float32
    readme = (bundle / "README.md").read_text()
    for part in ("## Environment", "## Steps to reproduce", "## Expected vs actual",
                 "## How often", "pip install numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0",
                 f"flip rate **{fault_hunt.flip_rate():.1%}**", "fault_plugin.py", "REPRODUCED"):
        assert part in readme, part
    with Store(store) as db:
        stored = db.finding(finding["id"])
    assert stored["bundle"] == str(bundle)
    assert contract_errors("finding", stored) == []
    assert json.loads((bundle / "finding.json").read_text())["bundle"] == str(bundle)


def test_repro_reproduces_without_fuzzconv(bundle: Path, plain_python: Path) -> None:
    check = subprocess.run([str(plain_python), "-c", "import fuzzconv"], cwd=bundle,
                           env=plain_env(), capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'fuzzconv'" in check.stderr
    proc = run_repro(plain_python, bundle)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert verdict(proc) == "REPRODUCED"


def test_repro_of_a_fixed_case_does_not_reproduce(bundle: Path, plain_python: Path,
                                                  tmp_path: Path) -> None:
    # "Fixed": the step now gives what the inputs gave before it.
    fixed = shutil.copytree(bundle, tmp_path / "fixed")
    shutil.copyfile(fixed / "actual.npy", fixed / "expected.npy")
    proc = run_repro(plain_python, fixed)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdict(proc) == "NOT REPRODUCED"


def test_repro_without_its_packages_cannot_run(bundle: Path, plain_python: Path,
                                               tmp_path: Path) -> None:
    broken = shutil.copytree(bundle, tmp_path / "broken")
    repro = broken / "repro.py"
    repro.write_text(repro.read_text().replace("MODULES = ['numpy',",
                                               "MODULES = ['no_such_module_here', 'numpy',"))
    proc = run_repro(plain_python, broken)
    assert proc.returncode == 2 and verdict(proc) == "CANNOT RUN", proc.stdout


@pytest.mark.parametrize("step,params,error_class,expected", [
    ("bad.segfault", {}, "SIGSEGV", 1),
    ("node_fault.reject_depthwise", {"strict": True}, "NotImplementedError", 1),
    # The same crash finding once the converter accepts the graph: nothing fails any more.
    ("node_fault.reject_depthwise", {"strict": False}, "NotImplementedError", 0),
])
def test_crash_bundles(hunted: tuple[Path, dict[str, Any]], plain_python: Path, tmp_path: Path,
                       step: str, params: dict[str, Any], error_class: str, expected: int) -> None:
    store, finding = hunted
    pipeline = {**finding["pipeline"],
                "steps": [finding["pipeline"]["steps"][0], {"step": step, "params": params}]}
    fid = add_finding(store, finding, pipeline, 2, {
        "symptom": "crash", "stage": f"step 2 {step}", "step": step, "error_class": error_class,
        "message": "as recorded", "stderr_tail": ""})
    out = write_bundle(store, fid, tmp_path / "crash", PLUGINS)
    assert not (out / "expected.npy").exists()
    proc = run_repro(plain_python, out)
    assert proc.returncode == expected, proc.stdout + proc.stderr
    if expected:
        assert f"{step} failed: {error_class}" in proc.stdout
        assert verdict(proc) == "REPRODUCED"
    else:
        assert "ran to completion" in proc.stdout and verdict(proc) == "NOT REPRODUCED"


def test_refuses_a_file_as_output(hunted: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    store, finding = hunted
    target = tmp_path / "taken"
    target.write_text("not a directory")
    with pytest.raises(UsageError, match="not a directory"):
        write_bundle(store, finding["id"], target, PLUGINS, verify=False)
    assert target.read_text() == "not a directory"


def test_never_writes_through_a_symlink(hunted: tuple[Path, dict[str, Any]],
                                        tmp_path: Path) -> None:
    store, finding = hunted
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "input").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UsageError, match="outside the bundle directory"):
        write_bundle(store, finding["id"], out, PLUGINS, verify=False)
    assert list(outside.iterdir()) == []


def test_unknown_finding_is_a_usage_error(hunted: tuple[Path, dict[str, Any]],
                                          tmp_path: Path) -> None:
    store, _ = hunted
    with pytest.raises(UsageError, match="no finding"):
        write_bundle(store, "F-nope", tmp_path / "b", PLUGINS)


def _steps(*steps: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"step": name, "params": params} for name, params in steps]


#: A culprit of every kind, on pipelines that agree with the reference: each bundle's repro.py
#: must compute what fuzzconv computed, so it prints NOT REPRODUCED. repro.py runs fuzzconv's own
#: functions, copied from its source, so this holds by construction
#: (``tests/unit/test_bundle_sources.py`` checks every step's copy is complete without running
#: it); one case runs here, a TVM build from a Relax module with the plainest completion after
#: it, and the others with --runslow. tvm.pass is left out (its first use in a fresh cache probes
#: TVM's pass list for minutes).
RECIPE_CASES = {
    "onnx.optimize": ("tiny_keras", _steps(("keras.tf2onnx", {}),
                                           ("onnx.optimize", {"level": "extended"})), "ort", {}, 2),
    "onnx.version": ("tiny_keras", _steps(("keras.tf2onnx", {}), ("onnx.version", {"opset": 18})),
                     "ort", {}, 2),
    "keras.tflite": ("tiny_keras", _steps(("keras.tflite", {"optimizations": ["DEFAULT"]})),
                     "tflite", {}, 1),
    "keras.tf2onnx": ("tiny_keras", _steps(("keras.tf2onnx", {"inputs_as_nchw": True})), "ort",
                      {}, 1),
    "tflite.tf2onnx": ("tiny_keras", _steps(("keras.tflite", {}), ("tflite.tf2onnx", {})), "ort",
                       {}, 2),
    "onnx.tvm": ("tiny_keras", _steps(("keras.tf2onnx", {"inputs_as_nchw": True}),
                                      ("onnx.tvm", {}), ("tvm.build", {})), "tvm", {}, 2),
    "tvm.build": ("tiny_keras", _steps(("keras.tf2onnx", {}), ("onnx.tvm", {}),
                                       ("tvm.build", {"opt_level": 0})), "tvm", {}, 3),
    "tvm_transform": ("tiny_keras", _steps(("keras.tf2onnx", {}), ("onnx.tvm", {}),
                                           ("node_fault.tvm_scale_depthwise", {"scale": 1.0}),
                                           ("tvm.build", {})), "tvm", {}, 3),
    "onnx.onnx2torch": ("tiny_keras", _steps(("keras.tf2onnx", {"inputs_as_nchw": True}),
                                             ("onnx.onnx2torch", {})), "torch", {}, 2),
    "torch.onnx_export": ("tiny_keras", _steps(("keras.tf2onnx", {}), ("onnx.onnx2torch", {}),
                                               ("torch.onnx_export", {})), "ort", {}, 3),
    "torch.onnx_export (zoo)": ("tiny_torch", _steps(("torch.onnx_export", {"opset": 13})), "ort",
                                {}, 1),
    "torch.tvm": ("tiny_torch", _steps(("torch.tvm", {"decompose": False}), ("tvm.build", {})),
                  "tvm", {}, 1),
    "ort runtime": ("tiny_keras", _steps(("keras.tf2onnx", {})), "ort",
                    {"graph_optimization_level": "disable"}, 2),
    "tflite runtime": ("tiny_keras", _steps(("keras.tflite", {})), "tflite", {"xnnpack": False},
                       2),
    "keras runtime": ("tiny_keras", [], "keras", {"jit_compile": True}, 1),
    "torch runtime": ("tiny_torch", [], "torch", {"compile": True}, 1),
}


RECIPE_CASES_RUN = ("tvm.build",)


@needs("tf", "ort", "tvm", "torch")
@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c in RECIPE_CASES_RUN
                                               else pytest.mark.slow) for c in RECIPE_CASES])
def test_every_recipe_computes_what_fuzzconv_computed(hunted: tuple[Path, dict[str, Any]],
                                                      tmp_path: Path, case: str) -> None:
    from fuzzconv.campaign import HuntConfig
    from fuzzconv.versions import stack_versions

    store, finding = hunted
    model, steps, runtime, params, culprit = RECIPE_CASES[case]
    campaign = None
    if model != finding["model"]:
        with Store(store) as db:
            campaign = db.new_campaign(model, 0, HuntConfig(model=model, images=16).to_dict(),
                                       stack_versions())
    pipeline = {"model": model, "steps": steps, "runtime": {"name": runtime, "params": params},
                "device": "cpu"}
    fid = add_finding(store, finding, pipeline, culprit, campaign=campaign)
    out = write_bundle(store, fid, tmp_path / "b", PLUGINS, verify=False)
    # fuzzconv's interpreter has every framework; repro.py imports only its culprit's.
    proc = run_repro(Path(sys.executable), out)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert verdict(proc) == "NOT REPRODUCED"


def test_a_received_bundle_runs_its_plugin_only_when_trusted(
        bundle: Path, hunted: tuple[Path, dict[str, Any]]) -> None:
    _, finding = hunted
    refused = CliRunner().invoke(app, ["repro", str(bundle)])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.output
    assert "plugin/fault_plugin.py" in refused.stderr and "--trust-plugin" in refused.stderr
    trusted = CliRunner().invoke(app, ["repro", str(bundle), "--trust-plugin", "--json"])
    assert trusted.exit_code == 1, trusted.output
    result = json.loads(trusted.stdout)
    assert result["id"] == finding["id"] and result["reproduced"] is True
    assert result["plugin_files"] == ["plugin/fault_noise.py", "plugin/fault_plugin.py",
                                      "plugin/fault_rng/__init__.py", "plugin/fault_rng/seeds.py"]
    assert result["output"].strip().splitlines()[-1] == "REPRODUCED"


def test_an_archived_bundle_round_trips_through_repro(hunted: tuple[Path, dict[str, Any]],
                                                      tmp_path: Path) -> None:
    store, finding = hunted
    plugins = [a for p in PLUGINS for a in ("--plugin", str(p))]
    made = CliRunner().invoke(app, ["bundle", finding["id"], "-o", str(tmp_path / "case"),
                                    "--store", str(store), "--no-check", "--archive", *plugins])
    assert made.exit_code == 0, made.output
    archive = tmp_path / "case.tar.gz"
    # Only the archive travels: the directory it was made from is gone.
    shutil.rmtree(tmp_path / "case")
    r = CliRunner().invoke(app, ["repro", str(archive), "--trust-plugin"])
    assert r.exit_code == 1, r.output
    assert r.stdout.strip().splitlines()[-1] == f"{finding['id']} (bundle {archive}): REPRODUCED"
    assert r.stdout.strip().splitlines()[-2] == "REPRODUCED"  # repro.py's own verdict
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.tar.gz"]
