"""Shared fixtures. The pytest process itself imports no framework: frameworks run in workers."""

from __future__ import annotations

import os
from pathlib import Path

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
def small_corpus():
    from fuzzconv.corpora import default_corpus

    return default_corpus(n=24)
