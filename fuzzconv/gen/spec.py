"""A generated model as a value: its layers, canonical JSON, name, shapes and simplicity.

A :class:`GenSpec` is the framework, the input side (square, RGB), the number of classes and a
chain of :class:`Layer` values; the classifier head (global average pooling when the last tensor
is an image, then a dense layer with one unit per class) is implied. Its canonical JSON (every
attribute present, keys sorted) is what is hashed: the name ``gen:<framework>:<digest>`` says
exactly which model it is, so a model is rebuilt bit for bit from its stored spec.

:meth:`GenSpec.from_dict` is where a stored or edited spec meets the current vocabulary: anything
it cannot rebuild raises :class:`SpecError`, one line naming the layer.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from ..canonical import canonical_json
from ..errors import UsageError
from .vocabulary import FRAMEWORKS, KINDS, Invalid, Shape

VERSION = 1
PREFIX = "gen:"
#: Input sides a generated model may take, plainest (smallest) first.
SIZES = (16, 24, 32, 48, 64)
CLASSES = 10
#: The most layers a drawn model holds besides its head.
MAX_LAYERS = 6


class SpecError(UsageError):
    """A generated model's spec that this version's vocabulary cannot build."""


@dataclass(frozen=True, order=True)
class Layer:
    """One layer: a vocabulary kind and its attributes (canonical JSON)."""

    kind: str
    attrs_json: str = "{}"

    @property
    def attrs(self) -> dict[str, Any]:
        return json.loads(self.attrs_json)

    @classmethod
    def make(cls, kind: str, attrs: dict[str, Any], index: int, framework: str) -> "Layer":
        """The canonical layer at position ``index`` (0-based): every attribute present, those
        that do not apply at their plainest, ``other`` defaulting to the layer's own input.

        Raises:
            SpecError: an unknown kind, attribute or value.
        """
        where = f"layer {index + 1} ({kind})"
        k = KINDS.get(kind)
        if k is None:
            raise SpecError(f"{where}: not in this version's vocabulary "
                            f"(known: {', '.join(KINDS)})")
        unknown = sorted(set(attrs) - {a.name for a in k.attrs})
        if unknown:
            raise SpecError(f"{where}: unknown attribute {unknown[0]!r}")
        out: dict[str, Any] = {}
        for a in k.attrs:
            v = attrs.get(a.name, index if a.ref else a.plain)
            if a.ref:
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= index:
                    raise SpecError(f"{where}: 'other' must name an earlier tensor (0..{index})")
            elif v not in a.values(framework):
                raise SpecError(f"{where}: {a.name}={json.dumps(v)} is not a {framework} value "
                                f"(known: {', '.join(json.dumps(c) for c in a.values(framework))})")
            out[a.name] = v
        for a in k.attrs:  # attributes that do not apply stay plain
            if not a.ref and not a.applies(out):
                out[a.name] = a.plain
        return cls(kind, canonical_json(out))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "attrs": self.attrs}

    def label(self) -> str:
        """``kind(attr=value,...)`` with the attributes that are not at their plainest."""
        k = KINDS[self.kind]
        shown = [f"{a.name}={_short(v)}" for a in k.attrs
                 for v in [self.attrs[a.name]] if not a.ref and v != a.plain]
        return f"{self.kind}({','.join(shown)})" if shown else self.kind


def _short(v: Any) -> str:
    return "x".join(map(str, v)) if isinstance(v, list) else str(v)


@dataclass(frozen=True)
class GenSpec:
    """A generated image classifier (see the module docstring)."""

    framework: str
    size: int
    layers: tuple[Layer, ...]
    classes: int = CLASSES

    # -- identity ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "framework": self.framework, "size": self.size,
                "classes": self.classes, "layers": [layer.to_dict() for layer in self.layers]}

    def canonical_json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:10]

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.framework}:{self.digest}"

    @classmethod
    def from_dict(cls, d: Any, name: str | None = None) -> "GenSpec":
        """Parse and check a spec (stored, edited or from a newer version).

        Raises:
            SpecError: one line, naming the layer when a layer is at fault, and ``name`` when
                given.
        """
        who = f"{name}: " if name else ""
        try:
            if not isinstance(d, dict):
                raise SpecError("a generated model's spec must be a JSON object")
            if d.get("version") != VERSION:
                raise SpecError(f"spec version {d.get('version')!r} is not {VERSION}, the one "
                                "this version of fuzzconv builds")
            fw = d.get("framework")
            if fw not in FRAMEWORKS:
                raise SpecError(f"framework {fw!r} is not one of {', '.join(FRAMEWORKS)}")
            size, classes = d.get("size"), d.get("classes", CLASSES)
            if size not in SIZES:
                raise SpecError(f"input size {size!r} is not one of {SIZES}")
            if not isinstance(classes, int) or not 2 <= classes <= 1000:
                raise SpecError(f"classes {classes!r} must be a number from 2 to 1000")
            raw = d.get("layers")
            if not isinstance(raw, list):
                raise SpecError("'layers' must be a list")
            layers = []
            for i, item in enumerate(raw):
                if not isinstance(item, dict) or not isinstance(item.get("attrs", {}), dict):
                    raise SpecError(f"layer {i + 1} must be an object with 'kind' and 'attrs'")
                layers.append(Layer.make(str(item.get("kind")), item.get("attrs", {}), i, fw))
            spec = cls(fw, size, tuple(layers), classes)
            spec.shapes()
        except SpecError as exc:
            raise SpecError(f"{who}{exc}") from None
        if name is not None and name != spec.name:
            raise SpecError(f"{name}: the stored spec is that of {spec.name} (edited?)")
        return spec

    # -- shapes ------------------------------------------------------------------------------
    @property
    def input_shape(self) -> Shape:
        return (3, self.size, self.size)

    def shapes(self) -> list[tuple[Shape, Shape | None, Shape]]:
        """(input, other tensor or None, output) of every layer.

        Raises:
            SpecError: naming the first layer that cannot take its input.
        """
        tensors: list[Shape] = [self.input_shape]
        out = []
        for i, layer in enumerate(self.layers):
            k = KINDS[layer.kind]
            a = layer.attrs
            x = tensors[i]
            y = tensors[a["other"]] if k.uses_other else None
            if (k.takes == "image") != (len(x) == 3) and k.takes != "any":
                raise SpecError(f"layer {i + 1} ({layer.kind}) takes an {k.takes}, "
                                f"not a tensor of shape {x}")
            try:
                z = k.shape(a, x, y, self.framework)
            except Invalid as exc:
                raise SpecError(f"layer {i + 1} ({layer.kind}): {exc}") from None
            tensors.append(z)
            out.append((x, y, z))
        return out

    def tensor_shapes(self) -> list[Shape]:
        """Every tensor's shape: the input (0), then each layer's output (k for layer k)."""
        return [self.input_shape] + [z for _x, _y, z in self.shapes()]

    # -- changing it (each result is checked: SpecError when it does not fit) -----------------
    def _with_layers(self, layers: list[Layer], size: int | None = None) -> "GenSpec":
        spec = GenSpec(self.framework, size or self.size, tuple(layers), self.classes)
        spec.shapes()
        return spec

    def _moved(self, layer: Layer, old: int, new: int, remap: Any) -> Layer:
        a = layer.attrs
        if "other" in a:
            a["other"] = new if a["other"] == old else remap(a["other"])
        return Layer.make(layer.kind, a, new, self.framework)

    def insert(self, index: int, layer: Layer) -> "GenSpec":
        """``layer`` (made for position ``index``) inserted before the layer now there; later
        layers keep reading what they read (their own input is then the one before them)."""
        later = [self._moved(lay, k, k + 1, lambda o: o + 1 if o > index else o)
                 for k, lay in enumerate(self.layers[index:], index)]
        return self._with_layers([*self.layers[:index], layer, *later])

    def drop(self, index: int) -> "GenSpec":
        """Layer ``index`` removed; what read its output reads its input instead."""
        later = [self._moved(lay, k, k - 1, lambda o: o - 1 if o > index else o)
                 for k, lay in enumerate(self.layers[index + 1:], index + 1)]
        return self._with_layers([*self.layers[:index], *later])

    def replace_layer(self, index: int, layer: Layer) -> "GenSpec":
        return self._with_layers([*self.layers[:index], layer, *self.layers[index + 1:]])

    def with_size(self, size: int) -> "GenSpec":
        if size not in SIZES:
            raise SpecError(f"input size {size} is not one of {SIZES}")
        return self._with_layers(list(self.layers), size)

    def output_shape(self) -> Shape:
        s = self.shapes()
        return s[-1][2] if s else self.input_shape

    def annotated(self) -> dict[str, Any]:
        """What the source renderers read: the spec with every layer's shapes (as the layout's
        own dimensions need them) and the head's input width."""
        layers = []
        for layer, (x, y, z) in zip(self.layers, self.shapes()):
            layers.append({"kind": layer.kind, "attrs": layer.attrs, "in": list(x),
                           "other": list(y) if y is not None else None, "out": list(z)})
        last = self.output_shape()
        return {"framework": self.framework, "size": self.size, "classes": self.classes,
                "layers": layers, "head": {"pool": len(last) == 3, "features": last[0]}}

    # -- size and simplicity -----------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(weights, multiply-accumulates per image), head included."""
        weights = macs = 0
        for layer, (x, _y, z) in zip(self.layers, self.shapes()):
            k = KINDS[layer.kind]
            weights += k.weights(layer.attrs, x, z)
            macs += k.macs(layer.attrs, x, z)
        f = self.output_shape()[0]
        head = f * self.classes + self.classes
        return weights + head, macs + head + math.prod(self.output_shape())

    def non_plain(self) -> int:
        """Attributes not at their plainest, and references to a tensor other than the input."""
        n = 0
        for i, layer in enumerate(self.layers):
            for a in KINDS[layer.kind].attrs:
                v = layer.attrs[a.name]
                n += (v != i) if a.ref else (v != a.plain)
        return n

    def simplicity(self) -> tuple:
        """The model shrink order, smaller is simpler: fewer layers, fewer attributes away from
        their plainest, a smaller input, fewer channels, then the canonical JSON."""
        channels = sum(z[0] for _x, _y, z in self.shapes())
        return (len(self.layers), self.non_plain(), self.size, channels, self.canonical_json())

    def trigger(self) -> list[dict[str, Any]]:
        """What tells this model's bugs apart when it is a minimal model: each layer's kind
        and its attributes that are not at their plainest (references aside)."""
        return [{"kind": layer.kind,
                 "attrs": {a.name: layer.attrs[a.name] for a in KINDS[layer.kind].attrs
                           if not a.ref and layer.attrs[a.name] != a.plain}}
                for layer in self.layers]

    def holds(self, trigger: list[dict[str, Any]]) -> bool:
        """Whether this model holds every layer of a ``trigger`` (each with its attributes)."""
        return all(any(layer.kind == t["kind"] and all(layer.attrs.get(k) == v
                                                       for k, v in t["attrs"].items())
                       for layer in self.layers) for t in trigger)

    def label(self) -> str:
        """The layers in one line, e.g. ``conv(stride=2) → resize(mode=bicubic)``."""
        return " → ".join(layer.label() for layer in self.layers) or "(head only)"


def is_generated(name: str) -> bool:
    return name.startswith(PREFIX)


def family_of(name: str) -> str | None:
    """``gen:keras`` for ``gen:keras`` or ``gen:keras:<id>``; None for other names."""
    parts = name.split(":")
    if len(parts) in (2, 3) and parts[0] + ":" == PREFIX and parts[1] in FRAMEWORKS:
        return f"{PREFIX}{parts[1]}"
    return None
