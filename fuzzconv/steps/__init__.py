"""Built-in steps and runtimes, one module per framework family.

Each module registers through the same decorators as plugins (:mod:`fuzzconv.plugins`) and imports
its framework inside functions only, so the orchestrator can read what is here without importing
any framework. The worker of each family calls the functions.
"""
