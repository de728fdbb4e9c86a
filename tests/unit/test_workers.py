"""Workers turn segfaults, aborts, kills, hangs and exceptions into outcomes and restart.

These run the ORT family's worker process, with plain Python steps from a plugin file; only a
worker warmed for a timed request imports a framework (ONNX Runtime).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fuzzconv.protocol import Hello, StepRequest
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
    return pool.request("ort", StepRequest(name, params, str(src), str(tmp_path / "out.onnx"), {}),
                        timeout=timeout)


@pytest.mark.parametrize("name,error_class", [("bad.segfault", "SIGSEGV"), ("bad.abort", "SIGABRT"),
                                              ("bad.oom", "SIGKILL"), ("bad.raises", "ValueError")])
def test_failure_becomes_an_outcome_and_the_worker_restarts(pool, tmp_path, name, error_class):
    first_pid = pool.request("ort", Hello()).pid
    with pytest.raises(WorkerFailure) as info:
        _step(pool, name, tmp_path)
    assert info.value.symptom == "crash"
    assert info.value.error_class == error_class
    # the next request is served, by a new process when the old one died
    assert _step(pool, "good.copy", tmp_path).seconds >= 0
    assert (tmp_path / "out.onnx").read_bytes() == b"not really onnx"
    new_pid = pool.request("ort", Hello()).pid
    assert (new_pid == first_pid) == (error_class == "ValueError")


def test_hang_past_timeout_is_killed(pool, tmp_path):
    with pytest.raises(WorkerFailure) as info:
        _step(pool, "bad.hang", tmp_path, timeout=1.0, seconds=60.0)
    assert info.value.symptom == "timeout"
    assert _step(pool, "good.copy", tmp_path).seconds >= 0


def test_stderr_tail_is_kept(pool, tmp_path):
    with pytest.raises(WorkerFailure) as info:
        _step(pool, "bad.raises", tmp_path)
    assert "converter says no" in info.value.stderr_tail
    assert "ValueError" in info.value.traceback


def test_imports_are_paid_once_per_worker(pool, tmp_path):
    for _ in range(3):
        _step(pool, "good.copy", tmp_path)
    assert pool.get("ort").starts == 1


def test_a_worker_started_for_a_timed_request_is_warmed_first(pool, tmp_path):
    # the executor's way: start_timeout starts the worker and imports its frameworks, untimed
    assert _step(pool, "good.copy", tmp_path).seconds >= 0  # started cold, not warmed
    worker = pool.get("ort")
    assert not worker.warm
    pool.request("ort", Hello(), timeout=30, start_timeout=60)
    assert worker.warm and worker.starts == 1 and worker.requests == 2  # the warm-up is no request
    with pytest.raises(WorkerFailure):
        _step(pool, "bad.segfault", tmp_path)
    assert not worker.warm
    pool.request("ort", Hello(), timeout=30, start_timeout=60)
    assert worker.warm and worker.starts == 2


def test_a_deadline_bounds_the_request(pool, tmp_path):
    src = tmp_path / "in.onnx"
    src.write_bytes(b"x")
    hang = StepRequest("bad.hang", {"seconds": 60.0}, str(src), str(tmp_path / "out.onnx"), {})
    with pytest.raises(WorkerFailure) as info:
        pool.request("ort", hang, timeout=60, start_timeout=60, deadline=time.monotonic() + 1.0)
    assert info.value.symptom == "timeout"
    assert float(info.value.message.split("longer than ")[1].split()[0]) <= 1.0
    # past the deadline nothing is sent, and no worker is started for it
    starts = pool.get("ort").starts
    with pytest.raises(WorkerFailure) as info:
        pool.request("ort", Hello(), start_timeout=60, deadline=time.monotonic() - 1)
    assert info.value.symptom == "timeout" and "no time was left" in info.value.message
    assert pool.get("ort").starts == starts and not pool.get("ort").alive()
