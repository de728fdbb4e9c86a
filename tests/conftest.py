"""Shared fixtures. The pytest process itself imports no framework: frameworks run in workers."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fuzzconv.registry import family_available


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also build the full-size paper models")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def needs(*families: str) -> pytest.MarkDecorator:
    """Skip unless the framework families' extras are installed."""
    missing = [w for f in families if (w := family_available(f))]
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing))


@pytest.fixture(autouse=True)
def _no_generated_models_from_other_tests() -> None:
    """A generated model resolves from the store a test made, not from a spec an earlier test
    drew in this process."""
    from fuzzconv.gen import catalog

    catalog.forget()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Calibrated source models are cached per user; tests build their own so they cannot depend
    # on what a previous run left behind.
    if "FUZZCONV_CACHE" not in os.environ:
        os.environ["FUZZCONV_CACHE"] = str(tmp_path_factory.mktemp("fuzzconv-cache"))


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def pool(store_dir: Path):
    from fuzzconv.workers import WorkerPool

    with WorkerPool(store_dir / "logs") as p:
        yield p


@pytest.fixture(scope="session")
def registry():
    from fuzzconv.registry import default_registry

    return default_registry()


@pytest.fixture(scope="session")
def executor(store_dir: Path, pool, registry):
    from fuzzconv.executor import Executor

    return Executor(store_dir, registry, pool)


@pytest.fixture(scope="session")
def relax_passes(pool) -> dict:
    """The Relax passes ``tvm.pass`` offers, asked of a tvm worker once for the session: the first
    ask probes TVM (minutes) and caches the list in the session's cache, which every later
    ``tvm.pass`` step and hunt of the session reads."""
    missing = family_available("tvm")
    if missing:
        pytest.skip(missing)
    from fuzzconv.protocol import Call
    from fuzzconv.steps.relax_passes import list_relax_passes

    return pool.request("tvm", Call.to(list_relax_passes), timeout=1800)


@pytest.fixture(scope="session")
def small_corpus():
    from fuzzconv.corpora import default_corpus

    return default_corpus(n=24)


ASSETS = Path(__file__).resolve().parent / "assets"
#: The plugin the shared hunt finds: ``fault.perturb(strength=0.5)`` perturbs the classifier.
FAULT_PLUGIN = ASSETS / "fault_plugin.py"
#: How the shared hunt is run (``fuzzconv hunt`` arguments, store aside).
#: (``--slowdown 1000``: on a shared machine a timing finding measures the load, not the fault.)
FAULT_HUNT_ARGS = ["hunt", "--model", "tiny_keras", "--plugin", str(FAULT_PLUGIN), "--focus",
                   "fault.perturb", "--max-evals", "6", "--limit", "16", "--json",
                   "--max-chain", "1", "--slowdown", "1000"]


@dataclass(frozen=True)
class FaultHunt:
    """A real hunt on ``tiny_keras`` with the fault plugin, as ``fuzzconv hunt --json`` ran it.

    Attributes:
        store: its store; read it, or :meth:`copy` it to write.
        output: what ``hunt --json`` printed.
        finding: its ``fault.perturb(strength=0.5)`` finding.
    """

    store: Path
    output: dict[str, Any]
    finding: dict[str, Any]

    def copy(self, to: Path) -> Path:
        """A copy of the store (findings, cache, logs) to write into."""
        return Path(shutil.copytree(self.store, to))

    def flip_rate(self) -> float:
        """What the fault does, measured apart from the hunt: the oracle's flip rate of the
        finding's minimal pipeline against the reference on the hunt's images (the store's
        cache answers, so no framework runs)."""
        from fuzzconv.corpora import select
        from fuzzconv.oracle import compare
        from fuzzconv.pipeline import Pipeline
        from fuzzconv.session import open_session

        corpus = select(None, 16)
        with open_session(self.store, [FAULT_PLUGIN]) as ex:
            minimal = Pipeline.from_dict(self.finding["minimal_pipeline"], ex.registry)
            ref = ex.reference(minimal.model, corpus).logits
            return compare(ref, ex.evaluate(minimal, corpus).logits).flip_rate


@pytest.fixture(scope="session")
def fault_hunt(tmp_path_factory: pytest.TempPathFactory) -> FaultHunt:
    """One real hunt shared by the CLI, bundle and HTML report tests: they read what one hunt
    stored instead of each hunting the same fault again."""
    missing = [w for f in ("tf", "ort") if (w := family_available(f))]
    if missing:
        pytest.skip("; ".join(missing))
    from typer.testing import CliRunner

    from fuzzconv.cli import app

    store = tmp_path_factory.mktemp("fault-hunt") / "store"
    r = CliRunner().invoke(app, [*FAULT_HUNT_ARGS, "--store", str(store)])
    assert r.exit_code == 0, r.output
    output = json.loads(r.stdout)
    found = [f for f in output["findings"]
             if f["culprit"] == {"step": "fault.perturb", "params": {"strength": 0.5}}]
    assert found, r.stdout
    return FaultHunt(store, output, found[0])
