"""Which generated model a name stands for: specs known to this process, then to opened stores.

A name ``gen:<framework>:<digest>`` is resolved from the specs this process drew or loaded
(:func:`remember`), then from the sources a session attached (:func:`attach`: a store's table of
generated models, read only). A spec read from a source is checked against the current
vocabulary and against its name, so an edited spec, or one from a newer version, fails with one
line naming the layer (:class:`~fuzzconv.gen.spec.SpecError`).

:func:`model_fields` gives what :class:`fuzzconv.zoo.ModelSpec` holds for a generated model: the
zoo builds the spec from it, so this module needs nothing of the zoo.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UsageError
from .spec import CLASSES, MAX_LAYERS, GenSpec, family_of, is_generated

#: The families ``--model`` takes: each draws models of one framework.
FAMILIES = ("gen:keras", "gen:torch")
#: Family → (source format, worker family, layout).
SOURCES = {"keras": ("keras", "tf", "NHWC"), "torch": ("torch", "torch", "NCHW")}

_known: dict[str, GenSpec] = {}
_sources: dict[str, Callable[[str], dict[str, Any] | None]] = {}


def remember(spec: GenSpec) -> str:
    """Make ``spec`` resolvable by its name in this process; returns the name."""
    _known[spec.name] = spec
    return spec.name


def attach(key: str, source: Callable[[str], dict[str, Any] | None]) -> None:
    """Resolve names this process does not know through ``source`` (name → stored spec or
    None), e.g. a store's table; one source per ``key``."""
    _sources.setdefault(key, source)


def forget() -> None:
    """Forget every spec this process drew or loaded (tests that must not see each other's
    models); the attached sources stay, so a stored model still resolves."""
    _known.clear()


def lookup(name: str) -> GenSpec:
    """The spec a generated model's name stands for.

    Raises:
        SpecError: a stored spec the current vocabulary cannot build (one line, naming the layer).
        UsageError: a name no known spec has.
    """
    spec = _known.get(name)
    if spec is not None:
        return spec
    if family_of(name) is None or name.count(":") != 2:
        raise UsageError(f"unknown model {name!r}: a generated model is named "
                         f"gen:keras:<id> or gen:torch:<id>, and a hunt takes "
                         f"{' or '.join(FAMILIES)}")
    for source in _sources.values():
        stored = source(name)
        if stored is not None:
            return _known.setdefault(name, GenSpec.from_dict(stored, name))
    raise UsageError(f"unknown generated model {name!r}: no store this command opened holds its "
                     "spec (pass --store)")


def model_fields(spec: GenSpec) -> dict[str, Any]:
    """The :class:`fuzzconv.zoo.ModelSpec` fields of a generated model."""
    source, family, layout = SOURCES[spec.framework]
    size = spec.size
    weights, macs = spec.counts()
    return dict(name=spec.name, source=source, family=family,
                input_shape=(size, size, 3) if layout == "NHWC" else (3, size, size),
                layout=layout, preprocessing="keras_tf", classes=spec.classes, builder="gen",
                params_m=weights / 1e6, gmacs=macs / 1e9, generated=spec.to_dict())


def family_row(family: str) -> dict[str, Any]:
    """A generated family as ``fuzzconv models`` lists it."""
    from .spec import SIZES
    from .vocabulary import KINDS

    source, _family, layout = SOURCES[family.split(":")[1]]
    side = f"{SIZES[0]}–{SIZES[-1]}"
    return {"name": family, "source": source,
            "input_shape": [side, side, 3] if layout == "NHWC" else [3, side, side],
            "layout": layout, "preprocessing": "keras_tf", "classes": CLASSES,
            "weights": "calibrated", "tiny": True, "paper": False, "generated": True,
            "layers": f"1–{MAX_LAYERS} of {len(KINDS)} kinds (fuzzconv models --vocabulary)"}


__all__ = ["FAMILIES", "attach", "family_of", "forget", "is_generated", "lookup", "model_fields",
           "remember", "family_row"]
