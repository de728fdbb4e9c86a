"""The TVM fault of ``benchmarks/faults/`` fires only after LegalizeOps, on the depthwise kernel.

TVM runs in a child process (the test process imports no framework).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx

from tests.conftest import needs
from tests.unit.test_fault_suite import FAULTS, _model

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np, onnx, tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from fuzzconv.registry import fresh_registry

    fresh_registry([sys.argv[2]])
    fault = next(m for m in sys.modules.values() if getattr(m, "__file__", None) == sys.argv[2])
    model = onnx.load(sys.argv[1])
    imported = lambda: from_onnx(model, shape_dict={"input": [1, 8, 8, 3]})
    x = np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 3)).astype("float32")

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    def consts(mod):
        out = []
        def visit(e):
            if type(e).__name__ in ("Constant", "GenericConst"):
                out.append(e.value.numpy())
        relax.analysis.post_order_visit(mod["main"], visit)
        return out

    plain = imported()
    before = fault.tvm_after_legalize(plain, scale=1.5)
    legal = relax.transform.LegalizeOps()(imported())
    after = fault.tvm_after_legalize(relax.transform.LegalizeOps()(imported()), scale=1.5)
    scaled = [(a, b) for a, b in zip(consts(legal), consts(after)) if not np.array_equal(a, b)]
    print(json.dumps({
        "untouched_before_legalize": before is plain and np.array_equal(run(before), run(imported())),
        "inert_default": np.array_equal(run(fault.tvm_after_legalize(legal)), run(legal)),
        "changed": [list(a.shape) for a, _ in scaled],
        "ratio": [float(np.median(b / a)) for a, b in scaled],
        "max_diff": float(np.abs(run(legal) - run(after)).max()),
        "affected": fault.affected_node(model),
    }))
""")


@needs("tvm")
def test_tvm_fault_scales_the_depthwise_weight_only_after_legalize(tmp_path: Path) -> None:
    onnx.save(_model(), str(tmp_path / "toy.onnx"))
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    res = subprocess.run([sys.executable, str(child), str(tmp_path / "toy.onnx"),
                          str((FAULTS / "tvm_after_legalize.py").resolve())],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["untouched_before_legalize"] and got["inert_default"]
    assert got["changed"] == [[4, 1, 3, 3]] and abs(got["ratio"][0] - 1.5) < 1e-6
    assert got["max_diff"] > 1e-3
    assert got["affected"] == "dw_conv"
