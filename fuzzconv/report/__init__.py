"""Turning stored findings into things people read and run.

- :mod:`.bundle` — ``fuzzconv bundle ID -o DIR``: a self-contained bug case for the culprit
  library's tracker (issue text, a ``repro.py`` that needs only numpy and that library, the
  culprit's input artifact, inputs and expected outputs).
- :mod:`.bundle_import` — ``fuzzconv bundle --archive`` and ``fuzzconv repro BUNDLE``: a bundle
  as one ``.tar.gz`` to send, and a received one checked (extraction confined, no pickles, plugin
  code only when trusted) before its ``repro.py`` runs.
- :mod:`.html` — ``fuzzconv report --html FILE``: one static, offline HTML page with the campaign
  summary, a sortable findings table, failing images with their top-5, and charts.

Both read the store through :class:`fuzzconv.store.Store` and evaluate what they need through the
executor (whose cache normally answers), so this process still imports no framework.
"""

from .bundle import write_bundle
from .html import write_html

__all__ = ["write_bundle", "write_html"]
