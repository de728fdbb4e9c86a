"""The 2022 paper's sensitivity study, repeated on this stack with repeated, honest timing.

Louloudakis et al. (2022), "Exploring Effects of Computational Parameter Changes to Image
Recognition Systems", ran MobileNetV2, ResNet101V2, DenseNet121 and InceptionV3 under different
frameworks, converters, TVM optimization levels and devices, and reported that top-1 labels changed
for up to 57 % of the images with the framework, did not change with optimization levels or
devices, and that inference time changed with everything. Their scripts timed each image once.

``run_study`` (:mod:`.measure`) evaluates a fixed list of configurations (:mod:`.configs`) per
model, each one a :class:`~fuzzconv.pipeline.Pipeline` run through the session's executor, so
every artifact and every output is cached and a rerun recomputes only the timing. Timing runs in
the workers once every configuration of a model ran: ``repeats`` interleaved rounds, each giving
every configuration one pass over the first batch and over each of its images alone, in a fresh
seeded order (:mod:`.rounds`), with the thread count pinned in every framework. Medians get seeded
95 % bootstrap intervals, ratios to the baseline intervals paired by round, label changes Wilson
intervals (:mod:`.intervals`); the baseline built twice is the control pair that must read 1.00.

The package, one concern a module:

- :mod:`.configs` — the configurations and the settings every table shares;
- :mod:`.probes` — worker functions: the TVM passes ``tvm-disabled`` turns off, thread settings;
- :mod:`.measure` — running the study, resuming one that stopped; :mod:`.eta` — the time left;
- :mod:`.timing`, :mod:`.rounds`, :mod:`.timed` — interleaved timing: the executor side, the
  order and statistics, the worker side;
- :mod:`.intervals` — Wilson and bootstrap intervals;
- :mod:`.cells` — one measured configuration, and reading them back from ``study.json``;
- :mod:`.stats` — medians with confidence intervals, label agreement;
- :mod:`.paper` — the paper's claims beside this study's numbers, with verdicts from the intervals;
- :mod:`.outputs`, :mod:`.plots` — ``labels.csv``, ``timing.csv``, ``study.json``, PNG plots;
- :mod:`.report`, :mod:`.sections`, :mod:`.document` — the report as structured blocks, ``study.md``
  their Markdown
  (the HTML report renders the same blocks).

Nothing is imported here, so reading a study (the HTML report) loads no executor or worker code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_study"]


def __getattr__(name: str) -> Any:
    if name == "run_study":
        from .measure import run_study

        return run_study
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
