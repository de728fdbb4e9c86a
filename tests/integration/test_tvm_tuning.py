"""Tuned TVM builds on the real stack: ``tvm.build(tuning="metaschedule")`` and ``fuzzconv tune``
on ``tiny_keras``, with a handful of trials per workload (``FUZZCONV_TUNING_TRIALS``) so a
tuning run takes about a minute. The tuning database lives in the test run's private cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fuzzconv.cli import app
from fuzzconv.corpora import default_corpus
from fuzzconv.executor import Evaluation, Executor
from fuzzconv.oracle import compare
from fuzzconv.pipeline import Pipeline
from fuzzconv.registry import default_registry
from fuzzconv.tuning import (DATABASE_FILE, TUNED_BATCH, database_dir, read_static_batch,
                             tuned_for, tuning_status)
from fuzzconv.workers import WorkerPool
from tests.conftest import needs

pytestmark = [pytest.mark.frameworks, needs("tvm", "tf")]

MODEL = "tiny_keras"
CHAIN = [("keras.tf2onnx", {}), ("onnx.tvm", {})]
TRIALS = 3


@pytest.fixture(scope="module")
def tuned_executor(tmp_path_factory: pytest.TempPathFactory):
    """An executor whose workers tune with TRIALS trials per workload (the variable is read by
    the tvm worker, so it is set before the pool starts its workers)."""
    old = os.environ.get("FUZZCONV_TUNING_TRIALS")
    os.environ["FUZZCONV_TUNING_TRIALS"] = str(TRIALS)
    store = tmp_path_factory.mktemp("tuned-store")
    try:
        with WorkerPool(store / "logs") as pool:
            yield Executor(store, default_registry(), pool)
    finally:
        if old is None:
            os.environ.pop("FUZZCONV_TUNING_TRIALS", None)
        else:
            os.environ["FUZZCONV_TUNING_TRIALS"] = old


def tuned(executor: Executor, **build) -> Pipeline:
    return Pipeline.make(executor.registry, MODEL,
                         [*CHAIN, ("tvm.build", {"tuning": "metaschedule", **build})], "tvm")


def database_lines() -> list[dict]:
    path = database_dir("llvm") / DATABASE_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_tuned_build_agrees_with_the_reference(tuned_executor: Executor) -> None:
    corpus = default_corpus(n=24)
    ref = tuned_executor.reference(MODEL, corpus)
    untuned = tuned_executor.evaluate(
        Pipeline.make(tuned_executor.registry, MODEL, [*CHAIN, ("tvm.build", {})], "tvm"), corpus)
    ev = tuned_executor.evaluate(tuned(tuned_executor), corpus)
    assert untuned.ok and ev.ok, ev.failure
    cmp = compare(ref.logits, ev.logits)
    assert cmp.flips == 0 and cmp.max_abs_diff < 1e-4
    assert np.array_equal(ev.logits.argmax(1), untuned.logits.argmax(1))
    # every workload was tuned, each with at most TRIALS trials, and at least one schedule ran
    lines = database_lines()
    status = tuning_status(MODEL)
    assert tuned_for(MODEL) and status["tasks"] == len(lines) == status["tuned"]
    assert all(0 < e["trials"] <= TRIALS for e in lines)
    assert any(e["record"] is not None for e in lines)
    # the library takes a batch of one and the runtime fed it the corpus in batches of 8
    lib = tuned_executor.artifact(tuned(tuned_executor), 3, Evaluation(tuned(tuned_executor), None))
    assert read_static_batch(lib.parent) == TUNED_BATCH


def test_a_second_tuned_build_tunes_nothing(tuned_executor: Executor) -> None:
    before, status = database_lines(), tuning_status(MODEL)
    # other builds of the same module, whose workloads are the same, apply the database and
    # add no trial
    corpus = default_corpus(n=8)
    for build in ({"opt_level": 2}, {"disabled_passes": ["tirx.CommonSubexprElim"]}):
        assert tuned_executor.evaluate(tuned(tuned_executor, **build), corpus).ok
    after = tuning_status(MODEL)
    assert database_lines() == before
    assert after["trials"] == status["trials"] and after["runs"] == status["runs"] + 2


def test_fuzzconv_tune_reports_the_model_tuned_and_builds_the_library(
        tuned_executor: Executor) -> None:
    r = CliRunner().invoke(app, ["tune", "--model", MODEL, "--store",
                                 str(tuned_executor.store_dir), "--budget", "10m", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["complete"] and report["tuned"] == 0 and report["trials"] == 0
    assert report["covered"] == report["tasks"] == tuning_status(MODEL)["tasks"]
    assert Path(report["library"]).name == "lib.so"
    assert report["pipeline"]["steps"][-1]["params"]["tuning"] == "metaschedule"
