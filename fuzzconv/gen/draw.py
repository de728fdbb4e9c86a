"""Drawing generated models, and changing them one layer or attribute at a time.

Drawing is written once, against a ``choose(options)`` callable whose options come plainest
first, and driven two ways, as pipelines are (:mod:`fuzzconv.strategies`): by Hypothesis
(:func:`fuzzconv.strategies.models`), which then shrinks towards one plain layer on a small
input, and by the hunt's seeded :class:`random.Random` (:func:`seeded`), so the same seed gives
the same models.

A layer is drawn for the shape in front of it: a kind that takes that shape, then each
attribute. A combination the shape rules refuse is repaired rather than redrawn (attributes are
set back to their plainest values one at a time, in order, until the layer fits), so every draw
gives a valid model and uses the same number of choices whatever the shapes were.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from .spec import MAX_LAYERS, SIZES, GenSpec, Layer, SpecError
from .vocabulary import KINDS

Choose = Callable[[Sequence[Any]], Any]


def seeded(rng: random.Random) -> Choose:
    return lambda options: options[rng.randrange(len(options))]


def kinds_for(shape: tuple[int, ...]) -> list[str]:
    """The kinds that take a tensor of ``shape``, in vocabulary order, each as many times as its
    draw weight (so a uniform choice among them is a weighted one)."""
    takes = "image" if len(shape) == 3 else "vector"
    return [k.name for k in KINDS.values() if k.takes in ("any", takes)
            for _ in range(k.draw_weight)]


def fit(spec: GenSpec, kind: str, attrs: dict[str, Any], index: int) -> Layer | None:
    """The layer ``kind(attrs)`` at ``index`` of ``spec``, repaired until it takes its input
    (attributes back to their plainest one at a time, in declared order); None when even the
    plainest form does not fit."""
    k = KINDS[kind]
    attrs = dict(attrs)
    for reset in [None, *k.attrs]:
        if reset is not None:
            attrs[reset.name] = index if reset.ref else reset.plain
        try:
            layer = Layer.make(kind, attrs, index, spec.framework)
            spec.insert(index, layer)
            return layer
        except SpecError:
            continue
    return None


def draw_layer(spec: GenSpec, index: int, choose: Choose) -> Layer | None:
    """A layer drawn to go at ``index`` of ``spec`` (None when the drawn kind cannot fit)."""
    shape = spec.tensor_shapes()[index]
    kind = choose(kinds_for(shape))
    attrs: dict[str, Any] = {}
    for a in KINDS[kind].attrs:
        if a.ref:
            attrs[a.name] = choose(list(range(index, -1, -1)))  # its own input first
        else:
            attrs[a.name] = choose(list(a.values(spec.framework)))
    return fit(spec, kind, attrs, index)


def draw_spec(framework: str, choose: Choose, max_layers: int = MAX_LAYERS) -> GenSpec:
    """A valid generated model: an input size, 1 to ``max_layers`` layers, the head."""
    spec = GenSpec(framework, choose(SIZES), ())
    for _ in range(choose(list(range(1, max_layers + 1)))):
        layer = draw_layer(spec, len(spec.layers), choose)
        if layer is not None:
            spec = spec.insert(len(spec.layers), layer)
    if not spec.layers:  # every drawn layer was refused: a plain convolution always fits
        spec = spec.insert(0, Layer.make("conv", {}, 0, framework))
    return spec


#: Ways :func:`mutate` changes a model, drawn uniformly.
MUTATIONS = ("attr", "attr", "insert", "drop", "replace", "size")


def mutate(spec: GenSpec, choose: Choose, tries: int = 20) -> GenSpec | None:
    """``spec`` changed in one way (an attribute, a layer inserted, dropped or replaced, the
    input size), valid and different; None after ``tries`` attempts."""
    for _ in range(tries):
        try:
            new = _mutate_once(spec, choose)
        except SpecError:
            continue
        if new is not None and new != spec:
            return new
    return None


def _mutate_once(spec: GenSpec, choose: Choose) -> GenSpec | None:
    how = choose(MUTATIONS)
    n = len(spec.layers)
    if how == "size":
        return spec.with_size(choose([s for s in SIZES if s != spec.size]))
    if how == "insert" or n == 0:
        if n >= MAX_LAYERS + 2:
            return None
        at = choose(list(range(n + 1)))
        layer = draw_layer(spec, at, choose)
        return None if layer is None else spec.insert(at, layer)
    at = choose(list(range(n)))
    if how == "drop":
        return spec.drop(at) if n > 1 else None
    if how == "replace":
        base = spec.drop(at)
        layer = draw_layer(base, at, choose)
        return None if layer is None else base.insert(at, layer)
    layer = spec.layers[at]
    changeable = [a for a in KINDS[layer.kind].attrs
                  if a.applies(layer.attrs) and (a.ref or len(a.values(spec.framework)) > 1)]
    if not changeable:
        return None
    a = choose(changeable)
    attrs = layer.attrs
    attrs[a.name] = choose(list(range(at + 1)) if a.ref else list(a.values(spec.framework)))
    return spec.replace_layer(at, Layer.make(layer.kind, attrs, at, spec.framework))
