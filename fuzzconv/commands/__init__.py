"""The ``fuzzconv`` commands, one module per group; :mod:`fuzzconv.cli` puts them together."""
