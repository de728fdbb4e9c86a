"""A generated model as Keras source: the one implementation of every vocabulary kind in Keras.

:func:`render` turns an annotated spec (:meth:`fuzzconv.gen.spec.GenSpec.annotated`) into a short
Python module defining ``build()``, which returns the model as a functional ``keras.Model``. The
``tf`` worker builds a generated model by executing that text, and a bug bundle ships the same
text as its model script, so the model a bug report shows is the one that was converted.

Only standard layers and ``keras.ops`` calls are used (no ``Lambda``), so the saved model loads
with ``safe_mode=True``. Every value written into the text passes a type check first
(:func:`_int`, :func:`_num`, :func:`_one_of`): a spec cannot smuggle code into it.
"""

from __future__ import annotations

from typing import Any

from .checked import as_int, as_number, one_of, pair

#: Scalar operands of the element-wise kinds, by operation.
SCALARS = {"add": 0.5, "sub": 0.5, "mul": 1.5, "div": 2.0, "min": 0.5, "max": -0.5,
           "floordiv": 0.7, "mod": 0.7}
OPS = {"add": "ops.add", "sub": "ops.subtract", "mul": "ops.multiply", "div": "ops.divide",
       "min": "ops.minimum", "max": "ops.maximum", "floordiv": "ops.floor_divide",
       "mod": "ops.mod"}
#: The ``math`` kind's functions of ``{z}``, the scaled input.
MATH = {"abs": "ops.abs({z})", "neg": "ops.negative({z})", "square": "ops.square({z})",
        "exp": "ops.exp(ops.clip({z}, -20.0, 20.0))",
        "log": "ops.log(ops.add(ops.abs({z}), 0.5))", "sqrt": "ops.sqrt(ops.abs({z}))",
        "rsqrt": "ops.rsqrt(ops.add(ops.abs({z}), 0.5))",
        "reciprocal": "ops.reciprocal(ops.add(ops.abs({z}), 0.5))", "sin": "ops.sin({z})",
        "cos": "ops.cos({z})", "atan": "ops.arctan({z})",
        "sinh": "ops.sinh(ops.clip({z}, -20.0, 20.0))",
        "cosh": "ops.cosh(ops.clip({z}, -20.0, 20.0))", "asinh": "ops.arcsinh({z})",
        "erf": "ops.erf({z})", "softplus": "ops.softplus({z})", "softsign": "ops.softsign({z})",
        "logsigmoid": "ops.log_sigmoid({z})", "mish": "ops.multiply({z}, ops.tanh(ops.softplus({z})))",
        "sign": "ops.sign({z})", "floor": "ops.floor({z})", "ceil": "ops.ceil({z})",
        "round": "ops.round({z})", "trunc": "ops.trunc({z})"}
COMPARE = {"greater": "ops.greater", "less": "ops.less", "greater_equal": "ops.greater_equal",
           "less_equal": "ops.less_equal", "equal": "ops.equal"}
REDUCE = {"mean": "ops.mean({x}, axis={d}, keepdims={k})",
          "max": "ops.max({x}, axis={d}, keepdims={k})",
          "min": "ops.min({x}, axis={d}, keepdims={k})",
          "sum": "ops.sum({x}, axis={d}, keepdims={k})",
          "prod": "ops.prod({x}, axis={d}, keepdims={k})",
          "l2": "ops.sqrt(ops.sum(ops.square({x}), axis={d}, keepdims={k}))",
          "logsumexp": "ops.logsumexp({x}, axis={d}, keepdims={k})",
          "var": "ops.var({x}, axis={d}, keepdims={k})"}
#: Activation layers without attributes: (layer class, its leading arguments).
ACTIVATIONS = {"relu": ("ReLU", ""), "relu6": ("ReLU", "6.0, "),
               "selu": ("Activation", "'selu', "), "hard_sigmoid": ("Activation", "'hard_sigmoid', "),
               "hard_swish": ("Activation", "'hard_swish', "), "silu": ("Activation", "'silu', "),
               "sigmoid": ("Activation", "'sigmoid', "), "tanh": ("Activation", "'tanh', "),
               "softmax": ("Softmax", "axis=-1, ")}
#: An image's axes in NHWC, by the vocabulary's names.
NHWC_AXIS = {"channels": 3, "height": 1, "width": 2}


def _conv(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    lines = []
    padding = one_of(a["padding"], ("valid", "same", "explicit"))
    if padding == "explicit":
        t, b, lf, r = (as_int(v) for v in a["pads"])
        lines.append(f"{x}p = layers.ZeroPadding2D((({t}, {b}), ({lf}, {r})), "
                     f"name='l{i}_pad')({x})")
        x, padding = f"{x}p", "valid"
    common = (f"strides={as_int(a['stride'])}, padding={padding!r}, "
              f"dilation_rate={as_int(a['dilation'])}, use_bias={bool(a['bias'])}")
    cin, cout = as_int(shape["in"][0]), as_int(shape["out"][0])
    if a["groups"] == "depthwise":
        lines.append(f"t{i} = layers.DepthwiseConv2D({pair(a['kernel'])}, "
                     f"depth_multiplier={cout // cin}, {common}, name='l{i}_conv')({x})")
    else:
        lines.append(f"t{i} = layers.Conv2D({cout}, {pair(a['kernel'])}, "
                     f"groups={as_int(a['groups'])}, {common}, name='l{i}_conv')({x})")
    return lines


def _conv_transpose(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    op = as_int(a["output_padding"])
    return [f"t{i} = layers.Conv2DTranspose({as_int(a['filters'])}, {pair(a['kernel'])}, "
            f"strides={as_int(a['stride'])}, padding={one_of(a['padding'], ('valid', 'same'))!r}, "
            f"output_padding={op or None}, dilation_rate={as_int(a['dilation'])}, "
            f"name='l{i}_conv_transpose')({x})"]


def _pool(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    cls = {"max": "MaxPooling2D", "avg": "AveragePooling2D"}[one_of(a["op"], ("max", "avg"))]
    k = as_int(a["size"])
    return [f"t{i} = layers.{cls}(({k}, {k}), strides={as_int(a['stride'])}, "
            f"padding={one_of(a['padding'], ('valid', 'same'))!r}, name='l{i}_pool')({x})"]


def _global_pool(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    cls = {"avg": "GlobalAveragePooling2D", "max": "GlobalMaxPooling2D"}[a["op"]]
    return [f"t{i} = layers.{cls}(keepdims={bool(a['keepdims'])}, name='l{i}_global_pool')({x})"]


def _resize(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    mode = one_of(a["mode"], ("nearest", "bilinear", "bicubic"))
    f = as_number(a["factor"])
    if a["by"] == "scale" and f >= 1 and f == int(f) and not a["antialias"]:
        return [f"t{i} = layers.UpSampling2D(({int(f)}, {int(f)}), interpolation={mode!r}, "
                f"name='l{i}_resize')({x})"]
    oh, ow = as_int(shape["out"][1]), as_int(shape["out"][2])
    return [f"t{i} = layers.Resizing({oh}, {ow}, interpolation={mode!r}, "
            f"antialias={bool(a['antialias'])}, name='l{i}_resize')({x})"]


def _norm(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    eps = as_number(a["epsilon"])
    kind = one_of(a["type"], ("batch", "layer", "group", "instance"))
    if kind == "batch":
        layer = f"layers.BatchNormalization(epsilon={eps}"
    elif kind == "layer":
        axis = "[1, 2, 3]" if a["over"] == "all" and len(shape["in"]) == 3 else "-1"
        layer = f"layers.LayerNormalization(axis={axis}, epsilon={eps}"
    else:
        groups = as_int(a["groups"]) if kind == "group" else -1
        layer = f"layers.GroupNormalization(groups={groups}, epsilon={eps}"
    return [f"t{i} = {layer}, name='l{i}_norm')({x})"]


def _act(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    fn = a["fn"]
    if fn in ACTIVATIONS:
        cls, args = ACTIVATIONS[fn]
        return [f"t{i} = layers.{cls}({args}name='l{i}_act')({x})"]
    if fn == "leaky_relu":
        return [f"t{i} = layers.LeakyReLU(negative_slope={as_number(a['alpha'])}, "
                f"name='l{i}_act')({x})"]
    if fn == "elu":
        return [f"t{i} = layers.ELU(alpha={as_number(a['alpha'])}, name='l{i}_act')({x})"]
    if fn == "gelu":
        return [f"t{i} = ops.gelu({x}, approximate={bool(a['approximate'])})"]
    one_of(fn, ("clip",))
    lo, hi = (as_number(v) for v in a["bounds"])
    return [f"t{i} = ops.clip({x}, {lo}, {hi})"]


def _binary(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    op = one_of(a["op"], OPS)
    operand = one_of(a["operand"], ("skip", "channel", "spatial", "scalar"))
    lines = []
    if operand == "scalar":
        y = repr(SCALARS[op])
    else:
        y = f"t{i}y"
        source = {"skip": f"t{as_int(a['other'])}",
                  "channel": f"ops.mean({x}, axis=[1, 2], keepdims=True)",
                  "spatial": f"ops.mean({x}, axis=-1, keepdims=True)"}[operand]
        if op in ("div", "floordiv", "mod"):  # a denominator that stays away from zero
            source = f"ops.add(ops.abs({source}), 1.0)"
        lines.append(f"{y} = {source}")
    return lines + [f"t{i} = {OPS[op]}({x}, {y})"]


def _concat(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    axis = NHWC_AXIS[one_of(a["axis"], ("channels", "width"))]
    return [f"t{i} = layers.Concatenate(axis={axis}, name='l{i}_concat')"
            f"([{x}, t{as_int(a['other'])}])"]


def _split_points(shape: dict[str, Any], a: dict[str, Any]) -> str:
    n = as_int(a["parts"])
    if a["even"]:
        return str(n)
    return "[" + ", ".join(str(k) for k in range(1, n)) + "]"  # sizes 1, ..., 1, the rest


def _split(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    lines = [f"t{i}s = ops.split({x}, {_split_points(shape, a)}, axis=-1)"]
    if one_of(a["then"], ("swap", "first")) == "swap":
        return lines + [f"t{i} = ops.concatenate(t{i}s[::-1], axis=-1)"]
    return lines + [f"t{i} = t{i}s[0]"]


def _pad(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    t, b, lf, r = (as_int(v) for v in a["pads"])
    mode = one_of(a["mode"], ("constant", "reflect", "symmetric"))
    value = f", constant_values={as_number(a['value'])}" if mode == "constant" else ""
    return [f"t{i} = ops.pad({x}, [[0, 0], [{t}, {b}], [{lf}, {r}], [0, 0]], "
            f"mode={mode!r}{value})"]


def _slice(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    axis = NHWC_AXIS[one_of(a["axis"], NHWC_AXIS)]
    stop = as_int(a["stop"])
    part = f"{as_int(a['start'])}:{stop if stop else ''}:{as_int(a['step'])}"
    index = ", ".join([":"] * axis + [part])
    return [f"t{i} = {x}[{index}]"]


def _reshape(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    c, h, w = (as_int(v) for v in shape["out"])
    one_of(a["fold"], ("h_to_c", "c_to_w"))
    return [f"t{i} = layers.Reshape(({h}, {w}, {c}), name='l{i}_reshape')({x})"]


def _transpose(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    dims = {"hw": "(2, 1, 3)", "cw": "(1, 3, 2)"}[one_of(a["perm"], ("hw", "cw"))]
    return [f"t{i} = layers.Permute({dims}, name='l{i}_transpose')({x})"]


def _flatten(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    return [f"t{i} = layers.Flatten(name='l{i}_flatten')({x})"]


def _reduce(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    axis = "[1, 2]" if one_of(a["axes"], ("spatial", "channels")) == "spatial" else "-1"
    expr = REDUCE[one_of(a["op"], REDUCE)]
    return [f"t{i} = " + expr.format(x=x, d=axis, k=bool(a["keepdims"]))]


def _math(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    fn, scale = one_of(a["fn"], MATH), as_number(a["scale"])
    lines = []
    if scale != 1.0:
        lines.append(f"t{i}z = ops.multiply({x}, {scale})")
        x = f"t{i}z"
    return lines + [f"t{i} = " + MATH[fn].format(z=x)]


def _compare(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    fn = COMPARE[one_of(a["op"], COMPARE)]
    against = one_of(a["against"], ("scalar", "channel", "max"))
    y = {"scalar": "0.25", "channel": f"ops.mean({x}, axis=-1, keepdims=True)",
         "max": f"ops.max({x}, axis=-1, keepdims=True)"}[against]
    lines = [f"t{i}c = {fn}({x}, {y})"]
    then = one_of(a["then"], ("where", "mask", "cast"))
    if then == "where":
        return lines + [f"t{i} = ops.where(t{i}c, {x}, ops.multiply({x}, 0.5))"]
    if then == "mask":
        return lines + [f"t{i} = ops.multiply({x}, ops.cast(t{i}c, 'float32'))"]
    return lines + [f"t{i} = ops.cast(t{i}c, 'float32')"]


def _integer(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    dtype = one_of(a["dtype"], ("int32", "int64"))
    lines = [f"t{i}q = ops.cast(ops.multiply({x}, {as_number(a['scale'])}), {dtype!r})"]
    op = one_of(a["op"], ("floordiv", "mod", "none"))
    if op != "none":
        fn = "ops.floor_divide" if op == "floordiv" else "ops.mod"
        lines.append(f"t{i}q = {fn}(t{i}q, {as_int(a['divisor'])})")
    return lines + [f"t{i} = ops.cast(t{i}q, 'float32')"]


def _cumsum(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    axis = NHWC_AXIS[one_of(a["axis"], NHWC_AXIS)]
    if a["reverse"]:
        return [f"t{i} = ops.flip(ops.cumsum(ops.flip({x}, {axis}), {axis}), {axis})"]
    return [f"t{i} = ops.cumsum({x}, {axis})"]


def _dense(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    return [f"t{i} = layers.Dense({as_int(a['units'])}, use_bias={bool(a['bias'])}, "
            f"name='l{i}_dense')({x})"]


def _dropout(i: int, a: dict[str, Any], x: str, shape: dict[str, Any]) -> list[str]:
    return [f"t{i} = layers.Dropout({as_number(a['rate'])}, name='l{i}_dropout')({x})"]


#: Each vocabulary kind in Keras: (layer number, attributes, input variable, shapes) → lines.
KERAS_LAYERS = {"conv": _conv, "conv_transpose": _conv_transpose, "pool": _pool,
                "global_pool": _global_pool, "resize": _resize, "norm": _norm, "act": _act,
                "binary": _binary, "concat": _concat, "split": _split, "pad": _pad,
                "slice": _slice, "reshape": _reshape, "transpose": _transpose,
                "flatten": _flatten, "reduce": _reduce, "dense": _dense, "dropout": _dropout,
                "math": _math, "compare": _compare, "integer": _integer, "cumsum": _cumsum}


def render_keras(spec: dict[str, Any], name: str = "generated") -> str:
    """The Keras source of an annotated spec: a module whose ``build()`` returns the model
    (logits, no softmax)."""
    size = as_int(spec["size"])
    body = [f"t0 = keras.Input(({size}, {size}, 3), name='input')"]
    for i, layer in enumerate(spec["layers"], 1):
        fn = KERAS_LAYERS[one_of(layer["kind"], KERAS_LAYERS)]
        body += fn(i, layer["attrs"], f"t{i - 1}", layer)
    last = f"t{len(spec['layers'])}"
    if spec["head"]["pool"]:
        body.append(f"x = layers.GlobalAveragePooling2D(name='head_pool')({last})")
        last = "x"
    body.append(f"logits = layers.Dense({as_int(spec['classes'])}, name='head')({last})")
    body.append(f"return keras.Model(t0, logits, name={name.replace(':', '_')!r})")
    return ("import keras\nfrom keras import layers, ops\n\n\ndef build():\n"
            + "".join(f"    {line}\n" for line in body))
