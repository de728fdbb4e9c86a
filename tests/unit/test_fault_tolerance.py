"""A hunt killed with SIGKILL resumes without losing or repeating work; two hunts share a store."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from fuzzconv.store import Store

SCRIPT = str(Path(__file__).resolve().parents[1] / "assets" / "fake_hunt.py")


def _stored(store: Path) -> tuple[str, set[str]]:
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    cid = db.execute("SELECT id FROM campaigns").fetchone()[0]
    hashes = {r[0] for r in db.execute("SELECT pipeline_hash FROM evaluations")}
    db.close()
    return cid, hashes


def _findings(store: Path) -> int:
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    n = db.execute("SELECT COUNT(*) FROM findings").fetchone()[0]
    db.close()
    return n


def _start_and_wait(store: Path, max_evals: str) -> subprocess.Popen:
    """A fake hunt that has committed some evaluations and its finding (a kill in the middle of
    shrinking would leave the finding to be shrunk again on resume, which a real store's cache
    serves but the fake executor counts as new work)."""
    proc = subprocess.Popen([sys.executable, SCRIPT, str(store), "5", max_evals],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if (store / "fuzzconv.sqlite").exists():
            try:
                if len(_stored(store)[1]) >= 8 and _findings(store):
                    break
            except (sqlite3.OperationalError, TypeError):
                pass
    return proc


def test_sigterm_stops_a_hunt_like_ctrl_c(tmp_path):
    proc = _start_and_wait(tmp_path, "1000")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0  # a graceful stop, not death by signal
    cid, evals, stopped, *_ = out.split()
    assert stopped == "interrupted" and 8 <= int(evals) < 1000
    with Store(tmp_path) as db:
        assert db.integrity_ok()
        assert db.campaign(cid)["status"] == "interrupted"
        assert db.evaluation_count(cid) == int(evals)


def test_kill_9_then_resume(tmp_path):
    proc = _start_and_wait(tmp_path, "60")
    # then kill without warning
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cid, before = _stored(tmp_path)
    assert 8 <= len(before) < 60
    with Store(tmp_path) as db:
        assert db.integrity_ok()
        findings_before = {f["id"] for f in db.findings()}
    r = subprocess.run([sys.executable, SCRIPT, str(tmp_path), "5", "60", cid],
                       capture_output=True, text=True, check=True)
    campaign, evals, stopped, *calls = r.stdout.split()
    assert campaign == cid and int(evals) == 60 and stopped == "max_evals"
    assert not set(calls) & before  # nothing finished before the kill is evaluated again
    cid2, after = _stored(tmp_path)
    assert before <= after and len(after) == 60
    with Store(tmp_path) as db:
        assert db.integrity_ok()
        assert findings_before <= {f["id"] for f in db.findings()}
        assert db.campaign(cid)["status"] == "done"


def test_two_hunts_on_one_store_at_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, SCRIPT, str(tmp_path), str(seed), "40"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    with Store(tmp_path) as db:
        assert db.integrity_ok()
        camps = db.campaigns()
        assert len(camps) == 2
        assert all(db.evaluation_count(c["id"]) == 40 for c in camps)
