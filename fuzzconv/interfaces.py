"""What the search needs of a corpus and of an executor, as ``typing.Protocol`` s.

The hunt, the evaluator and the shrinker work on anything that has these members: the real
:class:`fuzzconv.corpora.Corpus` and :class:`fuzzconv.executor.Executor`, and the in-process fakes
of ``tests/unit/fakes.py`` (checked against them in ``tests/unit/test_interfaces.py``), so code
never has to ask which one it was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from .executor import Evaluation
    from .pipeline import Pipeline
    from .registry import Registry


@runtime_checkable
class Corpus(Protocol):
    """An ordered set of images: a stable name per image, and a digest the cache keys on."""

    @property
    def names(self) -> Sequence[str]:
        """One stable name per image; findings name their failing inputs by it."""
        ...

    @property
    def digest(self) -> str:
        """Changes when any image does (cached inputs and outputs are keyed by it)."""
        ...

    def __len__(self) -> int:
        ...

    def subset(self, indices: Sequence[int]) -> "Corpus":
        """The images at ``indices``, in that order."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Evaluates pipelines against a corpus, through a cache, within a deadline.

    Attributes:
        registry: the steps and runtimes pipelines are made of.
        deadline: a ``time.monotonic()`` time no evaluation may run past (None: none).
        fresh_evaluations: evaluations that ran at least one step or runtime.
    """

    registry: "Registry"
    deadline: float | None
    fresh_evaluations: int

    def evaluate(self, pipeline: "Pipeline", corpus: Corpus, cold: bool = False,
                 repeats: int = 0) -> "Evaluation":
        """The pipeline's outputs on the corpus; failures recorded, never raised."""
        ...

    def reference(self, model: str, corpus: Corpus) -> "Evaluation":
        """The source model in its own framework: what every pipeline is judged by."""
        ...

    def reference_pipeline(self, model: str) -> "Pipeline":
        ...
