"""Starting and stopping workers: a background warm-up overlaps the imports with the caller's
work without mixing up answers, and closing does not wait on a worker nobody needs any more.

The ORT family's worker runs here, on plain-Python plugin steps; no framework is imported.
"""

from __future__ import annotations

import signal
from pathlib import Path

from fuzzconv.protocol import Hello, StepRequest
from fuzzconv.workers import WorkerPool

from ..conftest import needs

PLUGIN = str(Path(__file__).parents[1] / "assets" / "misbehaving_plugin.py")

pytestmark = needs("ort")


def test_background_warm_up_is_answered_before_the_next_request(tmp_path):
    with WorkerPool(tmp_path / "logs", (PLUGIN,), max_rss=0) as pool:
        pool.warm_in_background(["ort"])
        w = pool.get("ort")
        pid = w.proc.pid
        assert w.alive() and not w.warm
        # the hello's answer, not the warm-up's (which comes first on the pipe)
        hello = pool.request("ort", Hello())
        assert hello.pid == pid and hello.family == "ort"
        assert w.warm and w.starts == 1 and w.requests == 1
        pool.warm_in_background(["ort"])  # already warm: nothing is sent
        assert pool.request("ort", Hello()).pid == pid
        assert w.requests == 2


def test_background_warm_up_then_an_explicit_one(tmp_path):
    with WorkerPool(tmp_path / "logs", (PLUGIN,), max_rss=0) as pool:
        pool.warm_in_background(["ort"])
        src = tmp_path / "in.onnx"
        src.write_bytes(b"x")
        msg = StepRequest("good.copy", {}, str(src), str(tmp_path / "out.onnx"), {})
        assert pool.request("ort", msg, timeout=30, start_timeout=60).seconds >= 0
        assert (tmp_path / "out.onnx").read_bytes() == b"x"
        assert pool.get("ort").starts == 1


def test_closing_a_worker_still_warming_kills_it(tmp_path):
    pool = WorkerPool(tmp_path / "logs", (PLUGIN,), max_rss=0)
    pool.warm_in_background(["ort"])
    proc = pool.get("ort").proc
    pool.close()
    assert proc.returncode == -signal.SIGKILL
    assert not pool.get("ort").alive()


def test_a_warm_worker_exits_when_asked(tmp_path):
    pool = WorkerPool(tmp_path / "logs", (PLUGIN,), max_rss=0)
    pool.request("ort", Hello())
    proc = pool.get("ort").proc
    pool.close()
    assert proc.returncode == 0
