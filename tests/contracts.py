"""Validate objects against the public contract schemas in ../shared/contracts (as validate.py does)."""

from __future__ import annotations

import json
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parents[2] / "shared" / "contracts"
KINDS = {"pipeline": "pipeline.schema.json", "finding": "finding.schema.json",
         "hunt": "hunt-output.schema.json"}


def contract_errors(kind: str, obj: object) -> list[str]:
    """Schema violations of ``obj`` as readable lines; empty when it conforms."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {n: json.loads((CONTRACTS / n).read_text()) for n in KINDS.values()}
    registry = Registry().with_resources((n, Resource.from_contents(s)) for n, s in schemas.items())
    v = Draft202012Validator(schemas[KINDS[kind]], registry=registry)
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in v.iter_errors(obj)]
