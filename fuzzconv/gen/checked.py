"""Attribute values checked as the Keras and PyTorch sources are written from a spec.

A spec read from a store may have been edited: a value of the wrong type or outside its choices
must fail while the source is written (one ``ValueError`` naming it), never reach the framework as
text that happens to parse.
"""

from __future__ import annotations

from typing import Any


def as_int(v: Any) -> int:
    """``v`` when it is an integer (a bool is not)."""
    if type(v) is not int:
        raise ValueError(f"expected an integer, got {v!r}")
    return v


def as_number(v: Any) -> float:
    """``v`` as a float when it is an integer or a float."""
    if type(v) not in (int, float):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def one_of(v: Any, allowed: Any) -> Any:
    """``v`` when it is one of ``allowed``."""
    if v not in allowed:
        raise ValueError(f"{v!r} is not one of {sorted(map(str, allowed))}")
    return v


def pair(k: Any) -> str:
    """A kernel size or stride as the ``(h, w)`` both frameworks take: from one integer or two."""
    if isinstance(k, list):
        return f"({as_int(k[0])}, {as_int(k[1])})"
    return f"({as_int(k)}, {as_int(k)})"
