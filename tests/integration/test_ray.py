"""Hunting on a Ray cluster finds what a local hunt finds; a hunt without Ray never imports it.

The cluster is private to this module: ``ray start --head --block`` on the loopback interface
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray otherwise binds to the machine's network address
even when told 127.0.0.1), with free ports, its own temp dir and its own auth token. It is stopped
by signalling the process that started it — never ``ray stop``, which stops every Ray cluster on
the machine. Every process of the cluster, of the hunts and of their framework workers carries a
marker in its environment, which is how the teardown checks that none is left behind.

The hunts run in subprocesses: the pytest process imports neither Ray nor any framework.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from rich.console import Console

from fuzzconv.cache import Cache
from fuzzconv.errors import UsageError

from ..conftest import needs

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets"
MARKER = "FUZZCONV_RAY_TEST"
HAVE_RAY = importlib.util.find_spec("ray") is not None

# One hunt, as `fuzzconv hunt` runs it; prints what the test compares.
DRIVER = r"""
import json, sys
from pathlib import Path
from rich.console import Console
from fuzzconv.launch import run_hunt

a = json.loads(sys.argv[1])
r = run_hunt(model="tiny_keras", budget="20m", max_evals=6, seed=0, images=None, limit=8,
             device="cpu", plugins=[Path(a["plugin"])], focus="fault.perturb",
             store=Path(a["store"]), resume=None, weights="calibrated", timeout=None,
             max_chain=1, thresholds={}, console=Console(stderr=True), show_progress=False,
             ray=a["ray"], ray_workers=a["workers"], cache=a["cache"] and Path(a["cache"]))
print(json.dumps({"evaluations": r.evaluations,
                  "findings": [{"signature": f["signature"], "culprit": f["culprit"]}
                               for f in r.findings],
                  "ray_imported": "ray" in sys.modules}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hunt(env: dict[str, str], store: Path, ray: str | None = None, workers: int | None = None,
          cache: Path | None = None) -> dict[str, Any]:
    args = {"plugin": str(ASSETS / "fault_plugin.py"), "store": str(store), "ray": ray,
            "workers": workers, "cache": cache and str(cache)}
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker``: the ones this module started."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if f"{MARKER}={marker}".encode() in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


class _Cluster:
    """A private single-node Ray cluster on the loopback interface; start() does not wait."""

    def __init__(self, env: dict[str, str], temp: Path):
        self.env = env
        self.temp = temp
        self.address = f"127.0.0.1:{_free_port()}"
        self.log = temp / "ray-start.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        ports = {"--port": self.address.rsplit(":", 1)[1],
                 "--ray-client-server-port": _free_port(), "--dashboard-port": _free_port(),
                 "--dashboard-agent-listen-port": _free_port()}
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
               "--disable-usage-stats", f"--temp-dir={self.temp / 'r'}",
               *(f"{k}={v}" for k, v in ports.items())]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> None:
        assert self.proc is not None
        end = time.monotonic() + timeout
        while b"Ray runtime started" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < end, "ray start took too long:\n" + self.log.read_text()[-3000:]
            time.sleep(1)

    def stop(self) -> None:
        """SIGTERM to `ray start --block`, which stops what it started; SIGKILL its process
        group if it does not finish within a minute (it drains the node for up to 30 s)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def hunts() -> Iterator[dict[str, Any]]:
    """The same hunt run locally and on a two-worker Ray cluster (when Ray is installed).

    The cluster boots while the local hunt runs. The Ray hunt uses ``--cache`` (as it would on
    several machines), so its actors evaluate everything afresh, sharing nothing with the local
    hunt; its driver builds the calibrated source model into that cache too.
    """
    marker = secrets.token_hex(8)
    # A short path: Ray's unix sockets live under the temp dir and their paths are limited.
    temp = Path(tempfile.mkdtemp(prefix="fzray-"))
    env = {**os.environ, MARKER: marker, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    cluster = _Cluster(env, temp) if HAVE_RAY else None
    try:
        if cluster is not None:
            cluster.start()
        results: dict[str, Any] = {"local": _hunt(env, temp / "local"), "temp": temp}
        if cluster is not None:
            cluster.wait_ready()
            results["ray"] = _hunt(env, temp / "ray", ray=cluster.address, workers=2,
                                   cache=temp / "shared")
        yield results
    finally:
        if cluster is not None:
            cluster.stop()
    end = time.monotonic() + 30
    while _marked(marker) and time.monotonic() < end:
        time.sleep(1)
    left = _marked(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"processes left behind by the Ray test: {left}"


@needs("tf", "ort")
def test_a_hunt_without_ray_imports_no_ray(hunts):
    assert hunts["local"]["evaluations"] == 6
    assert hunts["local"]["ray_imported"] is False


@needs("tf", "ort")
@pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: pip install 'fuzzconv[ray]'")
def test_a_ray_hunt_finds_what_the_local_hunt_finds(hunts):
    local, ray = hunts["local"], hunts["ray"]
    assert ray["ray_imported"] is True
    assert ray["evaluations"] == local["evaluations"] == 6

    def key(f: dict[str, Any]) -> str:
        return json.dumps(f, sort_keys=True)

    assert sorted(map(key, ray["findings"])) == sorted(map(key, local["findings"]))
    culprits = [f["culprit"] for f in ray["findings"]]
    assert {"step": "fault.perturb", "params": {"strength": 0.5}} in culprits
    # Both actors worked in the shared directory: each ran pipelines on its own ONNX Runtime
    # worker (their logs lie there), and what they built is in its cache, beside the source model.
    shared = hunts["temp"] / "shared"
    actor_logs = sorted(shared.glob("logs/ray-*/worker-ort.log"))
    assert len(actor_logs) == 2, actor_logs
    assert list(shared.glob("models/artifacts/*/*/meta.json"))
    assert len(list(shared.glob("cache/outputs/*/*/logits.npy"))) >= 6
    assert not list((hunts["temp"] / "ray" / "cache").glob("*/*/*/meta.json"))


def test_an_address_nothing_answers_at_fails_fast_with_one_line(tmp_path):
    from fuzzconv.distributed import ClusterError
    from fuzzconv.launch import run_hunt

    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at {address}"):
        run_hunt(model="tiny_keras", budget="1m", max_evals=1, seed=0, images=None, limit=2,
                 device="cpu", plugins=[], focus=None, store=tmp_path, resume=None,
                 weights="calibrated", timeout=None, max_chain=1, thresholds={},
                 console=Console(stderr=True), show_progress=False, ray=address)


def test_ray_workers_without_ray_is_a_usage_error(tmp_path):
    from fuzzconv.launch import run_hunt

    with pytest.raises(UsageError, match="--ray-workers needs --ray"):
        run_hunt(model="tiny_keras", budget="1m", max_evals=1, seed=0, images=None, limit=2,
                 device="cpu", plugins=[], focus=None, store=tmp_path, resume=None,
                 weights="calibrated", timeout=None, max_chain=1, thresholds={},
                 console=Console(stderr=True), show_progress=False, ray_workers=2)


def test_concurrent_commits_of_one_key_keep_the_first_entry(tmp_path):
    first, second = Cache(tmp_path), Cache(tmp_path)
    a, b = first.begin("outputs", "k"), second.begin("outputs", "k")
    (a / "logits.npy").write_text("first")
    (b / "logits.npy").write_text("second")
    entry = first.commit("outputs", "k", a, {})
    with open(entry / "logits.npy") as reader:
        assert second.commit("outputs", "k", b, {}) == entry
        assert reader.read() == "first"
    assert (entry / "logits.npy").read_text() == "first"
    assert not b.exists()


def test_a_rebuild_of_an_existing_entry_replaces_it(tmp_path):
    cache = Cache(tmp_path)
    tmp = cache.begin("artifacts", "k")
    (tmp / "model.onnx").write_text("old")
    entry = cache.commit("artifacts", "k", tmp, {})
    # A cold re-run skips the lookup and builds the entry again: the new build replaces it.
    tmp = cache.begin("artifacts", "k")
    (tmp / "model.onnx").write_text("new")
    assert cache.commit("artifacts", "k", tmp, {}) == entry
    assert (entry / "model.onnx").read_text() == "new"
    assert not any((tmp_path / "artifacts" / ".tmp").iterdir())
