"""The shapes generated layers make, and what they weigh and cost: the vocabulary's rules.

Shapes are framework-neutral: ``(C, H, W)`` for an image, ``(F,)`` for a vector. A shape rule
takes (attributes, input shape, the other tensor's shape or None, framework) and returns the
output shape, or raises :class:`Invalid`; it knows the few places where Keras and PyTorch differ
(which padding values each takes, how each sizes a transposed convolution, which axis a dense
layer mixes). The counts take (attributes, input, output) and return weights or
multiply-accumulates per image.
"""

from __future__ import annotations

import math
from typing import Any

Shape = tuple[int, ...]
#: Bounds every tensor of a generated model stays within (drawn models stay small and fast).
MAX_SIDE = 128
MAX_CHANNELS = 64
MAX_FEATURES = 8192


class Invalid(ValueError):
    """A layer cannot take its input, or its attributes contradict each other."""


def none(attrs: dict[str, Any], x: Shape, out: Shape) -> int:
    return 0


def elements(attrs: dict[str, Any], x: Shape, out: Shape) -> int:
    return math.prod(out)


# -- shape rules --------------------------------------------------------------------------------
def image(x: Shape) -> tuple[int, int, int]:
    if len(x) != 3:
        raise Invalid("needs an image")
    return x  # type: ignore[return-value]


def side(n: int) -> int:
    if n < 1:
        raise Invalid("an output side would be empty")
    if n > MAX_SIDE:
        raise Invalid(f"an output side would exceed {MAX_SIDE}")
    return n


def channels(n: int) -> int:
    if not 1 <= n <= MAX_CHANNELS:
        raise Invalid(f"channels must stay within 1..{MAX_CHANNELS}")
    return n


def kernel_hw(k: Any) -> tuple[int, int]:
    return (int(k[0]), int(k[1])) if isinstance(k, (list, tuple)) else (int(k), int(k))


def conv_groups(attrs: dict[str, Any], c: int) -> tuple[int, int]:
    """(groups, output channels) of a convolution on ``c`` channels."""
    if attrs["groups"] == "depthwise":
        return c, c * max(1, min(2, attrs["filters"] // c))
    return int(attrs["groups"]), int(attrs["filters"])


def conv_out(n: int, k: int, s: int, d: int, padding: str, before: int, after: int) -> int:
    ke = d * (k - 1) + 1
    if padding == "same":
        return -(-n // s)
    if padding == "explicit":
        n = n + before + after
    return (n - ke) // s + 1 if n >= ke else 0


def conv_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    g, f = conv_groups(a, c)
    if c % g or f % g:
        raise Invalid(f"{g} groups do not divide {c} → {f} channels")
    s, d = int(a["stride"]), int(a["dilation"])
    if s > 1 and d > 1 and (fw == "keras" or a["padding"] == "same"):
        raise Invalid("stride and dilation both above 1")
    if fw == "torch" and a["padding"] == "same" and s > 1:
        raise Invalid("torch takes same padding at stride 1 only")
    kh, kw = kernel_hw(a["kernel"])
    t, b, lf, r = a["pads"] if a["padding"] == "explicit" else (0, 0, 0, 0)
    return (channels(f), side(conv_out(h, kh, s, d, a["padding"], t, b)),
            side(conv_out(w, kw, s, d, a["padding"], lf, r)))


def conv_weights(a: dict[str, Any], x: Shape, out: Shape) -> int:
    g, f = conv_groups(a, x[0])
    kh, kw = kernel_hw(a["kernel"])
    return f * (x[0] // g) * kh * kw + (f if a["bias"] else 0)


def conv_macs(a: dict[str, Any], x: Shape, out: Shape) -> int:
    g, _ = conv_groups(a, x[0])
    kh, kw = kernel_hw(a["kernel"])
    return math.prod(out) * (x[0] // g) * kh * kw


def transpose_out(n: int, k: int, s: int, d: int, padding: str, output_padding: int,
                  fw: str) -> int:
    """The output side of a transposed convolution, as each framework computes it."""
    ke = d * (k - 1) + 1
    if fw == "torch":
        p = 1 if padding == "1" else 0
        return (n - 1) * s - 2 * p + ke + output_padding
    if not output_padding:  # Keras without output_padding
        return n * s if padding == "same" else n * s + max(ke - s, 0)
    p = ke // 2 if padding == "same" else 0
    return (n - 1) * s + ke - 2 * p + output_padding


def transpose_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    s, d, op = int(a["stride"]), int(a["dilation"]), int(a["output_padding"])
    if op >= (s if fw == "keras" else max(s, d)):
        raise Invalid("output_padding must be below the stride (or, in PyTorch, the dilation)")
    if fw == "keras" and s > 1 and d > 1:
        raise Invalid("Keras takes a dilated transposed convolution at stride 1 only")
    kh, kw = kernel_hw(a["kernel"])
    return (channels(int(a["filters"])),
            side(transpose_out(h, kh, s, d, a["padding"], op, fw)),
            side(transpose_out(w, kw, s, d, a["padding"], op, fw)))


def transpose_weights(a: dict[str, Any], x: Shape, out: Shape) -> int:
    kh, kw = kernel_hw(a["kernel"])
    return int(a["filters"]) * x[0] * kh * kw + int(a["filters"])


def transpose_macs(a: dict[str, Any], x: Shape, out: Shape) -> int:
    kh, kw = kernel_hw(a["kernel"])
    return math.prod(x) * int(a["filters"]) * kh * kw


def pool_out(n: int, k: int, s: int, padding: str, ceil_mode: bool) -> int:
    """The output side of a pooling window, as Keras (valid/same) or PyTorch (padding 0/1,
    ceil_mode) computes it."""
    if padding == "same":
        return -(-n // s)
    p = 1 if padding == "1" else 0
    span = n + 2 * p - k
    if span < 0:
        return 0
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside the input
        out -= 1
    return out


def pool_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    k, s = int(a["size"]), int(a["stride"])
    if a["padding"] == "1" and k < 2:
        raise Invalid("padding 1 needs a window of 2 or more")
    return (c, side(pool_out(h, k, s, a["padding"], a["ceil_mode"])),
            side(pool_out(w, k, s, a["padding"], a["ceil_mode"])))


def pool_macs(a: dict[str, Any], x: Shape, out: Shape) -> int:
    return math.prod(out) * int(a["size"]) ** 2


def global_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, _, _ = image(x)
    return (c, 1, 1) if a["keepdims"] else (c,)


def resize_out(h: int, w: int, a: dict[str, Any]) -> tuple[int, int]:
    f = float(a["factor"])
    oh, ow = math.floor(h * f), math.floor(w * f)
    return (oh, ow + 1) if a["by"] == "size" else (oh, ow)


def resize_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    oh, ow = resize_out(h, w, a)
    return (c, side(oh), side(ow))


def resize_macs(a: dict[str, Any], x: Shape, out: Shape) -> int:
    taps = {"nearest": 1, "bilinear": 4, "bicubic": 16}[a["mode"]]
    return math.prod(out) * taps


def norm_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c = x[0]
    if len(x) == 1 and a["type"] in ("instance",):
        raise Invalid("instance norm needs an image")
    if a["type"] == "group" and c % int(a["groups"]):
        raise Invalid(f"{a['groups']} groups do not divide {c} channels")
    if a["type"] in ("group", "instance") and len(x) == 3 and x[1] * x[2] < 2:
        raise Invalid("per-sample statistics need more than one position")
    if a["type"] == "layer" and (math.prod(x) if a["over"] == "all" else c) < 2:
        raise Invalid("a layer norm over one value normalises nothing")
    return x


def norm_weights(a: dict[str, Any], x: Shape, out: Shape) -> int:
    return 2 * (math.prod(x) if a["type"] == "layer" and a["over"] == "all" else x[0])


def same_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    return x


def binary_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    operand = a["operand"]
    if operand in ("channel", "spatial"):
        image(x)
    if operand == "skip" and y != x:
        raise Invalid(f"the other tensor has shape {y}, not {x}")
    return x


def concat_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    if y is None or len(y) != 3:
        raise Invalid("the other tensor must be an image")
    if a["axis"] == "channels":
        if y[1:] != (h, w):
            raise Invalid(f"cannot concatenate {y} to {x} along channels")
        return (channels(c + y[0]), h, w)
    if (y[0], y[1]) != (c, h):
        raise Invalid(f"cannot concatenate {y} to {x} along width")
    return (c, h, side(w + y[2]))


def split_sizes(c: int, a: dict[str, Any]) -> list[int]:
    n = int(a["parts"])
    if a["even"]:
        if c % n:
            raise Invalid(f"{c} channels do not split into {n} equal parts")
        return [c // n] * n
    if c < n + 1:
        raise Invalid(f"{c} channels are too few for {n} uneven parts")
    return [1] * (n - 1) + [c - (n - 1)]


def split_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    sizes = split_sizes(c, a)
    return (c, h, w) if a["then"] == "swap" else (sizes[0], h, w)


def pad_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    t, b, lf, r = (int(v) for v in a["pads"])
    if a["mode"] == "reflect" and (max(t, b) >= h or max(lf, r) >= w):
        raise Invalid("reflect padding must be smaller than the side")
    if a["mode"] in ("symmetric", "circular") and (max(t, b) > h or max(lf, r) > w):
        raise Invalid(f"{a['mode']} padding must not exceed the side")
    return (c, side(h + t + b), side(w + lf + r))


AXES = {"channels": 0, "height": 1, "width": 2}


def slice_len(n: int, a: dict[str, Any]) -> int:
    stop = n + int(a["stop"]) if int(a["stop"]) < 0 else n
    return len(range(int(a["start"]), stop, int(a["step"])))


def slice_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    dims = list(image(x))
    i = AXES[a["axis"]]
    dims[i] = slice_len(dims[i], a)
    if dims[i] < 1:
        raise Invalid("the slice would be empty")
    return tuple(dims)


def reshape_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    if a["fold"] == "h_to_c":
        if h % 2:
            raise Invalid("folding height into channels needs an even height")
        return (channels(2 * c), h // 2, w)
    if c % 2:
        raise Invalid("folding channels into width needs even channels")
    return (c // 2, h, side(2 * w))


def transpose_perm_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    if a["perm"] == "hw":
        return (c, w, h)
    return (channels(w), h, side(c))


def flatten_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    n = math.prod(image(x))
    if n > MAX_FEATURES:
        raise Invalid(f"{n} features exceed {MAX_FEATURES}")
    return (n,)


def reduce_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    c, h, w = image(x)
    over = c if a["axes"] == "channels" else h * w
    if a["op"] == "prod" and over > 16:
        raise Invalid(f"a product of {over} values under- or overflows")
    if a["op"] == "var" and over < 2:
        raise Invalid("a variance of one value is zero")
    if a["axes"] == "channels":
        if not a["keepdims"]:
            raise Invalid("a reduction over channels keeps its axis")
        return (1, h, w)
    return (c, 1, 1) if a["keepdims"] else (c,)


def compare_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    if a["against"] in ("channel", "max"):
        image(x)
    return x


def image_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    return image(x)


def dense_axis(x: Shape, fw: str) -> int:
    """The axis a dense layer mixes: a vector's features; an image's last axis in its layout."""
    if len(x) == 1:
        return 0
    return 0 if fw == "keras" else 2


def dense_shape(a: dict[str, Any], x: Shape, y: Shape | None, fw: str) -> Shape:
    dims = list(x)
    i = dense_axis(x, fw)
    dims[i] = int(a["units"])
    if len(x) == 3 and i == 0:
        channels(dims[0])
    return tuple(dims)


def dense_weights(a: dict[str, Any], x: Shape, out: Shape) -> int:
    # the axis is the one whose size changed (or either, when units equals it)
    n_in = next((xi for xi, oi in zip(x, out) if xi != oi), x[-1] if len(x) == 1 else x[0])
    return n_in * int(a["units"]) + (int(a["units"]) if a["bias"] else 0)


def dense_macs(a: dict[str, Any], x: Shape, out: Shape) -> int:
    n_in = next((xi for xi, oi in zip(x, out) if xi != oi), x[0])
    return math.prod(out) * n_in


