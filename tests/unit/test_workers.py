"""Workers turn segfaults, aborts, kills, hangs and exceptions into outcomes and restart.

These run the ORT family's worker process but import no framework in it: the steps are plain
Python from a plugin file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzzconv.workers import WorkerFailure, WorkerPool

from ..conftest import needs

PLUGIN = str(Path(__file__).parents[1] / "assets" / "misbehaving_plugin.py")

pytestmark = needs("ort")


@pytest.fixture
def pool(tmp_path):
    with WorkerPool(tmp_path / "logs", (PLUGIN,)) as p:
        yield p


def _step(pool, name, tmp_path, timeout=30.0, **params):
    src = tmp_path / "in.onnx"
    src.write_bytes(b"not really onnx")
    return pool.request("ort", {"op": "step", "step": name, "params": params, "src": str(src),
                                "dst": str(tmp_path / "out.onnx"), "model": {}}, timeout=timeout)


@pytest.mark.parametrize("name,error_class", [("bad.segfault", "SIGSEGV"), ("bad.abort", "SIGABRT"),
                                              ("bad.oom", "SIGKILL"), ("bad.raises", "ValueError")])
def test_failure_becomes_an_outcome_and_the_worker_restarts(pool, tmp_path, name, error_class):
    first_pid = pool.request("ort", {"op": "hello"})["pid"]
    with pytest.raises(WorkerFailure) as info:
        _step(pool, name, tmp_path)
    assert info.value.symptom == "crash"
    assert info.value.error_class == error_class
    # the next request is served, by a new process when the old one died
    assert _step(pool, "good.copy", tmp_path)["seconds"] >= 0
    assert (tmp_path / "out.onnx").read_bytes() == b"not really onnx"
    new_pid = pool.request("ort", {"op": "hello"})["pid"]
    assert (new_pid == first_pid) == (error_class == "ValueError")


def test_hang_past_timeout_is_killed(pool, tmp_path):
    with pytest.raises(WorkerFailure) as info:
        _step(pool, "bad.hang", tmp_path, timeout=1.0, seconds=60.0)
    assert info.value.symptom == "timeout"
    assert _step(pool, "good.copy", tmp_path)["seconds"] >= 0


def test_stderr_tail_is_kept(pool, tmp_path):
    with pytest.raises(WorkerFailure) as info:
        _step(pool, "bad.raises", tmp_path)
    assert "converter says no" in info.value.stderr_tail
    assert "ValueError" in info.value.traceback


def test_imports_are_paid_once_per_worker(pool, tmp_path):
    for _ in range(3):
        _step(pool, "good.copy", tmp_path)
    assert pool.get("ort").starts == 1
