"""Workers keep their memory in check: a worker left large by a request is recycled, and garbage
cycles that own many bytes but few objects are collected while a step runs.

The steps are plain Python from a plugin file, run in the ORT family's worker; no framework is
imported anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzzconv.errors import UsageError
from fuzzconv.workers import Worker, WorkerFailure, max_rss_from_env, parse_size

from ..conftest import needs

PLUGIN = str(Path(__file__).parents[1] / "assets" / "memory_plugin.py")
MB = 1 << 20

pytestmark = [needs("ort"), pytest.mark.skipif(not Path("/proc/self/statm").exists(),
                                                reason="resident sizes are read from /proc")]


def _step(worker: Worker, name: str, tmp_path: Path, **params):
    src = tmp_path / "in.onnx"
    src.write_bytes(b"payload")
    return worker.request({"op": "step", "step": name, "params": params, "src": str(src),
                           "dst": str(tmp_path / "out.onnx"), "model": {}}, timeout=60)


@pytest.fixture
def worker(tmp_path):
    w = Worker("ort", tmp_path / "logs", (PLUGIN,), max_rss=0)
    yield w
    w.close()


def test_worker_above_the_limit_is_recycled_after_its_request(worker, tmp_path):
    first = worker.request({"op": "hello"})["pid"]
    worker.max_rss = worker.rss() + 100 * MB
    _step(worker, "mem.hold", tmp_path, mb=10)
    assert worker.alive() and worker.recycles == 0
    assert worker.request({"op": "hello"})["pid"] == first

    _step(worker, "mem.hold", tmp_path, mb=150)
    assert (tmp_path / "out.onnx").read_bytes() == b"payload"  # the answer still came back
    assert not worker.alive() and worker.recycles == 1
    second = worker.request({"op": "hello"})["pid"]
    assert second != first and worker.starts == 2
    # the fresh worker holds nothing of the old one's memory
    assert worker.rss() < worker.max_rss


def test_a_failed_request_recycles_too(worker, tmp_path):
    worker.request({"op": "hello"})
    worker.max_rss = worker.rss() + 100 * MB
    with pytest.raises(WorkerFailure) as info:
        _step(worker, "mem.hold", tmp_path, mb=150, fail=True)
    assert info.value.error_class == "MemoryError"
    assert worker.recycles == 1 and not worker.alive()


def test_no_limit_never_recycles(worker, tmp_path):
    first = worker.request({"op": "hello"})["pid"]
    _step(worker, "mem.hold", tmp_path, mb=150)
    assert worker.alive() and worker.recycles == 0
    assert worker.request({"op": "hello"})["pid"] == first


@pytest.mark.parametrize("gc_mb,collected", [("64", True), ("0", False)])
def test_byte_heavy_garbage_cycles_are_collected_during_a_step(tmp_path, gc_mb, collected):
    w = Worker("ort", tmp_path / "logs", (PLUGIN,), env={"FUZZCONV_WORKER_GC_MB": gc_mb}, max_rss=0)
    try:
        before = w.request({"op": "memory"})
        _step(w, "mem.cycles", tmp_path, rounds=8, mb=48)
        after = w.request({"op": "memory"})
    finally:
        w.close()
    growth = after["peak_rss"] - before["rss"]
    # 8 cycles of 48 MB: 384 MB if nothing collects them before the step ends
    if collected:
        assert after["collections"] >= 2
        assert growth < 220 * MB
    else:
        assert after["collections"] == 0
        assert growth > 350 * MB


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
