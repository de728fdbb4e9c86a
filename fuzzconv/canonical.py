"""One spelling of a value as JSON: sorted keys, no spaces.

Pipelines, steps, generated models' specs and cost records are named, hashed and compared by this
text, so it must be the same everywhere.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys, the most compact separators)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
