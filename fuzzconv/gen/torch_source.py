"""A generated model as PyTorch source: the one implementation of every vocabulary kind in torch.

:func:`render_torch` turns an annotated spec (:meth:`fuzzconv.gen.spec.GenSpec.annotated`) into a
short Python module defining ``class Model(nn.Module)``. The ``torch`` worker builds a generated
model by executing that text (:func:`fuzzconv.zoo.torch_architectures.architecture`, for the
``gen`` architecture a torch artifact's manifest names with the annotated spec), and a bug bundle
ships the same text as its model script.

Submodules are registered in layer order and the classifier head last, where calibration looks
for it. Every value written into the text passes a type check first (:func:`_i`, :func:`_n`,
:func:`_of`): a manifest cannot smuggle code into it.
"""

from __future__ import annotations

from typing import Any

from .checked import as_int, as_number, one_of, pair

#: Scalar operands of the element-wise kinds, by operation (as in Keras).
TORCH_SCALARS = {"add": 0.5, "sub": 0.5, "mul": 1.5, "div": 2.0, "min": 0.5, "max": -0.5,
                 "floordiv": 0.7, "mod": 0.7}
TORCH_OPS = {"add": "torch.add", "sub": "torch.sub", "mul": "torch.mul", "div": "torch.div",
             "min": "torch.minimum", "max": "torch.maximum", "floordiv": "torch.floor_divide",
             "mod": "torch.remainder"}
#: The ``math`` kind's functions of ``{z}``, the scaled input (domains guarded as in Keras).
TORCH_MATH = {"abs": "torch.abs({z})", "neg": "torch.neg({z})", "square": "torch.square({z})",
              "exp": "torch.exp(torch.clamp({z}, -20.0, 20.0))",
              "log": "torch.log(torch.abs({z}) + 0.5)", "sqrt": "torch.sqrt(torch.abs({z}))",
              "rsqrt": "torch.rsqrt(torch.abs({z}) + 0.5)",
              "reciprocal": "torch.reciprocal(torch.abs({z}) + 0.5)", "sin": "torch.sin({z})",
              "cos": "torch.cos({z})", "atan": "torch.atan({z})",
              "sinh": "torch.sinh(torch.clamp({z}, -20.0, 20.0))",
              "cosh": "torch.cosh(torch.clamp({z}, -20.0, 20.0))", "asinh": "torch.asinh({z})",
              "erf": "torch.erf({z})", "softplus": "F.softplus({z})", "softsign": "F.softsign({z})",
              "logsigmoid": "F.logsigmoid({z})", "mish": "F.mish({z})", "sign": "torch.sign({z})",
              "floor": "torch.floor({z})", "ceil": "torch.ceil({z})", "round": "torch.round({z})",
              "trunc": "torch.trunc({z})"}
TORCH_COMPARE = {"greater": ">", "less": "<", "greater_equal": ">=", "less_equal": "<=",
                 "equal": "=="}
TORCH_REDUCE = {"mean": "torch.mean({x}, dim={d}, keepdim={k})",
                "max": "torch.amax({x}, dim={d}, keepdim={k})",
                "min": "torch.amin({x}, dim={d}, keepdim={k})",
                "sum": "torch.sum({x}, dim={d}, keepdim={k})",
                "prod": "torch.prod({x}, dim={d}, keepdim={k})",
                "l2": "torch.linalg.vector_norm({x}, 2, dim={d}, keepdim={k})",
                "logsumexp": "torch.logsumexp({x}, dim={d}, keepdim={k})",
                "var": "torch.var({x}, dim={d}, correction=0, keepdim={k})"}
TORCH_ACTIVATIONS = {"relu": "nn.ReLU()", "relu6": "nn.ReLU6()", "selu": "nn.SELU()",
                     "hard_sigmoid": "nn.Hardsigmoid()", "hard_swish": "nn.Hardswish()",
                     "silu": "nn.SiLU()", "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()"}
#: An image's axes in NCHW, by the vocabulary's names.
NCHW_AXIS = {"channels": 1, "height": 2, "width": 3}
PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate",
             "circular": "circular"}


# Each kind: (layer number, attributes, input variable, shapes) -> (__init__ lines, forward lines)
Lines = tuple[list[str], list[str]]


def _t_conv(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    cin, cout = as_int(s["in"][0]), as_int(s["out"][0])
    groups = cin if a["groups"] == "depthwise" else as_int(a["groups"])
    padding = one_of(a["padding"], ("valid", "same", "explicit"))
    fwd = []
    if padding == "explicit":
        t, b, lf, r = (as_int(v) for v in a["pads"])
        if (t, lf) == (b, r):
            padding = f"({t}, {lf})"
        else:
            fwd.append(f"t{i}p = F.pad({x}, ({lf}, {r}, {t}, {b}))")
            x, padding = f"t{i}p", "0"
    elif padding == "valid":
        padding = "0"
    else:
        padding = "'same'"
    init = [f"self.l{i} = nn.Conv2d({cin}, {cout}, {pair(a['kernel'])}, stride={as_int(a['stride'])}, "
            f"padding={padding}, dilation={as_int(a['dilation'])}, groups={groups}, "
            f"bias={bool(a['bias'])})"]
    return init, fwd + [f"t{i} = self.l{i}({x})"]


def _t_conv_transpose(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    p = 1 if one_of(a["padding"], ("valid", "1")) == "1" else 0
    return ([f"self.l{i} = nn.ConvTranspose2d({as_int(s['in'][0])}, {as_int(a['filters'])}, "
             f"{pair(a['kernel'])}, stride={as_int(a['stride'])}, padding={p}, "
             f"output_padding={as_int(a['output_padding'])}, dilation={as_int(a['dilation'])})"],
            [f"t{i} = self.l{i}({x})"])


def _t_pool(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    k, st = as_int(a["size"]), as_int(a["stride"])
    p = 1 if one_of(a["padding"], ("valid", "1")) == "1" else 0
    common = f"{k}, stride={st}, padding={p}, ceil_mode={bool(a['ceil_mode'])}"
    if one_of(a["op"], ("max", "avg")) == "max":
        layer = f"nn.MaxPool2d({common})"
    else:
        layer = f"nn.AvgPool2d({common}, count_include_pad={bool(a['count_include_pad'])})"
    return [f"self.l{i} = {layer}"], [f"t{i} = self.l{i}({x})"]


def _t_global_pool(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    fn = {"avg": "F.adaptive_avg_pool2d", "max": "F.adaptive_max_pool2d"}[one_of(a["op"],
                                                                            ("avg", "max"))]
    y = f"{fn}({x}, 1)"
    return [], [f"t{i} = {y}" if a["keepdims"] else f"t{i} = torch.flatten({y}, 1)"]


def _t_resize(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    mode = one_of(a["mode"], ("nearest", "bilinear", "bicubic"))
    if a["by"] == "scale":
        how = f"scale_factor={as_number(a['factor'])}"
    else:
        how = f"size=({as_int(s['out'][1])}, {as_int(s['out'][2])})"
    extra = "" if mode == "nearest" else (f", align_corners={bool(a['align_corners'])}, "
                                          f"antialias={bool(a['antialias'])}")
    return [], [f"t{i} = F.interpolate({x}, {how}, mode={mode!r}{extra})"]


def _t_norm(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    c, eps = as_int(s["in"][0]), as_number(a["epsilon"])
    kind = one_of(a["type"], ("batch", "layer", "group", "instance"))
    image = len(s["in"]) == 3
    fwd = [f"t{i} = self.l{i}({x})"]
    if kind == "batch":
        layer = f"nn.BatchNorm{2 if image else 1}d({c}, eps={eps})"
    elif kind == "layer" and image and a["over"] == "all":
        layer = f"nn.LayerNorm([{c}, {as_int(s['in'][1])}, {as_int(s['in'][2])}], eps={eps})"
    elif kind == "layer":
        layer = f"nn.LayerNorm({c}, eps={eps})"
        if image:  # over the channels of each position
            fwd = [f"t{i} = self.l{i}({x}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"]
    elif kind == "group":
        layer = f"nn.GroupNorm({as_int(a['groups'])}, {c}, eps={eps})"
    else:
        layer = f"nn.InstanceNorm2d({c}, eps={eps}, affine=True)"
    return [f"self.l{i} = {layer}"], fwd


def _t_act(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    fn = a["fn"]
    if fn in TORCH_ACTIVATIONS:
        layer = TORCH_ACTIVATIONS[fn]
    elif fn == "leaky_relu":
        layer = f"nn.LeakyReLU({as_number(a['alpha'])})"
    elif fn == "elu":
        layer = f"nn.ELU({as_number(a['alpha'])})"
    elif fn == "gelu":
        layer = f"nn.GELU(approximate={'tanh' if a['approximate'] else 'none'!r})"
    elif fn == "softmax":
        layer = "nn.Softmax(dim=1)"
    else:
        one_of(fn, ("clip",))
        lo, hi = (as_number(v) for v in a["bounds"])
        return [], [f"t{i} = torch.clamp({x}, {lo}, {hi})"]
    return [f"self.l{i} = {layer}"], [f"t{i} = self.l{i}({x})"]


def _t_binary(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    op = one_of(a["op"], TORCH_OPS)
    operand = one_of(a["operand"], ("skip", "channel", "spatial", "scalar"))
    fwd = []
    if operand == "scalar":  # a tensor: torch.minimum and torch.maximum take no numbers
        y = f"torch.tensor({TORCH_SCALARS[op]!r})"
    else:
        y = f"t{i}y"
        source = {"skip": f"t{as_int(a['other'])}", "channel": f"{x}.mean(dim=(2, 3), keepdim=True)",
                  "spatial": f"{x}.mean(dim=1, keepdim=True)"}[operand]
        if op in ("div", "floordiv", "mod"):  # a denominator that stays away from zero
            source = f"torch.abs({source}) + 1.0"
        fwd.append(f"{y} = {source}")
    return [], fwd + [f"t{i} = {TORCH_OPS[op]}({x}, {y})"]


def _t_concat(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    dim = NCHW_AXIS[one_of(a["axis"], ("channels", "width"))]
    return [], [f"t{i} = torch.cat([{x}, t{as_int(a['other'])}], dim={dim})"]


def _t_split(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    c, n = as_int(s["in"][0]), as_int(a["parts"])
    sizes = [c // n] * n if a["even"] else [1] * (n - 1) + [c - (n - 1)]
    fwd = [f"t{i}s = torch.split({x}, {sizes}, dim=1)"]
    if one_of(a["then"], ("swap", "first")) == "swap":
        return [], fwd + [f"t{i} = torch.cat(t{i}s[::-1], dim=1)"]
    return [], fwd + [f"t{i} = t{i}s[0]"]


def _t_pad(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    t, b, lf, r = (as_int(v) for v in a["pads"])
    mode = PAD_MODES[one_of(a["mode"], PAD_MODES)]
    value = f", value={as_number(a['value'])}" if mode == "constant" else ""
    return [], [f"t{i} = F.pad({x}, ({lf}, {r}, {t}, {b}), mode={mode!r}{value})"]


def _t_slice(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    axis = NCHW_AXIS[one_of(a["axis"], NCHW_AXIS)]
    stop = as_int(a["stop"])
    part = f"{as_int(a['start'])}:{stop if stop else ''}:{as_int(a['step'])}"
    return [], [f"t{i} = {x}[{', '.join([':'] * axis + [part])}]"]


def _t_reshape(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    c, h, w = (as_int(v) for v in s["out"])
    one_of(a["fold"], ("h_to_c", "c_to_w"))
    return [], [f"t{i} = {x}.reshape(-1, {c}, {h}, {w})"]


def _t_transpose(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    if one_of(a["perm"], ("hw", "cw")) == "hw":
        return [], [f"t{i} = {x}.transpose(2, 3)"]
    return [], [f"t{i} = {x}.permute(0, 3, 2, 1)"]


def _t_flatten(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    return [], [f"t{i} = torch.flatten({x}, 1)"]


def _t_reduce(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    dims = "(2, 3)" if one_of(a["axes"], ("spatial", "channels")) == "spatial" else "1"
    expr = TORCH_REDUCE[one_of(a["op"], TORCH_REDUCE)]
    return [], [f"t{i} = " + expr.format(x=x, d=dims, k=bool(a["keepdims"]))]


def _t_math(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    fn, scale = one_of(a["fn"], TORCH_MATH), as_number(a["scale"])
    fwd = []
    if scale != 1.0:
        fwd.append(f"t{i}z = {x} * {scale}")
        x = f"t{i}z"
    return [], fwd + [f"t{i} = " + TORCH_MATH[fn].format(z=x)]


def _t_compare(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    op = TORCH_COMPARE[one_of(a["op"], TORCH_COMPARE)]
    against = one_of(a["against"], ("scalar", "channel", "max"))
    y = {"scalar": "0.25", "channel": f"{x}.mean(dim=1, keepdim=True)",
         "max": f"{x}.amax(dim=1, keepdim=True)"}[against]
    fwd = [f"t{i}c = {x} {op} {y}"]
    then = one_of(a["then"], ("where", "mask", "cast"))
    if then == "where":
        return [], fwd + [f"t{i} = torch.where(t{i}c, {x}, {x} * 0.5)"]
    if then == "mask":
        return [], fwd + [f"t{i} = {x} * t{i}c.to({x}.dtype)"]
    return [], fwd + [f"t{i} = t{i}c.to({x}.dtype)"]


def _t_integer(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    dtype = one_of(a["dtype"], ("int32", "int64"))
    fwd = [f"t{i}q = ({x} * {as_number(a['scale'])}).to(torch.{dtype})"]
    op = one_of(a["op"], ("floordiv", "mod", "none"))
    if op != "none":
        fn = "torch.floor_divide" if op == "floordiv" else "torch.remainder"
        fwd.append(f"t{i}q = {fn}(t{i}q, {as_int(a['divisor'])})")
    return [], fwd + [f"t{i} = t{i}q.to({x}.dtype)"]


def _t_cumsum(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    dim = NCHW_AXIS[one_of(a["axis"], NCHW_AXIS)]
    if a["reverse"]:
        return [], [f"t{i} = torch.flip(torch.cumsum(torch.flip({x}, [{dim}]), {dim}), [{dim}])"]
    return [], [f"t{i} = torch.cumsum({x}, {dim})"]


def _t_dense(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    return ([f"self.l{i} = nn.Linear({as_int(s['in'][-1])}, {as_int(a['units'])}, "
             f"bias={bool(a['bias'])})"], [f"t{i} = self.l{i}({x})"])


def _t_dropout(i: int, a: dict[str, Any], x: str, s: dict[str, Any]) -> Lines:
    return [f"self.l{i} = nn.Dropout({as_number(a['rate'])})"], [f"t{i} = self.l{i}({x})"]


TORCH_LAYERS = {"conv": _t_conv, "conv_transpose": _t_conv_transpose, "pool": _t_pool,
                "global_pool": _t_global_pool, "resize": _t_resize, "norm": _t_norm,
                "act": _t_act, "binary": _t_binary, "concat": _t_concat, "split": _t_split,
                "pad": _t_pad, "slice": _t_slice, "reshape": _t_reshape,
                "transpose": _t_transpose, "flatten": _t_flatten, "reduce": _t_reduce,
                "dense": _t_dense, "dropout": _t_dropout, "math": _t_math,
                "compare": _t_compare, "integer": _t_integer, "cumsum": _t_cumsum}


def render_torch(spec: dict[str, Any]) -> str:
    """The PyTorch source of an annotated spec: a module defining ``Model`` (logits out)."""
    init: list[str] = []
    fwd: list[str] = []
    for i, layer in enumerate(spec["layers"], 1):
        a, b = TORCH_LAYERS[one_of(layer["kind"], TORCH_LAYERS)](i, layer["attrs"], f"t{i - 1}",
                                                              layer)
        init += a
        fwd += b
    last = f"t{len(spec['layers'])}"
    if spec["head"]["pool"]:
        fwd.append(f"x = torch.flatten(F.adaptive_avg_pool2d({last}, 1), 1)")
        last = "x"
    init.append(f"self.head = nn.Linear({as_int(spec['head']['features'])}, "
                f"{as_int(spec['classes'])})")
    fwd.append(f"return self.head({last})")
    return ("import torch\nfrom torch import nn\nimport torch.nn.functional as F\n\n\n"
            "class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            + "".join(f"        {line}\n" for line in init)
            + "\n    def forward(self, t0):\n"
            + "".join(f"        {line}\n" for line in fwd))
