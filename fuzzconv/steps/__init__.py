"""Built-in steps and runtimes, one module per framework family.

Each module registers through the same decorators as plugins (:mod:`fuzzconv.plugins`) and imports
its framework inside functions only, so the orchestrator can read what is here without importing
any framework. The worker of each family calls the functions.

A step is the one implementation of what it does: the worker runs it, and a bug bundle's
``repro.py`` runs a copy of its source (:mod:`fuzzconv.report.bundle.sources`). So a step reaches
other fuzzconv code through module-level names (not imports inside its body), and reads only plain
data at module level; ``tests/unit/test_bundle_sources.py`` checks every built-in one.
"""
