"""Fault that fires only after a particular TVM pass (``LegalizeOps``).

``fault.tvm_after_legalize`` is a Relax transform. On a module still made of Relax operators it
does nothing; once ``tvm.pass(name=LegalizeOps)`` has lowered the operators to ``call_tir`` of
TIR functions, it scales the constant weight passed to the first grouped (depthwise)
convolution kernel — the bug of a pass that only runs right on the form a later pass produces.
The minimal pipeline must keep both the pass and the transform, after one another.
"""

from _graph import attr, first, is_conv

from fuzzconv.plugins import tvm_transform

GROUND_TRUTH = {
    "fault": "fires only after a particular TVM pass",
    "culprit": {"step": "fault.tvm_after_legalize", "params": {"scale": 1.5}},
    "also": [{"step": "tvm.pass", "params": {"name": "LegalizeOps"}}],
    "symptom": "label_flip",
    # Focused coverage puts each of TVM's ~50 listed passes before the transform, one TVM build
    # each and LegalizeOps about half way: on 2 loaded cores that is past 8 minutes.
    "min_budget": "25m",
}


def affected_node(model):
    """In the ONNX graph the Relax module was imported from: the first grouped Conv."""
    node = first(model, lambda n: is_conv(n) and attr(n, "group", 1) > 1)
    return node.name if node is not None else None


def _legalized(mod) -> bool:
    # TIR moved between modules across TVM versions (tvm.tir, tvm.tirx): go by the class name.
    return any(type(f).__name__ == "PrimFunc" for f in mod.functions.values())


@tvm_transform("fault.tvm_after_legalize", scale=[1.0, 1.5])
def tvm_after_legalize(mod, scale: float = 1.0):
    """After LegalizeOps, scale the weight of the first grouped conv2d kernel call."""
    from tvm import relax

    if scale == 1.0 or not _legalized(mod):
        return mod

    @relax.expr_functor.mutator
    class _Scale(relax.PyExprMutator):
        done = False

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if self.done or getattr(call.op, "name", "") != "relax.call_tir":
                return call
            callee, args = call.args[0], call.args[1]
            if not getattr(callee, "name_hint", "").startswith("conv2d") or \
                    not isinstance(args, relax.Tuple) or len(args.fields) < 2:
                return call
            w = args.fields[1]
            if type(w).__name__ not in ("Constant", "GenericConst"):
                return call
            data = w.value.numpy()  # relax constants are tvm.ir.GenericConst in TVM 0.27
            if data.ndim != 4 or data.shape[1] != 1:
                return call
            self.done = True
            fields = list(args.fields)
            fields[1] = relax.const(data * scale)
            # the output struct info: ``ty_args`` in TVM 0.27, ``sinfo_args`` before
            out = getattr(call, "ty_args", None)
            out = call.sinfo_args if out is None else out
            return relax.Call(call.op, [callee, relax.Tuple(fields), *call.args[2:]],
                              call.attrs, out)

    mod["main"] = _Scale().visit_expr(mod["main"])
    return mod
