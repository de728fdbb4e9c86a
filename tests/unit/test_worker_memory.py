"""Workers keep their memory in check: a worker left large by a request is recycled, the pool
makes room before a conversion, garbage cycles that own many bytes but few objects are collected
while a step runs, and freed C heap goes back to the system after each request.

The steps are plain Python from a plugin file, run in the ORT family's worker; no framework is
imported anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fuzzconv.errors import UsageError
from fuzzconv.protocol import Hello, Memory, MemoryReply, StepRequest
from fuzzconv.workers import (Worker, WorkerFailure, WorkerPool, check_gc_step_env,
                              max_rss_from_env, parse_size)

from ..conftest import needs

PLUGIN = str(Path(__file__).parents[1] / "assets" / "memory_plugin.py")
MB = 1 << 20

pytestmark = [needs("ort"), pytest.mark.skipif(not Path("/proc/self/statm").exists(),
                                                reason="resident sizes are read from /proc")]


def _msg(name: str, tmp_path: Path, **params) -> StepRequest:
    src = tmp_path / "in.onnx"
    src.write_bytes(b"payload")
    return StepRequest(name, params, str(src), str(tmp_path / "out.onnx"), {})


def _step(worker: Worker, name: str, tmp_path: Path, **params):
    return worker.request(_msg(name, tmp_path, **params), timeout=60)


def _measured(tmp_path: Path, name: str, gc_mb: str | None = None, **params) -> tuple[MemoryReply, MemoryReply]:
    """The memory report of a fresh ORT worker before and after one step."""
    env = None if gc_mb is None else {"FUZZCONV_WORKER_GC_MB": gc_mb}
    w = Worker("ort", tmp_path / "logs", (PLUGIN,), env=env, max_rss=0)
    try:
        before = w.request(Memory())
        _step(w, name, tmp_path, **params)
        return before, w.request(Memory())
    finally:
        w.close()


@pytest.fixture
def worker(tmp_path):
    w = Worker("ort", tmp_path / "logs", (PLUGIN,), max_rss=0)
    yield w
    w.close()


def test_worker_above_the_limit_is_recycled_after_its_request(worker, tmp_path):
    first = worker.request(Hello()).pid
    worker.max_rss = worker.rss() + 100 * MB
    _step(worker, "mem.hold", tmp_path, mb=10)
    assert worker.alive() and worker.recycles == 0
    assert worker.request(Hello()).pid == first

    _step(worker, "mem.hold", tmp_path, mb=150)
    assert (tmp_path / "out.onnx").read_bytes() == b"payload"  # the answer still came back
    assert not worker.alive() and worker.recycles == 1
    second = worker.request(Hello()).pid
    assert second != first and worker.starts == 2
    # the fresh worker holds nothing of the old one's memory
    assert worker.rss() < worker.max_rss


def test_a_failed_request_recycles_too(worker, tmp_path):
    worker.request(Hello())
    worker.max_rss = worker.rss() + 100 * MB
    with pytest.raises(WorkerFailure) as info:
        _step(worker, "mem.hold", tmp_path, mb=150, fail=True)
    assert info.value.error_class == "MemoryError"
    assert worker.recycles == 1 and not worker.alive()


def test_no_limit_never_recycles(worker, tmp_path):
    first = worker.request(Hello()).pid
    _step(worker, "mem.hold", tmp_path, mb=150)
    assert worker.alive() and worker.recycles == 0
    assert worker.request(Hello()).pid == first


@pytest.mark.parametrize("gc_mb,collected", [("64", True), ("0", False)])
def test_byte_heavy_garbage_cycles_are_collected_during_a_step(tmp_path, gc_mb, collected):
    # the step waits for each cycle but the two newest to be freed, up to 3 s each when a
    # collector runs (it frees them within a few of its 0.25 s looks) and 0.3 s when none does
    before, after = _measured(tmp_path, "mem.cycles", gc_mb, rounds=10, mb=40,
                              patience=3.0 if collected else 0.3)
    freed = json.loads((tmp_path / "out.onnx").read_text())["freed"]
    growth = after.peak_rss - before.rss
    # 10 cycles of 40 MB: 400 MB if nothing collects them before the step ends. Collected every
    # 64 MB of growth, at most five are alive at once (see the step), and 300 MB leaves room for
    # the interpreter's own use.
    if collected:
        assert after.collections >= 2 and freed >= 5
        assert growth < 300 * MB
    else:
        assert after.collections == 0 and freed == 0
        assert growth > 370 * MB


def test_a_worker_reports_its_own_peak_not_its_parents(tmp_path):
    # Linux keeps getrusage's peak across exec from the forked copy of the parent: a worker
    # started by a large orchestrator must not report the orchestrator's size as its own
    ballast = bytearray(b"\x01") * (400 * MB)
    try:
        bare, held = _measured(tmp_path, "mem.hold", mb=100)
    finally:
        del ballast
    assert bare.peak_rss < bare.rss + 50 * MB
    assert 90 * MB < held.peak_rss - bare.rss < 150 * MB


@pytest.mark.parametrize("gc_mb,released", [("512", True), ("0", False)])
def test_freed_heap_goes_back_to_the_system_after_a_request(tmp_path, gc_mb, released):
    before, after = _measured(tmp_path, "mem.fragment", gc_mb, mb=200)
    assert after.peak_rss - before.rss > 180 * MB  # the step did hold it
    kept = after.rss - before.rss
    assert (kept < 60 * MB) if released else (kept > 150 * MB)


@needs("tf")  # its worker is started, but imports nothing of TensorFlow here
def test_pool_makes_room_before_a_conversion_largest_first(tmp_path):
    with WorkerPool(tmp_path / "logs", (PLUGIN,), max_rss=0) as pool:
        ort_pid = pool.request("ort", Hello()).pid
        tf_pid = pool.request("tf", Hello()).pid
        bare = max(pool.get("ort").rss(), pool.get("tf").rss())
        # room for 260 MB held in one worker plus what its first steps import, not for both
        pool.max_rss = pool.get("ort").max_rss = pool.get("tf").max_rss = bare + 340 * MB
        pool.request("ort", _msg("mem.hold", tmp_path, mb=100))
        # a conversion while both fit: nothing is closed
        pool.request("tf", _msg("mem.hold_tf", tmp_path, mb=100))
        assert pool.get("ort").alive() and pool.get("tf").alive()
        pool.request("ort", _msg("mem.hold", tmp_path, mb=150))
        assert pool.get("ort").recycles == 0  # each is below the limit on its own...
        # ...but not together; a request that converts nothing leaves them be
        assert pool.request("tf", Hello()).pid == tf_pid
        assert pool.get("ort").alive()
        # a conversion closes the largest (ort, 250 MB held) and keeps the one it runs in
        pool.request("tf", _msg("mem.hold_tf", tmp_path, mb=10))
        assert not pool.get("ort").alive() and pool.get("ort").recycles == 1
        assert pool.request("tf", Hello()).pid == tf_pid
        assert pool.request("ort", Hello()).pid != ort_pid
        # when the converting worker is itself the largest, it is the one that starts anew
        pool.request("tf", _msg("mem.hold_tf", tmp_path, mb=150))
        pool.request("ort", _msg("mem.hold", tmp_path, mb=60))
        assert pool.get("tf").recycles == 0
        pool.request("tf", _msg("mem.hold_tf", tmp_path, mb=10))
        assert pool.get("tf").recycles == 1 and pool.get("ort").recycles == 1
        assert pool.get("ort").alive()
        assert pool.request("tf", Hello()).pid != tf_pid


@pytest.mark.parametrize("text,size", [("3G", 3 << 30), ("512M", 512 << 20), ("2048k", 2 << 20),
                                       ("1.5G", 3 << 29), ("4096", 4096), ("0", 0), ("2GB", 2 << 30)])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("FUZZCONV_WORKER_MAX_RSS", "2G")
    assert max_rss_from_env() == 2 << 30
    monkeypatch.setenv("FUZZCONV_WORKER_MAX_RSS", "0")
    assert max_rss_from_env() == 0
    monkeypatch.setenv("FUZZCONV_WORKER_MAX_RSS", "lots")
    with pytest.raises(UsageError, match="FUZZCONV_WORKER_MAX_RSS"):
        max_rss_from_env()


def test_collection_step_from_the_environment(monkeypatch, tmp_path):
    for good in ("0", "256", " 512 ", ""):
        monkeypatch.setenv("FUZZCONV_WORKER_GC_MB", good)
        check_gc_step_env()
    for bad in ("-1", "1.5", "lots"):
        monkeypatch.setenv("FUZZCONV_WORKER_GC_MB", bad)
        with pytest.raises(UsageError, match="FUZZCONV_WORKER_GC_MB"):
            WorkerPool(tmp_path / "logs")
