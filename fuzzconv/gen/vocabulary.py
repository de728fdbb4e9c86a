"""The vocabulary of generated models: layer kinds, their attributes, shapes, cost and carriers.

Each :class:`Kind` is one layer a generated model may hold, in both Keras and PyTorch, with the
attributes converters and compilers special-case. An :class:`Attr` lists its values plainest
first: drawing with Hypothesis shrinks towards them, and the model shrinker resets to them. A
value one framework cannot express is listed in ``only`` for the other.

Shapes are framework-neutral: ``(C, H, W)`` for an image, ``(F,)`` for a vector. A kind's shape
rule (``shape``) raises :class:`Invalid` when the layer cannot take its input; it knows the few
places where the frameworks differ (a dense layer on an image acts on the layout's last axis:
channels in Keras, width in PyTorch).

A layer reads the previous layer's output; the kinds with an ``other`` attribute also read an
earlier tensor (0 is the model's input, k the output of layer k), which is how skip connections,
concatenations and broadcasting against another tensor arise.

Which conversion steps cannot carry which layers is in :mod:`.carriers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import shapes
from .shapes import Invalid, Shape  # noqa: F401 - Invalid is used through this module

FRAMEWORKS = ("keras", "torch")


@dataclass(frozen=True)
class Attr:
    """One attribute of a kind.

    Args:
        name: its key in a layer's ``attrs``.
        choices: its values, plainest first.
        only: framework → the values of ``choices`` it can express (a framework not named here
            expresses them all).
        when: (another attribute, its values) under which this one means something; otherwise it
            stays at its plainest value.
        ref: True for ``other``, a reference to an earlier tensor (its plainest value is the
            layer's own input).
    """

    name: str
    choices: tuple[Any, ...] = ()
    only: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    when: tuple[str, tuple[Any, ...]] | None = None
    ref: bool = False

    @property
    def plain(self) -> Any:
        return self.choices[0] if self.choices else None

    def values(self, framework: str) -> tuple[Any, ...]:
        allowed = self.only.get(framework)
        return self.choices if allowed is None else tuple(v for v in self.choices if v in allowed)

    def applies(self, attrs: dict[str, Any]) -> bool:
        return self.when is None or attrs.get(self.when[0]) in self.when[1]


ShapeFn = Callable[[dict[str, Any], Shape, "Shape | None", str], Shape]
CountFn = Callable[[dict[str, Any], Shape, Shape], int]


@dataclass(frozen=True)
class Kind:
    """One layer kind: its attributes, what it takes, the shape it makes, its size and cost.

    Args:
        takes: ``image``, ``vector`` or ``any``.
        shape: (attrs, input shape, other tensor's shape or None, framework) → output shape.
        weights: (attrs, input, output) → number of weights.
        macs: (attrs, input, output) → multiply-accumulates per image.
    """

    name: str
    doc: str
    attrs: tuple[Attr, ...]
    takes: str
    shape: ShapeFn
    weights: CountFn = shapes.none
    macs: CountFn = shapes.elements
    #: How often a draw picks this kind, against the others (the kinds converters special-case
    #: most are drawn more often).
    draw_weight: int = 1

    def attr(self, name: str) -> Attr:
        return next(a for a in self.attrs if a.name == name)

    @property
    def uses_other(self) -> bool:
        return any(a.ref for a in self.attrs)


OTHER = Attr("other", ref=True)
#: The functions of the ``math`` kind, plainest first.
MATH_FNS = ("abs", "neg", "square", "exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos",
            "atan", "sinh", "cosh", "asinh", "erf", "softplus", "softsign", "logsigmoid", "mish",
            "sign", "floor", "ceil", "round", "trunc")

KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("conv", "2-D convolution: groups (depthwise too), dilation, strides, same/valid/"
         "explicit asymmetric padding, bias on and off",
         (Attr("filters", (4, 8, 16)), Attr("kernel", (3, 1, 5, 2, [1, 3])),
          Attr("stride", (1, 2)), Attr("dilation", (1, 2)),
          Attr("groups", (1, "depthwise", 2)), Attr("padding", ("valid", "same", "explicit")),
          Attr("pads", ([1, 1, 1, 1], [0, 1, 0, 1], [1, 0, 2, 1], [2, 2, 0, 0]),
               when=("padding", ("explicit",))),
          Attr("bias", (True, False))),
         "image", shapes.conv_shape, shapes.conv_weights, shapes.conv_macs, draw_weight=4),
    Kind("conv_transpose", "transposed convolution: strides, padding, output padding, dilation",
         (Attr("filters", (4, 8)), Attr("kernel", (3, 2, 4)), Attr("stride", (2, 1)),
          Attr("padding", ("valid", "same", "1"), only={"keras": ("valid", "same"),
                                                         "torch": ("valid", "1")}),
          Attr("output_padding", (0, 1)), Attr("dilation", (1, 2))),
         "image", shapes.transpose_shape, shapes.transpose_weights, shapes.transpose_macs,
         draw_weight=2),
    Kind("pool", "max and average pooling: same/valid, padding, ceil_mode, count_include_pad",
         (Attr("op", ("max", "avg")), Attr("size", (2, 3)), Attr("stride", (2, 1, 3)),
          Attr("padding", ("valid", "same", "1"), only={"keras": ("valid", "same"),
                                                         "torch": ("valid", "1")}),
          Attr("ceil_mode", (False, True), only={"keras": (False,)}),
          Attr("count_include_pad", (True, False), only={"keras": (True,)},
               when=("op", ("avg",)))),
         "image", shapes.pool_shape, macs=shapes.pool_macs, draw_weight=3),
    Kind("global_pool", "global average or max pooling, keeping the spatial axes or not",
         (Attr("op", ("avg", "max")), Attr("keepdims", (False, True))),
         "image", shapes.global_shape),
    Kind("resize", "upsampling and resizing: nearest, bilinear, bicubic; integer and non-integer "
         "scale factors; explicit sizes; align_corners; antialias",
         (Attr("mode", ("nearest", "bilinear", "bicubic")),
          Attr("factor", (2, 1.5, 0.5, 3, 0.75)), Attr("by", ("scale", "size")),
          Attr("align_corners", (False, True), only={"keras": (False,)},
               when=("mode", ("bilinear", "bicubic"))),
          Attr("antialias", (False, True), when=("mode", ("bilinear", "bicubic")))),
         "image", shapes.resize_shape, macs=shapes.resize_macs, draw_weight=3),
    Kind("norm", "batch, layer, group and instance normalisation",
         (Attr("type", ("batch", "layer", "group", "instance")),
          Attr("over", ("channels", "all"), when=("type", ("layer",))),
          Attr("groups", (2, 4), when=("type", ("group",))),
          Attr("epsilon", (0.001, 0.1))),
         "any", shapes.norm_shape, shapes.norm_weights, draw_weight=2),
    Kind("act", "activations: ReLU, ReLU6, LeakyReLU, ELU, SELU, hard-sigmoid, hard-swish, SiLU, "
         "GELU, sigmoid, tanh, softmax, clip",
         (Attr("fn", ("relu", "relu6", "leaky_relu", "elu", "selu", "hard_sigmoid",
                      "hard_swish", "silu", "gelu", "sigmoid", "tanh", "softmax", "clip")),
          Attr("alpha", (0.2, 0.01, 1.0), when=("fn", ("leaky_relu", "elu"))),
          Attr("approximate", (False, True), when=("fn", ("gelu",))),
          Attr("bounds", ([-1.0, 1.0], [0.0, 6.0], [-0.5, 0.25]), when=("fn", ("clip",)))),
         "any", shapes.same_shape, draw_weight=2),
    Kind("binary", "element-wise add, mul, sub, div, min, max, floor division and remainder "
         "with another tensor, a per-channel or per-position mean of the input (broadcast), or "
         "a scalar",
         (Attr("op", ("add", "mul", "sub", "div", "min", "max", "floordiv", "mod")),
          Attr("operand", ("skip", "channel", "spatial", "scalar")), OTHER),
         "any", shapes.binary_shape, draw_weight=2),
    Kind("concat", "concatenation with an earlier tensor, along channels or width",
         (Attr("axis", ("channels", "width")), OTHER), "image", shapes.concat_shape),
    Kind("split", "split along channels into equal or uneven parts, then swap them or keep "
         "the first",
         (Attr("parts", (2, 3)), Attr("even", (True, False)), Attr("then", ("swap", "first"))),
         "image", shapes.split_shape),
    Kind("pad", "constant, reflect, edge, symmetric and circular padding",
         (Attr("mode", ("constant", "reflect", "edge", "symmetric", "circular"),
               only={"keras": ("constant", "reflect", "symmetric"),
                     "torch": ("constant", "reflect", "edge", "circular")}),
          Attr("pads", ([1, 1, 1, 1], [0, 1, 0, 1], [2, 0, 1, 3])),
          Attr("value", (0.0, 0.5), when=("mode", ("constant",)))),
         "image", shapes.pad_shape, draw_weight=2),
    Kind("slice", "a strided slice of channels, height or width",
         (Attr("axis", ("height", "width", "channels")), Attr("start", (1, 0, 2)),
          Attr("stop", (0, -1, -2)), Attr("step", (1, 2))),
         "image", shapes.slice_shape),
    Kind("reshape", "a reshape folding height into channels or channels into width",
         (Attr("fold", ("h_to_c", "c_to_w")),), "image", shapes.reshape_shape),
    Kind("transpose", "a transpose of height and width, or of channels and width",
         (Attr("perm", ("hw", "cw")),), "image", shapes.transpose_perm_shape),
    Kind("flatten", "flatten an image to a vector", (), "image", shapes.flatten_shape),
    Kind("reduce", "mean, max, min, sum, product, L2 norm, log-sum-exp or (population) "
         "variance over the spatial axes or the channels",
         (Attr("op", ("mean", "max", "min", "sum", "prod", "l2", "logsumexp", "var")),
          Attr("axes", ("spatial", "channels")),
          Attr("keepdims", (True, False))),
         "image", shapes.reduce_shape),
    Kind("math", "element-wise functions that converters decompose or special-case: "
         "exponentials, logarithms, roots, trigonometry, erf, softplus, log-sigmoid, mish, "
         "rounding and sign, on the input scaled first (large scales reach where a "
         "decomposition overflows; exp, sinh and cosh see it clipped to [-20, 20], the "
         "logarithm and the reciprocals |x| + 0.5)",
         (Attr("fn", MATH_FNS), Attr("scale", (1.0, 10.0, 0.1, 100.0))),
         "any", shapes.same_shape, draw_weight=3),
    Kind("compare", "a comparison (>, <, >=, <=, ==) with a scalar, the per-position mean or "
         "maximum over the channels, then a select (where x else x/2), a mask (x times the "
         "comparison) or the comparison cast to float",
         (Attr("op", ("greater", "less", "greater_equal", "less_equal", "equal")),
          Attr("against", ("scalar", "channel", "max")), Attr("then", ("where", "mask", "cast"))),
         "any", shapes.compare_shape, draw_weight=2),
    Kind("integer", "integer arithmetic: the scaled input cast to int32 or int64 (truncating), "
         "floor division or remainder by an integer or neither, cast back to float",
         (Attr("dtype", ("int32", "int64")), Attr("op", ("floordiv", "mod", "none")),
          Attr("divisor", (3, -2), when=("op", ("floordiv", "mod"))),
          Attr("scale", (10.0, 1.0, 100.0))),
         "any", shapes.same_shape),
    Kind("cumsum", "a cumulative sum along the channels, height or width, forward or reversed",
         (Attr("axis", ("channels", "height", "width")), Attr("reverse", (False, True))),
         "image", shapes.image_shape),
    Kind("dense", "dense layer (matmul): a vector's features, or an image's last axis",
         (Attr("units", (16, 8, 32)), Attr("bias", (True, False))),
         "any", shapes.dense_shape, shapes.dense_weights, shapes.dense_macs),
    Kind("dropout", "dropout, inactive at inference", (Attr("rate", (0.5, 0.2)),),
         "any", shapes.same_shape, macs=shapes.none),
]}
