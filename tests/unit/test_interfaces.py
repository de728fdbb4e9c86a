"""The fakes the unit tests hunt and shrink with implement the same protocols as the real corpus
and executor, so nothing in the search has to tell them apart."""

from __future__ import annotations

from fuzzconv.corpora import default_corpus
from fuzzconv.interfaces import Corpus, Executor

from .fakes import FakeCorpus, FakeExecutor


def test_the_fakes_are_a_corpus_and_an_executor() -> None:
    assert isinstance(FakeCorpus(), Corpus)
    assert isinstance(FakeExecutor(), Executor)
    fake = FakeCorpus(5)
    assert list(fake.names) == [f"img{i:03d}.png" for i in range(5)]
    assert len(fake.subset([1, 3])) == 2


def test_the_real_corpus_is_one(tmp_path) -> None:
    corpus = default_corpus(n=2)
    assert isinstance(corpus, Corpus) and isinstance(corpus.subset([1]), Corpus)


def test_the_real_executor_is_one(tmp_path) -> None:
    from fuzzconv.executor import Executor as RealExecutor
    from fuzzconv.registry import default_registry
    from fuzzconv.workers import NoWorkers

    assert isinstance(RealExecutor(tmp_path, default_registry(), NoWorkers()), Executor)
