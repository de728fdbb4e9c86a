"""A hunt killed with SIGKILL is listed as ``interrupted``, with when it was last seen, in
``campaigns``, ``reports`` and the HTML report, and ``hunt --resume`` still continues it.

The hunt is a real process (``tests/assets/fake_hunt.py``: the engine on fake steps), so its
campaign records a real pid that really dies.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fuzzconv.cli import app
from fuzzconv.report.html import write_html

runner = CliRunner()
SCRIPT = str(Path(__file__).resolve().parents[1] / "assets" / "fake_hunt.py")
WIDE = {"COLUMNS": "250"}


def listed(store: Path) -> list[dict[str, Any]]:
    r = runner.invoke(app, ["campaigns", "--json", "--store", str(store)], env=WIDE)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def last_evaluation(store: Path) -> float:
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    t = db.execute("SELECT MAX(created) FROM evaluations").fetchone()[0]
    db.close()
    return t


def start_hunt(store: Path) -> subprocess.Popen:
    """A fake hunt of 1000 evaluations (about a minute) that has committed some of them."""
    proc = subprocess.Popen([sys.executable, SCRIPT, str(store), "5", "1000"],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            if (store / "fuzzconv.sqlite").exists() and listed(store)[0]["evaluations"] >= 8:
                return proc
        except (IndexError, KeyError, json.JSONDecodeError):
            pass
    proc.kill()
    raise AssertionError("the fake hunt committed no evaluations")


def test_a_killed_hunt_is_interrupted_everywhere_and_resumes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = start_hunt(store)
    try:
        (camp,) = listed(store)
        assert camp["status"] == "running"
        assert camp["pid"] == proc.pid and camp["host"] == socket.gethostname()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (camp,) = listed(store)
    cid = camp["id"]
    assert camp["status"] == "interrupted" and camp["recorded_status"] == "running"
    # last seen: its last evaluation (the heartbeat), not its start
    assert camp["last_seen"] == last_evaluation(store) > camp["started"]
    assert camp["evaluations"] >= 8

    table = runner.invoke(app, ["campaigns", "--store", str(store)], env=WIDE).stdout
    row = next(line for line in table.splitlines() if cid in line)
    assert "interrupted" in row and time.strftime("%Y-%m-%d", time.localtime(camp["last_seen"])) in row

    rep = runner.invoke(app, ["reports", "--store", str(store)], env=WIDE)
    assert rep.exit_code == 0, rep.output
    assert f"campaign {cid} (tiny_keras): interrupted, last seen" in rep.stdout
    assert f"fuzzconv hunt --resume {cid}" in rep.stdout

    page = write_html(store, tmp_path / "report.html", top5=False).read_text()
    assert "<td>status</td><td>interrupted, last seen" in page

    n = camp["evaluations"] + 10
    r = subprocess.run([sys.executable, SCRIPT, str(store), "5", str(n), cid],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split()[:3] == [cid, str(n), "max_evals"]
    (camp,) = listed(store)
    assert camp["status"] == camp["recorded_status"] == "done"
    assert "fuzzconv hunt --resume" not in runner.invoke(
        app, ["reports", "--store", str(store)], env=WIDE).stdout


def test_campaigns_without_a_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["campaigns", "--store", str(tmp_path / "none")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "no fuzzconv store" in r.stderr
    assert not (tmp_path / "none").exists()
