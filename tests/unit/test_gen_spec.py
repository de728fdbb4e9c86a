"""Generated models as data (no frameworks): drawing, JSON round trips, names, validation,
shapes, carriers, and the source each framework would execute."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzconv.errors import UsageError
from fuzzconv.gen import catalog
from fuzzconv.gen.carriers import carries, limits_of
from fuzzconv.gen.draw import draw_spec, mutate, seeded
from fuzzconv.gen.keras_source import render_keras
from fuzzconv.gen.spec import GenSpec, Layer, SpecError
from fuzzconv.gen.torch_source import render_torch
from fuzzconv.gen.vocabulary import KINDS
from fuzzconv.registry import default_registry
from fuzzconv.strategies import Space, models
from fuzzconv.zoo import get_model

FRAMEWORKS = st.sampled_from(["keras", "torch"])
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spec_of(framework: str, *layers: tuple[str, dict], size: int = 32) -> GenSpec:
    spec = GenSpec(framework, size, ())
    for kind, attrs in layers:
        spec = spec.insert(len(spec.layers), Layer.make(kind, attrs, len(spec.layers), framework))
    return spec


@FAST
@given(FRAMEWORKS.flatmap(models))
def test_a_spec_round_trips_through_json_and_keeps_its_name(spec):
    again = GenSpec.from_dict(spec.to_dict(), spec.name)
    assert again == spec and again.name == spec.name
    assert again.canonical_json() == spec.canonical_json()
    assert spec.name.startswith(f"gen:{spec.framework}:")


@FAST
@given(FRAMEWORKS.flatmap(models))
def test_every_drawn_spec_is_valid_small_and_renders_as_python(spec):
    shapes = spec.shapes()  # raises on a layer that cannot take its input
    assert 1 <= len(spec.layers) and 16 <= spec.size <= 64
    assert all(len(z) in (1, 3) for _x, _y, z in shapes)
    source = (render_keras(spec.annotated(), spec.name) if spec.framework == "keras"
              else render_torch(spec.annotated()))
    compile(source, spec.name, "exec")  # the text the workers execute is Python


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_the_same_seed_gives_the_same_specs(framework):
    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        specs = [draw_spec(framework, seeded(rng)) for _ in range(20)]
        return [s.name for s in specs] + [(mutate(s, seeded(rng)) or s).name for s in specs]

    assert run(3) == run(3)
    assert run(3) != run(4)


@FAST
@given(FRAMEWORKS.flatmap(models), st.randoms(use_true_random=False))
def test_mutants_and_dropped_layers_stay_valid(spec, rng):
    new = mutate(spec, seeded(rng))
    if new is not None:
        assert GenSpec.from_dict(new.to_dict(), new.name) == new
    for j in range(len(spec.layers)):
        try:
            dropped = spec.drop(j)
        except SpecError:
            continue
        assert len(dropped.layers) == len(spec.layers) - 1
        GenSpec.from_dict(dropped.to_dict(), dropped.name)


def test_dropping_a_layer_redirects_what_read_it():
    spec = spec_of("keras", ("conv", {"padding": "same"}), ("act", {}),
                   ("binary", {"operand": "skip", "other": 1}))
    dropped = spec.drop(0)  # the conv: the add now reads the model's input
    assert dropped.layers[1].attrs["other"] == 0
    assert dropped.drop(0).layers[0].attrs["other"] == 0


@pytest.mark.parametrize("edit, words", [
    ({"kind": "frobnicate"}, "layer 2 (frobnicate): not in this version's vocabulary"),
    ({"attrs": {"filters": 3}}, "layer 2 (conv): filters=3 is not a keras value"),
    ({"attrs": {"colour": "red"}}, "layer 2 (conv): unknown attribute 'colour'"),
    ({"attrs": {"stride": 2, "dilation": 2}}, "layer 2 (conv): stride and dilation"),
])
def test_a_spec_the_vocabulary_cannot_build_names_the_layer(edit, words):
    spec = spec_of("keras", ("act", {}), ("conv", {}))
    d = spec.to_dict()
    d["layers"][1] = {**d["layers"][1], **edit}
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")) as exc:
        GenSpec.from_dict(d, spec.name)
    assert str(exc.value).startswith(spec.name) and "\n" not in str(exc.value)


def test_an_edited_spec_is_not_the_model_its_name_says():
    spec = spec_of("keras", ("conv", {}))
    d = spec.to_dict()
    d["layers"][0]["attrs"]["filters"] = 8
    with pytest.raises(SpecError, match="edited"):
        GenSpec.from_dict(d, spec.name)
    with pytest.raises(SpecError, match="version 2"):
        GenSpec.from_dict({**spec.to_dict(), "version": 2}, spec.name)


def test_generated_names_resolve_through_the_zoo_with_their_size():
    spec = spec_of("torch", ("conv", {"filters": 16}), ("pool", {}), size=48)
    catalog.remember(spec)
    m = get_model(spec.name)
    assert (m.source, m.family, m.layout, m.input_shape) == ("torch", "torch", "NCHW", (3, 48, 48))
    assert m.generated == spec.to_dict() and 0 < m.params_m < 0.01 and 0 < m.gmacs < 0.01
    with pytest.raises(UsageError, match="gen:keras:<id>"):
        get_model("gen:nosuch")
    with pytest.raises(UsageError, match="no store"):
        get_model("gen:keras:0123456789")


def test_a_path_that_cannot_carry_a_layer_is_left_out_of_the_space():
    spec = spec_of("keras", ("resize", {"mode": "bicubic"}))
    catalog.remember(spec)
    reg = default_registry()
    space = Space(reg, spec.name)
    steps = {s.name for b in space.bases() for s in b.steps}
    assert "keras.tflite" not in steps and "keras.tf2onnx" in steps
    assert "keras.tflite" in carries(spec, ["keras.tflite"])
    assert [lim.kind for _, lim in limits_of(spec)] == ["resize", "resize"]
    # a setting only: the keras runtime under XLA cannot run it, eager can
    from fuzzconv.pipeline import Step
    assert carries(spec, [Step.make("keras", {"jit_compile": True})]) is not None
    assert carries(spec, [Step.make("keras", {"jit_compile": False})]) is None


def test_a_trigger_is_held_by_models_with_those_layers():
    small = spec_of("keras", ("resize", {"mode": "bicubic"}))
    big = spec_of("keras", ("conv", {}), ("resize", {"mode": "bicubic", "factor": 3}), ("act", {}))
    other = spec_of("keras", ("conv", {}), ("resize", {}))
    assert big.holds(small.trigger()) and not other.holds(small.trigger())
    assert spec_of("keras").holds(spec_of("keras").trigger())  # the head alone: any model


def test_the_vocabulary_covers_what_the_issue_asks_for():
    values = {(k, a.name): set(map(str, a.choices)) for k, kind in KINDS.items()
              for a in kind.attrs}
    assert {"nearest", "bilinear", "bicubic"} <= values[("resize", "mode")]
    assert {"relu", "relu6", "leaky_relu", "elu", "selu", "hard_sigmoid", "hard_swish", "silu",
            "gelu", "sigmoid", "tanh", "softmax", "clip"} <= values[("act", "fn")]
    assert {"add", "mul", "sub", "div", "min", "max"} <= values[("binary", "op")]
    assert {"constant", "reflect", "edge"} <= values[("pad", "mode")]
    assert {"batch", "layer", "group"} <= values[("norm", "type")]
    assert {"True"} <= values[("pool", "ceil_mode")] and ("pool", "count_include_pad") in values
    for kind in ("conv_transpose", "concat", "split", "slice", "reshape", "transpose",
                 "flatten", "reduce", "dense", "dropout", "global_pool"):
        assert kind in KINDS
    # beyond image layers: the operators converters decompose, and other data types in between
    assert {"exp", "log", "sqrt", "sin", "atan", "erf", "softplus", "logsigmoid", "floor",
            "round", "sign"} <= values[("math", "fn")]
    assert {"greater", "less", "equal"} <= values[("compare", "op")]
    assert {"int32", "int64"} <= values[("integer", "dtype")]
    assert {"floordiv", "mod"} <= values[("binary", "op")] & values[("integer", "op")]
    assert {"min", "sum", "prod", "l2", "logsumexp", "var"} <= values[("reduce", "op")]
    assert "cumsum" in KINDS


@pytest.mark.parametrize("layer, words", [
    (("reduce", {"op": "prod", "axes": "spatial"}), "product of 1024 values"),
    (("reduce", {"op": "var", "axes": "channels", "keepdims": True}), "variance of one value"),
    (("compare", {"against": "channel"}), "needs an image"),
    (("cumsum", {}), "takes an image"),
])
def test_a_layer_whose_arithmetic_would_be_meaningless_is_refused(layer, words):
    first = (("flatten", {}) if "image" in words
             else ("reduce", {"axes": "channels", "keepdims": True}))
    with pytest.raises(SpecError, match=words):
        spec_of("torch", first, layer)


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_the_kinds_beyond_image_layers_render_in_each_framework(framework):
    spec = spec_of(framework, ("math", {"fn": "logsigmoid", "scale": 100.0}),
                   ("compare", {"op": "less", "against": "max", "then": "cast"}),
                   ("integer", {"op": "floordiv", "divisor": -2, "dtype": "int64"}),
                   ("cumsum", {"axis": "width", "reverse": True}),
                   ("binary", {"op": "mod", "operand": "scalar"}),
                   ("reduce", {"op": "l2"}))
    source = (render_keras(spec.annotated(), spec.name) if framework == "keras"
              else render_torch(spec.annotated()))
    compile(source, spec.name, "exec")
    expected = {"keras": ["t1z = ops.multiply(t0, 100.0)", "ops.log_sigmoid(t1z)", "ops.less(",
                          "'int64'",
                          "ops.floor_divide(", "-2)", "ops.flip(ops.cumsum(", "ops.mod(",
                          "ops.sqrt(ops.sum(ops.square("],
                "torch": ["F.logsigmoid(t1z)", "t1z = t0 * 100.0", " < ", "torch.int64",
                          "torch.floor_divide(", "-2)", "torch.flip(torch.cumsum(",
                          "torch.remainder(", "torch.linalg.vector_norm("]}[framework]
    for fragment in expected:
        assert fragment in source, (fragment, source)
