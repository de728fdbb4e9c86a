"""The framework-free side of tuned TVM builds: trial plans, static batches, the tuning index,
the shared database file and how ``tvm.build`` declares its ``tuning`` parameter."""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

from fuzzconv import tuning
from fuzzconv.registry import default_registry
from fuzzconv.steps.tvm_measure import TuningDatabase


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FUZZCONV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_trial_plan_gives_the_costliest_workload_the_most_trials() -> None:
    plan = tuning.trial_plan([400.0, 100.0, 1.0, 0.0], max_trials=64, min_trials=8)
    assert plan == [64, 32, 8, 8]  # a quarter of the cost, half the trials; never under 8
    assert tuning.trial_plan([5.0, 5.0], max_trials=4, min_trials=8) == [4, 4]
    assert tuning.trial_plan([], max_trials=4) == []


def test_trials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUZZCONV_TUNING_TRIALS", "3")
    assert tuning.max_trials_from_env() == 3
    monkeypatch.setenv("FUZZCONV_TUNING_TRIALS", "lots")
    assert tuning.max_trials_from_env() == tuning.MAX_TRIALS_PER_TASK
    monkeypatch.setenv("FUZZCONV_TUNING_BUDGET", "90s")
    assert tuning.build_budget_from_env() == 90.0


def test_fixed_batches_cut_and_pad_and_drop_the_padding(tmp_path: Path) -> None:
    seen = []

    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True) + np.arange(len(x))[:, None]

    run = tuning.fixed_batches(predict, 3)
    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    y = run(x)
    assert seen == [(3, 2), (3, 2), (3, 2)]
    assert y.shape == (7, 1)
    # each row is computed from its own image and its position in its piece of three
    assert y[:, 0].tolist() == [x[i].sum() + i % 3 for i in range(7)]
    tuning.write_static_batch(tmp_path, 1)
    assert tuning.read_static_batch(tmp_path) == 1
    assert tuning.read_static_batch(tmp_path / "nothing") is None


def test_database_dir_is_per_target_and_one_for_equal_specs(cache: Path) -> None:
    plain = tuning.database_dir("llvm")
    assert plain == tuning.database_dir({"kind": "llvm"})
    assert plain != tuning.database_dir({"kind": "llvm", "mcpu": "x86-64-v3"})
    assert cache / "tvm-tuning" in plain.parents
    about = json.loads((tuning.open_database_dir("llvm") / "target.json").read_text())
    assert about["target"] == {"kind": "llvm"} and about["host"]["cores"] >= 1


def test_tuned_for_reads_the_index_the_tuner_writes(cache: Path) -> None:
    assert not tuning.tuned_for("tiny_keras") and tuning.tuning_status("tiny_keras") is None
    tuning.record_coverage("llvm", "tiny_keras", "m1",
                           {"tasks": 11, "covered": 4, "trials": 40, "seconds": 30.0})
    assert not tuning.tuned_for("tiny_keras")
    assert tuning.tuning_status("tiny_keras")["tuned"] == 4
    tuning.record_coverage("llvm", "tiny_keras", "m1",
                           {"tasks": 11, "covered": 11, "trials": 70, "seconds": 50.0})
    status = tuning.tuning_status("tiny_keras")
    assert tuning.tuned_for("tiny_keras")
    assert (status["trials"], status["seconds"], status["runs"]) == (110, 80.0, 2)
    # another target is another database
    assert not tuning.tuned_for("tiny_keras", {"kind": "llvm", "fast-math": True})
    assert not tuning.tuned_for("resnet101v2")


def test_progress_lines_are_read_whole(tmp_path: Path) -> None:
    log = tuning.ProgressLog(tmp_path / "p.jsonl")
    log("start", tasks=3, todo=2)
    with open(tmp_path / "p.jsonl", "a") as f:
        f.write('{"event": "ta')  # a line still being written
    events, offset = tuning.read_progress(tmp_path / "p.jsonl")
    assert [e["event"] for e in events] == ["start"] and events[0]["todo"] == 2
    with open(tmp_path / "p.jsonl", "a") as f:
        f.write('sk", "tuned": 1}\n')
    events, _ = tuning.read_progress(tmp_path / "p.jsonl", offset)
    assert events == [{"event": "task", "tuned": 1}]


def _append_many(directory: str, worker: int, n: int) -> None:
    db = TuningDatabase(Path(directory))
    for i in range(n):
        db.append({"key": f"{worker}-{i}", "script": "x" * 5000, "record": None})


def test_concurrent_tuners_never_corrupt_the_database(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    lines = (tmp_path / tuning.DATABASE_FILE).read_text().splitlines()
    assert len(lines) == 120 and all(json.loads(line)["script"] == "x" * 5000 for line in lines)
    assert len(TuningDatabase(tmp_path).refresh().entries) == 120


def test_a_line_cut_short_by_a_killed_tuner_costs_only_itself(tmp_path: Path) -> None:
    db = TuningDatabase(tmp_path)
    db.append({"key": "a", "record": None})
    with open(tmp_path / tuning.DATABASE_FILE, "a") as f:
        f.write('{"key": "b", "rec')  # the writer died here
    db.append({"key": "c", "record": None})
    fresh = TuningDatabase(tmp_path).refresh()
    assert "a" in fresh and "c" in fresh and "b" not in fresh


def test_tvm_build_declares_tuning_for_the_hunt() -> None:
    op = default_registry().get("tvm.build", "step")
    assert op.describe()["params"]["tuning"] == {"default": "none",
                                                 "choices": ["none", "metaschedule"]}
    assert op.changes_arithmetic("tuning", "metaschedule")
    assert not op.changes_arithmetic("tuning", "none")
    tuned = op.canonical_params({"tuning": "metaschedule"})
    # a tuned build always fuses: both relax_pipeline values are one configuration
    assert tuned["relax_pipeline"] == "target"
    assert tuned == op.canonical_params({"tuning": "metaschedule", "relax_pipeline": "default"})
    assert op.canonical_params({})["relax_pipeline"] == "default"
    assert op.unoptimized_params(tuned)["tuning"] == "none"
    assert op.unoptimized_params(tuned)["relax_pipeline"] == "default"


def test_the_orchestrator_side_imports_no_framework() -> None:
    import subprocess

    code = ("import sys, fuzzconv.tuning, fuzzconv.tuner, fuzzconv.steps.tvm_tuning; "
            "print([m for m in sys.modules if m.split('.')[0] in "
            "('tvm', 'tvm_ffi', 'onnx', 'torch', 'tensorflow')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
