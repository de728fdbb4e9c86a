"""Triage listings: `reports` pages, filters and groups findings by bucket; `show` takes prefixes;
two hunts that find the same bug give one bucket. No framework runs: stores are written through
the store API, and hunts run on the fake executor."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fuzzconv.cli import app
from fuzzconv.campaign import HuntConfig, bucket_of
from fuzzconv.engine import Hunt
from fuzzconv.store import Store

from ..contracts import contract_errors
from ..unit.fakes import FakeCorpus, FakeExecutor, has

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # one table row a line

MODELS = ["mobilenetv2", "densenet121", "tiny_keras"]
CULPRITS = [{"step": "keras.tflite", "params": {"optimizations": ["DEFAULT"]}},
            {"step": "tvm.build", "params": {"opt_level": 3}},
            {"step": "tvm.build", "params": {"opt_level": 4}},
            {"step": "ort", "params": {"graph_optimization_level": "all"}},
            {"step": "tvm.pass", "params": {"name": "FoldConstant"}},
            {"step": "keras.tf2onnx", "params": {"opset": 13}}]
STATUS_ORDER = ("confirmed", "new", "flaky", "fixed")  # a bucket takes its most alive status


def invoke(*args: Any, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env or WIDE)


def make_finding(rng: random.Random, i: int) -> dict[str, Any]:
    symptom = rng.choice(["label_flip", "label_flip", "numeric", "crash"])
    culprit = rng.choice(CULPRITS) if rng.random() < 0.8 else None
    model = rng.choice(MODELS)
    steps = [{"step": "keras.tf2onnx", "params": {"opset": 13}}]
    pipeline = {"model": model, "steps": steps, "runtime": {"name": "ort", "params": {}}}
    return {
        "id": f"F-{i:04d}{rng.getrandbits(16):04x}", "model": model, "symptom": symptom,
        "signature": f"{symptom}:{culprit['step'] if culprit else 'unattributed'}"
                     + ("" if culprit else f":{rng.randrange(60)}"),
        "flip_rate": round(rng.random(), 3) if symptom == "label_flip" else None,
        "images": 24, "pipeline": pipeline, "minimal_pipeline": pipeline, "culprit": culprit,
        "failing_inputs": [], "first_divergent_node": None, "fix_hint": None,
        "evaluations": {"hunt": 1, "shrink": 0, "cache_hits": 0}, "flaky": False,
        "versions": {"fuzzconv": "0"}, "bundle": None,
    }


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A store of 300 findings over 3 models, 3 symptoms, 4 statuses and 4 campaigns."""
    d = tmp_path_factory.mktemp("reports") / "store"
    rng = random.Random(7)
    stored = []
    with Store(d) as db:
        cids = [db.new_campaign(m, 0, {"model": m}, {"fuzzconv": "0"}) for m in MODELS + ["x"]]
        for i in range(300):
            f = make_finding(rng, i)
            f["campaign"] = cids[i % len(cids)]
            f["bucket"] = bucket_of(f)
            db.upsert_finding(f, f["campaign"], f["bucket"])
            f["status"] = rng.choice(STATUS_ORDER)
            if f["status"] != "new":
                db.set_finding_status(f["id"], f["status"])
            stored.append(f)
    return d, stored


def expected_buckets(found: list[dict[str, Any]], status: str | None = None) -> dict[str, dict]:
    """What `reports` should list, worked out from the findings as written."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in found:
        groups[f["bucket"]].append(f)
    out = {}
    for b, fs in groups.items():
        st = next(s for s in STATUS_ORDER if any(f["status"] == s for f in fs))
        if status is None or st == status:
            flips = [f["flip_rate"] for f in fs if f["flip_rate"] is not None]
            out[b] = {"count": len(fs), "status": st, "worst": max(flips) if flips else None,
                      "ids": {f["id"] for f in fs}}
    return out


def runs(items: list[dict[str, Any]]) -> list[str]:
    """The buckets in the order the listing gives them; each must be one contiguous run."""
    order: list[str] = []
    for f in items:
        if not order or order[-1] != f["bucket"]:
            assert f["bucket"] not in order, f"bucket {f['bucket']} is split"
            order.append(f["bucket"])
    return order


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^│ F-", line)]


def test_json_lists_every_finding_bucket_by_bucket_worst_first(big):
    store, found = big
    r = invoke("reports", "--json", "--store", store)
    assert r.exit_code == 0, r.output
    items = json.loads(r.stdout)
    assert sorted(f["id"] for f in items) == sorted(f["id"] for f in found)
    want = expected_buckets(found)
    order = runs(items)
    assert set(order) == set(want)
    for f in items:
        b = want[f["bucket"]]
        assert f["bucket_count"] == b["count"] and f["bucket_status"] == b["status"]
        assert f["status"] == next(g["status"] for g in found if g["id"] == f["id"])
    worst = [want[b]["worst"] or 0 for b in order]
    assert worst == sorted(worst, reverse=True)
    for a, b in zip(order, order[1:]):  # equal worst flip rate: more findings first
        if (want[a]["worst"] or 0) == (want[b]["worst"] or 0):
            assert want[a]["count"] >= want[b]["count"]
    assert contract_errors("finding", items[0]) == []
    assert contract_errors("finding", items[-1]) == []


def test_table_pages_fifty_buckets_and_says_how_to_see_more(big):
    store, found = big
    n = len(expected_buckets(found))
    assert n > 50  # the fixture has more than one page
    order = runs(json.loads(invoke("reports", "--json", "--store", store).stdout))
    r = invoke("reports", "--store", store)
    assert r.exit_code == 0, r.output
    assert f"300 findings in {n} buckets (buckets 1–50 of {n})" in r.stdout
    rows = table_rows(r.stdout)
    assert len(rows) == 50
    assert f"… {n - 50} more buckets: --offset 50 for the next page" in r.stdout
    # the second page starts where the first ended, in the JSON's order
    r2 = invoke("reports", "--limit", "5", "--offset", "50", "--store", store)
    rows2 = table_rows(r2.stdout)
    assert len(rows2) == 5
    by_bucket = {f["id"]: f["bucket"] for f in found}
    assert [by_bucket[re.search(r"F-\w+", row).group(0)] for row in rows2] == order[50:55]
    assert f"… {n - 55} more buckets: --offset 55" in r2.stdout
    # --limit 0: everything, and no "more" line
    r3 = invoke("reports", "--limit", "0", "--store", store)
    assert len(table_rows(r3.stdout)) == n and "more buckets" not in r3.stdout
    r4 = invoke("reports", "--offset", n + 3, "--store", store)
    assert r4.exit_code == 0 and f"300 findings in {n} buckets; none past --offset {n + 3}" in r4.stdout


def test_json_pages_like_the_table(big):
    store, _ = big
    full = json.loads(invoke("reports", "--json", "--store", store).stdout)
    order = runs(full)
    r = invoke("reports", "--json", "--limit", "3", "--offset", "2", "--store", store)
    assert r.exit_code == 0, r.output
    page = json.loads(r.stdout)
    assert runs(page) == order[2:5]
    assert page == [f for f in full if f["bucket"] in order[2:5]]
    assert f"{len(order) - 5} more buckets: --offset 5" in r.stderr


def test_filters_select_findings_by_model_and_symptom_and_buckets_by_status(big):
    store, found = big
    model, symptom = "densenet121", "label_flip"
    chosen = [f for f in found if f["model"] == model and f["symptom"] == symptom]
    for status in ("confirmed", "new", "fixed"):
        want = expected_buckets(chosen, status)
        assert want, status  # each filter selects something in the fixture
        r = invoke("reports", "--json", "--model", model, "--symptom", symptom,
                   "--status", status, "--store", store)
        assert r.exit_code == 0, r.output
        items = json.loads(r.stdout)
        assert set(runs(items)) == set(want)
        assert {f["id"] for f in items} == set().union(*(b["ids"] for b in want.values()))
        assert all(f["model"] == model and f["symptom"] == symptom for f in items)
        assert all(f["bucket_status"] == status for f in items)
        t = invoke("reports", "--model", model, "--symptom", symptom, "--status", status,
                   "--store", store)
        total = sum(b["count"] for b in want.values())
        assert f"{total} findings in {len(want)} buckets" in t.stdout
        assert len(table_rows(t.stdout)) == min(len(want), 50)
        counts = sorted(int(row.split("│")[4]) for row in table_rows(t.stdout))
        assert counts == sorted(b["count"] for b in want.values())


def test_show_takes_an_exact_id_or_a_unique_prefix(tmp_path):
    base = make_finding(random.Random(1), 0)
    with Store(tmp_path) as db:
        cid = db.new_campaign("tiny_keras", 0, {}, {})
        for fid in ("F-12ab", "F-12abcd", "F-77ee00"):
            f = dict(base, id=fid)
            db.upsert_finding(f, cid, bucket_of(f))
    assert json.loads(invoke("show", "F-12ab", "--json", "--store", tmp_path).stdout)["id"] == "F-12ab"
    assert json.loads(invoke("show", "F-77", "--json", "--store", tmp_path).stdout)["id"] == "F-77ee00"
    assert json.loads(invoke("show", "f-77EE", "--json", "--store", tmp_path).stdout)["id"] == "F-77ee00"
    for prefix, msg in (("F-12a", "ambiguous"), ("F-9", "no finding"), ("F-_", "no finding")):
        r = invoke("show", prefix, "--store", tmp_path)
        assert r.exit_code == 2 and msg in r.stderr, r.output


def test_two_hunts_that_find_the_same_bug_give_one_bucket_of_two(tmp_path):
    store = tmp_path / "store"
    campaigns = []
    for seed in (0, 1):
        ex = FakeExecutor(flip_faults=[has("fake.pass", name="b")])
        with Store(store) as db:
            result = Hunt(ex, db, HuntConfig(model="tiny_keras", seed=seed, budget_s=60,
                                             max_evals=40, localize=False), FakeCorpus()).run()
        campaigns.append(result.campaign)
    # the second hunt replayed the first one's finding before searching: it still reproduces
    assert list(result.replayed.values()) == ["confirmed"]

    r = invoke("reports", "--json", "--store", store)
    assert r.exit_code == 0, r.output
    items = json.loads(r.stdout)
    bug = [f for f in items if f["culprit"] == {"step": "fake.pass", "params": {"name": "b"}}]
    assert len(bug) == 2 and len(runs(items)) == 1
    assert {f["campaign"] for f in bug} == set(campaigns)
    assert {f["bucket_count"] for f in bug} == {2}
    assert {f["bucket_status"] for f in bug} == {"confirmed"}
    first = next(f for f in bug if f["campaign"] == campaigns[0])
    assert first["status"] == "confirmed"  # kept reproducing in the next campaign

    t = invoke("reports", "--store", store)
    row = table_rows(t.stdout)
    assert len(row) == 1
    cells = [c.strip() for c in row[0].split("│")]
    assert cells[2:5] == ["label_flip", 'fake.pass(name="b")', "2"] and cells[-2] == "confirmed"
    assert "2 findings in 1 buckets" in t.stdout
    assert json.loads(invoke("reports", "--json", "--status", "new", "--store", store).stdout) == []
