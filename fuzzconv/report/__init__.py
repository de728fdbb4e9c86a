"""Turning stored findings into things people read and run.

- :mod:`.bundle` — ``fuzzconv bundle ID -o DIR``: a self-contained bug case for the culprit
  library's tracker (issue text, a ``repro.py`` that needs only numpy and that library, the
  culprit's input artifact, inputs and expected outputs).
- :mod:`.bundle_import` — ``fuzzconv bundle --archive`` and ``fuzzconv repro BUNDLE``: a bundle
  as one ``.tar.gz`` to send, and a received one checked (extraction confined, no pickles, plugin
  code only when trusted) before its ``repro.py`` runs.
- :mod:`.html` — ``fuzzconv report --html FILE``: one static, offline HTML page with the campaign
  summary, a sortable findings table, failing images with their top-5, and charts.

They read the store through :class:`fuzzconv.store.Store` and never import the engine or the
shrinker. This package imports none of them itself, so a command that needs one (``fuzzconv
repro BUNDLE`` needs only :mod:`.bundle_import`) loads only that one.
"""
