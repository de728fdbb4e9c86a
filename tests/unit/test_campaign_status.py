"""A campaign's status comes from facts: its process (pid, host, start) and its heartbeat.

Stores written before campaigns recorded their process keep working: reading one changes nothing,
and the first write adds the columns.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from fuzzconv.liveness import process_start, status_text
from fuzzconv.store import SCHEMA, Store

#: The campaigns table as the first stores have it (no pid, host, proc_start, last_seen).
OLD_CAMPAIGNS = """CREATE TABLE campaigns (id TEXT PRIMARY KEY, model TEXT NOT NULL,
    seed INTEGER NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, finished REAL);"""


def set_facts(store: Path, cid: str, **facts: object) -> None:
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    with db:
        for k, v in facts.items():
            db.execute(f"UPDATE campaigns SET {k} = ? WHERE id = ?", (v, cid))
    db.close()


def dump(store: Path) -> str:
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    text = "\n".join(db.iterdump())
    db.close()
    return text


def test_a_running_campaign_of_a_live_process_is_running(tmp_path: Path) -> None:
    with Store(tmp_path) as db:
        cid = db.new_campaign("tiny_keras", 0, {}, {})
        camp = db.campaign(cid)
    assert camp["status"] == "running" and camp["last_seen"] == camp["started"]
    assert "pid" in status_text(camp)


def test_a_dead_pid_or_a_reused_one_is_interrupted(tmp_path: Path) -> None:
    with Store(tmp_path) as db:
        cid = db.new_campaign("tiny_keras", 0, {}, {})
    # this process is alive, but it is not the one that started the campaign
    set_facts(tmp_path, cid, proc_start="another-boot/12345")
    with Store(tmp_path) as db:
        assert db.campaign(cid)["status"] == "interrupted"
    gone = subprocess.Popen(["true"])
    gone.wait()
    set_facts(tmp_path, cid, pid=gone.pid, proc_start=None)
    with Store(tmp_path) as db:
        camp = db.campaign(cid)
    assert camp["status"] == "interrupted" and camp["recorded_status"] == "running"
    assert status_text(camp).startswith("interrupted, last seen ")


def test_a_killed_process_not_yet_reaped_is_interrupted(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        with Store(tmp_path) as db:
            cid = db.new_campaign("tiny_keras", 0, {}, {})
        set_facts(tmp_path, cid, pid=child.pid, proc_start=process_start(child.pid))
        with Store(tmp_path) as db:
            assert db.campaign(cid)["status"] == "running"
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a zombie until it is reaped below
            with Store(tmp_path) as db:
                if db.campaign(cid)["status"] == "interrupted":
                    break
            time.sleep(0.05)
        with Store(tmp_path) as db:
            assert db.campaign(cid)["status"] == "interrupted"
    finally:
        child.kill()
        child.wait()


def test_another_hosts_campaign_shows_as_recorded_with_its_host(tmp_path: Path) -> None:
    with Store(tmp_path) as db:
        cid = db.new_campaign("tiny_keras", 0, {}, {})
    set_facts(tmp_path, cid, host="gpu-node-7", pid=2**22 + 1)
    with Store(tmp_path) as db:
        camp = db.campaign(cid)
    assert camp["status"] == "running"
    assert "gpu-node-7" in status_text(camp)


def test_recorded_stops_are_shown_as_recorded(tmp_path: Path) -> None:
    with Store(tmp_path) as db:
        done = db.new_campaign("tiny_keras", 0, {}, {})
        stopped = db.new_campaign("tiny_keras", 1, {}, {})
        db.set_campaign_status(done, "done")
        db.set_campaign_status(stopped, "interrupted")
        assert [c["status"] for c in db.campaigns()] == ["done", "interrupted"]
        assert [c["id"] for c in db.campaigns(unfinished=True)] == [stopped]


def test_each_evaluation_is_a_heartbeat_and_a_resume_records_its_process(tmp_path: Path) -> None:
    with Store(tmp_path) as db:
        cid = db.new_campaign("tiny_keras", 0, {}, {})
        db.set_campaign_status(cid, "interrupted")
    set_facts(tmp_path, cid, last_seen=0.0, pid=None, host=None, proc_start=None)
    with Store(tmp_path) as db:
        db.set_campaign_status(cid, "running")  # as a resume does
        camp = db.campaign(cid)
        assert camp["status"] == "running" and camp["pid"] and camp["finished"] is None
        db.add_evaluation(cid, "coverage", {"model": "tiny_keras"}, "h1", None, {}, {}, 1, 0)
        created = next(db.evaluations(cid))["created"]
        assert db.campaign(cid)["last_seen"] == created > 0.0


def test_an_old_store_reads_unchanged_and_gains_the_columns_on_the_first_write(
        tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "fuzzconv.sqlite")
    raw.executescript(OLD_CAMPAIGNS + SCHEMA)
    raw.execute("INSERT INTO campaigns VALUES ('C-old', 'tiny_keras', 0, '{}', '{}', 'running',"
                " 100.0, NULL)")
    raw.execute("INSERT INTO evaluations (campaign, seq, phase, pipeline_hash, pipeline, outcome,"
                " timings, fresh, cached, created) VALUES ('C-old', 0, 'coverage', 'h', '{}',"
                " '{}', '{}', 1, 0, 160.0)")
    raw.commit()
    raw.close()
    before = dump(tmp_path)
    with Store(tmp_path) as db:
        (old,) = db.campaigns()
        db.campaign("C-old")
        db.buckets()
    assert dump(tmp_path) == before
    # no process to check: shown as recorded, last seen at its last evaluation
    assert old["status"] == "running" and old["last_seen"] == 160.0 and old["pid"] is None
    with Store(tmp_path) as db:
        cid = db.new_campaign("tiny_keras", 1, {}, {})
        assert db.campaign(cid)["status"] == "running"
        db.set_campaign_status("C-old", "running")  # a resume of the old campaign
        assert db.campaign("C-old")["pid"] is not None


def test_an_unknown_campaign_names_the_listing(tmp_path: Path) -> None:
    from fuzzconv.errors import UsageError

    with Store(tmp_path) as db, pytest.raises(UsageError, match="fuzzconv campaigns lists them"):
        db.campaign("C-nope")
